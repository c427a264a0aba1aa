"""The closed loop over real transports: golden parity, fail-safe states, contract checks."""

from __future__ import annotations

import dataclasses
import json
import threading
import time

import numpy as np
import pytest

from harness.bench import parity
from harness.client.config import EngineConfig
from harness.client.engine import ClientEngine
from harness.client.states import ActionSource, ClientState
from harness.loop.runner import run_episode
from tests.conftest import wait_until
from tests.loop.conftest import observation_of, oracle
from tests.transports.test_conformance import config_for
from transports import LocalTransportConfig
from transports.local import LocalClient
from transports.registry import transport_names

pytestmark = pytest.mark.network


@pytest.mark.parametrize("kind", transport_names())
def test_every_transport_matches_the_golden_digests(kind):
    golden = json.loads(parity.GOLDEN.read_text())["digests"]
    traces = parity.run_parity_episodes(config_for(kind))
    assert {str(t.episode): parity.digest(t) for t in traces} == golden
    assert all(t.success and t.breaches == [] for t in traces)


@pytest.mark.parametrize("kind", transport_names())
def test_every_transport_matches_the_golden_digests_under_a_modelled_fault_schedule(kind):
    """The lte preset applied modelled (jitter, burst loss: lost requests, fallback ticks)
    executes the same actions over every transport: every loss is the schedule's."""
    golden = json.loads(parity.GOLDEN.read_text())
    assert golden["faulted_preset"] == parity.FAULTED_PRESET
    traces = parity.run_parity_episodes(config_for(kind), parity.faulted_preset())
    assert {str(t.episode): parity.digest(t) for t in traces} == golden["faulted_digests"]
    assert sum(t.wire.lost for t in traces) > 0  # the schedule's losses really happened
    assert all(t.breaches == [] for t in traces)


@pytest.mark.parametrize("kind", transport_names())
def test_every_transport_matches_the_golden_digests_of_delay_aware_episodes(kind):
    """Every observation carries the delay and a committed prefix of 8 actions the oracle
    plans from: over every transport the same actions run, none of them trimmed."""
    golden = json.loads(parity.GOLDEN.read_text())
    assert golden["delay_aware_latency_s"] == parity.DELAY_AWARE_LATENCY_S
    traces = parity.run_delay_aware_episodes(config_for(kind))
    assert {str(t.episode): parity.digest(t) for t in traces} == golden["delay_aware_digests"]
    assert all(t.success and t.breaches == [] for t in traces)
    assert {t.wire.execution for t in traces} == {"delay_aware"}
    assert sum(t.wire.trimmed for t in traces) == 0


@pytest.mark.parametrize("kind", transport_names())
def test_every_transport_matches_the_golden_digests_of_rtc_episodes(kind):
    """The learned flow policy under real-time chunking: torch's guided denoising reads the
    prefix and the delay from the wire and draws seeded noise, and the same actions run over
    every transport as in-process."""
    golden = json.loads(parity.GOLDEN.read_text())
    assert golden["rtc_latency_s"] == parity.RTC_LATENCY_S
    traces = parity.run_rtc_episodes(config_for(kind))
    assert {str(t.episode): parity.digest(t) for t in traces} == golden["rtc_digests"]
    assert all(t.breaches == [] for t in traces)
    assert {t.wire.execution for t in traces} == {"delay_aware"}


def test_episode_over_measured_latency_succeeds_with_fresh_and_queued_actions(env, rig):
    trace = run_episode(env, rig(measured=True).engine, episode=1, seed=0)
    sources = {t.source for t in trace.ticks}
    assert trace.success and trace.breaches == []
    assert sources == {"fresh", "queued", "fallback"}
    assert trace.ticks[0].source == "fallback"  # tick 0: no chunk can have arrived yet


def test_server_killed_mid_episode_stalls_safely_and_is_rejoined_after_restart(env, rig):
    loop = rig(max_offline_s=30.0)
    epochs: dict[int, int] = {}

    def outage(tick: int, control_s: float, state: ClientState) -> None:
        assert control_s == pytest.approx(tick * loop.engine.dt)
        epochs[tick] = loop.engine.epoch
        if tick == 10:
            loop.server.close()
        if tick == 40:
            loop.restart()
            wait_until(loop.client.server_present, 5.0, "restarted server")

    trace = run_episode(env, loop.engine, episode=1, seed=0, on_tick=outage)
    assert trace.breaches == []
    during_outage = trace.ticks[25:40]
    assert all(t.source == "fallback" for t in during_outage)
    assert {t.state for t in during_outage} <= {"stalled", "reconnecting"}
    assert all(t.action[:3] == [0.0, 0.0, 0.0] for t in during_outage)  # hold still
    assert any(t.state == "streaming" for t in trace.ticks[41:])
    assert loop.engine.epoch != epochs[5]  # a new session on the new server


