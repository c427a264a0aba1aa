"""Policies the server can host: one entry per kind, and the builder of each.

A kind names its config schema (`policies.config`) and a builder that turns that config and
the task it serves into a `Policy`. Built-in kinds: the env family's scripted oracle, the
torch MLP, the flow-matching chunk policy with real-time chunking, a remote model server,
and `custom`, which serves any class named by import path, so a researcher's policy needs
no edit of this package. An unknown kind is an error listing the choices; nothing falls
through to a default.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from envs import env_family, robot_contract
from harness.imports import import_object
from harness.protocol.contract import Contract
from policies.base import Policy
from policies.config import (
    CustomPolicyConfig,
    OracleConfig,
    PolicyConfig,
    PolicyConfigError,
    TorchPolicyConfig,
    default_flow_weights,
    default_weights,
    flow_trained,
    present_weights,
)


class UnknownPolicy(ValueError):
    """A `policy.name` no entry provides; the message lists the choices."""


@dataclass(frozen=True)
class PolicyTask:
    """What a policy is built for: one task of one env, as the server will serve it."""

    env: str
    task_id: int = 0
    cameras: tuple[str, ...] = ()
    image_size: tuple[int, int] = (128, 128)
    chunk_size: int = 8
    seed: int = 0

    def robot_contract(self) -> Contract:
        """The robot's side of the contract (no simulator built): what a policy's `spec`
        must match, with `chunk_size` and `model_id` of its own."""
        return robot_contract(self.env, self.task_id, cameras=self.cameras,
                              image_size=self.image_size)


@dataclass(frozen=True)
class PolicyEntry:
    name: str
    config_class: type[PolicyConfig]
    build: Callable[[PolicyConfig, PolicyTask], Policy]
    """Builds one instance (the server asks for one per session slot)."""
    check: Callable[[PolicyConfig, str], None] | None = None
    """What can be known for env `str` without building (and without importing torch):
    run by `python -m harness --check` and before a run starts. Raises PolicyConfigError."""


def weights_check(default: Callable[[str], Path], command: str,
                  trains: Callable[[], tuple[str, ...]] | None = None,
                  ) -> Callable[[PolicyConfig, str], None]:
    """A `PolicyEntry.check`: the weights file (`policy.weights`, else `default(env)`) is
    there; PolicyConfigError naming it and the training `command` (for the envs `trains()`
    names; None: the MuJoCo tasks) if not."""

    def check(config: PolicyConfig, env: str) -> None:
        path = Path(config.weights) if config.weights else default(env)
        try:
            present_weights(path, env=env, command=command,
                            trains=None if trains is None else trains())
        except FileNotFoundError as exc:
            raise PolicyConfigError(str(exc)) from None

    return check


def resolve_target(target: str) -> Callable:
    """The callable an import path names: "package.module:Name" or "package.module.Name".

    Raises:
        PolicyConfigError: it cannot be imported or is not callable, naming the path.
    """
    obj = import_object(target, field="policy.target", error=PolicyConfigError)
    if not callable(obj):
        raise PolicyConfigError(f"policy.target={target!r}: {type(obj).__name__} is not "
                                "callable")
    return obj


def check_target(target: str, args: dict) -> None:
    """What can be known of a custom policy without building it: the import path resolves to
    something callable, and `args` (plus `task`, if it takes one) fit its signature.

    Raises:
        PolicyConfigError: naming `policy.target` or `policy.args` and what is wrong.
    """
    obj = resolve_target(target)
    given, signature = _call_args(obj, args, task=None)
    if signature is None:  # a builtin without a signature: checked when built
        return
    try:
        signature.bind(**given)
    except TypeError as exc:
        raise PolicyConfigError(f"policy.args={args}: {exc} (the signature of {target} is "
                                f"{signature})") from None


def _call_args(target: Callable, args: dict,
               task: PolicyTask | None) -> tuple[dict, inspect.Signature | None]:
    """The keyword arguments `target` is called with: `args`, plus `task` if it takes a
    `task` keyword; and its signature (None for a builtin without one)."""
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return dict(args), None
    return {**args, **({"task": task} if "task" in signature.parameters else {})}, signature


def _build_oracle(config: PolicyConfig, task: PolicyTask) -> Policy:
    family = env_family(task.env)
    if family.oracle is None:
        raise PolicyConfigError(f"policy=oracle: env {task.env!r} has no scripted oracle "
                                f"({type(family).__name__}.oracle is None)")
    return resolve_target(family.oracle)(task.env, task.task_id, chunk_size=config.chunk_size)


def _build_torch(config: PolicyConfig, task: PolicyTask) -> Policy:
    from policies.torch_policy import TorchPolicy

    return TorchPolicy.load(config.weights or default_weights(task.env))


def _build_flow(config: PolicyConfig, task: PolicyTask) -> Policy:
    from policies.flow.policy import FlowPolicy

    policy = FlowPolicy.load(config.weights or default_flow_weights(task.env),
                             task_state=task.robot_contract().state, rtc=config.rtc,
                             denoise_steps=config.denoise_steps,
                             guidance_weight=config.guidance_weight,
                             execution_horizon=config.execution_horizon)
    try:
        policy.features.check_task(task.env, task.task_id)
    except ValueError as exc:
        raise PolicyConfigError(f"policy.weights: {exc}") from None
    if policy.spec.chunk_size != config.chunk_size:
        raise PolicyConfigError(f"policy.chunk_size={config.chunk_size}: the weights were "
                                f"trained for chunks of {policy.spec.chunk_size}")
    return policy


def _flow_config_class() -> type[PolicyConfig]:
    from policies.flow.config import FlowPolicyConfig

    return FlowPolicyConfig


def _build_remote(config: PolicyConfig, task: PolicyTask) -> Policy:
    from policies.remote import make_remote_policy

    return make_remote_policy(config, env=task.env, task_id=task.task_id,
                              cameras=task.cameras, image_size=task.image_size)


def validated_policy(policy: object, built_by: str) -> Policy:
    """`policy` if it satisfies `policies.base.Policy` (a Contract `spec`, `reset`,
    `predict`); else PolicyConfigError naming what built it and what is missing."""
    missing = [m for m in ("spec", "reset", "predict") if not hasattr(policy, m)]
    if missing or not isinstance(getattr(policy, "spec", None), Contract):
        raise PolicyConfigError(
            f"{built_by} built a {type(policy).__name__}, which is not a policies.base.Policy: "
            "it needs a `spec` (a harness.protocol.contract.Contract), `reset` and `predict`"
            + (f"; missing {missing}" if missing else ""))
    return policy


def build_target(target: Callable, args: dict, task: PolicyTask) -> Policy:
    """Call `target(**args)`, adding `task=task` if it takes a `task` keyword, and check
    that the result is a Policy."""
    args, _ = _call_args(target, args, task)
    name = getattr(target, "__qualname__", repr(target))
    try:
        policy = target(**args)
    except TypeError as exc:
        raise PolicyConfigError(f"{name}({', '.join(args)}): {exc}") from exc
    return validated_policy(policy, name)


def _build_custom(config: PolicyConfig, task: PolicyTask) -> Policy:
    return build_target(resolve_target(config.target), dict(config.args), task)


def _remote_config_class() -> type[PolicyConfig]:
    from policies.remote.config import RemotePolicyConfig

    return RemotePolicyConfig


_POLICIES: dict[str, PolicyEntry] = {}


def register_policy(entry: PolicyEntry) -> PolicyEntry:
    """Register a kind; ValueError if its name is another entry's."""
    if _POLICIES.get(entry.name, entry) is not entry:
        raise ValueError(f"policy kind {entry.name!r} is already registered")
    _POLICIES[entry.name] = entry
    return entry


