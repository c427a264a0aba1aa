"""Results of a run, written into its Hydra run directory so that nothing is lost.

    config.json        the resolved config; a resumed run must match it
    episodes/          one JSON row per finished episode, written atomically when it ends
    traces/            one parquet per-step trace per episode (tick, source, age, state, ...)
    events.jsonl       fail-safe events (breaches, errors, DEAD, fault starts and ends, each
                       fault window's detection and recovery), rebuilt from the rows
    episodes.csv       all rows, rebuilt at the end of the run
    summary.json       success rate with Wilson 95% interval, latency percentiles against
                       the budget, invariant breaches, fail-safe metrics
                       (`harness.results.failsafe`)

A killed run keeps every finished episode: its row, written last and atomically, holds its
events too, so a kill never leaves an episode half recorded. Half-written temporary files of
a killed run are removed when the store opens the directory again, and re-running in the
same directory (`resume=<dir>`) skips the finished episodes (`ResultsStore.done`).
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from harness.results.failsafe import summarize_failsafe, trace_failsafe
from harness.results.joins import chunk_join_columns, summarize_joins
from harness.results.stats import wilson_interval
from harness.results.trace import EpisodeTrace

SERVER_ERRORS_PREFIX = "server_errors_"
"""Columns `server_errors_<code>`: a row's ERROR replies of one `Error.code`."""
_CODE = re.compile(r"[a-z][a-z0-9_]{0,31}")


def server_error_columns(error_replies: dict[str, int]) -> dict[str, int]:
    """A row's count of ERROR replies: `server_errors`, every one the robot received from
    the server on the stream (each once, when it arrived: `EngineStats.error_replies`), and
    `server_errors_<code>` per code ("inference", "session", ...). The same replies the
    server counts when it sends them (`policy_error_replies`, `harness.server.metrics`), so a
    run's totals and the server's agree. A code that is no plain lower-case name (only a
    foreign server would send one) is counted as `other`, so a reply never names a column."""
    columns = {"server_errors": sum(error_replies.values())}
    for code, count in sorted(error_replies.items()):
        column = SERVER_ERRORS_PREFIX + (code if _CODE.fullmatch(code) else "other")
        columns[column] = columns.get(column, 0) + count
    return columns


class ConfigMismatch(ValueError):
    """A run directory holds results of a different config than the one resuming it."""


