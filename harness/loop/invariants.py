"""The safety invariants of DESIGN.md, checked on every executed action.

No executed action is older than `max_action_age_s`; none comes from another episode, session
epoch or model; sequence ids never go backwards. A breach is recorded, never silently fixed.

An action's age counts from its observation, except for a chunk the synchronous client merged
on resume: the robot held still from the observation until the chunk came, so its age counts
from the tick it resumed at. The checker does not take the engine's word for that: it accepts
a later start only if it saw every tick in between executed as a WAIT (hold still) tick.
"""

from __future__ import annotations

from harness.client.states import ActionSource, TickResult


class InvariantChecker:
    """The safety invariants of DESIGN.md, checked on every executed action."""

    def __init__(self, *, max_age_ticks: int) -> None:
        self.max_age_ticks = max_age_ticks
        self.last_seq = -1
        self._held: set[int] = set()
        """Ticks at which the robot held still by design (ActionSource.WAIT)."""

    def check(self, result: TickResult, *, tick: int, episode: int, epoch: int,
              model_id: str) -> list[str]:
        if result.source is ActionSource.WAIT:
            self._held.add(tick)
            if result.seq is not None or result.age_ticks is not None:
                return [f"tick {tick}: a wait tick executed an action of chunk {result.seq}"]
            return []
        if result.source is ActionSource.FALLBACK:
            return []
        breaches = []
        if result.age_ticks is None or result.age_ticks > self.max_age_ticks:
            breaches.append(f"tick {tick}: action age {result.age_ticks} ticks > "
                            f"{self.max_age_ticks}")
        elif result.observed_tick is not None:
            resumed = tick - result.age_ticks
            if resumed < result.observed_tick:
                breaches.append(f"tick {tick}: action age {result.age_ticks} ticks counts from "
                                f"before its observation (tick {result.observed_tick})")
            elif not all(t in self._held for t in range(result.observed_tick, resumed)):
                breaches.append(f"tick {tick}: action age {result.age_ticks} ticks counts from "
                                f"tick {resumed}, but the robot did not hold still since its "
                                f"observation at tick {result.observed_tick} (real age "
                                f"{tick - result.observed_tick})")
        if (result.episode, result.epoch, result.model_id) != (episode, epoch, model_id):
            breaches.append(f"tick {tick}: action from episode {result.episode} epoch "
                            f"{result.epoch} model {result.model_id!r}, expected {episode} "
                            f"{epoch} {model_id!r}")
        if result.seq is not None and result.seq < self.last_seq:
            breaches.append(f"tick {tick}: sequence id went back {self.last_seq} -> {result.seq}")
        if result.seq is not None:
            self.last_seq = result.seq
        return breaches
