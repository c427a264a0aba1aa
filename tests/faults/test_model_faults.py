"""Model faults inside the server's predict: a slow model and a one-off pause, on a real
server process, seen by the client as a slow GPU would be; and the server's reading of the
faults file, which must never take it down."""

from __future__ import annotations

import json
import time

import pandas as pd
import pytest

from harness.faults.model_faults import ModelFaults, write_model_fault
from tests.faults.conftest import events_of, run_faulted


def test_a_slow_model_fault_holds_each_prediction_to_at_least_its_time(tmp_path):
    path = tmp_path / "model_faults.json"
    faults = ModelFaults(path)
    assert faults.stretch(time.monotonic()) == 0.0  # no file: no fault
    write_model_fault(path, {"kind": "slow_model", "predict_s": 0.05})
    started = time.monotonic()
    faults.stretch(started)
    assert time.monotonic() - started >= 0.05
    write_model_fault(path, {})
    assert faults.stretch(time.monotonic()) == 0.0


def test_a_pause_happens_once_per_id(tmp_path):
    path = tmp_path / "model_faults.json"
    faults = ModelFaults(path)
    write_model_fault(path, {"kind": "model_pause", "pause_s": 0.05, "id": "a"})
    assert faults.stretch(time.monotonic()) == pytest.approx(0.05)
    assert faults.stretch(time.monotonic()) == 0.0
    write_model_fault(path, {"kind": "model_pause", "pause_s": 0.05, "id": "b"})
    assert faults.stretch(time.monotonic()) == pytest.approx(0.05)


def test_an_unreadable_faults_file_means_no_fault_not_a_crash(tmp_path, caplog):
    path = tmp_path / "model_faults.json"
    faults = ModelFaults(path)
    path.write_text("{not json")
    assert faults.stretch(time.monotonic()) == 0.0
    assert "unreadable" in caplog.text
    path.write_text("[1, 2]")  # JSON, but not an object
    assert faults.stretch(time.monotonic() + 1) == 0.0


@pytest.mark.slow
@pytest.mark.network
def test_a_gc_pause_on_a_real_server_costs_one_request_and_delays_the_next(tmp_path):
    """A 1.5 s pause is longer than client.request_timeout_s (1 s): the request it stalls is
    lost, the next one waits in the server's mailbox for the rest of the pause (~0.5 s), and
    then predictions are at model speed again, as after a real GC pause."""
    run, summary = run_faulted(tmp_path, "gc_pause", episodes=1,
                               extra=("faults.timed.0.start_s=1.0",))
    assert summary["dead_episodes"] == 0 and summary["invariant_breaches"] == 0
    starts = [e for e in events_of(run) if e.get("phase") == "start"]
    assert [e["mechanism"] for e in starts] == ["predict paused 1.50 s"]
    assert summary["requests_lost"] == 1
    measured = pd.read_parquet(next((run / "traces").glob("*.parquet")))[
        "measured_latency_s"].dropna()
    assert 0.3 <= measured.max() <= 0.6  # the rest of the pause
    assert (measured > 0.05).sum() == 1 and measured.median() < 0.05


@pytest.mark.slow
@pytest.mark.network
def test_slow_model_openvla_puts_every_round_trip_past_405_ms(tmp_path):
    run, summary = run_faulted(tmp_path, "slow_model_openvla", episodes=1,
                               extra=("env.max_steps=60",))
    measured = pd.read_parquet(next((run / "traces").glob("*.parquet")))["measured_latency_s"]
    assert measured.dropna().min() >= 0.405 - 3 * 0.015
    assert json.loads(next((run / "episodes").glob("*.json")).read_text())["faults_started"] == 1
