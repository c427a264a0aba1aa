"""Slow-model profiles: seeded, repeatable, within their bounds, and really slow."""

from __future__ import annotations

import time

import numpy as np
import pytest

from envs import make_env
from policies import make_policy
from policies.slow import PROFILES, LatencyProfile, SlowPolicy, profile


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_profile_samples_stay_within_bounds_and_near_the_median(name):
    latency = PROFILES[name]
    samples = np.array([latency.sample(np.random.default_rng(i)) for i in range(500)])
    assert samples.min() >= latency.min_s and samples.max() <= latency.max_s
    assert np.median(samples) == pytest.approx(latency.median_s, rel=0.05, abs=1e-9)


def test_same_seed_gives_the_same_delays_and_the_same_chunks():
    env = make_env("mujoco_reach")
    observation = env.reset(seed=0)
    fast_profile = LatencyProfile("test", 0.002, sigma=0.5, max_s=0.01)
    runs = []
    for _ in range(2):
        policy = SlowPolicy(make_policy("oracle", env="mujoco_reach"), fast_profile)
        policy.reset(seed=11)
        chunks = [policy.predict(observation) for _ in range(5)]
        runs.append((policy.delays_s, chunks))
    assert runs[0][0] == runs[1][0]
    for a, b in zip(runs[0][1], runs[1][1], strict=True):
        np.testing.assert_array_equal(a, b)


def test_predict_takes_at_least_the_sampled_delay():
    env = make_env("mujoco_reach")
    policy = SlowPolicy(make_policy("oracle", env="mujoco_reach"), LatencyProfile("fixed", 0.05))
    policy.reset(seed=0)
    started = time.monotonic()
    policy.predict(env.reset(seed=0))
    assert time.monotonic() - started >= 0.05
    assert policy.delays_s == [0.05]
    assert policy.spec is policy.inner.spec


def test_unknown_profile_and_bad_parameters_are_rejected_by_name():
    with pytest.raises(ValueError, match="latency_profile='a100'"):
        profile("a100")
    with pytest.raises(ValueError, match="latency profile 'bad'"):
        LatencyProfile("bad", -1.0)
