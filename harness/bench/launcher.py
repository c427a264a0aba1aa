"""The same sweep with the joblib launcher at 1 and at N workers: what parallel jobs buy.

    python -m harness.bench.launcher                      # 12 configs, 1 vs 2 workers
    python -m harness.bench.launcher --workers 1 2 --episodes 20 --out bench-launcher.csv

A sweep's jobs each run a harness (env, engine) and a policy server process; on a 2-core
machine two jobs at once compete for the cores with each other's servers, so the speed-up
is measured, not assumed. Each run is a fresh multirun into its own directory (nothing to
skip), the wall time from the command's start to its exit, the same 12 configs each time:
transport (zenoh, grpc, zmq) x client (synchronous, async_newest, async_exponential,
delay_aware) on mujoco_pick_place.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.table import Table

from harness.console import make_console

log = logging.getLogger(__name__)
SWEEP = ("transport=zenoh,grpc,zmq",
         "client=synchronous,async_newest,async_exponential,delay_aware")


def run_sweep(workers: int, *, episodes: int, sweep_dir: Path, timeout_s: float) -> dict:
    """One multirun of `SWEEP` at `workers` joblib workers: its wall time, exit status and
    the episodes its jobs wrote."""
    command = [sys.executable, "-m", "harness", "-m", *SWEEP, "env=mujoco_pick_place",
               f"env.episodes_per_task={episodes}", f"hydra.launcher.n_jobs={workers}",
               f"hydra.sweep.dir={sweep_dir}"]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    wall_s = time.monotonic() - started
    if result.returncode != 0:
        log.error("the sweep at %d workers failed (exit %d): %s", workers, result.returncode,
                  result.stderr[-2000:])
    summaries = [json.loads(p.read_text()) for p in sweep_dir.glob("*/summary.json")]
    return {"workers": workers, "wall_s": round(wall_s, 2), "exit_status": result.returncode,
            "configs": len(summaries), "episodes": sum(s["episodes"] for s in summaries),
            "successes": sum(s["successes"] for s in summaries)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="joblib worker counts to compare; the first is the baseline")
    parser.add_argument("--episodes", type=int, default=20, help="episodes per config")
    parser.add_argument("--timeout-s", type=float, default=1800.0, help="per sweep")
    parser.add_argument("--out", type=Path, default=Path("bench-launcher.csv"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if any(w < 1 for w in args.workers) or args.episodes < 1:
        parser.error("--workers and --episodes must be >= 1")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-launcher-") as tmp:
        for workers in args.workers:
            log.info("sweep of 12 configs x %d episodes at %d worker(s)", args.episodes, workers)
            rows.append(run_sweep(workers, episodes=args.episodes,
                                  sweep_dir=Path(tmp) / f"workers{workers}",
                                  timeout_s=args.timeout_s))
    baseline = rows[0]["wall_s"]
    for row in rows:
        row["speedup"] = round(baseline / row["wall_s"], 2)
    table = Table(title="12-config sweep, joblib launcher (mujoco_pick_place)")
    for column in rows[0]:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    make_console().print(table)
    with open(args.out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    log.info("wrote %s", args.out)
    if any(row["exit_status"] != 0 for row in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
