"""The wire protocol: messages, their codec, and the contract a session agrees on.

Every transport carries exactly these bytes; read `messages.py` (what can be said),
`contract.py` (what both sides must agree on) and `codec.py` (how it becomes bytes).
"""

from harness.protocol.codec import (
    ALLOWED_DTYPES,
    MAX_IMAGE_SIDE,
    MAX_NDIM,
    decode,
    decode_header,
    encode,
    header_seq,
    is_error,
)
from harness.protocol.contract import (
    DTYPE_NAMES,
    ArraySpec,
    Contract,
    ContractMismatch,
    check_contract,
)
from harness.protocol.messages import (
    DEFAULT_MAX_BODY_BYTES,
    ERROR_CONTRACT,
    ERROR_INTERNAL,
    ERROR_PROTOCOL,
    HEADER,
    MAGIC,
    MAX_ERROR_DETAIL_CHARS,
    NO_PREFIX,
    REJECT_CLIENT_ID,
    REJECT_CONTRACT,
    REJECT_VERSION,
    SCHEMA_VERSION,
    SESSION_UNKNOWN,
    ActionChunk,
    Body,
    Close,
    DecodeError,
    EncodeError,
    Error,
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
    bounded,
    retryable_reject,
)

__all__ = [
    "ALLOWED_DTYPES", "ActionChunk", "ArraySpec", "Body", "Close", "Contract", "ContractMismatch",
    "DEFAULT_MAX_BODY_BYTES", "DTYPE_NAMES", "DecodeError", "ERROR_CONTRACT", "ERROR_INTERNAL",
    "ERROR_PROTOCOL", "EncodeError", "Error", "Flags", "HEADER", "Header", "MAGIC",
    "MAX_ERROR_DETAIL_CHARS", "MAX_IMAGE_SIDE", "MAX_NDIM", "Message", "MessageTooLarge",
    "MessageType", "NO_PREFIX", "Observation", "REJECT_CLIENT_ID", "REJECT_CONTRACT",
    "REJECT_VERSION", "Reset", "SCHEMA_VERSION", "SESSION_UNKNOWN", "SessionOk", "SessionOpen",
    "SessionReject", "Status", "UnsupportedVersion", "WireError", "bounded", "check_contract",
    "decode", "decode_header", "encode", "header_seq", "is_error", "retryable_reject",
]
