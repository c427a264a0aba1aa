"""The one transport interface the harness speaks, and the errors every backend raises.

A transport moves opaque bytes (already wire-encoded by `harness.protocol`) between one policy
server and its clients. It offers two paths, because a robot needs both:

* a *request* path with a deadline, for control messages (session open, reset, status, close)
  whose answer the caller must wait for;
* a *stream* path that never blocks and keeps only the newest item, for observations
  (client -> server) and action chunks (server -> client). A newer observation that arrives
  before the server took the previous one replaces it; the replaced one is counted.

Backends differ in how they move bytes and notice a dead peer; they must not differ in these
semantics, which `tests/transports/test_conformance.py` checks for every backend.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

RequestHandler = Callable[[str, bytes], bytes]
"""Server-side callback for the request path: (client_id, payload) -> reply payload.

Called on one of the transport's request threads (`transports.request_workers`: a few, with
a cap per client), never on the thread that carries every robot's observations and pings, so
one slow request stalls no one else; still, keep it to validation and bookkeeping. Model
inference belongs on the stream path,
served by the policy server's own thread. An exception in it is logged and the request goes
unanswered (the client sees a timeout); answer with a wire ERROR message where you can.
"""


log = logging.getLogger(__name__)

RefusalListener = Callable[..., None]
"""(outcome, client_id, **detail): a refusal a server transport made (`StreamStats.refuse`)."""


class TransportError(Exception):
    """Base of every error a transport raises."""


class TransportTimeout(TransportError, TimeoutError):
    """A request got no reply within its deadline."""


class ServerUnavailable(TransportError):
    """The transport knows right now that no server can answer (none is registered or
    discovered). Raised early instead of waiting for the deadline when the backend can tell."""


class TransportClosed(TransportError):
    """The client or server was used after `close()`."""


class PayloadTooLarge(TransportError, ValueError):
    """A payload exceeds the configured `max_message_bytes`; nothing was sent."""


class StreamItem(NamedTuple):
    """One observation taken from a server's stream path."""

    client_id: str
    payload: bytes
    received_ns: int
    """`time.monotonic_ns()` of this process when it arrived: the start of its queue wait."""


@dataclass
class StreamStats:
    """Counters of the stream path on one side. Plain ints: read them, don't reset them."""

    sent: int = 0
    received: int = 0
    superseded: int = 0
    """Items replaced by a newer one before they were taken or sent (latest-only)."""
    rejected_oversize: int = 0
    """Incoming items dropped for exceeding `max_message_bytes`."""
    out_of_order: int = 0
    """Incoming items dropped because a newer one (by the client's `order_stream_by` key)
    was waiting to be taken."""
    set_aside: int = 0
    """Incoming items displaced by a newer one (superseded or out of order) that the client's
    `order_stream_by(..., on_displaced)` kept: delivered through it, so not counted as
    superseded or out_of_order."""
    identity_refused: int = 0
    """Server side, with security: messages refused because the client id they claimed was
    not the identity their connection authenticated (or it authenticated none)."""
    on_refused: RefusalListener | None = field(default=None, repr=False, compare=False)
    """Told of every refusal the transport makes on its own (`refuse`): the policy server
    writes each to its audit log. Called on a transport thread."""

    def refuse(self, outcome: str, client_id: str, **detail: str | None) -> None:
        """Count a refusal made below the policy server, which never sees the message, and
        tell `on_refused`: `identity_refused` (a client id its connection did not
        authenticate) or `handshake_refused` (a key not on the allow-list; no client id)."""
        if outcome == "identity_refused":
            self.identity_refused += 1
        if self.on_refused is not None:
            try:
                self.on_refused(outcome, client_id, **detail)
            except Exception:  # the transport's thread (zmq's ZAP handler) must go on
                log.exception("the refusal listener failed on %s", outcome)


