"""The json-numpy codec and the `/act` adapter (`policies.remote.openvla_http`), the latter
driven against in-process doubles of OpenVLA's deploy.py and an AutoEval server."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from policies.remote import json_numpy as codec
from policies.remote.base import ModelInput, RemoteError, RemoteUnavailable
from policies.remote.conventions import openvla_prompt
from policies.remote.openvla_http import (
    Flavour,
    OpenvlaHttpAdapter,
    check_actions,
    openvla_instruction,
)
from transports.loopback import free_port

# --- json-numpy wire format -------------------------------------------------------------

CASES = {
    "image": np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3),  # HWC uint8, as deploy.py
    "float32 vector": np.array([0.1, -2.5, 3e38, 0.0], np.float32),
    "float64 action": np.linspace(-1, 1, 7),                         # predict_action's dtype
    "bool": np.array([True, False, True]),
    "int64 matrix": np.arange(-6, 6, dtype=np.int64).reshape(3, 4),
    "big-endian": np.arange(5, dtype=">i4"),                          # dtype str '>i4'
    "empty": np.zeros((0,), np.float32),                              # no bytes at all
    "empty rows": np.zeros((0, 7), np.float64),
    "scalar": np.array(7.5),                                          # shape []
    "fortran order": np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)),
    "strided view": np.arange(20, dtype=np.int16)[::3],               # not contiguous
}


@pytest.mark.parametrize("name", CASES)
def test_round_trip_is_exact(name):
    array = CASES[name]
    decoded = codec.loads(codec.dumps({"x": array}))["x"]
    assert decoded.dtype == array.dtype
    assert decoded.shape == array.shape
    assert np.array_equal(decoded, array)
    assert decoded.flags.writeable


@pytest.mark.parametrize("name", CASES)
def test_encoding_is_byte_identical_to_json_numpy(name):
    json_numpy = pytest.importorskip("json_numpy")
    array = CASES[name]
    assert codec.dumps({"image": array}) == json_numpy.dumps({"image": array})
    decoded = json_numpy.loads(codec.dumps(array))
    assert np.array_equal(np.asarray(decoded), array)


def test_encoding_uses_dtype_str_and_c_order():
    encoded = codec.encode(np.asfortranarray(np.array([[1, 2], [3, 4]], np.uint8)))
    assert encoded == {"__numpy__": "AQIDBA==", "dtype": "|u1", "shape": [2, 2]}


def test_object_arrays_are_not_encoded():
    with pytest.raises(codec.JsonNumpyError, match="not a plain numeric dtype"):
        codec.encode(np.array([{}, None], dtype=object))


@pytest.mark.parametrize(("obj", "match"), [
    ({"__numpy__": "AAAA", "dtype": "|O", "shape": [1]}, "allow-list"),           # pickle
    ({"__numpy__": "AAAA", "dtype": [["a", "<f4"]], "shape": [1]}, "allow-list"),  # fields
    ({"__numpy__": "AAAA", "dtype": "<U1", "shape": [1]}, "allow-list"),
    ({"__numpy__": "AAAAAAAA", "dtype": "<f4", "shape": [3]}, r"12 bytes.*holds 6"),
    ({"__numpy__": "AAAA", "dtype": "<f4", "shape": [1]}, r"4 bytes.*holds 3"),
    ({"__numpy__": "not base64!", "dtype": "|u1", "shape": [3]}, "base64"),
    ({"__numpy__": "AAAA", "dtype": "|u1", "shape": [-3]}, "non-negative"),
    ({"__numpy__": "AAAA", "dtype": "|u1", "shape": [True, 3]}, "non-negative"),
    ({"__numpy__": "AAAA", "dtype": "|u1"}, "exactly the keys"),
    ({"__numpy__": "AAAA", "dtype": "|u1", "shape": [3], "x": 1}, "exactly the keys"),
])
def test_unsafe_or_inconsistent_objects_are_refused(obj, match):
    with pytest.raises(codec.JsonNumpyError, match=match):
        codec.loads(json.dumps({"action": obj}))


# --- prompt and reply checks ---------------------------------------------------------------

def test_templated_prompt_is_sent_as_its_instruction():
    prompt = openvla_prompt("Pick Up The Bowl")
    assert prompt == "In: What action should the robot take to pick up the bowl?\nOut:"
    assert openvla_instruction(prompt) == "pick up the bowl"
    assert openvla_instruction("pick up the bowl") == "pick up the bowl"


def test_openvla_is_an_alias_of_the_deploy_flavour():
    assert Flavour("openvla") is Flavour.deploy
    with pytest.raises(ValueError):
        Flavour("deploy.py")


@pytest.mark.parametrize(("array", "match"), [
    (np.zeros(6), r"shape \(6,\)"),
    (np.zeros((2, 7)), r"shape \(2, 7\)"),
    (np.array([0, 0, np.inf, 0, 0, 0, 0.0]), r"non-finite.*\[\[0, 2\]\]"),
    (np.array([0, 0, 0, 0, 0, 0, 1e39]), "non-finite"),  # overflows float32
    (np.zeros(7, bool), "not a number type"),
])
def test_reply_that_is_not_a_finite_action_is_refused(array, match):
    with pytest.raises(RemoteError, match=match):
        check_actions(array, chunk_size=1, action_dim=7, what="test")


# --- against the doubles ---------------------------------------------------------------------

IMAGE = np.full((4, 6, 3), 51, np.uint8)  # mean 51 -> the dummy model's axis 0 is 0.2
INSTRUCTION = "Pick up the bowl"           # 16 characters -> axis 1 is 0.16, axis 6 is 0


def expected_action(image=IMAGE, instruction=INSTRUCTION) -> np.ndarray:
    """The doubles' dummy model, computed by hand for a constant image."""
    mean, n = float(image[0, 0, 0]), len(instruction)
    return np.array([[mean / 255, n / 100, -mean / 255, 0.25, -0.5, 0.125, n % 2]], np.float32)


