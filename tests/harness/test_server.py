"""Policy server over real transports: sessions, validation, serving, isolation, metrics."""

from __future__ import annotations

import dataclasses
import re
import threading
import time
import urllib.request
import uuid

import numpy as np
import pytest

from envs import make_env
from harness import wire
from harness.engine import client_capabilities
from harness.server import PolicyServer, capabilities_of
from harness.server_metrics import HealthEndpoint
from policies import make_policy
from policies.slow import LatencyProfile, SlowPolicy
from tests.conftest import free_port, wait_until
from transports import LocalTransportConfig, TransportError, ZmqTransportConfig, make_client

pytestmark = pytest.mark.network


@pytest.fixture(scope="module")
def env():
    env = make_env("mujoco_pick_place")
    yield env
    env.close()


def capabilities(env, **changes) -> wire.Capabilities:
    return dataclasses.replace(client_capabilities(env.spec, 8), **changes)


class RawClient:
    """Speaks the wire protocol directly: the client engine is not what is under test."""

    def __init__(self, config) -> None:
        self.transport = make_client(config)
        self.transport.wait_ready(10.0)
        self.epoch = 0

    def call(self, body: wire.Body, **header) -> wire.Message:
        header.setdefault("epoch", self.epoch)
        payload = wire.encode(wire.Message(body, **header))
        return wire.decode(self.transport.request(payload, timeout_s=5.0))

    def open(self, caps: wire.Capabilities) -> wire.Message:
        reply = self.call(wire.SessionOpen(self.transport.client_id, caps))
        self.epoch = reply.epoch
        return reply

    def observe(self, observation, *, seq: int, episode: int) -> None:
        body = wire.Observation(observation.state, observation.images, observation.instruction)
        self.transport.publish(wire.encode(wire.Message(body, seq=seq, episode=episode,
                                                        epoch=self.epoch, client_ns=seq * 1000)))

    def next_reply(self, timeout_s: float = 5.0) -> wire.Message | None:
        payload = self.transport.take_stream(timeout_s=timeout_s)
        return None if payload is None else wire.decode(payload)


def start_server(env, *, kind: str = "local", max_sessions: int = 4, policy_factory=None):
    config = (LocalTransportConfig(name=f"server-{uuid.uuid4().hex[:8]}") if kind == "local"
              else ZmqTransportConfig(endpoint=f"tcp://127.0.0.1:{free_port()}"))
    factory = policy_factory or (lambda: make_policy("oracle", env.spec))
    server = PolicyServer(config, factory, max_sessions=max_sessions)
    server.start()
    return server, config


@pytest.fixture(params=["local", "zmq"])
def served(request, env):
    server, config = start_server(env, kind=request.param)
    clients = []

    def new_client() -> RawClient:
        clients.append(RawClient(config))
        return clients[-1]

    yield server, new_client
    for client in clients:
        client.transport.close()
    server.close()


def test_session_serves_the_policys_exact_chunk_with_echoed_stamp(served, env):
    server, new_client = served
    client = new_client()
    ok = client.open(capabilities(env))
    assert ok.msg_type is wire.MessageType.SESSION_OK and ok.epoch >= 1
    assert ok.body.capabilities == capabilities_of(server.spec)
    assert client.call(wire.Reset(), episode=1).msg_type is wire.MessageType.RESET

    observation = env.reset(seed=3)
    client.observe(observation, seq=7, episode=1)
    reply = client.next_reply()
    assert reply.msg_type is wire.MessageType.ACTION_CHUNK
    assert (reply.body.obs_seq, reply.seq, reply.episode, reply.epoch, reply.client_ns) == (
        7, 7, 1, client.epoch, 7000)
    assert reply.body.infer_ns > 0 and reply.body.queue_wait_ns >= 0
    assert reply.body.model_id == "oracle"
    expected = make_policy("oracle", env.spec).predict(observation)
    np.testing.assert_array_equal(reply.body.actions, expected)


def test_wrong_action_spec_is_rejected_with_its_reason(served, env):
    _, new_client = served
    reply = new_client().open(capabilities(env, action_names=("dy", "dx", "dz", "gripper")))
    assert reply.msg_type is wire.MessageType.SESSION_REJECT
    assert "capabilities mismatch: action_names" in reply.body.reason


@pytest.mark.parametrize(("change", "reason"), [
    ({"model_id": "openvla-7b"}, "model_id: client expects 'openvla-7b'"),
    ({"chunk_size": 16}, "chunk_size: client expects 16"),
    ({"control_hz": 10.0}, "control_hz"),
    ({"state": {}}, r"state\['hand_pos'\]"),
])
def test_every_capability_is_checked(served, env, change, reason):
    _, new_client = served
    reply = new_client().open(capabilities(env, **change))
    assert reply.msg_type is wire.MessageType.SESSION_REJECT
    assert re.search(reason, reply.body.reason)


def test_extra_client_beyond_max_sessions_is_rejected_with_the_load(env):
    server, config = start_server(env, max_sessions=1)
    first, second = RawClient(config), RawClient(config)
    try:
        assert first.open(capabilities(env)).msg_type is wire.MessageType.SESSION_OK
        reply = second.open(capabilities(env))
        assert reply.msg_type is wire.MessageType.SESSION_REJECT
        assert (reply.body.active_sessions, reply.body.max_sessions) == (1, 1)
        assert "max_sessions=1 reached" in reply.body.reason
        assert first.call(wire.Close()).msg_type is wire.MessageType.CLOSE
        assert second.open(capabilities(env)).msg_type is wire.MessageType.SESSION_OK
    finally:
        first.transport.close()
        second.transport.close()
        server.close()


def test_malformed_messages_get_an_error_and_the_server_keeps_serving(served, env):
    server, new_client = served
    client = new_client()
    reply = wire.decode(client.transport.request(b"not a message", timeout_s=5.0))
    assert reply.msg_type is wire.MessageType.ERROR and reply.body.code == "decode"
    client.transport.publish(b"RH garbage")
    streamed = client.next_reply()
    assert streamed.msg_type is wire.MessageType.ERROR and streamed.body.code == "decode"
    assert client.open(capabilities(env)).msg_type is wire.MessageType.SESSION_OK
    status = client.call(wire.Status())
    assert status.body.fields["sessions"] == 1 and status.body.fields["model_id"] == "oracle"


def test_observation_without_session_or_of_an_old_episode_is_not_served(served, env):
    server, new_client = served
    client = new_client()
    observation = env.reset(seed=0)
    client.observe(observation, seq=1, episode=0)
    reply = client.next_reply()
    assert reply.msg_type is wire.MessageType.ERROR and reply.body.code == wire.SESSION_UNKNOWN
    client.open(capabilities(env))
    client.call(wire.Reset(), episode=2)
    client.observe(observation, seq=2, episode=1)  # late, from the previous episode
    assert client.next_reply(timeout_s=0.5) is None
    assert server.metrics.stale_dropped._value.get() == 1


def test_two_clients_are_served_fairly(env):
    fixed = LatencyProfile("fixed", 0.01)
    server, config = start_server(
        env, policy_factory=lambda: SlowPolicy(make_policy("oracle", env.spec), fixed))
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
            client.open(capabilities(env))
        threads = [threading.Thread(target=keep_asking, args=(c,)) for c in clients]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        stop.set()
        for thread in threads:
            thread.join()
        served = [server.metrics.served.labels(client=c.transport.client_id)._value.get()
                  for c in clients]
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
        client.open(capabilities(env))
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
