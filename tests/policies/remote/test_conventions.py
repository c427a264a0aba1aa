"""Conventions against known inputs: a synthetic robosuite render goes through our env's
`upright()` and the convention, and must come out exactly as the family's own pipeline makes
it from the raw render (the references below transcribe those pipelines' lines); deliberately
wrong transforms must fail the same checks. Plus exact values for resizing, quaternions,
state layout, prompts and gripper mapping."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from envs.base import EnvObservation
from envs.libero import upright
from policies.remote import conventions
from policies.remote.base import RemoteError
from policies.remote.conventions import (
    OpenpiLibero,
    OpenvlaLibero,
    VlaEvalDefault,
    VlaEvalLibero,
    invert_gripper_action,
    make_convention,
    normalize_gripper_action,
    openvla_center_crop,
    openvla_prompt,
    openvla_resize,
    quat_to_axis_angle,
    resize_with_pad,
    rotate_180,
    vla_eval_quat_to_axis_angle,
)

RED, GREEN = (255, 0, 0), (0, 255, 0)
S45 = math.sin(math.pi / 4)


def raw_render(size: int = 256, seed: int = 0) -> np.ndarray:
    """A robosuite-style raw render (OpenGL: row 0 is the bottom of the picture): a textured
    background, a red block at raw[0, 0] (the picture's bottom-left) and a green one at
    raw[0, -1] (its bottom-right)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(40, 120, (size, size, 3), dtype=np.uint8)
    block = size // 16
    image[:block, :block] = RED
    image[:block, -block:] = GREEN
    return image


def corner(image: np.ndarray, color: tuple[int, int, int]) -> str:
    """Which corner of `image` (row 0 at the top) holds the block of `color`."""
    k = image.shape[0] // 16
    corners = {"top-left": image[:k, :k], "top-right": image[:k, -k:],
               "bottom-left": image[-k:, :k], "bottom-right": image[-k:, -k:]}
    distance = {name: np.abs(c.astype(int) - color).mean() for name, c in corners.items()}
    return min(distance, key=distance.get)


def libero_state(quat=(0.0, 0.0, S45, S45)) -> dict[str, np.ndarray]:
    """The LIBERO env's state keys (float32, as `LiberoEnv._observation` gives them) plus an
    object pose the conventions must not read."""
    return {"robot0_eef_pos": np.array([0.1, -0.2, 1.05], np.float32),
            "robot0_eef_quat": np.array(quat, np.float32),
            "robot0_gripper_qpos": np.array([0.039, -0.038], np.float32),
            "robot0_joint_pos": np.arange(7, dtype=np.float32),
            "akita_black_bowl_1_pos": np.array([0.5, 0.5, 0.9], np.float32)}


def observation(agentview: np.ndarray, wrist: np.ndarray | None = None,
                instruction: str = "Pick up the Black Bowl and place it on the plate"):
    """What our LIBERO env hands the policy for these raw renders."""
    images = {"agentview": upright(agentview)}
    if wrist is not None:
        images["wrist"] = upright(wrist)
    return EnvObservation(libero_state(), images, instruction)


# The families' own pipelines on the RAW render, transcribed from their sources.
def openpi_reference(raw: np.ndarray, resize: int = 224) -> np.ndarray:
    """openpi examples/libero/main.py:115-121."""
    return resize_with_pad(np.ascontiguousarray(raw[::-1, ::-1]), resize, resize)


def openvla_reference(raw: np.ndarray, crop: bool = True) -> np.ndarray:
    """openvla libero_utils.py:55-57 (get_libero_image), openvla_utils.py:135-155."""
    image = openvla_resize(raw[::-1, ::-1], (224, 224))
    return openvla_center_crop(image, 0.9, (224, 224)) if crop else image


WRONG_VIEWS = {
    "our upright image as it is (the reference doc's raw[::-1])": lambda up: up,
    "a 180-degree turn of our upright image": rotate_180,
    "the raw render (upright undone)": lambda up: np.ascontiguousarray(up[::-1]),
}


# --- orientation ------------------------------------------------------------------------

def test_a_raw_corner_lands_where_openpi_puts_it():
    """At the model's own size (no resize): raw[0, 0] is the bottom-left of the picture,
    upright; openpi's raw[::-1, ::-1] puts it bottom-right, and so must we."""
    raw = raw_render(224)
    assert corner(upright(raw), RED) == "bottom-left"
    model = OpenpiLibero(image_size=(224, 224), expected_image_size=None)
    images = model.model_input(observation(raw, raw_render(224, seed=1))).images
    assert corner(images["observation/image"], RED) == "bottom-right"
    assert corner(images["observation/image"], GREEN) == "bottom-left"
    np.testing.assert_array_equal(images["observation/image"], raw[::-1, ::-1])


def test_openpi_images_equal_openpis_pipeline_on_the_raw_render():
    raw, wrist = raw_render(256), raw_render(256, seed=1)
    model_input = OpenpiLibero().model_input(observation(raw, wrist))
    assert set(model_input.images) == {"observation/image", "observation/wrist_image"}
    np.testing.assert_array_equal(model_input.images["observation/image"],
                                  openpi_reference(raw))
    np.testing.assert_array_equal(model_input.images["observation/wrist_image"],
                                  openpi_reference(wrist))
    assert model_input.images["observation/image"].shape == (224, 224, 3)
    assert corner(model_input.images["observation/image"], RED) == "bottom-right"


@pytest.mark.parametrize("wrong", WRONG_VIEWS.values(), ids=WRONG_VIEWS.keys())
def test_the_openpi_check_fails_for_a_wrong_orientation(monkeypatch, wrong):
    """The same expectation as above, with the convention's view swapped for a wrong one."""
    monkeypatch.setattr(conventions, "libero_train_view", wrong)
    raw = raw_render(256)
    image = OpenpiLibero().model_input(observation(raw, raw)).images["observation/image"]
    with pytest.raises(AssertionError):
        np.testing.assert_array_equal(image, openpi_reference(raw))
    assert corner(image, RED) != "bottom-right"


def test_openvla_image_equals_openvlas_pipeline_on_the_raw_render():
    raw = raw_render(256)
    model_input = OpenvlaLibero().model_input(observation(raw))
    np.testing.assert_array_equal(model_input.images["image"], openvla_reference(raw))
    assert model_input.images["image"].shape == (224, 224, 3)
    assert corner(model_input.images["image"], RED) == "bottom-right"
    assert corner(model_input.images["image"], GREEN) == "bottom-left"
    assert model_input.state is None


@pytest.mark.parametrize("wrong", WRONG_VIEWS.values(), ids=WRONG_VIEWS.keys())
def test_the_openvla_check_fails_for_a_wrong_orientation(monkeypatch, wrong):
    monkeypatch.setattr(conventions, "libero_train_view", wrong)
    raw = raw_render(256)
    image = OpenvlaLibero().model_input(observation(raw)).images["image"]
    with pytest.raises(AssertionError):
        np.testing.assert_array_equal(image, openvla_reference(raw))


def test_openvla_without_center_crop_is_the_resized_view():
    raw = raw_render(256)
    image = OpenvlaLibero(center_crop=False).model_input(observation(raw)).images["image"]
    np.testing.assert_array_equal(image, openvla_reference(raw, crop=False))
    assert not np.array_equal(image, openvla_reference(raw, crop=True))


def test_vla_eval_libero_sends_the_raw_render_turned_at_full_size():
    """vla-eval utils.py:50 `img[::-1, ::-1]`, no resize (its model servers resize)."""
    raw, wrist = raw_render(256), raw_render(256, seed=1)
    model = VlaEvalLibero(cameras=("agentview", "wrist"))
    images = model.model_input(observation(raw, wrist)).images
    np.testing.assert_array_equal(images["agentview"], raw[::-1, ::-1])
    np.testing.assert_array_equal(images["wrist"], wrist[::-1, ::-1])


def test_vla_eval_default_sends_our_upright_images_by_camera_name():
    raw = raw_render(64)
    obs = observation(raw)
    images = VlaEvalDefault(cameras=("agentview",)).model_input(obs).images
    assert images["agentview"] is obs.images["agentview"]
    assert corner(images["agentview"], RED) == "bottom-left"


# --- resize_with_pad (openpi-client image_tools) ------------------------------------------

def rgb(values) -> np.ndarray:
    """A grey image with these values in each channel."""
    return np.repeat(np.asarray(values, np.uint8)[..., None], 3, axis=-1)


def test_resize_with_pad_returns_an_image_of_the_target_size_as_it_is():
    image = rgb([[1, 2], [3, 4]])
    assert resize_with_pad(image, 2, 2) is image


def test_resize_with_pad_centers_a_wide_image_between_zero_rows():
    """2x4 in 4x4: ratio 1, no resampling; pad int(2 / 2) = 1 row above, 1 below."""
    image = rgb([[10, 20, 30, 40], [50, 60, 70, 80]])
    out = resize_with_pad(image, 4, 4)
    np.testing.assert_array_equal(out[1:3], image)
    np.testing.assert_array_equal(out[[0, 3]], 0)


def test_resize_with_pad_centers_a_tall_image_between_zero_columns():
    image = rgb([[10, 20], [30, 40], [50, 60], [70, 80]])
    out = resize_with_pad(image, 4, 4)
    np.testing.assert_array_equal(out[:, 1:3], image)
    np.testing.assert_array_equal(out[:, [0, 3]], 0)


def test_resize_with_pad_puts_odd_padding_at_the_bottom():
    """1x3 in 4x3: 3 rows of padding, int(3 / 2) = 1 above, 2 below."""
    out = resize_with_pad(rgb([[10, 20, 30]]), 4, 3)
    np.testing.assert_array_equal(out[1], rgb([10, 20, 30]))
    np.testing.assert_array_equal(out[[0, 2, 3]], 0)


def test_resize_with_pad_upsamples_with_pils_bilinear():
    """1x2 [0, 100] to 2x4 (ratio 0.5), padded into 4x4. PIL's bilinear taps at
    (x + 0.5) * 0.5: 0.25 -> pixel 0 alone, 0.75 -> 3/4 * 0 + 1/4 * 100, and so on."""
    out = resize_with_pad(rgb([[0, 100]]), 4, 4)
    np.testing.assert_array_equal(out[1:3], rgb([[0, 25, 75, 100]] * 2))
    np.testing.assert_array_equal(out[[0, 3]], 0)


def test_resize_with_pad_keeps_the_aspect_ratio():
    """256x128 into 224x224: ratio 256/224, so 224x112, 56 zero columns either side."""
    out = resize_with_pad(np.full((256, 128, 3), 255, np.uint8), 224, 224)
    assert out.shape == (224, 224, 3)
    np.testing.assert_array_equal(out[:, 56:168], 255)
    np.testing.assert_array_equal(out[:, :56], 0)
    np.testing.assert_array_equal(out[:, 168:], 0)


def test_resize_with_pad_resizes_a_batch_image_by_image():
    batch = np.stack([np.full((8, 4, 3), v, np.uint8) for v in (10, 200)]).reshape(2, 1, 8, 4, 3)
    out = resize_with_pad(batch, 4, 4)
    assert out.shape == (2, 1, 4, 4, 3)
    np.testing.assert_array_equal(out[1, 0, :, 1:3], 200)
    np.testing.assert_array_equal(out[1, 0, :, [0, 3]], 0)


RESIZE_IN_PEER = """
import json, sys
import numpy as np
from openpi_client import image_tools
data, shapes, out, offset = sys.stdin.buffer.read(), json.loads(sys.argv[1]), [], 0
for shape in shapes:
    size = int(np.prod(shape))
    image = np.frombuffer(data[offset:offset + size], np.uint8).reshape(shape)
    offset += size
    out.append(image_tools.resize_with_pad(image, 224, 224).tobytes())
sys.stdout.buffer.write(b"".join(out))
"""


def test_resize_with_pad_matches_openpi_client():
    """The peer's own implementation, run in its venv (openpi-client needs numpy < 2)."""
    from tests.policies.remote.peers import OPENPI_VENV, run_in_peer

    rng = np.random.default_rng(2)
    shapes = [(256, 256, 3), (128, 128, 3), (100, 300, 3), (480, 640, 3), (3, 5, 3)]
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in shapes]
    theirs = run_in_peer(OPENPI_VENV, RESIZE_IN_PEER, json.dumps(shapes),
                         stdin=b"".join(image.tobytes() for image in images))
    ours = b"".join(resize_with_pad(image, 224, 224).tobytes() for image in images)
    assert len(theirs) == len(ours) == 5 * 224 * 224 * 3 and theirs == ours


