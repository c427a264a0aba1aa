"""The client side of openpi's websocket protocol, as its own server speaks it.

openpi `src/openpi/serving/websocket_policy_server.py` (packaged as `openpi-server`) and
`packages/openpi-client/src/openpi_client/websocket_client_policy.py`: on connect the
server sends one binary msgpack frame, its metadata dict; then every binary frame we send
(an observation dict) is answered by one binary frame, the policy's output dict with
`server_timing` added. When the policy raises, the server sends the traceback as a TEXT
frame and closes with 1011, so every error also ends the connection: the next `act`
reconnects. Arrays travel as openpi_client's msgpack-numpy maps (`msgpack_numpy`).

openpi's metadata is free-form (`TrainConfig.policy_metadata`, e.g. a `reset_pose`): where
it declares `action_dim` or `action_horizon` (the names of openpi's model config fields),
they set the spec and must agree with the config; elsewhere the config says.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import websockets.exceptions
import websockets.sync.client

from policies.remote.base import (
    ModelInput,
    RemoteError,
    RemoteSpec,
    RemoteUnavailable,
    SpecMismatch,
    abort_websocket,
)
from policies.remote.msgpack_numpy import packb_openpi, unpackb_openpi

log = logging.getLogger(__name__)

STATE_KEY = "observation/state"
PROMPT_KEY = "prompt"
ACTIONS_KEY = "actions"
ERROR_CLOSE_CODE = 1011
"""The server's close code after it sent a traceback (`CloseCode.INTERNAL_ERROR`)."""

MAX_REPLY_BYTES = 64 * 2**20
"""Largest frame accepted from the server (openpi sets none; a reply is a few KB)."""

_CLOSE_WAIT_S = 1.0
"""How long to wait for the close frame that follows a traceback."""


def observation_dict(model_input: ModelInput) -> dict[str, object]:
    """The observation as openpi's LIBERO client sends it (`examples/libero/main.py`): the
    images under their own names (`observation/image`, `observation/wrist_image`), the
    state as `observation/state`, the prompt as `prompt`, then `model_input.extra`.

    Raises:
        ValueError: an `extra` key collides with one of the above.
    """
    obs: dict[str, object] = dict(model_input.images)
    if model_input.state is not None:
        obs[STATE_KEY] = model_input.state
    obs[PROMPT_KEY] = model_input.prompt
    clash = sorted(set(obs) & set(model_input.extra))
    if clash:
        raise ValueError(f"ModelInput.extra keys {clash} collide with the observation's own")
    obs.update(model_input.extra)
    return obs


def encode_observation(model_input: ModelInput) -> bytes:
    """The request frame: `openpi_client.msgpack_numpy.packb(observation_dict(...))`."""
    return packb_openpi(observation_dict(model_input))


