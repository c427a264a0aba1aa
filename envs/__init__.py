"""Simulated robots behind one interface (`envs.base.Env`); `make_env` builds one by name.

`EnvName` is the one list of envs the harness knows; the config, the task selection and the
policies all take their choices from it.
"""

from __future__ import annotations

import enum

from envs.base import Env, EnvObservation, EnvSpec, StepResult


class EnvName(enum.StrEnum):
    """Every env `make_env` can build (lower-case members: Hydra matches config values by name)."""

    mujoco_reach = "mujoco_reach"
    mujoco_pick_place = "mujoco_pick_place"
    libero_spatial = "libero_spatial"
    libero_object = "libero_object"
    libero_goal = "libero_goal"
    libero_10 = "libero_10"
    libero_90 = "libero_90"

    @property
    def is_libero(self) -> bool:
        return self.value.startswith("libero_")


MUJOCO_TASKS = tuple(name for name in EnvName if not name.is_libero)
LIBERO_SUITES = tuple(name for name in EnvName if name.is_libero)


def env_name(name: str) -> EnvName:
    """`name` as an EnvName; ValueError naming the choices if it is none."""
    try:
        return EnvName(name)
    except ValueError:
        raise ValueError(f"env.name={name!r}: expected one of {[n.value for n in EnvName]}") \
            from None


def task_count(name: str) -> int:
    """How many tasks env `name` has (a LIBERO suite: its task list; a MuJoCo task: one)."""
    if not env_name(name).is_libero:
        return 1
    from envs.libero import suite_task_count

    return suite_task_count(name)


def task_ids(name: str, tasks: str) -> list[int]:
    """Parse a task selection: "all" (every task of the env) or ids like "0,3,7".

    Raises ValueError naming `env.tasks` and the env's range if an id is not one of its
    tasks (the MuJoCo tasks have only task 0; a LIBERO suite has its list).
    """
    if tasks == "all":
        return list(range(task_count(name)))
    ids = [int(t) for t in tasks.split(",")]
    count = task_count(name)
    outside = [i for i in ids if not 0 <= i < count]
    if outside:
        have = "only task 0" if count == 1 else f"tasks 0..{count - 1}"
        raise ValueError(f"env.tasks={tasks!r}: {name} has {have}, not {outside}")
    return ids


def make_env(name: str, *, cameras: tuple[str, ...] = (), image_size: tuple[int, int] = (128, 128),
             max_steps: int | None = None, task_id: int = 0) -> Env:
    """Build env `name`, rendering only `cameras` (none: no renderer at all).

    Raises ValueError naming the env if it is unknown, ImportError naming the package if the
    env's simulator is not installed.
    """
    name = env_name(name)
    if not name.is_libero:
        from envs.mujoco_tasks import TASKS

        return TASKS[name](cameras=cameras, image_size=image_size, max_steps=max_steps)
    from envs.libero import LiberoEnv

    return LiberoEnv(name, task_id=task_id, cameras=cameras, image_size=image_size,
                     max_steps=max_steps)


__all__ = ["Env", "EnvName", "EnvObservation", "EnvSpec", "LIBERO_SUITES", "MUJOCO_TASKS",
           "StepResult", "env_name", "make_env", "task_count", "task_ids"]
