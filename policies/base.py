"""The policy interface the server hosts.

A policy declares what it consumes and emits as a `Contract` (`harness.protocol.contract`),
from its own config and weights, never by building an env: a server hosting a learned model
loads no simulator. The server checks every session against it with `check_contract`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np

from envs.base import EnvObservation
from harness.protocol.contract import Contract


class Policy(Protocol):
    spec: Contract
    """The model's side of the contract: `model_id`, `chunk_size`, the state and images it
    reads, and `delay_aware`: whether it plans from a committed prefix."""

    # Optional: `warm_up = False` on a policy the server must not warm with a blank
    # observation at start (a remote model: the blank request would reach its server).

    def reset(self, *, seed: int) -> None:
        """Called once before each episode; clears any per-episode state."""

    def predict(self, observation: EnvObservation,
                committed: np.ndarray | None = None) -> np.ndarray:
        """Return an action chunk of shape (chunk_size, action_dim), float32.

        `committed` (delay-aware policies only; the server passes it to no other): the
        (d, action_dim) actions the robot executes after `observation` and before this
        chunk's first action. The chunk is planned from the state they lead to, and starts
        d ticks after the observation. None or empty: it starts at the observation.

        May keep per-episode state (a scripted plan's phase); the server therefore gives
        each session its own instance.
        """


class BatchItem(NamedTuple):
    """One robot's request in a micro-batch: its own policy instance (the per-episode state:
    noise generator, previous chunk, scripted phase), its observation and its committed
    prefix (None: the chunk starts at the observation; the server gives a prefix only to a
    delay-aware policy, as to `predict`)."""

    policy: Policy
    observation: EnvObservation
    committed: np.ndarray | None = None


@runtime_checkable
class BatchPolicy(Protocol):
    """Optional: a policy that predicts several robots' chunks in one pass (one forward pass
    of a network for all of them). The server's `micro_batch` scheduler calls it on one
    instance of its pool with every robot's item, each naming that robot's own instance; a
    policy without it is served one robot at a time."""

    def predict_batch(self, items: Sequence[BatchItem]) -> list[np.ndarray | Exception]:
        """One chunk per item, in order, each what `item.policy.predict(item.observation,
        item.committed)` would return (up to the last bits of a batched matrix product).
        A robot whose own input fails (features it cannot read) gets its exception in its
        place, and the others their chunks; an exception raised instead fails the pass, and
        the server then serves the batch's robots one by one."""


def predict_or_error(item: BatchItem) -> np.ndarray | Exception:
    """`item.policy.predict` of one robot's request, or the exception it raised: one robot's
    failure is that robot's answer, never its batch's."""
    try:
        if item.committed is None:
            return item.policy.predict(item.observation)
        return item.policy.predict(item.observation, committed=item.committed)
    except Exception as exc:  # noqa: BLE001 - the model failing must not take the server down
        return exc
