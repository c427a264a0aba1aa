"""The codec: exact round trips, JPEG images, and one typed error for every malformed input."""

from __future__ import annotations

import dataclasses
import random
import struct

import msgpack
import numpy as np
import pytest
import simplejpeg
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from harness import protocol
from harness.protocol import codec

CONTRACT = protocol.Contract(
    action_names=("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"),
    state={"joints": protocol.ArraySpec("float32", (7,)),
           "gripper": protocol.ArraySpec("float64", (2,))},
    images={"agentview": (128, 128), "wrist": (64, 96)},
    control_hz=20.0,
    chunk_size=8,
    model_id="oracle-v1",
)
DTYPES = ["bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
          "float16", "float32", "float64"]


def assert_same_value(sent, got) -> None:
    """Deep equality; arrays must match in little-endian dtype, shape and every byte."""
    if isinstance(sent, np.ndarray):
        assert isinstance(got, np.ndarray)
        assert got.dtype == sent.dtype.newbyteorder("<") and got.shape == sent.shape
        assert np.array_equal(sent, got, equal_nan=sent.dtype.kind == "f")
        assert sent.astype(got.dtype).tobytes() == got.tobytes()  # also -0.0 and NaN payloads
    elif isinstance(sent, dict):
        assert isinstance(got, dict) and list(sent) == list(got)
        for key in sent:
            assert_same_value(sent[key], got[key])
    elif hasattr(sent, "__dataclass_fields__"):
        assert type(sent) is type(got)
        for name in sent.__dataclass_fields__:
            assert_same_value(getattr(sent, name), getattr(got, name))
    else:
        assert type(sent) is type(got) and sent == got


def round_trip(message: protocol.Message, **kwargs) -> protocol.Message:
    decoded = protocol.decode(protocol.encode(message, **kwargs))
    assert (decoded.seq, decoded.episode, decoded.epoch, decoded.client_ns) == (
        message.seq, message.episode, message.epoch, message.client_ns)
    return decoded


