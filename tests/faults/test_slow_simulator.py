"""The same faulted config on a simulator slowed 5x on purpose (`env.step_sleep_s`) gives what
it gives on one that keeps up with real time: the robot sees each window for its control
time, the world (server, link) for its wall time, and no episode ends DEAD that did not.

One episode per speed, one schedule with a process fault, a partition and a message fault
(1 s each, 1 s apart) over zmq. Without the controller's lifting (`_lift_outages`), the slow
run keeps the server stopped and the link cut for 5 s of wall time each: the wall-time check
below fails, and with longer windows the server's wall-time timeouts (session expiry, the
model link's request timeout) fire where they never fire on a robot.
"""

from __future__ import annotations

import csv

import pytest

from tests.faults.conftest import events_of, run_faulted

pytestmark = [pytest.mark.slow(35), pytest.mark.network]  # seconds: started early

SCHEDULE = ("faults.timed=[{kind: server_stall, start_s: 0.5, duration_s: 1.0}, "
            "{kind: partition, start_s: 2.5, duration_s: 1.0}, "
            "{kind: drop, start_s: 4.5, duration_s: 1.0}]")
DT = 0.05
SLEEP_S = 0.2
"""After each 50 ms tick: 5x slower than real time (the sim itself takes ~1 ms a step)."""


def _row(run) -> dict:
    with open(run / "episodes.csv") as rows:
        return next(csv.DictReader(rows))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(fast, slow): run directory and summary of the one-episode run at each speed."""
    out = []
    for sleep_s in (0.0, SLEEP_S):
        tmp = tmp_path_factory.mktemp(f"sleep{sleep_s}")
        out.append(run_faulted(tmp, "partition_3s", episodes=1, extra=(
            SCHEDULE, "faults.name=three_kinds", "env.max_steps=120",
            f"env.step_sleep_s={sleep_s}")))
    return out


def test_no_episode_ends_dead_on_the_slow_simulator_that_did_not_on_the_fast_one(runs):
    (fast, fast_summary), (slow, slow_summary) = runs
    assert slow_summary["dead_episodes"] == fast_summary["dead_episodes"] == 0
    assert slow_summary["successes"] == fast_summary["successes"]
    assert "expired" not in (slow / "server-task0" / "server.log").read_text()


def test_the_robot_sees_each_window_for_its_control_time_at_either_speed(runs):
    """Fallback ticks (what the outages cost the robot) agree within a few ticks: the slow
    run's robot is held inside each window for its ticks, though the world left earlier."""
    (fast, _), (slow, _) = runs
    fast_ticks, slow_ticks = (int(_row(run)["fallback_ticks"]) for run in (fast, slow))
    assert fast_ticks >= 40  # three 20-tick windows, the message one partly lost
    assert abs(slow_ticks - fast_ticks) <= 0.15 * fast_ticks + 3, (fast_ticks, slow_ticks)


def test_the_world_sees_each_window_for_its_wall_time_on_the_slow_simulator(runs):
    """On the slow run every window is lifted from the world after about its duration of
    wall time (plus the two-tick slack of 0.5 s there), well before its control end; on the
    fast run none is (the pacing rule keeps the clocks together)."""
    (fast, _), (slow, _) = runs
    assert not any("world_end_tick" in e for e in events_of(fast))
    events = [e for e in events_of(slow) if "phase" in e]
    for kind in ("server_stall", "partition", "drop"):
        start = next(e for e in events if e["fault"] == kind and e["phase"] == "start")
        end = next(e for e in events if e["fault"] == kind and e["phase"] == "end")
        assert end["tick"] - start["tick"] == round(1.0 / DT)  # the robot's: 20 ticks
        assert "world_end_wall_s" in end, f"{kind} was never lifted from the world: {end}"
        world_s = end["world_end_wall_s"] - start["wall_s"]
        assert 1.0 <= world_s <= 1.0 + 2 * (DT + SLEEP_S) + 0.3, (kind, world_s)
        assert end["world_end_tick"] < end["tick"] - 5
    links = {e["fault"]: e.get("link") for e in events}
    assert links == {"server_stall": None, "partition": "client", "drop": "client"}


def test_a_modelled_schedule_replays_byte_for_byte_on_the_slow_simulator(tmp_path):
    """Modelled faults touch nothing in wall time: the same seeded run at both speeds
    executes the same actions at the same ticks, byte for byte."""
    import pandas as pd

    actions = []
    for sleep_s in (0.0, SLEEP_S):
        (tmp_path / f"sleep{sleep_s}").mkdir()
        run, summary = run_faulted(tmp_path / f"sleep{sleep_s}", "partition_3s", episodes=1,
                                   extra=(
            SCHEDULE, "faults.name=three_kinds", "faults.apply=modelled",
            "latency.kind=fixed", "env.max_steps=40", f"env.step_sleep_s={sleep_s}"))
        trace = pd.read_parquet(run / "traces" / "task000-ep0001.parquet")
        actions.append((summary["dead_episodes"],
                        trace[["tick", "source", "state", "seq", "action"]].to_json()))
    assert actions[0] == actions[1]
