"""`OpenpiAdapter` against openpi's own server code (`openpi-server` 0.1.0's
`WebsocketPolicyServer`, `peers/openpi/serve.py`) and its own client codec (`openpi-client`
0.1.2's `msgpack_numpy`), both run from `peers/.venv-openpi`."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from policies.remote.base import ModelInput, RemoteError, RemoteUnavailable, SpecMismatch
from policies.remote.msgpack_numpy import packb_openpi, unpackb_openpi
from policies.remote.openpi import OpenpiAdapter, encode_observation
from tests.policies.remote.peers import (
    OPENPI_VENV,
    assert_same_value,
    openpi_peer,
    run_in_peer,
)

HORIZON, ACTION_DIM = 10, 7

PACK_WITH_OPENPI_CLIENT = """
import sys
import numpy as np
from openpi_client import msgpack_numpy
h, w = int(sys.argv[1]), int(sys.argv[2])
image = (np.arange(h * w * 3) % 251).astype(np.uint8).reshape(h, w, 3)
obs = {
    "observation/image": image,
    "observation/wrist_image": image[::-1].copy(),
    "observation/state": np.linspace(-1.0, 1.0, 8),
    "prompt": "pick up the black bowl",
    "step": np.int32(3),
}
sys.stdout.buffer.write(msgpack_numpy.packb(obs))
"""

REPACK_WITH_OPENPI_CLIENT = """
import sys
import msgpack
from openpi_client import msgpack_numpy
frames = msgpack.unpackb(sys.stdin.buffer.read())
sys.stdout.buffer.write(msgpack.packb(
    [msgpack_numpy.packb(msgpack_numpy.unpackb(frame)) for frame in frames]))
"""

CODEC_CASES = {
    # An empty chunk: zero rows, the shape still says 7 columns.
    "empty": np.zeros((0, 7), np.float32),
    # A 0-d array is an array map with shape [], not a scalar.
    "zero_d": np.array(3.5),
    # bool arrays are on the allow-list.
    "bool": np.array([True, False, True]),
    # The byte order travels in the dtype string.
    "big_endian": np.arange(3, dtype=">i4"),
    "float16": np.array([0.5, -2.0, 65504.0], np.float16),
    # A strided view goes as its C-order bytes and comes back contiguous.
    "strided": np.arange(12).reshape(3, 4)[:, ::2],
    "image": (np.arange(2 * 3 * 3) * 13 % 256).astype(np.uint8).reshape(2, 3, 3),
    # numpy scalars are openpi's `__npgeneric__` maps.
    "float32_scalar": np.float32(1.25),
    "int64_scalar": np.int64(-7),
    # Arrays inside nested maps and lists, beside plain values.
    "nested": {"a": {"b": np.arange(2, dtype=np.uint16)}, "l": [np.int8(1), "x", 0.5]},
}


def feature(image: np.ndarray) -> float:
    """`peers/openpi/serve.py`'s `image_feature`, computed here independently."""
    return float(image.mean()) + float(image[1, 0, 2])


def expected_actions(image: np.ndarray, wrist: np.ndarray, state: np.ndarray,
                     prompt: str) -> np.ndarray:
    """What the test double answers (its docstring's formula)."""
    out = np.empty((HORIZON, ACTION_DIM), np.float32)
    for t in range(HORIZON):
        for j in range(ACTION_DIM - 1):
            out[t, j] = feature(image) + feature(wrist) / 2 + state[j % len(state)] + 10 * t + j
    out[:, ACTION_DIM - 1] = len(prompt)
    return out


def model_input(prompt: str = "put the bowl on the plate", **extra: object) -> ModelInput:
    image = np.full((16, 12, 3), 8, np.uint8)
    image[1, 0, 2] = 200  # the feature's pixel: a transposed image would miss it
    wrist = np.full((16, 12, 3), 100, np.uint8)
    return ModelInput(images={"observation/image": image, "observation/wrist_image": wrist},
                      state=np.array([0.5, -0.25, 0.125, 2.0], np.float32), prompt=prompt,
                      extra=dict(extra))


def expected_for(inp: ModelInput) -> np.ndarray:
    return expected_actions(inp.images["observation/image"],
                            inp.images["observation/wrist_image"], inp.state, inp.prompt)


