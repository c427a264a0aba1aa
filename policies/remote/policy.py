"""A policy whose model runs on someone else's server (`policy=remote`).

Our policy server hosts it like any other policy: each session gets its own instance and so
its own connection to the external server; its spec is the robot's contract narrowed to what
the model family reads (`Convention.reads`), with the chunk the external server returns
(cut to `policy.chunk_size`) and its model id. A failure of the external server raises
from `predict`, which our server answers as an inference error: the client counts it as a
server error and its fail-safe path holds; nothing the external server did not send is
executed.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from harness.protocol.contract import Contract
from policies.remote.base import Adapter, Convention, RemoteError, SpecMismatch

log = logging.getLogger(__name__)


class RemotePolicy:
    """`Policy` over an `Adapter`, with a `Convention` on either side of it."""

    warm_up = False
    """Our server does not warm it: the model is warm on its own server, and a blank
    observation (no instruction) would reach that server as a real request."""

    def __init__(self, adapter: Adapter, convention: Convention, robot: Contract, *,
                 chunk_size: int, connect_timeout_s: float) -> None:
        self._adapter = adapter
        self._convention = convention
        remote = adapter.connect(connect_timeout_s)
        if remote.action_dim != robot.action_dim:
            raise SpecMismatch(f"action_dim: the external model {remote.model_id!r} returns "
                               f"{remote.action_dim}, the env takes {robot.action_dim} "
                               f"({list(robot.action_names)})")
        self.remote = remote
        self._use = min(chunk_size, remote.chunk_size)
        state, images = convention.reads()
        missing = sorted(set(state) - set(robot.state)) + sorted(set(images) - set(robot.images))
        if missing:
            raise ValueError(f"policy.convention: the model reads {missing}, which the env "
                             f"does not give (state {sorted(robot.state)}, images "
                             f"{sorted(robot.images)}; set env.cameras)")
        self.spec = dataclasses.replace(
            robot, state={k: robot.state[k] for k in state},
            images={c: robot.images[c] for c in images}, chunk_size=self._use,
            model_id=remote.model_id, delay_aware=False)
        self._episode_open = False
        log.info("remote model %s: %d action(s) per reply, %d used per chunk (%s)",
                 remote.model_id, remote.chunk_size, self._use, remote.details or "no details")

    def reset(self, *, seed: int) -> None:
        """The episode's start reaches the external server with its first observation (the
        prompt is known only then)."""
        self._episode_open = False

    def predict(self, observation, committed: np.ndarray | None = None) -> np.ndarray:
        model_input = self._convention.model_input(observation)
        if not self._episode_open:
            self._adapter.reset(prompt=model_input.prompt)
            self._episode_open = True
        actions = np.asarray(self._convention.env_actions(self._adapter.act(model_input)),
                             np.float32)
        expected = (self.remote.chunk_size, self.spec.action_dim)
        if actions.shape != expected:
            raise RemoteError(f"{self.remote.model_id}: reply of shape {list(actions.shape)}, "
                              f"expected {list(expected)}")
        if not np.isfinite(actions).all():
            raise RemoteError(f"{self.remote.model_id}: non-finite actions in the reply")
        return actions[:self._use].copy()

    def close(self) -> None:
        self._adapter.close()
