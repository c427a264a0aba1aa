"""The env interface the harness drives: one simulated robot, one episode at a time.

Everything the policy side must agree on is in `EnvSpec`, so a session can be validated
before the first step (action names and order, observation keys, image shapes, control rate).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class ArrayField:
    """One observation entry: its dtype name and shape (images: (H, W, 3) uint8)."""

    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class EnvSpec:
    name: str
    action_names: tuple[str, ...]
    """Order of the action vector's entries."""
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    state: dict[str, ArrayField]
    """Low-dimensional observation entries (proprioception, and privileged object state)."""
    images: dict[str, tuple[int, int]] = field(default_factory=dict)
    """camera -> (height, width); only these cameras are rendered."""
    control_hz: float = 20.0
    max_steps: int = 200
    """The episode ends (failure) after this many steps without success."""

    @property
    def action_dim(self) -> int:
        return len(self.action_names)


@dataclass(frozen=True)
class EnvObservation:
    state: dict[str, np.ndarray]
    images: dict[str, np.ndarray]
    """camera -> HxWx3 uint8, upright (row 0 is the top of the picture)."""
    instruction: str


@dataclass(frozen=True)
class StepResult:
    observation: EnvObservation
    success: bool
    """The task's own success check after this step."""
    done: bool
    """success, or the step limit reached."""
    info: dict[str, float | int | str | bool] = field(default_factory=dict)


class Env(Protocol):
    spec: EnvSpec

    def reset(self, *, seed: int, init_state: int | None = None) -> EnvObservation:
        """Start an episode. Same (seed, init_state) -> same trajectory for the same actions.

        `init_state` picks one of the task's fixed initial states where it has them (LIBERO);
        otherwise the seed draws one.
        """

    def step(self, action: np.ndarray) -> StepResult:
        """Apply one action of shape (action_dim,) for 1/control_hz seconds of sim time.

        Raises ValueError if the action has the wrong shape or is not finite; values outside
        [action_low, action_high] are clipped.
        """

    def close(self) -> None:
        """Release the simulator and renderer. Idempotent."""
