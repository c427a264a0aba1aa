"""The chaos suite: every transport against every kind of outage, on real servers and real
traffic, through `python -m harness`; and the harness itself killed mid-run.

Each run is one mujoco_pick_place episode with the fault 1 s in. What must hold: zero
invariant breaches, no DEAD, the engine leaves STREAMING during the fault and comes back to
it within RECOVERY_BOUND_S of control time after the fault ends, through the states the
fault implies, and the episode's record is complete (row, trace, both fault events).

    pytest -m chaos
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import wait_until
from tests.faults.conftest import events_of, run_faulted
from transports.loopback import free_port

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.network]

RECOVERY_BOUND_S = 2.0
"""Control time from the end of a fault (for a crash or a drain: from the restarted server
serving again) to the next fresh chunk. Measured on this 2-core machine: at most 1.05 s,
idle or under a load of ~5 (grpc after a drain: its reconnect backoff, up to
max_backoff_ms=1000, then the re-open); the bound leaves that backoff once more as margin.
A server's own restart time (0.8 to 4 s here, load-dependent) is reported apart
(`restart_s`), not bounded: it is the server's start-up, not the client's recovery. The
The chaos table of docs/faults.md gives the values."""

MAX_OFFLINE_S = 10.0
"""The client's `max_offline_s` in these runs: a 2 s outage plus a restart of up to 2.3 s
plus a reconnect backoff can exceed the default 5 s on this machine, and the suite asks
whether the robot recovers, not where the DEAD line is (tests/loop/ test that)."""

DT = 0.05
"""mujoco_pick_place's control period (20 Hz)."""

EXPECTED_STATE = {
    "server_crash": {"reconnecting"},  # the server is gone and comes back with no session
    "server_drain": {"reconnecting"},
    "server_stall": {"stalled", "reconnecting"},  # silent: heartbeats or the lease notice
    "partition_3s": {"stalled", "reconnecting"},  # through the proxy: hold and release
    "partition_3s+kernel": {"stalled", "reconnecting"},  # a veth cut: TCP retransmits
    "corrupt": {"stalled", "degraded"},  # the server is up; messages fail to decode
    "router_crash+router": {"stalled", "reconnecting"},  # robot and server lose the router
    "router_stall+router": {"stalled", "reconnecting"},
}
"""Per fault: the states at least one of which the engine must pass through. `+router`: over
a supervised Zenoh router with mTLS and its ACL (`transport.router=auto`, zenoh only)."""

CASES = [(transport, fault) for transport in ("zenoh", "grpc", "zmq")
         for fault in EXPECTED_STATE if not fault.endswith("+router")] + [
    ("zenoh", fault) for fault in EXPECTED_STATE if fault.endswith("+router")]


def collapsed(states: list[str]) -> list[str]:
    """The state path: consecutive repeats removed."""
    return [s for i, s in enumerate(states) if i == 0 or s != states[i - 1]]


@pytest.mark.parametrize(("transport", "fault"), CASES)
def test_an_outage_mid_episode_is_survived_on_every_transport(tmp_path, transport, fault,
                                                             record_property):
    preset, _, path = fault.partition("+")
    if path == "router":
        from harness.certs import make_all

        make_all(tmp_path / "keys", 1)
    extra = (f"client.max_offline_s={MAX_OFFLINE_S}",  # the server keeps the session longer
             f"server.session_idle_timeout_s={2 * MAX_OFFLINE_S}",
             *(("faults.network=kernel",) if path == "kernel" else ()),
             *(("transport.router=auto", "security=mtls", f"security.dir={tmp_path / 'keys'}")
               if path == "router" else ()))
    run, summary = run_faulted(tmp_path, preset, episodes=1, transport=transport, extra=extra)
    assert summary["episodes"] == 1 and summary["dead_episodes"] == 0
    assert summary["invariant_breaches"] == 0
    row = json.loads(next((run / "episodes").glob("*.json")).read_text())
    trace = pd.read_parquet(next((run / "traces").glob("*.parquet")))
    assert len(trace) == row["steps"] and list(trace["tick"]) == list(range(row["steps"]))
    faults = [e for e in events_of(run) if "fault" in e]
    restarts = preset in ("server_crash", "server_drain", "router_crash")
    assert [e["phase"] for e in faults] == ["start", "end"] + (["ready"] if restarts else [])
    start, end = faults[0]["tick"], faults[1]["tick"]
    back = faults[2]["tick"] if restarts else end  # the server serves again

    states = list(trace["state"])
    assert states[start - 1] == "streaming"
    during = set(states[start:end + 1])
    assert during & EXPECTED_STATE[fault], collapsed(states)
    assert "dead" not in states
    recovered = next(t for t in range(end, len(trace))
                     if states[t] == "streaming" and trace["source"][t] != "fallback")
    recovery_s = (recovered - back) * DT
    record_property("recovery_s", recovery_s)  # pytest --junitxml collects them
    record_property("restart_s", (back - end) * DT)
    record_property("state_path", "->".join(collapsed(states)))
    assert recovery_s <= RECOVERY_BOUND_S, (transport, fault, recovery_s, collapsed(states))
    if fault in ("server_crash", "server_drain"):
        assert row["sessions_reopened"] >= 1
    if preset == "partition_3s":  # 3 s without a fresh chunk: no chunk gets through a cut
        fresh = [t for t in range(len(trace)) if trace["source"][t] == "fresh"]
        gap = max(b - a for a, b in zip(fresh, fresh[1:], strict=False))
        assert gap * DT >= 3.0, fresh


def _harness_children(run: Path) -> list[int]:
    """Pids of server processes started for `run` (their command line names it)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "harness.server" in cmdline and str(run) in cmdline:
                pids.append(int(entry.name))
    return pids


def test_the_harness_killed_mid_run_then_run_again_loses_and_duplicates_nothing(tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "harness", "transport=zmq",
               f"transport.listen=tcp://127.0.0.1:{free_port()}", "env.episodes_per_task=16",
               f"hydra.run.dir={run}"]
    harness = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: len(list((run / "episodes").glob("*.json"))) >= 4
                   if (run / "episodes").is_dir() else False, 120.0, "4 episodes written")
        children = _harness_children(run)
        assert children, "the harness's server was not found"
        os.kill(harness.pid, signal.SIGKILL)
        harness.wait(10)
    finally:
        if harness.poll() is None:
            harness.kill()
    wait_until(lambda: not _harness_children(run), 10.0, "the orphaned server gone")
    written = {p.name for p in (run / "episodes").glob("*.json")}
    assert 4 <= len(written) < 16
    half_written = [p for d in ("episodes", "traces") for p in (run / d).glob(".*")]
    assert not half_written, half_written  # _atomic_write's temporaries start with "."

    started = time.monotonic()
    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, (again.stdout + again.stderr)[-2000:]
    assert time.monotonic() - started < 120
    rows = [json.loads(p.read_text()) for p in sorted((run / "episodes").glob("*.json"))]
    assert sorted(r["episode"] for r in rows) == list(range(1, 17))  # none lost, none twice
    assert len(list((run / "traces").glob("*.parquet"))) == 16
    assert json.loads((run / "summary.json").read_text())["episodes"] == 16
    assert {p.name for p in (run / "episodes").glob("*.json")} >= written  # kept as written
    assert not _harness_children(run)
