"""Policies the server can host behind one interface (`policies.base.Policy`)."""

from __future__ import annotations

from envs.base import EnvSpec
from policies.base import Policy, PolicySpec, SpecMismatch, check_compatible

POLICIES = ("oracle", "torch")


def make_policy(name: str, env_spec: EnvSpec, *, chunk_size: int = 8,
                weights: str | None = None, latency_profile: str = "none",
                seed: int = 0) -> Policy:
    """Build policy `name` for an env of `env_spec`, slowed by `latency_profile` if not "none".

    Raises ValueError naming the policy or env when they do not go together.
    """
    policy = _make_base_policy(name, env_spec, chunk_size=chunk_size, weights=weights)
    if latency_profile == "none":
        return policy
    from policies.slow import SlowPolicy, profile

    return SlowPolicy(policy, profile(latency_profile), seed=seed)


def _make_base_policy(name: str, env_spec: EnvSpec, *, chunk_size: int,
                      weights: str | None) -> Policy:
    if name == "oracle":
        if env_spec.name.startswith("mujoco_"):
            from policies.oracle import MujocoOracle

            return MujocoOracle(env_spec, chunk_size=chunk_size)
        from policies.libero_oracle import LiberoOracle

        return LiberoOracle(env_spec, chunk_size=chunk_size)
    if name == "torch":
        from policies.torch_policy import TorchPolicy, default_weights

        return TorchPolicy.load(weights or default_weights(env_spec.name), env_spec)
    raise ValueError(f"policy.name={name!r}: expected one of {POLICIES}")


__all__ = ["POLICIES", "Policy", "PolicySpec", "SpecMismatch", "check_compatible", "make_policy"]
