"""Shared by the fault tests: one faulted run of `python -m harness` over zmq."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from transports.loopback import free_port


def run_faulted(tmp_path: Path, fault: str, episodes: int = 2) -> tuple[Path, dict]:
    """Run `episodes` mujoco_pick_place episodes over zmq under `faults=<fault>`; assert it
    exited 0 and return its run directory and summary."""
    run = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "harness", "transport=zmq",
         f"transport.listen=tcp://127.0.0.1:{free_port()}", f"faults={fault}",
         f"env.episodes_per_task={episodes}", f"hydra.run.dir={run}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-2000:]
    return run, json.loads((run / "summary.json").read_text())
