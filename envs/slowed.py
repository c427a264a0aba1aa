"""An env that runs slower than real time on purpose: what a busy machine, or a simulator
rendering two large cameras on a CPU, does to a benchmark.

The harness's results must not depend on how fast the simulator runs (`harness.loop.clock`
and `harness.faults.controller` say how); `env.step_sleep_s` is how a researcher checks that
on their own config, and how the tests do: the same seeded run with and without it.
"""

from __future__ import annotations

import time

import numpy as np

from envs.base import Env, EnvObservation, StepResult


class SlowedEnv:
    """`env` with a sleep of `sleep_s` (wall time) after each step; everything else is the
    env's own, so trajectories are unchanged (same seed, same actions, same states)."""

    def __init__(self, env: Env, sleep_s: float) -> None:
        if sleep_s <= 0:
            raise ValueError(f"step sleep {sleep_s}: must be > 0 (no sleep: use the env itself)")
        self.env = env
        self.spec = env.spec
        self.sleep_s = sleep_s

    def reset(self, *, seed: int, init_state: int | None = None) -> EnvObservation:
        return self.env.reset(seed=seed, init_state=init_state)

    def step(self, action: np.ndarray) -> StepResult:
        result = self.env.step(action)
        time.sleep(self.sleep_s)
        return result

    @property
    def video_stride(self) -> int:
        """The env's own (`VideoEnv`): filming is not slowed, only stepping."""
        return self.env.video_stride

    def video_frame(self) -> np.ndarray:
        """The env's own frame (`VideoEnv`), without the sleep."""
        return self.env.video_frame()

    def __getattr__(self, name: str):
        """Whatever else the env offers (`ee_pos`, `sim_state`, `close`, ...)."""
        return getattr(self.env, name)
