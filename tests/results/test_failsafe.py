"""Fail-safe metrics: exact numbers on hand-built traces, the stale-action check firing, the
episode row and summary (also of rows older than the columns), and a real stalled run where
`repeat_last` moves the arm while blind and `zero` does not."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from envs import make_env
from harness.client.latency import LatencyModel
from harness.client.states import ActionSource
from harness.loop.runner import run_episode
from harness.results.failsafe import (
    episode_failsafe,
    failsafe_console_items,
    fault_spans,
    trace_failsafe,
)
from harness.results.store import ResultsStore
from harness.results.trace import EpisodeTrace, TickRecord
from tests.loop.conftest import ENV, Rig
from transports.loopback import free_port

DT = 0.05


def tick(i: int, state: str, source: str, x: float, age: int | None = None) -> TickRecord:
    """A tick record whose end effector is at (x, 0, 0.15) after its step."""
    if source != "fallback" and age is None:
        age = 1
    return TickRecord(i, source, state, age, None if source == "fallback" else 1, None,
                      [0.0, 0.0, 0.0, 0.0], ee_pos=[x, 0.0, 0.15])


def fault(kind: str, start_tick: int, end_tick: int | None) -> list[dict]:
    events = [{"fault": kind, "phase": "start", "tick": start_tick,
               "control_s": round(start_tick * DT, 6), "mechanism": "test", "source": "timed"}]
    if end_tick is not None:
        events.append({"fault": kind, "phase": "end", "tick": end_tick,
                       "control_s": round(end_tick * DT, 6), "mechanism": "test",
                       "source": "timed"})
    return events


def stall_trace() -> list[TickRecord]:
    """20 ticks: tick 0 blind (before the first chunk); a stall from tick 4 to 10 noticed at
    tick 6 (queue empty), blind from 6 to 12 (12 is STREAMING but still a fallback: the
    session is back, no chunk yet), a fresh chunk at 13. The hand moves 1 cm a tick while
    streaming, then 2 cm and 1 cm on the first two blind ticks, then stands."""
    ticks = [tick(0, "stalled", "fallback", 0.0)]
    ticks += [tick(i, "streaming", "queued", 0.01 * i) for i in range(1, 6)]
    ticks += [tick(6, "stalled", "fallback", 0.07), tick(7, "stalled", "fallback", 0.08)]
    ticks += [tick(i, "reconnecting", "fallback", 0.08) for i in range(8, 12)]
    ticks += [tick(12, "streaming", "fallback", 0.08), tick(13, "streaming", "fresh", 0.09)]
    ticks += [tick(i, "streaming", "queued", 0.09 + 0.01 * (i - 13)) for i in range(14, 20)]
    return ticks


def trace_of(ticks: list[TickRecord], *, max_age_ticks: int = 10,
             request_timeout_s: float = 1.0) -> EpisodeTrace:
    return EpisodeTrace(1, steps=len(ticks), ticks=ticks, dt=DT, ee_pos_start=[0.0, 0.0, 0.15],
                        max_age_ticks=max_age_ticks, request_timeout_s=request_timeout_s)


def test_detect_recover_and_blind_motion_are_exact_on_a_hand_built_stall():
    events = fault("server_stall", 4, 10) + fault("delay", 15, 17)  # the delay goes unnoticed
    result = trace_failsafe(trace_of(stall_trace()), events)
    stall, delay = result.windows
    assert (stall.fault, stall.start_s, stall.end_s) == ("server_stall", 0.2, 0.5)
    assert stall.detect_s == pytest.approx(0.1)    # tick 6 - tick 4
    assert stall.recover_s == pytest.approx(0.15)  # tick 13 - tick 10: tick 12 was a fallback
    assert delay.detect_s is None and delay.recover_s == 0.0
    assert result.blind_s == pytest.approx(0.4)  # ticks 0 and 6..12
    assert result.blind_path_m == pytest.approx(0.03)  # 2 cm + 1 cm; streaming motion not counted
    assert result.blind_peak_speed_mps == pytest.approx(0.02 / DT)
    assert result.stale_actions == 0
    assert result.columns() == pytest.approx({
        "time_to_detect_s": 0.1, "time_to_recover_s": 0.15, "blind_s": 0.4,
        "blind_path_m": 0.03, "blind_peak_speed_mps": 0.4, "stale_actions": 0})
    assert result.events()[0] == {"failsafe": "server_stall", "start_s": 0.2, "end_s": 0.5,
                                  "detect_s": pytest.approx(0.1),
                                  "recover_s": pytest.approx(0.15),
                                  "to_episode_end": False}


def test_a_fault_the_engine_never_noticed_has_no_time_to_detect():
    ticks = [tick(i, "streaming", "queued", 0.0) for i in range(20)]
    result = trace_failsafe(trace_of(ticks), fault("delay", 4, 10))
    assert [(w.detect_s, w.recover_s) for w in result.windows] == [(None, 0.0)]
    assert result.time_to_detect_s is None and result.time_to_recover_s == 0.0
    assert (result.blind_s, result.blind_path_m, result.blind_peak_speed_mps) == (0.0, 0.0, 0.0)


def test_a_whole_episode_fault_is_neither_detected_by_the_first_tick_nor_unrecovered():
    """A latency window from t=0 to the episode's end (wan_50ms): tick 0 is never STREAMING
    (no chunk yet), which is no detection; and there is no after to recover in."""
    ticks = [tick(0, "stalled", "fallback", 0.0)]
    ticks += [tick(i, "streaming", "queued", 0.0) for i in range(1, 20)]
    result = trace_failsafe(trace_of(ticks), fault("latency", 0, 19))
    (window,) = result.windows
    assert window.detect_s is None and window.recover_s == 0.0 and window.to_episode_end
    ended_first = trace_failsafe(trace_of(ticks[:10]), fault("latency", 0, 19)).windows[0]
    assert ended_first.recover_s is None and ended_first.to_episode_end


@pytest.mark.parametrize(("request_timeout_s", "detect_s"), [(0.5, None), (1.0, 1.05)])
def test_leaving_streaming_counts_as_detection_only_within_request_timeout_after_the_window(
        request_timeout_s, detect_s):
    """Fault from 0.2 to 0.5 s; the engine leaves STREAMING at tick 25 (1.25 s)."""
    ticks = [tick(i, "degraded" if i == 25 else "streaming", "queued", 0.0) for i in range(40)]
    result = trace_failsafe(trace_of(ticks, request_timeout_s=request_timeout_s),
                            fault("drop", 4, 10))
    assert result.windows[0].detect_s == (pytest.approx(detect_s) if detect_s else None)


def test_time_to_recover_is_none_when_the_episode_ends_first():
    ticks = [tick(0, "streaming", "queued", 0.0)] + [
        tick(i, "stalled", "fallback", 0.0) for i in range(1, 20)]
    # the controller closes a window still open at the end at trace.steps (tick 20)
    result = trace_failsafe(trace_of(ticks), fault("server_crash", 4, 20))
    assert result.windows[0].detect_s == 0.0  # already stalled when the fault began
    assert result.windows[0].recover_s is None and result.time_to_recover_s is None
    spans = fault_spans(fault("server_crash", 4, None))  # no end event at all
    assert spans[0].end_s is None
    assert trace_failsafe(trace_of(ticks), fault("server_crash", 4, None)).windows[0] \
        .recover_s is None


def test_a_stale_action_is_counted():
    """The check fires: ages 1..12 against a limit of 10 ticks are two stale actions; a
    fallback (no age) is never one."""
    ticks = [tick(0, "stalled", "fallback", 0.0)] + [
        tick(i, "streaming", "queued", 0.0, age=i) for i in range(1, 13)]
    assert trace_failsafe(trace_of(ticks, max_age_ticks=10)).stale_actions == 2
    assert trace_failsafe(trace_of(ticks, max_age_ticks=12)).stale_actions == 0
    assert episode_failsafe(ticks, dt=DT).stale_actions is None  # limit unknown: cannot say


def test_stale_actions_in_a_real_trace_match_the_invariant_checker():
    """An engine with one bug (it keeps executing its first action, however old) through the
    real runner: the trace's count is the checker's, and not zero."""
    env = make_env(ENV)
    rig = Rig(env, latency=LatencyModel("fixed", value_s=0.1))
    try:
        engine, inner, first = rig.engine, rig.engine.tick, []

        def stale_tick(i, observation):
            result = inner(i, observation)
            if not first and result.source is not ActionSource.FALLBACK:
                first.append((i, result))
            if not first:
                return result
            at, kept = first[0]
            return dataclasses.replace(kept, source=ActionSource.QUEUED,
                                       age_ticks=kept.age_ticks + i - at)

        engine.tick = stale_tick
        trace = run_episode(env, engine, episode=1, seed=0)
    finally:
        rig.close()
        env.close()
    age_breaches = [b for b in trace.breaches if "action age" in b]
    assert trace.max_age_ticks == 10  # 0.5 s at 20 Hz
    assert trace.ticks[0].ee_pos is not None and trace.ee_pos_start is not None
    assert trace_failsafe(trace).stale_actions == len(age_breaches) > 0


def test_the_episode_row_and_the_summary_carry_the_failsafe_metrics(tmp_path):
    store = ResultsStore(tmp_path)
    events = fault("server_stall", 4, 10) + fault("delay", 15, 17)
    row = store.write_episode(task=0, seed=0, init_state=None, trace=trace_of(stall_trace()),
                              events=events)
    assert row["time_to_detect_s"] == pytest.approx(0.1)
    assert row["time_to_recover_s"] == pytest.approx(0.15)
    assert (row["blind_s"], row["stale_actions"]) == (pytest.approx(0.4), 0)
    windows = [e for e in row["events"] if "failsafe" in e]
    assert [(e["task"], e["episode"], e["failsafe"]) for e in windows] == [
        (0, 1, "server_stall"), (0, 1, "delay")]
    assert sum("fault" in e for e in row["events"]) == 4  # the fault events stay as they were

    # the parquet trace alone gives the same numbers (a researcher re-computing offline)
    frame = pd.read_parquet(tmp_path / "traces" / "task000-ep0001.parquet")
    offline = episode_failsafe(list(frame.itertuples(index=False)), events, dt=DT,
                               ee_pos_start=[0.0, 0.0, 0.15], max_age_ticks=10,
                               request_timeout_s=1.0)
    assert offline.columns() == pytest.approx(trace_failsafe(trace_of(stall_trace()),
                                                             events).columns())

    quiet = [tick(i, "streaming", "queued", 0.0) for i in range(20)]
    store.write_episode(task=0, seed=1, init_state=None,
                        trace=dataclasses.replace(trace_of(quiet), episode=2),
                        events=fault("server_stall", 2, 6))
    summary = store.summarize(latency_budget_s=0.2)
    assert summary["time_to_detect_s_p50"] == pytest.approx(0.1)  # the one detected window
    assert summary["time_to_detect_s_max"] == pytest.approx(0.1)
    assert summary["faults_undetected"] == 2  # the delay and episode 2's stall
    assert summary["time_to_recover_s_p50"] == pytest.approx(0.0)  # 0.15, 0.0, 0.0
    assert summary["time_to_recover_s_max"] == pytest.approx(0.15)
    assert summary["faults_unrecovered"] == 0
    assert summary["blind_s"] == pytest.approx(0.4)
    assert summary["blind_path_m_max"] == pytest.approx(0.03)
    assert summary["blind_peak_speed_mps_max"] == pytest.approx(0.4)
    assert summary["stale_actions"] == 0
    events_file = [json.loads(line) for line in open(tmp_path / "events.jsonl")]
    assert sum("failsafe" in e for e in events_file) == 3
    assert json.loads((tmp_path / "summary.json").read_text())["blind_s"] == \
        pytest.approx(0.4)


def test_summarize_still_works_on_rows_written_before_the_failsafe_columns(tmp_path):
    store = ResultsStore(tmp_path)
    store.write_episode(task=0, seed=0, init_state=None, trace=trace_of(stall_trace()))
    path = tmp_path / "episodes" / "task000-ep0001.json"
    old = json.loads(path.read_text())
    for column in ("time_to_detect_s", "time_to_recover_s", "blind_s", "blind_path_m",
                   "blind_peak_speed_mps", "stale_actions"):
        del old[column]
    path.write_text(json.dumps(old))
    summary = store.summarize(latency_budget_s=0.2)
    assert (summary["blind_s"], summary["stale_actions"], summary["faults_undetected"]) == \
        (0.0, 0, 0)
    assert summary["blind_path_m_max"] is None and summary["time_to_detect_s_p50"] is None
    assert failsafe_console_items(summary) == []


def test_console_items_name_every_figure_that_is_not_zero_or_none():
    summary = {"time_to_detect_s_p50": 0.15, "time_to_detect_s_max": 0.2,
               "time_to_recover_s_p50": None, "time_to_recover_s_max": None,
               "faults_undetected": 0, "faults_unrecovered": 1, "blind_s": 2.0,
               "blind_path_m_max": 0.2152, "blind_peak_speed_mps_max": 0.4,
               "stale_actions": 3, "sessions_reopened": 0, "requests_lost": 2}
    assert failsafe_console_items(summary) == [
        ("time to detect p50", "0.15 s"), ("time to detect max", "0.20 s"),
        ("faults unrecovered (the episode ended before it)", "1"),
        ("blind time (fallback actions)", "2.00 s"), ("path while blind, max", "0.215 m"),
        ("peak speed while blind, max", "0.400 m/s"),
        ("stale actions executed (must be 0)", "3"), ("requests lost", "2")]
    assert failsafe_console_items({}) == []  # a summary of an older version


def _run_stalled(tmp_path: Path, fallback: str) -> subprocess.Popen:
    """One mujoco_pick_place episode over zmq, the server SIGSTOPped from 0.45 s to 1.45 s:
    the oracle is moving the hand then, so the last action is not a standstill."""
    run = tmp_path / fallback
    return subprocess.Popen(
        [sys.executable, "-m", "harness", "transport=zmq",
         f"transport.listen=tcp://127.0.0.1:{free_port()}", "faults=server_stall",
         "faults.timed.0.start_s=0.45", "faults.timed.0.duration_s=1.0",
         f"client.fallback={fallback}", "env.episodes_per_task=1", f"hydra.run.dir={run}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
@pytest.mark.network
def test_repeat_last_moves_the_arm_while_blind_and_zero_does_not(tmp_path):
    """The same real stall (SIGSTOP of the server process) under two fallbacks: both are
    detected and recovered from and as long blind, but repeat_last keeps driving the hand in
    its last direction at full speed (0.02 m a step) and zero leaves it nearly still."""
    runs = {fallback: _run_stalled(tmp_path, fallback) for fallback in ("zero", "repeat_last")}
    summaries = {}
    for fallback, process in runs.items():
        output, _ = process.communicate(timeout=120)
        assert process.returncode == 0, output[-2000:]
        summaries[fallback] = json.loads((tmp_path / fallback / "summary.json").read_text())
    for summary in summaries.values():
        assert summary["faults_started"] == 1 and summary["dead_episodes"] == 0
        assert 0 < summary["time_to_detect_s_max"] <= 1.0
        assert summary["time_to_recover_s_max"] is not None
        assert summary["faults_undetected"] == summary["faults_unrecovered"] == 0
        assert summary["blind_s"] >= 0.5 and summary["stale_actions"] == 0
    zero, repeat = summaries["zero"], summaries["repeat_last"]
    assert zero["blind_path_m_max"] < 0.02
    assert repeat["blind_path_m_max"] > 0.1 > 5 * zero["blind_path_m_max"]
    assert repeat["blind_peak_speed_mps_max"] > 0.3 > zero["blind_peak_speed_mps_max"]
