"""Policies the server can host behind one interface (`policies.base.Policy`).

`policies.registry` lists the kinds (oracle, torch, remote, custom) and builds one from its
config (`policies.config`) and the task it serves: the scripted oracles read their task's
definition (privileged state), the torch policy its weights file, a custom policy is any
class named by import path; none of them builds an env.
"""

from __future__ import annotations

from policies.base import Policy
from policies.config import PolicyConfig, PolicyConfigError
from policies.registry import (
    PolicyEntry,
    PolicyTask,
    UnknownPolicy,
    build_policy,
    policy_entry,
    policy_factory,
    policy_names,
    register_policy,
)


def make_policy(name: str, *, env: str, task_id: int = 0, chunk_size: int = 8,
                weights: str | None = None, latency_profile: str = "none",
                seed: int = 0) -> Policy:
    """Build built-in policy `name` (oracle or torch) for task `task_id` of env `env`, slowed
    by `latency_profile`: a shortcut for scripts and tests.

    Raises UnknownPolicy naming the choices, ValueError naming the policy or env when they
    do not go together, or FileNotFoundError naming a missing weights file.
    """
    entry = policy_entry(name)
    fields = dict(chunk_size=chunk_size, latency_profile=latency_profile)
    if weights is not None:
        fields["weights"] = weights
    config = entry.config_class(**fields)
    return build_policy(config, PolicyTask(env, task_id, chunk_size=chunk_size, seed=seed))


__all__ = ["Policy", "PolicyConfig", "PolicyConfigError", "PolicyEntry", "PolicyTask",
           "UnknownPolicy", "build_policy", "make_policy", "policy_entry", "policy_factory",
           "policy_names", "register_policy"]
