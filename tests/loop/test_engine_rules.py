"""The engine's rules, each shown to hold and each check shown to fire.

The invariant checker is tested against deliberately faulty engines (real subclasses of
`ClientEngine`, each with one bug): an engine that passed `breaches == []` while the checker
only repeated the engine's own filters would prove nothing.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import pytest

from harness.client.engine import ClientEngine
from harness.client.latency import LatencyModel
from harness.client.states import ActionSource, TickResult
from harness.loop.runner import run_episode
from tests.conftest import wait_until
from tests.loop.conftest import oracle

pytestmark = pytest.mark.network


class StaleEngine(ClientEngine):
    """Bug: keeps executing the first action it got, however old it grows."""

    first: tuple[int, TickResult] | None = None

    def tick(self, tick, observation):
        result = super().tick(tick, observation)
        if self.first is None and result.source is not ActionSource.FALLBACK:
            self.first = (tick, result)
        if self.first is None:
            return result
        first_tick, first = self.first
        return dataclasses.replace(first, source=ActionSource.QUEUED,
                                   age_ticks=first.age_ticks + tick - first_tick)


class ForeignEpisodeEngine(ClientEngine):
    """Bug: carries an action of the previous episode into the next one."""

    carried: TickResult | None = None

    def tick(self, tick, observation):
        result = super().tick(tick, observation)
        if self.carried is not None and self.carried.episode != self.episode and tick == 2:
            return dataclasses.replace(self.carried, age_ticks=0)
        if result.source is not ActionSource.FALLBACK:
            self.carried = result
        return result


class BackwardsEngine(ClientEngine):
    """Bug: at one tick executes an action of an older chunk than the one before."""

    older: TickResult | None = None

    def tick(self, tick, observation):
        result = super().tick(tick, observation)
        if self.older is None and result.seq is not None:
            self.older = result
        if tick == 12 and self.older is not None and result.seq != self.older.seq:
            return dataclasses.replace(self.older, age_ticks=1)
        return result


def faulty(rig, cls: type[ClientEngine]) -> ClientEngine:
    made = rig()
    engine = made.engine
    return cls(made.client, engine.contract, engine.config, dt=engine.dt, gripper_index=3,
               latency=engine.latency)


def test_the_checker_reports_an_action_older_than_max_action_age(env, rig):
    trace = run_episode(env, faulty(rig, StaleEngine), episode=1, seed=0)
    assert any("action age" in b and "> 10" in b for b in trace.breaches), trace.breaches


def test_the_checker_reports_an_action_from_another_episode(env, rig):
    engine = faulty(rig, ForeignEpisodeEngine)
    first = run_episode(env, engine, episode=1, seed=0)
    assert first.breaches == []
    second = run_episode(env, engine, episode=2, seed=1)
    assert any("action from episode 1" in b and "expected 2" in b for b in second.breaches), \
        second.breaches


def test_the_checker_reports_a_sequence_id_going_back(env, rig):
    trace = run_episode(env, faulty(rig, BackwardsEngine), episode=1, seed=0)
    assert any(b.startswith("tick 12: sequence id went back") for b in trace.breaches), \
        trace.breaches


@pytest.mark.parametrize(("kind", "sigma"), [("fixed", 0.0), ("lognormal", 0.6)])
def test_a_chunk_is_first_executed_exactly_ceil_latency_over_dt_after_its_observation(
        env, rig, kind, sigma):
    """The clock rule: a request sent at tick s with round trip L is usable at s +
    ceil(L/dt); the real reply (a millisecond here) is early and held until then."""
    loop = rig()
    loop.engine.latency = LatencyModel(kind, value_s=0.12, sigma=sigma, seed=3)
    trace = run_episode(env, loop.engine, episode=1, seed=0)
    fresh = [t for t in trace.ticks if t.source == "fresh"]
    assert fresh and trace.breaches == []
    for t in fresh:
        assert t.age_ticks == max(1, math.ceil(t.latency_s / loop.engine.dt - 1e-9)), t
        assert t.measured_latency_s < t.latency_s  # early, and held
    if kind == "fixed":
        assert fresh[0].tick == 3  # sent at tick 0, ceil(0.12 / 0.05) = 3


class DelayedOracle:
    """The oracle, with some predictions of an episode taking `delay_s` of real time: the
    first one (`first=True`), or every one after it."""

    def __init__(self, delay_s: float, *, first: bool) -> None:
        self.inner, self.delay_s, self.first, self.calls = oracle(), delay_s, first, 0
        self.spec = self.inner.spec

    def reset(self, *, seed: int) -> None:
        self.calls = 0
        self.inner.reset(seed=seed)

    def predict(self, observation):
        self.calls += 1
        if (self.calls == 1) == self.first:
            time.sleep(self.delay_s)
        return self.inner.predict(observation)


def test_a_reply_later_than_the_model_is_waited_for_at_real_time_and_merged_late(env, rig):
    loop = rig()
    loop.restart(factory=lambda: DelayedOracle(0.3, first=True))
    wait_until(loop.client.server_present, 5.0, "restarted server")
    loop.engine.latency = LatencyModel("fixed", value_s=0.12)
    trace = run_episode(env, loop.engine, episode=1, seed=0)
    first = next(t for t in trace.ticks if t.source == "fresh")
    assert first.measured_latency_s >= 0.3 and first.tick > 3  # later than the model said
    assert first.age_ticks == first.tick  # merged when it came, from tick 0's observation
    assert trace.breaches == []


def test_requests_lost_while_the_queue_holds_actions_is_degraded_then_stalled(env, rig):
    loop = rig(measured=True, request_timeout_s=0.2, send_threshold=7, max_offline_s=0.6)
    loop.restart(factory=lambda: DelayedOracle(0.5, first=False))
    wait_until(loop.client.server_present, 5.0, "restarted server")
    trace = run_episode(env, loop.engine, episode=1, seed=0)
    states = [t.state for t in trace.ticks]
    degraded = states.index("degraded")
    assert trace.ticks[degraded].source != "fallback"  # still executing queued actions
    assert "stalled" in states[degraded:] and trace.termination == "dead"
    assert trace.wire.lost >= 1 and trace.breaches == []


@pytest.mark.parametrize("fallback", ["hold", "repeat_last", "zero"])
def test_each_fallback_executes_what_it_promises(env, rig, fallback):
    loop = rig(fallback=fallback, max_offline_s=0.5)

    def outage(tick, control_s, state):
        if tick == 30:
            loop.server.close()

    trace = run_episode(env, loop.engine, episode=1, seed=0, on_tick=outage)
    last = max(t.tick for t in trace.ticks if t.source != "fallback")
    after = [t.action for t in trace.ticks if t.tick > last]
    executed = trace.ticks[last].action
    expected = {"hold": [0.0, 0.0, 0.0, executed[3]], "repeat_last": executed,
                "zero": [0.0] * 4}[fallback]
    assert after and all(action == pytest.approx(expected) for action in after)


class CountingPolicy:
    """Chunk k of an episode is all 0.1 * k: which chunks an executed action mixes shows."""

    def __init__(self) -> None:
        self.spec, self.calls = oracle().spec, 0

    def reset(self, *, seed: int) -> None:
        self.calls = 0

    def predict(self, observation):
        self.calls += 1
        return np.full((self.spec.chunk_size, self.spec.action_dim), 0.1 * self.calls,
                       np.float32)


@pytest.mark.parametrize(("ensembling", "tick_3"), [
    ("newest", 0.3), ("average", (0.1 + 0.2 + 0.3) / 3), ("exponential", 0.225)])
def test_overlapping_chunks_are_ensembled_inside_the_engine(env, rig, ensembling, tick_3):
    """Latency one tick and a request every tick: tick 3 is covered by chunks 1, 2 and 3."""
    loop = rig(ensembling=ensembling, send_threshold=8)
    loop.engine.latency = LatencyModel("fixed", value_s=0.05)
    loop.restart(factory=CountingPolicy)
    wait_until(loop.client.server_present, 5.0, "restarted server")
    trace = run_episode(env, loop.engine, episode=1, seed=0)
    assert [t.seq for t in trace.ticks[1:4]] == [1, 2, 3]
    assert trace.ticks[3].action[0] == pytest.approx(tick_3, abs=1e-6)
