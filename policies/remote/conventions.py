"""What each model family expects to see, against our envs' observations, and what its actions
mean for our envs (`policies.remote.base.Convention`).

Each convention copies what the family's own LIBERO evaluation does to the raw robosuite
observation, re-expressed against ours. The sources, read at these commits:
- openpi `examples/libero/main.py` (15a9616) and openpi-client 0.1.2 `image_tools.py`;
- openvla `experiments/robot/libero/{libero_utils,run_libero_eval}.py`,
  `experiments/robot/{robot_utils,openvla_utils}.py`, `vla-scripts/deploy.py` (c8f03f4);
- vla-eval `src/vla_eval/benchmarks/libero/{benchmark,utils}.py`, `rotation.py` (e1ee9ad).

Orientation, worked out once. robosuite renders with OpenGL's origin (row 0 is the bottom of
the picture) and our LIBERO env hands out `upright(raw) = raw[::-1]`. openpi, OpenVLA and
vla-eval all feed the model `raw[::-1, ::-1]` ("rotate 180 degrees to match train
preprocessing"), which is `upright[:, ::-1]`: our upright picture mirrored left-right, not
turned by 180 degrees (turning ours would put it upside down again). `libero_train_view`.
"""

from __future__ import annotations

import dataclasses
import io
import math
from dataclasses import dataclass

import numpy as np
import simplejpeg
from PIL import Image

from envs.base import EnvObservation
from policies.remote.base import ModelInput, RemoteError

LIBERO_RENDER_SIZE = (256, 256)
"""What openpi, OpenVLA and vla-eval render LIBERO at (openpi main.py `LIBERO_ENV_RESOLUTION`,
openvla run_libero_eval.py:156 `resolution=256`): their models never saw other sizes."""
EEF_STATE = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos")
OPENPI_REPLAN_STEPS = 5
"""openpi main.py `Args.replan_steps`: it executes 5 actions of each chunk, then asks again
(set `policy.chunk_size` to match; the convention keeps the whole reply)."""


def rotate_180(image: np.ndarray) -> np.ndarray:
    """`image[::-1, ::-1]`, contiguous: what the sources do to robosuite's raw render."""
    return np.ascontiguousarray(image[::-1, ::-1])


def libero_train_view(upright: np.ndarray) -> np.ndarray:
    """The sources' `raw[::-1, ::-1]` given our `upright(raw) = raw[::-1]`: undo our flip, turn
    by 180 degrees; that is `upright[:, ::-1]`, a left-right mirror."""
    return rotate_180(upright[::-1])


def resize_with_pad(images: np.ndarray, height: int, width: int,
                    method: int = Image.Resampling.BILINEAR) -> np.ndarray:
    """openpi-client's `image_tools.resize_with_pad`, the same arithmetic: scale [..., H, W, C]
    uint8 images by one ratio so the larger side fits, PIL `method` (bilinear), and paste onto
    zeros at (int(dh / 2), int(dw / 2)) (odd padding: the extra row / column at the bottom /
    right). Images already (height, width) are returned as they are (the same object)."""
    if images.shape[-3:-1] == (height, width):
        return images
    flat = images.reshape(-1, *images.shape[-3:])
    out = np.stack([_resize_with_pad_one(Image.fromarray(im), height, width, method)
                    for im in flat])
    return out.reshape(*images.shape[:-3], *out.shape[-3:])


def _resize_with_pad_one(image: Image.Image, height: int, width: int, method: int) -> np.ndarray:
    cur_width, cur_height = image.size
    ratio = max(cur_width / width, cur_height / height)
    resized_height, resized_width = int(cur_height / ratio), int(cur_width / ratio)
    resized = image.resize((resized_width, resized_height), resample=method)
    canvas = Image.new(resized.mode, (width, height), 0)
    canvas.paste(resized, (max(0, int((width - resized_width) / 2)),
                           max(0, int((height - resized_height) / 2))))
    return np.asarray(canvas)


