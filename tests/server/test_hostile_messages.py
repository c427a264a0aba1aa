"""Messages crafted to stop or starve the server, sent over every transport: each gets the
answer it is owed (a bounded error, a reject, or a chunk for an edge value that is legal),
and afterwards an honest robot is served as before and the inference thread is alive.

The edge values (`harness.bench.mutations.edge_cases`, the long fuzz's catalogue too) began
with the three a fuzz found stopping the inference thread (issue 21): an observation whose
header sequence id is >= 2**63 (a reply echoes it as a count), a tick whose chunk start
overflows (2**63 - 1 plus a delay), and a 2.2 MB body of unexpected keys whose error reply
quoted every key and outgrew the message limit. Then: sequence ids at 2**63 - 1 and 2**64 - 1,
negative and huge delays, type confusion, nested maps, malformed arrays, non-UTF-8 strings,
and bodies at and over the transport's `max_message_bytes`. A request held in the server's
handler (a reset waiting on its policy) must not hold up another robot. A last test makes a
failure no check foresaw escape the serving of one message (the transport's send raising
once) and shows the thread survives it, counted.
"""

from __future__ import annotations

import dataclasses
import threading

import msgpack
import pytest

from harness import protocol
from harness.bench.mutations import CHUNK, REJECT, REQUEST, STREAM, edge_cases, rewrite, sized
from tests.conftest import wait_until
from tests.server.wire import RawClient, contract, oracle, start_server
from transports import TransportError
from transports.registry import transport_entry, transport_names

pytestmark = pytest.mark.network


def observation(env, **fields) -> protocol.Observation:
    obs = env.reset(seed=0)
    return protocol.Observation(obs.state, obs.images, obs.instruction, **fields)


def edge_case(env, name: str, epoch: int = 1) -> bytes:
    [case] = [c for c in edge_cases(observation(env), contract(env), epoch=epoch)
              if c.name == name]
    return case.payload


def answers(reply: protocol.Message | None, expect: str) -> bool:
    """Whether `reply` is what `Hostile.expect` says the server owes."""
    if reply is None:
        return False
    if expect == CHUNK:
        return reply.msg_type is protocol.MessageType.ACTION_CHUNK
    if expect == REJECT:
        return reply.msg_type is protocol.MessageType.SESSION_REJECT
    return reply.msg_type is protocol.MessageType.ERROR and reply.body.code == expect


@pytest.fixture(params=transport_names())
def server_and_config(request, env):
    server, config = start_server(env, kind=request.param)
    yield server, config
    server.close()


def honest_chunk(config, env) -> protocol.Message:
    client = RawClient(config)
    try:
        assert client.open(contract(env)).msg_type is protocol.MessageType.SESSION_OK
        client.call(protocol.Reset(), episode=1)
        client.observe(env.reset(seed=1), seq=1, episode=1)
        return client.next_reply()
    finally:
        client.close()


def test_every_edge_value_gets_its_answer_and_the_server_keeps_serving(server_and_config, env):
    server, config = server_and_config
    attacker = RawClient(config)
    cases = []
    try:
        attacker.open(contract(env))
        cases = edge_cases(observation(env), contract(env), epoch=attacker.epoch)
        for case in cases:
            if case.path == REQUEST:
                reply = protocol.decode(attacker.transport.request(case.payload, timeout_s=5.0))
            else:
                attacker.transport.publish(case.payload)
                reply = attacker.next_reply()
            assert answers(reply, case.expect), f"{case.name}: {reply}"
            if reply.msg_type is protocol.MessageType.ERROR:
                assert len(reply.body.detail) <= protocol.MAX_ERROR_DETAIL_CHARS + 40, case.name
    finally:
        attacker.close()
    assert {case.path for case in cases} == {STREAM, REQUEST} and len(cases) > 50
    assert server.healthy()
    reply = honest_chunk(config, env)
    assert reply is not None and reply.msg_type is protocol.MessageType.ACTION_CHUNK


@pytest.mark.parametrize("kind", [n for n in transport_names() if transport_entry(n).networked])
def test_bodies_at_and_past_the_message_limit(kind, env):
    """A message of exactly `max_message_bytes` is served (an 8 MiB instruction is legal);
    one byte more, or a MiB more, from a client that allows it, is dropped unanswered on the
    stream and fails on the request path, and the server goes on. (Networked transports: in
    one process the only client is the process itself.)"""
    server, config = start_server(env, kind=kind)
    limit = config.max_message_bytes
    attacker = RawClient(dataclasses.replace(config, max_message_bytes=limit + 2**21))
    try:
        attacker.open(contract(env))
        valid = protocol.encode(protocol.Message(observation(env), seq=1, episode=1,
                                                 epoch=attacker.epoch))
        attacker.transport.publish(sized(valid, limit))
        assert attacker.next_reply().msg_type is protocol.MessageType.ACTION_CHUNK
        reply = protocol.decode(attacker.transport.request(sized(valid, limit), timeout_s=5.0))
        assert reply.body.code == protocol.ERROR_PROTOCOL  # an observation is no request
        for over in (sized(valid, limit + 1), sized(valid, limit + 2**20)):
            attacker.transport.publish(over)
            assert attacker.next_reply(timeout_s=1.0) is None
            with pytest.raises(TransportError):
                attacker.transport.request(over, timeout_s=1.0)
        assert server.healthy()
        assert honest_chunk(config, env).msg_type is protocol.MessageType.ACTION_CHUNK
    finally:
        attacker.close()
        server.close()


