"""Carries out an episode's fault windows, tick by tick, on the real system or on the model.

`FaultController.on_tick` is the runner's per-tick hook: when the episode's control time
reaches a window's start it applies the fault through its kind's emulation (the kind's entry
in `harness.faults.kinds`), at its end it undoes it, and while a window of a paced kind is
open (`FaultKindEntry.paced`) it returns True,
so the virtual clock's pacing rule holds the ticks to wall time for the whole fault (a 2 s
stall lasts 2 s of wall time too). Windows of different groups may be open together.

Mechanisms (`Mechanisms`, each optional; a window whose mechanism is missing is a bug in
the job's wiring and raises):

- process faults: the `ServerSupervisor` (SIGKILL, SIGSTOP, SIGTERM; start again or SIGCONT
  at the end). Starting a server takes a second or so: that runs on a thread of its own, so
  the robot's ticks go on (with the fallback) as they would while a real server restarts;
- network faults: the `FaultProxy` every byte of the link goes through;
- message faults and loss: the `FaultyClient` wrapping the client's transport;
- model faults: the server's model-faults file (`harness.faults.model_faults`);
- `faults.apply=modelled`: nothing real is touched (`harness.faults.modelled` decides each
  reply), the events are still written and nothing is paced.

Every start and end is an event: fault kind, phase, tick, control time, wall time (seconds
since the epoch) and the mechanism that ran.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from harness.client.states import ClientState
from harness.faults.gate import GateMode, RobotSideGate
from harness.faults.kernel import NetnsLink
from harness.faults.kinds import fault_kind
from harness.faults.messages import FaultyClient
from harness.faults.modelled import ModelledLink
from harness.faults.proxy import FaultProxy
from harness.faults.schedule import Direction, FaultsConfig, FaultWindow, timeline
from harness.faults.shaping import Direction as ProxyDirection
from harness.faults.shaping import LinkShape
from harness.server.supervisor import ServerSupervisor

log = logging.getLogger(__name__)

OUTAGE_GROUPS = ("process", "network", "model")
"""Groups whose paced kinds act on the world (the server, a link, the model), not on the
robot's own client wrapper: the windows `FaultController._lift_outages` lifts early, holding
the robot in the gate. A message window is lifted on its outgoing side only (the world hears
the robot again; the wrapper keeps hitting what the robot receives)."""


@dataclass
class Mechanisms:
    """What the controller may act through; None where the run has none."""

    server: ServerSupervisor | None = None
    router: ServerSupervisor | None = None
    """transport.router=auto: the run's Zenoh router (router_crash, router_stall)."""
    proxy: FaultProxy | None = None
    client: FaultyClient | None = None
    model_faults_path: Path | None = None
    kernel: NetnsLink | None = None
    """faults.network=kernel: partitions and bandwidth on the server's veth link (and delay
    in netem where the kernel has it); the proxy keeps the rest."""
    modelled: bool = False
    """faults.apply=modelled: act on nothing, pace nothing."""
    gate: RobotSideGate | None = None
    """The robot's transport client, able to hold the robot inside a window the world has
    left (`harness.faults.gate`): wired whenever a schedule has outage kinds."""
    link: str = "client"
    """`faults.link`: which link network kinds act on (the event log says it)."""


def episode_faults(config: FaultsConfig, *, seed: int, episode: int, horizon_s: float,
                   mechanisms: Mechanisms, latency: object = None) -> FaultController | None:
    """Put the episode's timeline in force: tell a modelled link its windows, restart the
    proxy's and the faulty client's draws from the episode's key (so a resumed run or one
    episode alone draws the same), and return the controller for the runner's per-tick hook
    (None: no window in this episode)."""
    windows = timeline(config, seed=seed, episode=episode, horizon_s=horizon_s)
    if isinstance(latency, ModelledLink):
        latency.start_episode(episode, windows)
    key = seed * 10_000_000 + episode
    for drawing in (mechanisms.proxy, mechanisms.client):
        if drawing is not None:
            drawing.reseed(key)
    return FaultController(windows, mechanisms) if windows else None


