"""The SGLang `/generate` adapter (`policies.remote.sglang`): its PNG, its payload, and its
decoding of action tokens, driven against an in-process SGLang double."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest

from policies.remote.action_tokens import (
    LIBERO_SPATIAL_STATISTICS,
    ActionTokenError,
    UnknownUnnormKey,
)
from policies.remote.base import ModelInput, RemoteError, RemoteUnavailable, SpecMismatch
from policies.remote.sglang import OPENVLA_PROMPT_TEMPLATE, SglangAdapter, openvla_prompt, png_bytes

TOKENS = [31999, 31744, 31872, 31872, 31800, 31900, 31744]
# TOKENS decoded with libero_spatial by hand (test_action_tokens derives each value).
EXPECTED = np.array([[-0.7421732639343129, 0.8728781716496337, -0.0026785731315612793,
                      -0.0016071423888206482, 0.09330251690219431, -0.055521010037730724,
                      254 / 255]], np.float32)
rng = np.random.default_rng(7)
IMAGE = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)


def model_input(**extra) -> ModelInput:
    return ModelInput(images={"observation/image": IMAGE}, state=None,
                      prompt=openvla_prompt("Put the bowl on the plate"), extra=extra)


@pytest.mark.parametrize("shape", [(1, 1, 3), (5, 7, 3), (224, 224, 3)])
def test_png_decodes_to_the_same_pixels(shape):
    image_module = pytest.importorskip("PIL.Image")
    image = np.random.default_rng(1).integers(0, 256, size=shape, dtype=np.uint8)
    with image_module.open(io.BytesIO(png_bytes(image))) as png:
        assert (png.format, png.mode, png.size) == ("PNG", "RGB", (shape[1], shape[0]))
        assert np.array_equal(np.array(png), image)


@pytest.mark.parametrize("image", [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4), np.uint8),
                                   np.zeros((0, 4, 3), np.uint8)])
def test_png_refuses_what_is_not_a_non_empty_rgb_image(image):
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        png_bytes(image)


def test_prompt_template_is_openvlas():
    assert OPENVLA_PROMPT_TEMPLATE == ("In: What action should the robot take to "
                                       "{instruction}?\nOut:")


def test_statistics_are_required_and_must_fit():
    with pytest.raises(ValueError, match="policy.dataset_statistics"):
        SglangAdapter("http://127.0.0.1:9", dataset_statistics=None, unnorm_key="libero_spatial")
    with pytest.raises(UnknownUnnormKey, match=r"known keys: \['libero_spatial'\]"):
        SglangAdapter("http://127.0.0.1:9", dataset_statistics=LIBERO_SPATIAL_STATISTICS,
                      unnorm_key="libero_10")
    with pytest.raises(ActionTokenError, match="7 action axes, config says action_dim=6"):
        SglangAdapter("http://127.0.0.1:9", dataset_statistics=LIBERO_SPATIAL_STATISTICS,
                      unnorm_key="libero_spatial", action_dim=6)


def test_input_asking_for_other_statistics_is_refused():
    adapter = SglangAdapter("http://127.0.0.1:9", dataset_statistics=LIBERO_SPATIAL_STATISTICS,
                            unnorm_key="libero_spatial")
    with pytest.raises(ValueError, match="'libero_object'.*'libero_spatial'"):
        adapter.act(model_input(unnorm_key="libero_object"))


@pytest.fixture
def sglang():
    pytest.importorskip("fastapi")
    pytest.importorskip("PIL")
    from tests.policies.remote.doubles import ServerThread
    from tests.policies.remote.doubles.sglang_generate import SglangDouble

    double = SglangDouble(output_ids=list(TOKENS))
    server = ServerThread(double.app()).start()
    adapter = SglangAdapter(server.url, dataset_statistics=LIBERO_SPATIAL_STATISTICS,
                            unnorm_key="libero_spatial", timeout_s=2.0,
                            model_id="openvla/openvla-7b")
    yield double, server, adapter
    adapter.close()
    server.stop()


@pytest.mark.network
def test_generate_payload_is_the_documented_one_and_tokens_decode_exactly(sglang):
    double, _, adapter = sglang
    spec = adapter.connect(timeout_s=5.0)
    assert (spec.action_dim, spec.chunk_size, spec.model_id) == (7, 1, "openvla/openvla-7b")
    assert np.array_equal(adapter.act(model_input()), EXPECTED)
    sent = double.requests[-1]
    assert sent.payload["text"] == ("In: What action should the robot take to put the bowl on "
                                    "the plate?\nOut:")
    assert sent.payload["sampling_params"] == {"max_new_tokens": 7, "temperature": 0}
    assert sent.payload["image_data"].startswith("data:image/png;base64,")
    assert np.array_equal(sent.image, IMAGE)


@pytest.mark.network
def test_only_the_last_action_dim_ids_are_decoded(sglang):
    double, _, adapter = sglang
    double.output_ids = [1, 29871] + TOKENS
    assert np.array_equal(adapter.act(model_input()), EXPECTED)


@pytest.mark.network
@pytest.mark.parametrize(("ids", "match"), [
    (TOKENS[:6] + [2], r"outside the action range 31744..31999 \(position, id\): \[\(6, 2\)\]"),
    (TOKENS[:5], "5 output_ids, fewer than action_dim=7"),
])
def test_ids_that_are_not_seven_action_tokens_are_a_remote_error(sglang, ids, match):
    double, _, adapter = sglang
    double.output_ids = ids
    with pytest.raises(RemoteError, match=match):
        adapter.act(model_input())


@pytest.mark.network
@pytest.mark.parametrize(("mode", "match"), [("missing_ids", "no list of int output_ids"),
                                             ("http400", "HTTP 400.*too long")])
def test_server_errors_are_remote_errors(sglang, mode, match):
    double, _, adapter = sglang
    double.set_mode(mode)
    with pytest.raises(RemoteError, match=match) as caught:
        adapter.act(model_input())
    assert not isinstance(caught.value, RemoteUnavailable)


@pytest.mark.network
def test_slow_generation_is_unavailable_then_stopped_server_recovers(sglang):
    double, server, adapter = sglang
    double.set_mode("slow")
    double.delay_s = 1.0
    impatient = SglangAdapter(server.url, dataset_statistics=LIBERO_SPATIAL_STATISTICS,
                              unnorm_key="libero_spatial", timeout_s=0.3)
    start = time.monotonic()
    with pytest.raises(RemoteUnavailable, match="no reply within 0.3 s"):
        impatient.act(model_input())
    assert time.monotonic() - start < 1.0
    impatient.close()
    double.set_mode("ok")
    server.stop()
    with pytest.raises(RemoteUnavailable):
        adapter.act(model_input())
    server.start()
    assert np.array_equal(adapter.act(model_input()), EXPECTED)


@pytest.mark.network
@pytest.mark.parametrize(("model_path", "ok"), [("/models/openvla-7b/", True),
                                                ("openvla/openvla-7b-finetuned-libero-10", False)])
def test_connect_compares_the_served_model(sglang, model_path, ok):
    double, _, adapter = sglang
    double.model_path = model_path
    if ok:
        assert adapter.connect(timeout_s=5.0).details["model_path"] == model_path
    else:
        with pytest.raises(SpecMismatch, match="finetuned-libero-10.*openvla/openvla-7b"):
            adapter.connect(timeout_s=5.0)
