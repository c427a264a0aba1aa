"""Delay-aware execution (`client.mode=delay_aware`): each observation carries the expected
delay and the committed prefix, a delay-aware policy plans past it, and its chunk is merged at
the tick it names. Real parts: a policy server over the local transport (and every transport
for the wire), the MuJoCo pick-and-place and its scripted oracle, the runner and its
invariant checker."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from harness import protocol
from harness.client.config import EngineConfig
from harness.client.engine import ClientEngine, engine_for
from harness.client.latency import LatencyModel
from harness.client.states import ActionSource, ClientState, TickResult
from harness.loop.invariants import InvariantChecker
from harness.loop.runner import run_episode
from harness.server.policy_server import PolicyServer
from tests.client.test_synchronous import (  # noqa: F401 (env, rig: fixtures)
    DT,
    RecordingEnv,
    env,
    rig,
    run_harness,
)
from tests.conftest import wait_until
from tests.loop.conftest import oracle
from tests.transports.test_conformance import config_for
from transports import LocalTransportConfig, make_client, make_server
from transports.registry import transport_names

network = pytest.mark.network
CHUNK = 8


class RecordingPolicy:
    """The oracle (or, `delay_aware=False`, the oracle declared not delay-aware), keeping
    every (observation, committed prefix, chunk) served after an episode began."""

    def __init__(self, log: list, *, delay_aware: bool = True) -> None:
        self.inner, self.log, self.live = oracle(), log, False
        self.spec = dataclasses.replace(self.inner.spec, delay_aware=delay_aware)

    def reset(self, *, seed: int) -> None:
        self.inner.reset(seed=seed)
        self.live = True

    def predict(self, observation, committed=None):
        chunk = self.inner.predict(observation, committed)
        if self.live:
            prefix = None if committed is None else np.array(committed)
            self.log.append((observation, prefix, np.asarray(chunk, np.float32).copy()))
        return chunk


class RecordingEngine(ClientEngine):
    """The engine, keeping every tick's result (what it sent and executed)."""

    results: list[TickResult]

    def tick(self, tick, observation):
        result = super().tick(tick, observation)
        self.results.append(result)
        return result


def recording_rig(rig, latency: LatencyModel, *, delay_aware: bool = True, **config):  # noqa: F811
    """A rig whose server hosts the recording policy and whose engine records its ticks;
    returns (rig, engine, the policy's log)."""
    loop, log = rig(**config), []
    loop.restart(factory=lambda: RecordingPolicy(log, delay_aware=delay_aware))
    wait_until(loop.client.server_present, 5.0, "server with the recording policy")
    engine = RecordingEngine(loop.client, loop.engine.contract, loop.engine.config, dt=DT,
                             gripper_index=3, latency=latency,
                             action_bounds=loop.engine._bounds)
    engine.results = []
    return loop, engine, log


def sent(engine: RecordingEngine) -> dict[int, np.ndarray]:
    """Tick -> committed prefix, for every tick an observation went out."""
    return {tick: r.committed for tick, r in enumerate(engine.results) if r.committed is not None}


# ---- the rhythm at a known latency -----------------------------------------------------------


@network
def test_every_chunk_starts_after_the_committed_prefix_and_nothing_is_trimmed(env, rig):  # noqa: F811
    """400 ms is 8 ticks, the whole chunk. The first observation commits to holding still
    for 8 ticks; every later one goes out as a chunk starts, committing to that whole chunk,
    and the next chunk starts where it ends: after 8 WAIT ticks, no tick falls back, every
    action of every chunk runs, and the ages count from each chunk's start."""
    delay = math.ceil(0.4 / DT)
    loop, engine, log = recording_rig(rig, LatencyModel("fixed", value_s=0.4),
                                      mode="delay_aware")
    robot = RecordingEnv(env)
    trace = run_episode(robot, engine, episode=1, seed=0)
    assert trace.success and trace.breaches == [] and trace.wire.trimmed == 0
    assert trace.wire.execution == "delay_aware"
    sources = [t.source for t in trace.ticks]
    assert sources[:delay] == ["wait"] * delay
    assert sources[delay:] == (["fresh"] + ["queued"] * (CHUNK - 1)) * (
        (trace.steps - delay) // CHUNK) + (["fresh"] + ["queued"] * (CHUNK - 1))[
        :(trace.steps - delay) % CHUNK]
    assert [t.age_ticks for t in trace.ticks[delay:]] == [
        i % CHUNK for i in range(trace.steps - delay)]
    prefixes = sent(engine)
    assert sorted(prefixes) == list(range(0, trace.steps, CHUNK))
    actions = np.asarray([t.action for t in trace.ticks], np.float32)
    for tick, prefix in prefixes.items():  # the robot did what each observation promised
        assert prefix.shape == (delay, 4)
        np.testing.assert_array_equal(prefix[:trace.steps - tick], actions[tick:tick + delay])
    np.testing.assert_array_equal(prefixes[0][:, :3], 0.0)  # the first: holding still
    # What the policy was given is what was sent, and its chunk runs from the tick it names.
    assert len(prefixes) - 1 <= len(log) <= len(prefixes)  # the last may not have been served
    for (observation, committed, chunk), tick in zip(log, sorted(prefixes), strict=False):
        np.testing.assert_array_equal(committed, prefixes[tick])
        np.testing.assert_array_equal(observation.state["hand_pos"],
                                      robot.observations[tick].state["hand_pos"])
        start = tick + delay
        ran = actions[start:start + CHUNK]
        np.testing.assert_allclose(ran, np.clip(chunk, -1, 1)[:len(ran)], atol=0)