class TransportServer(Protocol):
    """The server side: answers requests, receives observations, streams chunks back."""

    stats: StreamStats

    def start(self, handler: RequestHandler) -> None:
        """Bind `listen` and begin serving, answering requests with `handler`. Returns once
        clients can connect. A wrapper (`Faulty(inner)`) passes its own handler on.

        Raises:
            TransportError: the endpoint cannot be bound.
        """

    def take_stream(self, timeout_s: float) -> StreamItem | None:
        """Return the newest unserved observation of the next client, round-robin.

        Blocks up to `timeout_s`; returns None if nothing arrived in that time.
        """

    def last_arrival_ns(self, client_id: str) -> int | None:
        """When the newest stream message of `client_id` arrived (`time.monotonic_ns()`),
        taken yet or not; None if none came since `forget(client_id)`. What a server counts
        a session alive by: a robot that keeps sending is heard, however long the
        observations wait behind a slow or blocked predict."""

    def forget(self, client_id: str) -> None:
        """Drop what is kept about `client_id` (its unserved item, its arrival time): its
        session ended. Idempotent."""

    def send_stream(self, client_id: str, payload: bytes) -> None:
        """Queue `payload` for one client's stream path. Never blocks.

        Unknown or disconnected clients are ignored (the client's staleness logic copes).
        Raises PayloadTooLarge if over the limit.
        """

    def close(self) -> None:
        """Stop serving and release every thread and socket. Idempotent."""


class TransportClient(Protocol):
    """The robot side: requests with deadlines, a latest-only stream both ways."""

    client_id: str
    stats: StreamStats

    def request(self, payload: bytes, *, timeout_s: float) -> bytes:
        """Send a control message and block for its reply.

        Raises:
            TransportTimeout: no reply within `timeout_s` (never blocks much longer).
            ServerUnavailable: the backend knows no server is there.
            PayloadTooLarge: `payload` exceeds `max_message_bytes`.
            TransportClosed: after `close()`.
        """

    def publish(self, payload: bytes) -> None:
        """Queue an observation for the server. Never blocks; a newer one replaces an unsent one.

        Raises PayloadTooLarge if over the limit, TransportClosed after `close()`.
        """

    def take_stream(self, timeout_s: float = 0.0) -> bytes | None:
        """Return the newest payload the server streamed to this client, or None.

        Waits up to `timeout_s` for one; older untaken payloads are dropped (and counted).
        """

    def take_stream_timed(self, timeout_s: float = 0.0) -> tuple[bytes, int] | None:
        """Like `take_stream`, with the `time.monotonic_ns()` at which the payload arrived
        (what a latency measurement must use: the caller may take it much later)."""

    def order_stream_by(self, key: Callable[[bytes], int],
                        on_displaced: Callable[[bytes, int], bool] | None = None) -> None:
        """From now on, of two streamed payloads waiting to be taken keep the one with the
        larger `key` (a message's sequence id), not the last to arrive, so a reordered or
        duplicated older reply cannot overwrite a newer one. The transport stays opaque to
        what the bytes mean: the caller supplies the key.

        `on_displaced(payload, arrival_ns)`, if given, is offered every payload that the
        latest-only inbox would otherwise drop (one a newer payload replaced before it was
        taken, or an older one arriving late); if it returns True the caller keeps it and it
        is counted in `stats.set_aside`, not dropped. Latest-only suits chunks, not a reply
        that reports a failure: the client's engine keeps its error replies this way
        (`transports.mailbox.SetAside.offer`), so each is counted even when a newer chunk
        overtakes it. Called on the transport's receive thread: it must be quick and must
        not raise."""

    def server_present(self) -> bool:
        """Whether the server is believed alive now (liveliness token or recent heartbeat)."""

    def wait_ready(self, timeout_s: float) -> None:
        """Block until the server is present and the stream path is wired up.

        Raises TransportTimeout after `timeout_s`.
        """

    def close(self) -> None:
        """Release every thread and socket. Idempotent."""


def check_payload_size(payload: bytes, max_message_bytes: int) -> None:
    """Raise PayloadTooLarge, naming both sizes, if `payload` is over the limit."""
    if len(payload) > max_message_bytes:
        raise PayloadTooLarge(
            f"payload of {len(payload)} bytes exceeds max_message_bytes={max_message_bytes}"
        )
