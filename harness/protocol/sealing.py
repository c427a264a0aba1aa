"""A sealed session stream: with `security=mtls` every message the server streams to a robot
(chunks, ERROR replies) ends with a MAC under a key only that robot's session knows, so a
chunk the robot executes provably comes from its server's session, even where a transport
would let a forged one through (defence in depth: the transports' own authentication and
Zenoh's ACL already keep other robots off a robot's stream).

The key is derived from the session id, a 128-bit random string the server sends only in
its SESSION_OK reply, over the robot's own authenticated and encrypted request path; the
reply's SEALED flag tells the robot to expect the MAC. The tag goes after the encoded
message, so the message itself (and the golden digests) are unchanged.
"""

from __future__ import annotations

import hashlib
import hmac

from harness.protocol.messages import Flags

TAG_BYTES = 16
"""HMAC-SHA256 truncated to 128 bits."""
_LABEL = b"robot-policy-harness stream seal v1"


def stream_key(session_id: str) -> bytes:
    return hmac.new(session_id.encode("utf-8"), _LABEL, hashlib.sha256).digest()


def stream_key_of(session_ok) -> bytes | None:
    """The key a SESSION_OK reply (a `Message`) says its session's stream is sealed under;
    None if it is not sealed."""
    return stream_key(session_ok.body.session_id) if session_ok.flags & Flags.SEALED else None


def seal(payload: bytes, key: bytes) -> bytes:
    return payload + hmac.new(key, payload, hashlib.sha256).digest()[:TAG_BYTES]


def unseal(sealed: bytes, key: bytes) -> bytes | None:
    """The message, if its tag is `key`'s; None if it is not (forged, or of another
    session)."""
    if len(sealed) < TAG_BYTES:
        return None
    payload, tag = sealed[:-TAG_BYTES], sealed[-TAG_BYTES:]
    expected = hmac.new(key, payload, hashlib.sha256).digest()[:TAG_BYTES]
    return payload if hmac.compare_digest(tag, expected) else None