@network
def test_a_reply_later_than_expected_is_trimmed_by_the_excess_only(env, rig):  # noqa: F811
    """The expected delay is the largest of the recent round trips. One reply takes 3 ticks
    longer than the 4 expected: its chunk loses exactly those 3 actions, the ticks they
    missed hold still no longer than the prefix promised (then fall back), and the next
    observations expect the longer delay."""

    class OneLate(LatencyModel):
        def latency_for(self, key, measured_s=None, *, sent_tick=0):
            return 0.35 if key[1] == 3 else 0.2

    loop, engine, _ = recording_rig(rig, OneLate("fixed", value_s=0.2), mode="delay_aware")
    trace = run_episode(env, engine, episode=1, seed=0)
    assert trace.success and trace.breaches == []
    assert trace.wire.trimmed == 3
    delays = [len(p) for _, p in sorted(sent(engine).items())]
    assert delays[:4] == [4, 4, 4, 4] and set(delays[4:]) == {7}
    late = sorted(sent(engine))[3]
    sources = [t.source for t in trace.ticks[late + 4:late + 7]]
    assert sources == ["fallback"] * 3  # the prefix ended, the late chunk had not come


# ---- a policy that is not delay-aware -----------------------------------------------------


@network
def test_a_policy_that_is_not_delay_aware_runs_asynchronously_and_says_so(env, rig):  # noqa: F811
    """Same actions, byte for byte, as the asynchronous client; no observation carries a
    prefix, the policy is never given one, and the results say what ran."""
    latency = LatencyModel("fixed", value_s=0.2)
    loop, engine, log = recording_rig(rig, latency, delay_aware=False, mode="delay_aware")
    trace = run_episode(env, engine, episode=1, seed=0)
    assert trace.wire.execution.startswith("asynchronous (delay_aware asked; model 'oracle' "
                                           "is not delay-aware)")
    assert all(len(p) == 0 for p in sent(engine).values())
    assert log and all(committed is None for _, committed, _ in log)
    _, plain, _ = recording_rig(rig, latency, delay_aware=False, mode="asynchronous")
    reference = run_episode(env, plain, episode=1, seed=0)
    assert trace.action_digest() == reference.action_digest()
    assert trace.wire.trimmed == reference.wire.trimmed > 0


# ---- what the engine refuses and the checker catches ------------------------------------------


class MisplacedStartServer(PolicyServer):
    """Test double of a buggy server: every chunk names a start one tick after the one it
    should (the real server's chunk, otherwise unchanged)."""

    def _send(self, client_id, body, request=None):
        if isinstance(body, protocol.ActionChunk):
            body = dataclasses.replace(body, start_tick=body.start_tick + 1)
        super()._send(client_id, body, request)


@network
def test_a_chunk_naming_another_start_is_dropped_never_executed(env, rig):  # noqa: F811
    """A chunk may start at its observation's tick or right after the prefix it was sent,
    nowhere else: every chunk of a server naming another start is dropped (counted, an
    error), none is executed, and without a usable chunk the engine ends the episode DEAD."""
    loop = rig(mode="delay_aware")
    loop.server.close()
    loop.server = MisplacedStartServer(make_server(LocalTransportConfig(name=loop.name)),
                                       oracle)
    loop.server.start()
    wait_until(loop.client.server_present, 5.0, "the misplacing server")
    loop.engine.latency = LatencyModel("fixed", value_s=0.2)
    trace = run_episode(env, loop.engine, episode=1, seed=0)
    assert not trace.success and trace.breaches == []
    assert {t.source for t in trace.ticks} <= {"wait", "fallback"}
    assert trace.wire.chunks == 0 and trace.wire.rejected >= trace.wire.sent - 1 > 10
    assert trace.termination == "dead"  # no usable chunk for max_offline_s: safe stop
    assert "start_tick 5, expected one of [0, 4]" in trace.wire.errors[0]


class PrefixLiar(ClientEngine):
    """Bug: commits to a prefix, then executes something else in its place (the queue's
    actions scaled by a half): ages counted from the chunk's start would hide that the
    robot is not where the policy planned from."""

    def _committed_prefix(self, tick, delay_ticks):
        prefix = super()._committed_prefix(tick, delay_ticks)
        for offset in range(delay_ticks):
            slot = self.queue._slots.get(tick + offset)
            if slot is not None:
                slot.action = slot.action * np.float32(0.5)
        return prefix


