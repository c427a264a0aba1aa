"""Modellings several kinds share: what a window does to a request on the modelled link.

Each is the modelled half of a `FaultKindEntry` (see `base.Modelling` for when each method is
called). They draw only from `ModelledLink.rng(index, salt)` or per-window state that
`ModelledLink.window_state` keeps for the episode, never from wall time, so a modelled run
replays byte for byte.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.faults.modelled import ModelledLink
    from harness.faults.schedule import FaultWindow


@dataclass(frozen=True)
class NoEffect:
    """The kind leaves the modelled link alone; `why` says why (a duplicate on a latest-only
    stream changes nothing). Declared, not defaulted: the registry refuses silence."""

    why: str

    def added_delay(self, window: FaultWindow, salt: int, t: float, index: int,
                    link: ModelledLink) -> float:
        return 0.0

    def on_flight(self, window: FaultWindow, salt: int, t: float, index: int, base_s: float,
                  latency_s: float, link: ModelledLink) -> float:
        return latency_s


class AddedDelay:
    """Base of the kinds that only add time to a round trip sent in their window."""

    def added_delay(self, window: FaultWindow, salt: int, t: float, index: int,
                    link: ModelledLink) -> float:
        raise NotImplementedError

    def on_flight(self, window: FaultWindow, salt: int, t: float, index: int, base_s: float,
                  latency_s: float, link: ModelledLink) -> float:
        return latency_s


class HeldToEnd:
    """A flight overlapping the window lands at its end plus the base round trip: bytes held
    and released (a partition), a stopped process resumed (a stall)."""

    def added_delay(self, window: FaultWindow, salt: int, t: float, index: int,
                    link: ModelledLink) -> float:
        return 0.0

    def on_flight(self, window: FaultWindow, salt: int, t: float, index: int, base_s: float,
                  latency_s: float, link: ModelledLink) -> float:
        return max(latency_s, window.end_s - t + base_s)


class LostInFlight:
    """A flight overlapping the window is lost: the server died or the connection reset."""

    def added_delay(self, window: FaultWindow, salt: int, t: float, index: int,
                    link: ModelledLink) -> float:
        return 0.0

    def on_flight(self, window: FaultWindow, salt: int, t: float, index: int, base_s: float,
                  latency_s: float, link: ModelledLink) -> float:
        return math.inf


class LostIfSent:
    """A request sent in the window is lost with the window's `probability` (a dropped,
    corrupted or reordered message)."""

    def added_delay(self, window: FaultWindow, salt: int, t: float, index: int,
                    link: ModelledLink) -> float:
        return 0.0

    def on_flight(self, window: FaultWindow, salt: int, t: float, index: int, base_s: float,
                  latency_s: float, link: ModelledLink) -> float:
        if window.active(t) and link.rng(index, 100 + salt).random() < window.spec.probability:
            return math.inf
        return latency_s