def image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def smooth_image(size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    return np.stack([xx, yy, (xx + yy) // 2], axis=-1).astype(np.uint8)


def obs(state=None, images=None, instruction="", **delay) -> protocol.Message:
    """An observation message; `delay`: its tick, delay_ticks and committed prefix."""
    return protocol.Message(protocol.Observation(state or {}, images or {}, instruction,
                                                 **delay))


ROUND_TRIP_CASES = [
    # session open carrying a full contract
    protocol.Message(protocol.SessionOpen("client-1", CONTRACT), seq=1, client_ns=123),
    # session ok answers with the model's contract and the session id
    protocol.Message(protocol.SessionOk("s-42", CONTRACT), seq=1, epoch=3,
                     flags=protocol.Flags.RESPONSE),
    # a contract with no actions, state or cameras (a blind, stateless policy)
    protocol.Message(protocol.SessionOpen("c", protocol.Contract((), {}, {}, 10.0, 1, ""))),
    # a robot-side contract: any chunk size (0) and any model ("")
    protocol.Message(protocol.SessionOpen("c", protocol.Contract(("a",), {}, {}, 20.0, 0))),
    # a contract declaring every allowed dtype and a scalar (0-d) state, the largest values
    protocol.Message(protocol.SessionOpen("c", protocol.Contract(
        ("a",), {d: protocol.ArraySpec(d, ()) for d in DTYPES}, {"cam": (8192, 1)}, 0.5,
        2**63 - 1, "m"))),
    # reject carries the current load
    protocol.Message(protocol.SessionReject("max_sessions reached", 4, 4),
                     flags=protocol.Flags.RESPONSE),
    # observation with state, two cameras, unicode instruction and all header fields at max
    # (a sequence id is a count: a reply echoes it as its obs_seq)
    protocol.Message(protocol.Observation({"joints": np.arange(7, dtype=np.float32)},
                                          {"agentview": image(8, 8), "wrist": image(4, 6, 1)},
                                          "put the crème fraîche in the basket 🧀"),
                 seq=2**63 - 1, episode=2**32 - 1, epoch=2**32 - 1, client_ns=2**64 - 1),
    # observation with nothing in it: empty dicts and empty text
    obs(),
    # zero-length, one-element and 0-d arrays
    obs({"empty": np.zeros((0, 3), np.float32), "one": np.ones(1, np.int64),
         "scalar": np.array(2.5)}),
    # the largest allowed rank, 8 dimensions
    obs({"rank8": np.arange(256, dtype=np.int16).reshape((2,) * 8)}),
    # every allowed dtype, with each type's extremes
    obs({d: np.array([np.iinfo(d).min, 0, np.iinfo(d).max], d) if np.dtype(d).kind in "iu"
         else np.array([-np.inf, -0.0, np.nan, np.finfo(d).max], d) if np.dtype(d).kind == "f"
         else np.array([True, False]) for d in DTYPES}),
    # big-endian input travels as little-endian with the same values
    obs({"be_f8": np.arange(5, dtype=">f8"), "be_i4": np.array([-1, 2**31 - 1], ">i4")}),
    # a non-contiguous view (transposed, strided) is sent as its values
    obs({"view": np.arange(12, dtype=np.int32).reshape(3, 4).T[::2]}),
    # a one-pixel image and a zero-size raw image
    obs(images={"dot": image(1, 1), "none": np.zeros((0, 4, 3), np.uint8)}),
    # the 8x7 chunk a VLA returns, with durations
    protocol.Message(protocol.ActionChunk(np.linspace(-1, 1, 56, dtype=np.float32).reshape(8, 7),
                                          obs_seq=17, queue_wait_ns=1_500, infer_ns=20_000_000,
                                          model_id="oracle-v1"),
                     seq=18, flags=protocol.Flags.RESPONSE),
    # a chunk with zero steps is legal (the server had nothing to say)
    protocol.Message(protocol.ActionChunk(np.zeros((0, 7), np.float32), 0, 0, 0, "")),
    # a one-step, one-dimension chunk with the largest durations
    protocol.Message(protocol.ActionChunk(np.ones((1, 1), np.float64), 2**63 - 1, 2**63 - 1,
                                          2**63 - 1, "m")),
    # reset request and its acknowledgement
    protocol.Message(protocol.Reset("new episode"), episode=5),
    protocol.Message(protocol.Reset(), episode=5, flags=protocol.Flags.RESPONSE),
    # status request (empty) and reply with one value of every scalar type, int extremes
    protocol.Message(protocol.Status()),
    protocol.Message(protocol.Status({"sessions": 2, "load": 0.5, "model": "m", "draining": False,
                                      "min": -2**63, "max": 2**64 - 1}),
                     flags=protocol.Flags.RESPONSE),
    # an explicit error reply
    protocol.Message(protocol.Error("decode", "observation.state: expected a map")),
    # close with and without a reason
    protocol.Message(protocol.Close("done")),
    protocol.Message(protocol.Close(), flags=protocol.Flags.RESPONSE),
]


@pytest.mark.parametrize("message", ROUND_TRIP_CASES, ids=lambda m: m.msg_type.name.lower())
def test_round_trip_is_exact(message):
    decoded = round_trip(message)
    assert decoded.msg_type is message.msg_type
    assert decoded.flags == message.flags
    assert_same_value(message.body, decoded.body)


def test_header_is_34_little_endian_bytes_and_decodable_alone():
    buf = protocol.encode(protocol.Message(protocol.Close(), seq=0x0102030405060708, episode=9,
                                           epoch=7, client_ns=5, flags=protocol.Flags.RESPONSE))
    assert protocol.HEADER.size == 34
    assert buf[:4] == b"RH\x03\x09" and buf[4:6] == b"\x01\x00"
    assert buf[6:14] == bytes.fromhex("0807060504030201")
    assert protocol.decode_header(buf) == protocol.Header(
        protocol.MessageType.CLOSE, 0x0102030405060708, 9, 7, 5, protocol.Flags.RESPONSE,
        len(buf) - 34)


V1_SESSION_OPEN = bytes.fromhex(
    "5248010100000100000000000000000000000000000002000000000000008100000082a9636c69656e"
    "745f6964a163a8636f6e747261637486a86d6f64656c5f6964a16dac616374696f6e5f6e616d657391"
    "a178a5737461746581a16a82a56474797065a7666c6f61743332a573686170659102a6696d61676573"
    "81a363616d920406aa636f6e74726f6c5f687acb4034000000000000aa6368756e6b5f73697a6508")
"""A session open of schema version 1 (before delay-aware execution), as that codec wrote
it: what a client of the old version sends."""


def test_wire_bytes_are_pinned():
    """The bytes are the schema: key names, key order and value forms (a big-endian array
    travels little-endian, control_hz as a float64). A change here breaks every peer and the
    golden parity digests. Version 2 (delay-aware execution) appended `delay_aware` to the
    contract, `tick`, `delay_ticks`, `committed` to the observation and `start_tick` to the
    chunk, and left every version 1 key as it was; version 3 appended `batch_size` to the
    chunk (the version byte of every header changed with it)."""
    contract = protocol.Contract(("x",), {"j": protocol.ArraySpec("float32", (2,))},
                                 {"cam": (4, 6)}, 20.0, 8, "m")
    session_open = protocol.Message(protocol.SessionOpen("c", contract), seq=1, client_ns=2)
    encoded = protocol.encode(session_open)
    assert encoded == bytes.fromhex(
        "5248030100000100000000000000000000000000000002000000000000008e00000082a9636c69656e"
        "745f6964a163a8636f6e747261637487a86d6f64656c5f6964a16dac616374696f6e5f6e616d657391"
        "a178a5737461746581a16a82a56474797065a7666c6f61743332a573686170659102a6696d61676573"
        "81a363616d920406aa636f6e74726f6c5f687acb4034000000000000aa6368756e6b5f73697a6508ab"
        "64656c61795f6177617265c2")
    # Version 1's body is version 2's (and 3's) without the new key (its count 6, not 7).
    assert V1_SESSION_OPEN[34:] == (encoded[34:-13].replace(b"\xa8contract\x87",
                                                             b"\xa8contract\x86"))
    observation = protocol.Message(
        protocol.Observation({"s": np.array([1.5, -2], ">f4")},
                             {"cam": np.full((1, 1, 3), 7, np.uint8)}, "go", tick=9,
                             delay_ticks=1, committed=np.array([[0.5]], np.float32)),
        seq=3, episode=4, epoch=5, flags=protocol.Flags.RESPONSE)
    assert protocol.encode(observation) == bytes.fromhex(
        "524803040100030000000000000004000000050000000000000000000000a200000086a57374617465"
        "81a17383a56474797065a33c6634a573686170659102a464617461c4080000c03f000000c0a6696d61"
        "67657381a363616d83a56474797065a37c7531a5736861706593010103a464617461c403070707ab69"
        "6e737472756374696f6ea2676fa47469636b09ab64656c61795f7469636b7301a9636f6d6d69747465"
        "6483a56474797065a33c6634a57368617065920101a464617461c4040000003f")
    chunk = protocol.Message(protocol.ActionChunk(np.zeros((1, 1), np.float32), 3, 1, 2, "m",
                                                  start_tick=10))
    assert protocol.encode(chunk) == bytes.fromhex(
        "5248030500000000000000000000000000000000000000000000000000006d00000087a7616374696f"
        "6e7383a56474797065a33c6634a57368617065920101a464617461c40400000000a76f62735f736571"
        "03ad71756575655f776169745f6e7301a8696e6665725f6e7302a86d6f64656c5f6964a16daa737461"
        "72745f7469636b0aaa62617463685f73697a6501")


def test_a_version_1_message_is_refused_naming_both_versions():
    with pytest.raises(protocol.UnsupportedVersion,
                       match="header.version: 1, this code speaks 3") as caught:
        protocol.decode(V1_SESSION_OPEN)
    assert (caught.value.version, caught.value.msg_type) == (1, 1)


def test_the_delay_fields_round_trip_and_default_to_no_delay():
    prefix = np.array([[0.1, -0.2], [0.3, 0.4]], np.float32)
    decoded = round_trip(obs({"s": np.ones(2, np.float32)}, tick=7, delay_ticks=2,
                             committed=prefix)).body
    assert (decoded.tick, decoded.delay_ticks) == (7, 2)
    assert decoded.committed.dtype == np.float32 and decoded.committed.tobytes() == (
        prefix.tobytes())
    plain = round_trip(obs({"s": np.ones(2, np.float32)})).body
    assert (plain.tick, plain.delay_ticks, plain.committed.shape) == (0, 0, (0, 0))
    chunk = round_trip(protocol.Message(protocol.ActionChunk(
        np.ones((3, 2), np.float32), 1, 0, 0, "m", start_tick=12))).body
    assert chunk.start_tick == 12
    contract = protocol.Contract(("a",), {}, {}, 20.0, 1, "m", delay_aware=True)
    assert round_trip(protocol.Message(protocol.SessionOk("s", contract))).body.contract == (
        contract)


@pytest.mark.parametrize(("committed", "delay_ticks", "message"), [
    (np.zeros((2, 3), np.float32), 1, "observation.committed: 2 actions for delay_ticks=1"),
    (np.zeros((1, 3), np.float64), 1, "observation.committed: expected a 2-D float32"),
    (np.zeros(3, np.float32), 1, "observation.committed: expected a 2-D float32"),
])
def test_a_committed_prefix_that_does_not_fit_its_delay_is_refused_both_ways(
        committed, delay_ticks, message):
    bad = obs({}, delay_ticks=delay_ticks, committed=committed)
    with pytest.raises(protocol.EncodeError, match=message):
        protocol.encode(bad)
    good = protocol.encode(obs({}, delay_ticks=1, committed=np.zeros((1, 3), np.float32)))
    body = msgpack.unpackb(good[protocol.HEADER.size:])
    body["committed"]["shape"] = [2, 3]
    body["committed"]["data"] = np.zeros((2, 3), np.float32).tobytes()
    packed = msgpack.packb(body)
    tampered = good[:30] + len(packed).to_bytes(4, "little") + packed
    with pytest.raises(protocol.DecodeError,
                       match="observation.committed: 2 actions for delay_ticks=1"):
        protocol.decode(tampered)


def test_a_contract_whose_delay_aware_is_not_a_bool_is_refused():
    contract = protocol.Contract(("a",), {}, {}, 20.0, 1, "m", delay_aware=1)
    with pytest.raises(protocol.EncodeError, match="session_ok.contract.delay_aware: "
                                                   "expected a bool, got int"):
        protocol.encode(protocol.Message(protocol.SessionOk("s", contract)))


def test_an_int_control_hz_travels_as_a_float():
    contract = protocol.Contract(("a",), {}, {}, 20, 0)
    decoded = round_trip(protocol.Message(protocol.SessionOk("s", contract))).body.contract
    assert decoded.control_hz == 20.0 and type(decoded.control_hz) is float
    assert decoded == dataclasses.replace(contract, control_hz=20.0)


def test_decode_accepts_bytearray_and_memoryview():
    buf = protocol.encode(obs({"s": np.arange(3, dtype=np.float32)}))
    for view in (bytearray(buf), memoryview(buf), memoryview(b"pad" + buf)[3:]):
        assert_same_value(protocol.decode(buf).body, protocol.decode(view).body)


def test_decoded_arrays_are_read_only_views():
    array = protocol.decode(protocol.encode(obs({"s": np.ones(3, np.float32)}))).body.state["s"]
    with pytest.raises(ValueError, match="read-only"):
        array[0] = 2.0


def test_observation_and_action_chunk_compare_by_identity():
    observation = protocol.Observation({"s": np.ones(2)}, {}, "")
    assert observation == observation
    assert observation != protocol.Observation({"s": np.ones(2)}, {}, "")
    chunk = protocol.ActionChunk(np.ones((1, 2)), 0, 0, 0, "")
    assert chunk == chunk and chunk != protocol.ActionChunk(np.ones((1, 2)), 0, 0, 0, "")


# ---- property tests -------------------------------------------------------------------------

arrays = st.sampled_from(DTYPES).map(np.dtype).flatmap(lambda dt: hnp.arrays(
    dt, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)))
images = st.tuples(st.integers(1, 12), st.integers(1, 12)).flatmap(
    lambda hw: hnp.arrays(np.uint8, (*hw, 3)))
names = st.text(min_size=1, max_size=8)


@settings(max_examples=150, deadline=None)
@given(state=st.dictionaries(names, arrays, max_size=4),
       cams=st.dictionaries(names, images, max_size=3), text=st.text(max_size=40))
def test_any_observation_round_trips_exactly(state, cams, text):
    message = protocol.Message(protocol.Observation(state, cams, text))
    assert_same_value(message.body, round_trip(message).body)


@settings(max_examples=100, deadline=None)
@given(actions=st.sampled_from(DTYPES).flatmap(lambda dt: hnp.arrays(
           dt, hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=16))),
       obs_seq=st.integers(0, 2**63 - 1), wait_ns=st.integers(0, 2**63 - 1),
       infer_ns=st.integers(0, 2**63 - 1), model_id=st.text(max_size=20))
def test_any_action_chunk_round_trips_exactly(actions, obs_seq, wait_ns, infer_ns, model_id):
    message = protocol.Message(protocol.ActionChunk(actions, obs_seq, wait_ns, infer_ns, model_id))
    assert_same_value(message.body, round_trip(message).body)


@settings(max_examples=150, deadline=None)
@given(seq=st.integers(0, 2**63 - 1), episode=st.integers(0, 2**32 - 1),
       epoch=st.integers(0, 2**32 - 1), client_ns=st.integers(0, 2**64 - 1),
       flags=st.sampled_from([protocol.Flags.NONE, protocol.Flags.RESPONSE]),
       body=st.sampled_from([protocol.Reset("r"), protocol.Status(), protocol.Error("c", "d"),
                             protocol.Close()]))
def test_any_header_fields_round_trip(seq, episode, epoch, client_ns, flags, body):
    message = protocol.Message(body, seq=seq, episode=episode, epoch=epoch, client_ns=client_ns,
                               flags=flags)
    buf = protocol.encode(message)
    assert protocol.decode_header(buf) == protocol.Header(message.msg_type, seq, episode, epoch,
                                                          client_ns, flags, len(buf) - 34)
    assert protocol.decode(buf) == message


# ---- JPEG -----------------------------------------------------------------------------------

def test_jpeg_images_are_small_close_and_flagged():
    message = obs(images={"cam": smooth_image(224)})
    raw = protocol.encode(message)
    jpeg = protocol.encode(message, jpeg_quality=90)
    decoded = protocol.decode(jpeg)
    assert decoded.flags == protocol.Flags.JPEG
    assert protocol.decode(raw).flags == protocol.Flags.NONE
    out = decoded.body.images["cam"]
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - smooth_image(224).astype(int)).mean() < 8
    assert len(jpeg) < len(raw) / 5


