"""The robot's side of a fault window that the world has already left.

A fault window lives in two clocks. The world (TCP, a server restarting, the server's
session expiry, the model link's request timeout, a zenoh lease) runs in wall time; the
robot runs in control ticks, which a simulator slower than real time stretches: at 5x, a
3 s partition held for 3 s of control time cuts the real link for 15 s, long enough for
every wall-time timeout to fire that the same 3 s on a robot never fires. So the controller
(`harness.faults.controller`) lifts an outage from the world once it has lasted its duration
in wall time, and this gate keeps the robot inside it until its control time reaches the
window's end: the robot sees the window's ticks, the world its seconds, on any simulator.

While held, in the mode of the window it stands for (`GateMode`):

- chunks arriving are discarded (`GateStats.discarded`), as the outage would have lost
  them; error replies still pass, so a failure the world produced is counted once;
- `cut` (the robot's own link, or the server, was out): the server reads absent and a control
  request waits for the release (or its deadline, then `TransportTimeout`);
- observations go out as usual, so the server, which lives in the world's time, sees a robot
  whose outage is over (its session is kept).

With a simulator at least as fast as real time the pacing rule keeps the two clocks
together, the controller never lifts a window early and the gate is never held.
"""

from __future__ import annotations

import enum
import threading
import time
from dataclasses import dataclass

from harness import protocol
from transports import TransportClient, TransportTimeout


class GateMode(enum.StrEnum):
    cut = "cut"
    """The robot's link or the server was out: no chunks, no presence, requests wait."""
    replies = "replies"
    """Only the chunks were out (the model link, a paused model): no chunks."""


@dataclass
class GateStats:
    discarded: int = 0
    """Chunks that arrived while the gate was held (the outage's, on a slow simulator)."""
    held: int = 0
    """Times the gate was held (windows the world left before the robot did)."""


class RobotSideGate:
    """A `TransportClient` that can hold the robot inside a fault window (`hold`) until
    `release`; passes everything through otherwise."""

    def __init__(self, inner: TransportClient) -> None:
        self.inner = inner
        self.client_id = inner.client_id
        self.stats = inner.stats
        self.gate_stats = GateStats()
        self._modes: dict[str, GateMode] = {}
        """Window id -> its mode, for each window holding the gate."""
        self._released = threading.Condition()

    # ---- holding ----------------------------------------------------------------------------

    def hold(self, window_id: str, mode: GateMode) -> None:
        with self._released:
            self._modes[window_id] = GateMode(mode)
            self.gate_stats.held += 1

    def release(self, window_id: str) -> None:
        with self._released:
            self._modes.pop(window_id, None)
            self._released.notify_all()

    @property
    def mode(self) -> GateMode | None:
        """The strictest mode held now; None when open."""
        modes = set(self._modes.values())
        return GateMode.cut if GateMode.cut in modes else (modes.pop() if modes else None)

    # ---- the stream -------------------------------------------------------------------------

    def take_stream_timed(self, timeout_s: float = 0.0) -> tuple[bytes, int] | None:
        deadline = time.monotonic() + timeout_s
        while True:
            taken = self.inner.take_stream_timed(max(0.0, deadline - time.monotonic()))
            if taken is None or self.mode is None or protocol.is_error(taken[0]):
                return taken
            self.gate_stats.discarded += 1
            if time.monotonic() >= deadline:
                return None

    def take_stream(self, timeout_s: float = 0.0) -> bytes | None:
        taken = self.take_stream_timed(timeout_s)
        return None if taken is None else taken[0]

    def publish(self, payload: bytes) -> None:
        self.inner.publish(payload)

    # ---- presence and control ---------------------------------------------------------------

    def server_present(self) -> bool:
        return self.mode is not GateMode.cut and self.inner.server_present()

    def request(self, payload: bytes, *, timeout_s: float) -> bytes:
        deadline = time.monotonic() + timeout_s
        with self._released:
            while self.mode is GateMode.cut:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TransportTimeout("no reply: the robot is still inside a fault window "
                                           "(its control time has not reached the end)")
                self._released.wait(remaining)
        remaining = deadline - time.monotonic()
        if remaining <= 0:  # sent with no time left, an open would take effect unheard of
            raise TransportTimeout("no reply: the fault window ended at the deadline")
        return self.inner.request(payload, timeout_s=remaining)

    def __getattr__(self, name: str):
        """The rest of the interface (`wait_ready`, `close`, `order_stream_by`, ...)."""
        return getattr(self.inner, name)