for _entry in (PolicyEntry("oracle", OracleConfig, _build_oracle),
               PolicyEntry("torch", TorchPolicyConfig, _build_torch,
                           weights_check(default_weights, "python -m policies.train")),
               PolicyEntry("flow", _flow_config_class(), _build_flow,
                           weights_check(default_flow_weights, "python -m policies.flow.train",
                                         flow_trained)),
               PolicyEntry("remote", _remote_config_class(), _build_remote),
               PolicyEntry("custom", CustomPolicyConfig, _build_custom)):
    register_policy(_entry)


def policy_names() -> list[str]:
    return list(_POLICIES)


def policy_entry(name: str) -> PolicyEntry:
    """The entry of kind `name`; UnknownPolicy listing the kinds if there is none."""
    entry = _POLICIES.get(str(name))
    if entry is None:
        raise UnknownPolicy(f"policy.name={name!r}: expected one of {policy_names()} (your own "
                            "class: policy=custom policy.target=package.module:Class)")
    return entry


def build_policy(config: PolicyConfig, task: PolicyTask) -> Policy:
    """One instance of the policy `config` names, for `task`, slowed by its latency profile.

    Raises:
        UnknownPolicy / PolicyConfigError: the kind or a field is wrong, naming it.
        FileNotFoundError: a weights file is missing.
    """
    policy = policy_entry(config.name).build(config, task)
    if config.latency_profile == "none":
        return policy
    from policies.slow import SlowPolicy, profile

    return SlowPolicy(policy, profile(config.latency_profile), seed=task.seed)


def policy_factory(config: PolicyConfig, task: PolicyTask) -> Callable[[], Policy]:
    """A builder of fresh instances, one per call (the server's session pool)."""
    policy_entry(config.name)  # an unknown kind fails here, before any server starts
    return lambda: build_policy(config, task)
