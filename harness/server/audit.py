"""The policy server's audit lines, written off the inference thread.

Every request leaves one JSON line on the `harness.audit` logger. Written where they happen,
the lines of served chunks cost the inference thread 12% of its time at ~600 chunks/s (a
profile of a 16-robot micro-batching server: formatting the record and passing it through
the log handlers), and a server without the served chunks' lines served 16-40% more. So the
inference thread hands its lines to `AuditWriter`, whose thread formats and logs them, in
order, while the next batch is predicted (torch releases the interpreter's lock there). The
request threads still log their own lines directly: they are few.

The lines are the same, in the same order per thread; they reach the log a little later.
`close` writes what is queued, so a server that closes or drains loses none; one killed
with SIGKILL loses the lines still queued (a few milliseconds' worth).
"""

from __future__ import annotations

import json
import logging
import queue
import threading

audit_log = logging.getLogger("harness.audit")

_STOP = object()


class AuditWriter:
    def __init__(self, logger: logging.Logger = audit_log) -> None:
        self._logger = logger
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    def write(self, record: dict) -> None:
        """Queue one audit record (a dict of JSON values); never blocks."""
        self._queue.put(record)

    def close(self, timeout_s: float = 10.0) -> None:
        """Write every queued line, then stop. Idempotent."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            record = self._queue.get()
            if record is _STOP:
                return
            try:
                self._logger.info(json.dumps(record, sort_keys=True))
            except Exception:  # noqa: BLE001 - one bad record must not end the audit trail
                logging.getLogger(__name__).exception("an audit line could not be written")