def test_a_map_past_the_entry_limit_is_refused_by_the_parser(env):
    payload = edge_case(env, "200k unexpected keys (2.2 MB)")
    with pytest.raises(protocol.DecodeError, match=r"observation: body is not valid msgpack "
                                                   r"\(ValueError: 200006 exceeds "
                                                   r"max_map_len\(1024\)\)"):
        protocol.decode(payload)


def test_the_error_for_unexpected_keys_names_eight_and_counts_the_rest(env):
    keys = {f"k{i:06d}": i for i in range(1000)}
    valid = protocol.encode(protocol.Message(observation(env), seq=1, episode=1, epoch=1))
    with pytest.raises(protocol.DecodeError) as failure:
        protocol.decode(rewrite(valid, fields=keys))
    message = str(failure.value)
    assert message.endswith("unexpected keys ['k000000', 'k000001', 'k000002', 'k000003', "
                            "'k000004', 'k000005', 'k000006', 'k000007'] and 992 more")


def test_a_session_open_of_250k_contract_entries_is_refused_on_the_request_path(
        server_and_config, env):
    """8.3 MB of contract entries (in the fuzz) took 2-3 s of the server's I/O thread to
    check; one every 3 s took an honest robot's p99 from 3 ms to 767 ms on zmq. The parser
    now refuses the map by its length (7 MB here), and the server answers at once."""
    server, config = server_and_config
    state = {f"object_{i:06d}_pos": ["float32", [3]] for i in range(250_000)}
    open_body = protocol.SessionOpen("attacker", contract(env))
    valid = protocol.encode(protocol.Message(open_body))
    fields = msgpack.unpackb(valid[protocol.HEADER.size:], raw=False)
    fields["contract"]["state"] = state
    packed = msgpack.packb(fields, use_bin_type=True)
    header = list(protocol.HEADER.unpack_from(valid))
    header[-1] = len(packed)
    attacker = RawClient(config)
    try:
        reply = protocol.decode(attacker.transport.request(protocol.HEADER.pack(*header) + packed,
                                                           timeout_s=5.0))
        assert reply.msg_type is protocol.MessageType.ERROR and reply.body.code == "decode"
        assert "250000 exceeds max_map_len(1024)" in reply.body.detail
    finally:
        attacker.close()
    assert honest_chunk(config, env).msg_type is protocol.MessageType.ACTION_CHUNK


HELD_EPISODE = 77


class HeldResets:
    """Test double: builds oracle policies whose reset for episode `HELD_EPISODE` waits until
    `release` is set (at most 20 s), as a reset waits on a slow model or a session open on a
    prediction in progress; every other reset is the oracle's own."""

    def __init__(self) -> None:
        self.inside = threading.Event()
        self.release = threading.Event()

    def __call__(self) -> _HeldResetPolicy:
        return _HeldResetPolicy(oracle(), self)


class _HeldResetPolicy:
    def __init__(self, inner, gate: HeldResets) -> None:
        self._inner = inner
        self._gate = gate

    def reset(self, *, seed: int) -> None:
        if seed == HELD_EPISODE:
            self._gate.inside.set()
            self._gate.release.wait(20.0)
        self._inner.reset(seed=seed)

    def __getattr__(self, name: str):
        return getattr(self._inner, name)


@pytest.mark.parametrize("kind", transport_names())
def test_a_request_held_in_the_server_holds_up_no_other_robot(kind, env):
    """Issue 21: zmq ran the request handler on its one I/O thread (zenoh: its queries one at
    a time), so a request that took 2-3 s took every robot's observations, pings and requests
    with it (an honest robot's p99 went from 3 ms to 767 ms). While one robot's reset is held
    inside the server, another opens a session, is served chunks, asks for the status and
    sees the server present. Against the transports as they were (handler inline) this fails
    on zmq (the honest robot never sees the server: no pong while the reset is held) and on
    zenoh (its session open times out)."""
    held = HeldResets()
    server, config = start_server(env, kind=kind, policy_factory=held)
    slow = RawClient(config)
    replies: list[protocol.Message] = []
    reset = protocol.encode(protocol.Message(protocol.Reset(), episode=HELD_EPISODE))
    holder = threading.Thread(target=lambda: replies.append(protocol.decode(
        slow.transport.request(rewrite(reset, epoch=slow.epoch), timeout_s=25.0))))
    try:
        slow.open(contract(env))
        holder.start()
        assert held.inside.wait(5.0), "the reset never reached the policy"
        honest = RawClient(config)
        try:
            assert honest.open(contract(env)).msg_type is protocol.MessageType.SESSION_OK
            honest.call(protocol.Reset(), episode=1)
            for seq in (1, 2, 3):
                honest.observe(env.reset(seed=1), seq=seq, episode=1)
                reply = honest.next_reply()
                assert reply.msg_type is protocol.MessageType.ACTION_CHUNK
                assert reply.body.obs_seq == seq
            assert honest.call(protocol.Status()).msg_type is protocol.MessageType.STATUS
            assert honest.transport.server_present()
            assert holder.is_alive() and replies == []  # all of it while the reset was held
        finally:
            honest.close()
    finally:
        held.release.set()
        if holder.is_alive():
            holder.join(25.0)
        slow.close()
        server.close()
    assert [reply.msg_type for reply in replies] == [protocol.MessageType.RESET]
    assert server.metrics.total(server.metrics.requests) > 0


