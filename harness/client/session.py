"""Session handling of the client engine: re-opening in the background, and what a
rejected session open means.

A reject is fatal only when no retry can fix it (the contract does not match, the client id
is refused: `protocol.retryable_reject`); a draining server or one at `max_sessions` may
accept later, so the engine retries those with a growing backoff for up to
`client.reject_retry_s` of wall time before it gives up on the episode.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from harness import protocol

if TYPE_CHECKING:
    from harness.client.engine import ClientEngine

BACKOFF_INITIAL_S = 0.1
BACKOFF_MAX_S = 2.0


def session_unknown(reply: protocol.Message) -> bool:
    """The server answered that it holds no session of our epoch: re-open, don't retry."""
    return (reply.msg_type is protocol.MessageType.ERROR
            and reply.body.code == protocol.SESSION_UNKNOWN)


class Reopen:
    """A session re-open (open, then reset) on its own thread, so that the tick noticing the
    server is back does not wait up to `control_timeout_s` for its answer. It only talks to
    the server; the engine applies the answer on a later tick (`ClientEngine._advance_reopen`)."""

    def __init__(self, engine: ClientEngine) -> None:
        self.reply: protocol.Message | None = None
        self.error: Exception | None = None
        self._engine = engine
        self._thread = threading.Thread(target=self._run, name="session-reopen", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            reply = self._engine._request_open()
            if reply.msg_type is protocol.MessageType.SESSION_OK:
                self._engine._control(protocol.Reset(), epoch=reply.epoch)
            self.reply = reply
        except Exception as exc:  # noqa: BLE001 (any failure, a raw zenoh.ZError too, is an
            self.error = exc  # answer: reply and error must never both be None when done)

    def done(self) -> bool:
        return not self._thread.is_alive()

    def join(self) -> None:
        self._thread.join()


class RejectBackoff:
    """Retryable session rejects: when the next attempt may go, and when to stop trying."""

    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self._first_s: float | None = None
        self._delay_s = BACKOFF_INITIAL_S
        self._next_s = 0.0

    def record(self) -> bool:
        """A retryable reject just came back: schedule the next try. False once rejects have
        gone on for longer than the budget (time to give up)."""
        now = time.monotonic()
        if self._first_s is None:
            self._first_s = now
        self._next_s = now + self._delay_s
        self._delay_s = min(2 * self._delay_s, BACKOFF_MAX_S)
        return now - self._first_s < self.budget_s

    def ready(self) -> bool:
        """Whether the backoff since the last reject has passed."""
        return time.monotonic() >= self._next_s

    def wait(self) -> None:
        """Sleep until the next try may go."""
        time.sleep(max(0.0, self._next_s - time.monotonic()))

    def clear(self) -> None:
        """The session was accepted: the next reject starts a new budget."""
        self._first_s, self._delay_s, self._next_s = None, BACKOFF_INITIAL_S, 0.0

    @property
    def rejecting_for_s(self) -> float:
        return 0.0 if self._first_s is None else time.monotonic() - self._first_s
