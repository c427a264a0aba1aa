"""The messages of the wire schema: what one side can say to the other, as Python types.

A message is a fixed little-endian header (routing fields a server can act on without parsing
the body) plus one body, a frozen dataclass per message type. `harness.protocol.codec` turns
them into bytes and back; `harness.protocol.contract` holds what a session agrees on.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

import numpy as np

from harness.protocol.contract import Contract

SCHEMA_VERSION = 3
"""3: a chunk says how many robots' observations its pass predicted together
(`batch_size`). 2: observations carry their tick, the client's expected delay and the
committed action prefix, chunks the tick of their first action, contracts whether the model
is delay-aware (issue 12). Messages of another version are not decoded: a session open of
another version is refused with `REJECT_VERSION`, and a client whose server answers in
another version stops."""
MAGIC = b"RH"
HEADER = struct.Struct("<2sBBHQIIQI")
"""magic, version, message type, flags, seq, episode, epoch, client monotonic ns, body length."""
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024


class WireError(ValueError):
    """Base of the wire errors; the message names the field path and the bad value."""


class DecodeError(WireError):
    """Bytes that are not a valid message of this schema."""


class UnsupportedVersion(DecodeError):
    """The header's schema version is not one this code speaks. Carries the version and
    the raw message type byte, so a server can refuse a session open of another version with
    a reject naming both versions rather than a bare decode error."""

    def __init__(self, message: str, *, version: int = -1, msg_type: int = -1) -> None:
        super().__init__(message)
        self.version = version
        self.msg_type = msg_type


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
    SEALED = 4
    """On a SESSION_OK: every message of this session's stream ends with a MAC
    (`harness.protocol.sealing`; security=mtls)."""


KNOWN_FLAGS = int(Flags.RESPONSE | Flags.JPEG | Flags.SEALED)


# ---- bodies: one frozen dataclass per message type ------------------------------------------

@dataclass(frozen=True)
class SessionOpen:
    """First message of a client: who it is and what it sends and expects."""
    client_id: str
    contract: Contract


@dataclass(frozen=True)
class SessionOk:
    """The server accepted the session; `contract` is the hosted model's own."""
    session_id: str
    contract: Contract


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
    tick: int = 0
    """Control tick (of the episode) the observation was taken at; `ActionChunk.start_tick`
    counts in the same ticks."""
    delay_ticks: int = 0
    """How many ticks after `tick` the client expects the reply to be usable (from the round
    trips it measured, or the configured latency model); 0: it does not say."""
    committed: np.ndarray = field(default_factory=lambda: NO_PREFIX)
    """(delay_ticks, action_dim) float32: the committed prefix, the actions the robot will
    execute at ticks `tick` .. `tick + delay_ticks - 1` whatever the reply says. A
    delay-aware policy plans from the state they lead to; any other ignores them."""


NO_PREFIX = np.zeros((0, 0), np.float32)
NO_PREFIX.flags.writeable = False


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
    start_tick: int = 0
    """The tick its first action is meant for: the observation's tick, or for a delay-aware
    policy the first tick after the committed prefix (`tick + delay_ticks`)."""
    batch_size: int = 1
    """How many robots' observations the pass that predicted it served (1: alone): what
    `infer_ns`, the pass's time, was shared with (`server.scheduler=micro_batch`)."""


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


ERROR_CONTRACT = "contract"
"""`Error.code` for an observation that breaks the session's contract (a missing key, a wrong
shape or dtype, a non-finite value): it was not given to the policy."""
ERROR_PROTOCOL = "protocol"
"""`Error.code` for a message of the wrong type on a path (a chunk sent as a request, a
reset on the stream): the session itself is fine."""
ERROR_INTERNAL = "internal"
"""`Error.code` when serving the message failed in a way no check foresaw: the server goes
on serving, and the robot counts it as a server error."""

MAX_ERROR_DETAIL_CHARS = 1024
"""Longest `Error.detail` (and audit detail) a server sends or logs: a detail may quote what
the robot sent, and what a robot sends must not size the reply or the log line."""


def bounded(text: str, limit: int = MAX_ERROR_DETAIL_CHARS) -> str:
    """`text` cut to `limit` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"

REJECT_CONTRACT = "contract mismatch"
REJECT_CLIENT_ID = "client_id"
REJECT_VERSION = "schema version"
"""`SessionReject.reason` prefixes no retry can fix. Any other reason (draining,
`max_sessions` reached) may clear: a client retries those with backoff for a bounded time."""


def retryable_reject(reason: str) -> bool:
    """Whether a session reject with this reason may succeed if tried again later."""
    return not reason.startswith((REJECT_CONTRACT, REJECT_CLIENT_ID, REJECT_VERSION))


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

