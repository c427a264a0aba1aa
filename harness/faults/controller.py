"""Carries out an episode's fault windows on the real server process, tick by tick.

`FaultController.on_tick` is the runner's per-tick hook: when the episode's control time
reaches a window's start it applies the fault through the `ServerSupervisor` (SIGKILL,
SIGSTOP, SIGTERM), at its end it undoes it (start again, SIGCONT), and while a window is
open it returns True, so the virtual clock's pacing rule holds the ticks to wall time for
the whole fault (a 2 s stall lasts 2 s of wall time too). Starting a server again takes a
second or so of wall time: that runs on a thread of its own, so the robot's ticks go on
(with the fallback) as they would while a real server restarts.

Every start and end is an event: fault kind, phase, tick, control time, wall time (seconds
since the epoch) and the mechanism that ran.
"""

from __future__ import annotations

import logging
import threading
import time

from harness.client.states import ClientState
from harness.faults.messages import FaultyClient, MessageFault
from harness.faults.schedule import FaultKind, FaultWindow
from harness.server.supervisor import ServerSupervisor

log = logging.getLogger(__name__)

MECHANISMS = {
    FaultKind.server_crash: ("SIGKILL", "restart"),
    FaultKind.server_stall: ("SIGSTOP", "SIGCONT"),
    FaultKind.server_drain: ("SIGTERM", "restart"),
}
"""What carries out each kind: (at the start, at the end)."""


class FaultController:
    """One episode's windows against one supervised server. Not thread-safe: the loop's
    thread calls `on_tick` and `finish`."""

    def __init__(self, windows: list[FaultWindow], server: ServerSupervisor | None,
                 client: FaultyClient | None = None) -> None:
        self.windows = windows
        self.server = server
        self.client = client
        self.events: list[dict] = []
        self._next = 0
        self._open: FaultWindow | None = None
        self._restart: threading.Thread | None = None
        self._restart_error: BaseException | None = None

    def on_tick(self, tick: int, control_s: float, state: ClientState) -> bool:
        """Apply what is due at `control_s`; True while a fault is active."""
        if self._open is not None and control_s >= self._open.end_s:
            self._end(tick, control_s)
        if (self._open is None and self._next < len(self.windows)
                and control_s >= self.windows[self._next].start_s):
            self._begin(self.windows[self._next], tick, control_s)
            self._next += 1
        return self._open is not None or self._restarting()

    def finish(self, tick: int, control_s: float) -> None:
        """The episode ended: undo a fault still open and wait for a restart to finish, so
        the next episode starts against a serving server."""
        if self._open is not None:
            self._end(tick, control_s)
        self._join_restart()

    def _restarting(self) -> bool:
        return self._restart is not None and self._restart.is_alive()

    def _begin(self, window: FaultWindow, tick: int, control_s: float) -> None:
        self._join_restart()  # a previous restart must be done before the server is hit again
        if not window.kind.is_process:
            self.client.fault = MessageFault(str(window.kind), window.probability, window.delay_s)
            self._open = window
            self._event(window, "start", tick, control_s, f"message {window.kind}")
            return
        mechanism = MECHANISMS[window.kind][0]
        if window.kind is FaultKind.server_crash:
            self.server.kill()
        elif window.kind is FaultKind.server_stall:
            self.server.pause()
        else:
            self.server.drain()
        self._open = window
        self._event(window, "start", tick, control_s, mechanism)

    def _end(self, tick: int, control_s: float) -> None:
        window, self._open = self._open, None
        if not window.kind.is_process:
            self.client.fault = None
            self._event(window, "end", tick, control_s, f"message {window.kind}")
            return
        mechanism = MECHANISMS[window.kind][1]
        if window.kind is FaultKind.server_stall:
            self.server.resume()
        else:
            self._restart = threading.Thread(target=self._start_server, name="fault-restart",
                                             daemon=True)
            self._restart.start()
        self._event(window, "end", tick, control_s, mechanism)

    def _start_server(self) -> None:
        try:
            self.server.start()
        except BaseException as exc:  # raised on the loop's thread by _join_restart
            self._restart_error = exc

    def _join_restart(self) -> None:
        """Wait for a restart; raise its error (ServerStartError) if it failed."""
        if self._restart is not None:
            self._restart.join()
            self._restart = None
        if self._restart_error is not None:
            error, self._restart_error = self._restart_error, None
            raise error

    def _event(self, window: FaultWindow, phase: str, tick: int, control_s: float,
               mechanism: str) -> None:
        event = {"fault": str(window.kind), "phase": phase, "tick": tick,
                 "control_s": round(control_s, 6), "wall_s": round(time.time(), 6),
                 "mechanism": mechanism, "source": window.source}
        self.events.append(event)
        log.info("fault %s %s at tick %d (%.2f s): %s", window.kind, phase, tick, control_s,
                 mechanism)