def openvla_resize(image: np.ndarray, size: tuple[int, int] = (224, 224), *,
                   jpeg_quality: int = 95) -> np.ndarray:
    """OpenVLA's `resize_image` (libero_utils.py:33-47): a JPEG round trip as TF does it (PIL
    encodes at TF's defaults, quality 95, 4:2:0, the same coded data; simplejpeg decodes with
    libjpeg's fast integer IDCT and smooth chroma upsampling, TF's default: pixel-exact), then
    a 3-lobe antialiased Lanczos resize to `size` (H, W) in float, rounded half to even and
    clipped. Approximated: PIL's Lanczos is within 0.003 of TF's `scale_and_translate` before
    rounding, so a pixel at a .5 tie can be one level off (<0.1% of pixels)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=jpeg_quality)
    decoded = simplejpeg.decode_jpeg(buffer.getvalue(), colorspace="RGB", fastdct=True,
                                     fastupsample=False).astype(np.float32)
    height, width = size
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(decoded[..., c])).resize(
        (width, height), Image.Resampling.LANCZOS)) for c in range(decoded.shape[-1])]
    return np.clip(np.round(np.stack(channels, -1)), 0, 255).astype(np.uint8)


def openvla_center_crop(image: np.ndarray, crop_scale: float = 0.9,
                        size: tuple[int, int] = (224, 224)) -> np.ndarray:
    """OpenVLA's center crop (openvla_utils.py:135-155, `crop_and_resize`): keep the central
    `crop_scale` of the area (sides times sqrt(crop_scale)) and resize it to `size` with
    `tf.image.crop_and_resize`'s bilinear sampling, in float32 as TF computes it, between
    TF's `convert_image_dtype` conversions (x / 255 in, floor(x * 255.5) out)."""
    x = image.astype(np.float32) * np.float32(1.0 / 255)
    side = np.clip(np.sqrt(np.float32(crop_scale)), np.float32(0), np.float32(1))
    low = (np.float32(1) - side) / np.float32(2)
    ys, xs = (_crop_axis(low, low + side, image.shape[i], size[i]) for i in (0, 1))
    (y0, y1, wy), (x0, x1, wx) = ys, xs
    wx = wx[None, :, None]
    top = x[y0][:, x0] + (x[y0][:, x1] - x[y0][:, x0]) * wx
    bottom = x[y1][:, x0] + (x[y1][:, x1] - x[y1][:, x0]) * wx
    crop = np.clip(top + (bottom - top) * wy[:, None, None], 0, 1)
    return np.clip(crop * np.float32(255.5), 0, 255).astype(np.uint8)


def _crop_axis(low: np.float32, high: np.float32, n_in: int, n_out: int):
    """Sample indices and weights along one axis, as TF's CropAndResize kernel computes them."""
    scale = (high - low) * np.float32(n_in - 1) / np.float32(n_out - 1)
    at = low * np.float32(n_in - 1) + np.arange(n_out, dtype=np.float32) * scale
    first = np.floor(at).astype(int)
    return first, np.ceil(at).astype(int), (at - first).astype(np.float32)


def quat_to_axis_angle(quat: np.ndarray) -> np.ndarray:
    """robosuite's `quat2axisangle`, which openpi (main.py `_quat2axisangle`) and OpenVLA copy:
    an (x, y, z, w) quaternion (robosuite's order: `robot0_eef_quat` is
    `convert_quat(xquat, to="xyzw")`) to axis * angle (rad), float64. w is clipped to
    [-1, 1]; zeros only when sqrt(1 - w^2) is exactly 0 (`math.isclose(den, 0.0)` has no
    absolute tolerance); no sign normalization (w < 0 gives angles above pi). The input is
    not changed (robosuite's clips it in place)."""
    q = np.array(quat, np.float64)
    w = min(max(q[3], -1.0), 1.0)
    den = np.sqrt(1.0 - w * w)
    if math.isclose(den, 0.0):
        return np.zeros(3)
    return (q[:3] * 2.0 * math.acos(w)) / den


def vla_eval_quat_to_axis_angle(quat: np.ndarray) -> np.ndarray:
    """vla-eval's `rotation.quat_to_axisangle` (its LIBERO default): like robosuite's but with
    q -> -q when w < 0 (angles within [0, pi]) and zeros below sin(angle / 2) = 1e-8;
    float32 values."""
    q = np.array(quat, np.float64)
    q = -q if q[3] < 0 else q
    w = float(np.clip(q[3], -1.0, 1.0))
    sin_half = np.sqrt(1.0 - w * w)
    if sin_half < 1e-8:
        return np.zeros(3, np.float32)
    return (q[:3] / sin_half * (2.0 * np.arccos(w))).astype(np.float32)


def normalize_gripper_action(actions: np.ndarray, binarize: bool = True) -> np.ndarray:
    """OpenVLA's `normalize_gripper_action` (robot_utils.py:75-92) on a copy: the last column
    from [0, 1] to [-1, 1] (2x - 1), then its sign (0.5 -> 0)."""
    out = np.array(actions, np.float32)
    out[..., -1] = 2 * out[..., -1] - 1
    if binarize:
        out[..., -1] = np.sign(out[..., -1])
    return out


def invert_gripper_action(actions: np.ndarray) -> np.ndarray:
    """OpenVLA's `invert_gripper_action` (robot_utils.py:95-102) on a copy: the last column
    times -1 (its data loader has 1 = open; LIBERO has -1 = open)."""
    out = np.array(actions, np.float32)
    out[..., -1] = out[..., -1] * -1.0
    return out


OPENVLA_PROMPT_TEMPLATE = "In: What action should the robot take to {instruction}?\nOut:"
"""OpenVLA-7B's prompt (deploy.py `get_openvla_prompt`, not the `v01` chat variant)."""


