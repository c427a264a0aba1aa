"""The synchronous client mode (`client.mode=synchronous`) and the client presets in
conf/client/: ask only when the queue is empty, hold still while waiting, execute the chunk
from its first action; against the asynchronous mode, which trims what the round trip made
stale. Real parts: a policy server over the local transport, the MuJoCo pick-and-place and
its scripted oracle, the runner and its invariant checker."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import OmegaConfBaseException

from envs import make_env
from harness.client.action_queue import ActionQueue
from harness.client.config import ClientMode, EngineConfig, Ensembling
from harness.client.engine import ClientEngine
from harness.client.latency import LatencyModel
from harness.config import config_dir, register_configs, validate
from harness.loop.runner import run_episode
from tests.conftest import wait_until
from tests.loop.conftest import ENV, Rig, oracle
from tests.loop.test_engine_rules import DelayedOracle

register_configs()
network = pytest.mark.network  # the tests with a rig, as in tests/loop
DT = 0.05  # mujoco_pick_place: 20 Hz
CHUNK = 8


@pytest.fixture
def env():
    env = make_env(ENV)
    yield env
    env.close()


@pytest.fixture
def rig(env):
    """rig(**engine_config) -> the closed-loop tests' Rig (tests/loop/conftest.py): a policy
    server over the local transport, a client and its engine, at a fixed 100 ms latency."""
    rigs = []

    def make(**config) -> Rig:
        rigs.append(Rig(env, latency=LatencyModel("fixed", value_s=0.1), **config))
        return rigs[-1]

    yield make
    for made in rigs:
        made.close()


def wait_ticks(latency_s: float) -> int:
    """The virtual clock's rule: a reply of round trip L is usable ceil(L/dt) ticks later."""
    return max(1, math.ceil(latency_s / DT - 1e-9))


class RecordingOracle:
    """The oracle, keeping every (observation, chunk) it served after an episode began (not
    the server's warm-up prediction); the rig's pool instances share one log."""

    def __init__(self, log: list) -> None:
        self.inner, self.log, self.live = oracle(), log, False
        self.spec = self.inner.spec

    def reset(self, *, seed: int) -> None:
        self.inner.reset(seed=seed)
        self.live = True

    def predict(self, observation):
        chunk = self.inner.predict(observation)
        if self.live:
            self.log.append((observation, np.asarray(chunk, np.float32).copy()))
        return chunk


class RecordingEnv:
    """The env, keeping the observation the robot saw at every tick."""

    def __init__(self, env) -> None:
        self.env, self.observations = env, []

    def reset(self, **kwargs):
        self.observations = [self.env.reset(**kwargs)]
        return self.observations[0]

    def step(self, action):
        step = self.env.step(action)
        self.observations.append(step.observation)
        return step

    def __getattr__(self, name):
        return getattr(self.env, name)


def recording_rig(rig, latency_s: float, latency: LatencyModel | None = None, **config):
    """A rig whose server hosts the recording oracle; returns (rig, the oracle's log)."""
    loop, log = rig(**config), []
    loop.engine.latency = latency or LatencyModel("fixed", value_s=latency_s)
    loop.restart(factory=lambda: RecordingOracle(log))
    wait_until(loop.client.server_present, 5.0, "server with the recording oracle")
    return loop, log


def served_chunk(robot: RecordingEnv, log: list, sent_tick: int) -> np.ndarray:
    """The chunk the policy returned for the observation of `sent_tick`, as the engine may
    execute it: clipped at the env's bounds. (Found by the observation, not by the order of
    requests: the latest-only stream may replace a request the server had not taken yet.)"""
    seen = robot.observations[sent_tick].state
    matches = [chunk for asked, chunk in log
               if all(np.array_equal(asked.state[key], value) for key, value in seen.items())]
    assert len(matches) == 1, f"{len(matches)} predictions from the observation of {sent_tick}"
    return np.clip(matches[0], robot.spec.action_low, robot.spec.action_high)


