"""The client side of vla-eval's websocket protocol (vla-eval 0.8.0), as its model servers
(`vla_eval/model_servers/serve.py`) speak it.

Every frame is a msgpack envelope `{type, payload, seq, timestamp}`
(`vla_eval/protocol/messages.py`, protocol version 1). We send HELLO and read the server's
HELLO (its class name and, where the server declares them, `action_spec` and
`observation_spec` as `DimSpec.to_dict()` maps); then EPISODE_START, one OBSERVATION per
step answered by an ACTION (or an ERROR, the connection staying open) with the same seq,
and EPISODE_END. Arrays travel as STR-keyed maps and images as `__image__` maps
(`msgpack_numpy`).

A server with server-side chunking (`PredictModelServer(chunk_size=N)`, the default of
vla-eval's own model servers: pi0 10, OpenVLA-OFT 10, GR00T 16, ...) keeps the chunk to itself
and answers each observation with one action of shape (action_dim,), the next of its buffer:
our chunk_size 1 (`policy.reply_chunk` unset), which the robot needs to run
`client=synchronous` (asynchronously each action would arrive after its tick and be trimmed).
Without it (`chunk_size=None`), the reply is what `predict` returned, a chunk of H actions:
chunk_size H. The HELLO does not say which (vla-eval 0.8.0 sends `capabilities={}`, and its
`/config` lists only batching), so the first ACTION is where a configured chunk is found
wrong: `ReplyChunkMismatch`, naming the settings that fit the server.
"""

from __future__ import annotations

import enum
import logging
import time
from importlib import metadata as _metadata

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
from policies.remote.msgpack_numpy import (
    ImageFormat,
    encode_image,
    packb_vla_eval,
    unpackb_vla_eval,
)

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
"""`vla_eval.protocol.messages.PROTOCOL_VERSION` that this module speaks."""

MAX_REPLY_BYTES = 64 * 2**20
"""Largest frame accepted from the server (an ACTION is a few KB)."""

_CLOSE_TIMEOUT_S = 1.0


class ReplyChunkMismatch(RemoteError):
    """The server's ACTIONs carry another number of actions than the configured chunk: the
    config was written for the other kind of server (with or without server-side chunking).
    The message gives the settings that fit the server's kind."""


class MessageType(enum.StrEnum):
    """`vla_eval.protocol.messages.MessageType`."""

    hello = "hello"
    observation = "observation"
    action = "action"
    episode_start = "episode_start"
    episode_end = "episode_end"
    error = "error"


def observation_payload(model_input: ModelInput, image_format: ImageFormat) -> dict:
    """An OBSERVATION payload as vla-eval's benchmarks build it (`vla_eval/types.py`):
    `images` by camera name, `task_description`, `state` (when there is one), then
    `model_input.extra`.

    Raises:
        ValueError: an image is not HxWx3 uint8, or an `extra` key collides.
    """
    payload: dict[str, object] = {
        "images": {name: encode_image(image, image_format)
                   for name, image in model_input.images.items()},
        "task_description": model_input.prompt}
    if model_input.state is not None:
        payload["state"] = model_input.state
    clash = sorted(set(payload) & set(model_input.extra))
    if clash:
        raise ValueError(f"ModelInput.extra keys {clash} collide with the observation's own")
    payload.update(model_input.extra)
    return payload


def encode_envelope(kind: MessageType, payload: dict, *, seq: int, timestamp: float) -> bytes:
    """One frame: `vla_eval.protocol.messages.pack_message`, byte for byte."""
    return packb_vla_eval({"type": MessageType(kind).value, "payload": payload, "seq": seq,
                           "timestamp": timestamp})


