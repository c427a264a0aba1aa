"""Codec of the wire schema: messages to bytes and back, every field checked both ways.

A message is `HEADER` (fixed size: routing fields a server can act on before parsing the
rest) and a msgpack body: compact, fast, raw bytes without base64. A body is a map keyed by
field name, not a list, so a field added or dropped is a clean error, not a shifted value.

Written out by hand, one `_pack_x` / `_unpack_x` pair per message type over the checks in
`harness.protocol.arrays`, so what travels and what is refused reads top to bottom. `encode`
refuses (EncodeError, naming the field) whatever `decode` would reject, so a bad value fails
at the sender. `decode` meets bytes from anywhere: it raises DecodeError or a subclass for
any input and nothing else, so a bad message gets an error reply and never crashes a server.
Keys, their order and value forms are the schema: changing one changes the bytes.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

from harness.protocol.arrays import (
    ALLOWED_DTYPES,
    MAX_ENTRIES,
    MAX_IMAGE_SIDE,
    MAX_NDIM,
    check_bool,
    check_count,
    check_image_size,
    check_map,
    check_rate,
    check_status_value,
    check_str,
    check_str_list,
    exact_keys,
    got,
    is_int,
    pack_array,
    pack_array_spec,
    pack_image,
    unpack_array,
    unpack_array_spec,
    unpack_image,
)
from harness.protocol.contract import Contract
from harness.protocol.messages import (
    _TYPE_OF,
    DEFAULT_MAX_BODY_BYTES,
    HEADER,
    KNOWN_FLAGS,
    MAGIC,
    SCHEMA_VERSION,
    ActionChunk,
    Close,
    DecodeError,
    EncodeError,
    Flags,
    Header,
    Message,
    MessageTooLarge,
    MessageType,
    Observation,
    Reset,
    SessionOk,
    SessionOpen,
    SessionReject,
    Status,
    UnsupportedVersion,
    WireError,
)
from harness.protocol.messages import Error as ErrorBody

__all__ = ["ALLOWED_DTYPES", "MAX_IMAGE_SIDE", "MAX_NDIM", "decode", "decode_header", "encode",
           "header_seq"]

_JPEG = int(Flags.JPEG)
_MESSAGE_TYPES = {int(msg_type): msg_type for msg_type in MessageType}
_FLAGS = {value: Flags(value) for value in range(KNOWN_FLAGS + 1)}
"""Every valid flags value, looked up rather than built (enum construction is slow)."""
_PATH_OF = {msg_type: msg_type.name.lower() for msg_type in MessageType}
"""The root of every error path: "observation", "session_open", ..."""
_KEYS = {
    "contract": frozenset({"model_id", "action_names", "state", "images", "control_hz",
                           "chunk_size", "delay_aware"}),
    "session_open": frozenset({"client_id", "contract"}),
    "session_ok": frozenset({"session_id", "contract"}),
    "session_reject": frozenset({"reason", "active_sessions", "max_sessions"}),
    "observation": frozenset({"state", "images", "instruction", "tick", "delay_ticks",
                              "committed"}),
    "action_chunk": frozenset({"actions", "obs_seq", "queue_wait_ns", "infer_ns", "model_id",
                               "start_tick", "batch_size"}),
    "reset": frozenset({"reason"}), "status": frozenset({"fields"}),
    "error": frozenset({"code", "detail"}), "close": frozenset({"reason"}),
}
"""The exact key set of each map the decoder accepts (the packers below write the same)."""


# ---- the contract -------------------------------------------------------------------------

def _pack_contract(contract: Any, path: str) -> dict[str, Any]:
    if not isinstance(contract, Contract):
        raise EncodeError(f"{path}: expected Contract, got {got(contract)}")
    # model_id first: the wire's order predates its move to the end of Contract.
    model_id = check_str(contract.model_id, f"{path}.model_id", EncodeError)
    action_names = check_str_list(contract.action_names, f"{path}.action_names", EncodeError)
    state = check_map(contract.state, f"{path}.state", EncodeError)
    packed_state = {key: pack_array_spec(spec, f"{path}.state[{key!r}]")
                    for key, spec in state.items()}
    images = check_map(contract.images, f"{path}.images", EncodeError)
    packed_images = {camera: check_image_size(size, f"{path}.images[{camera!r}]", EncodeError)
                     for camera, size in images.items()}
    return {"model_id": model_id, "action_names": action_names, "state": packed_state,
            "images": packed_images,
            "control_hz": check_rate(contract.control_hz, f"{path}.control_hz", EncodeError),
            "chunk_size": check_count(contract.chunk_size, f"{path}.chunk_size", EncodeError),
            "delay_aware": check_bool(contract.delay_aware, f"{path}.delay_aware", EncodeError)}


def _unpack_contract(raw: Any, path: str) -> Contract:
    item = exact_keys(raw, path, _KEYS["contract"])
    model_id = check_str(item["model_id"], f"{path}.model_id", DecodeError)
    action_names = check_str_list(item["action_names"], f"{path}.action_names", DecodeError)
    state = check_map(item["state"], f"{path}.state", DecodeError)
    unpacked_state = {key: unpack_array_spec(spec, f"{path}.state[{key!r}]")
                      for key, spec in state.items()}
    images = check_map(item["images"], f"{path}.images", DecodeError)
    unpacked_images = {
        camera: tuple(check_image_size(size, f"{path}.images[{camera!r}]", DecodeError))
        for camera, size in images.items()}
    return Contract(
        action_names=tuple(action_names), state=unpacked_state, images=unpacked_images,
        control_hz=check_rate(item["control_hz"], f"{path}.control_hz", DecodeError),
        chunk_size=check_count(item["chunk_size"], f"{path}.chunk_size", DecodeError),
        model_id=model_id,
        delay_aware=check_bool(item["delay_aware"], f"{path}.delay_aware", DecodeError))


# ---- one pair per message type, in MessageType order ----------------------------------------
# A packer gets a body of its own class (encode dispatches on it) and returns the map to send;
# an unpacker gets whatever msgpack produced and returns the body, or raises DecodeError.

def _pack_session_open(body: SessionOpen, path: str) -> dict[str, Any]:
    return {"client_id": check_str(body.client_id, f"{path}.client_id", EncodeError),
            "contract": _pack_contract(body.contract, f"{path}.contract")}


def _unpack_session_open(raw: Any, path: str) -> SessionOpen:
    item = exact_keys(raw, path, _KEYS["session_open"])
    return SessionOpen(client_id=check_str(item["client_id"], f"{path}.client_id", DecodeError),
                       contract=_unpack_contract(item["contract"], f"{path}.contract"))


def _pack_session_ok(body: SessionOk, path: str) -> dict[str, Any]:
    return {"session_id": check_str(body.session_id, f"{path}.session_id", EncodeError),
            "contract": _pack_contract(body.contract, f"{path}.contract")}


def _unpack_session_ok(raw: Any, path: str) -> SessionOk:
    item = exact_keys(raw, path, _KEYS["session_ok"])
    return SessionOk(session_id=check_str(item["session_id"], f"{path}.session_id", DecodeError),
                     contract=_unpack_contract(item["contract"], f"{path}.contract"))


def _pack_session_reject(body: SessionReject, path: str) -> dict[str, Any]:
    return {"reason": check_str(body.reason, f"{path}.reason", EncodeError),
            "active_sessions": check_count(body.active_sessions, f"{path}.active_sessions",
                                           EncodeError),
            "max_sessions": check_count(body.max_sessions, f"{path}.max_sessions", EncodeError)}


def _unpack_session_reject(raw: Any, path: str) -> SessionReject:
    item = exact_keys(raw, path, _KEYS["session_reject"])
    return SessionReject(
        reason=check_str(item["reason"], f"{path}.reason", DecodeError),
        active_sessions=check_count(item["active_sessions"], f"{path}.active_sessions",
                                    DecodeError),
        max_sessions=check_count(item["max_sessions"], f"{path}.max_sessions", DecodeError))


def _pack_observation(body: Observation, path: str, jpeg_quality: int | None) -> dict[str, Any]:
    """Images travel raw, or as JPEG when `jpeg_quality` is given (encode sets the flag)."""
    state = check_map(body.state, f"{path}.state", EncodeError)
    packed_state = {key: pack_array(array, f"{path}.state[{key!r}]")
                    for key, array in state.items()}
    images = check_map(body.images, f"{path}.images", EncodeError)
    packed_images = {camera: pack_image(image, f"{path}.images[{camera!r}]", jpeg_quality)
                     for camera, image in images.items()}
    delay_ticks = check_count(body.delay_ticks, f"{path}.delay_ticks", EncodeError)
    tick = _checked_start(body.tick, delay_ticks, path, EncodeError)
    return {"state": packed_state, "images": packed_images,
            "instruction": check_str(body.instruction, f"{path}.instruction", EncodeError),
            "tick": tick, "delay_ticks": delay_ticks,
            "committed": pack_array(_checked_prefix(body.committed, delay_ticks, path,
                                                    EncodeError), f"{path}.committed")}


def _checked_start(tick: Any, delay_ticks: int, path: str, error: type[WireError]) -> int:
    """The observation's tick, such that its chunk's start (tick + delay_ticks, echoed as
    `start_tick`) is still a count: < 2**63."""
    tick = check_count(tick, f"{path}.tick", error)
    if tick + delay_ticks >= 2**63:
        raise error(f"{path}.tick + delay_ticks = {tick} + {delay_ticks}: the chunk's start "
                    "must be < 2**63")
    return tick


def _checked_prefix(committed: Any, delay_ticks: int, path: str,
                    error: type[WireError]) -> np.ndarray:
    """The committed prefix is float32 (steps, action_dim) with one row per tick of delay."""
    if not isinstance(committed, np.ndarray) or committed.ndim != 2 or (
            committed.dtype != np.float32):
        raise error(f"{path}.committed: expected a 2-D float32 (steps, action_dim) array, "
                    f"got {got(committed)}")
    if committed.shape[0] != delay_ticks:
        raise error(f"{path}.committed: {committed.shape[0]} actions for delay_ticks="
                    f"{delay_ticks} (one per tick of the expected delay)")
    return committed


def _unpack_observation(raw: Any, path: str, jpeg: bool) -> Observation:
    """`jpeg` is the header's JPEG flag: then every image must be JPEG, else every one raw."""
    item = exact_keys(raw, path, _KEYS["observation"])
    state = check_map(item["state"], f"{path}.state", DecodeError)
    unpacked_state = {key: unpack_array(array, f"{path}.state[{key!r}]")
                      for key, array in state.items()}
    images = check_map(item["images"], f"{path}.images", DecodeError)
    delay_ticks = check_count(item["delay_ticks"], f"{path}.delay_ticks", DecodeError)
    return Observation(
        state=unpacked_state,
        images={camera: unpack_image(image, f"{path}.images[{camera!r}]", jpeg)
                for camera, image in images.items()},
        instruction=check_str(item["instruction"], f"{path}.instruction", DecodeError),
        tick=_checked_start(item["tick"], delay_ticks, path, DecodeError),
        delay_ticks=delay_ticks,
        committed=_checked_prefix(unpack_array(item["committed"], f"{path}.committed"),
                                  delay_ticks, path, DecodeError))


