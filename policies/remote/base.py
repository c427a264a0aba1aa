"""The seam between our policy server and a model server someone already runs.

A `RemotePolicy` (`policies.remote.policy`) is hosted by our server like any other policy, so
sessions, the mailbox, metrics, the client engine and the invariant checks stay as they
are; its predict goes over an `Adapter` to the external server. An adapter speaks one
protocol's wire (openpi's websocket, vla-eval's, OpenVLA's HTTP `/act`, SGLang's
`/generate`) and nothing else: what the model family expects to see (image orientation and
size, state layout, prompt template, gripper sign) is a `Convention`
(`policies.remote.conventions`), applied before the adapter and after it, so the same
convention serves a model whichever server hosts it, and each is tested against a known
input.
"""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from envs.base import EnvObservation


class RemoteError(RuntimeError):
    """The external server answered with an error (openpi's traceback frame, vla-eval's
    error message, deploy.py's HTTP 200 body "error", an HTTP error status, a reply of the
    wrong shape): the request is failed, never executed."""


class RemoteUnavailable(RemoteError):
    """No answer from the external server: refused, timed out, or the connection dropped.
    The adapter reconnects on its next call."""


class SpecMismatch(ValueError):
    """What the external server declares (its handshake) differs from what the config says
    it serves; names both."""


@dataclass(frozen=True)
class RemoteSpec:
    """What the external model produces per request, from its handshake where the protocol
    has one (openpi's metadata frame, vla-eval's hello) and from config where it has not."""

    action_dim: int
    chunk_size: int
    """Actions per reply: 1 for a server that answers one action per observation."""
    model_id: str
    details: dict[str, object] = field(default_factory=dict)
    """What else the handshake said (server metadata, declared specs), for the log."""


@dataclass(frozen=True)
class ModelInput:
    """One observation as the model family expects it, before any wire encoding: images
    already oriented and resized, the state already laid out, the prompt already templated
    (`Convention.model_input`)."""

    images: dict[str, np.ndarray]
    """name -> HxWx3 uint8, in the names the family uses (e.g. `observation/image`)."""
    state: np.ndarray | None
    prompt: str
    extra: dict[str, object] = field(default_factory=dict)
    """Protocol-specific values the config supplies (e.g. OpenVLA's `unnorm_key`)."""


class Convention(Protocol):
    """What one model family expects to see and what its actions mean, against our envs'
    observations (images upright, `envs.base.EnvObservation`) and actions."""

    def reads(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(state keys, camera names) of our env's observation that `model_input` uses: what
        the hosted policy's contract asks of the robot."""

    def model_input(self, observation: EnvObservation) -> ModelInput:
        """The observation as the family was trained on it (orientation, size, state
        layout, prompt template)."""

    def env_actions(self, raw: np.ndarray) -> np.ndarray:
        """The model's (H, model action_dim) output as (H, env action_dim) float32 env
        actions (e.g. OpenVLA's gripper in [0, 1], 1 open, to LIBERO's [-1, 1], -1 open)."""


class Adapter(Protocol):
    """A client of one external server. Not thread-safe: each session has its own policy
    instance and so its own adapter."""

    def connect(self, timeout_s: float) -> RemoteSpec:
        """Reach the server and read its handshake (or check it answers).

        Raises:
            RemoteUnavailable: it did not answer within `timeout_s`.
            SpecMismatch: its declared spec contradicts the config.
        """

    def reset(self, *, prompt: str) -> None:
        """A new episode starts (vla-eval's episode_start, AutoEval's reset; a no-op where
        the protocol has none)."""

    def act(self, model_input: ModelInput) -> np.ndarray:
        """The model's raw output for `model_input`: (H, action_dim) float32, H the reply's
        chunk (1 for a single action), in the model's own action convention.

        Raises:
            RemoteError: the server answered with an error.
            RemoteUnavailable: it did not answer (the next call reconnects).
        """

    def close(self) -> None:
        """Release the connection; idempotent."""


def abort_websocket(ws) -> None:
    """Drop a websocket connection without the closing handshake: on a silent link (a
    partition, a hung server) the handshake would wait out its close timeout on top of the
    request's, and our server would answer after the robot gave up. The peer sees the TCP
    connection end."""
    with contextlib.suppress(OSError):
        ws.socket.shutdown(socket.SHUT_RDWR)
    ws.close()