def test_wrong_action_spec_makes_the_engine_dead_with_the_reason(env, rig):
    contract = dataclasses.replace(env.spec.contract, chunk_size=8,
                                   action_names=("dy", "dx", "dz", "gripper"))
    engine = ClientEngine(rig().client, contract, EngineConfig(), dt=0.05, gripper_index=3)
    trace = run_episode(env, engine, episode=1, seed=0)
    assert engine.state is ClientState.DEAD
    assert "session rejected: contract mismatch: action_names" in engine.dead_reason
    assert trace.termination == "dead" and trace.steps == 1
    assert trace.ticks[0].source == "fallback"


def test_server_restarted_with_another_model_is_a_contract_change(rig):
    loop = rig()
    loop.engine.reset(1)
    assert loop.engine.model_id == "oracle"
    loop.restart(policy="torch")
    wait_until(loop.client.server_present, 5.0, "restarted server")
    assert not loop.engine.open_session()
    assert loop.engine.state is ClientState.DEAD
    assert "contract changed" in loop.engine.dead_reason


def test_ticks_go_on_with_the_fallback_while_a_slow_session_reopen_is_pending(env, rig):
    """The restarted server resets a session's policy at session open behind a gate the
    test holds shut: the re-open cannot finish, yet every tick returns (fallback,
    RECONNECTING)."""
    loop = rig(max_offline_s=30.0, control_timeout_s=10.0)
    engine, body = loop.engine, observation_of(env)
    gate = threading.Event()

    def gated_policy():
        policy = oracle()
        reset = policy.reset

        def gated_reset(*args, **kwargs):
            gate.wait(20.0)
            return reset(*args, **kwargs)

        policy.reset = gated_reset
        return policy

    try:
        engine.reset(1)
        first_epoch = engine.epoch
        loop.server.close()
        assert engine.tick(0, body).state is ClientState.RECONNECTING  # sees it gone
        loop.restart(factory=gated_policy)
        pending = [engine.tick(tick, body) for tick in range(1, 21)]
        assert engine._reopen is not None and not engine._reopen.done()  # open still blocked
        assert all(r.source is ActionSource.FALLBACK for r in pending)
        assert {r.state for r in pending} == {ClientState.RECONNECTING}
    finally:
        gate.set()
    for tick in range(21, 400):
        if engine.tick(tick, body).state is ClientState.STREAMING:
            break
        time.sleep(0.005)  # ticks paced like a robot's, so replies can arrive
    assert engine.state is ClientState.STREAMING
    assert engine.epoch != first_epoch and engine.stats.reopened == 1


def test_a_server_restarted_between_two_ticks_is_rejoined_from_its_session_error(env, rig):
    """The client never sees the server absent; the new server answers the old epoch's
    observation with a session error, and the engine re-opens instead of timing out."""
    loop = rig(max_offline_s=30.0)
    engine, body = loop.engine, observation_of(env)
    engine.reset(1)
    first_epoch = engine.epoch
    loop.restart()
    states = []
    for tick in range(400):
        states.append(engine.tick(tick, body).state)
        if tick > 0 and states[-1] is ClientState.STREAMING:
            break
        time.sleep(0.005)  # ticks paced like a robot's, so replies can arrive
    assert ClientState.RECONNECTING in states and states[-1] is ClientState.STREAMING
    assert engine.epoch != first_epoch and engine.stats.reopened == 1
    assert engine.stats.lost == 0  # rejoined from the error, not after request_timeout_s
    assert any(e.startswith("session:") for e in engine.stats.errors)


def test_reset_after_a_restart_between_episodes_reopens_the_session(rig):
    loop = rig()
    loop.engine.reset(1)
    first_epoch = loop.engine.epoch
    loop.restart()
    loop.engine.reset(2)
    assert loop.engine.state is ClientState.STREAMING
    assert loop.engine.epoch != first_epoch and loop.engine.stats.reopened == 1


def test_realtime_clock_paces_ticks_by_the_wall_clock(env, rig):
    engine = rig(measured=True).engine
    started = time.monotonic()
    trace = run_episode(env, engine, episode=1, seed=0, clock="realtime")
    elapsed = time.monotonic() - started
    assert trace.success and trace.breaches == []
    assert elapsed >= (trace.steps - 1) * engine.dt  # never faster than the control rate
    assert 0 <= trace.overruns < trace.steps
    assert trace.wire.chunks > 0 and trace.wire.lost == 0
    latencies = [t.latency_s for t in trace.ticks if t.latency_s is not None]
    assert latencies and all(0 < lat < engine.config.request_timeout_s for lat in latencies)


def test_dead_from_an_outage_ends_only_its_episode(env, rig):
    """Offline past max_offline_s is DEAD for that episode; the next one reconnects (it
    used to carry DEAD over: every later episode a one-tick failure that sent nothing)."""
    loop = rig(max_offline_s=0.5)
    body = observation_of(env)
    loop.engine.reset(1)
    loop.server.close()
    for tick in range(40):
        if loop.engine.tick(tick, body).state is ClientState.DEAD:
            break
    assert loop.engine.state is ClientState.DEAD and "no chunk for" in loop.engine.dead_reason
    loop.restart()
    wait_until(loop.client.server_present, 5.0, "restarted server")
    trace = run_episode(env, loop.engine, episode=2, seed=0)
    assert trace.success and trace.termination == "success" and trace.breaches == []