_ACTIONS = "a 2-D (steps, action_dim) array"


def _pack_action_chunk(body: ActionChunk, path: str) -> dict[str, Any]:
    if isinstance(body.actions, np.ndarray) and body.actions.ndim != 2:
        raise EncodeError(f"{path}.actions: expected {_ACTIONS}, got {got(body.actions)}")
    return {"actions": pack_array(body.actions, f"{path}.actions"),
            "obs_seq": check_count(body.obs_seq, f"{path}.obs_seq", EncodeError),
            "queue_wait_ns": check_count(body.queue_wait_ns, f"{path}.queue_wait_ns",
                                         EncodeError),
            "infer_ns": check_count(body.infer_ns, f"{path}.infer_ns", EncodeError),
            "model_id": check_str(body.model_id, f"{path}.model_id", EncodeError),
            "start_tick": check_count(body.start_tick, f"{path}.start_tick", EncodeError),
            "batch_size": _batch_size(body.batch_size, f"{path}.batch_size", EncodeError)}


def _batch_size(value: Any, path: str, error: type[WireError]) -> int:
    """A count of at least one (a chunk was predicted in a pass of one robot or more)."""
    count = check_count(value, path, error)
    if count < 1:
        raise error(f"{path}: {count}, expected >= 1 (robots in the pass)")
    return count


