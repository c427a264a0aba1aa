"""Wire schema: a fixed little-endian header followed by a msgpack body.

Every transport (zenoh, grpc, zmq, in-process) carries exactly these bytes. The header has a
fixed layout so a server can route a message (type, session epoch, episode, sequence id) and
reject it (wrong version, wrong length, oversize) without parsing the body. The body is msgpack
because it is fast, language-neutral and, unlike pickle, cannot execute code. Arrays travel as
dtype (from an allowlist) + shape + raw little-endian bytes; camera images may travel as JPEG.

Each body field has one `_Kind` that checks it in both directions, so `encode` refuses what
`decode` would reject. Every malformed input makes `decode` raise `DecodeError` (or a subclass)
and nothing else: a policy server must survive any bytes a network hands it.
"""

from __future__ import annotations

import enum
import functools
import math
import reprlib
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

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
DTYPE_NAMES = ("bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
               "float16", "float32", "float64")
ALLOWED_DTYPES = frozenset(np.dtype(name).newbyteorder("<").str for name in DTYPE_NAMES)
"""Array dtypes as they appear on the wire ("<f4", "|u1", ...): little-endian only."""
_HEADER_INT_BITS = {"seq": 64, "episode": 32, "epoch": 32, "client_ns": 64}


class WireError(ValueError):
    """Base of the wire errors; the message names the field path and the bad value."""


class DecodeError(WireError):
    """Bytes that are not a valid message of this schema."""


class UnsupportedVersion(DecodeError):
    """The header's schema version is not one this code speaks."""


class MessageTooLarge(DecodeError):
    """A body over `max_body_bytes`, on either side: decode rejects it before parsing, and
    encode refuses to produce it (so it is raised by encode too, despite the base class)."""


class EncodeError(WireError):
    """A message that cannot be put on the wire (dtype outside the allowlist, wrong type)."""


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
    """Owned by `encode`: set exactly when it JPEG-encoded an observation's images."""


_KNOWN_FLAGS = int(Flags.RESPONSE | Flags.JPEG)


# ---- bodies: one frozen dataclass per message type ------------------------------------------

@dataclass(frozen=True)
class ArraySpec:
    """Declared dtype (a name from DTYPE_NAMES, e.g. "float32") and shape of one state array."""
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Capabilities:
    """What one side declares at session open; the server checks the client's against its own."""
    model_id: str
    action_names: tuple[str, ...]
    state: dict[str, ArraySpec]
    images: dict[str, tuple[int, int]]
    """camera -> (height, width) of an RGB uint8 image."""
    control_hz: float
    chunk_size: int
    """Actions per chunk, >= 1."""


@dataclass(frozen=True)
class SessionOpen:
    """First message of a client: who it is and what it sends and expects."""
    client_id: str
    capabilities: Capabilities


@dataclass(frozen=True)
class SessionOk:
    """The server accepted the session; `capabilities` are the server's own."""
    session_id: str
    capabilities: Capabilities


@dataclass(frozen=True)
class SessionReject:
    """The server refused the session, with its load so a client can decide to retry."""
    reason: str
    active_sessions: int
    max_sessions: int


@dataclass(frozen=True, eq=False)
class Observation:
    """One control tick's inputs. Compared by identity (arrays make `==` ambiguous).

    Decoded arrays are read-only `np.frombuffer` views over the decoded body; copy to write.
    """

    state: dict[str, np.ndarray]
    images: dict[str, np.ndarray]
    """camera -> HxWx3 uint8 RGB."""
    instruction: str


@dataclass(frozen=True, eq=False)
class ActionChunk:
    """The server's answer to one observation. Compared by identity, like Observation."""
    actions: np.ndarray
    """(steps, action_dim); read-only when decoded."""
    obs_seq: int
    """Sequence id of the observation this chunk answers."""
    queue_wait_ns: int
    """Durations measured by the server; it never sends instants of its own clock."""
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
    """An explicit failure reply, so a client counts it instead of timing out."""
    code: str
    detail: str


