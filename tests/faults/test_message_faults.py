"""Message faults as a wrapper of the client's transport: each action does what it says on
a real (in-process) transport, and in the closed loop none costs an episode or a breach."""

from __future__ import annotations

import time

import pytest

from harness import protocol
from harness.faults.messages import FaultyClient, MessageFault
from tests.conftest import wait_until
from tests.faults.conftest import run_faulted
from transports import make_client, make_server
from transports.loopback import loopback_config


@pytest.fixture
def link():
    config = loopback_config("local")
    server = make_server(config)
    server.start(lambda client_id, payload: payload)
    client = FaultyClient(make_client(config), seed=1)
    client.wait_ready(5.0)
    yield server, client
    client.close()
    server.close()


def chunk(seq: int) -> bytes:
    return protocol.encode(protocol.Message(protocol.Reset(), seq=seq))


def test_no_fault_passes_everything(link):
    server, client = link
    client.publish(b"obs")
    assert server.take_stream(timeout_s=2.0).payload == b"obs"
    server.send_stream(client.client_id, chunk(1))
    assert client.take_stream(timeout_s=2.0) == chunk(1)
    assert client.fault_stats.hit == 0


def test_drop_sends_and_delivers_nothing(link):
    server, client = link
    client.fault = MessageFault("drop")
    client.publish(b"obs")
    assert server.take_stream(timeout_s=0.3) is None
    server.send_stream(client.client_id, chunk(1))
    assert client.take_stream(timeout_s=0.3) is None
    assert client.fault_stats.hit == 2


def test_corrupt_bytes_are_rejected_by_the_codec(link):
    server, client = link
    client.fault = MessageFault("corrupt")
    server.send_stream(client.client_id, chunk(1))
    payload = client.take_stream(timeout_s=2.0)
    assert payload != chunk(1) and len(payload) == len(chunk(1))
    with pytest.raises(protocol.DecodeError):
        protocol.decode(payload)


def test_duplicate_sends_each_observation_twice(link):
    server, client = link
    client.fault = MessageFault("duplicate")
    client.publish(b"obs")
    wait_until(lambda: server.stats.received >= 2, 2.0, "two copies")
    assert server.stats.received == 2


def test_delay_holds_a_chunk_back_for_its_delay(link):
    server, client = link
    client.fault = MessageFault("delay", delay_s=0.3)
    started = time.monotonic()
    server.send_stream(client.client_id, chunk(1))
    deadline = started + 3.0
    while (payload := client.take_stream(timeout_s=0.05)) is None and time.monotonic() < deadline:
        pass
    assert payload == chunk(1) and time.monotonic() - started >= 0.3


def test_reorder_delivers_a_chunk_after_the_next_one(link):
    server, client = link
    client.fault = MessageFault("reorder")
    server.send_stream(client.client_id, chunk(1))
    assert client.take_stream(timeout_s=0.3) is None  # held
    server.send_stream(client.client_id, chunk(2))
    assert client.take_stream(timeout_s=2.0) == chunk(2)
    assert client.take_stream(timeout_s=2.0) == chunk(1)  # then the older one


def test_an_unknown_action_is_refused():
    with pytest.raises(ValueError, match="action='smash'"):
        MessageFault("smash")


@pytest.mark.slow
@pytest.mark.network
@pytest.mark.parametrize("fault", ["corrupt", "reorder"])
def test_a_message_fault_in_every_episode_costs_no_episode(tmp_path, fault):
    _, summary = run_faulted(tmp_path, fault)
    assert summary["dead_episodes"] == 0 and summary["invariant_breaches"] == 0
    assert summary["fault_mechanisms"] == [f"message {fault}", f"message {fault} off"]
    assert summary["requests_lost"] >= 2  # the fault was felt: chunks that never counted
