"""Shared by the fault tests: one faulted run of `python -m harness`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from transports.loopback import free_port, loopback_address


def run_faulted(tmp_path: Path, fault: str, episodes: int = 2, *, transport: str = "zmq",
                extra: tuple[str, ...] = ()) -> tuple[Path, dict]:
    """Run `episodes` mujoco_pick_place episodes over `transport` under `faults=<fault>`;
    assert it exited 0 and return its run directory and summary."""
    run = tmp_path / f"run-{transport}-{fault}"
    result = subprocess.run(
        [sys.executable, "-m", "harness", f"transport={transport}",
         f"transport.listen={loopback_address(transport, free_port())}", f"faults={fault}",
         f"env.episodes_per_task={episodes}", f"hydra.run.dir={run}", *extra],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return run, json.loads((run / "summary.json").read_text())


def events_of(run: Path) -> list[dict]:
    with open(run / "events.jsonl") as lines:
        return [json.loads(line) for line in lines]