# --- OpenVLA's resize and center crop ---------------------------------------------------

GOLDEN_INPUT = np.stack(
    [(np.arange(16)[None, :] * 16 + np.arange(16)[:, None] * 3) % 256,
     np.repeat((np.arange(16)[:, None] * 15 + 40) % 256, 16, axis=1),
     ((np.arange(16)[None, :] - 8) ** 2 + (np.arange(16)[:, None] - 8) ** 2) * 2 % 256],
    -1).astype(np.uint8)
"""16x16x3; GOLDEN_RESIZE and GOLDEN_CROP are what openvla's own TensorFlow code (TF 2.21)
makes of it at size (10, 10): `resize_image` (libero_utils.py:42-45) and the center crop
(openvla_utils.py:140-151, `crop_and_resize` with crop_scale 0.9)."""
GOLDEN_RESIZE = bytes.fromhex(
    "0a24971e3299332d874e2e7f662e747c2e62973068af317ccc2f9eea2fc41245a722418e3d427155435f6b43"
    "5487424aa24152b94463d3467fed479d115a93255d78405c515c5d3c755c328d5a2da75b38c15b43de5c59f8"
    "63791b737c2a766044773d6075277c741f917318ac7321ca732edb7a4cd17a65238a6e348c534d8f31658f1b"
    "7e8f10988e08b68a10ce881fcea25077844a28a27339a4534fa72d68a81884a70c9ea807b6a80fcfa41bd0b9"
    "4e7fa05626b77639b85553ba326dba1d88b8119fba0cb7bd15d3b91fc7ca4d65b85724d07e38d15e54d13b70"
    "d0288bd01ba0d416b7d11aded22ea7d14a20c15251e5c367e6a381e8819ce66eb9e660ceea5be6e75fffe874"
    "cbe99539dfa42c74aa3676884b786665775583764a9c7744b17648cb78599879791f6c88"
)
GOLDEN_CROP = bytes.fromhex(
    "072d88202dbd3a2d9c532d856c2d78862d759f2d7bb82d8dd22da7eb2dcc0c45bd2545923e45715845597145"
    "4c8a4549a44550bd4561d6457bf045a1105d9c2a5d71435d505c5d38765d2b8f5d28a85d2fc25d40db5d5bf4"
    "5d801575852e75594875386175217a7514947511ad7517c77529e07543e575681a8c78338c4c4d8c2b668c14"
    "7f8c07998c04b28c0acb8c1ce58c36608c5b1fa47538a44951a4286ba41184a4049da401b7a407d0a418e9a4"
    "3365a45823bc7b3dbc5056bc2f6fbc1789bc0aa2bc07bbbc0ed5bc1feebc3a6abc5f28d48d41d4615bd44074"
    "d4298dd41ca7d418c0d41fdad430ead44b0cd4702deba746eb7b60eb5b79eb4392eb36aceb33c5eb3adeeb4b"
    "efeb6510eb8b3265cc4b65a16465807e656897655bb06558ca655fe36570f4658b1565b0"
)


