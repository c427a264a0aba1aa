"""Batched predicts: the torch MLP and each flow variant give every robot of a batch the
chunk it would get alone (its own prefix, its own noise generator and previous chunk), a
robot whose input its features cannot read gets its error in its place, and a slow-model
profile's batch takes t(B) = t1 (1 + alpha (B - 1)) with each robot's delay drawn from its
own generator. Real parts: the shipped weights, torch on CPU, MuJoCo observations."""

from __future__ import annotations

import time

import numpy as np
import pytest

from envs import make_env
from envs.base import EnvObservation
from policies import make_policy
from policies.base import BatchItem, BatchPolicy
from policies.config import default_flow_weights
from policies.flow.policy import FlowPolicy
from policies.slow import LatencyProfile, SlowPolicy

ENV = "mujoco_pick_place"


@pytest.fixture(scope="module")
def observations():
    env = make_env(ENV)
    try:
        return [env.reset(seed=seed) for seed in range(4)]
    finally:
        env.close()


def prefixes(action_dim: int) -> list[np.ndarray | None]:
    rng = np.random.default_rng(3)
    return [None] + [rng.uniform(-1, 1, (d, action_dim)).astype(np.float32) for d in (1, 3, 6)]


@pytest.mark.parametrize("rtc", ["none", "training", "guidance"])
def test_each_flow_robot_gets_its_own_chunk_from_a_batch_over_two_steps(observations, rtc):
    """Two steps, so guidance's overlap with each robot's own previous chunk counts too."""
    weights = default_flow_weights(ENV)
    batched = [FlowPolicy.load(weights, rtc=rtc) for _ in range(4)]
    alone = [FlowPolicy.load(weights, rtc=rtc) for _ in range(4)]
    for index, policy in enumerate(batched + alone):
        policy.reset(seed=index % 4)
    committed = prefixes(batched[0].spec.action_dim)
    for _ in range(2):
        chunks = batched[0].predict_batch([BatchItem(policy, observation, prefix) for
                                           policy, observation, prefix in
                                           zip(batched, observations, committed, strict=False)])
        expected = [policy.predict(observation, prefix) for policy, observation, prefix in
                    zip(alone, observations, committed, strict=False)]
        for chunk, want in zip(chunks, expected, strict=False):
            np.testing.assert_allclose(chunk, want, rtol=0, atol=1e-5)
        assert np.abs(chunks[0] - chunks[1]).max() > 1e-2  # robots' chunks differ


def test_a_robot_whose_features_fail_gets_its_error_and_the_others_their_chunks(observations):
    weights = default_flow_weights(ENV)
    policies = [FlowPolicy.load(weights, rtc="none") for _ in range(3)]
    broken = EnvObservation({}, {}, "")  # no state at all: the features cannot read it
    results = policies[0].predict_batch([BatchItem(policies[0], observations[0]),
                                         BatchItem(policies[1], broken),
                                         BatchItem(policies[2], observations[2])])
    assert isinstance(results[1], KeyError)
    assert all(isinstance(results[i], np.ndarray) and results[i].shape == (8, 4)
               for i in (0, 2))


def test_the_torch_mlp_batches_in_one_pass_with_each_robots_chunk(observations):
    policy = make_policy("torch", env=ENV)
    assert isinstance(policy, BatchPolicy)
    chunks = policy.predict_batch([BatchItem(policy, o) for o in observations])
    for chunk, observation in zip(chunks, observations, strict=False):
        np.testing.assert_allclose(chunk, policy.predict(observation), rtol=0, atol=1e-5)


def test_a_slow_profiles_batch_takes_its_batch_cost_and_draws_every_robots_delay(observations):
    profile = LatencyProfile("test", 0.04, batch_alpha=0.5)
    assert profile.batch_s(0.04, 1) == pytest.approx(0.04)
    assert profile.batch_s(0.04, 5) == pytest.approx(0.12)
    robots = [SlowPolicy(make_policy("oracle", env=ENV), profile) for _ in range(4)]
    for robot in robots:
        robot.reset(seed=0)
    started = time.monotonic()
    items = [BatchItem(robot, observation)
             for robot, observation in zip(robots, observations, strict=True)]
    chunks = robots[0].predict_batch(items)
    took = time.monotonic() - started
    assert took >= profile.batch_s(0.04, 4) - 1e-3  # 0.1 s: more than one, less than four
    assert [len(robot.delays_s) for robot in robots] == [1, 1, 1, 1]
    assert all(chunk.shape == (8, 4) for chunk in chunks)


def test_a_batch_alpha_outside_zero_to_one_is_refused_naming_it():
    with pytest.raises(ValueError, match="batch_alpha=1.5"):
        LatencyProfile("bad", 0.1, batch_alpha=1.5)
