"""The safety invariants of DESIGN.md, checked on every executed action.

No executed action is older than `max_action_age_s`; none comes from another episode, session
epoch or model; sequence ids never go backwards. A breach is recorded, never silently fixed.
"""

from __future__ import annotations

from harness.client.states import ActionSource, TickResult


class InvariantChecker:
    """The safety invariants of DESIGN.md, checked on every executed action."""

    def __init__(self, *, max_age_ticks: int) -> None:
        self.max_age_ticks = max_age_ticks
        self.last_seq = -1

    def check(self, result: TickResult, *, tick: int, episode: int, epoch: int,
              model_id: str) -> list[str]:
        if result.source is ActionSource.FALLBACK:
            return []
        breaches = []
        if result.age_ticks is None or result.age_ticks > self.max_age_ticks:
            breaches.append(f"tick {tick}: action age {result.age_ticks} ticks > "
                            f"{self.max_age_ticks}")
        if (result.episode, result.epoch, result.model_id) != (episode, epoch, model_id):
            breaches.append(f"tick {tick}: action from episode {result.episode} epoch "
                            f"{result.epoch} model {result.model_id!r}, expected {episode} "
                            f"{epoch} {model_id!r}")
        if result.seq is not None and result.seq < self.last_seq:
            breaches.append(f"tick {tick}: sequence id went back {self.last_seq} -> {result.seq}")
        if result.seq is not None:
            self.last_seq = result.seq
        return breaches
