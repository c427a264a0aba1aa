"""Network faults: on the link's real bytes, through the fault proxy or the kernel's link.

Emulated on the user-space proxy every byte of the link goes through (`harness.faults.proxy`),
or, with `faults.network=kernel`, on the server's veth link where the kernel carries the kind
(a partition cuts the link, bandwidth is tbf, delay is netem where the kernel has it); the
proxy keeps the rest. Delay and bandwidth act through the proxy's link shape: the open
windows add up to one shape per direction (`base.LinkShaping`).
Modelled: delay and its jitter draws, bandwidth as bytes over the rate, a partition as a
flight held to the window's end, a reset as the flights it cuts lost.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.faults.kernel import detect as kernel_support
from harness.faults.kinds.base import FaultKindEntry, RunMechanisms
from harness.faults.kinds.effects import AddedDelay, HeldToEnd, LostInFlight, NoEffect
from harness.faults.schedule import Direction, jittered

if TYPE_CHECKING:
    from harness.faults.modelled import ModelledLink
    from harness.faults.schedule import FaultWindow


def ways(direction: Direction) -> int:
    """How many one-way trips of a round trip a fault acting on `direction` delays."""
    return 2 if direction is Direction.both else 1


class ShapedOnProxy:
    """Base of the kinds that act through the proxy's link shape: at either end of a window
    the proxy is set to what the open shaping windows add up to."""

    def apply(self, window: FaultWindow, run: RunMechanisms) -> str:
        run.reshape_proxy(window)
        return self.started(window)

    def undo(self, window: FaultWindow, run: RunMechanisms) -> str:
        run.reshape_proxy(window)
        return f"proxy {window.kind} off"

    def started(self, window: FaultWindow) -> str:
        raise NotImplementedError


class LatencyOnLink(ShapedOnProxy):
    """Delay and jitter: netem on the kernel's link where it has netem, else the proxy."""

    @staticmethod
    def _in_kernel(run: RunMechanisms) -> bool:
        return run.mechanisms.kernel is not None and kernel_support().netem

    def apply(self, window: FaultWindow, run: RunMechanisms) -> str:
        spec = window.spec
        if self._in_kernel(run):
            run.mechanisms.kernel.set_netem(spec.delay_s, spec.jitter_s)
            return f"kernel: netem {spec.delay_s * 1e3:g} ms"
        return super().apply(window, run)

    def undo(self, window: FaultWindow, run: RunMechanisms) -> str:
        if self._in_kernel(run):
            run.mechanisms.kernel.set_netem(0.0, 0.0)
            return "kernel: netem off"
        return super().undo(window, run)

    def started(self, window: FaultWindow) -> str:
        spec = window.spec
        return (f"proxy delay {spec.delay_s * 1e3:g} ms {spec.direction}, jitter "
                f"{spec.jitter_s * 1e3:g} ms {spec.jitter_dist}")

    def shape(self, window: FaultWindow, shape: dict, run: RunMechanisms) -> None:
        if self._in_kernel(run):
            return
        spec = window.spec
        shape["delay_s"] += spec.delay_s
        shape["jitter_s"], shape["jitter_dist"] = spec.jitter_s, str(spec.jitter_dist)


class LatencyModelled(AddedDelay):
    """+ delay per direction it acts on + a seeded jitter draw per direction."""

    def added_delay(self, window: FaultWindow, salt: int, t: float, index: int,
                    link: ModelledLink) -> float:
        spec = window.spec
        rng = link.rng(index, salt)
        return sum(jittered(rng, spec.delay_s, spec.jitter_dist, spec.jitter_s)
                   for _ in range(ways(spec.direction)))