def test_jpeg_keeps_state_exact_and_handles_one_pixel_and_odd_sizes():
    message = obs({"s": np.arange(3, dtype=np.float64)},
                  {"dot": np.full((1, 1, 3), 77, np.uint8), "odd": smooth_image(33)[:, :17]})
    decoded = round_trip(message, jpeg_quality=100)
    assert_same_value(message.body.state, decoded.body.state)
    assert decoded.body.images["dot"].shape == (1, 1, 3)
    assert decoded.body.images["odd"].shape == (33, 17, 3)


def test_encoder_owns_the_jpeg_flag():
    message = protocol.Message(protocol.Close(),
                               flags=protocol.Flags.JPEG | protocol.Flags.RESPONSE)
    decoded = protocol.decode(protocol.encode(message, jpeg_quality=50))
    assert decoded.flags == protocol.Flags.RESPONSE
    stale = protocol.Message(protocol.Observation({}, {"c": image(2, 2)}, ""),
                             flags=protocol.Flags.JPEG)
    assert protocol.decode(protocol.encode(stale)).flags == protocol.Flags.NONE
    assert protocol.decode(protocol.encode(obs(), jpeg_quality=50)).flags == protocol.Flags.JPEG


# ---- size limits ----------------------------------------------------------------------------

def test_body_of_exactly_max_body_bytes_passes_and_one_more_byte_does_not():
    message = obs({"big": np.zeros(1000, np.uint8)})
    body_len = len(protocol.encode(message)) - protocol.HEADER.size
    buf = protocol.encode(message, max_body_bytes=body_len)
    assert protocol.decode(buf, max_body_bytes=body_len).body.state["big"].shape == (1000,)
    with pytest.raises(protocol.MessageTooLarge, match=f"{body_len} bytes exceeds "
                                                       f"max_body_bytes={body_len - 1}"):
        protocol.encode(message, max_body_bytes=body_len - 1)
    with pytest.raises(protocol.MessageTooLarge, match=f"body_len: {body_len} exceeds"):
        protocol.decode(buf, max_body_bytes=body_len - 1)


