"""Every error reply is counted once, on arrival, even when a newer reply overtakes it before
the engine polls (issue 21: the inbox kept only the newest reply by sequence id, so an
error followed closely by a chunk was never seen), and a session-unknown reply overtaken so
still re-opens the session, once.

The server here is a scripted double on the local transport's server side: it answers the
control messages as a policy server does and streams exactly the replies each test names,
in that order, before the engine's next poll, which a real server only does by chance.
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from harness import protocol
from harness.client.config import EngineConfig
from harness.client.engine import ClientEngine
from harness.client.states import ClientState
from tests.conftest import wait_until
from transports import LocalTransportConfig, make_client, make_server

CONTRACT = protocol.Contract(action_names=("dx", "dy"),
                             state={"pos": protocol.ArraySpec("float32", (2,))},
                             control_hz=20.0, chunk_size=2, model_id="double")
OBSERVATION = protocol.Observation({"pos": np.zeros(2, np.float32)}, {}, "")


class ScriptedServer:
    """The server side of the local transport, answering session opens (a new epoch each)
    and resets; the stream replies are sent by the test (`reply`)."""

    def __init__(self) -> None:
        self.name = f"errors-{uuid.uuid4().hex[:8]}"
        self.transport = make_server(LocalTransportConfig(name=self.name))
        self.opens = 0
        self.transport.start(self._answer)

    def _answer(self, client_id: str, payload: bytes) -> bytes:
        request = protocol.decode(payload)
        if request.msg_type is protocol.MessageType.SESSION_OPEN:
            self.opens += 1
            body, epoch = protocol.SessionOk(f"s{self.opens}", CONTRACT), self.opens
        else:
            body, epoch = protocol.Reset() if request.msg_type is protocol.MessageType.RESET \
                else protocol.Close(), request.epoch
        return protocol.encode(protocol.Message(body, seq=request.seq, episode=request.episode,
                                                epoch=epoch, flags=protocol.Flags.RESPONSE))

    def observation(self) -> protocol.Message:
        """The next observation a robot streamed."""
        item = self.transport.take_stream(timeout_s=5.0)
        assert item is not None, "no observation arrived"
        return protocol.decode(item.payload)

    def reply(self, client, *messages: protocol.Message) -> None:
        """Stream `messages` in order and wait until all landed in the client's inbox."""
        landed = client.stats.received + len(messages)
        for message in messages:
            self.transport.send_stream(client.client_id, protocol.encode(message))
        wait_until(lambda: client.stats.received >= landed, 5.0, "the replies to land")


def error(code: str, answered: protocol.Message, *, epoch: int | None = None) -> protocol.Message:
    return protocol.Message(protocol.Error(code, f"{code} failure"), seq=answered.seq,
                            episode=answered.episode,
                            epoch=answered.epoch if epoch is None else epoch,
                            flags=protocol.Flags.RESPONSE)


def chunk(answered: protocol.Message) -> protocol.Message:
    return protocol.Message(protocol.ActionChunk(np.zeros((2, 2), np.float32), answered.seq,
                                                 0, 0, "double", answered.body.tick),
                            seq=answered.seq, episode=answered.episode, epoch=answered.epoch,
                            flags=protocol.Flags.RESPONSE)


@pytest.fixture
def loop():
    """(scripted server, client transport, engine at episode 1); request_timeout_s is two
    ticks, so the third tick sends a new observation while the first is unanswered."""
    server = ScriptedServer()
    client = make_client(LocalTransportConfig(name=server.name))
    engine = ClientEngine(client, CONTRACT, EngineConfig(request_timeout_s=0.1), dt=0.05)
    engine.reset(1)
    yield server, client, engine
    client.close()
    server.transport.close()


def send_two_observations(server: ScriptedServer,
                          engine: ClientEngine) -> tuple[protocol.Message, protocol.Message]:
    """Tick 0 sends an observation; tick 2 finds it lost and sends the next one."""
    engine.tick(0, OBSERVATION)
    first = server.observation()
    engine.tick(1, OBSERVATION)
    engine.tick(2, OBSERVATION)
    second = server.observation()
    assert (engine.stats.lost, second.seq) == (1, first.seq + 1)
    return first, second


