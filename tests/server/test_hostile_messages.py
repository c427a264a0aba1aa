"""Messages crafted to stop the server, sent over every transport: each is answered with a
bounded error, and afterwards an honest robot is served as before.

The three inputs are the ones a fuzz found stopping the inference thread (issue 21): an
observation whose header sequence id is >= 2**63 (a reply echoes it as a count), a tick
whose chunk start overflows (2**63 - 1 plus a delay), and a 2.2 MB body of unexpected keys
whose error reply quoted every key and outgrew the message limit. A last test makes a
failure no check foresaw escape the serving of one message (the transport's send raising
once) and shows the thread survives it, counted.
"""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from harness import protocol
from tests.conftest import wait_until
from tests.server.wire import RawClient, contract, start_server
from transports.registry import transport_names

pytestmark = pytest.mark.network


def craft(body: protocol.Body, *, seq: int, epoch: int, fields: dict | None = None) -> bytes:
    """A message the encoder would refuse: `body` encoded, then its header's sequence id set
    to `seq` and its body's fields replaced by `fields` (msgpack, as on the wire)."""
    valid = protocol.encode(protocol.Message(body, seq=1, episode=1, epoch=epoch))
    header = list(protocol.HEADER.unpack_from(valid))
    packed = valid[protocol.HEADER.size:]
    if fields is not None:
        packed = msgpack.packb({**msgpack.unpackb(packed, raw=False), **fields},
                               use_bin_type=True)
    header[4], header[-1] = seq, len(packed)  # seq, body length
    return protocol.HEADER.pack(*header) + packed


def observation(env, **fields) -> protocol.Observation:
    obs = env.reset(seed=0)
    return protocol.Observation(obs.state, obs.images, obs.instruction, **fields)


def hostile_messages(env, epoch: int) -> dict[str, bytes]:
    prefix = np.zeros((1, env.spec.contract.action_dim), np.float32)
    keys = {f"k{i:06d}": i for i in range(200_000)}
    return {
        "seq 2**63": craft(observation(env), seq=2**63, epoch=epoch),
        "tick overflow": craft(observation(env, tick=5, delay_ticks=1, committed=prefix),
                               seq=2, epoch=epoch, fields={"tick": 2**63 - 1}),
        "200k unexpected keys": craft(observation(env), seq=3, epoch=epoch, fields=keys),
    }


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


def test_crafted_edge_values_get_bounded_errors_and_the_server_keeps_serving(
        server_and_config, env):
    server, config = server_and_config
    attacker = RawClient(config)
    try:
        attacker.open(contract(env))
        for name, payload in hostile_messages(env, attacker.epoch).items():
            assert len(payload) < protocol.DEFAULT_MAX_BODY_BYTES, name
            attacker.transport.publish(payload)
            reply = attacker.next_reply()
            assert reply is not None, f"{name}: no reply"
            assert reply.msg_type is protocol.MessageType.ERROR, name
            assert reply.body.code == "decode", name
            assert len(reply.body.detail) <= protocol.MAX_ERROR_DETAIL_CHARS + 40, name
    finally:
        attacker.close()
    assert server.healthy()
    reply = honest_chunk(config, env)
    assert reply is not None and reply.msg_type is protocol.MessageType.ACTION_CHUNK


def test_a_map_past_the_entry_limit_is_refused_by_the_parser(env):
    payload = hostile_messages(env, epoch=1)["200k unexpected keys"]
    with pytest.raises(protocol.DecodeError, match=r"observation: body is not valid msgpack "
                                                   r"\(ValueError: 200006 exceeds "
                                                   r"max_map_len\(1024\)\)"):
        protocol.decode(payload)


def test_the_error_for_unexpected_keys_names_eight_and_counts_the_rest(env):
    keys = {f"k{i:06d}": i for i in range(1000)}
    with pytest.raises(protocol.DecodeError) as failure:
        protocol.decode(craft(observation(env), seq=1, epoch=1, fields=keys))
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
        for _ in range(12):
            client = RawClient(config)
            try:
                client.open(contract(env))
                client.call(protocol.Reset(), episode=1)
                client.observe(env.reset(seed=1), seq=1, episode=1)
                assert client.next_reply().msg_type is protocol.MessageType.ACTION_CHUNK
                ids.append(client.transport.client_id)
                client.call(protocol.Close())
            finally:
                client.close()
        silent = RawClient(config)  # served once, then silent until its session expires
        try:
            silent.open(contract(env))
            silent.call(protocol.Reset(), episode=1)
            silent.observe(env.reset(seed=1), seq=1, episode=1)
            assert silent.next_reply().msg_type is protocol.MessageType.ACTION_CHUNK
            ids.append(silent.transport.client_id)
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