def openvla_prompt(instruction: str) -> str:
    """OpenVLA's prompt (openvla_utils.py:163, deploy.py:62): the instruction lower-cased."""
    return OPENVLA_PROMPT_TEMPLATE.format(instruction=instruction.lower())


def _check_cameras(name: str, cameras: tuple[str, ...], needed: tuple[str, ...]) -> None:
    missing = [c for c in needed if c not in cameras]
    if missing:
        raise ValueError(f"env.cameras=[{','.join(cameras)}]: {name} reads "
                         f"{', '.join(needed)}, missing {', '.join(missing)}; set "
                         f"\"env.cameras=[{','.join(needed)}]\"")


def _check_size(name: str, image_size: tuple[int, int], expected: tuple[int, int] | None):
    if expected is not None and tuple(image_size) != tuple(expected):
        given, wanted = (f"{a}x{b}" if a != b else str(a) for a, b in (image_size, expected))
        raise ValueError(f"env.image_size={given}: {name}'s models were trained on {wanted} "
                         f"renders; set env.image_size={wanted} (or a convention with "
                         "expected_image_size=None to accept the shift)")


def _image(observation: EnvObservation, camera: str) -> np.ndarray:
    image = observation.images[camera]
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image {camera!r}: expected HxWx3 uint8, got {image.dtype} "
                         f"{list(image.shape)}")
    return image


def _actions(raw: np.ndarray, action_dim: int) -> np.ndarray:
    actions = np.array(raw, np.float32)
    if actions.ndim != 2 or actions.shape[1] != action_dim:
        raise RemoteError(f"reply of shape {list(actions.shape)}, expected (H, {action_dim})")
    return actions


def _eef_state(observation: EnvObservation, to_axis_angle) -> np.ndarray:
    """[eef_pos (3), axis-angle of eef_quat (3), gripper_qpos (2)], float64 (openpi main.py
    `observation/state`; openvla's run_libero_eval.py:205 builds the same and does not send
    it; vla-eval benchmark.py:266 `states`)."""
    pos, quat, qpos = (np.asarray(observation.state[k], np.float64) for k in EEF_STATE)
    return np.concatenate([pos, np.asarray(to_axis_angle(quat), np.float64), qpos])