def sync_pattern(steps: int, waits: int) -> tuple[list[str], list[int | None]]:
    """Sources and ages of a synchronous episode without faults: `waits` WAIT ticks, then the
    chunk from its first action, again and again."""
    sources = (["wait"] * waits + ["fresh"] + ["queued"] * (CHUNK - 1)) * steps
    ages = ([None] * waits + list(range(CHUNK))) * steps
    return sources[:steps], ages[:steps]


# ---- the synchronous loop at 200 ms ---------------------------------------------------------


@network
def test_synchronous_holds_still_ceil_latency_ticks_then_runs_the_chunk_from_its_first_action(
        env, rig):
    latency_s = 0.2
    waits = wait_ticks(latency_s)
    assert waits == 4
    loop, log = recording_rig(rig, latency_s, mode="synchronous")
    robot = RecordingEnv(env)
    trace = run_episode(robot, loop.engine, episode=1, seed=0)
    assert trace.success and trace.breaches == []
    sources, ages = sync_pattern(trace.steps, waits)
    assert [t.source for t in trace.ticks] == sources
    assert [t.age_ticks for t in trace.ticks] == ages
    assert {t.state for t in trace.ticks} == {"streaming"}  # waiting is not stalling
    assert loop.engine.queue.trimmed == 0  # nothing stale: the robot did not move
    assert trace.wire.lost == 0 and trace.wire.rejected == 0

    gripper = 0.0  # the engine's last action before any chunk
    for t in trace.ticks:
        if t.source == "wait":  # the hold action: zero deltas, gripper kept as it is
            assert t.action == [0.0, 0.0, 0.0, gripper], t
            continue
        # The chunk answers the observation of the first wait tick of its run, and runs
        # from its first action on.
        sent_at = t.tick - t.age_ticks - waits
        assert t.action == pytest.approx(
            served_chunk(robot, log, sent_at)[t.age_ticks].tolist(), abs=1e-7), t
        gripper = t.action[3]


@network
def test_asynchronous_at_the_same_latency_trims_the_head_of_every_chunk(env, rig):
    latency_s = 0.2
    loop, log = recording_rig(rig, latency_s)  # mode asynchronous, the default
    assert loop.engine.config.mode is ClientMode.asynchronous
    robot = RecordingEnv(env)
    trace = run_episode(robot, loop.engine, episode=1, seed=0)
    fresh = [t for t in trace.ticks if t.source == "fresh"]
    assert fresh and trace.breaches == []
    assert "wait" not in {t.source for t in trace.ticks}
    for t in fresh:  # the first action executed is the chunk's fifth, not its first
        assert t.age_ticks == wait_ticks(latency_s)
        chunk = served_chunk(robot, log, t.tick - t.age_ticks)
        assert t.action == pytest.approx(chunk[4].tolist(), abs=1e-7)
    assert loop.engine.queue.trimmed == wait_ticks(latency_s) * len(fresh)


# ---- 400 ms: the whole chunk is stale for the asynchronous client ---------------------------


@network
def test_at_400_ms_synchronous_succeeds_where_asynchronous_newest_fails(env, rig):
    """400 ms is 8 ticks, the whole chunk: the asynchronous client trims every action of
    every chunk and falls back for the whole episode; the synchronous one waits 8 ticks per
    chunk and finishes."""
    results = {}
    for mode in ("synchronous", "asynchronous"):
        loop = rig(mode=mode, ensembling="newest")
        loop.engine.latency = LatencyModel("fixed", value_s=0.4)
        results[mode] = (run_episode(env, loop.engine, episode=1, seed=0), loop.engine)
    sync, sync_engine = results["synchronous"]
    assert sync.success and sync.breaches == [] and sync_engine.queue.trimmed == 0
    assert [t.source for t in sync.ticks] == sync_pattern(sync.steps, wait_ticks(0.4))[0]
    late, late_engine = results["asynchronous"]
    assert not late.success and late.termination == "max_steps" and late.breaches == []
    assert {t.source for t in late.ticks} == {"fallback"}
    merged = late_engine.queue.trimmed // CHUNK  # the last reply may not have been due yet
    assert late_engine.queue.trimmed == CHUNK * merged and merged >= late.wire.chunks - 1 > 0