SESSION_UNKNOWN = "session"
"""`Error.code` when the server has no open session of the message's epoch (it restarted,
or the session was closed): the client must open a new session rather than retry."""


@dataclass(frozen=True)
class Close:
    reason: str = ""


Body = (SessionOpen | SessionOk | SessionReject | Observation | ActionChunk | Reset | Status
        | Error | Close)
_TYPE_OF: dict[type, MessageType] = {
    SessionOpen: MessageType.SESSION_OPEN, SessionOk: MessageType.SESSION_OK,
    SessionReject: MessageType.SESSION_REJECT, Observation: MessageType.OBSERVATION,
    ActionChunk: MessageType.ACTION_CHUNK, Reset: MessageType.RESET, Status: MessageType.STATUS,
    Error: MessageType.ERROR, Close: MessageType.CLOSE,
}
_BODY_OF = {msg_type: body_type for body_type, msg_type in _TYPE_OF.items()}


@dataclass(frozen=True)
class Header:
    """The fixed-size prefix, enough to route or reject a message without its body."""
    msg_type: MessageType
    seq: int
    episode: int
    epoch: int
    client_ns: int
    flags: Flags
    body_len: int


@dataclass(frozen=True)
class Message:
    """A body plus its header fields; the message type follows from the body's class."""
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


# ---- kinds: how one field is checked and converted, in both directions ----------------------

class _Kind(NamedTuple):
    """pack(value, path) checks a Python value and returns its msgpack form (EncodeError);
    unpack(raw, path) checks a msgpack value and returns the Python value (DecodeError)."""

    pack: Callable[[Any, str], Any]
    unpack: Callable[[Any, str], Any]


class _Way(NamedTuple):
    """One direction: the error it raises and which half of a child kind it calls."""

    error: type[WireError]
    packing: bool

    def of(self, kind: _Kind) -> Callable[[Any, str], Any]:
        return kind.pack if self.packing else kind.unpack


_PACKING, _UNPACKING = _Way(EncodeError, True), _Way(DecodeError, False)


def _symmetric(check: Callable[[Any, str, _Way], Any]) -> _Kind:
    """A kind whose two directions share one checker, told apart by `way`."""
    def pack(value: Any, path: str) -> Any:
        return check(value, path, _PACKING)

    def unpack(raw: Any, path: str) -> Any:
        return check(raw, path, _UNPACKING)
    return _Kind(pack, unpack)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _got(value: Any) -> str:
    """The bad value for an error message: type and a truncated repr (or an array's dtype+shape)."""
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {list(value.shape)}"
    return f"{type(value).__name__} {reprlib.repr(value)}"


def _leaf(expected: str, is_type: Callable[[Any], bool],
          in_range: Callable[[Any], bool] | None = None, allowed: str = "",
          convert: Callable[[Any], Any] | None = None) -> _Kind:
    """A scalar checked alike both ways: its type, then its range, then optionally converted."""
    def check(value: Any, path: str, way: _Way) -> Any:
        if not is_type(value):
            raise way.error(f"{path}: expected {expected}, got {_got(value)}")
        if in_range is not None and not in_range(value):
            raise way.error(f"{path}: {reprlib.repr(value)} is out of range, expected {allowed}")
        return value if convert is None else convert(value)
    return _symmetric(check)