def decode_envelope(frame: bytes | str) -> tuple[MessageType, dict, int]:
    """(type, payload, seq) of one frame.

    Raises:
        ValueError: not a vla-eval envelope.
    """
    if not isinstance(frame, bytes):
        raise ValueError(f"a text frame ({frame[:80]!r}): vla-eval sends binary frames")
    raw = unpackb_vla_eval(frame)
    if not isinstance(raw, dict) or not {"type", "payload", "seq"} <= raw.keys():
        keys = sorted(map(str, raw)) if isinstance(raw, dict) else type(raw).__name__
        raise ValueError(f"not a vla-eval envelope ({keys})")
    try:
        kind = MessageType(raw["type"])
    except ValueError as exc:
        raise ValueError(f"unknown message type {raw['type']!r}") from exc
    if not isinstance(raw["payload"], dict) or not isinstance(raw["seq"], int):
        raise ValueError(f"{kind} envelope with payload {type(raw['payload']).__name__} and "
                         f"seq {raw['seq']!r}")
    return kind, raw["payload"], raw["seq"]


def declared_action_dim(hello: dict) -> int | None:
    """The action width a HELLO reply declares: the sum of its `action_spec` components'
    dims; None without a spec or with a component of unknown width (dims 0)."""
    spec = hello.get("action_spec")
    if not isinstance(spec, dict) or not spec:
        return None
    dims = [part.get("dims") if isinstance(part, dict) else None for part in spec.values()]
    if not all(isinstance(d, int) and d > 0 for d in dims):
        return None
    return sum(dims)


def _client_version() -> str:
    try:
        return f"robot-policy-harness {_metadata.version('robot-policy-harness')}"
    except _metadata.PackageNotFoundError:
        return "robot-policy-harness"


