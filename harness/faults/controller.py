"""Carries out an episode's fault windows, tick by tick, on the real system or on the model.

`FaultController.on_tick` is the runner's per-tick hook: when the episode's control time
reaches a window's start it applies the fault through the mechanism of its kind, at its end
it undoes it, and while a window of a paced kind is open (`FaultKind.paced`) it returns True,
so the virtual clock's pacing rule holds the ticks to wall time for the whole fault (a 2 s
stall lasts 2 s of wall time too). Windows of different groups may be open together.

Mechanisms (`Mechanisms`, each optional; a window whose mechanism is missing is a bug in
the job's wiring and raises):

- process faults: the `ServerSupervisor` (SIGKILL, SIGSTOP, SIGTERM; start again or SIGCONT
  at the end). Starting a server takes a second or so: that runs on a thread of its own, so
  the robot's ticks go on (with the fallback) as they would while a real server restarts;
- network faults: the `FaultProxy` every byte of the link goes through;
- message faults and loss: the `FaultyClient` wrapping the client's transport;
- model faults: the server's model-faults file (`harness.server.model_faults`);
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
from harness.faults.kernel import NetnsLink
from harness.faults.kernel import detect as kernel_support
from harness.faults.messages import FaultyClient, GilbertElliott, MessageFault
from harness.faults.modelled import ModelledLink
from harness.faults.proxy import Direction as ProxyDirection
from harness.faults.proxy import FaultProxy, LinkShape
from harness.faults.schedule import Direction, FaultKind, FaultsConfig, FaultWindow, timeline
from harness.server.model_faults import write_model_fault
from harness.server.supervisor import ServerSupervisor

log = logging.getLogger(__name__)

PROCESS_MECHANISMS = {
    FaultKind.server_crash: ("SIGKILL", "restart"),
    FaultKind.server_stall: ("SIGSTOP", "SIGCONT"),
    FaultKind.server_drain: ("SIGTERM", "restart"),
}
"""What carries out each process fault: (at the start, at the end)."""


@dataclass
class Mechanisms:
    """What the controller may act through; None where the run has none."""

    server: ServerSupervisor | None = None
    proxy: FaultProxy | None = None
    client: FaultyClient | None = None
    model_faults_path: Path | None = None
    kernel: NetnsLink | None = None
    """faults.network=kernel: partitions and bandwidth on the server's veth link (and delay
    in netem where the kernel has it); the proxy keeps the rest."""
    modelled: bool = False
    """faults.apply=modelled: act on nothing, pace nothing."""


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
        self._pauses = 0

    def on_tick(self, tick: int, control_s: float, state: ClientState) -> bool:
        """Apply what is due at `control_s`; True while a paced fault is active (or a
        server is still restarting)."""
        for window in [w for w in self._open if control_s >= w.end_s]:
            self._end(window, tick, control_s)
        if self._restarted is not None and not self._restarting():
            self._report_ready(tick, control_s)
        while self._next < len(self.windows) and control_s >= self.windows[self._next].start_s:
            window = self.windows[self._next]
            self._next += 1
            if control_s < window.end_s:
                self._begin(window, tick, control_s)
        if self.mechanisms.modelled:
            return False
        return any(w.kind.paced for w in self._open) or self._restarting()

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
        self._event(window, "start", tick, control_s, mechanism)

    def _end(self, window: FaultWindow, tick: int, control_s: float) -> None:
        self._open.remove(window)
        mechanism = "modelled" if self.mechanisms.modelled else self._undo(window)
        self._event(window, "end", tick, control_s, mechanism)

    def _apply(self, window: FaultWindow) -> str:
        kind, spec = window.kind, window.spec
        if kind.is_process:
            self._join_restart()  # a restart must be done before the server is hit again
            server = self._need("server", kind)
            {FaultKind.server_crash: server.kill, FaultKind.server_stall: server.pause,
             FaultKind.server_drain: server.drain}[kind]()
            return PROCESS_MECHANISMS[kind][0]
        if kind.is_network:
            return self._shape_link(window, starting=True)
        if kind is FaultKind.loss:
            self._need("client", kind).loss = GilbertElliott(
                spec.p_good_bad, spec.p_bad_good, spec.loss_good, spec.loss_bad)
            return "message loss, Gilbert-Elliott (no netem: loss is message-level)"
        if kind.is_message:
            self._need("client", kind).fault = MessageFault(str(kind), spec.probability,
                                                            spec.delay_s)
            return f"message {kind}"
        path = self._need("model_faults_path", kind)
        if kind is FaultKind.slow_model:
            write_model_fault(path, {"kind": "slow_model", "predict_s": spec.predict_s,
                                     "jitter_s": spec.jitter_s,
                                     "jitter_dist": str(spec.jitter_dist)})
            return f"predict slowed to {spec.predict_s * 1e3:.0f} ms"
        self._pauses += 1
        pause_s = window.end_s - window.start_s
        write_model_fault(path, {"kind": "model_pause", "pause_s": pause_s,
                                 "id": f"{time.time_ns()}-{self._pauses}"})
        return f"predict paused {pause_s:.2f} s"

    def _undo(self, window: FaultWindow) -> str:
        kind = window.kind
        if kind.is_process:
            if kind is FaultKind.server_stall:
                self.mechanisms.server.resume()
            else:
                self._restart = threading.Thread(target=self._start_server,
                                                 name="fault-restart", daemon=True)
                self._restarted = (window, time.monotonic())
                self._restart.start()
            return PROCESS_MECHANISMS[kind][1]
        if kind.is_network:
            return self._shape_link(window, starting=False)
        if kind is FaultKind.loss:
            self.mechanisms.client.loss = None
            return "message loss off"
        if kind.is_message:
            self.mechanisms.client.fault = None
            return f"message {kind} off"
        write_model_fault(self.mechanisms.model_faults_path, {})
        return "predict as fast as the model"

    def _shape_link(self, window: FaultWindow, *, starting: bool) -> str:
        """Apply a network window's start or end: on the kernel's link where it carries that
        kind, else on the proxy (set to what the open delay and bandwidth windows add up
        to)."""
        kind, spec = window.kind, window.spec
        kernel = self.mechanisms.kernel
        if kernel is not None and kind is FaultKind.partition:
            kernel.set_partition(starting)
            return ("kernel: veth link down (TCP retransmits)" if starting
                    else "kernel: veth link up")
        if kernel is not None and kind is FaultKind.bandwidth:
            kernel.set_bandwidth(spec.bandwidth_bps if starting else None)
            return f"kernel: tbf {spec.bandwidth_bps / 1e6:g} Mbit/s" if starting \
                else "kernel: tbf off"
        if kernel is not None and kind is FaultKind.latency and kernel_support().netem:
            kernel.set_netem(spec.delay_s if starting else 0.0,
                             spec.jitter_s if starting else 0.0)
            return f"kernel: netem {spec.delay_s * 1e3:g} ms" if starting else "kernel: netem off"
        proxy = self._need("proxy", window.kind)
        if kind is FaultKind.partition:
            proxy.set_partition(starting)
            return "proxy black hole" if starting else "proxy heals (held bytes released)"
        if kind is FaultKind.reset:
            if not starting:
                return "proxy passes"
            return f"proxy RST to {proxy.reset_connections()} connection(s)"
        if kind is FaultKind.slow_close:
            proxy.set_slow_close(spec.delay_s if starting else 0.0)
            return f"proxy slow close {spec.delay_s:.2f} s" if starting else "proxy closes at once"
        for direction in (Direction.to_server, Direction.to_client):
            proxy.set_shape(self._shape(direction), ProxyDirection(str(direction)))
        if not starting:
            return f"proxy {kind} off"
        if kind is FaultKind.latency:
            return (f"proxy delay {spec.delay_s * 1e3:g} ms {spec.direction}, jitter "
                    f"{spec.jitter_s * 1e3:g} ms {spec.jitter_dist}")
        return f"proxy token bucket {spec.bandwidth_bps / 1e6:g} Mbit/s {spec.direction}"

    def _shape(self, direction: Direction) -> LinkShape:
        """The open latency and bandwidth windows acting on `direction`, as one shape."""
        delay = jitter = bandwidth = 0.0
        dist = "normal"
        for window in self._open:
            spec = window.spec
            if spec.direction not in (Direction.both, direction):
                continue
            if window.kind is FaultKind.latency:
                delay, jitter, dist = spec.delay_s, spec.jitter_s, str(spec.jitter_dist)
            elif window.kind is FaultKind.bandwidth and self.mechanisms.kernel is None:
                bandwidth = spec.bandwidth_bps
        return LinkShape(delay_s=delay, jitter_s=jitter, jitter_dist=dist,
                         bandwidth_bps=bandwidth)

    def _need(self, name: str, kind: FaultKind):
        value = getattr(self.mechanisms, name)
        if value is None:
            raise RuntimeError(f"fault {kind}: this run has no {name} to act through "
                               "(the job's wiring and the config check disagree)")
        return value

    # ---- restarts ---------------------------------------------------------------------------

    def _restarting(self) -> bool:
        return self._restart is not None and self._restart.is_alive()

    def _start_server(self) -> None:
        try:
            self.mechanisms.server.start()
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
               mechanism: str) -> None:
        event = {"fault": str(window.kind), "phase": phase, "tick": tick,
                 "control_s": round(control_s, 6), "wall_s": round(time.time(), 6),
                 "mechanism": mechanism, "source": window.source}
        self.events.append(event)
        log.info("fault %s %s at tick %d (%.2f s): %s", window.kind, phase, tick, control_s,
                 mechanism)
