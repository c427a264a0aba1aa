"""Server presence for backends that have no liveliness signal of their own (gRPC, ZeroMQ).

Neither a ZeroMQ socket nor a gRPC channel reports a server that stopped answering: a request
simply hangs until its deadline. A small ping on its own thread turns that into a yes/no the
client engine can act on without spending a control message's deadline to find out.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from transports.base import TransportError

log = logging.getLogger(__name__)


class Heartbeat:
    """Calls `ping(timeout_s)` every `interval_s`; the server is present while pings succeed.

    `ping` must raise a TransportError (or return normally) within `timeout_s`.
    """

    def __init__(
        self, ping: Callable[[float], None], *, interval_s: float, timeout_s: float, name: str
    ) -> None:
        self._ping = ping
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._present = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{name}-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def present(self) -> bool:
        return self._present.is_set()

    def wait_present(self, timeout_s: float) -> bool:
        return self._present.wait(timeout_s)

    def stop(self) -> None:
        """Stop pinging and join the thread. Idempotent."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self._ping(self._timeout_s)
            except TransportError as exc:
                if self._present.is_set():
                    log.info("server presence lost: %s", exc)
                self._present.clear()
            else:
                self._present.set()
            self._stop.wait(max(0.0, self._interval_s - (time.monotonic() - started)))