def test_openvla_resize_matches_tensorflows_output():
    expected = np.frombuffer(GOLDEN_RESIZE, np.uint8).reshape(10, 10, 3)
    np.testing.assert_array_equal(openvla_resize(GOLDEN_INPUT, (10, 10)), expected)


def test_openvla_center_crop_matches_tensorflows_output():
    expected = np.frombuffer(GOLDEN_CROP, np.uint8).reshape(10, 10, 3)
    np.testing.assert_array_equal(openvla_center_crop(GOLDEN_INPUT, 0.9, (10, 10)), expected)


def test_openvla_resize_check_fails_without_the_jpeg_round_trip():
    """The golden fires: a plain Lanczos resize (no JPEG round trip) differs."""
    from PIL import Image

    plain = np.asarray(Image.fromarray(GOLDEN_INPUT).resize((10, 10), Image.Resampling.LANCZOS))
    expected = np.frombuffer(GOLDEN_RESIZE, np.uint8).reshape(10, 10, 3)
    assert not np.array_equal(plain, expected)


# --- quaternions, state -----------------------------------------------------------------

@pytest.mark.parametrize(("quat", "expected"), [
    ((0, 0, 0, 1), (0, 0, 0)),                        # identity
    ((S45, 0, 0, S45), (math.pi / 2, 0, 0)),          # 90 degrees about x
    ((0, S45, 0, S45), (0, math.pi / 2, 0)),          # about y
    ((0, 0, S45, S45), (0, 0, math.pi / 2)),          # about z
    ((0, 0, -S45, S45), (0, 0, -math.pi / 2)),        # -90 about z
    ((1, 0, 0, 0), (math.pi, 0, 0)),                  # 180 about x
    ((0, 0, 1, 0), (0, 0, math.pi)),                  # 180 about z
    ((0, 0, -S45, -S45), (0, 0, -3 * math.pi / 2)),   # -q of 90 about z: not folded back
    ((math.sin(5e-4), 0, 0, math.cos(5e-4)), (1e-3, 0, 0)),  # near identity: no cut-off
])
def test_quat_to_axis_angle_is_robosuites(quat, expected):
    np.testing.assert_allclose(quat_to_axis_angle(np.array(quat)), expected, rtol=1e-9,
                               atol=1e-12)


