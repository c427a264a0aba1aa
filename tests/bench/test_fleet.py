"""The fleet load test at a reduced size (16 light robots, 2 replicas, a few seconds) and
the serving benchmark's analysis: every session is accounted for, no breach, the served rate
meets the demand when the server is not the bottleneck; the breach checker fires on a chunk
of another session or one answering nothing sent; the knee and the capacity formula are
what the rows say. Real parts: supervised policy servers over zmq, the shipped torch MLP
batched by micro_batch, real sessions of the wire."""

from __future__ import annotations

import numpy as np
import pytest

from harness import protocol
from harness.bench.fleet import (
    RobotTally,
    _tally_reply,
    observation_of,
    run_fleet,
    serve_replicas,
    sessions_open,
    summarize,
)
from harness.bench.serving_report import knee_and_formula

network = pytest.mark.network


@network
@pytest.mark.timeout(180)
@pytest.mark.parametrize("processes", [0, 2])
def test_a_small_fleet_on_two_replicas_accounts_for_every_session(tmp_path, processes):
    """16 robots (threads of this process, or of two worker processes) at 4 observations/s
    for 3 s against two replicas of a micro-batching server."""
    contract, observation = observation_of("mujoco_pick_place")
    servers, transports = serve_replicas(
        ["transport=zmq", "policy=torch", "server.scheduler=micro_batch",
         "server.max_sessions=16", "transport.heartbeat_timeout_s=5.0"], 2, tmp_path)
    try:
        tallies = run_fleet(transports, 16, contract=contract, observation=observation,
                            rate_hz=4.0, seconds=3.0, processes=processes)
        left = sessions_open(transports)
    finally:
        for server in servers:
            server.stop()
    row = summarize(tallies, robots=16, replicas=2, seconds=3.0, rate_hz=4.0,
                    supply_per_s=None, budget_s=0.2, sessions_left=left)
    assert (row["opened"], row["closed"], row["sessions_left"]) == (16, 16, 0)
    assert (row["breaches"], row["errors"]) == (0, 0)
    assert row["served"] >= 0.9 * row["sent"] > 0  # a light load: nearly every one answered
    assert row["least_served_robot"] >= 5  # no robot left out


def chunk(seq: int, epoch: int) -> bytes:
    return protocol.encode(protocol.Message(protocol.ActionChunk(
        np.zeros((8, 4), np.float32), seq, 0, 0, "m"), seq=seq, epoch=epoch))


def test_the_breach_checker_fires_on_another_sessions_chunk_and_on_an_unsent_seq():
    tally = RobotTally()
    sent = {1: 0, 2: 0}
    _tally_reply((chunk(1, epoch=7), 10), 7, sent, tally)
    assert (tally.served, tally.breaches) == (1, 0)
    _tally_reply((chunk(2, epoch=8), 10), 7, sent, tally)  # another session's epoch
    _tally_reply((chunk(9, epoch=7), 10), 7, sent, tally)  # never sent
    assert (tally.served, tally.breaches) == (1, 2)


SUPPLY = [{"batch": 1, "ours_served_per_s": 200.0}, {"batch": 16, "ours_served_per_s": 800.0}]


@pytest.mark.parametrize(("served_at_64", "p99_at_32", "knee"), [
    (256.0, 50.0, None), (200.0, 50.0, 64), (256.0, 250.0, 32)])
def test_the_knee_is_the_first_fleet_short_of_demand_or_past_the_budget(served_at_64,
                                                                       p99_at_32, knee):
    fleet = [{"robots": 16, "demand_per_s": 64.0, "served_per_s": 64.0, "p50_ms": 10.0,
              "p99_ms": 20.0},
             {"robots": 32, "demand_per_s": 128.0, "served_per_s": 128.0, "p50_ms": 20.0,
              "p99_ms": p99_at_32},
             {"robots": 64, "demand_per_s": 256.0, "served_per_s": served_at_64,
              "p50_ms": 30.0, "p99_ms": 60.0}]
    analysis = knee_and_formula(SUPPLY, fleet, rate=4.0, chunk=8, dt=0.05, budget_ms=200.0)
    assert analysis["knee"] == knee
    # t = 1/800 s; 0.8 / (4 x 1/800) = 160; (8 x 0.05 / 2 - 0.010) / (1/800) = 152
    assert analysis["n_max_load"] == pytest.approx(160.0)
    assert analysis["n_max_horizon"] == pytest.approx(152.0)
    assert analysis["n_max"] == pytest.approx(152.0)


def test_the_fleet_report_is_one_page_with_the_table_and_the_plot(tmp_path):
    import pandas as pd

    from reports.fleet import FLEET_PLOT_ID, write_fleet_report

    rows = pd.DataFrame([{"replicas": r, "robots": 128, "opened": 128, "closed": 128,
                          "sessions_left": 0, "breaches": 0, "errors": 0, "demand_per_s": 512.0,
                          "expected_per_s": 512.0, "served_per_s": 400.0 + r, "p50_ms": 20.0,
                          "p99_ms": 250.0 + r, "budget_ms": 200.0, "least_served_robot": 9}
                         for r in (1, 2)])
    page = write_fleet_report(rows, tmp_path / "report.html", title="128 robots").read_text()
    assert page.count(f'id="{FLEET_PLOT_ID}"') == 1
    assert "min(demand, supply) obs/s" in page and "402.0" in page and "252.0" in page
    assert "<script src=" not in page  # self-contained: plotly inline
