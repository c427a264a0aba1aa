"""Real-time chunking in the closed loop: at a modelled 300 ms round trip the learned flow
policy keeps succeeding when it is given the committed prefix (guidance or training-time
conditioning), and fails with asynchronous newest-wins execution, which drops the first six
actions of every chunk it was not asked to continue. Real parts: the shipped flow weights,
torch, MuJoCo pick-and-place, the client engine and the policy server over the local
transport; the round trip is the clock's (`latency.kind=fixed`), so the outcome is
deterministic.

Why 300 ms and not the issue's 200 ms: at 200 ms newest-wins still succeeds in 13 of 20
episodes on this task (docs/measurements.md), so it does not separate the modes there."""

from __future__ import annotations

import pytest

from harness.client.latency import LatencyModel
from harness.loop.runner import run_episode
from policies import PolicyTask, build_policy
from policies.flow.config import FlowPolicyConfig
from tests.loop.conftest import ENV, Rig

pytestmark = pytest.mark.network

ROUND_TRIP_S, EPISODES = 0.3, 3
MODES = {"newest": ("none", {"mode": "asynchronous", "ensembling": "newest"}),
         "guidance": ("guidance", {"mode": "delay_aware"}),
         "training": ("training", {"mode": "delay_aware"})}


def successes(env, mode: str) -> list[bool]:
    rtc, client = MODES[mode]
    rig = Rig(env, latency=LatencyModel("fixed", value_s=ROUND_TRIP_S), **client)
    try:
        rig.restart(factory=lambda: build_policy(FlowPolicyConfig(rtc=rtc),
                                                 PolicyTask(ENV, 0, chunk_size=8)))
        return [run_episode(env, rig.engine, episode=i + 1, seed=i, due_reply_hold_s=5.0).success
                for i in range(EPISODES)]
    finally:
        rig.close()


@pytest.mark.parametrize("mode", ["guidance", "training"])
def test_a_prefix_keeps_the_flow_policy_succeeding_at_300_ms(env, mode):
    assert sum(successes(env, mode)) >= EPISODES - 1


def test_newest_wins_fails_at_300_ms(env):
    assert sum(successes(env, "newest")) == 0
