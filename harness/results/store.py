"""Results of a run, written into its Hydra run directory so that nothing is lost.

    config.yaml        the resolved config (Hydra writes it under .hydra/ too)
    episodes/          one JSON row per finished episode, written atomically when it ends
    traces/            one parquet per-step trace per episode (tick, source, age, state, ...)
    events.jsonl       fail-safe events (state changes, breaches), appended as they happen
    episodes.csv       all rows, rebuilt at the end of the run
    summary.json       success rate with Wilson 95% interval, latency percentiles against
                       the budget, invariant breaches

A killed run keeps every finished episode; re-running the same command in the same directory
skips them (`ResultsStore.done`).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from harness.loop.runner import EpisodeTrace
from harness.results.stats import wilson_interval


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ResultsStore:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        (self.run_dir / "episodes").mkdir(parents=True, exist_ok=True)
        (self.run_dir / "traces").mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(task: int, episode: int) -> str:
        return f"task{task:03d}-ep{episode:04d}"

    def done(self, task: int, episode: int) -> bool:
        return (self.run_dir / "episodes" / f"{self.key(task, episode)}.json").is_file()

    def write_episode(self, *, task: int, seed: int, init_state: int | None,
                      trace: EpisodeTrace, extra: dict | None = None) -> dict:
        """Write the episode's trace, then its row (the row's presence marks it done)."""
        key = self.key(task, trace.episode)
        ticks = pd.DataFrame([t.__dict__ for t in trace.ticks])
        trace_path = self.run_dir / "traces" / f"{key}.parquet"
        with tempfile.NamedTemporaryFile(dir=trace_path.parent, suffix=".tmp",
                                         delete=False) as tmp:
            ticks.to_parquet(tmp.name, index=False)
        os.replace(tmp.name, trace_path)
        latencies = [t.latency_s for t in trace.ticks if t.latency_s is not None]
        states = pd.Series([t.state for t in trace.ticks]).value_counts()
        row = {
            "task": task, "episode": trace.episode, "seed": seed, "init_state": init_state,
            "success": trace.success, "steps": trace.steps, "termination": trace.termination,
            "fallback_ticks": int(sum(t.source == "fallback" for t in trace.ticks)),
            "paced_ticks": int(sum(t.paced for t in trace.ticks)),
            "latency_p50_s": float(np.percentile(latencies, 50)) if latencies else None,
            "latency_p95_s": float(np.percentile(latencies, 95)) if latencies else None,
            "latency_p99_s": float(np.percentile(latencies, 99)) if latencies else None,
            "breaches": len(trace.breaches), "overruns": trace.overruns,
            **{f"ticks_{state}": int(count) for state, count in states.items()},
            **{f"time_{state}_s": round(int(count) * trace.dt, 6)
               for state, count in states.items()},
            "requests_sent": trace.wire.sent, "chunks_received": trace.wire.chunks,
            "requests_lost": trace.wire.lost, "sessions_reopened": trace.wire.reopened,
            "server_errors": len(trace.wire.errors),
            **(extra or {}),
        }
        _atomic_write(self.run_dir / "episodes" / f"{key}.json",
                      json.dumps(row, sort_keys=True).encode())
        for breach in trace.breaches:
            self.log_event({"task": task, "episode": trace.episode, "breach": breach})
        for error in trace.wire.errors:
            self.log_event({"task": task, "episode": trace.episode, "error": error})
        return row

    def log_event(self, event: dict) -> None:
        with open(self.run_dir / "events.jsonl", "a") as f:
            f.write(json.dumps(event, sort_keys=True) + "\n")

    def rows(self) -> pd.DataFrame:
        paths = sorted((self.run_dir / "episodes").glob("*.json"))
        return pd.DataFrame([json.loads(p.read_text()) for p in paths])

    def summarize(self, *, latency_budget_s: float) -> dict:
        """Aggregate every finished episode into episodes.csv and summary.json."""
        rows = self.rows()
        rows.to_csv(self.run_dir / "episodes.csv", index=False)
        traces = [pd.read_parquet(p) for p in sorted((self.run_dir / "traces").glob("*.parquet"))]
        latencies = pd.concat([t["latency_s"] for t in traces]).dropna() if traces else []
        successes, n = int(rows["success"].sum()), len(rows)

        def total(column: str) -> int:  # rows written before a column existed count as 0
            return int(rows[column].fillna(0).sum()) if column in rows else 0

        low, high = wilson_interval(successes, n)
        summary = {
            "episodes": n, "successes": successes,
            "success_rate": successes / n if n else None, "success_wilson95": [low, high],
            "latency_budget_s": latency_budget_s,
            "latency_p50_s": float(np.percentile(latencies, 50)) if len(latencies) else None,
            "latency_p95_s": float(np.percentile(latencies, 95)) if len(latencies) else None,
            "latency_p99_s": float(np.percentile(latencies, 99)) if len(latencies) else None,
            "latency_over_budget": int((np.asarray(latencies) > latency_budget_s).sum()),
            "invariant_breaches": int(rows["breaches"].sum()),
            "dead_episodes": int((rows["termination"] == "dead").sum()),
            "fallback_ticks": total("fallback_ticks"),
            "paced_ticks": total("paced_ticks"),
            "overruns": total("overruns"),
            "requests_lost": total("requests_lost"),
            "sessions_reopened": total("sessions_reopened"),
            "server_errors": total("server_errors"),
        }
        _atomic_write(self.run_dir / "summary.json", json.dumps(summary, indent=2).encode())
        return summary
