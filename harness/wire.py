"""Wire schema: a fixed little-endian header followed by a msgpack body.

The header has a fixed layout so a server can route a message (type, session epoch, episode,
sequence id) and reject it (wrong version, wrong length, oversize) without parsing the body.
The body is msgpack because it is fast, language-neutral and, unlike pickle, cannot execute
code. Arrays travel as dtype (from an allowlist) + shape + raw little-endian bytes; camera
images may travel as JPEG instead.

Every malformed input makes `decode` raise `DecodeError` (or a subclass), never anything else:
a policy server must survive any bytes a network hands it.
"""

from __future__ import annotations

import enum
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgpack
import numpy as np
import simplejpeg

SCHEMA_VERSION = 1
MAGIC = b"RH"
HEADER = struct.Struct("<2sBBHQIIQI")
"""magic, version, message type, flags, seq, episode, epoch, client monotonic ns, body length."""
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_NDIM = 8
MAX_IMAGE_SIDE = 8192
ALLOWED_DTYPES = frozenset(
    np.dtype(name).newbyteorder("<").str
    for name in ("bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64",
                 "int64", "float16", "float32", "float64")
)
_UINT_BITS = {"seq": 64, "episode": 32, "epoch": 32, "client_ns": 64}


class WireError(ValueError):
    """Base of the wire errors."""


class DecodeError(WireError):
    """Bytes that are not a valid message of this schema. The message names the field."""


class UnsupportedVersion(DecodeError):
    """The header's schema version is not one this code speaks."""


class MessageTooLarge(DecodeError):
    """A body is over `max_body_bytes`, on either side: decode rejects it before parsing,
    encode refuses to produce it."""


class EncodeError(WireError):
    """A body that cannot be put on the wire (a dtype outside the allowlist, a wrong type)."""


class MessageType(enum.IntEnum):
    SESSION_OPEN = 1
    SESSION_OK = 2
    SESSION_REJECT = 3
    OBSERVATION = 4
    ACTION_CHUNK = 5
    RESET = 6
    STATUS = 7
    ERROR = 8
    CLOSE = 9


class Flags(enum.IntFlag):
    NONE = 0
    RESPONSE = 1
    """Set on replies: tells a STATUS/RESET/CLOSE request from its acknowledgement."""
    JPEG = 2
    """The observation's images are JPEG-encoded."""


_KNOWN_FLAGS = int(Flags.RESPONSE | Flags.JPEG)


# ---- bodies ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ArraySpec:
    dtype: str
    """numpy dtype name, e.g. "float32"."""
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Capabilities:
    """What one side declares at session open; the server validates the client's against its own."""

    model_id: str
    action_names: tuple[str, ...]
    state: dict[str, ArraySpec]
    images: dict[str, tuple[int, int]]
    """camera -> (height, width) of an RGB uint8 image."""
    control_hz: float
    chunk_size: int


@dataclass(frozen=True)
class SessionOpen:
    client_id: str
    capabilities: Capabilities


@dataclass(frozen=True)
class SessionOk:
    session_id: str
    capabilities: Capabilities


@dataclass(frozen=True)
class SessionReject:
    reason: str
    active_sessions: int
    max_sessions: int


@dataclass(frozen=True, eq=False)
class Observation:
    """Decoded arrays are read-only views into the received buffer; copy before writing."""

    state: dict[str, np.ndarray]
    images: dict[str, np.ndarray]
    """camera -> HxWx3 uint8 RGB."""
    instruction: str


@dataclass(frozen=True, eq=False)
class ActionChunk:
    actions: np.ndarray
    """(steps, action_dim); read-only when decoded."""
    obs_seq: int
    """Sequence id of the observation this chunk answers."""
    queue_wait_ns: int
    """Durations measured by the server; it never sends its own clock's instants."""
    infer_ns: int
    model_id: str


@dataclass(frozen=True)
class Reset:
    reason: str = ""


@dataclass(frozen=True)
class Status:
    fields: dict[str, int | float | str | bool] = field(default_factory=dict)
    """Empty in a request; the server's counters and settings in the reply."""


@dataclass(frozen=True)
class Error:
    code: str
    detail: str


@dataclass(frozen=True)
class Close:
    reason: str = ""


Body = (SessionOpen | SessionOk | SessionReject | Observation | ActionChunk | Reset | Status
        | Error | Close)


@dataclass(frozen=True)
class Header:
    msg_type: MessageType
    seq: int
    episode: int
    epoch: int
    client_ns: int
    flags: Flags
    body_len: int


