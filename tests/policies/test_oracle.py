"""The scripted MuJoCo oracle solves its tasks and declares its contract without an env."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from envs import MUJOCO_TASKS, make_env
from harness.loop.evaluate import evaluate
from harness.protocol import check_contract
from policies import make_policy


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
