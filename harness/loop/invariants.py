"""The safety invariants of DESIGN.md, checked on every executed action.

No executed action is older than `max_action_age_s`; none comes from another episode, session
epoch or model; sequence ids never go backwards. A breach is recorded, never silently fixed.

An action's age counts from its observation, except for a chunk the synchronous client merged
on resume: the robot held still from the observation until the chunk came, so its age counts
from the tick it resumed at. The checker does not take the engine's word for that: it accepts
a later start only if it saw every tick in between executed as a WAIT (hold still) tick.
Likewise a delay-aware chunk starts after the committed prefix its observation carried, and
its ages count from there: accepted only if the ticks in between executed exactly (byte for
byte) the prefix that was sent.
"""

from __future__ import annotations

import numpy as np

from harness.client.states import ActionSource, TickResult


class InvariantChecker:
    """The safety invariants of DESIGN.md, checked on every executed action."""

    def __init__(self, *, max_age_ticks: int) -> None:
        self.max_age_ticks = max_age_ticks
        self.last_seq = -1
        self._held: set[int] = set()
        """Ticks at which the robot held still by design (ActionSource.WAIT)."""
        self._executed: dict[int, bytes] = {}
        """Every tick's executed action, as float32 bytes."""
        self._committed: dict[int, np.ndarray] = {}
        """Send tick -> the committed prefix its observation carried."""

    def check(self, result: TickResult, *, tick: int, episode: int, epoch: int,
              model_id: str) -> list[str]:
        self._executed[tick] = np.asarray(result.action, np.float32).tobytes()
        if result.committed is not None and len(result.committed):
            self._committed[tick] = np.asarray(result.committed, np.float32)
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
            elif not (all(t in self._held for t in range(result.observed_tick, resumed))
                      or self._prefix_executed(result.observed_tick, resumed)):
                breaches.append(f"tick {tick}: action age {result.age_ticks} ticks counts from "
                                f"tick {resumed}, but since its observation at tick "
                                f"{result.observed_tick} the robot neither held still nor "
                                f"executed the prefix it committed to (real age "
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

    def _prefix_executed(self, sent: int, start: int) -> bool:
        """The observation of tick `sent` committed to `start - sent` actions, and those
        were the ones executed."""
        prefix = self._committed.get(sent)
        return prefix is not None and len(prefix) == start - sent and all(
            self._executed.get(sent + i) == prefix[i].tobytes() for i in range(len(prefix)))
