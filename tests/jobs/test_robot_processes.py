"""Robots as processes (`clients_as=processes`, `harness.jobs.robots`): the same episodes as
robots in threads, a robot process that dies loses its episode only (the run exits 1 naming
it, `resume=` finishes it), a harness that dies takes its robots with it, and robots that
never reach a server end the run. Real parts: the harness and its robots as processes, a
policy server process, ZeroMQ over loopback, MuJoCo."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from harness.config import ConfigError
from tests.conftest import wait_until
from transports.loopback import free_port

# Each test starts five or six interpreters at once: one at a time, on one worker, after the
# long real-time tests (beside them, the remote-policy LIBERO test's episodes starved).
pytestmark = [pytest.mark.network, pytest.mark.slow(5),
              pytest.mark.xdist_group("robot_processes")]

FAST = ("env=mujoco_pick_place", "policy=oracle", "transport=zmq")
TIMING = ["measured_latency_s", "server_queue_s", "server_infer_s", "seq"]
"""What a trace may differ in between two runs: measured time, and the request counter,
which runs on over the episodes a robot ran before."""


def _listen() -> str:
    return f"transport.listen=tcp://127.0.0.1:{free_port()}"


def _harness(run_dir: Path, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "harness", *FAST, *overrides,
                             f"hydra.run.dir={run_dir}"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _children(pid: int, module: str) -> list[int]:
    """The pids of `pid`'s children running `python -m <module>`."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                command = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            except FileNotFoundError:
                continue
            if module.encode() in command:
                found.append(int(child))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _episodes(run_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((run_dir / "episodes").glob("*.json"))]


def _a_robot_mid_run(harness: subprocess.Popen, run_dir: Path, written: int) -> int:
    """The pid of one of two robot processes, once `written` episodes are."""
    wait_until(lambda: run_dir.exists() and len(_episodes(run_dir)) >= written
               and len(_children(harness.pid, "harness.jobs.robots")) == 2, 120,
               f"{written} episodes written by two robot processes")
    return max(_children(harness.pid, "harness.jobs.robots"))


