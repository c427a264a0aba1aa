"""Which link a network fault acts on: the robot's link to our policy server, our server's
link to an external model server (`policy=remote`), or both at once.

Each link has its own fault proxy; `ProxyGroup` puts the proxies of the chosen links behind
the one proxy interface the fault controller drives, so a schedule needs no notion of links.
"""

from __future__ import annotations

from harness.faults.proxy import Direction, FaultProxy, LinkShape


class ProxyGroup:
    """Several proxies driven as one: every call goes to each, in order."""

    def __init__(self, proxies: list[FaultProxy]) -> None:
        if not proxies:
            raise ValueError("ProxyGroup needs at least one proxy")
        self.proxies = proxies

    def set_shape(self, shape: LinkShape, direction: Direction | None = None) -> None:
        for proxy in self.proxies:
            proxy.set_shape(shape, direction)

    def set_partition(self, on: bool) -> None:
        for proxy in self.proxies:
            proxy.set_partition(on)

    def reset_connections(self) -> int:
        return sum(proxy.reset_connections() for proxy in self.proxies)

    def set_slow_close(self, delay_s: float) -> None:
        for proxy in self.proxies:
            proxy.set_slow_close(delay_s)

    def reseed(self, seed: int) -> None:
        for i, proxy in enumerate(self.proxies):  # distinct draws per link, each replayable
            proxy.reseed(seed if i == 0 else seed * 8 + i)

    def stop(self) -> None:
        for proxy in self.proxies:
            proxy.stop()
