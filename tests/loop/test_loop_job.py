"""`python -m harness` running the closed loop: results on disk, resume, external server."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys

import pandas as pd
import pytest

from transports.loopback import free_port

pytestmark = [pytest.mark.slow, pytest.mark.network]


@contextlib.contextmanager
def external_server(kind: str, listen: str, tmp_path):
    """`python -m harness.server` started by hand, as on a GPU box; SIGTERM at the end
    (its exit status is then in `returncode`)."""
    server = subprocess.Popen([sys.executable, "-m", "harness.server", f"transport={kind}",
                               f"transport.listen={listen}", f"hydra.run.dir={tmp_path}/server"],
                              cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    try:
        for line in server.stdout:
            if line.startswith("READY"):
                break
        yield server
    finally:
        server.terminate()
        server.wait(timeout=20)


def harness(*overrides: str, cwd, module: str = "harness", **kwargs):
    return subprocess.run([sys.executable, "-m", module, *overrides], cwd=cwd,
                          capture_output=True, text=True, timeout=300, **kwargs)


def test_loop_over_zmq_with_server_process_writes_every_result(tmp_path):
    run_dir = tmp_path / "run"
    endpoint = f"transport.listen=tcp://127.0.0.1:{free_port()}"
    result = harness("transport=zmq", endpoint, "env.episodes_per_task=3",
                     f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["episodes"] == 3 and summary["successes"] == 3
    assert summary["invariant_breaches"] == 0 and summary["dead_episodes"] == 0
    assert summary["requests_lost"] == 0 and summary["server_errors"] == 0
    assert summary["sessions_reopened"] == 0 and summary["overruns"] == 0  # virtual clock
    assert 0 < summary["latency_p50_s"] < summary["latency_budget_s"]
    rows = pd.read_csv(run_dir / "episodes.csv")
    assert list(rows["episode"]) == [1, 2, 3] and set(rows["transport"]) == {"zmq"}
    assert (rows["chunks_received"] > 0).all() and (rows["requests_lost"] == 0).all()
    assert (rows["chunks_received"] <= rows["requests_sent"]).all()
    assert (rows["sessions_reopened"] == 0).all() and (rows["server_errors"] == 0).all()
    ticks = rows.filter(like="ticks_").sum(axis=1)
    assert (ticks == rows["steps"]).all()  # every tick is in exactly one state
    assert (rows.filter(like="time_").sum(axis=1).round(6) == (ticks * 0.05).round(6)).all()
    trace = pd.read_parquet(run_dir / "traces" / "task000-ep0001.parquet")
    assert trace["tick"].tolist() == list(range(len(trace)))
    assert set(trace["source"]) <= {"fresh", "queued", "fallback"}
    assert (run_dir / "server-task0" / "server.log").is_file()

    # Same command, same directory: the finished episodes are skipped, not rerun.
    again = harness("transport=zmq", endpoint, "env.episodes_per_task=3",
                    f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert again.returncode == 0
    assert "all 3 episodes already in" in again.stdout + again.stderr
    assert f"results in {run_dir}; report: python -m reports {run_dir}" in (
        again.stdout + again.stderr)


def test_external_server_is_used_as_is(tmp_path):
    port = free_port()
    with external_server("zenoh", f"tcp/127.0.0.1:{port}", tmp_path) as server:
        # The robot side names only where it dials; its own listen address stays unused.
        result = harness("transport=zenoh", f"transport.connect=tcp/127.0.0.1:{port}",
                         "server=external",
                         "env.episodes_per_task=2", f"hydra.run.dir={tmp_path}/run",
                         cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        summary = json.loads((tmp_path / "run" / "summary.json").read_text())
        assert summary["successes"] == 2
        assert server.poll() is None  # the harness did not own, so did not stop, it
    assert server.returncode == 0  # SIGTERM drains and exits cleanly


def test_a_run_resumes_only_into_a_directory_of_the_same_config(tmp_path):
    run_dir = tmp_path / "run"
    port = f"transport.listen=tcp://127.0.0.1:{free_port()}"
    first = harness("transport=zmq", port, "env.episodes_per_task=2",
                    f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    (run_dir / "traces" / "tmpk1ll3d.tmp").write_bytes(b"")  # what a kill left, once
    (run_dir / "episodes" / ".task000-ep0009.json.x1y2").write_bytes(b"{")
    other = harness("transport=zmq", port, "env.episodes_per_task=3", f"resume={run_dir}",
                    cwd=tmp_path)
    assert other.returncode == 2
    assert "env.episodes_per_task was 2, is now 3" in other.stdout + other.stderr
    same = harness("transport=zmq", port, "env.episodes_per_task=2", f"resume={run_dir}",
                   f"hydra.run.dir={tmp_path}/second", cwd=tmp_path)
    assert same.returncode == 0, same.stderr[-2000:]
    assert "all 2 episodes already in" in same.stdout + same.stderr
    assert sorted(p.name for p in (run_dir / "traces").iterdir()) == [
        "task000-ep0001.parquet", "task000-ep0002.parquet"]
    assert not list((run_dir / "episodes").glob(".*"))
    row = json.loads((run_dir / "episodes" / "task000-ep0001.json").read_text())
    assert row["events"] == []  # the episode's events travel in its (atomic) row
    for missing, why in ((tmp_path / "typo", "no such directory"),
                         (tmp_path, "not a run directory (no config.json in it)")):
        refused = harness("transport=zmq", port, f"resume={missing}", cwd=tmp_path)
        assert refused.returncode == 2 and why in refused.stdout + refused.stderr
    assert not (tmp_path / "typo").exists()


def test_external_server_absent_fails_in_one_line_naming_where_it_looked(tmp_path):
    connect = f"tcp://127.0.0.1:{free_port()}"
    result = harness("transport=zmq", f"transport.connect={connect}", "server=external",
                     "server.startup_timeout_s=6", f"hydra.run.dir={tmp_path}/run",
                     cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert f"waiting up to 6 s for the policy server (zmq at {connect})" in output
    assert f"still no policy server over zmq at {connect} after 5 s" in output  # not silent
    assert f"no policy server answered over zmq at {connect} within 6 s" in output
    assert "Traceback" not in output


def test_a_run_whose_sessions_are_all_rejected_exits_non_zero_with_the_reason(tmp_path):
    port = free_port()
    with external_server("zmq", f"tcp://127.0.0.1:{port}", tmp_path):
        result = harness("transport=zmq", f"transport.connect=tcp://127.0.0.1:{port}",
                         "server=external", "policy.chunk_size=4", "env.episodes_per_task=3",
                         f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert result.returncode == 1
    assert ("the policy server rejected the session in 3 of 3 episodes: session rejected: "
            "contract mismatch: chunk_size: client expects 4, policy returns 8") in (
                result.stdout + result.stderr)
    events = [json.loads(line) for line in open(tmp_path / "run" / "events.jsonl")]
    assert [e["episode"] for e in events if "dead" in e] == [1, 2, 3]


def test_a_listen_port_in_use_exits_2_in_one_line_naming_the_setting(tmp_path):
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = harness("transport=zmq", f"transport.listen=tcp://127.0.0.1:{port}",
                         f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-2000:]
    assert (f"transport.listen=tcp://127.0.0.1:{port}: address already in use" in output
            and "choose another port, e.g. transport.listen=tcp://127.0.0.1:" in output)
    assert "Traceback" not in output and not (tmp_path / "run" / "episodes").exists()
