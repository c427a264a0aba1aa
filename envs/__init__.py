"""Simulated robots behind one interface (`envs.base.Env`); `make_env` builds one by name.

Which envs exist is the registry's business (`envs.registry`): each env name belongs to a
family (`envs.families`: the MuJoCo tasks, the LIBERO suites), and a researcher's own family
is named by import path. The config, the task selection and the policies all ask it.
"""

from __future__ import annotations

from envs.base import Env, EnvObservation, EnvSpec, StepResult
from envs.registry import EnvFamily, UnknownEnv, env_family, env_names, register_family
from harness.protocol.contract import Contract


def _names_of(family_attr: str) -> tuple[str, ...]:
    from envs import families

    return getattr(families, family_attr).names


MUJOCO_TASKS = _names_of("MUJOCO")
LIBERO_SUITES = _names_of("LIBERO")


def env_name(name: str) -> str:
    """`name` if some family provides it; UnknownEnv (a ValueError) naming the choices."""
    env_family(name)
    return str(name)


def task_count(name: str) -> int:
    """How many tasks env `name` has (a LIBERO suite: its task list; a MuJoCo task: one)."""
    return env_family(name).task_count(name)


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

    Raises UnknownEnv (a ValueError) naming the choices if no family provides `name`,
    ImportError naming the package if the env's simulator is not installed.
    """
    return env_family(name).make(name, task_id=task_id, cameras=tuple(cameras),
                                 image_size=tuple(image_size), max_steps=max_steps)


def robot_contract(name: str, task_id: int = 0, *, cameras: tuple[str, ...] = (),
                   image_size: tuple[int, int] = (128, 128)) -> Contract:
    """The robot's side of the task's contract, without building a simulator."""
    return env_family(name).contract(name, task_id, cameras=tuple(cameras),
                                     image_size=tuple(image_size))


__all__ = ["Env", "EnvFamily", "EnvObservation", "EnvSpec", "LIBERO_SUITES", "MUJOCO_TASKS",
           "StepResult", "UnknownEnv", "env_family", "env_name", "env_names", "make_env",
           "register_family", "robot_contract", "task_count", "task_ids"]