def test_too_large_message_is_a_decode_error_too():
    assert issubclass(protocol.MessageTooLarge, protocol.DecodeError)
    assert issubclass(protocol.UnsupportedVersion, protocol.DecodeError)
    assert issubclass(protocol.EncodeError, ValueError)
    assert issubclass(protocol.DecodeError, ValueError)


# ---- fuzzing: only DecodeError may escape ---------------------------------------------------

ODD_VALUES = [None, True, -1, 2**64 - 1, -2**63, 1.5, float("nan"), "", "é", b"", b"\xff" * 9,
              [], [-1], [2**63, 2**63], {}, {"x": 1}, {"jpeg": b"\xff\xd8", "shape": [1, 1, 3]},
              {"dtype": "<f4", "shape": [2**40], "data": b""}, msgpack.ExtType(3, b"x")]


def valid_buffers() -> list[bytes]:
    buffers = [protocol.encode(m) for m in ROUND_TRIP_CASES]
    message = obs({"s": np.ones(3, np.float32)}, {"cam": smooth_image(16)}, "t")
    buffers.append(protocol.encode(message, jpeg_quality=80))
    return buffers


def rewrite_body(buf: bytes, rng: random.Random) -> bytes:
    """Re-pack a valid body with one value replaced, deleted or added: valid msgpack that
    reaches the schema checks instead of failing in msgpack."""
    tree = msgpack.unpackb(buf[protocol.HEADER.size:], raw=False)
    slots = []

    def walk(node):
        keys = list(node) if isinstance(node, dict) else range(len(node))
        for key in keys:
            slots.append((node, key))
            if isinstance(node[key], (dict, list)):
                walk(node[key])

    walk(tree)
    parent, key = rng.choice(slots)
    action = rng.randrange(3)
    if action == 0:
        parent[key] = rng.choice(ODD_VALUES)
    elif action == 1:
        del parent[key]
    elif isinstance(parent, dict):
        parent[rng.choice(["x", "data", "jpeg"])] = rng.choice(ODD_VALUES)
    else:
        parent.append(rng.choice(ODD_VALUES))
    body = msgpack.packb(tree, use_bin_type=True)
    header = bytearray(buf[:protocol.HEADER.size])
    struct.pack_into("<I", header, 30, len(body))
    return bytes(header) + body


def mutate(buf: bytes, rng: random.Random) -> bytes:
    data = bytearray(buf)
    choice = rng.randrange(8)
    if choice == 0:  # overwrite a few random bytes anywhere
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif choice == 1:  # truncate
        del data[rng.randrange(len(data)):]
    elif choice == 2:  # extend with garbage
        data += rng.randbytes(rng.randint(1, 64))
    elif choice == 3:  # rewrite one header field: version, type, flags or body_len
        offset, fmt = rng.choice([(2, "<B"), (3, "<B"), (4, "<H"), (30, "<I")])
        struct.pack_into(fmt, data, offset, rng.randrange(256 ** struct.calcsize(fmt)))
    elif choice == 4:  # flip bits in the body, keeping the header consistent
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(protocol.HEADER.size, len(data))] ^= 1 << rng.randrange(8)
    elif choice == 5:  # a valid header followed by a random body of the declared length
        body = rng.randbytes(rng.randint(0, 200))
        data = bytearray(data[:protocol.HEADER.size] + body)
        struct.pack_into("<I", data, 30, len(body))
    elif choice == 6:  # valid msgpack with one schema violation
        return rewrite_body(buf, rng)
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
            assert isinstance(protocol.decode(buf), protocol.Message)
            decoded_ok += 1
        except protocol.DecodeError:
            pass
        except Exception as exc:  # anything else would crash a server
            failures.append(f"{type(exc).__name__}: {exc} for {buf[:48].hex()}")
    assert failures == [], f"{len(failures)} failures, first: {failures[:5]}"
    assert 0 < decoded_ok < 5_000  # most mutations really produced invalid input


@pytest.mark.parametrize("value", [
    None,  # not a buffer at all
    "RH",  # text is not bytes
    [1, 2, 3],  # nor is a list
    memoryview(np.zeros((4, 4))).toreadonly()[::2],  # a non-contiguous buffer
])
def test_non_bytes_input_raises_decode_error(value):
    with pytest.raises(protocol.DecodeError, match="buf: expected contiguous bytes"):
        protocol.decode(value)


