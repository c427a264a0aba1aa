"""LIBERO suites on CPU: reset and step, determinism, horizons, and upright images.

Each env construction takes seconds, so envs are module-scoped and episodes are short.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest

from envs import LIBERO_SUITES, make_env
from envs.libero import HORIZONS, SETTLE_STEPS, upright

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def object_env():
    env = make_env("libero_object")
    yield env
    env.close()


@pytest.mark.parametrize("suite", LIBERO_SUITES)
def test_every_suite_resets_and_steps_with_its_horizon(suite):
    env = make_env(suite)
    try:
        assert env.spec.max_steps == HORIZONS[suite]
        observation = env.reset(seed=0, init_state=0)
        assert observation.instruction
        result = env.step(np.zeros(7))
        for key, field in env.spec.contract.state.items():
            assert result.observation.state[key].shape == field.shape
            assert result.observation.state[key].dtype == np.float32
        assert not result.done and result.info["steps"] == 1
    finally:
        env.close()


def rollout(env, *, seed: int, init_state: int, steps: int = 15) -> bytes:
    """The MuJoCo state and every camera image after each step, as bytes."""
    env.reset(seed=seed, init_state=init_state)
    rng = np.random.default_rng(5)
    states = []
    for _ in range(steps):
        result = env.step(rng.uniform(-0.5, 0.5, 7))
        states += [env.sim_state(), *(i.tobytes() for i in result.observation.images.values())]
    return b"".join(states)


def test_same_seed_init_state_and_actions_repeat_byte_for_byte():
    """On a new env: its first episode keeps the scene built at construction, the next
    ones reload it (`LiberoEnv._reset_scene`); the two must not differ by a byte of MuJoCo
    state (what a camera renders follows from it; no renderer here, ~10 CPU-s less)."""
    env = make_env("libero_object")
    try:
        first = rollout(env, seed=3, init_state=2)
        assert rollout(env, seed=3, init_state=2) == first
        assert rollout(env, seed=3, init_state=4) != first
    finally:
        env.close()


def test_observation_carries_robot_and_privileged_object_state(object_env):
    state = object_env.reset(seed=0, init_state=0).state
    assert state["robot0_eef_pos"].shape == (3,)
    assert state["robot0_gripper_qpos"].shape == (2,)
    assert "basket_1_pos" in state and "alphabet_soup_1_pos" in state


def test_ee_pos_is_the_observed_eef_position_after_each_step(object_env):
    observation = object_env.reset(seed=0, init_state=0)
    np.testing.assert_array_equal(object_env.ee_pos().astype(np.float32),
                                  observation.state["robot0_eef_pos"])
    result = object_env.step(np.array([0.5, 0, 0, 0, 0, 0, -1.0]))
    np.testing.assert_array_equal(object_env.ee_pos().astype(np.float32),
                                  result.observation.state["robot0_eef_pos"])
    assert object_env.ee_pos().shape == (3,)


def test_bad_task_camera_and_init_state_are_rejected_by_name(object_env):
    with pytest.raises(ValueError, match="libero_object has tasks 0..9, not 99"):
        make_env("libero_object", task_id=99)
    with pytest.raises(ValueError, match="env.cameras"):
        make_env("libero_object", cameras=("overhead",))
    with pytest.raises(ValueError, match="init_state=50"):
        object_env.reset(seed=0, init_state=50)


def projected_row(sim, camera: str, point: np.ndarray, height: int) -> float:
    """Row (0 = top) where MuJoCo's pinhole camera sees `point`, from the camera's pose alone."""
    cam = sim.model.camera_name2id(camera)
    rotation = sim.data.cam_xmat[cam].reshape(3, 3)  # columns: camera x, y (up), z (backward)
    local = rotation.T @ (point - sim.data.cam_xpos[cam])
    focal = (height / 2) / math.tan(math.radians(sim.model.cam_fovy[cam]) / 2)
    return height / 2 - focal * local[1] / -local[2]


def test_images_are_upright_where_the_camera_geometry_says():
    """Lift one object out of the scene; the pixels that change must sit at the row the
    pinhole projection of the object's position predicts, in the upright image only."""
    size = 128
    env = make_env("libero_object", cameras=("agentview",), image_size=(size, size))
    try:
        env.reset(seed=0, init_state=0)
        sim = env._env.env.sim
        best = None
        for name in ("alphabet_soup_1", "milk_1", "butter_1", "cream_cheese_1", "basket_1"):
            joint = f"{name}_joint0"
            row = projected_row(sim, "agentview", sim.data.get_joint_qpos(joint)[:3], size)
            if best is None or abs(row - size / 2) > abs(best[1] - size / 2):
                best = (joint, row)
        joint, expected_row = best
        before = sim.render(camera_name="agentview", height=size, width=size)
        qpos = sim.data.get_joint_qpos(joint).copy()
        qpos[2] += 5.0  # far above the scene, out of view
        sim.data.set_joint_qpos(joint, qpos)
        sim.forward()
        after = sim.render(camera_name="agentview", height=size, width=size)
    finally:
        env.close()
    changed_raw = np.abs(before.astype(int) - after.astype(int)).max(axis=2) > 40
    changed = upright(changed_raw[..., None])[..., 0]
    assert changed.sum() > 10, "the moved object was not visible"
    upright_row = np.nonzero(changed)[0].mean()
    raw_row = np.nonzero(changed_raw)[0].mean()
    assert abs(upright_row - expected_row) < 0.12 * size
    assert abs(raw_row - expected_row) > abs(upright_row - expected_row)


def test_a_reset_renders_only_the_image_it_returns_and_the_same_bytes(monkeypatch):
    """The settle steps' images are thrown away, so they are not rendered
    (`LiberoEnv._cameras_off`); the first observation must not change by a byte."""
    from robosuite.utils.binding_utils import MjSim

    from envs.libero import LiberoEnv

    renders = []
    render = MjSim.render
    monkeypatch.setattr(MjSim, "render", lambda self, *a, **k: renders.append(1) or render(
        self, *a, **k))
    env = make_env("libero_object", cameras=("agentview", "wrist"), image_size=(64, 64))
    try:
        def first(seed: int) -> tuple[int, bytes]:
            renders.clear()
            observation = env.reset(seed=seed, init_state=1)
            images = b"".join(i.tobytes() for i in observation.images.values())
            return len(renders), images + env.sim_state()

        skipped = first(7)
        with monkeypatch.context() as every:  # as before: every settle step rendered
            every.setattr(LiberoEnv, "_cameras_off", lambda self: contextlib.nullcontext())
            rendered = first(7)
        again = first(7)
    finally:
        env.close()
    assert skipped[1] == rendered[1] == again[1]
    # Per camera, set_init_state's image and 9 settle steps' are no longer rendered (the
    # first reset keeps the scene; the other two reload it, which renders too).
    assert rendered[0] - again[0] == 2 * SETTLE_STEPS
    assert skipped[0] == 2 * 2  # the reset's own and the last settle step's