class VlaEvalAdapter:
    """An `Adapter` for a vla-eval model server (any `ModelServer` run by `serve`)."""

    def __init__(self, *, url: str, action_dim: int | None = None, chunk_size: int = 1,
                 model_id: str | None = None, image_format: str = "png",
                 timeout_s: float = 10.0) -> None:
        """Args:
            url: `ws://host:port` of the server.
            action_dim: actions' width the config expects (checked against `action_spec`).
            chunk_size: actions per reply: 1 for a server that chunks itself (vla-eval's
                default), else the model's chunk.
            model_id: the model's id; default the server's class name from its HELLO.
            image_format: png (vla-eval's default), jpeg or raw.
            timeout_s: the longest the reply to one request may take (seconds).
        """
        if action_dim is not None and action_dim < 1 or chunk_size < 1:
            raise ValueError(f"action_dim={action_dim}, chunk_size={chunk_size}: must be >= 1")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s={timeout_s}: must be > 0")
        self._url = url
        self._action_dim = action_dim
        self._chunk_size = chunk_size
        self._model_id = model_id
        self._image_format = ImageFormat(image_format)
        self._timeout_s = timeout_s
        self._connect_timeout_s = timeout_s
        self._ws: websockets.sync.client.ClientConnection | None = None
        self._spec: RemoteSpec | None = None
        self._seq = 0
        self._prompt: str | None = None
        """The open episode's prompt (None: no episode open)."""

    def connect(self, timeout_s: float) -> RemoteSpec:
        """Open the websocket and exchange HELLO.

        Raises:
            RemoteUnavailable: no connection or no HELLO reply within `timeout_s`.
            RemoteError: the reply is not a vla-eval HELLO.
            SpecMismatch: another protocol version, or an `action_spec` whose width
                contradicts the configured action_dim.
            ValueError: neither the config nor the server gives the action width.
        """
        self._connect_timeout_s = timeout_s
        self.close()
        self._prompt = None
        hello = self._open(timeout_s)
        try:
            self._spec = self._resolve_spec(hello)
        except ValueError:
            self.close()
            raise
        return self._spec

    def reset(self, *, prompt: str) -> None:
        """End the open episode (EPISODE_END, an empty result: the harness keeps its own) and
        start one (EPISODE_START with `{"task": {"name": prompt}}`); nothing is answered.

        Raises:
            RemoteUnavailable: the connection is gone and cannot be opened again.
        """
        if self._ws is None:
            self._prompt = None  # that episode died with its session
        self._ensure_connected()
        if self._prompt is not None:
            self._send(MessageType.episode_end, {})
        self._send(MessageType.episode_start, {"task": {"name": prompt}})
        self._prompt = prompt

    def act(self, model_input: ModelInput) -> np.ndarray:
        """Send one OBSERVATION, block for its ACTION: (chunk_size, action_dim) float32.

        Raises:
            RemoteError: the server sent an ERROR for it (or for the EPISODE_START before
                it), an undecodable reply, or actions not of the spec's shape
                (`ReplyChunkMismatch` if only their number differs).
            RemoteUnavailable: no connection, or no reply within `timeout_s`.
        """
        payload = observation_payload(model_input, self._image_format)
        self._ensure_connected()
        deadline = time.monotonic() + self._timeout_s
        seq = self._send(MessageType.observation, payload)
        errors = []  # an EPISODE_START's error comes before this observation's reply
        while True:
            kind, reply, reply_seq = self._recv(deadline)
            if kind is MessageType.error:
                errors.append(str(reply.get("error", reply)))
            if reply_seq == seq:
                break
            log.debug("vla-eval server %s: passed %s for seq %d", self._url, kind, reply_seq)
        if errors:
            raise RemoteError(f"vla-eval server {self._url}: {'; '.join(errors)}")
        if kind is not MessageType.action:
            raise RemoteError(f"vla-eval server {self._url}: {kind} in reply to an observation")
        return self._actions(reply)

    def close(self) -> None:
        """Close the websocket; idempotent. An open episode is not ended (the server ends a
        session's episode itself when its connection closes)."""
        ws, self._ws = self._ws, None
        if ws is not None:
            ws.close()

    def _open(self, timeout_s: float) -> dict:
        """Connect and exchange HELLO; returns the server's HELLO payload."""
        deadline = time.monotonic() + timeout_s
        try:
            self._ws = websockets.sync.client.connect(
                self._url, open_timeout=timeout_s, compression=None,
                max_size=MAX_REPLY_BYTES, proxy=None, ping_interval=None,
                close_timeout=_CLOSE_TIMEOUT_S, legacy=True)  # we own its lifetime
        except websockets.exceptions.InvalidURI as exc:
            raise ValueError(f"url={self._url!r}: not a ws:// address") from exc
        except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
            raise RemoteUnavailable(f"vla-eval server {self._url}: cannot connect within "
                                    f"{timeout_s} s ({exc})") from exc
        seq = self._send(MessageType.hello, {"harness_version": _client_version(),
                                             "protocol_version": PROTOCOL_VERSION})
        kind, hello, reply_seq = self._recv(deadline)
        if kind is not MessageType.hello or reply_seq != seq:
            self.close()
            raise RemoteError(f"vla-eval server {self._url}: {kind} (seq {reply_seq}) in reply "
                              f"to HELLO (seq {seq})")
        return hello

    def _resolve_spec(self, hello: dict) -> RemoteSpec:
        version = hello.get("protocol_version")
        if version != PROTOCOL_VERSION:
            raise SpecMismatch(f"vla-eval server {self._url} speaks protocol_version="
                               f"{version!r}, this adapter {PROTOCOL_VERSION}")
        declared = declared_action_dim(hello)
        if declared is not None and self._action_dim is not None and declared != self._action_dim:
            raise SpecMismatch(f"vla-eval server {self._url} declares an action_spec of "
                               f"{declared} dims ({hello['action_spec']}), the config says "
                               f"action_dim={self._action_dim}")
        action_dim = declared if declared is not None else self._action_dim
        if action_dim is None:
            raise ValueError(f"vla-eval server {self._url}: set action_dim (its HELLO "
                             "declares no action_spec)")
        model_id = self._model_id or str(hello.get("model_server", f"vla-eval@{self._url}"))
        return RemoteSpec(action_dim=action_dim, chunk_size=self._chunk_size,
                          model_id=model_id, details={"hello": hello})

    def _ensure_connected(self) -> None:
        """Reopen a lost connection; inside an episode, start it again on the new session
        (the server keeps episodes per connection), so the model's history restarts."""
        if self._spec is None:
            self.connect(self._connect_timeout_s)
            return
        if self._ws is not None:
            return
        hello = self._open(self._connect_timeout_s)
        try:
            spec = self._resolve_spec(hello)
        except ValueError as exc:
            self.close()
            raise RemoteError(f"vla-eval server {self._url} came back with another spec: "
                              f"{exc}") from exc
        if spec != self._spec:
            self.close()
            raise RemoteError(f"vla-eval server {self._url} came back with {spec}, was "
                              f"{self._spec}")
        log.info("reconnected to vla-eval server %s", self._url)
        if self._prompt is not None:
            self._send(MessageType.episode_start, {"task": {"name": self._prompt}})

    def _send(self, kind: MessageType, payload: dict) -> int:
        assert self._ws is not None
        self._seq += 1
        frame = encode_envelope(kind, payload, seq=self._seq, timestamp=time.time())
        try:
            self._ws.send(frame)
        except (websockets.exceptions.ConnectionClosed, OSError) as exc:
            self._abort()
            raise RemoteUnavailable(f"vla-eval server {self._url}: connection lost "
                                    f"({exc})") from exc
        return self._seq

    def _abort(self) -> None:
        """Drop the connection without the closing handshake: on a silent link (a partition,
        a hung server) the handshake would wait out `_CLOSE_TIMEOUT_S` on top of the
        request's timeout. The server sees the TCP connection end, and ends its episode."""
        ws, self._ws = self._ws, None
        if ws is not None:
            abort_websocket(ws)

    def _recv(self, deadline: float) -> tuple[MessageType, dict, int]:
        assert self._ws is not None
        try:
            frame = self._ws.recv(timeout=max(deadline - time.monotonic(), 0.001))
        except TimeoutError as exc:
            self._abort()  # a late reply would answer the next request
            raise RemoteUnavailable(f"vla-eval server {self._url}: no reply within "
                                    f"{self._timeout_s} s") from exc
        except (websockets.exceptions.ConnectionClosed, OSError) as exc:
            self._abort()
            raise RemoteUnavailable(f"vla-eval server {self._url}: connection lost "
                                    f"({exc})") from exc
        try:
            return decode_envelope(frame)
        except ValueError as exc:
            self.close()
            raise RemoteError(f"vla-eval server {self._url}: {exc}") from exc

    def _actions(self, reply: dict) -> np.ndarray:
        actions = np.asarray(reply.get("actions"))
        if actions.ndim == 1:
            actions = actions[None]  # one action per observation
        assert self._spec is not None
        chunk, width = self._spec.chunk_size, self._spec.action_dim
        if (actions.ndim != 2 or not actions.shape[0] or actions.shape[1] != width
                or actions.dtype.kind not in "biuf"):
            raise RemoteError(f"vla-eval server {self._url}: actions of shape "
                              f"{list(actions.shape)} ({actions.dtype}), expected "
                              f"{[chunk, width]}")
        if actions.shape[0] != chunk:
            raise ReplyChunkMismatch(chunk_fix(self._url, chunk, actions.shape[0]))
        return actions.astype(np.float32)


def chunk_fix(url: str, configured: int, replied: int) -> str:
    """What a reply of `replied` actions, against a configured chunk of `configured`, says
    about the server, and the settings that fit it (one line, for the run's error)."""
    if replied == 1:
        return (f"vla-eval server {url} answers one action per observation, not a chunk of "
                f"{configured} (it chunks itself: PredictModelServer(chunk_size=N), the "
                "default of vla-eval's model servers): set policy.reply_chunk=1 (or leave it "
                "unset) and client=synchronous")
    return (f"vla-eval server {url} answers chunks of {replied} actions, not {configured} (it "
            "does not chunk itself: PredictModelServer(chunk_size=None)): set "
            f"policy.reply_chunk={replied} (and policy.chunk_size <= {replied})")
