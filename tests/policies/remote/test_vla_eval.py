"""`VlaEvalAdapter` against vla-eval 0.8.0's own server (`run_server` hosting
`peers/vla_eval/serve.py`'s `PredictModelServer`) and its own codec
(`vla_eval.protocol.messages`), both run from `peers/.venv-vlaeval`."""

from __future__ import annotations

import time

import msgpack
import numpy as np
import pytest

from harness.faults.proxy import FaultProxy
from policies.remote.base import ModelInput, RemoteError, RemoteUnavailable, SpecMismatch
from policies.remote.msgpack_numpy import ImageFormat, unpackb_vla_eval
from policies.remote.vla_eval import (
    _CLOSE_TIMEOUT_S,
    MessageType,
    ReplyChunkMismatch,
    VlaEvalAdapter,
    encode_envelope,
    observation_payload,
)
from tests.policies.remote.peers import (
    VLA_EVAL_VENV,
    assert_same_value,
    run_in_peer,
    vla_eval_peer,
)

HORIZON, ACTION_DIM = 10, 7

RECIPE = """
import numpy as np
h, w = 6, 5
image = (np.arange(h * w * 3) % 251).astype(np.uint8).reshape(h, w, 3)
payload = {"images": {"agentview": image, "wrist": image[::-1].copy()},
           "task_description": "open the drawer", "state": np.linspace(-1.0, 1.0, 8)}
"""

PACK_WITH_VLA_EVAL = RECIPE + """
import sys
from vla_eval.protocol.messages import Message, MessageType, pack_message
from vla_eval.protocol.numpy_codec import set_image_format
set_image_format("raw")
sys.stdout.buffer.write(pack_message(
    Message(type=MessageType.OBSERVATION, payload=payload, seq=3, timestamp=1.5)))
"""

REPACK_RAW_WITH_VLA_EVAL = """
import sys
from vla_eval.protocol.messages import pack_message, unpack_message
from vla_eval.protocol.numpy_codec import set_image_format
message = unpack_message(sys.stdin.buffer.read())
set_image_format("raw")
sys.stdout.buffer.write(pack_message(message))
"""


REPACK_EACH_WITH_VLA_EVAL = """
import sys
import msgpack
from vla_eval.protocol.messages import pack_message, unpack_message
from vla_eval.protocol.numpy_codec import set_image_format
set_image_format("raw")
frames = msgpack.unpackb(sys.stdin.buffer.read())
sys.stdout.buffer.write(msgpack.packb([pack_message(unpack_message(f)) for f in frames]))
"""

CODEC_CASES = {
    # An empty chunk: zero rows, the shape still says 7 columns.
    "empty": (np.zeros((0, 7), np.float32), None),
    # A 0-d array is an array map with shape [], not a scalar.
    "zero_d": (np.array(3.5), None),
    "bool": (np.array([True, False, True]), None),
    # The byte order travels in the dtype string.
    "big_endian": (np.arange(3, dtype=">i4"), None),
    "float16": (np.array([0.5, -2.0, 65504.0], np.float16), None),
    # A strided view goes as its C-order bytes and comes back contiguous.
    "strided": (np.arange(12).reshape(3, 4)[:, ::2], None),
    # An HWC uint8 array outside `images` is a plain array (vla-eval raw mode too).
    "image_like": ((np.arange(18) * 13 % 256).astype(np.uint8).reshape(2, 3, 3), None),
    # vla-eval sends numpy scalars as plain numbers.
    "float32_scalar": (np.float32(1.25), 1.25),
    "bool_scalar": (np.bool_(True), True),
    "nested": ({"a": {"b": np.arange(2, dtype=np.uint16)}, "l": [np.int8(1), "x"]},
               {"a": {"b": np.arange(2, dtype=np.uint16)}, "l": [1, "x"]}),
}


def recipe_input() -> ModelInput:
    """`RECIPE`'s payload as our side builds it."""
    image = (np.arange(6 * 5 * 3) % 251).astype(np.uint8).reshape(6, 5, 3)
    return ModelInput(images={"agentview": image, "wrist": image[::-1]},
                      state=np.linspace(-1.0, 1.0, 8), prompt="open the drawer")


def feature(image: np.ndarray) -> float:
    """`peers/vla_eval/serve.py`'s `image_feature`, computed here independently."""
    return float(image.mean()) + float(image[1, 0, 2])


def expected_chunk(inp: ModelInput, *, task: str, ended: int, step: int) -> np.ndarray:
    """What the test double's `predict` returns (its docstring's formula)."""
    out = np.empty((HORIZON, ACTION_DIM), np.float32)
    base = feature(inp.images["agentview"]) + feature(inp.images["wrist"]) / 2
    for t in range(HORIZON):
        for j in range(5):
            out[t, j] = base + inp.state[j % len(inp.state)] + 10 * t + j
    out[:, 5] = 1000 * len(task) + 100 * ended + step
    out[:, 6] = len(inp.prompt)
    return out


