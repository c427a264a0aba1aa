"""The scripted MuJoCo oracle solves its tasks and declares its contract without an env."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from envs import MUJOCO_TASKS, EnvObservation, make_env
from envs.mujoco_tasks import BOX_HALF_M, MOVE_PER_STEP_M
from harness.jobs.evaluate import evaluate
from harness.protocol import check_contract
from policies import make_policy
from policies.oracle import (
    CLOSE,
    FINGER_SPEED_M,
    GRASP_Z,
    OPEN_GAP_M,
    PickPlaceState,
    roll_forward,
)


@pytest.mark.parametrize("name", MUJOCO_TASKS)
def test_oracle_solves_the_mujoco_task(name):
    env = make_env(name)
    policy = make_policy("oracle", env=name, chunk_size=8)
    outcomes = evaluate(env, policy, episodes=10, seed=100, progress=False)
    assert sum(o.success for o in outcomes) >= 9
    assert all(o.steps < env.spec.max_steps for o in outcomes if o.success)


def test_oracle_chunk_has_the_declared_shape_and_dtype():
    env = make_env("mujoco_pick_place")
    policy = make_policy("oracle", env="mujoco_pick_place", chunk_size=5)
    chunk = policy.predict(env.reset(seed=0))
    assert chunk.shape == (5, 4) and chunk.dtype == np.float32
    assert np.all(np.abs(chunk) <= 1.0)


@pytest.mark.parametrize("name", MUJOCO_TASKS)
def test_oracle_declares_the_env_contract_from_the_task_definition(name):
    policy = make_policy("oracle", env=name, chunk_size=6)
    env = make_env(name, cameras=("front",))
    try:
        assert policy.spec == dataclasses.replace(env.spec.contract, images={}, chunk_size=6,
                                                  model_id="oracle", delay_aware=True)
        check_contract(policy.spec, env.spec.contract)
    finally:
        env.close()


# ---- delay-aware: planning from the state the committed prefix leads to -----------------------


def reach_observation(hand_x: float, target_x: float) -> EnvObservation:
    return EnvObservation({"hand_pos": np.array([hand_x, 0.0, 0.1]),
                           "target_pos": np.array([target_x, 0.0, 0.1])}, {}, "")


def test_the_reach_oracle_plans_from_where_the_committed_prefix_takes_the_hand():
    """Target 3.5 steps away. From the observation: 1, 1, 1, 0.5, then still. After a
    committed prefix of three full steps: the half step, then still; and the same chunk as
    from an observation of the hand already there."""
    policy = make_policy("oracle", env="mujoco_reach", chunk_size=5)
    observed = reach_observation(0.0, 3.5 * MOVE_PER_STEP_M)
    np.testing.assert_allclose(policy.predict(observed)[:, 0], [1, 1, 1, 0.5, 0], atol=1e-6)
    prefix = np.array([[1.0, 0.0, 0.0]] * 3, np.float32)
    np.testing.assert_allclose(policy.predict(observed, prefix)[:, 0], [0.5, 0, 0, 0, 0],
                               atol=1e-6)
    there = reach_observation(3 * MOVE_PER_STEP_M, 3.5 * MOVE_PER_STEP_M)
    np.testing.assert_allclose(policy.predict(observed, prefix), policy.predict(there),
                               atol=1e-6)
    assert policy.predict(observed, prefix[:0]).tobytes() == policy.predict(observed).tobytes()
    assert policy.spec.delay_aware


def test_the_pick_place_oracle_rolls_a_committed_grasp_forward_and_lifts():
    """Hand at the grasp height over the box, fingers open. From the observation it closes
    without moving. After a committed prefix of closing steps the modelled fingers have shut
    on the box (gap 2 x half its size), so the chunk starts by lifting, still closed."""
    policy = make_policy("oracle", env="mujoco_pick_place", chunk_size=4)
    box = np.array([0.1, 0.0, BOX_HALF_M])
    observed = EnvObservation({"hand_pos": np.array([0.1, 0.0, GRASP_Z]),
                               "gripper_opening": np.array([OPEN_GAP_M]), "object_pos": box,
                               "goal_pos": np.array([-0.1, 0.1, BOX_HALF_M])}, {}, "")
    np.testing.assert_array_equal(policy.predict(observed)[0], [0, 0, 0, CLOSE])
    closes = math.ceil((OPEN_GAP_M - 2 * BOX_HALF_M) / FINGER_SPEED_M)
    prefix = np.array([[0, 0, 0, CLOSE]] * closes, np.float32)
    planned = policy.predict(observed, prefix)
    np.testing.assert_array_equal(planned[0], [0, 0, 1, CLOSE])  # lift at full speed
    rolled = PickPlaceState(observed.state["hand_pos"], OPEN_GAP_M, box, box)
    for action in prefix:
        rolled = roll_forward(rolled, action[:3], float(action[3]))
    assert rolled.gap == 2 * BOX_HALF_M and rolled.holding()
