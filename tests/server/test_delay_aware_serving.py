"""The server's side of delay-aware execution and of the schema version: a delay-aware
policy is given the committed prefix and its chunk starts after it; any other policy gets
neither; a prefix that breaks the contract is refused; a session open of schema version 1 is
rejected naming both versions, and the server goes on serving. Real parts: the policy server
and the MuJoCo oracle over local and zmq transports; raw clients speak the wire directly."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from harness import protocol
from harness.client.config import EngineConfig
from harness.client.engine import engine_for
from harness.client.states import ClientState
from tests.protocol.test_codec import V1_SESSION_OPEN
from tests.server.wire import RawClient, contract, oracle, start_server
from transports import make_client, make_server
from transports.loopback import loopback_config

network = pytest.mark.network


class PrefixLog:
    """The oracle (declared delay-aware or not), recording what each predict was given."""

    def __init__(self, calls: list, *, delay_aware: bool) -> None:
        self.inner, self.calls = oracle(), calls
        self.spec = dataclasses.replace(self.inner.spec, delay_aware=delay_aware)

    def reset(self, *, seed: int) -> None:
        self.inner.reset(seed=seed)

    def predict(self, observation, committed=None):
        self.calls.append(None if committed is None else np.array(committed))
        return self.inner.predict(observation, committed)


def observe_with_prefix(client: RawClient, env, *, tick: int, prefix: np.ndarray,
                        seq: int = 1) -> protocol.Message:
    observation = env.reset(seed=0)
    client.publish(protocol.Observation(observation.state, observation.images, "", tick=tick,
                                        delay_ticks=len(prefix), committed=prefix),
                   seq=seq, episode=0)
    reply = client.next_reply()
    assert reply is not None
    return reply


PREFIX = np.array([[1.0, 0.0, 0.0, -1.0]] * 3, np.float32)


@network
@pytest.mark.parametrize("kind", ["local", "zmq"])
@pytest.mark.parametrize("delay_aware", [True, False])
def test_only_a_delay_aware_policy_gets_the_prefix_and_its_chunk_starts_after_it(
        env, kind, delay_aware):
    calls = []
    server, config = start_server(env, kind=kind, policy_factory=lambda: PrefixLog(
        calls, delay_aware=delay_aware))
    client = RawClient(config)
    try:
        opened = client.open(contract(env))
        assert opened.body.contract.delay_aware is delay_aware
        calls.clear()  # the warm-up prediction
        reply = observe_with_prefix(client, env, tick=40, prefix=PREFIX)
        assert reply.msg_type is protocol.MessageType.ACTION_CHUNK
        assert reply.body.start_tick == (43 if delay_aware else 40)
        given = PREFIX if delay_aware else None
        assert len(calls) == 1 and (calls[0] is None) is (given is None)
        if delay_aware:
            assert calls[0].tobytes() == PREFIX.tobytes()
        expected = oracle().predict(env.reset(seed=0), given)
        assert reply.body.actions.tobytes() == np.asarray(expected, np.float32).tobytes()
    finally:
        client.close()
        server.close()


@network
@pytest.mark.parametrize(("prefix", "detail"), [
    (np.zeros((2, 3), np.float32), "committed has 3 entries per action, the contract's "
                                   "actions have 4"),
    (np.array([[0.0, np.nan, 0.0, 0.0]], np.float32), "committed holds non-finite actions"),
    (np.zeros((201, 4), np.float32), "committed holds 201 actions, more than 10 s of control "
                                     "at 20 Hz"),
])
def test_a_prefix_breaking_the_contract_is_refused_and_the_server_goes_on(env, prefix, detail):
    calls = []
    server, config = start_server(env, policy_factory=lambda: PrefixLog(calls,
                                                                        delay_aware=True))
    client = RawClient(config)
    try:
        client.open(contract(env))
        calls.clear()
        reply = observe_with_prefix(client, env, tick=0, prefix=prefix)
        assert reply.msg_type is protocol.MessageType.ERROR
        assert reply.body.code == protocol.ERROR_CONTRACT and detail in reply.body.detail
        assert calls == []  # never reached the policy
        good = observe_with_prefix(client, env, tick=1, prefix=PREFIX, seq=2)
        assert good.msg_type is protocol.MessageType.ACTION_CHUNK and good.body.start_tick == 4
    finally:
        client.close()
        server.close()


@network
@pytest.mark.parametrize("kind", ["local", "zmq"])
def test_a_version_1_session_open_is_rejected_naming_both_versions(env, kind):
    server, config = start_server(env, kind=kind)
    client = RawClient(config)
    try:
        reply = protocol.decode(client.transport.request(V1_SESSION_OPEN, timeout_s=5.0))
        assert reply.msg_type is protocol.MessageType.SESSION_REJECT
        assert reply.body.reason == (
            f"schema version: the client speaks 1, this server {protocol.SCHEMA_VERSION}")
        assert not protocol.retryable_reject(reply.body.reason)
        v1_reset = bytearray(protocol.encode(protocol.Message(protocol.Reset())))
        v1_reset[2] = 1
        error = protocol.decode(client.transport.request(bytes(v1_reset), timeout_s=5.0))
        assert error.msg_type is protocol.MessageType.ERROR and error.body.code == "decode"
        assert (f"header.version: 1, this code speaks {protocol.SCHEMA_VERSION}"
                in error.body.detail)
        assert client.open(contract(env)).msg_type is protocol.MessageType.SESSION_OK
    finally:
        client.close()
        server.close()


class Version1Server:
    """Test double of a server of schema version 1: answers every request with a version 1
    header (what an old server's session ok starts with)."""

    def __init__(self, env) -> None:
        self.config = loopback_config("local")
        self.transport = make_server(self.config)
        reply = bytearray(protocol.encode(protocol.Message(
            protocol.SessionOk("s", oracle().spec), epoch=7, flags=protocol.Flags.RESPONSE)))
        reply[2] = 1
        self.transport.start(lambda client_id, payload: bytes(reply))

    def close(self) -> None:
        self.transport.close()


@network
def test_a_client_answered_in_another_version_stops_for_good_naming_both(env):
    old = Version1Server(env)
    client = make_client(old.config)
    try:
        client.wait_ready(10.0)
        engine = engine_for(env.spec, client, EngineConfig(), chunk_size=8)
        assert engine.open_session() is False
        assert engine.state is ClientState.DEAD
        assert engine.dead_reason == (
            f"schema version: the server speaks 1, this client {protocol.SCHEMA_VERSION}")
        engine.reset(2)  # a later episode cannot fix it
        assert engine.state is ClientState.DEAD
    finally:
        client.close()
        old.close()