def model_input(state=None, **extra) -> ModelInput:
    return ModelInput(images={"observation/image": IMAGE}, state=state,
                      prompt=openvla_prompt(INSTRUCTION), extra=extra)


@pytest.fixture
def deploy():
    pytest.importorskip("fastapi")
    pytest.importorskip("json_numpy")
    from tests.policies.remote.doubles import ServerThread
    from tests.policies.remote.doubles.openvla_deploy import DeployDouble

    double = DeployDouble()
    server = ServerThread(double.app()).start()
    yield double, server
    server.stop()


@pytest.fixture
def adapter(deploy):
    _, server = deploy
    adapter = OpenvlaHttpAdapter(server.url, "deploy", timeout_s=2.0,
                                 unnorm_key="libero_spatial")
    yield adapter
    adapter.close()


@pytest.mark.network
def test_deploy_round_trip_is_exact(deploy, adapter):
    double, _ = deploy
    spec = adapter.connect(timeout_s=5.0)
    assert (spec.action_dim, spec.chunk_size, spec.model_id) == (7, 1, "openvla/openvla-7b")
    actions = adapter.act(model_input())
    assert actions.dtype == np.float32
    assert np.array_equal(actions, expected_action())
    payload = double.requests[-1].payload
    assert np.array_equal(payload["image"], IMAGE) and payload["image"].dtype == np.uint8
    assert payload["instruction"] == "pick up the bowl"  # the server applies the template
    assert payload["unnorm_key"] == "libero_spatial"
    assert "proprio" not in payload


@pytest.mark.network
def test_deploy_requests_share_one_keep_alive_connection(deploy, adapter):
    double, _ = deploy
    for _ in range(3):
        adapter.act(model_input())
    assert len({r.client for r in double.requests}) == 1


@pytest.mark.network
def test_deploy_error_body_is_a_remote_error_not_an_action(deploy, adapter):
    double, _ = deploy
    double.set_mode("error")
    with pytest.raises(RemoteError, match='answered "error"'):
        adapter.act(model_input())
    double.set_mode("ok")
    assert np.array_equal(adapter.act(model_input()), expected_action())


@pytest.mark.network
@pytest.mark.parametrize(("mode", "match"), [("http500", "HTTP 500"),
                                             ("wrong_shape", r"shape \(6,\)"),
                                             ("nan", "non-finite")])
def test_deploy_bad_reply_is_a_remote_error(deploy, adapter, mode, match):
    double, _ = deploy
    double.set_mode(mode)
    with pytest.raises(RemoteError, match=match) as caught:
        adapter.act(model_input())
    assert not isinstance(caught.value, RemoteUnavailable)


@pytest.mark.network
def test_deploy_stopped_is_unavailable_then_recovers_after_restart(deploy, adapter):
    double, server = deploy
    adapter.act(model_input())
    server.stop()
    with pytest.raises(RemoteUnavailable):
        adapter.act(model_input())
    server.start()
    assert np.array_equal(adapter.act(model_input()), expected_action())
    assert len({r.client for r in double.requests}) == 2  # a new connection after the drop