def model_input(prompt: str = "open the drawer", value: int = 8, **extra: object) -> ModelInput:
    image = np.full((16, 12, 3), value, np.uint8)
    if value == 8:
        image[1, 0, 2] = 200  # the feature's pixel: a transposed image would miss it
    wrist = np.full((16, 12, 3), 128, np.uint8)
    return ModelInput(images={"agentview": image, "wrist": wrist},
                      state=np.array([0.5, -0.25, 0.125, 2.0], np.float32), prompt=prompt,
                      extra=dict(extra))


@pytest.fixture
def peer(tmp_path):
    server = vla_eval_peer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def chunking_peer(tmp_path):
    server = vla_eval_peer(tmp_path, "--args.chunk_size", str(HORIZON)).start()
    yield server
    server.stop()


def test_raw_envelope_bytes_equal_vla_eval_pack_message():
    ours = encode_envelope(MessageType.observation,
                           observation_payload(recipe_input(), ImageFormat.raw),
                           seq=3, timestamp=1.5)
    assert ours == run_in_peer(VLA_EVAL_VENV, PACK_WITH_VLA_EVAL)


def test_codec_round_trips_through_vla_eval_unchanged():
    """vla-eval's `unpack_message` reads each of our frames and its `pack_message` gives
    the same bytes back; our decoder returns what we sent (numpy scalars as numbers)."""
    ours = [encode_envelope(MessageType.observation, {"value": value}, seq=i, timestamp=0.25)
            for i, (value, _) in enumerate(CODEC_CASES.values())]
    theirs = msgpack.unpackb(run_in_peer(VLA_EVAL_VENV, REPACK_EACH_WITH_VLA_EVAL,
                                         stdin=msgpack.packb(ours)))
    for (name, (value, decoded)), mine, repacked in zip(CODEC_CASES.items(), ours, theirs,
                                                        strict=True):
        assert repacked == mine, name
        got = unpackb_vla_eval(repacked)["payload"]["value"]
        assert_same_value(got, value if decoded is None else decoded)


@pytest.mark.parametrize(("value", "refusal"), [
    # An object array would be built from pickled data: refused by dtype.
    ({"__ndarray__": True, "data": b"", "dtype": "|O", "shape": [0]}, "refused"),
    ({"__ndarray__": True, "data": b"\0" * 7, "dtype": "<f8", "shape": [1]}, "7 bytes"),
    # Only raw images are decoded: a reply carries actions, not pictures.
    ({"__image__": True, "format": "png", "data": b"", "shape": [1, 1, 3]}, "only raw"),
])
def test_decoder_refuses_unsafe_or_inconsistent_arrays(value, refusal):
    with pytest.raises(ValueError, match=refusal):
        unpackb_vla_eval(msgpack.packb({"payload": value}))


@pytest.mark.parametrize("fmt", [ImageFormat.png, ImageFormat.jpeg])
def test_compressed_images_decode_in_vla_eval(fmt):
    inp = recipe_input()
    ours = encode_envelope(MessageType.observation, observation_payload(inp, fmt), seq=3,
                           timestamp=1.5)
    decoded = unpackb_vla_eval(run_in_peer(VLA_EVAL_VENV, REPACK_RAW_WITH_VLA_EVAL,
                                           stdin=ours))
    for name, image in inp.images.items():
        got = decoded["payload"]["images"][name]
        assert (got.shape, got.dtype) == (image.shape, np.uint8)
        if fmt is ImageFormat.png:  # lossless
            np.testing.assert_array_equal(got, image)
        else:  # JPEG q95 on a sharp 6x5 ramp: close, not equal
            assert np.abs(got.astype(int) - image).mean() < 12


@pytest.mark.network
def test_hello_declares_the_action_spec(peer):
    adapter = VlaEvalAdapter(url=peer.url, timeout_s=5.0)
    spec = adapter.connect(timeout_s=5.0)
    assert (spec.action_dim, spec.chunk_size) == (ACTION_DIM, 1)
    assert spec.model_id == "ActionFromObservationDouble"
    hello = spec.details["hello"]
    assert hello["protocol_version"] == 1
    assert {k: v["dims"] for k, v in hello["action_spec"].items()} == {
        "position": 3, "rotation": 3, "gripper": 1}
    assert set(hello["observation_spec"]) == {"agentview", "wrist", "state", "language"}
    adapter.close()


@pytest.mark.network
def test_action_spec_contradicting_the_config_is_a_spec_mismatch(peer):
    with pytest.raises(SpecMismatch, match=r"action_spec of 7 dims.*action_dim=6"):
        VlaEvalAdapter(url=peer.url, action_dim=6).connect(timeout_s=5.0)