@dataclass(frozen=True)
class Message:
    body: Body
    seq: int = 0
    episode: int = 0
    epoch: int = 0
    client_ns: int = 0
    """The client's own monotonic clock; a server echoes it untouched."""
    flags: Flags = Flags.NONE

    @property
    def msg_type(self) -> MessageType:
        return _TYPE_OF[type(self.body)]


# ---- arrays and images ----------------------------------------------------------------------

def _pack_array(array: np.ndarray, path: str) -> dict[str, Any]:
    if not isinstance(array, np.ndarray):
        raise EncodeError(f"{path}: expected a numpy array, got {type(array).__name__}")
    dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    if dtype.str not in ALLOWED_DTYPES:
        raise EncodeError(f"{path}: dtype {array.dtype} is not allowed on the wire; "
                          f"use one of {sorted(ALLOWED_DTYPES)}")
    data = np.ascontiguousarray(array, dtype=dtype)
    return {"dtype": dtype.str, "shape": list(array.shape), "data": data.tobytes()}


def _unpack_array(value: Any, path: str) -> np.ndarray:
    item = _map(value, path, {"dtype", "shape", "data"})
    dtype_str = _get(item, "dtype", str, path)
    if dtype_str not in ALLOWED_DTYPES:
        raise DecodeError(f"{path}.dtype: {dtype_str!r} is not in the allowlist")
    shape = _shape(_get(item, "shape", list, path), f"{path}.shape")
    data = _get(item, "data", bytes, path)
    dtype = np.dtype(dtype_str)
    needed = math.prod(shape) * dtype.itemsize
    if needed != len(data):
        raise DecodeError(f"{path}: shape {list(shape)} of {dtype_str} needs {needed} bytes, "
                          f"got {len(data)}")
    if dtype == np.bool_ and data.strip(b"\x00\x01"):
        raise DecodeError(f"{path}: bool array holds bytes other than 0 and 1")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def _shape(value: list, path: str) -> tuple[int, ...]:
    if len(value) > MAX_NDIM:
        raise DecodeError(f"{path}: {len(value)} dimensions, at most {MAX_NDIM} allowed")
    for dim in value:
        if not _is_int(dim) or dim < 0:
            raise DecodeError(f"{path}: dimension {dim!r} is not a non-negative int")
    return tuple(value)


def _pack_image(image: np.ndarray, path: str, jpeg_quality: int | None) -> dict[str, Any]:
    if (not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3
            or image.shape[2] != 3):
        raise EncodeError(f"{path}: expected an HxWx3 uint8 array, got "
                          f"{getattr(image, 'dtype', type(image).__name__)} "
                          f"{getattr(image, 'shape', '')}")
    if jpeg_quality is None:
        return _pack_array(image, path)
    jpeg = simplejpeg.encode_jpeg(np.ascontiguousarray(image), quality=jpeg_quality,
                                  colorspace="RGB")
    return {"jpeg": jpeg, "shape": list(image.shape)}


def _unpack_image(value: Any, path: str) -> np.ndarray:
    if isinstance(value, dict) and "jpeg" in value:
        item = _map(value, path, {"jpeg", "shape"})
        jpeg = _get(item, "jpeg", bytes, path)
        shape = _shape(_get(item, "shape", list, path), f"{path}.shape")
        if len(shape) != 3 or shape[2] != 3 or not all(
                1 <= side <= MAX_IMAGE_SIDE for side in shape[:2]):
            raise DecodeError(f"{path}.shape: {list(shape)} is not an HxWx3 image with sides "
                              f"in 1..{MAX_IMAGE_SIDE}")
        try:
            height, width, _, _ = simplejpeg.decode_jpeg_header(jpeg)
            if (height, width) != shape[:2]:  # checked before decoding: no decompression bombs
                raise DecodeError(f"{path}: JPEG is {height}x{width}, declared {shape[:2]}")
            image = simplejpeg.decode_jpeg(jpeg, colorspace="RGB")
        except DecodeError:
            raise
        except Exception as exc:
            raise DecodeError(f"{path}: invalid JPEG ({exc})") from exc
        if image.shape != shape:
            raise DecodeError(f"{path}: JPEG decoded to {image.shape}, declared {shape}")
        return image
    image = _unpack_array(value, path)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise DecodeError(f"{path}: expected an HxWx3 uint8 image, got {image.dtype} "
                          f"{image.shape}")
    return image


# ---- strict field access --------------------------------------------------------------------