@pytest.fixture
def peer(tmp_path):
    server = openpi_peer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def adapter(peer):
    adapter = OpenpiAdapter(url=peer.url, action_dim=ACTION_DIM, timeout_s=5.0)
    yield adapter
    adapter.close()


def test_request_bytes_equal_openpi_client_packb():
    image = (np.arange(5 * 4 * 3) % 251).astype(np.uint8).reshape(5, 4, 3)
    ours = encode_observation(ModelInput(
        images={"observation/image": image, "observation/wrist_image": image[::-1]},
        state=np.linspace(-1.0, 1.0, 8), prompt="pick up the black bowl",
        extra={"step": np.int32(3)}))
    theirs = run_in_peer(OPENPI_VENV, PACK_WITH_OPENPI_CLIENT, "5", "4")
    assert ours == theirs


def test_codec_round_trips_through_openpi_client_unchanged():
    """openpi_client decodes each of our frames and packs it again to the same bytes, and
    our decoder gives back the values we sent."""
    ours = [packb_openpi(value) for value in CODEC_CASES.values()]
    theirs = msgpack.unpackb(run_in_peer(OPENPI_VENV, REPACK_WITH_OPENPI_CLIENT,
                                         stdin=msgpack.packb(ours)))
    for name, mine, repacked in zip(CODEC_CASES, ours, theirs, strict=True):
        assert repacked == mine, name
        assert_same_value(unpackb_openpi(repacked), CODEC_CASES[name])


@pytest.mark.parametrize(("frame", "refusal"), [
    # An object array would be built from pickled data: refused by dtype.
    ({b"__ndarray__": True, b"data": b"", b"dtype": "|O", b"shape": [0]}, "refused"),
    # A structured dtype is kind V.
    ({b"__ndarray__": True, b"data": b"", b"dtype": "V8", b"shape": [0]}, "refused"),
    # A buffer shorter than its shape says.
    ({b"__ndarray__": True, b"data": b"\0" * 7, b"dtype": "<f8", b"shape": [1]}, "7 bytes"),
    ({b"__ndarray__": True, b"data": b"", b"dtype": "<f8", b"shape": [-1]}, "non-negative"),
    ({b"__npgeneric__": True, b"data": "1", b"dtype": "<f8"}, "not a number"),
    ({b"__ndarray__": True, b"data": b"", b"dtype": "no such", b"shape": [0]},
     "not a numpy dtype"),
])
def test_decoder_refuses_unsafe_or_inconsistent_arrays(frame, refusal):
    with pytest.raises(ValueError, match=refusal):
        unpackb_openpi(msgpack.packb(frame))


@pytest.mark.network
def test_handshake_reads_the_metadata_frame(adapter):
    spec = adapter.connect(timeout_s=5.0)
    assert (spec.action_dim, spec.chunk_size) == (ACTION_DIM, HORIZON)
    assert spec.details["metadata"] == {"action_dim": 7, "action_horizon": 10,
                                        "model": "ActionFromObservationDouble"}
    assert spec.model_id == f"openpi@{adapter._url}"


@pytest.mark.network
def test_act_returns_the_models_chunk_as_float32(adapter):
    adapter.connect(timeout_s=5.0)
    adapter.reset(prompt="put the bowl on the plate")
    inp = model_input()
    actions = adapter.act(inp)
    assert actions.dtype == np.float32  # the double answers float64
    np.testing.assert_array_equal(actions, expected_for(inp))
    assert set(adapter.last_details) == {"server_timing"}
    assert adapter.last_details["server_timing"]["infer_ms"] >= 0


@pytest.mark.network
def test_metadata_contradicting_the_config_is_a_spec_mismatch(peer):
    with pytest.raises(SpecMismatch, match=r"action_horizon=10.*chunk_size=8"):
        OpenpiAdapter(url=peer.url, action_dim=7, chunk_size=8).connect(timeout_s=5.0)
    with pytest.raises(SpecMismatch, match=r"action_dim=7.*action_dim=6"):
        OpenpiAdapter(url=peer.url, action_dim=6).connect(timeout_s=5.0)


