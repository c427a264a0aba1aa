"""The project's own MuJoCo tasks: a reach and a pick-and-place, for quick runs and tests.

LIBERO is the benchmark that matters, but its env takes seconds to build and ~13 ms a step on
this CPU. These tasks use plain `mujoco` with MJCF written here (envs/assets/): a Cartesian hand
driven by position actuators, and for pick-and-place two fingers that grasp by friction. A step
is 25 physics substeps (20 Hz control, 2 ms timestep), a fraction of a millisecond without
cameras.

Actions follow LIBERO's convention: deltas in [-1, 1] (1.0 = `MOVE_PER_STEP_M` of hand travel
per step) and a gripper command (-1 open, +1 close). The env integrates the deltas into a
commanded hand position, so a stale action sends the hand where it is no longer wanted, just as
on a real arm.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must precede `import mujoco`

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from envs.base import EnvObservation, EnvSpec, StepResult  # noqa: E402
from harness.protocol.contract import ArraySpec, Contract  # noqa: E402

ASSETS = Path(__file__).resolve().parent / "assets"
CONTROL_HZ = 20.0
MOVE_PER_STEP_M = 0.02
FINGER_CLOSED = 0.03
"""Finger joint target when closed: past the box's faces, so the fingers squeeze it."""
WORKSPACE_LOW = np.array([-0.25, -0.25, 0.0])
WORKSPACE_HIGH = np.array([0.25, 0.25, 0.25])
HAND_START = np.array([0.0, 0.0, 0.15])
REACH_TOLERANCE_M = 0.02
PLACE_TOLERANCE_M = 0.03
BOX_HALF_M = 0.02
VIDEO_CAMERA = "front"
VIDEO_SIZE = (256, 256)
"""The video camera and its frame (height, width): ~4 ms a frame on a CPU renderer, so
every control tick is filmed (20 fps)."""