def _unpack_action_chunk(raw: Any, path: str) -> ActionChunk:
    item = exact_keys(raw, path, _KEYS["action_chunk"])
    actions = unpack_array(item["actions"], f"{path}.actions")
    if actions.ndim != 2:
        raise DecodeError(f"{path}.actions: expected {_ACTIONS}, got {got(actions)}")
    return ActionChunk(
        actions=actions,
        obs_seq=check_count(item["obs_seq"], f"{path}.obs_seq", DecodeError),
        queue_wait_ns=check_count(item["queue_wait_ns"], f"{path}.queue_wait_ns", DecodeError),
        infer_ns=check_count(item["infer_ns"], f"{path}.infer_ns", DecodeError),
        model_id=check_str(item["model_id"], f"{path}.model_id", DecodeError),
        start_tick=check_count(item["start_tick"], f"{path}.start_tick", DecodeError),
        batch_size=_batch_size(item["batch_size"], f"{path}.batch_size", DecodeError))


def _pack_reset(body: Reset, path: str) -> dict[str, Any]:
    return {"reason": check_str(body.reason, f"{path}.reason", EncodeError)}


def _unpack_reset(raw: Any, path: str) -> Reset:
    item = exact_keys(raw, path, _KEYS["reset"])
    return Reset(reason=check_str(item["reason"], f"{path}.reason", DecodeError))


