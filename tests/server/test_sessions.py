"""Session bookkeeping of the policy server: idle expiry, bounded client ids, the pool of
policy instances built once, episodes moving only forward, and reset never racing predict."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time

import numpy as np
import pytest

from harness import protocol
from tests.conftest import wait_until
from tests.server.wire import RawClient, RecordingFactory, contract, counter, start_server, tagged

pytestmark = pytest.mark.network

OK, REJECT = protocol.MessageType.SESSION_OK, protocol.MessageType.SESSION_REJECT


@pytest.fixture
def closing():
    """Collects servers and clients and closes them after the test, clients first."""
    servers, clients = [], []
    yield servers, clients
    for client in clients:
        client.close()
    for server in servers:
        server.close()


@pytest.mark.parametrize("kind", ["local", "zmq"])
def test_silent_sessions_expire_and_free_their_slots(env, kind, closing, caplog):
    caplog.set_level(logging.INFO, logger="harness.server.policy_server")
    servers, clients = closing
    server, config = start_server(env, kind=kind, max_sessions=4, session_idle_timeout_s=0.5)
    servers.append(server)
    clients.extend(RawClient(config) for _ in range(5))
    silent, fifth = clients[:4], clients[4]
    for client in silent:
        assert client.open(contract(env)).msg_type is OK
    reply = fifth.open(contract(env))
    assert reply.msg_type is REJECT and "max_sessions=4 reached (4 active)" in reply.body.reason

    wait_until(lambda: counter(server, "policy_sessions_expired") == 4, 5.0, "4 expiries")
    assert fifth.open(contract(env)).msg_type is OK
    status = server.status()
    assert (status["sessions"], status["expired"]) == (1, 4)
    # An expired client is told its session is gone, so that it re-opens one.
    silent[0].observe(env.reset(seed=0), seq=1, episode=0)
    reply = silent[0].next_reply()
    assert reply.msg_type is protocol.MessageType.ERROR
    assert reply.body.code == protocol.SESSION_UNKNOWN
    assert silent[0].open(contract(env)).msg_type is OK

    def expiry_lines(client: RawClient) -> list[str]:
        return [r.getMessage() for r in caplog.records
                if "expired" in r.getMessage() and client.transport.client_id in r.getMessage()]

    wait_until(lambda: all(expiry_lines(client) for client in silent), 5.0, "expiry log lines")
    assert [len(expiry_lines(client)) for client in silent] == [1, 1, 1, 1]


def test_a_session_that_keeps_sending_does_not_expire(env, closing):
    servers, clients = closing
    server, config = start_server(env, max_sessions=2, session_idle_timeout_s=0.5)
    servers.append(server)
    talker, silent = RawClient(config), RawClient(config)
    clients.extend((talker, silent))
    assert talker.open(contract(env)).msg_type is OK
    assert silent.open(contract(env)).msg_type is OK
    observation = env.reset(seed=0)
    seq = 0
    while counter(server, "policy_sessions_expired") == 0:  # bounded: silent expires in 0.5 s
        seq += 1
        talker.observe(observation, seq=seq, episode=0)
        assert talker.next_reply().msg_type is protocol.MessageType.ACTION_CHUNK
        assert seq < 10_000, "the silent session never expired"
    for _ in range(4):  # requests alone keep it too: each gap is under the timeout, the sum not
        time.sleep(0.2)  # pacing the client, not waiting for a condition
        assert talker.call(protocol.Status()).msg_type is protocol.MessageType.STATUS
    talker.observe(observation, seq=seq + 1, episode=0)
    assert talker.next_reply().msg_type is protocol.MessageType.ACTION_CHUNK
    assert counter(server, "policy_sessions_expired") == 1
    assert server.status()["sessions"] == 1


def test_a_session_waiting_behind_slow_predictions_does_not_expire(env, closing):
    """Two clients stream to a policy slower than half the idle timeout: each observation
    waits for the other's prediction, so a client is taken less often than the timeout,
    yet it sent something all along. A third, silent, session still expires."""
    servers, clients = closing
    factory = RecordingFactory(predict_s=0.2)
    server, config = start_server(env, max_sessions=3, session_idle_timeout_s=0.3,
                                  policy_factory=factory)
    servers.append(server)
    talkers = [RawClient(config), RawClient(config)]
    silent = RawClient(config)
    clients.extend((*talkers, silent))
    for client in (*talkers, silent):
        assert client.open(contract(env)).msg_type is OK
    observation = tagged(env.reset(seed=0), "busy")
    stop = threading.Event()
    replies: dict[str, list[str]] = {c.transport.client_id: [] for c in talkers}

    def stream(client: RawClient) -> None:
        seq = 0
        while not stop.is_set():
            seq += 1
            client.observe(observation, seq=seq, episode=0)
            reply = client.next_reply(timeout_s=2.0)
            kind = "none" if reply is None else reply.msg_type.name
            replies[client.transport.client_id].append(
                reply.body.code if kind == "ERROR" else kind)

    threads = [threading.Thread(target=stream, args=(c,), name="test-talker") for c in talkers]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: counter(server, "policy_sessions_expired") >= 1, 10.0,
                   "the silent session to expire")
        served_then = [len(r) for r in replies.values()]
        wait_until(lambda: all(len(r) >= n + 4 for r, n in
                               zip(replies.values(), served_then, strict=True)),
                   10.0, "four more chunks for each talker")
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert counter(server, "policy_sessions_expired") == 1
    assert {kind for r in replies.values() for kind in r} == {"ACTION_CHUNK"}
    assert silent.call(protocol.Status()).body.fields["sessions"] == 2


@pytest.mark.parametrize(("transport_id", "announced_id", "limit", "accepted"), [
    ("a" * 16, "a" * 16, 16, True),       # exactly the limit
    ("a" * 17, "a" * 17, 16, False),      # one over
    ("a" * 8, "b" * 9000, 128, False),    # the id in the open message counts too
    ("c" * 9000, "c" * 9000, 128, False),
])
def test_client_id_length_is_bounded_at_open(env, closing, transport_id, announced_id, limit,
                                             accepted):
    servers, clients = closing
    server, config = start_server(env, max_client_id_chars=limit)
    servers.append(server)
    client = RawClient(dataclasses.replace(config, client_id=transport_id))
    clients.append(client)
    reply = client.call(protocol.SessionOpen(announced_id, contract(env)))
    if accepted:
        assert reply.msg_type is OK
        return
    assert reply.msg_type is REJECT
    assert reply.body.reason == (f"{protocol.REJECT_CLIENT_ID} of {len(announced_id)} chars "
                                 f"exceeds max_client_id_chars={limit}")
    assert not protocol.retryable_reject(reply.body.reason)
    assert counter(server, "policy_sessions_rejected") == 1


def test_a_long_client_id_is_never_logged_in_full(env, closing, caplog):
    caplog.set_level(logging.DEBUG)
    servers, clients = closing
    long_id = "c" * 9000
    server, config = start_server(env)
    servers.append(server)
    client = RawClient(dataclasses.replace(config, client_id=long_id))
    clients.append(client)
    assert client.open(contract(env)).msg_type is REJECT
    client.observe(env.reset(seed=0), seq=1, episode=0)  # no session: answered and audited
    assert client.next_reply().body.code == protocol.SESSION_UNKNOWN
    client.transport.publish(b"RH garbage")  # undecodable: audited with the client id
    assert client.next_reply().body.code == "decode"


    def audit() -> list[str]:  # a stream reply is sent just before its audit line is written
        return [r.getMessage() for r in caplog.records if r.name == "harness.audit"]

    wait_until(lambda: len(audit()) == 3, 5.0, "three audit lines")
    server_log = [r.getMessage() for r in caplog.records
                  if r.name == "harness.server.policy_server"]
    assert server_log
    assert all('"client": "' + "c" * 64 + '..."' in line for line in audit())
    assert any("c" * 64 + "..." in line for line in server_log)
    assert not [r for r in caplog.records if "c" * 65 in r.getMessage()]


def test_policies_are_built_once_and_sessions_share_the_pool(env, closing):
    servers, clients = closing
    factory = RecordingFactory()
    server, config = start_server(env, max_sessions=2, policy_factory=factory)
    servers.append(server)
    assert len(factory.built) == 2
    a, b, c = (RawClient(config) for _ in range(3))
    clients.extend((a, b, c))
    observation = tagged(env.reset(seed=0), "pool")
    seq = iter(range(1, 1000))

    def served_by(client: RawClient) -> int:
        client.observe(observation, seq=next(seq), episode=0)
        reply = client.next_reply()
        assert reply.msg_type is protocol.MessageType.ACTION_CHUNK
        return int(reply.body.actions[0, 0])

    assert a.open(contract(env)).msg_type is OK
    assert b.open(contract(env)).msg_type is OK
    first_a, first_b = served_by(a), served_by(b)
    assert {first_a, first_b} == {0, 1}
    assert a.open(contract(env)).msg_type is OK  # a re-open keeps its own instance
    assert served_by(a) == first_a
    assert a.call(protocol.Close()).msg_type is protocol.MessageType.CLOSE
    resets_before = len(factory.resets())
    assert c.open(contract(env)).msg_type is OK  # takes the instance a gave back ...
    assert served_by(c) == first_a
    assert factory.resets()[resets_before:] == [(first_a, 0)]  # ... reset before its use
    for _ in range(3):
        for client in (b, c):
            assert client.call(protocol.Close()).msg_type is protocol.MessageType.CLOSE
        for client in (c, b, c):
            assert client.open(contract(env)).msg_type is OK
        assert {served_by(b), served_by(c)} == {0, 1}
    assert len(factory.built) == 2  # no open ever called make_policy


def test_the_warm_up_prediction_is_reset_away_before_a_session_uses_it(env, closing):
    servers, clients = closing
    factory = RecordingFactory()
    server, config = start_server(env, max_sessions=1, policy_factory=factory)
    servers.append(server)
    assert factory.predictions("") == [0]  # warmed with one prediction at start
    client = RawClient(config)
    clients.append(client)
    assert client.open(contract(env)).msg_type is OK
    client.observe(tagged(env.reset(seed=0), "first"), seq=1, episode=0)
    assert client.next_reply().msg_type is protocol.MessageType.ACTION_CHUNK
    assert factory.calls == [("predict", 0, ""), ("reset", 0, 0), ("predict", 0, "first")]


@pytest.mark.parametrize("kind", ["local", "zmq"])
def test_a_newer_episode_resets_the_session_and_an_older_one_is_dropped(env, kind, closing):
    servers, clients = closing
    factory = RecordingFactory()
    server, config = start_server(env, kind=kind, max_sessions=1, policy_factory=factory)
    servers.append(server)
    client = RawClient(config)
    clients.append(client)
    observation = tagged(env.reset(seed=0), "episodes")
    assert client.open(contract(env)).msg_type is OK
    assert client.call(protocol.Reset(), episode=1).msg_type is protocol.MessageType.RESET
    assert factory.resets()[-1][1] == 1

    # The RESET of episode 2 was lost: its first observation resets the policy and is served.
    client.observe(observation, seq=1, episode=2)
    reply = client.next_reply()
    assert reply.msg_type is protocol.MessageType.ACTION_CHUNK
    assert (reply.seq, reply.episode, reply.epoch) == (1, 2, client.epoch)
    assert factory.resets()[-1][1] == 2  # seeded with the episode, like an explicit RESET
    assert counter(server, "policy_implicit_resets") == 1

    # A late observation of episode 1 is stale: dropped without a reply.
    client.observe(observation, seq=2, episode=1)
    wait_until(lambda: counter(server, "policy_stale_dropped") == 1, 5.0, "a stale drop")
    assert client.next_reply(timeout_s=0.0) is None

    # The late RESET of episode 1 is acknowledged and moves nothing back.
    resets = len(factory.resets())
    assert client.call(protocol.Reset(), episode=1).msg_type is protocol.MessageType.RESET
    assert len(factory.resets()) == resets
    client.observe(observation, seq=3, episode=2)
    reply = client.next_reply()
    assert (reply.msg_type, reply.episode) == (protocol.MessageType.ACTION_CHUNK, 2)
    assert counter(server, "policy_implicit_resets") == 1
    assert counter(server, "policy_stale_dropped") == 1
    assert len(factory.predictions("episodes")) == 2


@pytest.mark.parametrize("kind", ["local", "zmq"])
def test_reset_never_runs_while_the_same_policy_predicts(env, kind, closing):
    servers, clients = closing
    factory = RecordingFactory(predict_s=0.05)
    server, config = start_server(env, kind=kind, max_sessions=1, policy_factory=factory)
    servers.append(server)
    client = RawClient(config)
    clients.append(client)
    assert client.open(contract(env)).msg_type is OK
    observation = tagged(env.reset(seed=0), "race")
    stop = threading.Event()

    def stream() -> None:
        seq = 0
        while not stop.is_set():
            seq += 1
            client.observe(observation, seq=seq, episode=0)
            client.next_reply(timeout_s=1.0)

    streamer = threading.Thread(target=stream, name="test-streamer")
    streamer.start()
    try:
        wait_until(lambda: len(factory.predictions("race")) >= 1, 5.0, "a first prediction")
        for _ in range(20):
            assert client.call(protocol.Reset()).msg_type is protocol.MessageType.RESET
        # On a loaded machine the 20 resets can all land before the stream's next request:
        # the stream must still be served after them.
        wait_until(lambda: len(factory.predictions("race")) >= 2, 5.0, "a prediction after")
    finally:
        stop.set()
        streamer.join()
    assert len(factory.resets()) >= 20
    assert [policy.overlaps for policy in factory.built] == [0] * len(factory.built)


class BlocksThenFails:
    """A model that, asked with the instruction "block", hangs 1.2 s and then fails, as a
    remote model behind a partition does when its request times out; otherwise a chunk of
    zeros. A failed predict records no reply latency, so nothing else covers the wait."""

    def __init__(self, spec: protocol.Contract, blocking: threading.Event) -> None:
        self.spec, self.blocking = spec, blocking

    def reset(self, *, seed: int) -> None:
        pass

    def predict(self, observation):
        if observation.instruction == "block":
            self.blocking.set()
            time.sleep(1.2)
            raise TimeoutError("the model server did not answer")
        return np.zeros((self.spec.chunk_size, self.spec.action_dim), np.float32)


@pytest.mark.parametrize("kind", ["local", "zmq"])
def test_a_robot_that_keeps_sending_outlives_a_blocked_predict_past_the_idle_timeout(
        env, kind, closing):
    """Issue 21: a session was counted heard only when its observation was taken; with its
    predict blocked past `session_idle_timeout_s` it expired while the robot kept sending.
    Now the transport's arrivals count: the session survives and is served after."""
    servers, clients = closing
    spec, blocking = contract(env, model_id="blocks"), threading.Event()
    server, config = start_server(env, kind=kind, max_sessions=2, session_idle_timeout_s=0.4,
                                  policy_factory=lambda: BlocksThenFails(spec, blocking))
    servers.append(server)
    robot = RawClient(config)
    clients.append(robot)
    assert robot.open(contract(env)).msg_type is OK
    robot.call(protocol.Reset(), episode=1)
    observation = env.reset(seed=1)
    blocked = protocol.Observation(observation.state, observation.images, "block")
    robot.publish(blocked, seq=1, episode=1)
    wait_until(blocking.is_set, 5.0, "the predict to block")
    seq, deadline, replies = 1, time.monotonic() + 1.8, []
    while time.monotonic() < deadline:  # the robot goes on sending while predict hangs
        seq += 1
        robot.observe(observation, seq=seq, episode=1)
        reply = robot.next_reply(timeout_s=0.1)
        if reply is not None:
            replies.append(reply)
    expired = server.metrics.total(server.metrics.sessions_expired)  # before it falls silent
    kinds = [(r.msg_type, r.body.code if r.msg_type is protocol.MessageType.ERROR else None)
             for r in replies]
    # (The client's inbox keeps the newest reply: the inference error may be overtaken by
    # the chunk after it before the robot looks. The server's count says it happened.)
    exposition = server.metrics.exposition().decode()
    assert 'policy_requests_total{outcome="inference_error"} 1.0' in exposition
    assert (protocol.MessageType.ACTION_CHUNK, None) in kinds
    assert expired == 0
    assert (protocol.MessageType.ERROR, protocol.SESSION_UNKNOWN) not in kinds


