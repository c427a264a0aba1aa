"""Policies the server can host behind one interface (`policies.base.Policy`).

`PolicyName` is the one list of them. `make_policy` builds one from its config alone: the
scripted oracles read their task's definition (privileged state), the torch policy its
weights file; none of them builds an env.
"""

from __future__ import annotations

import enum

from envs import env_name
from policies.base import Policy


class PolicyName(enum.StrEnum):
    """Lower-case members: Hydra matches config values by name."""

    oracle = "oracle"
    """Scripted planner on privileged state (MuJoCo tasks, LIBERO pick-and-place)."""
    torch = "torch"
    """A small MLP trained from oracle demonstrations (`python -m policies.train`)."""
    remote = "remote"
    """A model on someone else's server (openpi, vla-eval, OpenVLA, SGLang), driven through
    an adapter (`policies.remote`); built by `policies.remote.make_remote_policy`."""


def make_policy(name: str, *, env: str, task_id: int = 0, chunk_size: int = 8,
                weights: str | None = None, latency_profile: str = "none",
                seed: int = 0) -> Policy:
    """Build policy `name` for task `task_id` of env `env`, slowed by `latency_profile`.

    Raises ValueError naming the policy or env when they do not go together, or
    FileNotFoundError naming a missing weights file.
    """
    policy = _make_base_policy(PolicyName(name), env_name(env), task_id=task_id,
                               chunk_size=chunk_size, weights=weights)
    if latency_profile == "none":
        return policy
    from policies.slow import SlowPolicy, profile

    return SlowPolicy(policy, profile(latency_profile), seed=seed)


def _make_base_policy(name: PolicyName, env, *, task_id: int, chunk_size: int,
                      weights: str | None) -> Policy:
    if name is PolicyName.remote:
        raise ValueError("policy=remote is built from its settings (policy.protocol, "
                         "policy.url, ...): policies.remote.make_remote_policy")
    if name is PolicyName.oracle:
        if not env.is_libero:
            from policies.oracle import MujocoOracle

            return MujocoOracle(env, chunk_size=chunk_size)
        from policies.libero_oracle import LiberoOracle

        return LiberoOracle(env, task_id, chunk_size=chunk_size)
    from policies.torch_policy import TorchPolicy, default_weights

    return TorchPolicy.load(weights or default_weights(env))


__all__ = ["Policy", "PolicyName", "make_policy"]
