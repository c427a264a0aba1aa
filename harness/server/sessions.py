"""Session bookkeeping of the policy server: who holds a session, which policy instance serves
it, and when it was last heard from.

The policies are built once, when the server is built, into a pool of `max_sessions`
instances: a session takes one at open and gives it back when it closes or expires, so that
opening a session never loads a model on a request thread (a transport has a few, shared by
every client: `transports.request_workers`). A client re-opening its own session keeps its
instance. An instance that served a session is reset before the next session uses it.

Every call on an instance (reset on a request thread, predict on the inference thread) holds
the instance's lock, so the two never overlap on one policy. The table's lock is never held
while waiting for an instance's lock (that wait can last a whole prediction).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from envs.base import EnvObservation
from policies.base import Policy

LOGGED_ID_CHARS = 64
"""How much of a client id logs and audit lines show."""


def short_id(client_id: str) -> str:
    """`client_id` as logs show it: its first LOGGED_ID_CHARS characters, then "..." if it is
    longer, so a client cannot fill the server's log with its id."""
    if len(client_id) <= LOGGED_ID_CHARS:
        return client_id
    return client_id[:LOGGED_ID_CHARS] + "..."


class PolicySlot:
    """One policy instance of the pool and the lock that serializes every call on it."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.lock = threading.Lock()
        self.dirty = False
        """It was used (warm-up, or a session) since its last reset: reset before reuse.
        Set under the table's lock when the instance goes back to the pool; read and cleared
        under `lock` by the one open that took it out again."""


@dataclass(eq=False)
class Session:
    session_id: str
    client_id: str
    epoch: int
    slot: PolicySlot
    episode: int = 0
    """The episode the session's policy was last reset for. Changed only under `lock`."""
    served: int = 0
    last_heard_s: float = field(default_factory=time.monotonic)
    """Monotonic time of the client's last request or observation of this session."""
    closed: bool = False
    """Set when the session leaves the table (close, expiry, re-open). Check it under `lock`
    before calling the policy: the instance may already serve another session."""

    @property
    def policy(self) -> Policy:
        return self.slot.policy

    @property
    def lock(self) -> threading.Lock:
        """Held for every call on this session's policy (shared with the instance)."""
        return self.slot.lock


class SessionTable:
    """The open sessions, one per client id, and the pool of idle policy instances.

    Thread-safe: the transport's request threads open, look up and close sessions while the
    inference thread looks them up and expires them.
    """

    def __init__(self, policies: list[Policy], *, idle_timeout_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not policies:
            raise ValueError("SessionTable needs at least one policy instance (max_sessions >= 1)")
        if idle_timeout_s <= 0:
            raise ValueError(f"session_idle_timeout_s={idle_timeout_s}: must be > 0")
        self.max_sessions = len(policies)
        self.idle_timeout_s = idle_timeout_s
        self._idle = [PolicySlot(policy) for policy in policies]
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def _new_epoch(self) -> int:
        """A random epoch no open session has: one probe does not find another robot's
        session (sequential epochs let it), and a restarted server reissues its
        predecessor's with odds of 2^-31 (a client must never mix the two). Under the lock."""
        while True:
            epoch = secrets.randbelow(2**31 - 1) + 1
            if all(session.epoch != epoch for session in self._sessions.values()):
                return epoch

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def client_ids(self) -> list[str]:
        """The clients with an open session now."""
        with self._lock:
            return list(self._sessions)

    def warm(self, observation: EnvObservation) -> bool:
        """Predict once on an idle instance (the first call of a model is often the slowest);
        it is reset before a session uses it. Call before serving. A policy whose `warm_up`
        is False is left alone (a remote model is warm on its own server, and a blank
        observation would reach it as a real request); returns whether it predicted."""
        slot = self._idle[-1]
        if not getattr(slot.policy, "warm_up", True):
            return False
        with slot.lock:
            slot.policy.predict(observation)
            slot.dirty = True
        return True

    def open(self, client_id: str) -> Session | None:
        """Start a session of `client_id` with a new epoch, replacing the client's own if it
        has one (the new session keeps its policy instance). Returns None, changing nothing,
        if every instance serves another client.

        May wait for a predict in progress on the instance it takes (to reset it after)."""
        with self._lock:
            old = self._sessions.get(client_id)
            if old is not None:
                old.closed = True
                slot = old.slot
                slot.dirty = True
            elif self._idle:
                slot = self._idle.pop()
            else:
                return None
            session = Session(secrets.token_hex(16), client_id, self._new_epoch(), slot,
                              last_heard_s=self._clock())
            self._sessions[client_id] = session
        # The client has no epoch to send observations of yet, so nobody uses the instance
        # between here and the reset; a predict of its previous session may still be running.
        with slot.lock:
            if slot.dirty:
                slot.policy.reset(seed=0)
                slot.dirty = False
        return session

    def get(self, client_id: str, epoch: int) -> Session | None:
        """The open session of `client_id` with `epoch`, marked as heard from now; or None."""
        with self._lock:
            session = self._sessions.get(client_id)
            if session is None or session.epoch != epoch:
                return None
            session.last_heard_s = self._clock()
            return session

    def close(self, client_id: str, epoch: int) -> Session | None:
        """End the session of `client_id` with `epoch` and free its instance; None if there
        is no such session."""
        with self._lock:
            session = self._sessions.get(client_id)
            if session is None or session.epoch != epoch:
                return None
            self._release(session)
            return session

    def expire(self, grace_s: float = 0.0,
               arrived_s: Callable[[str], float | None] | None = None) -> list[Session]:
        """End and return every session not heard from for `idle_timeout_s` + `grace_s`.
        Never waits for a predict: the freed instance is reset by the open that takes it next.

        Heard is the later of the session's last message taken and, if `arrived_s` is given,
        when the transport last received one from its client (on this table's clock; None:
        nothing): a robot that keeps sending is alive however long its observations wait
        behind a slow, blocked or failing predict. `grace_s` covers the rest."""
        now = self._clock()
        with self._lock:
            expired = [session for session in self._sessions.values()
                       if now - max(session.last_heard_s,
                                    (arrived_s and arrived_s(session.client_id)) or 0.0)
                       >= self.idle_timeout_s + grace_s]
            for session in expired:
                self._release(session)
        return expired

    def _release(self, session: Session) -> None:
        """Under `self._lock`: remove `session` and put its instance back in the pool."""
        del self._sessions[session.client_id]
        session.closed = True
        session.slot.dirty = True
        self._idle.append(session.slot)