class SendFailsOnce:
    """A real transport server whose `send_stream` raises once, on the first action chunk:
    a failure inside the serving of one message that no check of ours foresaw."""

    def __init__(self, inner) -> None:
        self._inner = inner
        self.failed = False

    def send_stream(self, client_id: str, payload: bytes) -> None:
        if not self.failed and protocol.decode(payload).msg_type is \
                protocol.MessageType.ACTION_CHUNK:
            self.failed = True
            raise RuntimeError("the link dropped this reply")
        self._inner.send_stream(client_id, payload)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def test_a_failure_escaping_one_message_is_answered_counted_and_survived(env):
    from harness.server.policy_server import PolicyServer
    from tests.server.wire import oracle
    from transports import make_server
    from transports.loopback import loopback_config

    config = loopback_config("zmq")
    transport = SendFailsOnce(make_server(config))
    server = PolicyServer(transport, oracle, max_sessions=2)
    server.start()
    client = RawClient(config)
    try:
        client.open(contract(env))
        client.call(protocol.Reset(), episode=1)
        client.observe(env.reset(seed=1), seq=1, episode=1)
        first = client.next_reply()
        assert transport.failed
        assert first.msg_type is protocol.MessageType.ERROR
        assert (first.body.code, first.body.detail) == (
            "internal", "RuntimeError: the link dropped this reply")
        wait_until(lambda: server.metrics.total(server.metrics.requests) >= 2, 5.0,
                   "the failure to be audited")
        client.observe(env.reset(seed=1), seq=2, episode=1)
        second = client.next_reply()
        assert second.msg_type is protocol.MessageType.ACTION_CHUNK and second.body.obs_seq == 2
        assert server.healthy()
        exposition = server.metrics.exposition().decode()
        assert 'policy_requests_total{outcome="internal_error"} 1.0' in exposition
    finally:
        client.close()
        server.close()


def test_per_client_metrics_end_with_their_session(env):
    """2,000 open/close cycles grew /metrics from 3.7 KB to 358 KB: each client id kept its
    series. Now a closed or expired session's series is removed; the total stays."""
    server, config = start_server(env, kind="zmq", session_idle_timeout_s=0.3)
    try:
        ids = []
        def served_once(client: RawClient) -> None:
            client.open(contract(env))
            client.call(protocol.Reset(), episode=1)
            client.observe(env.reset(seed=1), seq=1, episode=1)
            assert client.next_reply().msg_type is protocol.MessageType.ACTION_CHUNK
            ids.append(client.transport.client_id)

        for _ in range(12):
            client = RawClient(config)
            try:
                served_once(client)
                client.call(protocol.Close())
            finally:
                client.close()
        silent = RawClient(config)  # served once, then silent until its session expires
        try:
            served_once(silent)
            wait_until(lambda: server.metrics.total(server.metrics.sessions_expired) == 1, 5.0,
                       "the silent session to expire")
        finally:
            silent.close()
        exposition = server.metrics.exposition().decode()
        assert not [i for i in ids if i in exposition]
        assert 'policy_chunks_served_total{client=' not in exposition
        assert "policy_chunks_served_all_total 13.0" in exposition
        assert server.metrics.served_total() == 13
    finally:
        server.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_an_inference_thread_that_dies_anyway_tells_its_robots_and_turns_unhealthy(env):
    """Nothing a request raises ends the inference thread; if it ends anyway (here its
    stream take raises SystemExit, which no handler catches), the server is unhealthy from
    then on, refuses new sessions saying so, and every robot with a session gets an error
    it counts instead of waiting for chunks that never come."""
    server, config = start_server(env, kind="local")
    robot = RawClient(config)
    try:
        assert robot.open(contract(env)).msg_type is protocol.MessageType.SESSION_OK
        assert server.healthy()

        def stops(timeout_s: float):
            raise SystemExit("the thread ends here")

        server._transport.take_stream = stops
        reply = robot.next_reply(timeout_s=5.0)
        assert reply is not None and reply.msg_type is protocol.MessageType.ERROR
        assert reply.body.code == protocol.ERROR_INTERNAL
        assert "inference stopped (SystemExit" in reply.body.detail
        wait_until(lambda: not server.healthy(), 5.0, "the server to turn unhealthy")
        other = RawClient(config)
        try:
            refused = other.open(contract(env))
            assert refused.msg_type is protocol.MessageType.SESSION_REJECT
            assert "inference thread stopped" in refused.body.reason
        finally:
            other.close()
    finally:
        robot.close()
        server.close()