@network
def test_the_checker_reports_a_committed_prefix_the_robot_did_not_execute(env, rig):  # noqa: F811
    made = rig(mode="delay_aware")
    engine = made.engine
    liar = PrefixLiar(made.client, engine.contract, engine.config, dt=engine.dt,
                      gripper_index=3, latency=LatencyModel("fixed", value_s=0.2))
    trace = run_episode(env, liar, episode=1, seed=0)
    assert any("neither held still nor executed the prefix it committed to" in b
               for b in trace.breaches), trace.breaches


def result(action, source=ActionSource.QUEUED, *, age=None, seq=None, observed=None,
           committed=None) -> TickResult:
    return TickResult(np.asarray(action, np.float32), source, ClientState.STREAMING, age, seq,
                      1, 1, "m", observed_tick=observed, committed=committed)


def breaches_of(executed: list[list[float]], start: int) -> list[str]:
    """Breaches when a prefix of two actions was sent at tick 0, `executed` ran at ticks
    0.., and a chunk of that observation claims to start at `start`."""
    prefix = np.array([[0.5, 0.0], [0.25, 0.0]], np.float32)
    checker, breaches = InvariantChecker(max_age_ticks=5), []
    for tick, action in enumerate(executed):
        breaches += checker.check(result(action, age=tick, seq=1, observed=0,
                                         committed=prefix if tick == 0 else None),
                                  tick=tick, episode=1, epoch=1, model_id="m")
    tick = len(executed)
    breaches += checker.check(result([1.0, 0.0], ActionSource.FRESH, age=tick - start, seq=2,
                                     observed=0), tick=tick, episode=1, epoch=1, model_id="m")
    return breaches


def test_the_checker_accepts_a_start_after_the_prefix_only_if_that_prefix_ran():
    """Byte for byte, and only for a start right after the prefix."""
    assert breaches_of([[0.5, 0.0], [0.25, 0.0]], start=2) == []
    assert len(breaches_of([[0.5, 0.0], [0.25, 1e-7]], start=2)) == 1
    assert len(breaches_of([[0.5, 0.0], [0.25, 0.0], [0.0, 0.0]], start=3)) == 1


# ---- the wire, over every transport ---------------------------------------------------------


@network
@pytest.mark.parametrize("kind", transport_names())
def test_the_delay_and_prefix_arrive_intact_over_every_transport(env, kind):  # noqa: F811
    """What the policy is given (tick, delay, prefix) is what the engine sent, bit for bit,
    and the chunk names the tick after the prefix."""
    log = []
    config = config_for(kind)
    server = PolicyServer(make_server(config), lambda: RecordingPolicy(log))
    server.start()
    client = make_client(config)
    try:
        client.wait_ready(10.0)
        engine = engine_for(env.spec, client, EngineConfig(mode="delay_aware"), chunk_size=8,
                            latency=LatencyModel("fixed", value_s=0.3))
        engine.__class__ = RecordingEngine
        engine.results = []
        trace = run_episode(env, engine, episode=1, seed=0)
        engine.close()
    finally:
        client.close()
        server.close()
    prefixes = sent(engine)
    assert trace.success and trace.breaches == [] and len(prefixes) > 3
    # The episode may end before the server took its last observation.
    assert len(prefixes) - 1 <= len(log) <= len(prefixes)
    for (_, committed, _), (_tick, prefix) in zip(log, sorted(prefixes.items()), strict=False):
        assert committed.dtype == np.float32 and committed.tobytes() == prefix.tobytes()
        assert len(prefix) == math.ceil(0.3 / DT)


# ---- config and the job ---------------------------------------------------------------------


def test_a_delay_window_below_one_is_refused_naming_the_field():
    with pytest.raises(ValueError, match=r"client\.delay_window=0: must be >= 1"):
        EngineConfig(mode="delay_aware", delay_window=0)


@pytest.mark.slow(25)  # seconds on this machine: started early under xdist
@pytest.mark.parametrize(("policy", "execution", "trimmed"), [
    ("oracle", ["delay_aware"], 0),
    ("torch", ["asynchronous (delay_aware asked; model 'torch-mlp-mujoco_pick_place' is not "
               "delay-aware)"], None),
])
def test_the_job_reports_how_chunks_were_executed(tmp_path, policy, execution, trimmed):
    """In the summary and on the console: delay-aware with the oracle (a fixed 400 ms round
    trip, nothing trimmed), asynchronous with the torch policy, which is not delay-aware."""
    result = run_harness("transport=local", "client=delay_aware", f"policy={policy}",
                         "latency.kind=fixed", "latency.value_s=0.4", "env.episodes_per_task=2",
                         f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["execution"] == execution and summary["invariant_breaches"] == 0
    if trimmed is not None:
        assert summary["actions_trimmed"] == trimmed and summary["success_rate"] == 1.0
    else:  # 8 ticks of round trip: asynchronous execution trims whole chunks
        assert summary["actions_trimmed"] > 0
        assert f"execution: {execution[0]}" in result.stdout.replace("\n", " ")