class OpenpiAdapter:
    """An `Adapter` for a server running openpi's `WebsocketPolicyServer`."""

    def __init__(self, *, url: str, action_dim: int | None = None,
                 chunk_size: int | None = None, model_id: str | None = None,
                 timeout_s: float = 10.0) -> None:
        """Args:
            url: `ws://host:port` of the server.
            action_dim: actions' width the config expects (checked against the metadata).
            chunk_size: actions per reply (the model's `action_horizon`), needed unless the
                metadata declares `action_horizon`.
            model_id: the model's id (openpi's handshake has none); default `openpi@url`.
            timeout_s: the longest the reply to one request may take (seconds).
        """
        for name, value in (("action_dim", action_dim), ("chunk_size", chunk_size)):
            if value is not None and value < 1:
                raise ValueError(f"{name}={value}: must be >= 1 (or None to take it from "
                                 "the server's metadata)")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s={timeout_s}: must be > 0")
        self._url = url
        self._action_dim = action_dim
        self._chunk_size = chunk_size
        self._model_id = model_id or f"openpi@{url}"
        self._timeout_s = timeout_s
        self._connect_timeout_s = timeout_s
        self._ws: websockets.sync.client.ClientConnection | None = None
        self._spec: RemoteSpec | None = None
        self.last_details: dict[str, object] = {}
        """The last reply's fields other than `actions` (`server_timing`, and openpi's
        `policy_timing` where the policy adds it)."""

    def connect(self, timeout_s: float) -> RemoteSpec:
        """Open the websocket and read the metadata frame.

        Raises:
            RemoteUnavailable: no connection or no metadata within `timeout_s`.
            RemoteError: the first frame is not an openpi metadata dict.
            SpecMismatch: the metadata's `action_dim`/`action_horizon` contradict the config.
            ValueError: neither the config nor the metadata gives the chunk size.
        """
        self._connect_timeout_s = timeout_s
        self.close()
        metadata = self._open(timeout_s)
        try:
            self._spec = self._resolve_spec(metadata)
        except ValueError:
            self._drop()
            raise
        return self._spec

    def reset(self, *, prompt: str) -> None:
        """No-op: openpi's protocol has no episode boundary (its client's `reset` sends
        nothing); the prompt travels in every observation."""

    def act(self, model_input: ModelInput) -> np.ndarray:
        """Send one observation, block for its reply: (chunk_size, action_dim) float32.

        Raises:
            RemoteError: the server sent a traceback (the message is its last line; the
                whole traceback is a note on the exception), an undecodable reply, or one
                without `actions` of the spec's shape.
            RemoteUnavailable: no connection, or no reply within `timeout_s`.
        """
        frame = encode_observation(model_input)
        ws = self._ensure_connected()
        try:
            ws.send(frame)
            reply = ws.recv(timeout=self._timeout_s)
        except TimeoutError as exc:
            self._drop(abort=True)  # a late reply would answer the next request
            raise RemoteUnavailable(f"openpi server {self._url}: no reply within "
                                    f"{self._timeout_s} s") from exc
        except (websockets.exceptions.ConnectionClosed, OSError) as exc:
            self._drop()
            raise RemoteUnavailable(f"openpi server {self._url}: connection lost "
                                    f"({exc})") from exc
        if isinstance(reply, str):
            raise self._traceback_error(ws, reply)
        return self._actions(reply)

    def close(self) -> None:
        """Close the websocket; idempotent."""
        self._drop()

    def _open(self, timeout_s: float) -> dict:
        """Connect and return the metadata; on any failure the socket is closed."""
        deadline = time.monotonic() + timeout_s
        try:
            ws = websockets.sync.client.connect(
                self._url, open_timeout=timeout_s, compression=None,
                max_size=MAX_REPLY_BYTES, proxy=None, ping_interval=None,
                close_timeout=_CLOSE_WAIT_S, legacy=True)  # we own its lifetime
        except websockets.exceptions.InvalidURI as exc:
            raise ValueError(f"url={self._url!r}: not a ws:// address") from exc
        except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
            raise RemoteUnavailable(f"openpi server {self._url}: cannot connect within "
                                    f"{timeout_s} s ({exc})") from exc
        try:
            first = ws.recv(timeout=max(deadline - time.monotonic(), 0.001))
        except (TimeoutError, websockets.exceptions.ConnectionClosed, OSError) as exc:
            ws.close()
            raise RemoteUnavailable(f"openpi server {self._url}: no metadata frame within "
                                    f"{timeout_s} s ({exc})") from exc
        try:
            metadata = unpackb_openpi(first) if isinstance(first, bytes) else None
        except ValueError:
            metadata = None
        if not isinstance(metadata, dict):
            ws.close()
            raise RemoteError(f"{self._url}: the first frame is not an openpi metadata dict "
                              f"({type(first).__name__} of {len(first)}): not an openpi "
                              "server?")
        self._ws = ws
        return metadata

    def _resolve_spec(self, metadata: dict) -> RemoteSpec:
        declared = {}
        for key, configured, name in (("action_dim", self._action_dim, "action_dim"),
                                      ("action_horizon", self._chunk_size, "chunk_size")):
            value = metadata.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or value < 1):
                raise SpecMismatch(f"openpi server {self._url} declares {key}={value!r}: "
                                   "not a positive int")
            if value is not None and configured is not None and value != configured:
                raise SpecMismatch(f"openpi server {self._url} declares {key}={value}, the "
                                   f"config says {name}={configured}")
            declared[name] = value if value is not None else configured
            if declared[name] is None:
                raise ValueError(f"openpi server {self._url}: set {name} (its metadata "
                                 f"declares no {key}; it has {sorted(map(str, metadata))})")
        return RemoteSpec(action_dim=int(declared["action_dim"]),
                          chunk_size=int(declared["chunk_size"]),
                          model_id=self._model_id, details={"metadata": metadata})

    def _ensure_connected(self) -> websockets.sync.client.ClientConnection:
        if self._spec is None:
            self.connect(self._connect_timeout_s)
        elif self._ws is None:
            metadata = self._open(self._connect_timeout_s)
            try:
                spec = self._resolve_spec(metadata)
            except ValueError as exc:
                self._drop()
                raise RemoteError(f"openpi server {self._url} came back with another "
                                  f"spec: {exc}") from exc
            if spec != self._spec:
                self._drop()
                raise RemoteError(f"openpi server {self._url} came back with {spec}, "
                                  f"was {self._spec}")
            log.info("reconnected to openpi server %s", self._url)
        assert self._ws is not None
        return self._ws

    def _traceback_error(self, ws: websockets.sync.client.ClientConnection,
                         text: str) -> RemoteError:
        """The error for a traceback frame; reads the close that follows it."""
        code = None
        try:
            ws.recv(timeout=_CLOSE_WAIT_S)
        except websockets.exceptions.ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else None
        except (TimeoutError, OSError):
            pass
        self._drop()
        lines = [line for line in text.strip().splitlines() if line.strip()]
        last = lines[-1].strip() if lines else "(empty traceback)"
        error = RemoteError(f"openpi server {self._url} failed (close {code}): {last}")
        error.add_note(text)
        return error

    def _actions(self, frame: bytes) -> np.ndarray:
        try:
            reply = unpackb_openpi(frame)
        except ValueError as exc:
            raise RemoteError(f"openpi server {self._url}: {exc}") from exc
        if not isinstance(reply, dict) or ACTIONS_KEY not in reply:
            keys = sorted(map(str, reply)) if isinstance(reply, dict) else type(reply).__name__
            raise RemoteError(f"openpi server {self._url}: reply without actions ({keys})")
        actions = np.asarray(reply[ACTIONS_KEY])
        assert self._spec is not None
        expected = (self._spec.chunk_size, self._spec.action_dim)
        if actions.shape != expected or actions.dtype.kind not in "biuf":
            raise RemoteError(f"openpi server {self._url}: actions of shape "
                              f"{list(actions.shape)} ({actions.dtype}), expected "
                              f"{list(expected)}")
        self.last_details = {k: v for k, v in reply.items() if k != ACTIONS_KEY}
        return actions.astype(np.float32)

    def _drop(self, *, abort: bool = False) -> None:
        """Forget the connection; `abort`: without the closing handshake (a silent link
        would make it wait out its timeout: `abort_websocket`)."""
        ws, self._ws = self._ws, None
        if ws is not None:
            if abort:
                abort_websocket(ws)
            else:
                ws.close()