# ---- losses ---------------------------------------------------------------------------------


class LoseRequest(LatencyModel):
    """A fixed latency, but the request of index `lost` in each episode is lost on the link."""

    def __init__(self, value_s: float, lost: int) -> None:
        super().__init__("fixed", value_s=value_s)
        self.lost = lost

    def latency_for(self, key, measured_s=None, *, sent_tick=0):
        return math.inf if key[1] == self.lost else super().latency_for(
            key, measured_s, sent_tick=sent_tick)


@network
def test_a_request_lost_in_synchronous_mode_falls_back_and_recovers(env, rig):
    """The third request is lost: the client holds still (WAIT) for request_timeout_s, then
    counts the loss and falls back (here repeat_last, which a WAIT tick never is) until the
    re-sent request's chunk comes. The robot ran the fallback meanwhile, so that chunk is
    trimmed as in asynchronous mode; once it is used up the synchronous rhythm resumes."""
    latency_s, timeout_ticks = 0.2, 6
    loop, log = recording_rig(rig, latency_s, LoseRequest(latency_s, lost=2), mode="synchronous",
                              request_timeout_s=timeout_ticks * DT, fallback="repeat_last")
    robot = RecordingEnv(env)
    trace = run_episode(robot, loop.engine, episode=1, seed=0)
    waits = wait_ticks(latency_s)
    ticks = trace.ticks
    sent = 2 * (waits + CHUNK)  # the third request's tick: 24
    assert [t.source for t in ticks[:sent]] == sync_pattern(sent, waits)[0]
    assert [t.source for t in ticks[sent:sent + timeout_ticks]] == ["wait"] * timeout_ticks
    assert {t.state for t in ticks[:sent + timeout_ticks]} == {"streaming"}
    lost_at = sent + timeout_ticks
    falling_back = ticks[lost_at:lost_at + waits]  # the re-sent request is in flight
    assert [(t.source, t.state) for t in falling_back] == [("fallback", "stalled")] * waits
    assert all(t.action == ticks[sent - 1].action for t in falling_back)  # repeat_last
    back = ticks[lost_at + waits:lost_at + CHUNK]  # the re-sent request's chunk, trimmed
    assert [(t.source, t.state, t.seq) for t in back] == (
        [("fresh", "streaming", 4)] + [("queued", "streaming", 4)] * (CHUNK - waits - 1))
    assert [t.age_ticks for t in back] == list(range(waits, CHUNK))
    np.testing.assert_allclose([t.action for t in back],
                               served_chunk(robot, log, lost_at)[waits:], atol=1e-7)
    assert loop.engine.queue.trimmed == waits
    rest = ticks[lost_at + CHUNK:]  # then: wait, the chunk from its first action, again
    assert rest and [t.source for t in rest] == sync_pattern(len(rest), waits)[0]
    assert trace.wire.lost == 1 and trace.success and trace.breaches == []


@network
def test_a_reply_later_than_request_timeout_is_a_loss_then_the_loop_recovers(env, rig):
    """The server takes 1 s of real time over its first prediction: past request_timeout_s
    the request is lost, the ticks fall back (paced to wall time) until a chunk comes (its
    request went out while falling back: trimmed), and the synchronous rhythm resumes; the
    late reply is never executed."""
    loop = rig(mode="synchronous", request_timeout_s=0.3, max_offline_s=10.0)
    loop.engine.latency = LatencyModel("fixed", value_s=0.2)
    loop.restart(factory=lambda: DelayedOracle(1.0, first=True))
    wait_until(loop.client.server_present, 5.0, "server with the slow first prediction")
    trace = run_episode(env, loop.engine, episode=1, seed=0)
    assert [t.source for t in trace.ticks[:6]] == ["wait"] * 6
    assert (trace.ticks[6].source, trace.ticks[6].state) == ("fallback", "stalled")
    assert trace.wire.lost >= 1 and trace.breaches == [] and trace.success
    fresh = [t for t in trace.ticks if t.source == "fresh"]
    assert fresh[0].seq > 1 and fresh[0].age_ticks >= 4 and fresh[0].state == "streaming"
    assert fresh[1:] and all(t.age_ticks == 0 for t in fresh[1:])
    assert all(t.source != "fallback" for t in trace.ticks[fresh[0].tick:])