def test_robots_as_processes_run_the_same_episodes_as_robots_in_threads(tmp_path):
    """Under a fixed latency the virtual clock makes each episode deterministic: every tick
    the same action, source and state whichever way its robot ran."""
    traces = {}
    for mode in ("threads", "processes"):
        run = subprocess.run([sys.executable, "-m", "harness", *FAST, _listen(), "clients=2",
                              f"clients_as={mode}", "env.episodes_per_task=3",
                              "latency.kind=fixed", "latency.value_s=0.05",
                              f"hydra.run.dir={tmp_path / mode}"],
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        rows = _episodes(tmp_path / mode)
        assert [row["episode"] for row in rows] == [1, 2, 3]
        assert {row["clients_as"] for row in rows} == {mode}
        assert {row["robot"] for row in rows} <= {0, 1}
        traces[mode] = {p.name: pd.read_parquet(p)
                        for p in sorted((tmp_path / mode / "traces").glob("*.parquet"))}
    assert sorted(traces["threads"]) == sorted(traces["processes"])
    for name, threaded in traces["threads"].items():
        pd.testing.assert_frame_equal(threaded.drop(columns=TIMING),
                                      traces["processes"][name].drop(columns=TIMING))
    assert (tmp_path / "processes" / "robot0" / "robot-task0.log").is_file()


def test_a_robot_process_killed_mid_run_loses_its_episode_only(tmp_path):
    run_dir = tmp_path / "run"
    total = 12
    config = (_listen(), "clients=2", "clients_as=processes", f"env.episodes_per_task={total}",
              "env.step_sleep_s=0.03")
    harness = _harness(run_dir, *config)
    try:
        victim = _a_robot_mid_run(harness, run_dir, written=2)
        os.kill(victim, signal.SIGKILL)
        output, _ = harness.communicate(timeout=300)
    finally:
        harness.kill()
    assert harness.returncode == 1, output[-3000:]
    assert f"(pid {victim}) died in task 0 episode" in output
    assert "(exit status -9)" in output and "resume= runs it again" in output
    written = {row["episode"] for row in _episodes(run_dir)}
    assert len(written) == total - 1  # the survivor ran the rest
    resumed = subprocess.run([sys.executable, "-m", "harness", *FAST, *config,
                              f"resume={run_dir}"],
                             capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert sorted(row["episode"] for row in _episodes(run_dir)) == list(range(1, total + 1))


def test_a_harness_killed_mid_episode_takes_its_robot_processes_with_it(tmp_path):
    """An episode here lasts over 20 s (0.4 s a step); the robots must go at once, not after
    finishing an episode nobody will count."""
    run_dir = tmp_path / "run"
    harness = _harness(run_dir, _listen(), "clients=2", "clients_as=processes",
                       "env.episodes_per_task=4", "env.step_sleep_s=0.4")
    try:
        def robots_in_episodes() -> bool:
            logs = list(run_dir.glob("robot*/robot-task0.log"))
            return len(logs) == 2 and all("waiting up to" in p.read_text() for p in logs)

        wait_until(robots_in_episodes, 120, "two robot processes serving")
        time.sleep(2.0)  # their first episodes under way
        robots = _children(harness.pid, "harness.jobs.robots")
        assert len(robots) == 2
        harness.kill()  # SIGKILL: no clean-up of its own
        harness.wait(timeout=30)
        killed = time.monotonic()
        wait_until(lambda: not any(_alive(pid) for pid in robots), 30,
                   "the robot processes to exit")
        assert time.monotonic() - killed < 10
    finally:
        harness.kill()
    assert _episodes(run_dir) == []
    assert all("the harness that started this robot is gone" in p.read_text()
               for p in run_dir.glob("robot*/robot-task0.log"))


def test_robots_that_reach_no_server_end_the_run_with_status_1(tmp_path):
    nobody = f"transport.connect=tcp://127.0.0.1:{free_port()}"
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "harness", *FAST, "server=external", nobody,
                          "clients=2", "clients_as=processes", "env.episodes_per_task=2",
                          "server.startup_timeout_s=2", f"hydra.run.dir={tmp_path / 'run'}"],
                         capture_output=True, text=True, timeout=300)
    output = run.stdout + run.stderr
    assert run.returncode == 1, output[-3000:]
    assert output.count("exited during start-up (exit status 1)") == 2
    assert "no policy server answered" in output
    assert time.monotonic() - started < 120
    assert _episodes(tmp_path / "run") == []


@pytest.mark.parametrize(("overrides", "message"), [
    (("clients_as=processes", "transport=local"),
     "clients_as=processes with transport=local: it does not cross processes"),
    (("clients_as=processes", "transport=zmq", "faults=lte"),
     "clients_as=processes with faults=lte (emulated)"),
])
def test_bad_clients_as_fails_at_startup_naming_it(overrides, message):
    from harness import api

    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        api.compose(list(overrides))


def test_an_unknown_clients_as_is_refused_listing_the_choices():
    from hydra.errors import ConfigCompositionException

    from harness import api

    with pytest.raises(ConfigCompositionException) as refused:
        api.compose(["clients_as=forks"])
    assert "expected one of [threads, processes]" in str(refused.value.__cause__)


def test_a_stopped_robot_process_is_named_and_its_run_goes_on_when_it_continues(tmp_path):
    """SIGSTOP one robot mid-episode: the run waits for it (the other robot takes the rest)
    and says which robot is stopped; after SIGCONT it finishes its episode, the run says so
    and every episode is written, exit 0."""
    run_dir = tmp_path / "run"
    total = 6
    harness = _harness(run_dir, _listen(), "clients=2", "clients_as=processes",
                       f"env.episodes_per_task={total}", "env.step_sleep_s=0.03")
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(harness.stdout), daemon=True)
    reader.start()
    try:
        victim = _a_robot_mid_run(harness, run_dir, written=1)
        os.kill(victim, signal.SIGSTOP)
        wait_until(lambda: any(f"(pid {victim}) has been stopped" in line for line in lines),
                   60, "the harness to name the stopped robot")
        os.kill(victim, signal.SIGCONT)
        harness.wait(timeout=300)
        reader.join(10)
    finally:
        harness.kill()
    output = "".join(lines)
    assert harness.returncode == 0, output[-3000:]
    assert f"(pid {victim}) goes on after" in output
    assert sorted(row["episode"] for row in _episodes(run_dir)) == list(range(1, total + 1))
