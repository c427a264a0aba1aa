"""Config shape of each kind of policy, next to the policies (`policy=<kind>` in Hydra).

Fields every policy has live on `PolicyConfig`; each kind adds only its own, so a remote
model's ten connection settings are not fields of an oracle, and a typo in a kind's field
fails at startup naming it. `harness.config` registers these with Hydra's ConfigStore from
the registry (`policies.registry`); the YAML files under `conf/policy/` only choose values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING


class PolicyConfigError(ValueError):
    """A policy config value is invalid; the message names the field."""


WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
"""Where the trained policies' weights ship: `<env>.safetensors` (torch),
`flow_<env>.safetensors` (flow)."""


def default_weights(env_name: str) -> Path:
    """The torch policy's weights for `env_name`."""
    return WEIGHTS_DIR / f"{env_name}.safetensors"


def default_flow_weights(env_name: str) -> Path:
    """The flow policy's weights for `env_name`."""
    return WEIGHTS_DIR / f"flow_{env_name}.safetensors"


LIBERO_TRAINED = ("libero_object", "libero_spatial")
"""The LIBERO suites the flow policy's training command takes: those the scripted oracle
solves (pick-and-place between objects)."""


def flow_trained() -> tuple[str, ...]:
    """The envs `python -m policies.flow.train` trains a model for."""
    from envs import MUJOCO_TASKS

    return (*MUJOCO_TASKS, *LIBERO_TRAINED)


def present_weights(path: Path, *, env: str, command: str,
                    trains: tuple[str, ...] | None = None) -> Path:
    """`path` if it is a file; else FileNotFoundError naming it and how to make it: the
    training `command` for an env it `trains` (None: the MuJoCo tasks), or which envs it
    trains. Here, not beside the policies, so `--check` can say it without importing torch."""
    if path.is_file():
        return path
    from envs import MUJOCO_TASKS

    trains = tuple(MUJOCO_TASKS) if trains is None else trains
    if env in trains:
        how = f"make it with `{command} --env {env}`"
    else:
        how = (f"`{command}` trains {', '.join(trains)} only; there are no weights for "
               f"env={env} yet")
    raise FileNotFoundError(f"policy.weights: {path} does not exist; {how}")


@dataclass
class PolicyConfig:
    """What every policy is configured with."""

    name: str = "oracle"
    """The kind: a registered name (`policies.registry.policy_names`)."""
    chunk_size: int = 8
    """Actions per chunk the model returns (remote: at most the reply's own chunk)."""
    latency_profile: str = "none"
    """Added inference time: none, openvla_4090 (~120 ms), openvla_l4 (~405 ms)."""
    replan_every: Optional[int] = None
    """evaluate job: steps executed from each chunk before asking again (None: all of it)."""

    @property
    def robot_chunk_size(self) -> int:
        """The chunk size the robot's client declares at session open: the model's own,
        or 0 (any) where the server returns what an external model sends."""
        return self.chunk_size

    @property
    def model_link(self) -> str | None:
        """The URL of the external model server our server dials, or None: the model runs
        inside our server (what `faults.link=model` needs to act on)."""
        return None

    @property
    def one_action_per_reply(self) -> bool:
        """Whether every chunk holds one action (an external server that answers so): then
        only a synchronous client can use them; an asynchronous one trims every action as
        stale, since each arrives after the tick it was for."""
        return False

    def __post_init__(self) -> None:
        from policies.slow import PROFILES

        if self.chunk_size < 1:
            raise PolicyConfigError(f"policy.chunk_size={self.chunk_size}: must be >= 1")
        if self.latency_profile not in PROFILES:
            raise PolicyConfigError(f"policy.latency_profile={self.latency_profile!r}: "
                                    f"expected one of {sorted(PROFILES)}")
        if self.replan_every is not None and not 1 <= self.replan_every <= self.chunk_size:
            raise PolicyConfigError(f"policy.replan_every={self.replan_every}: must be in "
                                    f"1..chunk_size={self.chunk_size}")


@dataclass
class OracleConfig(PolicyConfig):
    """The env family's scripted planner on privileged state (`EnvFamily.oracle`)."""

    name: str = "oracle"


@dataclass
class TorchPolicyConfig(PolicyConfig):
    """The behaviour-cloned MLP (`python -m policies.train`)."""

    name: str = "torch"
    weights: Optional[str] = None
    """A .safetensors file; None uses policies/weights/<env>.safetensors."""


@dataclass
class CustomPolicyConfig(PolicyConfig):
    """A researcher's own policy, named by import path, with its keyword arguments:

        python -m harness policy=custom policy.target=my_pkg.my_policy:MyPolicy \\
            +policy.args.gain=2.0

    `target` is any class or function returning an object that satisfies
    `policies.base.Policy`; "package.module:Name" or "package.module.Name" (Hydra's
    `_target_` spelling) both work. If it takes a `task` keyword it is given the
    `policies.registry.PolicyTask` it serves (env, task id, the robot's contract, chunk
    size, seed), so it can declare a matching spec without building an env."""

    name: str = "custom"
    target: str = MISSING
    args: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of `target`, as plain config values (numbers, strings, lists)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.target, str) or not self.target.strip():
            raise PolicyConfigError("policy.target: name your policy's class by import path, "
                                    "e.g. policy.target=my_pkg.my_policy:MyPolicy")
        from policies.registry import check_target

        check_target(self.target, dict(self.args))  # at startup, before any server
