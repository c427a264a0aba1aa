"""The serving benchmark's head-to-head table over repeated runs: medians per side, the served
rate's range, and our median over theirs (the figures the docs quote)."""

from __future__ import annotations

from harness.bench.serving import medians
from harness.bench.serving_report import supply_table


def _run(served: float, p50: float, p99: float, least: int) -> dict[str, float]:
    return {"served_per_s": served, "p50_ms": p50, "p99_ms": p99, "least_served": least}


def test_repeated_runs_give_medians_the_range_and_the_fewest_served():
    figures = medians("ours", [_run(500, 30, 60, 90), _run(700, 20, 40, 120),
                               _run(600, 25, 90, 100)])
    assert figures == {"ours_served_per_s": 600.0, "ours_p50_ms": 25.0, "ours_p99_ms": 60.0,
                       "ours_least_served": 90, "ours_served_min": 500,
                       "ours_served_max": 700, "ours_runs": 3}


def test_the_table_shows_the_range_and_our_median_over_theirs():
    row = {"batch": 4, "robots": 8,
           **medians("ours", [_run(380, 20, 30, 5), _run(420, 22, 34, 6)]),
           **medians("vla_eval", [_run(400, 21, 29, 5), _run(400, 23, 33, 6)])}
    table = supply_table([row]).splitlines()
    assert table[0].endswith("| ours / vla-eval |")
    assert table[2] == ("| 4 | 8 | 400 (380-420) | 21.0 | 32.0 | 400 (400-400) | 22.0 | 31.0 "
                        "| 1.00 |")


def test_one_run_per_side_is_shown_without_a_range():
    row = {"batch": 1, "robots": 2, **medians("ours", [_run(234, 8, 13, 1)])}
    assert supply_table([row]).splitlines()[2] == "| 1 | 2 | 234 | 8.0 | 13.0 |"