@dataclass(frozen=True)
class OpenpiLibero:
    """openpi's LIBERO client (examples/libero/main.py:113-153): `observation/image` from the
    agentview camera and `observation/wrist_image` from the wrist, each `raw[::-1, ::-1]`
    then `resize_with_pad` to `resize_size` square; `observation/state` = `_eef_state`;
    prompt = the instruction as it is. The reply's actions step the env as they are (no
    gripper post-processing; the server's LiberoOutputs keeps 7 dims)."""

    cameras: tuple[str, ...] = ("agentview", "wrist")
    image_size: tuple[int, int] = LIBERO_RENDER_SIZE
    base_camera: str = "agentview"
    wrist_camera: str = "wrist"
    resize_size: int = 224
    expected_image_size: tuple[int, int] | None = LIBERO_RENDER_SIZE

    def __post_init__(self) -> None:
        _check_cameras("openpi_libero", tuple(self.cameras), (self.base_camera, self.wrist_camera))
        _check_size("openpi_libero", self.image_size, self.expected_image_size)

    def reads(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return EEF_STATE, (self.base_camera, self.wrist_camera)

    def model_input(self, observation: EnvObservation) -> ModelInput:
        def view(camera: str) -> np.ndarray:
            image = libero_train_view(_image(observation, camera))
            return resize_with_pad(image, self.resize_size, self.resize_size)

        return ModelInput(images={"observation/image": view(self.base_camera),
                                  "observation/wrist_image": view(self.wrist_camera)},
                          state=_eef_state(observation, quat_to_axis_angle),
                          prompt=observation.instruction)

    def env_actions(self, raw: np.ndarray) -> np.ndarray:
        return _actions(raw, 7)


@dataclass(frozen=True)
class OpenvlaLibero:
    """OpenVLA's LIBERO eval (run_libero_eval.py:196-228): the agentview image `raw[::-1,
    ::-1]`, `openvla_resize` to 224, `openvla_center_crop` (on by default there, and needed
    by the image-augmented LIBERO fine-tunes); no state; the prompt `openvla_prompt` (a
    server that templates it itself, deploy.py's /act, is sent the instruction inside: the
    adapter's `openvla_instruction`). One action per reply; its gripper, in [0, 1] with 1
    open, becomes `invert_gripper_action(normalize_gripper_action(a))`: < 0.5 -> +1 (close),
    > 0.5 -> -1 (open), 0.5 -> 0."""

    cameras: tuple[str, ...] = ("agentview",)
    image_size: tuple[int, int] = LIBERO_RENDER_SIZE
    camera: str = "agentview"
    resize_size: int = 224
    center_crop: bool = True
    crop_scale: float = 0.9
    expected_image_size: tuple[int, int] | None = LIBERO_RENDER_SIZE

    def __post_init__(self) -> None:
        _check_cameras("openvla_libero", tuple(self.cameras), (self.camera,))
        _check_size("openvla_libero", self.image_size, self.expected_image_size)

    def reads(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return (), (self.camera,)

    def model_input(self, observation: EnvObservation) -> ModelInput:
        size = (self.resize_size, self.resize_size)
        image = openvla_resize(libero_train_view(_image(observation, self.camera)), size)
        if self.center_crop:
            image = openvla_center_crop(image, self.crop_scale, size)
        return ModelInput(images={"image": image}, state=None,
                          prompt=openvla_prompt(observation.instruction))

    def env_actions(self, raw: np.ndarray) -> np.ndarray:
        return invert_gripper_action(normalize_gripper_action(_actions(raw, 7), binarize=True))


@dataclass(frozen=True)
class VlaEvalLibero:
    """vla-eval's LIBERO benchmark (benchmark.py:251-282, utils.py:44-51) against our env:
    images by its names ("agentview", and "wrist" where our env renders it) as `raw[::-1,
    ::-1]` at the render size (the model server resizes); `states` = `_eef_state` with
    vla-eval's sign-normalized axis-angle (`quat_no_antipodal=True`: robosuite's); prompt
    (`task_description`) = the instruction. Actions as its `step` sends them
    (benchmark.py:228-233): gripper -1 if < 0, else +1."""

    cameras: tuple[str, ...] = ("agentview",)
    image_size: tuple[int, int] = LIBERO_RENDER_SIZE
    quat_no_antipodal: bool = False
    expected_image_size: tuple[int, int] | None = LIBERO_RENDER_SIZE

    def __post_init__(self) -> None:
        _check_cameras("vla_eval_libero", tuple(self.cameras), ("agentview",))
        _check_size("vla_eval_libero", self.image_size, self.expected_image_size)

    def reads(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return EEF_STATE, tuple(c for c in ("agentview", "wrist") if c in self.cameras)

    def model_input(self, observation: EnvObservation) -> ModelInput:
        to_aa = quat_to_axis_angle if self.quat_no_antipodal else vla_eval_quat_to_axis_angle
        return ModelInput(images={c: libero_train_view(_image(observation, c))
                                  for c in self.reads()[1]},
                          state=_eef_state(observation, to_aa), prompt=observation.instruction)

    def env_actions(self, raw: np.ndarray) -> np.ndarray:
        actions = _actions(raw, 7)
        actions[:, -1] = np.where(actions[:, -1] < 0, -1.0, 1.0)
        return actions


@dataclass(frozen=True)
class VlaEvalDefault:
    """Our observation as it is, for a model that learned on our envs (or does its own
    preprocessing): images by our camera names, upright, not resized; the state as one
    float32 vector, `state_keys` concatenated in that order (none: no state); prompt =
    the instruction; actions passed through (as float32)."""

    cameras: tuple[str, ...] = ()
    image_size: tuple[int, int] = (128, 128)
    state_keys: tuple[str, ...] = ()

    def reads(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return tuple(self.state_keys), tuple(self.cameras)

    def model_input(self, observation: EnvObservation) -> ModelInput:
        state = (np.concatenate([np.asarray(observation.state[k], np.float32).ravel()
                                 for k in self.state_keys]) if self.state_keys else None)
        return ModelInput(images={c: _image(observation, c) for c in self.cameras},
                          state=state, prompt=observation.instruction)

    def env_actions(self, raw: np.ndarray) -> np.ndarray:
        return np.array(raw, np.float32)


CONVENTIONS = {"openpi_libero": OpenpiLibero, "openvla_libero": OpenvlaLibero,
               "vla_eval_libero": VlaEvalLibero, "vla_eval_default": VlaEvalDefault}


def make_convention(name: str, **config: object):
    """The convention `name` with `config` (its fields: every one takes `cameras`, our env's
    camera names, and `image_size`, our env's render (H, W)).

    Raises:
        ValueError: an unknown name (naming the known ones), an unknown field (naming the
            convention's), or a config the convention cannot serve (cameras, render size).
    """
    if name not in CONVENTIONS:
        raise ValueError(f"policy.convention={name!r}: expected one of {sorted(CONVENTIONS)}")
    cls = CONVENTIONS[name]
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(config) - set(fields))
    if unknown:
        raise ValueError(f"convention {name}: unknown settings {unknown}; it takes {fields}")
    for key in ("cameras", "image_size", "state_keys", "expected_image_size"):
        if config.get(key) is not None:
            config[key] = tuple(config[key])
    return cls(**config)