T = TypeVar("T")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _map(value: Any, path: str, keys: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DecodeError(f"{path}: expected a map, got {type(value).__name__}")
    if set(value) != keys:
        missing, extra = sorted(keys - set(value)), sorted(map(str, set(value) - keys))
        raise DecodeError(f"{path}: missing keys {missing}, unexpected keys {extra}")
    return value


def _get(item: dict[str, Any], key: str, kind: type[T], path: str) -> T:
    value = item[key]
    if kind is int:
        ok = _is_int(value)
    elif kind is float:
        ok = isinstance(value, float) or _is_int(value)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise DecodeError(f"{path}.{key}: expected {kind.__name__}, got {type(value).__name__}")
    if kind is float:
        return float(value)  # type: ignore[return-value]
    return value


def _count(item: dict[str, Any], key: str, path: str) -> int:
    value = _get(item, key, int, path)
    if not 0 <= value < 2**63:
        raise DecodeError(f"{path}.{key}: {value} is not a non-negative int64")
    return value


def _str_map(value: Any, path: str, unpack: Callable[[Any, str], T]) -> dict[str, T]:
    if not isinstance(value, dict):
        raise DecodeError(f"{path}: expected a map, got {type(value).__name__}")
    if not all(isinstance(key, str) for key in value):
        raise DecodeError(f"{path}: keys must be strings")
    return {key: unpack(item, f"{path}[{key!r}]") for key, item in value.items()}


def _str_list(value: Any, path: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DecodeError(f"{path}: expected a list of strings")
    return tuple(value)


# ---- bodies <-> msgpack maps ----------------------------------------------------------------

def _pack_capabilities(caps: Capabilities) -> dict[str, Any]:
    return {
        "model_id": caps.model_id,
        "action_names": list(caps.action_names),
        "state": {k: {"dtype": np.dtype(s.dtype).name, "shape": list(s.shape)}
                  for k, s in caps.state.items()},
        "images": {k: list(hw) for k, hw in caps.images.items()},
        "control_hz": float(caps.control_hz),
        "chunk_size": caps.chunk_size,
    }


def _unpack_spec(value: Any, path: str) -> ArraySpec:
    item = _map(value, path, {"dtype", "shape"})
    dtype = _get(item, "dtype", str, path)
    try:
        np_dtype = np.dtype(dtype)
    except TypeError as exc:
        raise DecodeError(f"{path}.dtype: {dtype!r} is not a dtype") from exc
    if np_dtype.newbyteorder("<").str not in ALLOWED_DTYPES:
        raise DecodeError(f"{path}.dtype: {dtype!r} is not in the allowlist")
    return ArraySpec(np_dtype.name, _shape(_get(item, "shape", list, path), f"{path}.shape"))


def _unpack_hw(value: Any, path: str) -> tuple[int, int]:
    if (not isinstance(value, list) or len(value) != 2
            or not all(_is_int(v) and 1 <= v <= MAX_IMAGE_SIDE for v in value)):
        raise DecodeError(f"{path}: expected [height, width] in 1..{MAX_IMAGE_SIDE}")
    return (value[0], value[1])


def _unpack_capabilities(value: Any, path: str) -> Capabilities:
    item = _map(value, path, {"model_id", "action_names", "state", "images", "control_hz",
                              "chunk_size"})
    control_hz = _get(item, "control_hz", float, path)
    if not (math.isfinite(control_hz) and control_hz > 0):
        raise DecodeError(f"{path}.control_hz: {control_hz} is not a positive rate")
    return Capabilities(
        model_id=_get(item, "model_id", str, path),
        action_names=_str_list(item["action_names"], f"{path}.action_names"),
        state=_str_map(item["state"], f"{path}.state", _unpack_spec),
        images=_str_map(item["images"], f"{path}.images", _unpack_hw),
        control_hz=control_hz,
        chunk_size=_count(item, "chunk_size", path),
    )


def _pack_body(body: Body, jpeg_quality: int | None) -> dict[str, Any]:
    if isinstance(body, SessionOpen):
        return {"client_id": body.client_id, "capabilities": _pack_capabilities(body.capabilities)}
    if isinstance(body, SessionOk):
        return {"session_id": body.session_id,
                "capabilities": _pack_capabilities(body.capabilities)}
    if isinstance(body, SessionReject):
        return {"reason": body.reason, "active_sessions": body.active_sessions,
                "max_sessions": body.max_sessions}
    if isinstance(body, Observation):
        return {
            "state": {k: _pack_array(v, f"observation.state[{k!r}]")
                      for k, v in body.state.items()},
            "images": {k: _pack_image(v, f"observation.images[{k!r}]", jpeg_quality)
                       for k, v in body.images.items()},
            "instruction": body.instruction,
        }
    if isinstance(body, ActionChunk):
        if not isinstance(body.actions, np.ndarray) or body.actions.ndim != 2:
            raise EncodeError(f"action_chunk.actions: expected a 2-D array (steps, action_dim), "
                              f"got {getattr(body.actions, 'shape', type(body.actions).__name__)}")
        return {"actions": _pack_array(body.actions, "action_chunk.actions"),
                "obs_seq": body.obs_seq, "queue_wait_ns": body.queue_wait_ns,
                "infer_ns": body.infer_ns, "model_id": body.model_id}
    if isinstance(body, Status):
        return {"fields": dict(body.fields)}
    if isinstance(body, Error):
        return {"code": body.code, "detail": body.detail}
    if isinstance(body, (Reset, Close)):
        return {"reason": body.reason}
    raise EncodeError(f"not a message body: {type(body).__name__}")


def _unpack_status_fields(value: Any, path: str) -> dict[str, int | float | str | bool]:
    def scalar(v: Any, p: str) -> int | float | str | bool:
        if not isinstance(v, (int, float, str, bool)):
            raise DecodeError(f"{p}: expected a scalar, got {type(v).__name__}")
        return v

    return _str_map(value, path, scalar)


def _unpack_body(msg_type: MessageType, value: Any) -> Body:
    path = msg_type.name.lower()
    if msg_type is MessageType.SESSION_OPEN:
        item = _map(value, path, {"client_id", "capabilities"})
        return SessionOpen(_get(item, "client_id", str, path),
                           _unpack_capabilities(item["capabilities"], f"{path}.capabilities"))
    if msg_type is MessageType.SESSION_OK:
        item = _map(value, path, {"session_id", "capabilities"})
        return SessionOk(_get(item, "session_id", str, path),
                         _unpack_capabilities(item["capabilities"], f"{path}.capabilities"))
    if msg_type is MessageType.SESSION_REJECT:
        item = _map(value, path, {"reason", "active_sessions", "max_sessions"})
        return SessionReject(_get(item, "reason", str, path),
                             _count(item, "active_sessions", path),
                             _count(item, "max_sessions", path))
    if msg_type is MessageType.OBSERVATION:
        item = _map(value, path, {"state", "images", "instruction"})
        return Observation(state=_str_map(item["state"], f"{path}.state", _unpack_array),
                           images=_str_map(item["images"], f"{path}.images", _unpack_image),
                           instruction=_get(item, "instruction", str, path))
    if msg_type is MessageType.ACTION_CHUNK:
        item = _map(value, path, {"actions", "obs_seq", "queue_wait_ns", "infer_ns", "model_id"})
        actions = _unpack_array(item["actions"], f"{path}.actions")
        if actions.ndim != 2:
            raise DecodeError(f"{path}.actions: expected 2 dimensions, got {actions.shape}")
        return ActionChunk(actions, _count(item, "obs_seq", path),
                           _count(item, "queue_wait_ns", path), _count(item, "infer_ns", path),
                           _get(item, "model_id", str, path))
    if msg_type is MessageType.STATUS:
        item = _map(value, path, {"fields"})
        return Status(_unpack_status_fields(item["fields"], f"{path}.fields"))
    if msg_type is MessageType.ERROR:
        item = _map(value, path, {"code", "detail"})
        return Error(_get(item, "code", str, path), _get(item, "detail", str, path))
    item = _map(value, path, {"reason"})
    reason = _get(item, "reason", str, path)
    return Reset(reason) if msg_type is MessageType.RESET else Close(reason)


_TYPE_OF: dict[type, MessageType] = {
    SessionOpen: MessageType.SESSION_OPEN, SessionOk: MessageType.SESSION_OK,
    SessionReject: MessageType.SESSION_REJECT, Observation: MessageType.OBSERVATION,
    ActionChunk: MessageType.ACTION_CHUNK, Reset: MessageType.RESET, Status: MessageType.STATUS,
    Error: MessageType.ERROR, Close: MessageType.CLOSE,
}


# ---- public API -----------------------------------------------------------------------------

def encode(message: Message, *, jpeg_quality: int | None = None,
           max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> bytes:
    """Serialize `message`; with `jpeg_quality` (1..100) observation images travel as JPEG.

    Raises:
        EncodeError: a field cannot be encoded (the message names it).
        MessageTooLarge: the body would exceed `max_body_bytes`.
    """
    if jpeg_quality is not None and not (_is_int(jpeg_quality) and 1 <= jpeg_quality <= 100):
        raise EncodeError(f"jpeg_quality={jpeg_quality!r}: must be an int in 1..100")
    if type(message.body) not in _TYPE_OF:
        raise EncodeError(f"not a message body: {type(message.body).__name__}")
    for name, bits in _UINT_BITS.items():
        value = getattr(message, name)
        if not _is_int(value) or not 0 <= value < 2**bits:
            raise EncodeError(f"header.{name}={value!r}: must be an int in [0, 2**{bits})")
    flags = Flags(message.flags)
    if isinstance(message.body, Observation):
        flags = (flags | Flags.JPEG) if jpeg_quality is not None and message.body.images \
            else (flags & ~Flags.JPEG)
    try:
        body = msgpack.packb(_pack_body(message.body, jpeg_quality), use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        if isinstance(exc, WireError):
            raise
        raise EncodeError(f"{message.msg_type.name.lower()}: cannot encode ({exc})") from exc
    if len(body) > max_body_bytes:
        raise MessageTooLarge(f"body of {len(body)} bytes exceeds max_body_bytes={max_body_bytes}")
    header = HEADER.pack(MAGIC, SCHEMA_VERSION, message.msg_type, flags, message.seq,
                         message.episode, message.epoch, message.client_ns, len(body))
    return header + body


def decode_header(buf: bytes | bytearray | memoryview, *,
                  max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> Header:
    """Parse and check only the header: enough to route or reject without touching the body.

    Raises DecodeError (UnsupportedVersion, MessageTooLarge) on any mismatch.
    """
    if len(buf) < HEADER.size:
        raise DecodeError(f"header: {len(buf)} bytes, need at least {HEADER.size}")
    magic, version, msg_type, flags, seq, episode, epoch, client_ns, body_len = \
        HEADER.unpack_from(buf)
    if magic != MAGIC:
        raise DecodeError(f"header.magic: {bytes(magic)!r}, expected {MAGIC!r}")
    if version != SCHEMA_VERSION:
        raise UnsupportedVersion(f"header.version: {version}, this code speaks {SCHEMA_VERSION}")
    if msg_type not in MessageType._value2member_map_:
        raise DecodeError(f"header.msg_type: unknown message type {msg_type}")
    if flags & ~_KNOWN_FLAGS:
        raise DecodeError(f"header.flags: unknown bits {flags & ~_KNOWN_FLAGS:#x}")
    if body_len > max_body_bytes:
        raise MessageTooLarge(f"header.body_len: {body_len} exceeds max_body_bytes="
                              f"{max_body_bytes}")
    if body_len != len(buf) - HEADER.size:
        raise DecodeError(f"header.body_len: {body_len}, but {len(buf) - HEADER.size} body "
                          "bytes follow")
    return Header(MessageType(msg_type), seq, episode, epoch, client_ns, Flags(flags), body_len)


def decode(buf: bytes | bytearray | memoryview, *,
           max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> Message:
    """Parse a whole message. Raises only DecodeError (or a subclass), whatever `buf` holds."""
    header = decode_header(buf, max_body_bytes=max_body_bytes)
    try:
        raw = msgpack.unpackb(memoryview(buf)[HEADER.size:], raw=False, strict_map_key=True,
                              use_list=True)
    except Exception as exc:  # msgpack raises many types (ValueError, StackError, ...)
        raise DecodeError(f"{header.msg_type.name.lower()}: body is not valid msgpack "
                          f"({type(exc).__name__}: {exc})") from exc
    try:
        body = _unpack_body(header.msg_type, raw)
    except DecodeError:
        raise
    except Exception as exc:  # safety net behind the precise checks: never crash a server
        raise DecodeError(f"{header.msg_type.name.lower()}: malformed body "
                          f"({type(exc).__name__}: {exc})") from exc
    is_jpeg = isinstance(body, Observation) and any(
        isinstance(v, dict) and "jpeg" in v for v in raw.get("images", {}).values())
    if bool(header.flags & Flags.JPEG) != is_jpeg:
        raise DecodeError("header.flags: JPEG flag does not match the images in the body")
    return Message(body, seq=header.seq, episode=header.episode, epoch=header.epoch,
                   client_ns=header.client_ns, flags=header.flags)