def _seq(item: _Kind, lengths: range) -> _Kind:
    """A list on the wire, a tuple in Python (lists and tuples are both accepted)."""
    def check(value: Any, path: str, way: _Way) -> Any:
        if not isinstance(value, (list, tuple)):
            raise way.error(f"{path}: expected a list, got {_got(value)}")
        if len(value) not in lengths:
            raise way.error(f"{path}: {len(value)} items, expected {lengths.start}.."
                            f"{lengths.stop - 1}")
        convert = way.of(item)
        items = [convert(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return items if way.packing else tuple(items)
    return _symmetric(check)


def _map_of(item: _Kind) -> _Kind:
    """A map with string keys, each value of kind `item`."""
    def check(value: Any, path: str, way: _Way) -> Any:
        if not isinstance(value, dict):
            raise way.error(f"{path}: expected a map, got {_got(value)}")
        for key in value:
            if not isinstance(key, str):
                raise way.error(f"{path}: keys must be str, got {_got(key)}")
        convert = way.of(item)
        return {key: convert(v, f"{path}[{key!r}]") for key, v in value.items()}
    return _symmetric(check)


def _exact_keys(raw: Any, path: str, keys: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise DecodeError(f"{path}: expected a map, got {_got(raw)}")
    if raw.keys() != set(keys):
        missing = sorted(set(keys) - raw.keys())
        extra = sorted(map(repr, raw.keys() - set(keys)))
        raise DecodeError(f"{path}: missing keys {missing}, unexpected keys [{', '.join(extra)}]")
    return raw


def _record(cls: type, fields: dict[str, _Kind]) -> _Kind:
    """A dataclass on one side, a map keyed by its field names on the wire."""
    def pack(value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, cls):
            raise EncodeError(f"{path}: expected {cls.__name__}, got {_got(value)}")
        return {name: kind.pack(getattr(value, name), f"{path}.{name}")
                for name, kind in fields.items()}

    def unpack(raw: Any, path: str) -> Any:
        item = _exact_keys(raw, path, tuple(fields))
        return cls(**{name: kind.unpack(item[name], f"{path}.{name}")
                      for name, kind in fields.items()})
    return _Kind(pack, unpack)


_STR = _leaf("str", lambda v: isinstance(v, str))
_BYTES = _leaf("bytes", lambda v: isinstance(v, bytes))
_COUNT = _leaf("int", _is_int, lambda v: 0 <= v < 2**63, "0 <= n < 2**63")
_POSITIVE = _leaf("int", _is_int, lambda v: 1 <= v < 2**63, "1 <= n < 2**63")
_RATE = _leaf("float", lambda v: isinstance(v, float) or _is_int(v),
              lambda v: math.isfinite(v) and v > 0, "a finite value > 0", float)
_SCALAR = _leaf("int, float, str or bool", lambda v: isinstance(v, (int, float, str)),
                lambda v: not _is_int(v) or -2**63 <= v < 2**64, "an int64 or uint64")
_DTYPE_NAME = _leaf("str", lambda v: isinstance(v, str), lambda v: v in DTYPE_NAMES,
                    f"one of {DTYPE_NAMES}")
_WIRE_DTYPE = _leaf("str", lambda v: isinstance(v, str), lambda v: v in ALLOWED_DTYPES,
                    f"one of {sorted(ALLOWED_DTYPES)}")
_SHAPE = _seq(_COUNT, range(MAX_NDIM + 1))
_IMAGE_SIZE = _seq(_leaf("int", _is_int, lambda v: 1 <= v <= MAX_IMAGE_SIDE,
                         f"1..{MAX_IMAGE_SIDE}"), range(2, 3))


# ---- arrays and images ----------------------------------------------------------------------

def _pack_array(array: Any, path: str) -> dict[str, Any]:
    if not isinstance(array, np.ndarray):
        raise EncodeError(f"{path}: expected a numpy array, got {_got(array)}")
    dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    if dtype.str not in ALLOWED_DTYPES:
        raise EncodeError(f"{path}: dtype {array.dtype} is not allowed on the wire; "
                          f"use one of {DTYPE_NAMES}")
    if array.ndim > MAX_NDIM:
        raise EncodeError(f"{path}: {array.ndim} dimensions, at most {MAX_NDIM} allowed")
    data = np.ascontiguousarray(array, dtype=dtype).tobytes()
    return {"dtype": dtype.str, "shape": list(array.shape), "data": data}


def _unpack_array(raw: Any, path: str) -> np.ndarray:
    item = _exact_keys(raw, path, ("dtype", "shape", "data"))
    dtype = np.dtype(_WIRE_DTYPE.unpack(item["dtype"], f"{path}.dtype"))
    shape = _SHAPE.unpack(item["shape"], f"{path}.shape")
    data = _BYTES.unpack(item["data"], f"{path}.data")
    needed = math.prod(shape) * dtype.itemsize  # Python ints: no overflow tricks
    if needed != len(data):
        raise DecodeError(f"{path}: shape {list(shape)} needs {needed} bytes, got {len(data)} "
                          f"(dtype {dtype.str!r})")
    # An empty array may still have huge sides; numpy refuses them past int64 bytes.
    if needed == 0 and math.prod(max(side, 1) for side in shape) * dtype.itemsize >= 2**63:
        raise DecodeError(f"{path}: shape {list(shape)} is too large for any array")
    if dtype.kind == "b" and data.strip(b"\x00\x01"):
        raise DecodeError(f"{path}: bool array holds bytes other than 0 and 1")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def _is_image(value: Any) -> bool:
    return (isinstance(value, np.ndarray) and value.dtype == np.uint8 and value.ndim == 3
            and value.shape[2] == 3)


def _checked_array(valid: Callable[[np.ndarray], bool], expected: str) -> _Kind:
    """An array that must also pass `valid` (HxWx3 uint8 images, 2-D action chunks)."""
    def pack(value: Any, path: str) -> dict[str, Any]:
        if isinstance(value, np.ndarray) and not valid(value):
            raise EncodeError(f"{path}: expected {expected}, got {_got(value)}")
        return _pack_array(value, path)

    def unpack(raw: Any, path: str) -> np.ndarray:
        array = _unpack_array(raw, path)
        if not valid(array):
            raise DecodeError(f"{path}: expected {expected}, got {_got(array)}")
        return array
    return _Kind(pack, unpack)


def _pack_jpeg(image: Any, path: str, *, quality: int) -> dict[str, Any]:
    if not _is_image(image):
        raise EncodeError(f"{path}: expected an HxWx3 uint8 image, got {_got(image)}")
    _IMAGE_SIZE.pack(image.shape[:2], f"{path}.shape")  # what the decoder will accept
    try:
        jpeg = simplejpeg.encode_jpeg(np.ascontiguousarray(image), quality=quality,
                                      colorspace="RGB")
    except Exception as exc:  # e.g. a side too large for libjpeg-turbo
        raise EncodeError(f"{path}: JPEG encoding of {list(image.shape)} failed ({exc})") from exc
    return {"jpeg": jpeg, "shape": list(image.shape)}


def _unpack_jpeg(raw: Any, path: str) -> np.ndarray:
    item = _exact_keys(raw, path, ("jpeg", "shape"))
    jpeg = _BYTES.unpack(item["jpeg"], f"{path}.jpeg")
    shape = _SHAPE.unpack(item["shape"], f"{path}.shape")
    if len(shape) != 3 or shape[2] != 3:
        raise DecodeError(f"{path}.shape: {list(shape)} is not [height, width, 3]")
    _IMAGE_SIZE.unpack(list(shape[:2]), f"{path}.shape")
    try:  # compare the header's size before decoding: no decompression bombs
        height, width, _, _ = simplejpeg.decode_jpeg_header(jpeg)
    except Exception as exc:
        raise DecodeError(f"{path}: invalid JPEG ({exc})") from exc
    if (height, width) != shape[:2]:
        raise DecodeError(f"{path}: JPEG is {height}x{width}, declared {list(shape)}")
    try:
        image = simplejpeg.decode_jpeg(jpeg, colorspace="RGB")
    except Exception as exc:
        raise DecodeError(f"{path}: invalid JPEG ({exc})") from exc
    if image.shape != shape:
        raise DecodeError(f"{path}: JPEG decoded to {list(image.shape)}, declared {list(shape)}")
    return image


def _jpeg_image(quality: int = 90) -> _Kind:
    """JPEG-form images; `quality` only matters when packing."""
    return _Kind(functools.partial(_pack_jpeg, quality=quality), _unpack_jpeg)


_ARRAY = _Kind(_pack_array, _unpack_array)
_RAW_IMAGE = _checked_array(_is_image, "an HxWx3 uint8 image")
_ACTIONS = _checked_array(lambda a: a.ndim == 2, "a 2-D (steps, action_dim) array")


# ---- the schema -----------------------------------------------------------------------------

def _observation(images: _Kind) -> _Kind:
    return _record(Observation, {"state": _map_of(_ARRAY), "images": _map_of(images),
                                 "instruction": _STR})


_CAPABILITIES = _record(Capabilities, {
    "model_id": _STR, "action_names": _seq(_STR, range(2**63)),
    "state": _map_of(_record(ArraySpec, {"dtype": _DTYPE_NAME, "shape": _SHAPE})),
    "images": _map_of(_IMAGE_SIZE), "control_hz": _RATE, "chunk_size": _POSITIVE,
})
_BODIES: dict[type, _Kind] = {
    SessionOpen: _record(SessionOpen, {"client_id": _STR, "capabilities": _CAPABILITIES}),
    SessionOk: _record(SessionOk, {"session_id": _STR, "capabilities": _CAPABILITIES}),
    SessionReject: _record(SessionReject, {"reason": _STR, "active_sessions": _COUNT,
                                           "max_sessions": _COUNT}),
    Observation: _observation(_RAW_IMAGE),
    ActionChunk: _record(ActionChunk, {
        "actions": _ACTIONS, "obs_seq": _COUNT,
        "queue_wait_ns": _COUNT, "infer_ns": _COUNT, "model_id": _STR}),
    Reset: _record(Reset, {"reason": _STR}),
    Status: _record(Status, {"fields": _map_of(_SCALAR)}),
    Error: _record(Error, {"code": _STR, "detail": _STR}),
    Close: _record(Close, {"reason": _STR}),
}
_JPEG_OBSERVATION = _observation(_jpeg_image())


# ---- public API -----------------------------------------------------------------------------

def encode(message: Message, *, jpeg_quality: int | None = None,
           max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> bytes:
    """Serialize `message` into header + body bytes.

    With `jpeg_quality` (1..100), an Observation's images travel as JPEG and the JPEG flag is
    set; it is cleared otherwise, whatever `message.flags` says. Other bodies ignore it.

    Raises:
        EncodeError: a header or body field cannot travel (the message names it).
        MessageTooLarge: the body would exceed `max_body_bytes`.
    """
    if not isinstance(message, Message):
        raise EncodeError(f"message: expected a Message, got {_got(message)}")
    if jpeg_quality is not None and not (_is_int(jpeg_quality) and 1 <= jpeg_quality <= 100):
        raise EncodeError(f"jpeg_quality={jpeg_quality!r}: must be an int in 1..100")
    body_type = type(message.body)
    if body_type not in _TYPE_OF:
        raise EncodeError(f"message.body: {body_type.__name__} is not a message body")
    for name, bits in _HEADER_INT_BITS.items():
        value = getattr(message, name)
        if not _is_int(value) or not 0 <= value < 2**bits:
            raise EncodeError(f"header.{name}={value!r}: must be an int in [0, 2**{bits})")
    if not _is_int(message.flags) or message.flags & ~_KNOWN_FLAGS:
        raise EncodeError(f"header.flags={message.flags!r}: only RESPONSE and JPEG are defined")
    flags, kind = Flags(message.flags) & ~Flags.JPEG, _BODIES[body_type]
    if body_type is Observation and jpeg_quality is not None:
        flags, kind = flags | Flags.JPEG, _observation(_jpeg_image(jpeg_quality))
    path = _TYPE_OF[body_type].name.lower()
    try:
        body = msgpack.packb(kind.pack(message.body, path), use_bin_type=True)
    except WireError:
        raise
    except (TypeError, ValueError, OverflowError) as exc:  # e.g. a lone surrogate in a str
        raise EncodeError(f"{path}: msgpack cannot encode the body ({exc})") from exc
    if len(body) > max_body_bytes:
        raise MessageTooLarge(f"{path}: body of {len(body)} bytes exceeds "
                              f"max_body_bytes={max_body_bytes}")
    return HEADER.pack(MAGIC, SCHEMA_VERSION, _TYPE_OF[body_type], flags, message.seq,
                       message.episode, message.epoch, message.client_ns, len(body)) + body


def _byte_view(buf: Any) -> memoryview:
    try:
        view = memoryview(buf)
        return view if view.format == "B" and view.ndim == 1 else view.cast("B")
    except (TypeError, ValueError) as exc:
        raise DecodeError(f"buf: expected contiguous bytes, got {type(buf).__name__}") from exc


def decode_header(buf: bytes | bytearray | memoryview, *,
                  max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> Header:
    """Parse and check only the header of a whole message (`buf` must hold header and body).

    Cheap: a server can route or reject with it before parsing the body.

    Raises:
        UnsupportedVersion: the schema version is not SCHEMA_VERSION.
        MessageTooLarge: the declared body length exceeds `max_body_bytes`.
        DecodeError: short buffer, bad magic, unknown type or flag bits, length mismatch.
    """
    view = _byte_view(buf)
    if len(view) < HEADER.size:
        raise DecodeError(f"header: {len(view)} bytes, need at least {HEADER.size}")
    magic, version, msg_type, flags, seq, episode, epoch, client_ns, body_len = \
        HEADER.unpack_from(view)
    if magic != MAGIC:
        raise DecodeError(f"header.magic: {magic!r}, expected {MAGIC!r}")
    if version != SCHEMA_VERSION:
        raise UnsupportedVersion(f"header.version: {version}, this code speaks {SCHEMA_VERSION}")
    if msg_type not in MessageType._value2member_map_:
        raise DecodeError(f"header.msg_type: unknown message type {msg_type}")
    if flags & ~_KNOWN_FLAGS:
        raise DecodeError(f"header.flags: unknown bits {flags & ~_KNOWN_FLAGS:#x} in {flags:#x}")
    if body_len > max_body_bytes:
        raise MessageTooLarge(f"header.body_len: {body_len} exceeds "
                              f"max_body_bytes={max_body_bytes}")
    if body_len != len(view) - HEADER.size:
        raise DecodeError(f"header.body_len: {body_len}, but {len(view) - HEADER.size} body "
                          "bytes follow")
    return Header(MessageType(msg_type), seq, episode, epoch, client_ns, Flags(flags), body_len)


def _reject_ext(code: int, data: bytes) -> None:
    raise DecodeError(f"msgpack ExtType {code} is not part of the schema")


def decode(buf: bytes | bytearray | memoryview, *,
           max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> Message:
    """Parse and validate a whole message.

    Decoded arrays are read-only (np.frombuffer over the decoded body bytes, not over `buf`).

    Raises:
        DecodeError: for any malformed input whatsoever, naming the field; subclasses
            UnsupportedVersion and MessageTooLarge as in `decode_header`. Nothing else escapes.
    """
    header = decode_header(buf, max_body_bytes=max_body_bytes)
    body_type = _BODY_OF[header.msg_type]
    path = header.msg_type.name.lower()
    kind = _BODIES[body_type]
    if header.flags & Flags.JPEG:
        if body_type is not Observation:
            raise DecodeError(f"header.flags: JPEG is set on a {path} message")
        kind = _JPEG_OBSERVATION
    try:
        # ExtType goes through _reject_ext; a Timestamp (ext -1) fails the type checks below.
        raw = msgpack.unpackb(_byte_view(buf)[HEADER.size:], raw=False, strict_map_key=True,
                              use_list=True, ext_hook=_reject_ext)
    except DecodeError as exc:
        raise DecodeError(f"{path}: {exc}") from exc
    except Exception as exc:  # msgpack raises many types (ValueError, StackError, ...)
        raise DecodeError(f"{path}: body is not valid msgpack ({type(exc).__name__}: {exc})") \
            from exc
    try:
        body = kind.unpack(raw, path)
    except DecodeError:
        raise
    except Exception as exc:  # safety net behind the precise checks: never crash a server
        raise DecodeError(f"{path}: malformed body ({type(exc).__name__}: {exc})") from exc
    return Message(body, seq=header.seq, episode=header.episode, epoch=header.epoch,
                   client_ns=header.client_ns, flags=header.flags)
