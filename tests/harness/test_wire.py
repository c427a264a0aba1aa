"""Wire schema: exact round trips, JPEG images, and one typed error for every malformed input."""

from __future__ import annotations

import random
import struct

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from harness import wire

CAPS = wire.Capabilities(
    model_id="oracle-v1",
    action_names=("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"),
    state={"joints": wire.ArraySpec("float32", (7,)), "gripper": wire.ArraySpec("float64", (2,))},
    images={"agentview": (128, 128), "wrist": (64, 96)},
    control_hz=20.0,
    chunk_size=8,
)
DTYPES = ["bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
          "float16", "float32", "float64"]


def assert_same_value(a, b) -> None:
    """Deep equality where arrays must match in dtype, shape and every byte."""
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray)
        assert a.dtype.newbyteorder("<") == b.dtype and a.shape == b.shape
        assert a.astype(b.dtype).tobytes() == b.tobytes()
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b)
        for key in a:
            assert_same_value(a[key], b[key])
    elif hasattr(a, "__dataclass_fields__"):
        assert type(a) is type(b)
        for name in a.__dataclass_fields__:
            assert_same_value(getattr(a, name), getattr(b, name))
    else:
        assert a == b and type(a) is type(b)


def round_trip(message: wire.Message, **kwargs) -> wire.Message:
    decoded = wire.decode(wire.encode(message, **kwargs))
    assert (decoded.seq, decoded.episode, decoded.epoch, decoded.client_ns) == (
        message.seq, message.episode, message.epoch, message.client_ns)
    return decoded


def image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


ROUND_TRIP_CASES = [
    # session open carrying a full capability set
    wire.Message(wire.SessionOpen("client-1", CAPS), seq=1, client_ns=123),
    # session ok echoes capabilities back with the session id
    wire.Message(wire.SessionOk("s-42", CAPS), seq=1, epoch=3, flags=wire.Flags.RESPONSE),
    # capabilities with no state and no cameras (a blind, stateless policy)
    wire.Message(wire.SessionOpen("c", wire.Capabilities("", (), {}, {}, 10.0, 1))),
    # reject carries the current load
    wire.Message(wire.SessionReject("max_sessions reached", 4, 4), flags=wire.Flags.RESPONSE),
    # observation with state, two cameras and unicode instruction
    wire.Message(wire.Observation({"joints": np.arange(7, dtype=np.float32)},
                                  {"agentview": image(8, 8), "wrist": image(4, 6, 1)},
                                  "put the crème fraîche in the basket"),
                 seq=2**64 - 1, episode=2**32 - 1, epoch=2**32 - 1, client_ns=2**64 - 1),
    # observation with nothing in it: empty dicts and empty text
    wire.Message(wire.Observation({}, {}, "")),
    # zero-length and one-element arrays
    wire.Message(wire.Observation({"empty": np.zeros((0, 3), np.float32),
                                   "one": np.ones(1, np.int64)}, {}, "x")),
    # every allowed dtype
    wire.Message(wire.Observation({d: np.arange(4).astype(d) for d in DTYPES}, {}, "dtypes")),
    # big-endian input travels as little-endian with the same values
    wire.Message(wire.Observation({"be": np.arange(5, dtype=">f8")}, {}, "")),
    # the 8x7 chunk a VLA returns, with durations
    wire.Message(wire.ActionChunk(np.linspace(-1, 1, 56, dtype=np.float32).reshape(8, 7),
                                  obs_seq=17, queue_wait_ns=1_500, infer_ns=20_000_000,
                                  model_id="oracle-v1"), seq=18, flags=wire.Flags.RESPONSE),
    # a chunk with zero steps is legal (the server had nothing to say)
    wire.Message(wire.ActionChunk(np.zeros((0, 7), np.float32), 0, 0, 0, "")),
    # reset, status request and reply, error, close
    wire.Message(wire.Reset("new episode"), episode=5),
    wire.Message(wire.Status()),
    wire.Message(wire.Status({"sessions": 2, "load": 0.5, "model": "m", "draining": False}),
                 flags=wire.Flags.RESPONSE),
    wire.Message(wire.Error("decode", "observation.state: expected a map")),
    wire.Message(wire.Close("done")),
]


