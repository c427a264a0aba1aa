"""The env interface the harness drives: one simulated robot, one episode at a time.

What the policy side must agree on is `EnvSpec.contract` (`harness.protocol.contract`), so
a session can be validated before the first step (action names and order, observation keys,
image shapes, control rate).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from harness.protocol.contract import Contract


@dataclass(frozen=True)
class EnvSpec:
    """One env: the robot's side of the contract, plus what only the robot knows."""

    name: str
    contract: Contract
    """Actions, observations, cameras (only these are rendered) and control rate; its
    `model_id` is "" and `chunk_size` 0: the robot takes any model and chunk length."""
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    max_steps: int = 200
    """The episode ends (failure) after this many steps without success."""


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

    def ee_pos(self) -> np.ndarray | None:
        """The end effector's position now (after the last reset or step): metres, world
        frame, shape (3,); None if the env cannot say. A read: it never changes the
        simulation, so recording it cannot change an episode (golden parity)."""

    def close(self) -> None:
        """Release the simulator and renderer. Idempotent."""


class VideoEnv(Env, Protocol):
    """An env that can film its episodes (`record=failures|all`, `harness.results.video`).

    Its video camera is separate from the cameras the policy sees (`EnvSpec.contract`): those
    are rendered only when the policy needs them, and with none the env builds no renderer.
    Filming renders only when asked, so a run that records nothing pays nothing for it.
    """

    video_stride: int
    """Ticks per video frame (>= 1): 1 where a frame is cheap, more where a frame costs
    several control ticks of CPU; the video then plays at control_hz / video_stride fps."""

    def video_frame(self) -> np.ndarray:
        """The scene now (after the last reset or step) from the env's video camera: HxWx3
        uint8, upright, the same size at every call of one env. A read: it never changes
        the simulation. The first call builds what it renders with (released by `close`)."""
