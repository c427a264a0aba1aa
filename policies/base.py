"""The policy interface the server hosts, and the check that a policy fits an env.

A policy declares what it consumes and emits in a `PolicySpec`; the server validates every
session against it, and `check_compatible` names the first field that disagrees, so a
mismatch fails before the first step instead of as a silently wrong action.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from envs.base import ArrayField, EnvObservation, EnvSpec


class SpecMismatch(ValueError):
    """A policy and an env (or a client) disagree on a field; the message names it."""


@dataclass(frozen=True)
class PolicySpec:
    model_id: str
    action_names: tuple[str, ...]
    state: dict[str, ArrayField]
    """Observation entries the policy reads (a subset of what the env provides)."""
    images: dict[str, tuple[int, int]] = field(default_factory=dict)
    control_hz: float = 20.0
    chunk_size: int = 8
    """Actions per predicted chunk; chunk k is meant for ticks t, t+1, ..., t+chunk_size-1."""


class Policy(Protocol):
    spec: PolicySpec

    def reset(self, *, seed: int) -> None:
        """Called once before each episode; clears any per-episode state."""

    def predict(self, observation: EnvObservation) -> np.ndarray:
        """Return an action chunk of shape (chunk_size, action_dim), float32.

        May keep per-episode state (a scripted plan's phase); the server therefore gives
        each session its own instance.
        """


def check_compatible(policy: PolicySpec, env: EnvSpec) -> None:
    """Raise SpecMismatch naming the first field where `policy` cannot drive `env`."""
    if policy.action_names != env.action_names:
        raise SpecMismatch(f"action_names: policy {list(policy.action_names)} != env "
                           f"{list(env.action_names)} (names and order must match)")
    for key, wanted in policy.state.items():
        have = env.state.get(key)
        if have is None:
            raise SpecMismatch(f"state[{key!r}]: the policy reads it, the env has only "
                               f"{sorted(env.state)}")
        if have != wanted:
            raise SpecMismatch(f"state[{key!r}]: policy expects {wanted}, env gives {have}")
    for camera, size in policy.images.items():
        if camera not in env.images:
            raise SpecMismatch(f"images[{camera!r}]: the policy needs it, the env renders "
                               f"{sorted(env.images)}")
        if tuple(env.images[camera]) != tuple(size):
            raise SpecMismatch(f"images[{camera!r}]: policy expects {tuple(size)}, env renders "
                               f"{tuple(env.images[camera])}")
    if abs(policy.control_hz - env.control_hz) > 1e-9:
        raise SpecMismatch(f"control_hz: policy {policy.control_hz} != env {env.control_hz}")
    if policy.chunk_size < 1:
        raise SpecMismatch(f"chunk_size: {policy.chunk_size} must be >= 1")