@pytest.mark.network
@pytest.mark.parametrize("fmt", ["png", "jpeg", "raw"])
def test_act_without_server_chunking_returns_the_chunk(peer, fmt):
    adapter = VlaEvalAdapter(url=peer.url, action_dim=ACTION_DIM, chunk_size=HORIZON,
                             image_format=fmt, timeout_s=5.0)
    adapter.connect(timeout_s=5.0)
    adapter.reset(prompt="open the drawer")
    inp = model_input(value=128 if fmt == "jpeg" else 8)  # flat gray survives JPEG exactly
    for step in range(2):
        actions = adapter.act(inp)
        assert actions.dtype == np.float32
        np.testing.assert_array_equal(
            actions, expected_chunk(inp, task="open the drawer", ended=0, step=step))
    adapter.close()


@pytest.mark.network
def test_reset_ends_the_episode_and_starts_the_next(peer):
    adapter = VlaEvalAdapter(url=peer.url, chunk_size=HORIZON, timeout_s=5.0)
    adapter.connect(timeout_s=5.0)
    adapter.reset(prompt="open the drawer")
    adapter.act(model_input())
    adapter.reset(prompt="close it")
    inp = model_input(prompt="close it")
    np.testing.assert_array_equal(adapter.act(inp),
                                  expected_chunk(inp, task="close it", ended=1, step=0))
    adapter.close()


@pytest.mark.network
def test_server_side_chunking_answers_one_action_per_observation(chunking_peer):
    adapter = VlaEvalAdapter(url=chunking_peer.url, timeout_s=5.0)
    assert adapter.connect(timeout_s=5.0).chunk_size == 1
    adapter.reset(prompt="open the drawer")
    inp = model_input()
    chunk = expected_chunk(inp, task="open the drawer", ended=0, step=0)
    for t in range(3):  # served from the chunk predicted at step 0
        np.testing.assert_array_equal(adapter.act(inp), chunk[t:t + 1])
    adapter.close()


@pytest.mark.network
def test_a_chunk_configured_for_a_server_that_chunks_itself_names_the_settings(chunking_peer):
    """The usual vla-eval server (server-side chunking) answers one action per observation:
    a config asking for its model's chunk (policy.reply_chunk=10) fails at the first reply
    with the settings that run it. Its HELLO says nothing of chunking, so no earlier."""
    adapter = VlaEvalAdapter(url=chunking_peer.url, chunk_size=HORIZON, timeout_s=5.0)
    hello = adapter.connect(timeout_s=5.0).details["hello"]
    assert hello["capabilities"] == {} and "chunk_size" not in str(hello)
    adapter.reset(prompt="open the drawer")
    with pytest.raises(ReplyChunkMismatch, match=r"answers one action per observation, not a "
                       r"chunk of 10 .*: set policy.reply_chunk=1 \(or leave it unset\) and "
                       r"client=synchronous$"):
        adapter.act(model_input())
    adapter.close()


@pytest.mark.network
@pytest.mark.parametrize(("configured", "horizon"), [(1, HORIZON), (HORIZON, 4)])
def test_a_chunk_other_than_the_servers_names_its_size(peer, configured, horizon):
    """A server without server-side chunking answers what `predict` returned."""
    adapter = VlaEvalAdapter(url=peer.url, chunk_size=configured, timeout_s=5.0)
    adapter.connect(timeout_s=5.0)
    adapter.reset(prompt="open the drawer")
    with pytest.raises(ReplyChunkMismatch, match=(
            rf"answers chunks of {horizon} actions, not {configured} .*: set "
            rf"policy.reply_chunk={horizon} \(and policy.chunk_size <= {horizon}\)$")):
        adapter.act(model_input(horizon=horizon))
    adapter.close()


@pytest.mark.network
def test_a_reply_of_no_actions_is_an_error_not_a_chunk_size(peer):
    adapter = VlaEvalAdapter(url=peer.url, timeout_s=5.0)
    adapter.connect(timeout_s=5.0)
    adapter.reset(prompt="open the drawer")
    with pytest.raises(RemoteError,
                       match=r"shape \[0, 7\] \(float32\), expected \[1, 7\]$") as info:
        adapter.act(model_input(horizon=0))
    assert not isinstance(info.value, ReplyChunkMismatch)
    adapter.close()


@pytest.mark.network
def test_error_message_is_a_remote_error_and_the_connection_stays(peer):
    adapter = VlaEvalAdapter(url=peer.url, chunk_size=HORIZON, timeout_s=5.0)
    adapter.connect(timeout_s=5.0)
    adapter.reset(prompt="open the drawer")
    with pytest.raises(RemoteError, match="observation_failed: RuntimeError: test double told "
                                          "to fail: boom") as info:
        adapter.act(model_input(fail="boom"))
    assert not isinstance(info.value, RemoteUnavailable)
    ws = adapter._ws
    inp = model_input()  # the failed observation did not count as a step
    np.testing.assert_array_equal(adapter.act(inp),
                                  expected_chunk(inp, task="open the drawer", ended=0, step=0))
    assert adapter._ws is ws