@pytest.mark.parametrize("message", ROUND_TRIP_CASES,
                         ids=lambda m: f"{m.msg_type.name.lower()}")
def test_round_trip_is_exact(message):
    decoded = round_trip(message)
    assert decoded.msg_type is message.msg_type
    assert decoded.flags == message.flags
    assert_same_value(message.body, decoded.body)


def test_header_is_34_bytes_little_endian_and_decodable_alone():
    buf = wire.encode(wire.Message(wire.Close(), seq=0x0102030405060708, episode=9))
    assert wire.HEADER.size == 34
    assert buf[:2] == b"RH" and buf[2] == wire.SCHEMA_VERSION and buf[3] == 9
    assert buf[6:14] == bytes.fromhex("0807060504030201")
    header = wire.decode_header(buf)
    assert header.msg_type is wire.MessageType.CLOSE and header.episode == 9
    assert header.body_len == len(buf) - 34


allowed_dtypes = st.sampled_from(DTYPES).map(np.dtype)
arrays = allowed_dtypes.flatmap(lambda dt: hnp.arrays(
    dt, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
    elements=hnp.from_dtype(dt, allow_nan=False) if dt.kind == "f" else None))
images = st.tuples(st.integers(1, 12), st.integers(1, 12)).flatmap(
    lambda hw: hnp.arrays(np.uint8, (*hw, 3)))
names = st.text(min_size=1, max_size=8)


@settings(max_examples=150, deadline=None)
@given(state=st.dictionaries(names, arrays, max_size=4),
       cams=st.dictionaries(names, images, max_size=3), text=st.text(max_size=40),
       seq=st.integers(0, 2**64 - 1), episode=st.integers(0, 2**32 - 1),
       client_ns=st.integers(0, 2**64 - 1))
def test_any_observation_round_trips_exactly(state, cams, text, seq, episode, client_ns):
    message = wire.Message(wire.Observation(state, cams, text), seq=seq, episode=episode,
                           client_ns=client_ns)
    assert_same_value(message.body, round_trip(message).body)


@settings(max_examples=100, deadline=None)
@given(actions=hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, max_side=16),
                          elements=st.floats(-1e6, 1e6, width=32)),
       obs_seq=st.integers(0, 2**63 - 1), infer_ns=st.integers(0, 2**63 - 1))
def test_any_action_chunk_round_trips_exactly(actions, obs_seq, infer_ns):
    message = wire.Message(wire.ActionChunk(actions, obs_seq, 0, infer_ns, "m"))
    assert_same_value(message.body, round_trip(message).body)