# ---- the invariant checker does not take the engine's word ----------------------------------


class ResumeLiar(ClientEngine):
    """Bug: an asynchronous engine (it keeps moving while a request is in flight) that merges
    every chunk as if the robot had held still: stale actions with ages counted from their
    arrival."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        merge = self.queue.merge
        self.queue.merge = lambda *a, **k: merge(*a, **{**k, "resumed": True})


@network
def test_the_checker_reports_ages_counted_from_a_resume_the_robot_did_not_hold_still_for(
        env, rig):
    made = rig()
    engine = made.engine
    liar = ResumeLiar(made.client, engine.contract, engine.config, dt=engine.dt,
                      gripper_index=3, latency=engine.latency)
    trace = run_episode(env, liar, episode=1, seed=0)
    assert any("the robot neither held still nor executed the prefix it committed to" in b
               for b in trace.breaches), trace.breaches


def test_resumed_merge_starts_the_chunk_at_its_arrival_and_trims_nothing():
    queue = ActionQueue()
    chunk = np.arange(8, dtype=np.float32).reshape(4, 2)
    assert queue.merge(chunk, obs_tick=10, now_tick=14, seq=1, episode=1, epoch=1,
                       model_id="m", resumed=True) == 4
    assert queue.trimmed == 0 and queue.depth(14) == 4
    first = queue.pop(14)
    assert first.action.tolist() == [0.0, 1.0]
    assert (first.obs_tick, first.observed_tick) == (14, 10)


# ---- config: the mode and the presets -------------------------------------------------------


def compose_config(*overrides: str):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


PRESETS = {"async_newest": (ClientMode.asynchronous, Ensembling.newest),
           "async_exponential": (ClientMode.asynchronous, Ensembling.exponential),
           "synchronous": (ClientMode.synchronous, Ensembling.newest),
           "delay_aware": (ClientMode.delay_aware, Ensembling.newest)}


def test_every_client_preset_is_listed_and_starts_with_a_comment():
    files = sorted(Path(config_dir(), "client").glob("*.yaml"))
    assert [f.stem for f in files] == sorted(PRESETS)
    assert all(f.read_text().startswith("# ") for f in files)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_client_preset_composes_into_the_engine_config(name):
    client = validate(compose_config(f"client={name}")).client
    assert isinstance(client, EngineConfig)
    assert (client.mode, client.ensembling) == PRESETS[name]
    assert client.send_threshold == 4


def test_the_default_preset_is_the_engine_configs_defaults():
    assert validate(compose_config()).client == EngineConfig()


def test_a_preset_takes_overrides():
    client = validate(compose_config("client=synchronous", "client.request_timeout_s=2")).client
    assert client.mode is ClientMode.synchronous and client.request_timeout_s == 2.0


def test_an_unknown_preset_fails_at_compose_naming_the_choices():
    with pytest.raises(ConfigCompositionException) as failure:
        compose_config("client=nope")
    text = str(failure.value)
    assert "client/nope" in text and all(name in text for name in PRESETS)


def test_an_unknown_mode_fails_at_compose_naming_the_field_and_choices():
    with pytest.raises((ConfigCompositionException, OmegaConfBaseException)) as failure:
        compose_config("client.mode=bogus")
    text = str(failure.value) + str(failure.value.__cause__)
    assert "client.mode" in text and "asynchronous" in text and "synchronous" in text


def test_an_engine_config_built_directly_checks_the_mode():
    with pytest.raises(ValueError, match=r"client\.mode='bogus': expected one of "
                                         r"\['asynchronous', 'synchronous', 'delay_aware'\]"):
        EngineConfig(mode="bogus")


def run_harness(*overrides: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *overrides], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_command_line_composes_a_preset_with_an_override(tmp_path):
    result = run_harness("client=synchronous", "client.request_timeout_s=2", "--cfg", "job",
                         cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "mode: synchronous" in result.stdout and "request_timeout_s: 2" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize(("override", "messages"), [
    ("client=nope", ["client=nope: no such choice; choose one of async_exponential, "
                     "async_newest, delay_aware, synchronous"]),
    ("client.mode=bogus", ["client.mode=bogus: Invalid value 'bogus', expected one of "
                           "[asynchronous, synchronous, delay_aware]"]),
])
def test_command_line_refuses_a_bad_preset_or_mode_before_anything_starts(tmp_path, override,
                                                                           messages):
    result = run_harness(override, f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-2000:]  # judged before Hydra runs (preflight)
    assert all(m in output for m in messages) and "Traceback" not in output
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "episodes").exists()  # nothing ran


@pytest.mark.slow
def test_loop_job_runs_synchronous_episodes_without_a_fallback_tick(tmp_path):
    result = run_harness("transport=local", "client=synchronous", "latency.kind=fixed",
                         "latency.value_s=0.4", "env.episodes_per_task=2",
                         f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = list(csv.DictReader(open(tmp_path / "run" / "episodes.csv")))
    assert len(rows) == 2 and all(r["success"] == "True" for r in rows)
    assert all(r["fallback_ticks"] == "0" and r["breaches"] == "0" for r in rows)


# ---- chunks longer than the action age limit ------------------------------------------------


@network
@pytest.mark.parametrize(("mode", "ensembling", "latency_s"), [
    ("synchronous", "newest", 0.4), ("asynchronous", "newest", 0.1),
    ("asynchronous", "exponential", 0.05)])
def test_a_chunk_longer_than_the_age_limit_is_asked_again_when_its_young_part_runs_out(
        env, mode, ensembling, latency_s):
    """Chunk 32 at 20 Hz with max_action_age_s=0.5 (10 ticks): only a chunk's first 11
    actions may run. The queue's depth counts only those, so the engine asks again in time
    (synchronous: holds still for it) instead of waiting the stale tail out on fallback, and
    an arriving chunk replaces the tail it overlaps instead of blending with it.
    Before: synchronous 0/1 (the tail's 21 ticks on fallback after every chunk); then,
    with depth fixed but the blend not, exponential ensembling 0/50 at 0 ms."""
    from harness.client.engine import engine_for
    from harness.server.policy_server import PolicyServer
    from policies import make_policy
    from transports import LocalTransportConfig, make_client, make_server

    transport = LocalTransportConfig(name=f"long-chunk-{mode}-{ensembling}")
    server = PolicyServer(make_server(transport),
                          lambda: make_policy("oracle", env=ENV, chunk_size=32))
    server.start()
    client = make_client(transport)
    try:
        engine = engine_for(env.spec, client, EngineConfig(mode=mode, ensembling=ensembling),
                            chunk_size=32,
                            latency=LatencyModel("fixed", value_s=latency_s))
        trace = run_episode(env, engine, episode=1, seed=0)
        engine.close()
    finally:
        client.close()
        server.close()
    assert trace.success and trace.breaches == []
    fallback = sum(t.source == "fallback" for t in trace.ticks)
    assert fallback <= 1 + math.ceil(latency_s / 0.05), fallback  # only the first chunk's wait
    assert max(t.age_ticks or 0 for t in trace.ticks) <= 10


@network
def test_an_episode_does_not_inherit_the_previous_episodes_gripper(env, rig):
    """Before, the hold action of an episode's first ticks kept the gripper its robot had
    closed at the end of the previous episode: the same seeded episode differed with the
    episode its robot ran before (found comparing robots as threads and as processes)."""
    loop = rig(mode="synchronous")
    first = run_episode(env, loop.engine, episode=1, seed=0)
    assert first.success and first.ticks[-1].action[3] < 0  # it ended holding the cube
    second = run_episode(env, loop.engine, episode=2, seed=1)
    alone = rig(mode="synchronous")
    fresh = run_episode(env, alone.engine, episode=2, seed=1)
    assert second.ticks[0].source == "wait" and second.ticks[0].action == [0.0, 0.0, 0.0, 0.0]
    assert [t.action for t in second.ticks] == [t.action for t in fresh.ticks]