def test_a_contract_change_stays_dead_in_the_next_episode(env, rig):
    loop = rig()
    loop.engine.reset(1)
    loop.restart(policy="torch")
    wait_until(loop.client.server_present, 5.0, "restarted server")
    assert not loop.engine.open_session()
    trace = run_episode(env, loop.engine, episode=2, seed=0)
    assert trace.termination == "dead" and trace.steps == 1
    assert "contract changed" in loop.engine.dead_reason


def test_a_full_server_is_retried_until_a_slot_frees(env, rig):
    """max_sessions reached is not fatal: the engine retries with backoff and gets in when
    the other client leaves; only a contract mismatch is."""
    first = rig()
    first.restart(max_sessions=1)
    first.engine.reset(1)
    second = first.second_engine(reject_retry_s=10.0)
    leave = threading.Timer(0.5, first.engine.close)
    leave.start()
    try:
        assert second.open_session()
        assert second.state is not ClientState.DEAD and second.epoch > 0
    finally:
        leave.join()


def test_a_full_server_past_the_retry_budget_ends_the_episode_dead_not_the_run(env, rig):
    first = rig()
    first.restart(max_sessions=1)
    first.engine.reset(1)
    second = first.second_engine(reject_retry_s=0.3)
    assert not second.open_session()
    assert second.state is ClientState.DEAD
    assert "session rejected for" in second.dead_reason
    assert "max_sessions=1 reached" in second.dead_reason
    first.engine.close()  # the slot frees: the next episode gets in
    second.reset(2)
    assert second.state is ClientState.STREAMING


class ExplodingOpen(LocalClient):
    """A client whose session open (any request) fails with an error no transport declares
    (a raw library error, as zenoh-python's ZError)."""

    def request(self, payload, *, timeout_s):
        raise RuntimeError("raw library error")


def test_a_reopen_failing_with_any_exception_is_retried_not_a_crash(env, rig):
    loop = rig()
    client = ExplodingOpen(LocalTransportConfig(name=loop.name))
    engine = ClientEngine(client, loop.engine.contract, EngineConfig(), dt=0.05,
                          gripper_index=3)
    body = observation_of(env)
    engine.state = ClientState.RECONNECTING
    try:
        for tick in range(20):  # the re-open thread fails; every tick still returns an action
            result = engine.tick(tick, body)
            assert result.source is ActionSource.FALLBACK
            time.sleep(0.005)
        assert engine.state is ClientState.RECONNECTING
    finally:
        client.close()


class BrokenPolicy:
    """A real policy whose chunks are broken in one way: what a buggy model server sends."""

    def __init__(self, breakage: str) -> None:
        self.inner, self.breakage = oracle(), breakage
        self.spec = self.inner.spec

    def reset(self, *, seed: int) -> None:
        self.inner.reset(seed=seed)

    def predict(self, observation):
        chunk = self.inner.predict(observation).copy()
        if self.breakage == "nan":
            chunk[3, 1] = np.nan
        elif self.breakage == "shape":
            chunk = chunk[:, :3]
        elif self.breakage == "bounds":
            chunk[:, 0] = 3.0
        return chunk


@pytest.mark.parametrize(("breakage", "out_of_bounds"), [
    ("nan", "clip"), ("shape", "clip"), ("bounds", "reject")])
def test_a_chunk_the_robot_must_not_execute_is_dropped_counted_and_never_stepped(
        env, rig, breakage, out_of_bounds):
    loop = rig(out_of_bounds=out_of_bounds)
    loop.restart(factory=lambda: BrokenPolicy(breakage))
    wait_until(loop.client.server_present, 5.0, "server with the broken policy")
    trace = run_episode(env, loop.engine, episode=1, seed=0)  # env.step raises on NaN
    assert {t.source for t in trace.ticks} == {"fallback"}  # nothing it sent was executed
    assert trace.wire.rejected > 0 and trace.wire.chunks == 0
    assert any("dropped" in e for e in trace.wire.errors)


def test_an_out_of_bounds_chunk_is_clipped_at_the_bounds_by_default(env, rig):
    loop = rig()
    loop.restart(factory=lambda: BrokenPolicy("bounds"))
    wait_until(loop.client.server_present, 5.0, "server with the broken policy")
    trace = run_episode(env, loop.engine, episode=1, seed=0)
    executed = [t.action for t in trace.ticks if t.source != "fallback"]
    assert executed and all(action[0] == 1.0 for action in executed)  # saturated at high
    assert trace.wire.clipped > 0 and trace.wire.rejected == 0