def _pack_status(body: Status, path: str) -> dict[str, Any]:
    fields = check_map(body.fields, f"{path}.fields", EncodeError)
    return {"fields": {key: check_status_value(value, f"{path}.fields[{key!r}]", EncodeError)
                       for key, value in fields.items()}}


def _unpack_status(raw: Any, path: str) -> Status:
    item = exact_keys(raw, path, _KEYS["status"])
    fields = check_map(item["fields"], f"{path}.fields", DecodeError)
    return Status(fields={key: check_status_value(value, f"{path}.fields[{key!r}]", DecodeError)
                          for key, value in fields.items()})


def _pack_error(body: ErrorBody, path: str) -> dict[str, Any]:
    return {"code": check_str(body.code, f"{path}.code", EncodeError),
            "detail": check_str(body.detail, f"{path}.detail", EncodeError)}


def _unpack_error(raw: Any, path: str) -> ErrorBody:
    item = exact_keys(raw, path, _KEYS["error"])
    return ErrorBody(code=check_str(item["code"], f"{path}.code", DecodeError),
                     detail=check_str(item["detail"], f"{path}.detail", DecodeError))


def _pack_close(body: Close, path: str) -> dict[str, Any]:
    return {"reason": check_str(body.reason, f"{path}.reason", EncodeError)}


def _unpack_close(raw: Any, path: str) -> Close:
    item = exact_keys(raw, path, _KEYS["close"])
    return Close(reason=check_str(item["reason"], f"{path}.reason", DecodeError))


_PACKERS = {SessionOpen: _pack_session_open, SessionOk: _pack_session_ok,
            SessionReject: _pack_session_reject, ActionChunk: _pack_action_chunk,
            Reset: _pack_reset, Status: _pack_status, ErrorBody: _pack_error, Close: _pack_close}
