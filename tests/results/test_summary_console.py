"""The run's summary fits 100 columns and every figure says its unit."""

from __future__ import annotations

from harness.results.summary import print_summary

SUMMARY = {"episodes": 100, "success_rate": 0.9, "success_wilson95": (0.6, 0.98),
           "latency_p50_s": 0.0021, "latency_p95_s": 0.9232, "latency_p99_s": 10.9472,
           "latency_over_budget": 9800, "fallback_ticks": 10560, "invariant_breaches": 0,
           "dead_episodes": 10, "faults_started": 3, "fault_mechanisms": ["SIGSTOP"],
           "execution": ["asynchronous"], "actions_trimmed": 27, "steps_median": 113.0}


def test_the_summary_fits_100_columns_with_a_unit_on_every_figure(capsys):
    print_summary(SUMMARY, title="mujoco_pick_place / oracle over zmq (virtual clock)",
                  faults="server_stall", faults_apply="emulated", client_mode="asynchronous")
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 100
    text = " ".join(out.split())
    for figure in ("90%", "(60%-98%)", "2.1/923.2/10947.2", "9800", "trips", "10560",
                   "ticks", "episodes", "round trip ms p50/p95/p99"):  # a cell may wrap
        assert figure in text, figure
    assert "every episode's first ticks are, while its first chunk is on its way" in text