@pytest.mark.network
def test_metadata_without_a_horizon_takes_the_config(tmp_path):
    server = openpi_peer(tmp_path, "--bare-metadata").start()
    try:
        with pytest.raises(ValueError, match="set chunk_size"):
            OpenpiAdapter(url=server.url, action_dim=7).connect(timeout_s=5.0)
        adapter = OpenpiAdapter(url=server.url, action_dim=7, chunk_size=HORIZON,
                                model_id="pi0-double")
        spec = adapter.connect(timeout_s=5.0)
        assert (spec.chunk_size, spec.model_id) == (HORIZON, "pi0-double")
        assert spec.details["metadata"] == {"reset_pose": [0, -1.5, 1.5, 0, 0, 0]}
        np.testing.assert_array_equal(adapter.act(model_input()), expected_for(model_input()))
        adapter.close()
    finally:
        server.stop()


@pytest.mark.network
def test_reply_of_another_chunk_is_an_error(peer):
    adapter = OpenpiAdapter(url=peer.url, timeout_s=5.0)
    adapter.connect(timeout_s=5.0)
    with pytest.raises(RemoteError, match=r"shape \[3, 7\] \(float64\), expected \[10, 7\]"):
        adapter.act(model_input(horizon=np.int64(3)))  # the double answers (3, 7)
    adapter.close()


@pytest.mark.network
def test_traceback_frame_is_a_remote_error_and_the_next_call_reconnects(adapter):
    adapter.connect(timeout_s=5.0)
    with pytest.raises(RemoteError) as info:
        adapter.act(model_input(fail="boom"))
    assert str(info.value) == (f"openpi server {adapter._url} failed (close 1011): "
                               "RuntimeError: test double told to fail: boom")
    assert not isinstance(info.value, RemoteUnavailable)
    assert "Traceback (most recent call last)" in info.value.__notes__[0]
    inp = model_input(prompt="again")
    np.testing.assert_array_equal(adapter.act(inp), expected_for(inp))


@pytest.mark.network
def test_reply_later_than_the_timeout_is_unavailable_and_never_answers_the_next(peer):
    adapter = OpenpiAdapter(url=peer.url, action_dim=ACTION_DIM, timeout_s=0.3)
    adapter.connect(timeout_s=5.0)
    with pytest.raises(RemoteUnavailable, match="no reply within 0.3 s"):
        adapter.act(model_input(prompt="slow", sleep_s=1.0))
    # The late reply (prompt "slow") went with the old connection: this one is ours (its
    # reconnect waits, within the connect timeout, for the server's loop to be free).
    inp = model_input(prompt="next")
    np.testing.assert_array_equal(adapter.act(inp), expected_for(inp))
    adapter.close()


@pytest.mark.network
def test_killed_peer_is_unavailable_until_it_restarts(peer, adapter):
    adapter.connect(timeout_s=5.0)
    inp = model_input()
    np.testing.assert_array_equal(adapter.act(inp), expected_for(inp))
    peer.stop()
    with pytest.raises(RemoteUnavailable, match="connection lost"):
        adapter.act(inp)
    with pytest.raises(RemoteUnavailable, match="cannot connect"):
        adapter.act(inp)
    peer.start()
    np.testing.assert_array_equal(adapter.act(inp), expected_for(inp))


@pytest.mark.network
def test_a_request_into_a_partition_fails_within_its_timeout_and_the_healed_link_serves(peer):
    """On a black-holed link the closing handshake cannot complete: the connection is
    dropped without it, so a request costs its timeout, not its timeout plus the close wait
    (1 s), which made our server answer after the robot had given up."""
    import time

    from harness.faults.proxy import FaultProxy
    from policies.remote.openpi import _CLOSE_WAIT_S

    proxy = FaultProxy("127.0.0.1", peer.port)
    port = proxy.start()
    try:
        adapter = OpenpiAdapter(url=f"ws://127.0.0.1:{port}", action_dim=ACTION_DIM,
                                timeout_s=0.3)
        adapter.connect(timeout_s=5.0)
        inp = model_input()
        np.testing.assert_array_equal(adapter.act(inp), expected_for(inp))
        proxy.set_partition(True)
        started = time.monotonic()
        with pytest.raises(RemoteUnavailable, match="no reply within 0.3 s"):
            adapter.act(inp)
        assert time.monotonic() - started < 0.3 + _CLOSE_WAIT_S / 2
        proxy.set_partition(False)
        np.testing.assert_array_equal(adapter.act(inp), expected_for(inp))
        adapter.close()
    finally:
        proxy.stop()