"""By body class, every body but Observation (its packer also takes the JPEG quality)."""
_UNPACKERS = {
    MessageType.SESSION_OPEN: _unpack_session_open, MessageType.SESSION_OK: _unpack_session_ok,
    MessageType.SESSION_REJECT: _unpack_session_reject,
    MessageType.ACTION_CHUNK: _unpack_action_chunk, MessageType.RESET: _unpack_reset,
    MessageType.STATUS: _unpack_status, MessageType.ERROR: _unpack_error,
    MessageType.CLOSE: _unpack_close,
}
"""By header type, every body but Observation (its unpacker also takes the JPEG flag)."""


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
        raise EncodeError(f"message: expected a Message, got {got(message)}")
    if jpeg_quality is not None and not (is_int(jpeg_quality) and 1 <= jpeg_quality <= 100):
        raise EncodeError(f"jpeg_quality={jpeg_quality!r}: must be an int in 1..100")
    body = message.body
    msg_type = _TYPE_OF.get(type(body))
    if msg_type is None:
        raise EncodeError(f"message.body: {type(body).__name__} is not a message body")
    for name, value, bits in (("seq", message.seq, 63), ("episode", message.episode, 32),
                              ("epoch", message.epoch, 32), ("client_ns", message.client_ns, 64)):
        if not is_int(value) or not 0 <= value < 2**bits:
            raise EncodeError(f"header.{name}={value!r}: must be an int in [0, 2**{bits})")
    if not is_int(message.flags) or message.flags & ~KNOWN_FLAGS:
        raise EncodeError(f"header.flags={message.flags!r}: only RESPONSE, JPEG and SEALED are "
                          "defined")
    flags = int(message.flags) & ~_JPEG  # the encoder owns the JPEG flag
    path = _PATH_OF[msg_type]
    try:
        if msg_type is MessageType.OBSERVATION:
            fields = _pack_observation(body, path, jpeg_quality)
            flags |= _JPEG if jpeg_quality is not None else 0
        else:
            fields = _PACKERS[type(body)](body, path)
        # Packed into the packer's own buffer, then copied once, after the header: packb
        # would copy the body into bytes first (a raw observation is ~300 kB).
        packer = msgpack.Packer(use_bin_type=True, autoreset=False)
        packer.pack(fields)
        packed = packer.getbuffer()
    except WireError:
        raise
    except (TypeError, ValueError, OverflowError) as exc:  # e.g. a lone surrogate in a str
        raise EncodeError(f"{path}: msgpack cannot encode the body ({exc})") from exc
    if len(packed) > max_body_bytes:
        raise MessageTooLarge(f"{path}: body of {len(packed)} bytes exceeds "
                              f"max_body_bytes={max_body_bytes}")
    return HEADER.pack(MAGIC, SCHEMA_VERSION, msg_type, flags, message.seq, message.episode,
                       message.epoch, message.client_ns, len(packed)) + packed


def _byte_view(buf: Any) -> memoryview:
    try:
        view = memoryview(buf)
        return view if view.format == "B" and view.ndim == 1 else view.cast("B")
    except Exception as exc:  # TypeError, ValueError, BufferError: none may escape decode
        raise DecodeError(f"buf: expected contiguous bytes, got {type(buf).__name__}") from exc


def _parse_header(view: memoryview, max_body_bytes: int) -> Header:
    if len(view) < HEADER.size:
        raise DecodeError(f"header: {len(view)} bytes, need at least {HEADER.size}")
    magic, version, msg_type, flags, seq, episode, epoch, client_ns, body_len = \
        HEADER.unpack_from(view)
    if magic != MAGIC:
        raise DecodeError(f"header.magic: {magic!r}, expected {MAGIC!r}")
    if version != SCHEMA_VERSION:
        raise UnsupportedVersion(f"header.version: {version}, this code speaks {SCHEMA_VERSION}",
                                 version=version, msg_type=msg_type)
    if msg_type not in _MESSAGE_TYPES:
        raise DecodeError(f"header.msg_type: unknown message type {msg_type}")
    if flags & ~KNOWN_FLAGS:
        raise DecodeError(f"header.flags: unknown bits {flags & ~KNOWN_FLAGS:#x} in {flags:#x}")
    if seq >= 2**63:  # a reply echoes it as its obs_seq, a count
        raise DecodeError(f"header.seq: {seq}, must be < 2**63")
    if body_len > max_body_bytes:
        raise MessageTooLarge(f"header.body_len: {body_len} exceeds "
                              f"max_body_bytes={max_body_bytes}")
    if body_len != len(view) - HEADER.size:
        raise DecodeError(f"header.body_len: {body_len}, but {len(view) - HEADER.size} body "
                          "bytes follow")
    return Header(_MESSAGE_TYPES[msg_type], seq, episode, epoch, client_ns, _FLAGS[flags],
                  body_len)