class MujocoTaskEnv:
    """Base of the two tasks: loading, stepping, the commanded hand target, rendering."""

    xml_name: str
    task_name: str
    instruction: str
    max_steps: int
    has_fingers: bool

    def __init__(self, *, cameras: tuple[str, ...] = (), image_size: tuple[int, int] = (128, 128),
                 max_steps: int | None = None) -> None:
        self.model = mujoco.MjModel.from_xml_path(str(ASSETS / self.xml_name))
        self.data = mujoco.MjData(self.model)
        self._substeps = round(1.0 / CONTROL_HZ / self.model.opt.timestep)
        for camera in cameras:
            if mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, camera) < 0:
                raise ValueError(f"env.cameras: {camera!r} is not a camera of {self.task_name}; "
                                 f"it has {self._camera_names()}")
        self._cameras = tuple(cameras)
        self._renderer = (mujoco.Renderer(self.model, image_size[0], image_size[1])
                          if cameras else None)
        self._video_renderer: mujoco.Renderer | None = None
        """Built by the first `video_frame` call: a run that records no video has none."""
        self._hand_qpos = [self.model.joint(f"hand_{a}").qposadr[0] for a in "xyz"]
        self._target = HAND_START.copy()
        self._steps = 0
        contract = self.contract(cameras=cameras, image_size=image_size)
        self.spec = EnvSpec(
            name=self.task_name, contract=contract,
            action_low=(-1.0,) * contract.action_dim, action_high=(1.0,) * contract.action_dim,
            max_steps=max_steps if max_steps is not None else self.max_steps,
        )

    @classmethod
    def contract(cls, *, cameras: tuple[str, ...] = (),
                 image_size: tuple[int, int] = (128, 128)) -> Contract:
        """The robot's side of the task's contract, known without loading the model."""
        return Contract(action_names=cls._action_names(), state=cls._state_fields(),
                        images={camera: tuple(image_size) for camera in cameras},
                        control_hz=CONTROL_HZ)

    def _camera_names(self) -> list[str]:
        return [self.model.camera(i).name for i in range(self.model.ncam)]

    @classmethod
    def _action_names(cls) -> tuple[str, ...]:
        return ("dx", "dy", "dz", "gripper") if cls.has_fingers else ("dx", "dy", "dz")

    @classmethod
    def _state_fields(cls) -> dict[str, ArraySpec]:
        raise NotImplementedError

    def _place_objects(self, rng: np.random.Generator) -> None:
        raise NotImplementedError

    def _state(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _success(self) -> bool:
        raise NotImplementedError

    def hand_pos(self) -> np.ndarray:
        return self.data.qpos[self._hand_qpos].copy()

    def ee_pos(self) -> np.ndarray:
        """The hand's position, metres, world frame: the hand body sits at the world origin
        on three slide joints along the world axes, so its joint positions are its world
        position (read from qpos, which is current after a step; `data.xpos` is computed
        before a step's last integration)."""
        return self.hand_pos()

    def reset(self, *, seed: int, init_state: int | None = None) -> EnvObservation:
        """The layout is drawn from `init_state` when given (a fixed, numbered layout, like
        LIBERO's init states), else from `seed`; nothing else in these tasks is random."""
        rng = np.random.default_rng(init_state if init_state is not None else seed)
        mujoco.mj_resetData(self.model, self.data)
        self._target = HAND_START.copy()
        self.data.qpos[self._hand_qpos] = self._target
        self.data.ctrl[:3] = self._target
        self._place_objects(rng)
        mujoco.mj_forward(self.model, self.data)
        self._steps = 0
        return self._observation()

    def step(self, action: np.ndarray) -> StepResult:
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (self.spec.contract.action_dim,) or not np.all(np.isfinite(action)):
            raise ValueError(f"action: expected {self.spec.contract.action_dim} finite values "
                             f"{self.spec.contract.action_names}, got shape {action.shape}")
        action = np.clip(action, -1.0, 1.0)
        self._target = np.clip(self._target + action[:3] * MOVE_PER_STEP_M, WORKSPACE_LOW,
                               WORKSPACE_HIGH)
        self.data.ctrl[:3] = self._target
        if self.has_fingers:
            self.data.ctrl[3:5] = (action[3] + 1.0) / 2.0 * FINGER_CLOSED
        mujoco.mj_step(self.model, self.data, nstep=self._substeps)
        self._steps += 1
        success = self._success()
        done = success or self._steps >= self.spec.max_steps
        return StepResult(self._observation(), success, done, {"steps": self._steps})

    def _observation(self) -> EnvObservation:
        images = {}
        for camera in self._cameras:
            self._renderer.update_scene(self.data, camera=camera)
            images[camera] = self._renderer.render().copy()  # upright: row 0 is the top
        return EnvObservation(self._state(), images, self.instruction)

    video_stride = 1
    """A frame every control tick (`VideoEnv`): 256x256 costs a few milliseconds."""

    def video_frame(self) -> np.ndarray:
        """The scene now from the `front` camera, VIDEO_SIZE, upright (`VideoEnv`). Its
        renderer is the env's own, built at the first call; the policy's cameras are not
        touched."""
        if self._video_renderer is None:
            self._video_renderer = mujoco.Renderer(self.model, *VIDEO_SIZE)
        self._video_renderer.update_scene(self.data, camera=VIDEO_CAMERA)
        return self._video_renderer.render().copy()

    def sim_state(self) -> bytes:
        """Physics state and task layout as bytes: what determinism and parity checks compare."""
        return b"".join(np.ascontiguousarray(a).tobytes() for a in (
            self.data.qpos, self.data.qvel, self.data.act, self.data.ctrl, self.model.site_pos))

    def close(self) -> None:
        for renderer in (self._renderer, self._video_renderer):
            if renderer is not None:
                renderer.close()
        self._renderer = self._video_renderer = None


def _vec(n: int) -> ArraySpec:
    return ArraySpec("float32", (n,))


class ReachEnv(MujocoTaskEnv):
    xml_name = "reach.xml"
    task_name = "mujoco_reach"
    instruction = "move the hand to the red target"
    max_steps = 100
    has_fingers = False

    @classmethod
    def _state_fields(cls) -> dict[str, ArraySpec]:
        return {"hand_pos": _vec(3), "target_pos": _vec(3)}

    def _place_objects(self, rng: np.random.Generator) -> None:
        target = rng.uniform([-0.2, -0.2, 0.04], [0.2, 0.2, 0.22])
        self.model.site("target").pos[:] = target

    def _state(self) -> dict[str, np.ndarray]:
        return {"hand_pos": self.hand_pos().astype(np.float32),
                "target_pos": self.model.site("target").pos.astype(np.float32)}

    def _success(self) -> bool:
        return float(np.linalg.norm(self.hand_pos() - self.model.site("target").pos)) \
            < REACH_TOLERANCE_M


class PickPlaceEnv(MujocoTaskEnv):
    xml_name = "pick_place.xml"
    task_name = "mujoco_pick_place"
    instruction = "put the red box on the green pad"
    max_steps = 200
    has_fingers = True

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._box_qpos = self.model.joint("box").qposadr[0]
        self._fingers = [self.model.joint(f"finger_{s}").qposadr[0] for s in ("left", "right")]

    @classmethod
    def _state_fields(cls) -> dict[str, ArraySpec]:
        return {"hand_pos": _vec(3), "gripper_opening": _vec(1), "object_pos": _vec(3),
                "goal_pos": _vec(3)}

    def _place_objects(self, rng: np.random.Generator) -> None:
        while True:  # box and goal pad apart, so the task is never solved at reset
            box, goal = rng.uniform(-0.15, 0.15, size=(2, 2))
            if np.linalg.norm(box - goal) > 0.1:
                break
        self.data.qpos[self._box_qpos:self._box_qpos + 7] = [*box, BOX_HALF_M, 1, 0, 0, 0]
        self.model.site("goal").pos[:2] = goal

    def gripper_opening(self) -> float:
        """Gap between the fingers' inner faces, in metres (0.07 fully open)."""
        return float(0.07 - self.data.qpos[self._fingers].sum())

    def object_pos(self) -> np.ndarray:
        return self.data.qpos[self._box_qpos:self._box_qpos + 3].copy()

    def _state(self) -> dict[str, np.ndarray]:
        return {"hand_pos": self.hand_pos().astype(np.float32),
                "gripper_opening": np.array([self.gripper_opening()], np.float32),
                "object_pos": self.object_pos().astype(np.float32),
                "goal_pos": self.model.site("goal").pos.astype(np.float32)}

    def _success(self) -> bool:
        box = self.object_pos()
        on_pad = np.linalg.norm(box[:2] - self.model.site("goal").pos[:2]) < PLACE_TOLERANCE_M
        resting = box[2] < BOX_HALF_M + 0.005
        released = self.gripper_opening() > 2 * BOX_HALF_M + 0.01
        return bool(on_pad and resting and released)


TASKS: dict[str, type[MujocoTaskEnv]] = {"mujoco_reach": ReachEnv,
                                         "mujoco_pick_place": PickPlaceEnv}
