"""The commands of examples/README.md, run as a newcomer would (fewer episodes): a policy of
one's own in-process, then in a server process over zmq under emulated Wi-Fi faults."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
POLICY = ["env=mujoco_reach", "policy=custom", "policy.target=examples.reach_policy:ReachPolicy"]

pytestmark = pytest.mark.slow


def run_harness(*overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *overrides], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_the_example_policy_evaluates_in_process(tmp_path):
    result = run_harness(*POLICY, "job=evaluate", "+policy.args.gain=0.7",
                         "env.episodes_per_task=4", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = (tmp_path / "episodes.csv").read_text().splitlines()
    assert len(rows) == 5 and all(",True," in row for row in rows[1:])


@pytest.mark.network
def test_the_example_policy_is_served_by_a_server_process_under_faults(tmp_path):
    from transports.loopback import free_port

    result = run_harness(*POLICY, "transport=zmq", "faults=wifi_lossy",
                         f"transport.listen=tcp://127.0.0.1:{free_port()}",
                         "env.episodes_per_task=3", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["episodes"] == 3 and summary["chunks_received"] > 0
    assert summary["faults_started"] > 0
    assert summary["success_rate"] >= 2 / 3