def smooth_image(size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    return np.stack([xx, yy, (xx + yy) // 2], axis=-1).astype(np.uint8)


def test_jpeg_images_are_small_close_and_flagged():
    obs = wire.Observation({}, {"cam": smooth_image(224)}, "")
    raw = wire.encode(wire.Message(obs))
    jpeg = wire.encode(wire.Message(obs), jpeg_quality=90)
    decoded = wire.decode(jpeg)
    assert decoded.flags & wire.Flags.JPEG and not wire.decode(raw).flags & wire.Flags.JPEG
    out = decoded.body.images["cam"]
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - smooth_image(224).astype(int)).mean() < 8
    assert len(jpeg) < len(raw) / 5


def valid_buffers() -> list[bytes]:
    buffers = [wire.encode(m) for m in ROUND_TRIP_CASES]
    obs = wire.Observation({"s": np.ones(3, np.float32)}, {"cam": smooth_image(16)}, "t")
    buffers.append(wire.encode(wire.Message(obs), jpeg_quality=80))
    return buffers


def mutate(buf: bytes, rng: random.Random) -> bytes:
    data = bytearray(buf)
    choice = rng.randrange(7)
    if choice == 0:  # flip a few random bytes anywhere
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif choice == 1:  # truncate
        del data[rng.randrange(len(data)):]
    elif choice == 2:  # extend with garbage
        data += rng.randbytes(rng.randint(1, 64))
    elif choice == 3:  # rewrite one header field with a random value
        offset, fmt = rng.choice([(2, "<B"), (3, "<B"), (4, "<H"), (30, "<I")])
        struct.pack_into(fmt, data, offset, rng.randrange(256 ** struct.calcsize(fmt)))
    elif choice == 4:  # flip bytes in the body but keep the header consistent
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(wire.HEADER.size, len(data))] ^= 1 << rng.randrange(8)
    elif choice == 5:  # a valid header followed by a random msgpack-ish body
        body = rng.randbytes(rng.randint(0, 200))
        data = bytearray(data[:wire.HEADER.size] + body)
        struct.pack_into("<I", data, 30, len(body))
    else:  # entirely random bytes
        data = bytearray(rng.randbytes(rng.randint(0, 300)))
    return bytes(data)


def test_ten_thousand_mutated_buffers_raise_only_decode_error():
    rng = random.Random(1234)
    sources = valid_buffers()
    failures, decoded_ok = [], 0
    for _ in range(10_000):
        buf = mutate(rng.choice(sources), rng)
        try:
            wire.decode(buf)
            decoded_ok += 1
        except wire.DecodeError:
            pass
        except Exception as exc:  # anything else would crash a server
            failures.append(f"{type(exc).__name__}: {exc} for {buf[:48].hex()}")
    assert failures == [], failures[:5]
    assert decoded_ok < 10_000  # the mutations really produced invalid input


def header(msg_type=wire.MessageType.CLOSE, flags=0, version=wire.SCHEMA_VERSION,
           magic=wire.MAGIC, body: bytes = b"", body_len: int | None = None) -> bytes:
    n = len(body) if body_len is None else body_len
    return wire.HEADER.pack(magic, version, msg_type, flags, 0, 0, 0, 0, n) + body


def body_of(msg_type, value) -> bytes:
    return header(msg_type, body=msgpack.packb(value, use_bin_type=True))


GOOD_ARRAY = {"dtype": "<f4", "shape": [2], "data": bytes(8)}


@pytest.mark.parametrize(("buf", "error", "match"), [
    (b"RH\x01", wire.DecodeError, "need at least 34"),
    (header(magic=b"XX"), wire.DecodeError, "magic"),
    (header(version=2), wire.UnsupportedVersion, "version: 2"),
    (header(msg_type=99), wire.DecodeError, "unknown message type 99"),
    (header(flags=0x80), wire.DecodeError, "unknown bits 0x80"),
    (header(body=b"\x80", body_len=5), wire.DecodeError, "body_len: 5"),
    (header(body_len=2**31), wire.MessageTooLarge, "exceeds max_body_bytes"),
    (header(body=b"\xc1"), wire.DecodeError, "not valid msgpack"),
    (body_of(wire.MessageType.CLOSE, {}), wire.DecodeError, r"missing keys \['reason'\]"),
    (body_of(wire.MessageType.CLOSE, {"reason": "", "x": 1}), wire.DecodeError,
     r"unexpected keys \['x'\]"),
    (body_of(wire.MessageType.SESSION_REJECT, {"reason": "", "active_sessions": -1,
                                               "max_sessions": 1}),
     wire.DecodeError, "active_sessions: -1"),
    (body_of(wire.MessageType.SESSION_REJECT, {"reason": "", "active_sessions": True,
                                               "max_sessions": 1}),
     wire.DecodeError, "expected int, got bool"),
    (body_of(wire.MessageType.OBSERVATION, {"state": {"s": {**GOOD_ARRAY, "dtype": "|O"}},
                                            "images": {}, "instruction": ""}),
     wire.DecodeError, r"'\|O' is not in the allowlist"),
    (body_of(wire.MessageType.OBSERVATION, {"state": {"s": {**GOOD_ARRAY, "data": bytes(10)}},
                                            "images": {}, "instruction": ""}),
     wire.DecodeError, "needs 8 bytes, got 10"),
    (body_of(wire.MessageType.OBSERVATION, {"state": {"s": {**GOOD_ARRAY, "shape": [-2]}},
                                            "images": {}, "instruction": ""}),
     wire.DecodeError, "dimension -2"),
    (body_of(wire.MessageType.OBSERVATION, {"state": {}, "instruction": "", "images": {
        "cam": {"jpeg": b"not a jpeg", "shape": [4, 4, 3]}}}),
     wire.DecodeError, "invalid JPEG"),
    (body_of(wire.MessageType.ACTION_CHUNK, {"actions": GOOD_ARRAY, "obs_seq": 0,
                                             "queue_wait_ns": 0, "infer_ns": 0,
                                             "model_id": ""}),
     wire.DecodeError, "expected 2 dimensions"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_malformed_input_raises_the_typed_error_naming_the_problem(buf, error, match):
    with pytest.raises(error, match=match):
        wire.decode(buf)


def test_jpeg_whose_declared_shape_differs_is_rejected_before_decoding():
    buf = wire.encode(wire.Message(wire.Observation({}, {"cam": smooth_image(16)}, "")),
                      jpeg_quality=80)
    raw = msgpack.unpackb(buf[wire.HEADER.size:])
    raw["images"]["cam"]["shape"] = [8000, 8000, 3]
    forged = header(wire.MessageType.OBSERVATION, flags=wire.Flags.JPEG,
                    body=msgpack.packb(raw, use_bin_type=True))
    with pytest.raises(wire.DecodeError, match="JPEG is 16x16, declared"):
        wire.decode(forged)


def test_jpeg_flag_must_match_the_body():
    buf = bytearray(wire.encode(wire.Message(wire.Observation({}, {"c": image(4, 4)}, ""))))
    struct.pack_into("<H", buf, 4, wire.Flags.JPEG)
    with pytest.raises(wire.DecodeError, match="JPEG flag"):
        wire.decode(bytes(buf))


def test_oversize_body_is_refused_on_encode_and_on_decode():
    message = wire.Message(wire.Observation({"big": np.zeros(1000, np.uint8)}, {}, ""))
    with pytest.raises(wire.MessageTooLarge, match="max_body_bytes=100"):
        wire.encode(message, max_body_bytes=100)
    with pytest.raises(wire.MessageTooLarge):
        wire.decode(wire.encode(message), max_body_bytes=100)


@pytest.mark.parametrize(("message", "match"), [
    (wire.Message(wire.Observation({"s": np.array(["a"])}, {}, "")), "not allowed on the wire"),
    (wire.Message(wire.Observation({"s": np.zeros(2, np.complex64)}, {}, "")), "complex64"),
    (wire.Message(wire.Observation({}, {"c": np.zeros((4, 4), np.uint8)}, "")), "HxWx3 uint8"),
    (wire.Message(wire.ActionChunk(np.zeros(7, np.float32), 0, 0, 0, "")), "2-D array"),
    (wire.Message(wire.Close(), seq=-1), r"header\.seq=-1"),
    (wire.Message(wire.Close(), episode=2**32), r"header\.episode"),
])
def test_unencodable_message_raises_encode_error_naming_the_field(message, match):
    with pytest.raises(wire.EncodeError, match=match):
        wire.encode(message)


def test_jpeg_quality_out_of_range_is_an_encode_error():
    with pytest.raises(wire.EncodeError, match="jpeg_quality=0"):
        wire.encode(wire.Message(wire.Close()), jpeg_quality=0)


def test_decoded_arrays_are_read_only_views():
    message = wire.Message(wire.Observation({"s": np.ones(3, np.float32)}, {}, ""))
    array = wire.decode(wire.encode(message)).body.state["s"]
    with pytest.raises(ValueError, match="read-only"):
        array[0] = 2.0