@pytest.mark.network
def test_deploy_reply_slower_than_timeout_is_unavailable(deploy):
    double, server = deploy
    double.set_mode("slow")
    double.delay_s = 1.5
    impatient = OpenvlaHttpAdapter(server.url, "deploy", timeout_s=0.3)
    start = time.monotonic()
    with pytest.raises(RemoteUnavailable, match="no reply within 0.3 s"):
        impatient.act(model_input())
    assert time.monotonic() - start < 1.2
    double.set_mode("ok")
    assert np.array_equal(impatient.act(model_input()), expected_action())  # reconnected
    impatient.close()


@pytest.mark.network
def test_connect_to_nothing_is_unavailable_within_its_timeout():
    adapter = OpenvlaHttpAdapter(f"http://127.0.0.1:{free_port()}", "deploy", timeout_s=1.0)
    start = time.monotonic()
    with pytest.raises(RemoteUnavailable, match="did not answer within 0.4 s"):
        adapter.connect(timeout_s=0.4)
    assert time.monotonic() - start < 1.5
    adapter.close()
    adapter.close()  # idempotent


@pytest.fixture
def autoeval_server():
    pytest.importorskip("fastapi")
    pytest.importorskip("json_numpy")
    from tests.policies.remote.doubles import ServerThread

    servers = []

    def start(**kwargs):
        from tests.policies.remote.doubles.autoeval import AutoEvalDouble

        double = AutoEvalDouble(**kwargs)
        servers.append(ServerThread(double.app()).start())
        return double, servers[-1].url

    yield start
    for server in servers:
        server.stop()


@pytest.mark.network
def test_autoeval_sends_proprio_and_reset_restarts_the_episode(autoeval_server):
    double, url = autoeval_server()
    adapter = OpenvlaHttpAdapter(url, "autoeval", timeout_s=2.0)
    assert adapter.connect(timeout_s=5.0).details["probe"] == "GET /health -> HTTP 200"
    state = np.array([0.5, 0.25, 0.125], np.float32)
    adapter.reset(prompt="p")
    steps = [adapter.act(model_input(state))[0, 5] for _ in range(2)]
    adapter.reset(prompt="p")
    steps.append(adapter.act(model_input(state))[0, 5])
    assert steps == [0.0, 1.0, 0.0] and double.resets == 2
    assert np.array_equal(double.requests[-1].payload["proprio"], state)
    assert adapter.act(model_input(state))[0, 6] == np.float32(0.875)  # the proprio's sum
    assert "unnorm_key" not in double.requests[-1].payload
    adapter.close()


@pytest.mark.network
def test_autoeval_dict_reply_and_chunks_are_read(autoeval_server):
    _, url = autoeval_server(reply_form="dict", chunk_size=4)
    adapter = OpenvlaHttpAdapter(url, "autoeval", timeout_s=2.0, chunk_size=4)
    assert adapter.connect(timeout_s=5.0).chunk_size == 4
    actions = adapter.act(model_input())
    assert actions.shape == (4, 7)
    assert actions[:, 0].tolist() == pytest.approx([0.2, 10.2, 20.2, 30.2])
    wrong = OpenvlaHttpAdapter(url, "autoeval", timeout_s=2.0)  # configured for 1 action
    with pytest.raises(RemoteError, match=r"shape \(4, 7\).*\(1, 7\)"):
        wrong.act(model_input())
    adapter.close()
    wrong.close()


@pytest.mark.network
def test_autoeval_errors(autoeval_server):
    double, url = autoeval_server()
    adapter = OpenvlaHttpAdapter(url, "autoeval", timeout_s=2.0)
    double.set_mode("http500")
    with pytest.raises(RemoteError, match="HTTP 500.*Error processing request"):
        adapter.act(model_input())
    double.set_mode("reset_fails")
    with pytest.raises(RemoteError, match="reset answered HTTP 500"):
        adapter.reset(prompt="p")
    double.set_mode("unhealthy")
    with pytest.raises(RemoteUnavailable, match="HTTP 503"):
        adapter.connect(timeout_s=2.0)
    adapter.close()


@pytest.mark.network
def test_autoeval_without_reset_route_is_tolerated(autoeval_server):
    double, url = autoeval_server(has_reset=False)
    adapter = OpenvlaHttpAdapter(url, "autoeval", timeout_s=2.0)
    adapter.reset(prompt="p")  # 404, as AutoEval's own client ignores it
    assert adapter.act(model_input())[0, 5] == 0.0
    adapter.close()


def test_unnorm_key_of_the_input_must_agree_with_the_config():
    adapter = OpenvlaHttpAdapter("http://127.0.0.1:9", "deploy", unnorm_key="libero_spatial")
    with pytest.raises(ValueError, match="'bridge_orig'.*'libero_spatial'"):
        adapter.act(model_input(unnorm_key="bridge_orig"))
