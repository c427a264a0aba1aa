"""The delay-aware client's promise: what the robot does until the reply can be used.

A delay-aware observation carries the expected delay d and the committed prefix, the d actions
the robot executes from its tick on whatever the reply says; a delay-aware policy plans from
where they lead, and its chunk starts after them. The engine reads the prefix off its queue
(holding still where the queue has nothing), keeps it as a `Commitment` until the chunk
starts, and executes its hold rows when the queue has nothing for a tick. The invariant
checker verifies the promise was kept, byte for byte.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from harness.client.action_queue import ActionQueue


def ticks_for(latency_s: float, dt: float) -> int:
    """Ticks after sending at which a reply of this round trip is usable (at least 1: the
    virtual clock's rule)."""
    return max(1, math.ceil(latency_s / dt - 1e-9))


def hold_action(last: np.ndarray, gripper_index: int | None) -> np.ndarray:
    """Zero deltas, the gripper as `last` left it."""
    action = np.zeros_like(last)
    if gripper_index is not None:
        action[gripper_index] = last[gripper_index]
    return action


class DelayEstimate:
    """The expected delay: the largest of the latest `window` round trips (a reply later
    than expected costs trimmed actions, an earlier one only waits in the queue), or before
    any the latency model's expectation, or 1 tick."""

    def __init__(self, window: int) -> None:
        self._round_trips: deque[float] = deque(maxlen=window)

    def record(self, latency_s: float) -> None:
        self._round_trips.append(latency_s)

    def ticks(self, dt: float, expected_s: float | None) -> int:
        latency_s = max(self._round_trips) if self._round_trips else expected_s
        return ticks_for(latency_s, dt) if latency_s else 1


@dataclass
class Commitment:
    """A prefix promised at `tick`: `actions[i]` is executed at tick `tick + i`."""

    tick: int
    actions: np.ndarray = field(repr=False)

    @property
    def end(self) -> int:
        """The tick its chunk starts at."""
        return self.tick + len(self.actions)

    def row(self, tick: int) -> np.ndarray | None:
        return self.actions[tick - self.tick] if self.tick <= tick < self.end else None


def committed_prefix(queue: ActionQueue, tick: int, delay_ticks: int, last: np.ndarray,
                     gripper_index: int | None) -> np.ndarray:
    """The `delay_ticks` actions the robot executes from `tick` on: the queued ones young
    enough to execute, then holding still (after `last`, the action executed before)."""
    rows = []
    for offset in range(delay_ticks):
        action = queue.executable(tick + offset)
        rows.append((hold_action(last, gripper_index) if action is None
                     else action).astype(np.float32))
        last = rows[-1]
    return np.stack(rows)
