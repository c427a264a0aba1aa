"""The scripted oracle solves the MuJoCo tasks; spec mismatches name the field."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from envs import ArrayField, make_env
from harness.evaluate import evaluate
from policies import SpecMismatch, check_compatible, make_policy


@pytest.mark.parametrize("name", ["mujoco_reach", "mujoco_pick_place"])
def test_oracle_solves_the_mujoco_task(name):
    env = make_env(name)
    policy = make_policy("oracle", env.spec, chunk_size=8)
    outcomes = evaluate(env, policy, episodes=10, seed=100, progress=False)
    assert sum(o.success for o in outcomes) >= 9
    assert all(o.steps < env.spec.max_steps for o in outcomes if o.success)


def test_oracle_chunk_has_the_declared_shape_and_dtype():
    env = make_env("mujoco_pick_place")
    policy = make_policy("oracle", env.spec, chunk_size=5)
    chunk = policy.predict(env.reset(seed=0))
    assert chunk.shape == (5, 4) and chunk.dtype == np.float32
    assert np.all(np.abs(chunk) <= 1.0)


@pytest.fixture
def pick_place_spec():
    env = make_env("mujoco_pick_place")
    return env.spec, make_policy("oracle", env.spec).spec


def test_matching_specs_pass(pick_place_spec):
    env_spec, policy_spec = pick_place_spec
    check_compatible(policy_spec, env_spec)


@pytest.mark.parametrize(("change", "match"), [
    ({"action_names": ("dy", "dx", "dz", "gripper")}, "action_names: policy"),
    ({"state": {"object_pose": ArrayField("float32", (7,))}}, r"state\['object_pose'\]"),
    ({"state": {"object_pos": ArrayField("float64", (3,))}}, r"state\['object_pos'\]: policy"),
    ({"images": {"front": (128, 128)}}, r"images\['front'\]: the policy needs it"),
    ({"control_hz": 10.0}, "control_hz: policy 10.0 != env 20.0"),
    ({"chunk_size": 0}, "chunk_size: 0"),
])
def test_mismatch_raises_naming_the_field(pick_place_spec, change, match):
    env_spec, policy_spec = pick_place_spec
    with pytest.raises(SpecMismatch, match=match):
        check_compatible(dataclasses.replace(policy_spec, **change), env_spec)


def test_image_size_mismatch_names_both_sizes():
    env = make_env("mujoco_reach", cameras=("front",), image_size=(64, 64))
    policy_spec = dataclasses.replace(make_policy("oracle", env.spec).spec,
                                      images={"front": (128, 128)})
    with pytest.raises(SpecMismatch, match=r"expects \(128, 128\), env renders \(64, 64\)"):
        check_compatible(policy_spec, env.spec)
    env.close()