def served_engine(env, closing, **engine_config):
    """A zmq server whose sessions expire after 0.5 s of silence, and a robot's engine on
    it (`EngineConfig(**engine_config)`), both closed after the test."""
    from harness.client.config import EngineConfig
    from harness.client.engine import engine_for
    from transports import make_client

    servers, clients = closing
    server, config = start_server(env, kind="zmq", session_idle_timeout_s=0.5)
    servers.append(server)
    client = make_client(config)
    clients.append(client)
    client.wait_ready(5.0)
    return server, engine_for(env.spec, client, EngineConfig(**engine_config),
                              chunk_size=server.spec.chunk_size)


@pytest.mark.parametrize("keepalive_s", [0.15, 60.0])
def test_a_robot_waiting_in_control_time_keeps_its_session_by_keepalive(env, keepalive_s,
                                                                        closing):
    """A synchronous robot executing its chunk sends nothing for chunk-size ticks; on a
    simulator slower than real time (here 0.15 s of wall time a tick) that silence outlasts
    the server's idle timeout. Its engine's STATUS every `client.keepalive_s` keeps the
    session (the same run without it, keepalive_s=60, loses it)."""
    server, engine = served_engine(env, closing, mode="synchronous", keepalive_s=keepalive_s)
    engine.reset(1)
    observation = env.reset(seed=1)
    body = protocol.Observation(observation.state, observation.images, observation.instruction)
    for tick in range(12):
        engine.tick(tick, body)
        time.sleep(0.15)  # the simulator's step, slower than real time
    expired = server.metrics.total(server.metrics.sessions_expired)
    if keepalive_s < 0.5:
        assert engine.keepalive.count >= 2 and expired == 0
        assert engine.stats.error_replies == {}
    else:
        assert engine.keepalive.count == 0 and expired >= 1