@pytest.mark.parametrize("quat", [(1e-9, 0, 0, 1.0), (0, 0, 0, 1.0000001)])
def test_quat_to_axis_angle_is_zero_only_where_sqrt_1_minus_w2_is_zero(quat):
    """robosuite's `math.isclose(den, 0.0)` is den == 0: w == 1 (after clipping)."""
    np.testing.assert_array_equal(quat_to_axis_angle(np.array(quat)), np.zeros(3))


def test_quat_to_axis_angle_leaves_its_input_alone():
    quat = np.array([0, 0, 0, 1.5])
    quat_to_axis_angle(quat)
    assert quat[3] == 1.5


def test_vla_eval_axis_angle_folds_minus_q():
    np.testing.assert_allclose(vla_eval_quat_to_axis_angle(np.array([0, 0, -S45, -S45])),
                               (0, 0, math.pi / 2), rtol=1e-6)


def test_openpi_state_is_eef_pos_axis_angle_gripper_qpos():
    state = OpenpiLibero().model_input(observation(raw_render(), raw_render())).state
    source = libero_state()
    assert state.shape == (8,) and state.dtype == np.float64
    np.testing.assert_array_equal(state[:3], source["robot0_eef_pos"].astype(np.float64))
    np.testing.assert_allclose(state[3:6], (0, 0, math.pi / 2), rtol=1e-6)
    np.testing.assert_array_equal(state[6:], source["robot0_gripper_qpos"].astype(np.float64))


