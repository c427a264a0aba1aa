"""A robot that waits in control time still tells the server, in wall time, that it is there.

The server expires a session it has heard nothing from for `server.session_idle_timeout_s`
of wall time: that is how it frees the slot of a robot that is gone. A robot that is there
but silent by its own choice (a synchronous client holding still until its chunk's tick, an
asynchronous one with a full queue) is silent for ticks; on a robot a tick is dt of wall
time, but on a simulator five or twenty times slower than real time the same ticks are
five or twenty times longer, and a session a robot would keep expires (issue 21: a LIBERO
run under load lost its session twice in one episode this way). So when nothing has gone to
the server for `client.keepalive_s` of wall time, the engine sends a STATUS, which keeps the
session (`PolicyServer`: a status request counts as heard). It goes on a short thread of its
own, like a re-open: a tick never waits for the server. A robot cut off from the server
cannot send it either, so an outage still expires the session after the idle timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from harness import protocol
from harness.client.session import Session
from harness.client.states import ClientState
from transports import TransportError

log = logging.getLogger(__name__)

IN_SESSION = (ClientState.STREAMING, ClientState.DEGRADED, ClientState.STALLED)
"""States with an open session to keep (not while opening, re-opening or DEAD); CONNECTING
has one too once the open was accepted (an epoch) and the first episode has not begun."""


class KeepAlive:
    """Sends a STATUS when the robot has sent nothing for `interval_s` of wall time. The
    engine calls `sent` after every message it sends and `tick` once per control tick."""

    def __init__(self, session: Session, interval_s: float) -> None:
        self.session = session
        self.interval_s = interval_s
        self.count = 0
        """STATUS messages sent (answered or not)."""
        self._last_sent_s = time.monotonic()
        self._thread: threading.Thread | None = None

    def sent(self) -> None:
        """The robot just sent something the server will hear."""
        self._last_sent_s = time.monotonic()

    def tick(self) -> None:
        """Start one STATUS if the silence has lasted `interval_s` and none is on its way.
        Never blocks."""
        if (time.monotonic() - self._last_sent_s < self.interval_s
                or not self._in_session() or self.session.reopening is not None
                or (self._thread is not None and self._thread.is_alive())):
            return
        self.sent()
        self.count += 1
        self._thread = threading.Thread(target=self._send, name="session-keepalive",
                                        daemon=True)
        self._thread.start()

    def _in_session(self) -> bool:
        state = self.session.state
        return state in IN_SESSION or (state is ClientState.CONNECTING
                                       and self.session.epoch != 0)

    @contextmanager
    def covering(self) -> Iterator[None]:
        """Keep the session through a stretch with no ticks (an env reset): `tick` runs on a
        thread of its own, a few times per `interval_s`, until the block ends."""
        done = threading.Event()

        def watch() -> None:
            while not done.wait(self.interval_s / 4):
                self.tick()

        watcher = threading.Thread(target=watch, name="session-keepalive-cover", daemon=True)
        watcher.start()
        try:
            yield
        finally:
            done.set()
            watcher.join()

    def _send(self) -> None:
        try:
            self.session.control(protocol.Status())
        except (TransportError, protocol.WireError) as exc:  # the next silence tries again
            log.debug("keep-alive STATUS unanswered: %s", exc)

    def join(self) -> None:
        """Wait for a STATUS still on its way (before the session's own control messages)."""
        if self._thread is not None:
            self._thread.join()