@pytest.mark.network
def test_failed_episode_start_fails_the_next_act(peer):
    adapter = VlaEvalAdapter(url=peer.url, chunk_size=HORIZON, timeout_s=5.0)
    adapter.connect(timeout_s=5.0)
    adapter.reset(prompt="fail")  # the server answers nothing yet
    with pytest.raises(RemoteError, match="episode_start_failed: RuntimeError: test double "
                                          "told to fail the episode start; observation_failed"):
        adapter.act(model_input(prompt="fail"))
    adapter.reset(prompt="open the drawer")
    inp = model_input()
    np.testing.assert_array_equal(adapter.act(inp),
                                  expected_chunk(inp, task="open the drawer", ended=1, step=0))
    adapter.close()


@pytest.mark.network
def test_act_before_any_episode_is_the_servers_error(peer):
    adapter = VlaEvalAdapter(url=peer.url, chunk_size=HORIZON, timeout_s=5.0)
    adapter.connect(timeout_s=5.0)
    with pytest.raises(RemoteError, match="observation_failed: KeyError"):
        adapter.act(model_input())  # the double reads the EPISODE_START's task name
    adapter.close()


@pytest.mark.network
def test_reply_later_than_the_timeout_is_unavailable_and_never_answers_the_next(peer):
    adapter = VlaEvalAdapter(url=peer.url, chunk_size=HORIZON, timeout_s=0.3)
    adapter.connect(timeout_s=5.0)
    adapter.reset(prompt="open the drawer")
    with pytest.raises(RemoteUnavailable, match="no reply within 0.3 s"):
        adapter.act(model_input(prompt="slow", sleep_s=1.0))
    # The late reply (prompt "slow") went with the old connection: this one is ours. The
    # server still runs the slow predict, and this request queues behind it: allow for it.
    adapter._timeout_s = 5.0
    inp = model_input()
    np.testing.assert_array_equal(adapter.act(inp),
                                  expected_chunk(inp, task="open the drawer", ended=0, step=0))
    adapter.close()


@pytest.mark.network
def test_killed_peer_is_unavailable_until_it_restarts(peer):
    adapter = VlaEvalAdapter(url=peer.url, chunk_size=HORIZON, timeout_s=5.0)
    adapter.connect(timeout_s=5.0)
    adapter.reset(prompt="open the drawer")
    inp = model_input()
    adapter.act(inp)
    peer.stop()
    with pytest.raises(RemoteUnavailable, match="connection lost"):
        adapter.act(inp)
    with pytest.raises(RemoteUnavailable, match="cannot connect"):
        adapter.act(inp)
    peer.start()
    # The new session gets the episode's EPISODE_START again: its step count starts over.
    np.testing.assert_array_equal(adapter.act(inp),
                                  expected_chunk(inp, task="open the drawer", ended=0, step=0))
    adapter.close()


@pytest.mark.network
def test_a_request_into_a_partition_fails_within_its_timeout_and_the_healed_link_serves(peer):
    """On a black-holed link the websocket's closing handshake cannot complete: the
    connection is dropped without it, so the request costs its timeout, not the timeout
    plus the close timeout (which made our server's answer later than the robot's patience
    and cost it its session)."""
    proxy = FaultProxy("127.0.0.1", peer.port)
    port = proxy.start()
    try:
        adapter = VlaEvalAdapter(url=f"ws://127.0.0.1:{port}", chunk_size=HORIZON,
                                 timeout_s=0.3)
        adapter.connect(timeout_s=5.0)
        adapter.reset(prompt="open the drawer")
        inp = model_input()
        first_answer(adapter, inp)
        proxy.set_partition(True)
        started = time.monotonic()
        with pytest.raises(RemoteUnavailable, match="no reply within 0.3 s"):
            adapter.act(inp)
        assert time.monotonic() - started < 0.3 + _CLOSE_TIMEOUT_S / 2
        proxy.set_partition(False)
        np.testing.assert_array_equal(  # a new session: the episode starts over
            first_answer(adapter, inp), expected_chunk(inp, task="open the drawer", ended=0,
                                                       step=0))
        adapter.close()
    finally:
        proxy.stop()


def first_answer(adapter: VlaEvalAdapter, inp: ModelInput, within_s: float = 30.0):
    """The adapter's first answer to `inp`, asking again after a request that timed out:
    on a busy machine the peer may take longer than the test's 0.3 s to answer, and each
    retry is a new connection, so a new session (what the caller expects)."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            return adapter.act(inp)
        except RemoteUnavailable:
            if time.monotonic() > deadline:
                raise
