"""Process faults: signals to the policy server's process, through its `ServerSupervisor`,
or to the Zenoh router's (`transport.router=auto`: the router is supervised the same way).

Emulated: at the start SIGKILL, SIGSTOP or SIGTERM (drain); at the end start it again (on a
thread of the controller's, so the robot's ticks go on with the fallback as they would while
a real server restarts) or SIGCONT. All are paced: a restart and a stall live in wall time.
Modelled: a stalled server answers late (the flight lands at the window's end); a killed or
drained one never answers a request in flight. A session lost to a restart is not modelled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.faults.kinds.base import FaultKindEntry, RunMechanisms
from harness.faults.kinds.effects import HeldToEnd, LostInFlight

if TYPE_CHECKING:
    from harness.faults.schedule import FaultWindow


@dataclass(frozen=True)
class ServerSignal:
    """`start` names the supervisor's method at the window's start (kill, pause, drain);
    at its end the server is resumed (after a pause) or started again."""

    start: str
    started: str
    """What the start is called in the event log (the signal)."""
    target: str = "server"
    """The `Mechanisms` supervisor it acts on: "server" or "router"."""

    def apply(self, window: FaultWindow, run: RunMechanisms) -> str:
        run.join_restart()  # a restart must be done before the process is hit again
        getattr(run.need(self.target, window.kind), self.start)()
        return self.started

    def undo(self, window: FaultWindow, run: RunMechanisms) -> str:
        if self.start == "pause":
            getattr(run.mechanisms, self.target).resume()
            return "SIGCONT"
        run.restart_server(window, self.target)
        return "restart"


KINDS = (
    FaultKindEntry("server_crash", "process", ServerSignal("kill", "SIGKILL"), LostInFlight(),
                   paced=True, lane="process",
                   doc="SIGKILL the server at the start, start it again at the end."),
    FaultKindEntry("server_stall", "process", ServerSignal("pause", "SIGSTOP"), HeldToEnd(),
                   paced=True, lane="process",
                   doc="SIGSTOP the server at the start, SIGCONT at the end."),
    FaultKindEntry("server_drain", "process", ServerSignal("drain", "SIGTERM"), LostInFlight(),
                   paced=True, lane="process",
                   doc="SIGTERM (drain) at the start, start it again at the end."),
    FaultKindEntry("router_crash", "process", ServerSignal("kill", "SIGKILL", "router"),
                   LostInFlight(), paced=True, lane="process",
                   doc="SIGKILL the Zenoh router (transport.router=auto) at the start, start "
                       "it again at the end."),
    FaultKindEntry("router_stall", "process", ServerSignal("pause", "SIGSTOP", "router"),
                   HeldToEnd(), paced=True, lane="process",
                   doc="SIGSTOP the Zenoh router (transport.router=auto) at the start, SIGCONT "
                       "at the end."),
)

ROUTER_KINDS = frozenset(entry.name for entry in KINDS
                         if getattr(entry.emulation, "target", None) == "router")
"""The kinds that act on the router: they need `transport.router=auto` (read from the
entries above, so a new router kind is one entry)."""