class FaultController:
    """One episode's windows. Not thread-safe: the loop's thread calls `on_tick` and
    `finish`."""

    def __init__(self, windows: list[FaultWindow], mechanisms: Mechanisms) -> None:
        self.windows = windows
        self.mechanisms = mechanisms
        self.events: list[dict] = []
        self._next = 0
        self._open: list[FaultWindow] = []
        self._restart: threading.Thread | None = None
        self._restart_error: BaseException | None = None
        self._restarted: tuple[FaultWindow, float] | None = None
        """The window whose server restart is running, and when it began (monotonic)."""
        self._restart_s = 0.0
        self._ids = 0
        self._started_wall: dict[int, tuple[float, float]] = {}
        """id(window) -> (when it was applied, monotonic; the control time it had left then),
        for each open window."""
        self._lifted: dict[int, tuple[str | None, int, float, float]] = {}
        """id(window) -> (what undoing it did, None for a message window; tick, control
        time and wall time (monotonic) of the lift), for each open window the world has
        left before the robot (see `_lift_outages`)."""

    def on_tick(self, tick: int, control_s: float, state: ClientState) -> bool:
        """Apply what is due at `control_s`; True while a paced fault is active (or a
        server is still restarting)."""
        for window in [w for w in self._open if control_s >= w.end_s]:
            self._end(window, tick, control_s)
        if not self.mechanisms.modelled:
            self._lift_outages(tick, control_s)
        if self._restarted is not None and not self._restarting():
            self._report_ready(tick, control_s)
        while self._next < len(self.windows) and control_s >= self.windows[self._next].start_s:
            window = self.windows[self._next]
            self._next += 1
            if control_s < window.end_s:
                self._begin(window, tick, control_s)
        if self.mechanisms.modelled:
            return False
        return any(fault_kind(w.kind).paced for w in self._open) or self._restarting()

    def finish(self, tick: int, control_s: float) -> None:
        """The episode ended: undo the faults still open and wait for a restart to finish,
        so the next episode starts against a serving server over a clean link."""
        for window in list(self._open):
            self._end(window, tick, control_s)
        self._join_restart(tick, control_s)

    # ---- start and end ----------------------------------------------------------------------

    def _begin(self, window: FaultWindow, tick: int, control_s: float) -> None:
        self._open.append(window)
        mechanism = "modelled" if self.mechanisms.modelled else self._apply(window)
        self._started_wall[id(window)] = (time.monotonic(), window.end_s - control_s)
        self._event(window, "start", tick, control_s, mechanism)

    def _end(self, window: FaultWindow, tick: int, control_s: float) -> None:
        self._open.remove(window)
        self._started_wall.pop(id(window), None)
        lifted = self._lifted.pop(id(window), None)
        if self.mechanisms.modelled:
            mechanism = "modelled"
        elif lifted is None:
            mechanism = self._undo(window)
        elif lifted[0] is None:  # a message window: its outgoing side was spared
            self.mechanisms.client.world_left = False
            mechanism = self._undo(window)
        else:  # the world left it earlier: only the robot's side ends now
            mechanism = lifted[0]
            self.mechanisms.gate.release(str(id(window)))
        self._event(window, "end", tick, control_s, mechanism, lifted)

    def _lift_outages(self, tick: int, control_s: float) -> None:
        """Paced windows that have lasted their duration in wall time while control time has
        not reached their end, which happens only on a simulator slower than real time:
        undo them in the world and hold the robot's side in the gate until their control end
        (`harness.faults.gate` says why; a message window: see `OUTAGE_GROUPS`). The slack of
        two ticks keeps a simulator that keeps up with real time from ever lifting one."""
        slack_s = 2 * (control_s / tick if tick else 0.05)
        now = time.monotonic()
        for window in self._open:
            kind = fault_kind(window.kind)
            started_s, duration_s = self._started_wall[id(window)]
            if (id(window) in self._lifted or not kind.paced
                    or now - started_s < duration_s + slack_s):
                continue
            if kind.group == "message":
                self.need("client", window.kind).world_left = True
                self._lifted[id(window)] = (None, tick, control_s, now)
            else:
                gate = self.need("gate", window.kind)
                self._lifted[id(window)] = (self._undo(window), tick, control_s, now)
                gate.hold(str(id(window)), self._gate_mode(kind.group))
            log.debug("fault %s lifted at tick %d (%.2f s): it lasted %.2f s of wall time; "
                      "the robot stays in it until %.2f s of control time", window.kind, tick,
                      control_s, now - started_s, window.end_s)

    def _gate_mode(self, group: str) -> GateMode:
        """What the robot misses while held: everything when its link or the server was out,
        only the chunks when the model (or its link) was."""
        if group == "model" or (group == "network" and self.mechanisms.link == "model"):
            return GateMode.replies
        return GateMode.cut

    def _apply(self, window: FaultWindow) -> str:
        return fault_kind(window.kind).emulation.apply(window, self)

    def _undo(self, window: FaultWindow) -> str:
        return fault_kind(window.kind).emulation.undo(window, self)

    # ---- what an emulation acts through (`kinds.RunMechanisms`) ------------------------------

    def need(self, name: str, kind: str):
        """The mechanism `name`; RuntimeError if the run has none (a wiring bug)."""
        value = getattr(self.mechanisms, name)
        if value is None:
            raise RuntimeError(f"fault {kind}: this run has no {name} to act through "
                               "(the job's wiring and the config check disagree)")
        return value

    def open_windows(self) -> list[FaultWindow]:
        return list(self._open)

    def reshape_proxy(self, window: FaultWindow) -> None:
        """Set the proxy, each direction, to what the open shaping windows add up to
        (`kinds.LinkShaping`); `window` is the one starting or ending."""
        proxy = self.need("proxy", window.kind)
        for direction in (Direction.to_server, Direction.to_client):
            proxy.set_shape(self._shape(direction), ProxyDirection(str(direction)))

    def _shape(self, direction: Direction) -> LinkShape:
        """The open windows that shape the link and act on `direction`, as one shape."""
        shape: dict[str, float | str] = {"delay_s": 0.0, "jitter_s": 0.0,
                                         "jitter_dist": "normal", "bandwidth_bps": 0.0}
        for window in self._open:
            if window.spec.direction not in (Direction.both, direction):
                continue
            add_part = getattr(fault_kind(window.kind).emulation, "shape", None)
            if add_part is not None:
                add_part(window, shape, self)
        return LinkShape(**shape)

    def restart_server(self, window: FaultWindow, target: str = "server") -> None:
        self._restart = threading.Thread(target=self._start_server, args=(target,),
                                         name="fault-restart", daemon=True)
        self._restarted = (window, time.monotonic())
        self._restart.start()

    def join_restart(self) -> None:
        self._join_restart()

    def next_id(self) -> str:
        self._ids += 1
        return f"{time.time_ns()}-{self._ids}"

    # ---- restarts ---------------------------------------------------------------------------

    def _restarting(self) -> bool:
        return self._restart is not None and self._restart.is_alive()

    def _start_server(self, target: str) -> None:
        try:
            getattr(self.mechanisms, target).start()
        except BaseException as exc:  # raised on the loop's thread by _join_restart
            self._restart_error = exc
        self._restart_s = time.monotonic() - self._restarted[1]

    def _report_ready(self, tick: int, control_s: float) -> None:
        """The restarted server serves again: an event, so that recovery can be split into
        the server's start-up and what the client needs after it."""
        window, _ = self._restarted
        self._restarted = None
        if self._restart_error is None:
            self._event(window, "ready", tick, control_s,
                        f"server serving again, {self._restart_s:.2f} s after the restart")

    def _join_restart(self, tick: int | None = None, control_s: float | None = None) -> None:
        """Wait for a restart; raise its error (ServerStartError) if it failed."""
        if self._restart is not None:
            self._restart.join()
            self._restart = None
        if self._restarted is not None and tick is not None:
            self._report_ready(tick, control_s)
        if self._restart_error is not None:
            error, self._restart_error = self._restart_error, None
            raise error

    def _event(self, window: FaultWindow, phase: str, tick: int, control_s: float,
               mechanism: str, lifted: tuple[str | None, int, float, float] | None = None
               ) -> None:
        event = {"fault": str(window.kind), "phase": phase, "tick": tick,
                 "control_s": round(control_s, 6), "wall_s": round(time.time(), 6),
                 "mechanism": mechanism, "source": window.source}
        group = fault_kind(window.kind).group
        if group in ("network", "message"):  # which link it acted on
            event["link"] = self.mechanisms.link if group == "network" else "client"
        if lifted is not None:  # the world's end, earlier than the robot's (slow simulator)
            event["world_end_tick"], event["world_end_control_s"] = lifted[1], round(lifted[2], 6)
            event["world_end_wall_s"] = round(event["wall_s"] - (time.monotonic() - lifted[3]),
                                              6)
        self.events.append(event)
        log.debug("fault %s %s at tick %d (%.2f s): %s", window.kind, phase, tick, control_s,
                 mechanism)