class BandwidthOnLink(ShapedOnProxy):
    """A token bucket on the proxy, or tbf on the kernel's link."""

    def apply(self, window: FaultWindow, run: RunMechanisms) -> str:
        kernel = run.mechanisms.kernel
        if kernel is not None:
            kernel.set_bandwidth(window.spec.bandwidth_bps)
            return f"kernel: tbf {window.spec.bandwidth_bps / 1e6:g} Mbit/s"
        return super().apply(window, run)

    def undo(self, window: FaultWindow, run: RunMechanisms) -> str:
        kernel = run.mechanisms.kernel
        if kernel is not None:
            kernel.set_bandwidth(None)
            return "kernel: tbf off"
        return super().undo(window, run)

    def started(self, window: FaultWindow) -> str:
        spec = window.spec
        return f"proxy token bucket {spec.bandwidth_bps / 1e6:g} Mbit/s {spec.direction}"

    def shape(self, window: FaultWindow, shape: dict, run: RunMechanisms) -> None:
        if run.mechanisms.kernel is None:
            shape["bandwidth_bps"] = window.spec.bandwidth_bps


class BandwidthModelled(AddedDelay):
    """+ request bytes / B toward the server, + reply bytes / B back."""

    def added_delay(self, window: FaultWindow, salt: int, t: float, index: int,
                    link: ModelledLink) -> float:
        spec = window.spec
        up = spec.direction in (Direction.both, Direction.to_server)
        down = spec.direction in (Direction.both, Direction.to_client)
        bits = 8 * (link.request_bytes * up + link.reply_bytes * down)
        return bits / spec.bandwidth_bps


class PartitionOnLink:
    """The kernel's veth link down (TCP retransmits), or the proxy's black hole."""

    def apply(self, window: FaultWindow, run: RunMechanisms) -> str:
        if run.mechanisms.kernel is not None:
            run.mechanisms.kernel.set_partition(True)
            return "kernel: veth link down (TCP retransmits)"
        run.need("proxy", window.kind).set_partition(True)
        return "proxy black hole"

    def undo(self, window: FaultWindow, run: RunMechanisms) -> str:
        if run.mechanisms.kernel is not None:
            run.mechanisms.kernel.set_partition(False)
            return "kernel: veth link up"
        run.need("proxy", window.kind).set_partition(False)
        return "proxy heals (held bytes released)"


class ResetOnProxy:
    """Every open connection reset at the start; nothing to undo."""

    def apply(self, window: FaultWindow, run: RunMechanisms) -> str:
        return f"proxy RST to {run.need('proxy', window.kind).reset_connections()} connection(s)"

    def undo(self, window: FaultWindow, run: RunMechanisms) -> str:
        run.need("proxy", window.kind)
        return "proxy passes"


class SlowCloseOnProxy:
    """A close from either end reaches the other `delay_s` later."""

    def apply(self, window: FaultWindow, run: RunMechanisms) -> str:
        run.need("proxy", window.kind).set_slow_close(window.spec.delay_s)
        return f"proxy slow close {window.spec.delay_s:.2f} s"

    def undo(self, window: FaultWindow, run: RunMechanisms) -> str:
        run.need("proxy", window.kind).set_slow_close(0.0)
        return "proxy closes at once"


KINDS = (
    FaultKindEntry("latency", "network", LatencyOnLink(), LatencyModelled(),
                   doc="`delay_s` one way per `direction`, plus a seeded `jitter_s` draw per "
                       "chunk of bytes."),
    FaultKindEntry("bandwidth", "network", BandwidthOnLink(), BandwidthModelled(),
                   doc="A token bucket of `bandwidth_bps` per direction: payload size matters."),
    FaultKindEntry("partition", "network", PartitionOnLink(), HeldToEnd(), paced=True,
                   doc="Black hole, connections kept: nothing passes; bytes held are "
                       "delivered at the end."),
    FaultKindEntry("reset", "network", ResetOnProxy(), LostInFlight(), paced=True,
                   doc="Every open connection reset (RST) at the start."),
    FaultKindEntry("slow_close", "network", SlowCloseOnProxy(),
                   NoEffect("a late close delays no request: the engine keeps its session"),
                   paced=True, doc="A close from either end reaches the other `delay_s` later."),
)
