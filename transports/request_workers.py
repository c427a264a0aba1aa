"""A server's request handler on a few threads of its own, never on the transport's I/O thread.

Measured (issue 21): a session open that cost 2-3 s of handling on zmq's one I/O thread, one
every 3 s, took an honest robot's p99 from 3 ms to 767 ms, because that thread also takes every
client's observations and answers their pings; zenoh runs its query callbacks one at a time, so
one slow request there held up every other client's. A handler may legitimately wait, too: a
session open or a reset waits for a prediction in progress on its policy instance.

Bounded, so that a flood of requests cannot turn into a queue without end: past
`MAX_PENDING_REQUESTS` waiting or running, or past `MAX_PENDING_PER_CLIENT` of one client, a
request is dropped and counted: its client is told at once where the backend can say so
(zenoh, gRPC) and times out otherwise (zmq). gRPC, whose handlers already run on its own
thread pool, uses the same count (`Admission`) so that waiting handlers cannot take every
thread of that pool.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)

REQUEST_WORKERS = 4
"""Threads that run handlers: a few handlers waiting on predictions leave others free."""
MAX_PENDING_REQUESTS = 64
"""Requests waiting or running at once, of all clients; past it a request is dropped."""
MAX_PENDING_PER_CLIENT = 2
"""Of one client: an honest client has one request in flight, plus at most one it gave up on
at its deadline; a client sending more at once cannot take every worker."""


class Admission:
    """Counts the requests in progress, of each client and of all; refuses one past either
    bound (`admit` False, counted in `dropped`). Thread-safe. A client is any hashable key."""

    def __init__(self, name: str, *, total: int, per_client: int) -> None:
        self.name = name
        self.total = total
        self.per_client = per_client
        self.dropped = 0
        """Requests refused because too many were in progress."""
        self._pending: collections.Counter[Hashable] = collections.Counter()
        self._in_progress = 0
        self._lock = threading.Lock()

    def admit(self, client: Hashable) -> bool:
        """Count one more request of `client` in progress; False, counting nothing but the
        refusal, if that is one too many. Every True must be followed by `release(client)`."""
        with self._lock:
            if self._in_progress >= self.total or self._pending[client] >= self.per_client:
                self.dropped += 1
                if self.dropped & (self.dropped - 1) == 0:  # 1, 2, 4, ...: a flood logs little
                    log.warning("%s: refused a request of %.64r, %d in progress (%d refused "
                                "so far)", self.name, client, self._in_progress, self.dropped)
                return False
            self._pending[client] += 1
            self._in_progress += 1
            return True

    def release(self, client: Hashable) -> None:
        with self._lock:
            self._in_progress -= 1
            self._pending[client] -= 1
            if self._pending[client] <= 0:
                del self._pending[client]


class RequestWorkers:
    """Runs request handling on `REQUEST_WORKERS` threads, at most `MAX_PENDING_REQUESTS`
    pending and `MAX_PENDING_PER_CLIENT` per client; thread-safe."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._admission = Admission(name, total=MAX_PENDING_REQUESTS,
                                    per_client=MAX_PENDING_PER_CLIENT)
        self._executor = ThreadPoolExecutor(REQUEST_WORKERS, thread_name_prefix=name)

    @property
    def dropped(self) -> int:
        """Requests refused because too many were pending."""
        return self._admission.dropped

    def submit(self, client: Hashable, handle: Callable[[], bytes],
               reply: Callable[[bytes | None], None]) -> bool:
        """Run `handle` (one request of `client`) on a worker, then `reply` with its answer
        (None if the handler failed: the client will time out; `reply` still runs, to free
        what the request holds); False if it was dropped, unrun: too many pending, or the
        workers are closed. The request stops counting against its client before `reply`
        runs: a client that sends its next request the moment the answer arrives must not
        find its previous one still counted (under load, a worker can be descheduled between
        sending an answer and counting it done)."""
        if not self._admission.admit(client):
            return False
        try:
            self._executor.submit(self._run, client, handle, reply)
        except RuntimeError:  # shut down: the server is closing
            self._admission.release(client)
            return False
        return True

    def _run(self, client: Hashable, handle: Callable[[], bytes],
             reply: Callable[[bytes | None], None]) -> None:
        answer = None
        try:
            answer = handle()
        except Exception:  # a worker outlives any one request
            log.exception("%s: request handler failed; the client will time out", self.name)
        finally:
            self._admission.release(client)
        try:
            reply(answer)
        except Exception:
            log.exception("%s: sending a reply failed; the client will time out", self.name)

    def close(self) -> None:
        """Drop the requests not started and wait for the running ones. Idempotent."""
        self._executor.shutdown(wait=True, cancel_futures=True)