def test_vla_eval_libero_state_has_the_same_layout_with_folded_quaternions():
    obs = observation(raw_render())
    obs.state["robot0_eef_quat"][:] = (0, 0, -S45, -S45)
    state = VlaEvalLibero().model_input(obs).state
    np.testing.assert_allclose(state[3:6], (0, 0, math.pi / 2), rtol=1e-6)
    antipodal = VlaEvalLibero(quat_no_antipodal=True).model_input(obs).state
    np.testing.assert_allclose(antipodal[3:6], (0, 0, -3 * math.pi / 2), rtol=1e-6)


def test_vla_eval_default_flattens_the_state_keys_in_their_order():
    obs = observation(raw_render(64))
    model = VlaEvalDefault(state_keys=("robot0_gripper_qpos", "robot0_eef_pos"))
    np.testing.assert_array_equal(model.model_input(obs).state,
                                  np.array([0.039, -0.038, 0.1, -0.2, 1.05], np.float32))
    assert VlaEvalDefault().model_input(obs).state is None


# --- prompts ----------------------------------------------------------------------------

def test_prompts():
    obs = observation(raw_render(), raw_render())
    assert OpenpiLibero().model_input(obs).prompt == \
        "Pick up the Black Bowl and place it on the plate"
    openvla = OpenvlaLibero().model_input(obs)
    assert openvla.prompt == ("In: What action should the robot take to pick up the black "
                              "bowl and place it on the plate?\nOut:")
    assert openvla.extra == {}
    assert VlaEvalLibero().model_input(obs).prompt == obs.instruction
    assert openvla_prompt("Open the Drawer") == \
        "In: What action should the robot take to open the drawer?\nOut:"


