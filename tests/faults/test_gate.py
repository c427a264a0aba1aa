"""The gate that holds the robot inside a fault window the world has already left (a
simulator slower than real time), over the real local transport: what it withholds, what it
lets through, and that releasing it restores everything."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from harness import protocol
from harness.faults.gate import GateMode, RobotSideGate
from tests.conftest import wait_until
from transports import LocalTransportConfig, TransportTimeout, make_client, make_server

STATUS = protocol.encode(protocol.Message(protocol.Status(), seq=1, episode=1, epoch=1))


def chunk(seq: int) -> bytes:
    return protocol.encode(protocol.Message(
        protocol.ActionChunk(np.zeros((2, 2), np.float32), seq, 0, 0, "m", 0), seq=seq,
        episode=1, epoch=1, flags=protocol.Flags.RESPONSE))


def error(seq: int) -> bytes:
    return protocol.encode(protocol.Message(protocol.Error("inference", "failed"), seq=seq,
                                            episode=1, epoch=1, flags=protocol.Flags.RESPONSE))


@pytest.fixture
def link():
    config = LocalTransportConfig(name=f"gate-{uuid.uuid4().hex[:8]}")
    server = make_server(config)
    server.start(lambda client_id, payload: payload)  # echoes requests
    gate = RobotSideGate(make_client(config))
    gate.wait_ready(5.0)
    yield server, gate
    gate.close()
    server.close()


def test_an_open_gate_passes_everything(link):
    server, gate = link
    assert gate.request(STATUS, timeout_s=1.0) == STATUS and gate.server_present()
    server.send_stream(gate.client_id, chunk(1))
    assert gate.take_stream(timeout_s=1.0) == chunk(1)


def test_a_cut_gate_withholds_chunks_presence_and_requests_but_not_errors_or_observations(
        link):
    server, gate = link
    gate.hold("w1", GateMode.cut)
    assert not gate.server_present()
    with pytest.raises(TransportTimeout, match="inside a fault window"):
        gate.request(STATUS, timeout_s=0.2)
    server.send_stream(gate.client_id, chunk(1))
    wait_until(lambda: gate.stats.received >= 1, 5.0, "the chunk to land")
    assert gate.take_stream(timeout_s=0.2) is None and gate.gate_stats.discarded == 1
    server.send_stream(gate.client_id, error(2))
    assert gate.take_stream(timeout_s=1.0) == error(2)  # a failure is counted as ever
    gate.publish(STATUS)
    assert server.take_stream(timeout_s=1.0).payload == STATUS  # the world hears the robot
    gate.release("w1")
    assert gate.server_present() and gate.request(STATUS, timeout_s=1.0) == STATUS


def test_a_replies_gate_withholds_only_chunks_and_the_strictest_hold_wins(link):
    server, gate = link
    gate.hold("model", GateMode.replies)
    assert gate.server_present() and gate.request(STATUS, timeout_s=1.0) == STATUS
    server.send_stream(gate.client_id, chunk(1))
    wait_until(lambda: gate.stats.received >= 1, 5.0, "the chunk to land")
    assert gate.take_stream(timeout_s=0.2) is None
    gate.hold("link", GateMode.cut)
    assert gate.mode is GateMode.cut and not gate.server_present()
    gate.release("link")
    assert gate.mode is GateMode.replies
    gate.release("model")
    assert gate.mode is None


def test_a_request_waiting_at_the_gate_goes_out_when_released_within_its_deadline(link):
    import threading

    _, gate = link
    gate.hold("w1", GateMode.cut)
    threading.Timer(0.2, gate.release, args=("w1",)).start()
    assert gate.request(STATUS, timeout_s=5.0) == STATUS
