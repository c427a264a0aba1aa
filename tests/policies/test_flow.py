"""The flow-matching chunk policy (policies/flow/): real-time chunking's guidance freezes the
committed prefix and is a no-op without one, training-time conditioning holds the prefix
exactly, training is deterministic under a seed, bad settings fail naming their field. Real
parts: the shipped weights, torch on CPU, the MuJoCo pick-and-place."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from envs import make_env
from policies.config import PolicyConfigError, default_flow_weights
from policies.flow.config import FlowPolicyConfig
from policies.flow.model import (
    prefix_weights,
    sample,
    sample_conditioned,
    sample_guided,
)
from policies.flow.policy import FlowPolicy
from policies.flow.train import train
from policies.train import collect_demonstrations
from tests.loop.conftest import ENV

WEIGHTS = default_flow_weights(ENV)


@pytest.fixture(scope="module")
def env():
    env = make_env(ENV)
    yield env
    env.close()


@pytest.fixture(scope="module")
def policy():
    return FlowPolicy.load(WEIGHTS, rtc="guidance")


def noise(policy: FlowPolicy, seed: int) -> torch.Tensor:
    return torch.randn((1, policy.horizon, policy.spec.action_dim),
                       generator=torch.Generator().manual_seed(seed))


def test_soft_weights_follow_the_paper():
    """1 on the prefix, decaying exponentially to 0 at the execution horizon, 0 after."""
    weights = prefix_weights(16, 3, 8)
    assert weights[:3].tolist() == [1.0, 1.0, 1.0]
    soft = weights[3:8]
    assert all(1.0 > a > b > 0.0 for a, b in zip(soft, soft[1:], strict=False))
    assert weights[8:].tolist() == [0.0] * 8
    assert prefix_weights(16, 3, 8, overlap=5)[5:].tolist() == [0.0] * 11


@pytest.mark.parametrize("delay", [2, 4, 6])
def test_guidance_pulls_the_chunk_onto_the_committed_prefix(policy, env, delay):
    """A prefix the model could plan here, from other noise (another pace): sampled from
    the same noise, the guided chunk starts at least twice as close to it as the plain one,
    over eight states (median of the largest gap per chunk). What is left is RTC's: guidance
    pulls, it does not clamp (the policy then executes the prefix as committed)."""
    guided_gaps, plain_gaps = [], []
    for seed in range(8):
        here = policy.normalized(env.reset(seed=seed))
        prefix = sample(policy.net, here, noise(policy, 100 + seed), 10)[0, :delay].detach()
        target = torch.zeros((policy.horizon, policy.spec.action_dim))
        target[:delay] = prefix
        weights = prefix_weights(policy.horizon, delay, policy.spec.chunk_size, overlap=delay)
        guided = sample_guided(policy.net, here, noise(policy, seed), 10, target, weights, 5.0)
        plain = sample(policy.net, here, noise(policy, seed), 10).detach()
        guided_gaps.append(float((guided[0, :delay] - prefix).abs().max()))
        plain_gaps.append(float((plain[0, :delay] - prefix).abs().max()))
    assert np.median(guided_gaps) < 0.5 * np.median(plain_gaps)


def test_guidance_is_a_no_op_without_a_prefix(policy, env):
    state = policy.normalized(env.reset(seed=2))
    target = torch.zeros((policy.horizon, policy.spec.action_dim))
    weights = prefix_weights(policy.horizon, 0, policy.spec.chunk_size, overlap=0)
    guided = sample_guided(policy.net, state, noise(policy, 5), 10, target, weights, 5.0)
    with torch.inference_mode():
        plain = sample(policy.net, state, noise(policy, 5), 10)
    assert torch.equal(guided, plain)
    observation = env.reset(seed=2)
    for variant in ("none", "guidance", "training"):
        model = FlowPolicy.load(WEIGHTS, rtc=variant)
        model.reset(seed=9)
        chunk = model.predict(observation, np.zeros((0, policy.spec.action_dim), np.float32))
        if variant == "none":
            reference = chunk
        assert np.array_equal(chunk, reference), variant


def test_training_time_conditioning_holds_the_prefix_exactly(policy, env):
    state = policy.normalized(env.reset(seed=1))
    prefix = torch.linspace(-0.5, 0.5, 3 * policy.spec.action_dim).view(3, -1)
    with torch.inference_mode():
        chunk = sample_conditioned(policy.net, state, noise(policy, 6), 10, prefix)
    assert torch.equal(chunk[0, :3], prefix)


def test_a_delay_aware_variant_returns_the_chunk_after_the_prefix(env):
    """The wire's convention: a delay-aware chunk starts after the d committed actions."""
    observation = env.reset(seed=3)
    for variant in ("guidance", "training"):
        model = FlowPolicy.load(WEIGHTS, rtc=variant)
        assert model.spec.delay_aware and model.spec.model_id.endswith("+" + variant)
        model.reset(seed=1)
        chunk = model.predict(observation, np.full((3, model.spec.action_dim), 0.2, np.float32))
        assert chunk.shape == (model.spec.chunk_size, model.spec.action_dim)
        assert np.array_equal(model._previous[:3].numpy(), np.full((3, 4), 0.2, np.float32))
        assert np.array_equal(model._previous[3:11].numpy(), chunk)
    assert not FlowPolicy.load(WEIGHTS, rtc="none").spec.delay_aware