# ---- targeted decode errors -----------------------------------------------------------------

def header(msg_type=protocol.MessageType.CLOSE, flags=0, version=protocol.SCHEMA_VERSION,
           magic=protocol.MAGIC, body: bytes = b"", body_len: int | None = None) -> bytes:
    n = len(body) if body_len is None else body_len
    return protocol.HEADER.pack(magic, version, msg_type, flags, 0, 0, 0, 0, n) + body


def with_body(msg_type, value, flags=0) -> bytes:
    return header(msg_type, flags, body=msgpack.packb(value, use_bin_type=True))


def observation_with(state=None, images=None, flags=0) -> bytes:
    return with_body(protocol.MessageType.OBSERVATION,
                     {"state": state or {}, "images": images or {}, "instruction": "",
                      "tick": 0, "delay_ticks": 0, "committed": NO_PREFIX_MAP}, flags)


ARRAY = {"dtype": "<f4", "shape": [2], "data": bytes(8)}
ARRAY_2D = {"dtype": "<f4", "shape": [1, 2], "data": bytes(8)}
NO_PREFIX_MAP = {"dtype": "<f4", "shape": [0, 0], "data": b""}


def jpeg_map(shape=(16, 16, 3), data: bytes | None = None) -> dict:
    if data is None:
        data = simplejpeg.encode_jpeg(smooth_image(16), quality=80, colorspace="RGB")
    return {"jpeg": data, "shape": list(shape)}


def reject(**fields) -> bytes:
    return with_body(protocol.MessageType.SESSION_REJECT,
                     {"reason": "", "active_sessions": 0, "max_sessions": 1, **fields})