class SlowResetEnv:
    """`env` whose reset takes `reset_s` of wall time (a LIBERO scene reload on a busy
    machine) and whose episodes last `max_steps` ticks; steps are the env's own."""

    def __init__(self, env, reset_s: float, max_steps: int) -> None:
        self.env, self.reset_s = env, reset_s
        self.spec = dataclasses.replace(env.spec, max_steps=max_steps)

    def reset(self, *, seed, init_state=None):
        time.sleep(self.reset_s)
        return self.env.reset(seed=seed, init_state=init_state)

    def __getattr__(self, name):
        return getattr(self.env, name)


@pytest.mark.parametrize("keepalive_s", [0.15, 60.0])
def test_a_session_outlives_a_slow_env_reset_between_episodes(env, keepalive_s, closing):
    """Between episodes nothing ticks while the env resets; a reset longer than the server's
    idle timeout kept the session only by the keep-alive covering it (`run_episode`). The
    same run without it (keepalive_s=60) loses the session and re-opens it."""
    from harness.loop.runner import run_episode

    server, engine = served_engine(env, closing, keepalive_s=keepalive_s)
    assert engine.open_session()
    slow = SlowResetEnv(env, reset_s=1.2, max_steps=5)
    traces, reopened = [], []
    for episode in (1, 2):  # the first reset follows the open, the second an episode
        traces.append(run_episode(slow, engine, episode=episode, seed=episode))
        reopened.append(engine.stats.reopened)
    expired = server.metrics.total(server.metrics.sessions_expired)
    if keepalive_s < 0.5:
        assert expired == 0 and reopened == [0, 0]
        assert [t.steps for t in traces] == [5, 5] and engine.keepalive.count >= 4
    else:
        assert expired >= 1 and engine.keepalive.count == 0
