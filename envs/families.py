"""The built-in env families: the project's MuJoCo tasks and the LIBERO suites.

Each imports its simulator only when an env is built or a contract is read, so listing the
choices (`envs.env_names`, `--help`) loads neither MuJoCo nor LIBERO.
"""

from __future__ import annotations

from envs.base import Env
from envs.registry import EnvFamily
from harness.protocol.contract import Contract


class MujocoTasks(EnvFamily):
    """`envs.mujoco_tasks`: one task per env, the seed draws the initial state."""

    names = ("mujoco_reach", "mujoco_pick_place")
    oracle = "policies.oracle:make_mujoco_oracle"

    def make(self, name: str, *, task_id: int, cameras: tuple[str, ...],
             image_size: tuple[int, int], max_steps: int | None) -> Env:
        from envs.mujoco_tasks import TASKS

        return TASKS[name](cameras=cameras, image_size=image_size, max_steps=max_steps)

    def contract(self, name: str, task_id: int, *, cameras: tuple[str, ...],
                 image_size: tuple[int, int]) -> Contract:
        from envs.mujoco_tasks import TASKS

        return TASKS[name].contract(cameras=cameras, image_size=image_size)


class LiberoSuites(EnvFamily):
    """`envs.libero`: a suite's task list, and its fixed initial states (episode i of a task
    starts from init state i, as every LIBERO paper evaluates)."""

    names = ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")
    oracle = "policies.libero_oracle:LiberoOracle"

    def make(self, name: str, *, task_id: int, cameras: tuple[str, ...],
             image_size: tuple[int, int], max_steps: int | None) -> Env:
        from envs.libero import LiberoEnv

        return LiberoEnv(name, task_id=task_id, cameras=cameras, image_size=image_size,
                         max_steps=max_steps)

    def contract(self, name: str, task_id: int, *, cameras: tuple[str, ...],
                 image_size: tuple[int, int]) -> Contract:
        from envs.libero import task_contract

        return task_contract(name, task_id, cameras=cameras, image_size=image_size)

    def task_count(self, name: str) -> int:
        from envs.libero import suite_task_count

        return suite_task_count(name)

    def init_state(self, index: int) -> int | None:
        return index


MUJOCO = MujocoTasks()
LIBERO = LiberoSuites()