def _flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists and scalars are leaves."""
    flat: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _percentiles(name: str, values) -> dict[str, float | None]:
    """p50/p95/p99 of `values` in seconds, as `<name>_p50_s`, ...; None when there are none."""
    return {f"{name}_p{q}_s": float(np.percentile(values, q)) if len(values) else None
            for q in (50, 95, 99)}


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
    def __init__(self, run_dir: Path, *, clean: bool = True) -> None:
        """`clean`: remove the temporary files a kill inside a write left; False for a
        writer beside others (a robot process), whose temporary files are in flight."""
        self.run_dir = Path(run_dir)
        for folder in ("episodes", "traces"):
            (self.run_dir / folder).mkdir(parents=True, exist_ok=True)
            for pattern in (".*.*", "*.tmp") if clean else ():  # left by a kill in a write
                for stale in (self.run_dir / folder).glob(pattern):
                    stale.unlink(missing_ok=True)

    def bind_config(self, config: dict) -> None:
        """Record the run's resolved config in `config.json`, or, if the directory already
        holds one, check that it is the same config.

        Raises:
            ConfigMismatch: naming the first key (dotted) whose value differs.
        """
        path = self.run_dir / "config.json"
        if not path.is_file():
            _atomic_write(path, json.dumps(config, indent=2, sort_keys=True).encode())
            return
        recorded, current = _flatten(json.loads(path.read_text())), _flatten(config)
        for key in sorted(recorded.keys() | current.keys()):
            if recorded.get(key, "<absent>") != current.get(key, "<absent>"):
                raise ConfigMismatch(
                    f"{self.run_dir} holds a run of another config: {key} was "
                    f"{recorded.get(key, '<absent>')!r}, is now {current.get(key, '<absent>')!r}")

    def record_overrides(self, overrides: list[str]) -> None:
        """Write the job's command-line overrides (`overrides.json`): the columns a sweep's
        report tells its configs apart by, kept with the results they produced."""
        _atomic_write(self.run_dir / "overrides.json", json.dumps(list(overrides)).encode())

    @staticmethod
    def key(task: int, episode: int) -> str:
        return f"task{task:03d}-ep{episode:04d}"

    def done(self, task: int, episode: int) -> bool:
        return (self.run_dir / "episodes" / f"{self.key(task, episode)}.json").is_file()

    def write_episode(self, *, task: int, seed: int, init_state: int | None,
                      trace: EpisodeTrace, extra: dict | None = None,
                      events: list[dict] | None = None) -> dict:
        """Write the episode's trace, then its row with its events (the row's presence
        marks it done); each file atomically. `events` are the episode's own (fault starts
        and ends, DEAD); its fail-safe metrics (`harness.results.failsafe`) are computed from
        them and the trace: columns of the row, and one `failsafe` event per fault window."""
        key = self.key(task, trace.episode)
        buffer = io.BytesIO()
        pd.DataFrame([t.__dict__ for t in trace.ticks]).to_parquet(buffer, index=False)
        _atomic_write(self.run_dir / "traces" / f"{key}.parquet", buffer.getvalue())
        latencies = [t.latency_s for t in trace.ticks if t.latency_s is not None]
        failsafe = trace_failsafe(trace, events or [])
        states = pd.Series([t.state for t in trace.ticks]).value_counts()
        row = {
            "task": task, "episode": trace.episode, "seed": seed, "init_state": init_state,
            "success": trace.success, "steps": trace.steps, "termination": trace.termination,
            "fallback_ticks": int(sum(t.source == "fallback" for t in trace.ticks)),
            "wait_ticks": int(sum(t.source == "wait" for t in trace.ticks)),
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
            **server_error_columns(trace.wire.error_replies),
            "client_errors": trace.wire.client_errors,
            "chunks_rejected": trace.wire.rejected, "chunks_clipped": trace.wire.clipped,
            "replies_forged": trace.wire.forged,
            "actions_trimmed": trace.wire.trimmed, "execution": trace.wire.execution,
            "reset_wait_s": round(trace.wire.reset_wait_s, 6),
            **failsafe.columns(),
            **chunk_join_columns(trace.ticks),
            **(extra or {}),
        }
        where = {"task": task, "episode": trace.episode}
        row["events"] = ([{**where, "breach": breach} for breach in trace.breaches]
                         + [{**where, "error": error} for error in trace.wire.errors]
                         + [{**where, **event} for event in events or []]
                         + [{**where, **event} for event in failsafe.events()])
        _atomic_write(self.run_dir / "episodes" / f"{key}.json",
                      json.dumps(row, sort_keys=True).encode())
        return row

    def rows(self) -> pd.DataFrame:
        paths = sorted((self.run_dir / "episodes").glob("*.json"))
        return pd.DataFrame([json.loads(p.read_text()) for p in paths])

    def summarize(self, *, latency_budget_s: float, clock_latency: str = "measured") -> dict:
        """Aggregate every finished episode into episodes.csv, events.jsonl and summary.json.
        `clock_latency` names the latency the clock used (`latency.kind`)."""
        rows = self.rows()
        listed_events = [listed if isinstance(listed, list) else []  # rows of older runs: none
                         for listed in rows.get("events", [])]
        events = [event for listed in listed_events for event in listed]
        _atomic_write(self.run_dir / "events.jsonl",
                      "".join(json.dumps(e, sort_keys=True) + "\n" for e in events).encode())
        rows.drop(columns=["events"], errors="ignore").to_csv(self.run_dir / "episodes.csv",
                                                              index=False)
        traces = [pd.read_parquet(p) for p in sorted((self.run_dir / "traces").glob("*.parquet"))]
        latencies = pd.concat([t["latency_s"] for t in traces]).dropna() if traces else []
        measured = pd.concat([t["measured_latency_s"] for t in traces
                              if "measured_latency_s" in t]).dropna() if traces else []
        successes, n = int(rows["success"].sum()), len(rows)

        def total(column: str) -> int:  # rows written before a column existed count as 0
            return int(rows[column].fillna(0).sum()) if column in rows else 0

        low, high = wilson_interval(successes, n)
        summary = {
            "episodes": n, "successes": successes,
            "success_rate": successes / n if n else None, "success_wilson95": [low, high],
            "latency_budget_s": latency_budget_s,
            "clock_latency": str(clock_latency),
            **_percentiles("latency", latencies),
            **_percentiles("measured_latency", measured),
            "latency_over_budget": int((np.asarray(latencies) > latency_budget_s).sum()),
            "invariant_breaches": int(rows["breaches"].sum()),
            "dead_episodes": int((rows["termination"] == "dead").sum()),
            "fallback_ticks": total("fallback_ticks"),
            "wait_ticks": total("wait_ticks"),
            "paced_ticks": total("paced_ticks"),
            "overruns": total("overruns"),
            "requests_lost": total("requests_lost"),
            "sessions_reopened": total("sessions_reopened"),
            "server_errors": total("server_errors"),
            **{column: total(column) for column in sorted(rows.columns)
               if column.startswith(SERVER_ERRORS_PREFIX)},
            "client_errors": total("client_errors"),
            "chunks_received": total("chunks_received"),
            "chunks_rejected": total("chunks_rejected"),
            "chunks_clipped": total("chunks_clipped"),
            "replies_forged": total("replies_forged"),
            "actions_trimmed": total("actions_trimmed"),
            "execution": sorted({str(e) for e in rows["execution"].dropna() if e})
            if "execution" in rows else [],
            "steps_median": float(rows["steps"].median()) if n else None,
            "steps_median_success": float(rows.loc[rows["success"], "steps"].median())
            if successes else None,
            **summarize_joins(rows),
            "reset_wait_max_s": float(rows["reset_wait_s"].max()) if "reset_wait_s" in rows
            else None,
            "rejected_episodes": sum(any("session rejected" in e.get("dead", "") for e in listed)
                                     for listed in listed_events),
            "first_dead_reason": next((e["dead"] for e in events if e.get("dead")), None),
            "faults_started": total("faults_started"),
            "fault_mechanisms": sorted({e["mechanism"] for e in events if "mechanism" in e
                                        and e.get("phase") != "ready"}),
            **summarize_failsafe(rows, events),
        }
        _atomic_write(self.run_dir / "summary.json", json.dumps(summary, indent=2).encode())
        return summary