def test_an_error_reply_overtaken_by_a_newer_chunk_is_still_counted_once(loop):
    server, client, engine = loop
    first, second = send_two_observations(server, engine)
    server.reply(client, error("inference", first), chunk(second))  # both before a poll
    engine.tick(3, OBSERVATION)
    engine.tick(4, OBSERVATION)
    assert engine.stats.error_replies == {"inference": 1}
    assert engine.stats.chunks == 1  # the chunk that overtook it is used as ever
    assert engine.stats.errors == ["inference: inference failure"]
    assert (client.stats.set_aside, client.stats.superseded) == (1, 0)
    assert engine.stats.server_errors == 1 and engine.stats.client_errors == 0


def test_an_error_reply_arriving_late_behind_a_newer_chunk_is_counted_too(loop):
    server, client, engine = loop
    first, second = send_two_observations(server, engine)
    server.reply(client, chunk(second), error("inference", first))  # reordered on the way
    engine.tick(3, OBSERVATION)
    assert engine.stats.error_replies == {"inference": 1} and engine.stats.chunks == 1
    assert client.stats.out_of_order == 0


def reopened(engine: ClientEngine, epoch: int) -> None:
    """Tick on until the engine's session has an epoch other than `epoch`."""
    for tick in range(4, 60):
        engine.tick(tick, OBSERVATION)
        if engine.epoch != epoch:
            return
        wait_until(lambda: engine._reopen is None or engine._reopen.done(), 5.0, "re-open")
    pytest.fail(f"no re-open: still epoch {epoch}, {engine.state}")


@pytest.mark.parametrize("second_reply, unknown", [
    (chunk, 1),  # a session-unknown reply overtaken by a newer chunk still re-opens
    (lambda answered: error(protocol.SESSION_UNKNOWN, answered), 2),  # two in one burst: once
], ids=["overtaken_by_a_chunk", "two_in_one_burst"])
def test_a_session_unknown_reply_reopens_the_session_once(loop, second_reply, unknown):
    server, client, engine = loop
    epoch = engine.epoch
    first, second = send_two_observations(server, engine)
    server.reply(client, error(protocol.SESSION_UNKNOWN, first), second_reply(second))
    assert engine.tick(3, OBSERVATION).state is ClientState.RECONNECTING
    reopened(engine, epoch)
    assert (engine.epoch, server.opens, engine.stats.reopened) == (epoch + 1, 2, 1)
    assert engine.stats.error_replies == {protocol.SESSION_UNKNOWN: unknown}


def test_a_session_unknown_reply_of_an_older_epoch_is_counted_but_reopens_nothing(loop):
    server, client, engine = loop
    first, second = send_two_observations(server, engine)
    server.reply(client, error(protocol.SESSION_UNKNOWN, first, epoch=engine.epoch - 1),
                 chunk(second))
    engine.tick(3, OBSERVATION)
    assert engine.state is not ClientState.RECONNECTING and server.opens == 1
    assert engine.stats.error_replies == {protocol.SESSION_UNKNOWN: 1}


def test_an_error_answering_the_request_in_flight_ends_it_counted_once_not_also_lost(loop):
    """The request failed and said so: counted as that error, not again as lost when its
    timeout passes, and the next observation goes on the next tick instead of after the
    timeout."""
    server, client, engine = loop
    engine.tick(0, OBSERVATION)
    first = server.observation()
    server.reply(client, error("inference", first))
    engine.tick(1, OBSERVATION)  # polls the error, then may send again
    second = server.observation()
    assert second.seq == first.seq + 1 and second.body.tick == 1
    for tick in range(2, 5):  # past request_timeout_s of the first request (tick 2)
        engine.tick(tick, OBSERVATION)
    assert engine.stats.error_replies == {"inference": 1}
    assert (engine.stats.sent, engine.stats.lost) == (3, 1)  # the second, lost at tick 3
