"""The flow policy's delayed rollouts (policies/flow/dagger.py): the robot really runs each
chunk a round trip late, every visited state is labelled by the oracle after the actions
committed at it, and the rollouts are seeded. Real parts: MuJoCo pick-and-place, the oracle,
torch; the policy is a small untrained network (its chunks need not be good, only its own)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from envs import make_env
from policies.flow.dagger import delayed_rollouts, oracle_label, prefix_pace
from policies.flow.model import VelocityNet
from policies.flow.policy import FlowPolicy
from policies.oracle import MujocoOracle
from policies.torch_policy import flatten_state, state_size
from tests.loop.conftest import ENV


def untrained(rtc: str = "training") -> FlowPolicy:
    torch.manual_seed(0)
    spec = MujocoOracle(ENV, chunk_size=8).spec
    state_dim = state_size(spec)
    return FlowPolicy(spec, VelocityNet(state_dim, 16, spec.action_dim, hidden=16, layers=1),
                      np.zeros(state_dim), np.ones(state_dim), rtc=rtc)


def test_every_state_is_labelled_after_the_actions_committed_at_it():
    states, chunks, delays = delayed_rollouts(ENV, untrained(), episodes=4, seed=7,
                                              max_delay=6, speeds=(0.5, 1.0))
    assert len(states) == len(chunks) == len(delays) > 4 * 50
    assert chunks.shape[1:] == (16, 4)
    assert set(np.unique(delays)) <= set(range(7)) and len(np.unique(delays)) > 2
    # The committed actions slide: the next tick's prefix is this tick's without its first
    # action, except where a chunk landed (the queue was replaced) or an episode ended.
    slides = [np.array_equal(chunks[i + 1, :delays[i] - 1], chunks[i, 1:delays[i]])
              for i in range(len(delays) - 1) if delays[i] > 1 and delays[i + 1] >= delays[i] - 1]
    assert np.mean(slides) > 0.6
    # Each label continues with the oracle's plan from where the prefix leaves the robot.
    keys = tuple(MujocoOracle(ENV).spec.state)
    env = make_env(ENV)
    observation = env.reset(seed=7)  # the first episode's first state
    env.close()
    assert np.array_equal(states[0], flatten_state(observation.state, keys))
    assert delays[0] == 6  # seed 7's episode runs 6 ticks late
    prefix = chunks[0, :6]
    label = oracle_label(MujocoOracle(ENV, chunk_size=16), observation, prefix, 16,
                         prefix_pace(prefix, fallback=1.0, low=0.5))
    assert np.array_equal(chunks[0], label)
    assert not np.array_equal(label[6:], oracle_label(MujocoOracle(ENV, chunk_size=16),
                                                      observation, prefix[:0], 10, 1.0))


def test_rollouts_are_seeded():
    runs = [delayed_rollouts(ENV, untrained("guidance"), episodes=2, seed=seed, max_delay=4,
                             speeds=(0.5, 1.0)) for seed in (3, 3, 4)]
    assert all(np.array_equal(a, b) for a, b in zip(runs[0], runs[1], strict=True))
    assert not np.array_equal(runs[0][1][:50], runs[2][1][:50])


def test_a_delay_longer_than_the_chunk_fails_naming_it():
    with pytest.raises(ValueError, match="max_delay=9: must be in 0..8"):
        delayed_rollouts(ENV, untrained(), episodes=1, seed=0, max_delay=9, speeds=(1.0, 1.0))


def test_the_variant_bench_times_every_call_after_its_warm_up():
    from policies.flow.bench import time_variant

    times = time_variant(ENV, "guidance", calls=7, delay=3)
    assert times.shape == (7,) and (times > 0).all()