def header_seq(buf: bytes) -> int:
    """The sequence id in a message's header, read without checking the rest; -1 for bytes
    that do not start with one. What a client's stream inbox orders replies by
    (`TransportClient.order_stream_by`): garbage never displaces a real reply."""
    if len(buf) < HEADER.size or buf[:2] != MAGIC:
        return -1
    return int.from_bytes(buf[6:14], "little")


def is_error(buf: bytes) -> bool:
    """Whether `buf` starts with the header of an ERROR message, read without checking the
    rest (as `header_seq`). What a client's stream inbox sets aside instead of dropping when a
    newer reply displaces it (`transports.mailbox.SetAside`): a failure is counted once, not
    lost because something overtook it."""
    return len(buf) >= HEADER.size and buf[:2] == MAGIC and buf[3] == MessageType.ERROR


def decode_header(buf: bytes | bytearray | memoryview, *,
                  max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> Header:
    """Parse and check only the header of a whole message (`buf` must hold header and body).

    Cheap: a server can route or reject with it before parsing the body.

    Raises:
        UnsupportedVersion: the schema version is not SCHEMA_VERSION.
        MessageTooLarge: the declared body length exceeds `max_body_bytes`.
        DecodeError: short buffer, bad magic, unknown type or flag bits, length mismatch.
    """
    return _parse_header(_byte_view(buf), max_body_bytes)


def _reject_ext(code: int, data: bytes) -> None:
    raise DecodeError(f"msgpack ExtType {code} is not part of the schema")


def decode(buf: bytes | bytearray | memoryview, *,
           max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> Message:
    """Parse and validate a whole message.

    Decoded arrays are read-only views over the decoded body's bytes, not over `buf`.

    Raises:
        DecodeError: for any malformed input whatsoever, naming the field; subclasses
            UnsupportedVersion and MessageTooLarge as in `decode_header`. Nothing else escapes.
    """
    view = _byte_view(buf)
    header = _parse_header(view, max_body_bytes)
    path = _PATH_OF[header.msg_type]
    jpeg = bool(header.flags & _JPEG)
    if jpeg and header.msg_type is not MessageType.OBSERVATION:
        raise DecodeError(f"header.flags: JPEG is set on a {path} message")
    try:
        # ExtType goes through _reject_ext; a Timestamp (ext -1) fails the type checks below.
        raw = msgpack.unpackb(view[HEADER.size:], raw=False, strict_map_key=True,
                              use_list=True, ext_hook=_reject_ext, max_map_len=MAX_ENTRIES,
                              max_array_len=MAX_ENTRIES)
    except DecodeError as exc:
        raise DecodeError(f"{path}: {exc}") from exc
    except Exception as exc:  # msgpack raises many types (ValueError, StackError, ...)
        raise DecodeError(f"{path}: body is not valid msgpack ({type(exc).__name__}: {exc})") \
            from exc
    try:
        if header.msg_type is MessageType.OBSERVATION:
            body = _unpack_observation(raw, path, jpeg)
        else:
            body = _UNPACKERS[header.msg_type](raw, path)
    except DecodeError:
        raise
    except Exception as exc:  # safety net behind the precise checks: never crash a server
        raise DecodeError(f"{path}: malformed body ({type(exc).__name__}: {exc})") from exc
    return Message(body, seq=header.seq, episode=header.episode, epoch=header.epoch,
                   client_ns=header.client_ns, flags=header.flags)
