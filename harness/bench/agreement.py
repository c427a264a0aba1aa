"""Emulated against modelled: does applying a fault schedule to the latency model predict
what the same schedule does on real traffic?

For each preset: a clean run measures the link's own round trip (p50), then the preset runs
emulated (the fault proxy, measured latency) and modelled (`faults.apply=modelled` on a fixed
latency equal to that p50), each over `--episodes` episodes of the same seeds. Success rates
and the share of fallback ticks are compared with their Wilson 95% intervals: they agree when
the intervals overlap. Where they do not, the difference is what the model leaves out (a
session lost to a reconnect, a lease, TCP backoff; see `harness.faults.modelled`).

    python -m harness.bench.agreement --presets wan_50ms,partition_3s --episodes 50
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from harness.bench.sweep import run_harness
from harness.results.stats import wilson_interval
from transports.loopback import free_port, loopback_address

log = logging.getLogger(__name__)


def run_with_ticks(run_dir: Path, overrides: list[str]) -> dict:
    """One `python -m harness` run's summary, with the total of its episodes' ticks."""
    summary = run_harness(run_dir, overrides)
    summary["ticks"] = int(pd.read_csv(run_dir / "episodes.csv")["steps"].sum())
    return summary


def compare(preset: str, *, episodes: int, transport: str, env: str, work: Path) -> list[dict]:
    def overrides(*extra: str) -> list[str]:
        return [f"transport={transport}",
                f"transport.listen={loopback_address(transport, free_port())}", f"env={env}",
                f"env.episodes_per_task={episodes}", *extra]

    clean = run_with_ticks(work / f"{preset}-clean", overrides("faults=none",
                                                             "env.episodes_per_task=10"))
    base_s = clean["measured_latency_p50_s"]
    runs = {
        "emulated": run_with_ticks(work / f"{preset}-emulated", overrides(f"faults={preset}")),
        "modelled": run_with_ticks(work / f"{preset}-modelled", overrides(
            f"faults={preset}", "faults.apply=modelled", "latency.kind=fixed",
            f"latency.value_s={base_s:.6f}")),
    }
    rows = []
    for apply, summary in runs.items():
        fallback, ticks = summary["fallback_ticks"], summary["ticks"]
        rows.append({"preset": preset, "apply": apply, "episodes": summary["episodes"],
                     "success": summary["success_rate"],
                     "success_wilson95": summary["success_wilson95"],
                     "fallback_share": fallback / ticks,
                     "fallback_wilson95": list(wilson_interval(fallback, ticks)),
                     "base_latency_ms": base_s * 1e3,
                     "latency_p50_ms": (summary["latency_p50_s"] or 0) * 1e3,
                     "dead": summary["dead_episodes"]})
    return rows


def overlaps(a: list[float], b: list[float]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.bench.agreement",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="wan_50ms,partition_3s")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--transport", default="zmq")
    parser.add_argument("--env", default="mujoco_pick_place")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="agreement-") as work:
        rows = [row for preset in args.presets.split(",")
                for row in compare(preset, episodes=args.episodes, transport=args.transport,
                                   env=args.env, work=Path(work))]
    table = Table(title=f"emulated vs modelled, {args.env} over {args.transport}")
    for column in ("preset", "apply", "episodes", "success (Wilson 95%)",
                   "fallback share (Wilson 95%)", "latency p50 ms", "dead", "agree"):
        table.add_column(column, justify="right")
    for emulated, modelled in zip(rows[::2], rows[1::2], strict=True):
        agree = (overlaps(emulated["success_wilson95"], modelled["success_wilson95"])
                 and overlaps(emulated["fallback_wilson95"], modelled["fallback_wilson95"]))
        for row in (emulated, modelled):
            low, high = row["success_wilson95"]
            flow, fhigh = row["fallback_wilson95"]
            table.add_row(row["preset"], row["apply"], str(row["episodes"]),
                          f"{row['success']:.0%} ({low:.0%}-{high:.0%})",
                          f"{row['fallback_share']:.1%} ({flow:.1%}-{fhigh:.1%})",
                          f"{row['latency_p50_ms']:.1f}", str(row["dead"]),
                          "yes" if agree else "NO")
    Console().print(table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
