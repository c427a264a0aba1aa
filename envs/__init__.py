"""Simulated robots behind one interface (`envs.base.Env`); `make_env` builds one by name."""

from __future__ import annotations

from envs.base import ArrayField, Env, EnvObservation, EnvSpec, StepResult

MUJOCO_TASKS = ("mujoco_reach", "mujoco_pick_place")
LIBERO_SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")


def make_env(name: str, *, cameras: tuple[str, ...] = (), image_size: tuple[int, int] = (128, 128),
             max_steps: int | None = None, task_id: int = 0) -> Env:
    """Build env `name`, rendering only `cameras` (none: no renderer at all).

    Raises ValueError naming the env if it is unknown, ImportError naming the package if the
    env's simulator is not installed.
    """
    if name in MUJOCO_TASKS:
        from envs.mujoco_tasks import TASKS

        return TASKS[name](cameras=cameras, image_size=image_size, max_steps=max_steps)
    if name in LIBERO_SUITES:
        from envs.libero import LiberoEnv

        return LiberoEnv(name, task_id=task_id, cameras=cameras, image_size=image_size,
                         max_steps=max_steps)
    raise ValueError(f"env.name={name!r}: expected one of {MUJOCO_TASKS + LIBERO_SUITES}")


__all__ = ["ArrayField", "Env", "EnvObservation", "EnvSpec", "LIBERO_SUITES", "MUJOCO_TASKS",
           "StepResult", "make_env"]
