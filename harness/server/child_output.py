"""A child process's merged output, drained by a thread for the child's whole life.

The harness starts children whose stdout and stderr share one pipe (policy servers, the
Zenoh router, robot processes). Nobody reading it would let a chatty child fill the pipe and
block; the child's last lines are what explains its death; and its warnings and errors
belong in the run's log as they happen. `ChildOutput` does those three for any child, and
hands each line first to its owner's `on_line`, which keeps the lines of its own protocol
(the server's READY line, a robot's ROBOT messages) out of the tail.
"""

from __future__ import annotations

import collections
import logging
import subprocess
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

PASSED_ON = ("[WARNING]", "[ERROR]", "[CRITICAL]")
"""A child's log lines with these levels reach the run's log (Hydra's line format)."""


class ChildOutput:
    """Reads `process.stdout` on a daemon thread named `name`; `label` names the child in
    the lines passed on ("server pid 123")."""

    def __init__(self, process: subprocess.Popen[str], *, name: str, label: str,
                 tail_lines: int, on_line: Callable[[str], bool] = lambda line: False,
                 on_end: Callable[[], None] = lambda: None,
                 logger: logging.Logger = log) -> None:
        self._process = process
        self._label = label
        self._on_line, self._on_end = on_line, on_end
        self._logger = logger
        self.tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
        """The last lines that were not the owner's protocol, oldest first."""
        self._thread = threading.Thread(target=self._read, name=name, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._process.stdout:
            line = line.rstrip("\n")
            if self._on_line(line):
                continue
            self.tail.append(line)
            if any(level in line for level in PASSED_ON):
                self._logger.warning("%s: %s", self._label, line)
        self._on_end()

    def join(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for the child's last lines (after it exited)."""
        self._thread.join(timeout_s)


def exit_status(process: subprocess.Popen[str] | None) -> str:
    """"exit status N", or "still running"."""
    code = process.poll() if process is not None else None
    return f"exit status {code}" if code is not None else "still running"