# --- actions ----------------------------------------------------------------------------

ARM = [0.1, -0.2, 0.3, 0.01, -0.02, 0.03]


@pytest.mark.parametrize(("gripper", "env_gripper"), [
    (0.0, 1.0),   # OpenVLA 0 = closed -> LIBERO +1 close
    (1.0, -1.0),  # 1 = open -> -1 open
    (0.3, 1.0),   # binarized: 2 * 0.3 - 1 < 0 -> -1, inverted -> +1
    (0.7, -1.0),
    (0.5, 0.0),   # np.sign(0) = 0: openvla sends 0
])
def test_openvla_gripper_is_what_openvlas_libero_eval_sends(gripper, env_gripper):
    raw = np.array([ARM + [gripper]], np.float32)
    actions = OpenvlaLibero().env_actions(raw)
    assert actions.shape == (1, 7) and actions.dtype == np.float32
    np.testing.assert_array_equal(actions, np.array([ARM + [env_gripper]], np.float32))
    assert raw[0, -1] == np.float32(gripper)  # the reply is not changed in place


def test_the_gripper_check_fails_without_the_sign_flip():
    """Forgetting `invert_gripper_action` opens where openvla's eval closes."""
    raw = np.array([ARM + [0.0]], np.float32)
    assert normalize_gripper_action(raw)[0, -1] == -1.0
    assert invert_gripper_action(normalize_gripper_action(raw))[0, -1] == 1.0


def test_openpi_actions_step_the_env_as_they_are():
    raw = np.linspace(-1, 1, 10 * 7, dtype=np.float32).reshape(10, 7)
    np.testing.assert_array_equal(OpenpiLibero().env_actions(raw), raw)


def test_vla_eval_libero_gripper_is_its_benchmarks_sign():
    raw = np.array([ARM + [g] for g in (-0.3, 0.0, 0.2)], np.float32)
    np.testing.assert_array_equal(VlaEvalLibero().env_actions(raw)[:, -1], [-1.0, 1.0, 1.0])


def test_a_reply_of_the_wrong_width_is_a_remote_error():
    with pytest.raises(RemoteError, match=r"reply of shape \[1, 6\], expected \(H, 7\)"):
        OpenvlaLibero().env_actions(np.zeros((1, 6), np.float32))


# --- construction -----------------------------------------------------------------------

def test_reads_names_what_each_convention_uses():
    eef = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos")
    assert OpenpiLibero().reads() == (eef, ("agentview", "wrist"))
    assert OpenvlaLibero().reads() == ((), ("agentview",))
    assert VlaEvalLibero(cameras=("agentview", "wrist")).reads() == (eef, ("agentview", "wrist"))
    assert VlaEvalDefault(cameras=("front",), state_keys=("hand_pos",)).reads() == \
        (("hand_pos",), ("front",))


def test_make_convention_builds_from_config_values():
    model = make_convention("openpi_libero", cameras=["agentview", "wrist"],
                            image_size=[256, 256])
    assert isinstance(model, OpenpiLibero) and model.cameras == ("agentview", "wrist")
    assert isinstance(make_convention("vla_eval_default", cameras=(), image_size=(64, 64)),
                      VlaEvalDefault)


def test_make_convention_names_the_known_conventions():
    with pytest.raises(ValueError, match=r"policy.convention='pi0'.*'openpi_libero'"):
        make_convention("pi0")


def test_make_convention_names_an_unknown_setting():
    with pytest.raises(ValueError, match=r"unknown settings \['resize'\]"):
        make_convention("openvla_libero", resize=224)


def test_a_convention_without_its_cameras_says_which_to_set():
    with pytest.raises(ValueError,
                       match=r"missing wrist; set \"env.cameras=\[agentview,wrist\]\""):
        make_convention("openpi_libero", cameras=("agentview",), image_size=(256, 256))


def test_a_render_size_the_models_never_saw_is_refused():
    with pytest.raises(ValueError,
                       match=r"env.image_size=128: .* on 256 renders; set env.image_size=256"):
        make_convention("openvla_libero", cameras=("agentview",), image_size=(128, 128))
    assert make_convention("openvla_libero", image_size=(128, 128), expected_image_size=None)
