"""The committed torch policy: loads without pickle, fits its env, acts well; training is
deterministic."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch

from envs import make_env
from harness.jobs.evaluate import evaluate
from harness.protocol import check_contract
from policies import make_policy
from policies.config import default_weights
from policies.torch_policy import TorchPolicy
from policies.train import collect_demonstrations, train


@pytest.fixture(scope="module")
def env():
    env = make_env("mujoco_pick_place")
    yield env
    env.close()


def test_committed_weights_are_small_safetensors_with_a_spec():
    path = default_weights("mujoco_pick_place")
    data = path.read_bytes()
    assert len(data) < 10 * 1024 * 1024
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + header_len])  # plain JSON header: nothing to unpickle
    spec = json.loads(header["__metadata__"]["spec"])
    assert spec["action_names"] == ["dx", "dy", "dz", "gripper"]
    assert spec["chunk_size"] == 8


def test_loaded_policy_fits_the_env_and_returns_bounded_chunks(env):
    policy = make_policy("torch", env="mujoco_pick_place")
    check_contract(policy.spec, env.spec.contract)
    chunk = policy.predict(env.reset(seed=0))
    assert chunk.shape == (8, 4) and chunk.dtype == np.float32
    assert np.all(np.abs(chunk) <= 1.0)


def test_committed_policy_solves_pick_and_place(env):
    policy = make_policy("torch", env="mujoco_pick_place")
    outcomes = evaluate(env, policy, episodes=10, seed=0, progress=False)
    assert sum(o.success for o in outcomes) >= 8


def test_save_then_load_gives_identical_actions(env, tmp_path):
    policy = make_policy("torch", env="mujoco_pick_place")
    policy.save(tmp_path / "copy.safetensors")
    copy = TorchPolicy.load(tmp_path / "copy.safetensors")
    observation = env.reset(seed=4)
    np.testing.assert_array_equal(policy.predict(observation), copy.predict(observation))
    assert copy.spec == policy.spec


def test_missing_weights_name_the_file_and_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m policies.train --env mujoco_reach"):
        TorchPolicy.load(tmp_path / "mujoco_reach.safetensors")
    with pytest.raises(FileNotFoundError, match="trains mujoco_reach, mujoco_pick_place only; "
                                                "there are no weights for env=libero_object"):
        TorchPolicy.load(tmp_path / "libero_object.safetensors")


def test_weights_without_a_policy_spec_are_rejected(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "bare.safetensors"))
    with pytest.raises(ValueError, match="has no valid policy spec"):
        TorchPolicy.load(tmp_path / "bare.safetensors")


def test_training_is_deterministic_for_a_seed():
    states, chunks, spec = collect_demonstrations("mujoco_reach", episodes=3, chunk_size=4,
                                                  seed=1)
    assert states.shape[1] == 6 and chunks.shape[1:] == (4, 3)
    torch.set_num_threads(1)
    a = train(states, chunks, spec, model_id="t", epochs=2, seed=3)
    b = train(states, chunks, spec, model_id="t", epochs=2, seed=3)
    for (name, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items(),
                                 strict=True):
        assert torch.equal(x, y), name
