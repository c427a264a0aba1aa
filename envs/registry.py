"""Env families: the one place that knows which envs exist and what each kind of env needs.

A family is a kind of simulated robot (the project's MuJoCo tasks, the LIBERO suites) that
provides one or more env names. Everything that used to test a name's prefix (`is_libero`)
asks the family instead: how many tasks an env has, which fixed initial state an episode
starts from, the robot's contract without a simulator, which scripted oracle solves it.

Adding a family is one module that defines an `EnvFamily` and one YAML file in `conf/env/`
naming it, either by a registered name or by import path (`env.name=my_pkg.my_env:FAMILY`,
as vla-eval names its benchmarks): no edit of this package.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from envs.base import Env
from harness.imports import import_object
from harness.protocol.contract import Contract


class UnknownEnv(ValueError):
    """An env name that no family provides; the message lists the choices."""


class EnvFamily(ABC):
    """A kind of simulated robot. Its methods take the env's name, so one family can
    provide several envs (the five LIBERO suites)."""

    names: tuple[str, ...] = ()
    """The env names this family provides (a family named by import path may leave it
    empty: it then provides that one import path)."""
    oracle: str | None = None
    """Import path ("package.module:Class") of the scripted policy that solves its tasks,
    built as `Class(env_name, task_id, chunk_size=...)`; None: it has none."""

    @abstractmethod
    def make(self, name: str, *, task_id: int, cameras: tuple[str, ...],
             image_size: tuple[int, int], max_steps: int | None) -> Env:
        """Build the env, rendering only `cameras`. Raises ImportError naming the package if
        the simulator is not installed."""

    @abstractmethod
    def contract(self, name: str, task_id: int, *, cameras: tuple[str, ...],
                 image_size: tuple[int, int]) -> Contract:
        """The robot's side of the task's contract, known without building a simulator (a
        policy server for a learned model loads none)."""

    def task_count(self, name: str) -> int:
        """How many tasks the env has; one unless the family says otherwise."""
        return 1

    def init_state(self, index: int) -> int | None:
        """The fixed initial state episode `index` of a task starts from, or None: the
        episode's seed draws one. Families with a benchmark's fixed init states (LIBERO)
        return `index`, so episode i is comparable across papers."""
        return None


_FAMILIES: dict[str, EnvFamily] = {}
"""Env name -> its family; import paths are added when first resolved."""
_BUILT_IN = ("envs.families:MUJOCO", "envs.families:LIBERO")
"""Families registered on first lookup. Their modules import their simulators lazily, so
listing the choices costs no MuJoCo or LIBERO import."""


def register_family(family: EnvFamily, *names: str) -> EnvFamily:
    """Register `family` under each of `names` (default: `family.names`).

    Raises ValueError if a name is already another family's."""
    for name in names or family.names:
        other = _FAMILIES.get(name)
        if other is not None and other is not family:
            raise ValueError(f"env {name!r} is already provided by {type(other).__name__}")
        _FAMILIES[name] = family
    return family


def _load_built_ins() -> None:
    if _FAMILIES:
        return
    for path in _BUILT_IN:
        register_family(_import(path))


def _import(path: str) -> EnvFamily:
    family = import_object(path, field="env.name", error=UnknownEnv)
    if isinstance(family, type) and issubclass(family, EnvFamily):
        family = family()  # the class named instead of its instance
    if not isinstance(family, EnvFamily):
        raise UnknownEnv(f"env.name={path!r}: {type(family).__name__} is not an "
                         "envs.registry.EnvFamily")
    return family


def env_family(name: str) -> EnvFamily:
    """The family that provides env `name`: a registered name, or an import path
    "package.module:ATTR" naming an EnvFamily (instance or class).

    Raises:
        UnknownEnv: no family provides it; the message lists every registered name.
    """
    _load_built_ins()
    family = _FAMILIES.get(name)
    if family is not None:
        return family
    if ":" in name:
        return register_family(_import(name), name)
    raise UnknownEnv(f"env.name={name!r}: expected one of {env_names()}, or an import path "
                     "'package.module:FAMILY' naming an envs.registry.EnvFamily")


def env_names() -> list[str]:
    """Every registered env name, built-ins first, in registration order."""
    _load_built_ins()
    return list(_FAMILIES)
