"""Policy server over real transports: sessions, validation, serving, isolation, metrics."""

from __future__ import annotations

import re
import threading
import urllib.request

import numpy as np
import pytest

from harness import protocol
from harness.server.metrics import HealthEndpoint
from policies.slow import LatencyProfile, SlowPolicy
from tests.conftest import wait_until
from tests.server.wire import RawClient, contract, oracle, start_server
from transports import TransportError

pytestmark = pytest.mark.network


def test_session_serves_the_policys_exact_chunk_with_echoed_stamp(served, env):
    server, new_client = served
    client = new_client()
    ok = client.open(contract(env))
    assert ok.msg_type is protocol.MessageType.SESSION_OK and ok.epoch >= 1
    assert ok.body.contract == server.spec
    assert client.call(protocol.Reset(), episode=1).msg_type is protocol.MessageType.RESET

    observation = env.reset(seed=3)
    client.observe(observation, seq=7, episode=1)
    reply = client.next_reply()
    assert reply.msg_type is protocol.MessageType.ACTION_CHUNK
    assert (reply.body.obs_seq, reply.seq, reply.episode, reply.epoch, reply.client_ns) == (
        7, 7, 1, client.epoch, 7000)
    assert reply.body.infer_ns > 0 and reply.body.queue_wait_ns >= 0
    assert reply.body.model_id == "oracle"
    expected = oracle().predict(observation)
    np.testing.assert_array_equal(reply.body.actions, expected)


def test_wrong_action_spec_is_rejected_with_its_reason(served, env):
    _, new_client = served
    reply = new_client().open(contract(env, action_names=("dy", "dx", "dz", "gripper")))
    assert reply.msg_type is protocol.MessageType.SESSION_REJECT
    assert "contract mismatch: action_names" in reply.body.reason


@pytest.mark.parametrize(("change", "reason"), [
    ({"model_id": "openvla-7b"}, "model_id: client expects 'openvla-7b'"),
    ({"chunk_size": 16}, "chunk_size: client expects 16"),
    ({"control_hz": 10.0}, "control_hz"),
    ({"state": {}}, r"state\['hand_pos'\]"),
])
def test_every_contract_field_is_checked(served, env, change, reason):
    _, new_client = served
    reply = new_client().open(contract(env, **change))
    assert reply.msg_type is protocol.MessageType.SESSION_REJECT
    assert re.search(reason, reply.body.reason)


def test_extra_client_beyond_max_sessions_is_rejected_with_the_load(env):
    server, config = start_server(env, max_sessions=1)
    first, second = RawClient(config), RawClient(config)
    try:
        assert first.open(contract(env)).msg_type is protocol.MessageType.SESSION_OK
        reply = second.open(contract(env))
        assert reply.msg_type is protocol.MessageType.SESSION_REJECT
        assert (reply.body.active_sessions, reply.body.max_sessions) == (1, 1)
        assert "max_sessions=1 reached" in reply.body.reason
        assert first.call(protocol.Close()).msg_type is protocol.MessageType.CLOSE
        assert second.open(contract(env)).msg_type is protocol.MessageType.SESSION_OK
    finally:
        first.transport.close()
        second.transport.close()
        server.close()


def test_malformed_messages_get_an_error_and_the_server_keeps_serving(served, env):
    server, new_client = served
    client = new_client()
    reply = protocol.decode(client.transport.request(b"not a message", timeout_s=5.0))
    assert reply.msg_type is protocol.MessageType.ERROR and reply.body.code == "decode"
    client.transport.publish(b"RH garbage")
    streamed = client.next_reply()
    assert streamed.msg_type is protocol.MessageType.ERROR and streamed.body.code == "decode"
    assert client.open(contract(env)).msg_type is protocol.MessageType.SESSION_OK
    status = client.call(protocol.Status())
    assert status.body.fields["sessions"] == 1 and status.body.fields["model_id"] == "oracle"


def test_observation_without_session_or_of_an_old_episode_is_not_served(served, env):
    server, new_client = served
    client = new_client()
    observation = env.reset(seed=0)
    client.observe(observation, seq=1, episode=0)
    reply = client.next_reply()
    assert reply.msg_type is protocol.MessageType.ERROR
    assert reply.body.code == protocol.SESSION_UNKNOWN
    client.open(contract(env))
    client.call(protocol.Reset(), episode=2)
    client.observe(observation, seq=2, episode=1)  # late, from the previous episode
    assert client.next_reply(timeout_s=0.5) is None
    assert server.metrics.stale_dropped._value.get() == 1


def test_two_clients_are_served_fairly(env):
    fixed = LatencyProfile("fixed", 0.01)
    server, config = start_server(
        env, policy_factory=lambda: SlowPolicy(oracle(), fixed))
    clients = [RawClient(config), RawClient(config)]
    stop = threading.Event()
    observation = env.reset(seed=0)

    def keep_asking(client: RawClient) -> None:
        seq = 0
        while not stop.is_set():
            seq += 1
            client.observe(observation, seq=seq, episode=0)
            client.next_reply(timeout_s=1.0)

    try:
        for client in clients:
            client.open(contract(env))
        threads = [threading.Thread(target=keep_asking, args=(c,)) for c in clients]
        for thread in threads:
            thread.start()

        def served() -> list[float]:
            return [server.metrics.served.labels(client=c.transport.client_id)._value.get()
                    for c in clients]

        # A count of chunks, not a time window: as many as ~40 rounds of both clients.
        wait_until(lambda: sum(served()) >= 80, 30.0, "80 chunks served to the two clients")
        stop.set()
        for thread in threads:
            thread.join()
        served = served()
    finally:
        for client in clients:
            client.transport.close()
        server.close()
    assert min(served) > 0 and max(served) / min(served) <= 1.5, served


def test_health_and_metrics_endpoint_report_the_server(env):
    server, config = start_server(env)
    endpoint = HealthEndpoint(server.metrics, server.healthy)
    endpoint.start()
    client = RawClient(config)
    try:
        client.open(contract(env))
        client.observe(env.reset(seed=0), seq=1, episode=0)
        assert client.next_reply() is not None
        base = f"http://127.0.0.1:{endpoint.port}"
        assert urllib.request.urlopen(f"{base}/healthz").read() == b"ok\n"
        metrics = urllib.request.urlopen(f"{base}/metrics").read().decode()
        assert "policy_chunks_served_total" in metrics and "policy_sessions 1.0" in metrics
        server.drain()
        with pytest.raises(urllib.error.HTTPError, match="503"):
            urllib.request.urlopen(f"{base}/healthz")
        wait_until(lambda: not client.transport.server_present(), 5.0, "server gone")
        with pytest.raises(TransportError):
            client.transport.request(b"x", timeout_s=0.5)
    finally:
        client.transport.close()
        endpoint.close()
        server.close()
