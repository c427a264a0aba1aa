"""The client's action queue: chunk actions keyed by the control tick they are meant for.

A chunk predicted from the observation of tick t holds actions for ticks t, t+1, ... By the
time it arrives (tick t + latency) its first actions are in the past: `merge` trims them
instead of executing them late, and overlaps with what the queue already holds are combined
by the configured ensembling. A chunk merged on resume (the synchronous client, whose robot
held still while it waited) starts at its arrival tick instead: nothing in it is stale. A
chunk of a delay-aware policy names its own start (after the committed prefix): it is merged
from there, and ticks before it keep the queued prefix.
Every action remembers where it came from (observation sequence id, episode, session epoch,
model), so the runner can check that nothing stale, foreign or out of order is ever executed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.choices import choice
from harness.client.config import Ensembling


@dataclass(frozen=True)
class QueuedAction:
    tick: int
    """Control tick this action is meant for."""
    action: np.ndarray
    obs_tick: int
    """Tick the (newest contributing) chunk's first action was meant for, which ages count
    from: that of the observation it was predicted from, or for a chunk merged on resume the
    tick the robot resumed at."""
    seq: int
    episode: int
    epoch: int
    model_id: str
    observed_tick: int | None = None
    """Tick of the observation itself: `obs_tick` but for a chunk merged on resume."""


@dataclass
class _Slot:
    action: np.ndarray
    contributions: int
    source: QueuedAction


class ActionQueue:
    """Not thread-safe: the engine calls it from the control loop's thread only."""

    def __init__(self, ensembling: Ensembling = Ensembling.newest,
                 exponential_weight: float = 0.5, *, max_age_ticks: int | None = None) -> None:
        if not 0.0 < exponential_weight <= 1.0:
            raise ValueError(f"client.exponential_weight={exponential_weight}: must be in (0, 1]")
        self.ensembling = choice(Ensembling, ensembling, "client.ensembling")
        self.exponential_weight = exponential_weight
        self.max_age_ticks = max_age_ticks
        """An action older than this at its tick will not be executed (the engine's
        `max_action_age_s`): `depth` does not count it."""
        self._slots: dict[int, _Slot] = {}
        self.last_seq = -1
        self.trimmed = 0
        """Actions dropped on arrival because their tick had already passed."""
        self.out_of_order = 0
        """Chunks dropped because a chunk of a newer observation was already merged."""

    def merge(self, chunk: np.ndarray, *, obs_tick: int, now_tick: int, seq: int, episode: int,
              epoch: int, model_id: str, resumed: bool = False,
              start_tick: int | None = None) -> int:
        """Add a chunk predicted from the observation of `obs_tick`, arriving at `now_tick`.

        `resumed`: the robot held still from `obs_tick` to `now_tick` (the synchronous
        client), so the chunk starts at `now_tick`: its first action is meant for it,
        nothing is trimmed, and ages count from `now_tick`.
        `start_tick`: the chunk's first action is for this tick (a delay-aware policy's,
        planned past the committed prefix); ages count from it, and only ticks already past
        are trimmed.

        Returns how many of its actions were usable (not already in the past). A chunk
        answering an older observation than one already merged is dropped whole: sequence
        ids never go backwards.
        """
        if seq <= self.last_seq:
            self.out_of_order += 1
            return 0
        self.last_seq = seq
        usable = 0
        start = now_tick if resumed else obs_tick if start_tick is None else start_tick
        for offset, action in enumerate(np.asarray(chunk, np.float32)):
            tick = start + offset
            if tick < now_tick:
                self.trimmed += 1
                continue
            usable += 1
            source = QueuedAction(tick, action, start, seq, episode, epoch, model_id, obs_tick)
            slot = self._slots.get(tick)
            if slot is not None and self.max_age_ticks is not None and (
                    tick - slot.source.obs_tick > self.max_age_ticks):
                slot = None  # too old to execute there: nothing to blend with, replace it
            if slot is None or self.ensembling is Ensembling.newest:
                self._slots[tick] = _Slot(action.copy(), 1, source)
            elif self.ensembling is Ensembling.average:
                n = slot.contributions
                slot.action = (slot.action * n + action) / (n + 1)
                slot.contributions, slot.source = n + 1, source
            else:  # exponential: the newest prediction gets `exponential_weight`
                w = self.exponential_weight
                slot.action = (1 - w) * slot.action + w * action
                slot.contributions, slot.source = slot.contributions + 1, source
        return usable

    def pop(self, tick: int) -> QueuedAction | None:
        """Remove and return the action for `tick` (or None); forget anything older."""
        for old in [t for t in self._slots if t < tick]:
            del self._slots[old]
        slot = self._slots.pop(tick, None)
        if slot is None:
            return None
        s = slot.source
        return QueuedAction(tick, slot.action.astype(np.float32), s.obs_tick, s.seq, s.episode,
                            s.epoch, s.model_id, s.observed_tick)

    def executable(self, tick: int) -> np.ndarray | None:
        """The action `pop(tick)` would return if young enough to execute, else None;
        nothing is removed (what the committed prefix is read from)."""
        slot = self._slots.get(tick)
        if slot is None or (self.max_age_ticks is not None
                            and tick - slot.source.obs_tick > self.max_age_ticks):
            return None
        return slot.action

    def depth(self, tick: int) -> int:
        """Consecutive actions available from `tick` on that are young enough to execute:
        how long the robot can go on. A long chunk's tail past `max_age_ticks` does not
        count, so the engine asks again in time instead of waiting it out on fallback."""
        n = 0
        while (slot := self._slots.get(tick + n)) is not None and (
                self.max_age_ticks is None
                or tick + n - slot.source.obs_tick <= self.max_age_ticks):
            n += 1
        return n

    def clear(self) -> None:
        """Forget every action (new episode or a contract change); keeps the counters."""
        self._slots.clear()
        self.last_seq = -1
