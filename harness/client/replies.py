"""What comes back to the robot on the stream, taken so that no failure goes uncounted.

The client's stream inbox is latest-only, ordered by sequence id: a chunk that a newer one
overtook before the engine polled is worth nothing and is dropped. An ERROR reply is
different: it reports that a request failed (the model raised, its external server was
unavailable, the session is unknown), a fact no newer chunk undoes. Dropped with the chunks,
the robot's count of failures fell short of the server's (issue 21: under a model-link
partition the server's audit log showed 2 inference errors, the episode row
`server_errors=0`). So the engine marks error replies (`protocol.is_error`, from the header
alone) and the inbox sets aside each one it displaces (`transports.mailbox.SetAside`);
`Replies.take` hands over those first, then the newest reply, and counts every error reply
exactly once, on arrival.

Also here, to keep the engine short: the bookkeeping of the request in flight and of the
chunks that arrived before their control tick.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from harness import protocol
from harness.client.states import EngineStats
from harness.protocol import checks, sealing
from transports import TransportClient
from transports.mailbox import SetAside

log = logging.getLogger(__name__)


@dataclass
class InFlight:
    """The request whose chunk the engine waits for."""

    request: checks.Request
    sent_ns: int
    key: tuple[int, int]
    """(episode, index of the request in the episode): what latency models draw by."""


@dataclass
class Arrived:
    """A checked reply that arrived (wall time) but whose control tick may not have come."""

    usable_tick: int
    obs_tick: int
    reply: protocol.Message
    latency_s: float
    """The round trip the clock uses."""
    measured_s: float


def count_error_reply(stats: EngineStats, reply: protocol.Message) -> None:
    """Count one ERROR reply in `stats`, by its code, and record it as text."""
    code = reply.body.code
    stats.error_replies[code] = stats.error_replies.get(code, 0) + 1
    stats.errors.append(f"{code}: {reply.body.detail}")


class Replies:
    """The engine's end of its transport's stream: orders the inbox by sequence id, keeps
    the error replies it would drop, and decodes and counts what arrived.

    Not thread-safe (the control loop's thread calls `take`); the set-aside is filled on
    the transport's receive thread.
    """

    def __init__(self, transport: TransportClient) -> None:
        self.transport = transport
        self.set_aside = SetAside(protocol.is_error)
        self._overflow_counted = 0
        self._keys: tuple[bytes, ...] = ()
        """The open session's sealing key, then the one before (a reply of the old session
        may still arrive); empty: the stream is not sealed."""
        # A late older chunk never wins; an error reply displaced by a newer one is kept.
        transport.order_stream_by(self._order_key, self.set_aside.offer)

    def expect_seal(self, key: bytes | None) -> None:
        """A session was opened: its stream is sealed under `key` (None: not sealed)."""
        self._keys = () if key is None else (key, *self._keys[:1])

    def _order_key(self, payload: bytes) -> int:
        """The header's sequence id (on the transport's receive thread); -1, as garbage,
        for a payload a sealed stream's keys did not seal: a forged reply with a high
        sequence id must not displace the real one from the latest-only inbox."""
        keys = self._keys
        if keys and all(sealing.unseal(payload, key) is None for key in keys):
            return -1
        return protocol.header_seq(payload)

    def _unsealed(self, payload: bytes, stats: EngineStats) -> bytes | None:
        """The message of a sealed stream's payload; None, counted, if no key of ours made
        its tag: a forged reply, never executed."""
        if not self._keys:
            return payload
        for key in self._keys:
            message = sealing.unseal(payload, key)
            if message is not None:
                return message
        stats.forged += 1
        stats.errors.append("forged: a reply whose seal is not this session's, dropped")
        return None

    def take(self, stats: EngineStats) -> list[tuple[protocol.Message, int]]:
        """Every reply that arrived since the last call, decoded, with the
        `time.monotonic_ns()` it arrived at: those set aside first (each is older than what
        displaced it), then the newest. Never blocks.

        Counted in `stats` here, once each: every ERROR reply (`count_error_reply`), every
        payload that does not decode, and error replies lost to a set-aside overflow. The
        ERROR replies are returned too: the caller decides what they mean for the session.
        """
        payloads = self.set_aside.take()
        while (taken := self.transport.take_stream_timed(0.0)) is not None:
            payloads.append(taken)  # arrival time, not when this tick got to it
        overflow = self.set_aside.overflow - self._overflow_counted
        if overflow:
            self._overflow_counted += overflow
            log.warning("%d error replies lost: more than %d set aside between two polls",
                        overflow, self.set_aside.capacity)
            stats.errors.append(f"{overflow} error replies lost: more than "
                                f"{self.set_aside.capacity} set aside between two polls")
        replies = []
        for sealed, received_ns in payloads:
            payload = self._unsealed(sealed, stats)
            if payload is None:
                continue
            try:
                reply = protocol.decode(payload)
            except protocol.DecodeError as exc:
                stats.errors.append(f"decode: {exc}")
                continue
            if reply.msg_type is protocol.MessageType.ERROR:
                count_error_reply(stats, reply)
            replies.append((reply, received_ns))
        return replies
