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
    ERROR_PROTOCOL,
    HEADER,
    MAGIC,
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
    retryable_reject,
)

__all__ = [
    "ALLOWED_DTYPES", "DEFAULT_MAX_BODY_BYTES", "DTYPE_NAMES", "ERROR_CONTRACT", "ERROR_PROTOCOL",
    "HEADER", "MAGIC", "MAX_IMAGE_SIDE", "MAX_NDIM", "NO_PREFIX", "REJECT_CLIENT_ID",
    "REJECT_CONTRACT", "REJECT_VERSION", "SCHEMA_VERSION", "SESSION_UNKNOWN", "ActionChunk",
    "ArraySpec", "Body", "Close", "Contract",
    "ContractMismatch", "DecodeError", "EncodeError", "Error", "Flags", "Header", "Message",
    "MessageTooLarge", "MessageType", "Observation", "Reset", "SessionOk", "SessionOpen",
    "SessionReject", "Status", "UnsupportedVersion", "WireError", "check_contract", "decode",
    "decode_header", "encode", "header_seq", "retryable_reject",
]