@pytest.mark.parametrize(("buf", "error", "match"), [
    # header
    (b"RH\x01", protocol.DecodeError, "header: 3 bytes, need at least 34"),
    (b"", protocol.DecodeError, "header: 0 bytes"),
    (header(magic=b"XX"), protocol.DecodeError, r"header.magic: b'XX', expected b'RH'"),
    (header(version=4), protocol.UnsupportedVersion, "header.version: 4, this code speaks 3"),
    (header(version=0), protocol.UnsupportedVersion, "header.version: 0"),
    (header(msg_type=0), protocol.DecodeError, "unknown message type 0"),
    (header(msg_type=10), protocol.DecodeError, "unknown message type 10"),
    (header(flags=0x80), protocol.DecodeError, "unknown bits 0x80 in 0x80"),
    (header(flags=0x8001), protocol.DecodeError, "unknown bits 0x8000 in 0x8001"),
    (header(body=b"\x80", body_len=5), protocol.DecodeError, "body_len: 5, but 1 body bytes"),
    (header(body=b"\x80", body_len=0), protocol.DecodeError, "body_len: 0, but 1 body bytes"),
    (header(body_len=2**32 - 1), protocol.MessageTooLarge,
     f"body_len: 4294967295 exceeds max_body_bytes={protocol.DEFAULT_MAX_BODY_BYTES}"),
    (with_body(protocol.MessageType.CLOSE, {"reason": ""}, flags=protocol.Flags.JPEG),
     protocol.DecodeError, "JPEG is set on a close message"),
    # msgpack itself
    (header(body=b"\xc1"), protocol.DecodeError, "close: body is not valid msgpack"),
    (header(body=b""), protocol.DecodeError, "close: body is not valid msgpack"),
    (header(body=b"\x81\xa1a"), protocol.DecodeError, "body is not valid msgpack"),  # truncated map
    (header(body=b"\x91" * 100_000), protocol.DecodeError, "body is not valid msgpack"),  # deep
    (header(body=msgpack.packb({1: 2})), protocol.DecodeError,
     "body is not valid msgpack"),  # int key
    (with_body(protocol.MessageType.CLOSE, {"reason": msgpack.ExtType(7, b"x")}),
     protocol.DecodeError, "close: msgpack ExtType 7 is not part of the schema"),
    (with_body(protocol.MessageType.CLOSE, {"reason": msgpack.Timestamp(1, 0)}),
     protocol.DecodeError, "close.reason: expected str, got Timestamp"),
    # body structure
    (with_body(protocol.MessageType.CLOSE, [""]), protocol.DecodeError,
     "close: expected a map, got list"),
    (with_body(protocol.MessageType.CLOSE, {}), protocol.DecodeError,
     r"close: missing keys \['reason'\], unexpected keys \[\]"),
    (with_body(protocol.MessageType.CLOSE, {"reason": "", "x": 1}), protocol.DecodeError,
     r"close: missing keys \[\], unexpected keys \['x'\]"),
    (with_body(protocol.MessageType.CLOSE, {"reason": "", b"reason": 1}), protocol.DecodeError,
     r"unexpected keys \[b'reason'\]"),
    (with_body(protocol.MessageType.ERROR, {"code": 1, "detail": ""}), protocol.DecodeError,
     "error.code: expected str, got int 1"),
    (reject(active_sessions=-1), protocol.DecodeError,
     r"session_reject.active_sessions: -1 is out of range, expected 0 <= n < 2\*\*63"),
    (reject(max_sessions=2**63), protocol.DecodeError, "max_sessions: 9223372036854775808 is out"),
    (reject(active_sessions=True), protocol.DecodeError,
     "active_sessions: expected int, got bool True"),
    (reject(max_sessions=1.0), protocol.DecodeError, "max_sessions: expected int, got float 1.0"),
    (with_body(protocol.MessageType.STATUS, {"fields": {"a": [1]}}), protocol.DecodeError,
     r"status.fields\['a'\]: expected int, float, str or bool, got list"),
    (with_body(protocol.MessageType.STATUS, {"fields": {b"a": 1}}), protocol.DecodeError,
     "status.fields: keys must be str, got bytes"),
    # contract
    (with_body(protocol.MessageType.SESSION_OPEN, {"client_id": "c", "contract": {
        "delay_aware": False,
        "model_id": "m", "action_names": [], "state": {}, "images": {}, "control_hz": 10.0,
        "chunk_size": "8"}}), protocol.DecodeError,
     "session_open.contract.chunk_size: expected int, got str '8'"),
    (with_body(protocol.MessageType.SESSION_OK, {"session_id": "s", "contract": {
        "delay_aware": False,
        "model_id": "m", "action_names": [], "state": {}, "images": {}, "control_hz": 10.0,
        "chunk_size": -1}}), protocol.DecodeError,
     r"session_ok.contract.chunk_size: -1 is out of range, expected 0 <= n < 2\*\*63"),
    (with_body(protocol.MessageType.SESSION_OK, {"session_id": "s", "contract": {
        "delay_aware": False,
        "model_id": "m", "action_names": [], "state": {}, "images": {}, "control_hz": 10.0,
        "chunk_size": 2**63}}), protocol.DecodeError,
     "contract.chunk_size: 9223372036854775808 is out of range"),
    (with_body(protocol.MessageType.SESSION_OK, {"session_id": "s", "contract": {
        "delay_aware": False,
        "model_id": "m", "action_names": [], "state": {}, "images": {},
        "control_hz": float("nan"), "chunk_size": 1}}), protocol.DecodeError,
     "control_hz: nan is out of range"),
    (with_body(protocol.MessageType.SESSION_OK, {"session_id": "s", "contract": {
        "delay_aware": False,
        "model_id": "m", "action_names": [7], "state": {}, "images": {}, "control_hz": 1,
        "chunk_size": 1}}), protocol.DecodeError,
     r"contract.action_names\[0\]: expected str, got int 7"),
    (with_body(protocol.MessageType.SESSION_OK, {"session_id": "s", "contract": {
        "delay_aware": False,
        "model_id": "m", "action_names": [], "images": {}, "control_hz": 1, "chunk_size": 1,
        "state": {"j": {"dtype": "object", "shape": [7]}}}}), protocol.DecodeError,
     r"contract.state\['j'\].dtype: 'object' is out of range, expected one of"),
    (with_body(protocol.MessageType.SESSION_OK, {"session_id": "s", "contract": {
        "delay_aware": False,
        "model_id": "m", "action_names": [], "state": {}, "control_hz": 1, "chunk_size": 1,
        "images": {"cam": [8193, 4]}}}), protocol.DecodeError,
     r"contract.images\['cam'\]\[0\]: 8193 is out of range, expected 1..8192"),
    (with_body(protocol.MessageType.SESSION_OK, {"session_id": "s", "contract": {
        "delay_aware": False,
        "model_id": "m", "action_names": [], "state": {}, "control_hz": 1, "chunk_size": 1,
        "images": {"cam": [4, 4, 3]}}}), protocol.DecodeError,
     r"contract.images\['cam'\]: 3 items, expected 2..2"),
    (with_body(protocol.MessageType.SESSION_OK, {"session_id": "s", "contract": {
        "delay_aware": False,
        "model_id": "m", "action_names": [], "state": {}, "control_hz": 1, "chunk_size": 1,
        "images": {"cam": [True, 4]}}}), protocol.DecodeError,
     r"contract.images\['cam'\]\[0\]: expected int, got bool True"),
    (with_body(protocol.MessageType.SESSION_OK, {"session_id": "s", "contract": {
        "delay_aware": False,
        "model_id": "m", "action_names": [], "images": {}, "control_hz": 1, "chunk_size": 1,
        "state": {"j": {"dtype": "float32"}}}}), protocol.DecodeError,
     r"contract.state\['j'\]: missing keys \['shape'\], unexpected keys \[\]"),
    (with_body(protocol.MessageType.SESSION_OK, {"session_id": "s", "contract": {
        "delay_aware": False,
        "model_id": "m", "action_names": [], "state": {}, "images": {}, "control_hz": "20",
        "chunk_size": 1}}), protocol.DecodeError,
     "session_ok.contract.control_hz: expected float, got str '20'"),
    (with_body(protocol.MessageType.SESSION_OK, {"session_id": "s", "contract": {
        "delay_aware": False,
        "model_id": "m", "action_names": "ab", "state": {}, "images": {}, "control_hz": 1,
        "chunk_size": 1}}), protocol.DecodeError,
     "session_ok.contract.action_names: expected a list, got str 'ab'"),
    (with_body(protocol.MessageType.SESSION_OPEN, {"client_id": "c", "contract": []}),
     protocol.DecodeError, "session_open.contract: expected a map, got list"),
    # arrays
    (observation_with({"s": {**ARRAY, "dtype": "|O"}}), protocol.DecodeError,
     r"observation.state\['s'\].dtype: '\|O' is out of range, expected one of"),
    (observation_with({"s": {**ARRAY, "dtype": ">f4"}}), protocol.DecodeError,
     r"dtype: '>f4' is out of range"),
    (observation_with({"s": {**ARRAY, "data": bytes(10)}}), protocol.DecodeError,
     r"observation.state\['s'\]: shape \[2\] needs 8 bytes, got 10"),
    (observation_with({"s": {**ARRAY, "shape": [8, 7], "data": bytes(10)}}), protocol.DecodeError,
     r"shape \[8, 7\] needs 224 bytes, got 10"),
    (observation_with({"s": {**ARRAY, "shape": [-2]}}), protocol.DecodeError,
     r"shape\[0\]: -2 is out of range"),
    (observation_with({"s": {**ARRAY, "shape": [1] * 9}}), protocol.DecodeError,
     r"shape: 9 items, expected 0..8"),
    (observation_with({"s": {**ARRAY, "shape": [0, 2**62], "data": b""}}), protocol.DecodeError,
     r"shape \[0, 4611686018427387904\] is too large"),
    (observation_with({"s": {**ARRAY, "shape": [2**32, 2**32], "data": b""}}), protocol.DecodeError,
     r"needs 73786976294838206464 bytes, got 0"),  # would wrap to 0 in 64-bit arithmetic
    (observation_with({"s": {**ARRAY, "shape": 2}}), protocol.DecodeError,
     "shape: expected a list, got int 2"),
    (observation_with({"s": {**ARRAY, "shape": [True, 2]}}), protocol.DecodeError,
     r"state\['s'\].shape\[0\]: expected int, got bool True"),
    (observation_with({"s": {**ARRAY, "shape": [2.0]}}), protocol.DecodeError,
     r"state\['s'\].shape\[0\]: expected int, got float 2.0"),
    (observation_with({"s": {**ARRAY, "dtype": 4}}), protocol.DecodeError,
     r"observation.state\['s'\].dtype: expected str, got int 4"),
    (observation_with({"s": {**ARRAY, "data": "12345678"}}), protocol.DecodeError,
     "data: expected bytes, got str"),
    (observation_with({"s": {"dtype": "|b1", "shape": [2], "data": b"\x01\x02"}}),
     protocol.DecodeError, "bool array holds bytes other than 0 and 1"),
    (with_body(protocol.MessageType.ACTION_CHUNK, {"actions": ARRAY, "obs_seq": 0,
                                                   "queue_wait_ns": 0, "infer_ns": 0,
                                                   "model_id": "", "start_tick": 0,
                                                   "batch_size": 1}),
     protocol.DecodeError,
     r"action_chunk.actions: expected a 2-D .* got float32 array of shape \[2\]"),
    (with_body(protocol.MessageType.ACTION_CHUNK, {"actions": ARRAY_2D, "obs_seq": 0,
                                                   "queue_wait_ns": 0, "infer_ns": 0,
                                                   "model_id": "", "start_tick": 0,
                                                   "batch_size": 0}),
     protocol.DecodeError, r"action_chunk.batch_size: 0, expected >= 1"),
    # images
    (observation_with(images={"cam": ARRAY}), protocol.DecodeError,
     r"images\['cam'\]: expected an HxWx3 uint8 image, got float32 array of shape \[2\]"),
    # a JPEG image while the JPEG flag is clear, and a raw one while it is set
    (observation_with(images={"cam": jpeg_map()}), protocol.DecodeError,
     r"images\['cam'\]: missing keys \['data', 'dtype'\], unexpected keys \['jpeg'\]"),
    (observation_with(images={"cam": {"dtype": "|u1", "shape": [1, 1, 3], "data": b"abc"}},
                      flags=protocol.Flags.JPEG), protocol.DecodeError,
     r"missing keys \['jpeg'\], unexpected keys \['data', 'dtype'\]"),
    (observation_with(images={"cam": jpeg_map(data=b"not a jpeg")}, flags=protocol.Flags.JPEG),
     protocol.DecodeError, r"images\['cam'\]: invalid JPEG"),
    (observation_with(images={"cam": jpeg_map(data=jpeg_map()["jpeg"][:200])},
                      flags=protocol.Flags.JPEG),
     protocol.DecodeError, "invalid JPEG"),  # truncated
    (observation_with(images={"cam": jpeg_map(shape=(16, 15, 3))}, flags=protocol.Flags.JPEG),
     protocol.DecodeError, r"JPEG is 16x16, declared \[16, 15, 3\]"),
    (observation_with(images={"cam": jpeg_map(shape=(8000, 8000, 3))}, flags=protocol.Flags.JPEG),
     protocol.DecodeError, r"JPEG is 16x16, declared \[8000, 8000, 3\]"),
    (observation_with(images={"cam": jpeg_map(shape=(9000, 16, 3))}, flags=protocol.Flags.JPEG),
     protocol.DecodeError, r"shape\[0\]: 9000 is out of range, expected 1..8192"),
    (observation_with(images={"cam": jpeg_map(shape=(16, 16, 1))}, flags=protocol.Flags.JPEG),
     protocol.DecodeError, r"shape: \[16, 16, 1\] is not \[height, width, 3\]"),
    (observation_with(images={"cam": jpeg_map(data="jpeg")}, flags=protocol.Flags.JPEG),
     protocol.DecodeError, r"images\['cam'\].jpeg: expected bytes, got str 'jpeg'"),
    (observation_with(images={"cam": {**jpeg_map(), "x": 1}}, flags=protocol.Flags.JPEG),
     protocol.DecodeError, r"images\['cam'\]: missing keys \[\], unexpected keys \['x'\]"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_malformed_input_raises_the_typed_error_naming_the_problem(buf, error, match):
    with pytest.raises(error, match=match):
        protocol.decode(buf)


def test_decode_errors_chain_their_cause():
    with pytest.raises(protocol.DecodeError) as info:
        protocol.decode(header(body=b"\xc1"))
    assert info.value.__cause__ is not None


def test_a_bug_behind_the_checks_still_raises_only_decode_error(monkeypatch):
    """The safety net: an unexpected exception while unpacking a body becomes a DecodeError,
    so a server answers with an error reply instead of crashing."""
    def broken(raw, path):
        raise KeyError("boom")

    monkeypatch.setitem(codec._UNPACKERS, protocol.MessageType.CLOSE, broken)
    with pytest.raises(protocol.DecodeError,
                       match=r"close: malformed body \(KeyError: 'boom'\)") as info:
        protocol.decode(protocol.encode(protocol.Message(protocol.Close())))
    assert isinstance(info.value.__cause__, KeyError)


# ---- encode errors --------------------------------------------------------------------------

@pytest.mark.parametrize(("message", "kwargs", "match"), [
    (obs({"s": np.array(["a"])}), {}, r"observation.state\['s'\]: dtype <U1 is not allowed"),
    (obs({"s": np.zeros(2, np.complex64)}), {}, "dtype complex64 is not allowed"),
    (obs({"s": np.array([None])}), {}, "dtype object is not allowed"),
    (obs({"s": np.zeros(2, [("a", "<f4")])}), {}, "is not allowed on the wire"),
    (obs({"s": [1.0, 2.0]}), {}, "expected a numpy array, got list"),
    (obs({"s": np.zeros((1,) * 9)}), {}, "9 dimensions, at most 8 allowed"),
    # a bool array viewed over arbitrary bytes: the decoder would reject it, so encode does
    (obs({"b": np.frombuffer(b"\x00\x02", np.bool_)}), {},
     r"observation.state\['b'\]: bool array holds bytes other than 0 and 1"),
    (obs({1: np.zeros(2)}), {}, "observation.state: keys must be str, got int 1"),
    (obs(images={"c": np.zeros((4, 4), np.uint8)}), {},
     r"images\['c'\]: expected an HxWx3 uint8 image, got uint8 array of shape \[4, 4\]"),
    (obs(images={"c": np.zeros((4, 4, 3), np.float32)}), {"jpeg_quality": 80},
     r"expected an HxWx3 uint8 image, got float32 array"),
    (obs(images={"c": np.zeros((0, 4, 3), np.uint8)}), {"jpeg_quality": 80},
     r"images\['c'\].shape\[0\]: 0 is out of range, expected 1..8192"),
    (obs(images={"c": np.zeros((1, 8193, 3), np.uint8)}), {"jpeg_quality": 80},
     r"images\['c'\].shape\[1\]: 8193 is out of range"),
    (obs(instruction=None), {}, "observation.instruction: expected str, got NoneType"),
    (obs(instruction="\ud800"), {}, "msgpack cannot encode the body"),
    (protocol.Message(protocol.ActionChunk(np.zeros(7, np.float32), 0, 0, 0, "")), {},
     r"action_chunk.actions: expected a 2-D \(steps, action_dim\) array, got float32"),
    (protocol.Message(protocol.ActionChunk([[0.0] * 7], 0, 0, 0, "")), {},
     "action_chunk.actions: expected a numpy array, got list"),
    (protocol.Message(protocol.ActionChunk(np.zeros((1, 7)), -5, 0, 0, "")), {},
     "action_chunk.obs_seq: -5 is out of range"),
    (protocol.Message(protocol.ActionChunk(np.zeros((1, 7)), 0, 0, 0, "", batch_size=0)), {},
     r"action_chunk.batch_size: 0, expected >= 1 \(robots in the pass\)"),
    (protocol.Message(protocol.ActionChunk(np.zeros((1, 7)), np.int64(3), 0, 0, "")), {},
     "action_chunk.obs_seq: expected int, got int64"),
    (protocol.Message(protocol.SessionReject("r", 1, "4")), {},
     "session_reject.max_sessions: expected int, got str '4'"),
    (protocol.Message(protocol.SessionOpen("c", protocol.Contract((), {}, {}, 0.0, 1, "m"))), {},
     "session_open.contract.control_hz: 0.0 is out of range"),
    (protocol.Message(protocol.SessionOpen("c", protocol.Contract((), {}, {}, 1.0, -1, "m"))), {},
     "session_open.contract.chunk_size: -1 is out of range"),
    (protocol.Message(protocol.SessionOpen("c", protocol.Contract((), {}, {}, 1.0, 2**63))), {},
     "session_open.contract.chunk_size: 9223372036854775808 is out of range"),
    (protocol.Message(protocol.SessionOpen("c", protocol.Contract((), {}, {}, 1.0, "8"))), {},
     "session_open.contract.chunk_size: expected int, got str '8'"),
    (protocol.Message(protocol.SessionOpen("c", protocol.Contract(
        (), {"j": protocol.ArraySpec("<f4", (7,))}, {}, 1.0, 1, "m"))), {},
     r"contract.state\['j'\].dtype: '<f4' is out of range"),
    (protocol.Message(protocol.SessionOpen("c", protocol.Contract(
        (), {}, {"cam": (0, 4)}, 1.0, 1, "m"))), {}, r"images\['cam'\]\[0\]: 0 is out of range"),
    (protocol.Message(protocol.SessionOpen("c", CONTRACT.state)), {},
     "session_open.contract: expected Contract, got dict"),
    (protocol.Message(protocol.SessionOpen("c", protocol.Contract((), {}, {}, float("inf"), 1))),
     {}, "session_open.contract.control_hz: inf is out of range"),
    (protocol.Message(protocol.SessionOpen("c", protocol.Contract(("a", 1), {}, {}, 1.0, 1))), {},
     r"session_open.contract.action_names\[1\]: expected str, got int 1"),
    (protocol.Message(protocol.SessionOpen("c", protocol.Contract((), {"j": (7,)}, {}, 1.0, 1))),
     {}, r"contract.state\['j'\]: expected ArraySpec, got tuple"),
    (protocol.Message(protocol.SessionOpen("c", protocol.Contract(
        (), {"j": protocol.ArraySpec("float32", (1,) * 9)}, {}, 1.0, 1))), {},
     r"contract.state\['j'\].shape: 9 items, expected 0..8"),
    (protocol.Message(protocol.SessionOpen("c", protocol.Contract(
        (), {"j": protocol.ArraySpec("float32", (True,))}, {}, 1.0, 1))), {},
     r"contract.state\['j'\].shape\[0\]: expected int, got bool True"),
    (protocol.Message(protocol.SessionOpen("c", protocol.Contract(
        (), {}, {"cam": (4, 4, 3)}, 1.0, 1))), {}, r"images\['cam'\]: 3 items, expected 2..2"),
    (protocol.Message(protocol.SessionOpen(7, CONTRACT)), {},
     "session_open.client_id: expected str, got int 7"),
    (protocol.Message(protocol.Status({"n": np.float32(1)})), {},
     r"status.fields\['n'\]: expected"),
    (protocol.Message(protocol.Status({"n": 2**64})), {},
     "is out of range, expected an int64 or uint64"),
    (protocol.Message(protocol.Close(), seq=-1), {},
     r"header.seq=-1: must be an int in \[0, 2\*\*63\)"),
    (protocol.Message(protocol.Close(), seq=2**63), {},
     r"header.seq=9223372036854775808: must be an int in \[0, 2\*\*63\)"),
    (protocol.Message(protocol.Observation({}, {}, "", tick=2**63 - 1, delay_ticks=1,
                                           committed=np.zeros((1, 3), np.float32))), {},
     r"observation.tick \+ delay_ticks = 9223372036854775807 \+ 1: the chunk's start must"),
    (protocol.Message(protocol.Close(), episode=2**32), {}, r"header.episode=4294967296"),
    (protocol.Message(protocol.Close(), epoch=1.0), {}, r"header.epoch=1.0"),
    (protocol.Message(protocol.Close(), client_ns=True), {}, r"header.client_ns=True"),
    (protocol.Message(protocol.Close(), flags=8), {},
     "header.flags=8: only RESPONSE, JPEG and SEALED"),
    (protocol.Message("hello"), {}, "message.body: str is not a message body"),
    (protocol.Close(), {}, "message: expected a Message, got Close"),
    (protocol.Message(protocol.Close()), {"jpeg_quality": 0},
     "jpeg_quality=0: must be an int in 1..100"),
    (protocol.Message(protocol.Close()), {"jpeg_quality": 101}, "jpeg_quality=101"),
    (protocol.Message(protocol.Close()), {"jpeg_quality": 90.0}, "jpeg_quality=90.0"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_unencodable_message_raises_encode_error_naming_the_field(message, kwargs, match):
    with pytest.raises(protocol.EncodeError, match=match):
        protocol.encode(message, **kwargs)