def test_a_prefix_longer_than_the_model_can_take_is_planned_from_its_end(env):
    """The model plans 16 actions: of a committed prefix of 11 it takes the last 8, so its
    chunk still begins right after the prefix (a long round trip must not fail every
    request: the client's delay estimate would keep it long)."""
    observation = env.reset(seed=3)
    long = np.linspace(-0.9, 0.9, 44, dtype=np.float32).reshape(11, 4)
    model = FlowPolicy.load(WEIGHTS, rtc="training")
    model.reset(seed=1)
    chunk = model.predict(observation, long)
    model.reset(seed=1)
    assert np.array_equal(chunk, model.predict(observation, long[-8:]))
    assert np.array_equal(model._previous[:8].numpy(), long[-8:])


def test_training_is_deterministic_under_a_seed():
    states, chunks, spec = collect_demonstrations(ENV, episodes=2, chunk_size=8, seed=500,
                                                  speeds=(0.4, 1.0))
    runs = [train(states, chunks, spec, model_id="t", epochs=2, seed=seed, hidden=32, layers=2)
            for seed in (1, 1, 2)]
    first, again, other = (r.net.state_dict() for r in runs)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


@pytest.mark.parametrize("field, value, message", [
    ("guidance_weight", 0.0, "policy.guidance_weight=0.0: must be > 0"),
    ("guidance_weight", -1.0, "policy.guidance_weight=-1.0: must be > 0"),
    ("execution_horizon", 9, "policy.execution_horizon=9: must be in 1..chunk_size=8"),
    ("rtc", "inpaint", "policy.rtc='inpaint': expected one of"),
    ("denoise_steps", 0, "policy.denoise_steps=0: must be >= 1"),
])
def test_bad_settings_fail_naming_the_field(field, value, message):
    with pytest.raises(PolicyConfigError, match=message.replace("[", r"\[")):
        FlowPolicyConfig(**{field: value})


def test_weights_for_another_chunk_size_fail_naming_the_field():
    from policies.registry import PolicyTask, build_policy

    with pytest.raises(PolicyConfigError, match="policy.chunk_size=4"):
        build_policy(FlowPolicyConfig(chunk_size=4), PolicyTask(env=ENV))


def test_the_torch_policys_weights_are_refused_as_a_flow_policys():
    from policies.config import default_weights

    with pytest.raises(ValueError, match="is not a flow policy's weights .*flow_spec"):
        FlowPolicy.load(default_weights(ENV))
