"""A config's episodes: the rows of all its jobs (its shards) merged, each (task, episode)
once, and the episodes its config says it should have.

An episode row is the harness's `episodes/taskNNN-epNNNN.json` (`harness.results.store`),
written when the episode ends: its presence is what marks the episode done, so an
unfinished job simply has fewer of them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from harness.results.episodes import episode_id
from harness.results.store import ResultsStore

log = logging.getLogger(__name__)

KEY = ["config", "task", "episode"]
"""What names an episode within a sweep."""


def read_rows(job_dir: Path) -> list[dict]:
    """Every finished episode row of one job, in file name order (task, then episode).

    Raises:
        ValueError: a row that is not valid JSON, naming its file.
    """
    rows = []
    for path in sorted((job_dir / "episodes").glob("*.json")):
        try:
            rows.append(json.loads(path.read_text()))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not an episode row: {exc}") from exc
    return rows


def merge(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep one row per (config, task, episode) of `rows` (with a `job_dir` column, in job
    order): the first job's. Two shards of one config that both ran an episode are a
    mistake in the sharding, not two samples: it is counted once and a warning names both
    directories.

    Returns:
        (kept rows, duplicates): duplicates has `config, task, episode, kept_dir, dropped_dir`.
    """
    dropped = rows.duplicated(KEY, keep="first")
    first_dir = rows[~dropped].set_index(KEY)["job_dir"]
    duplicates = rows.loc[dropped, [*KEY, "job_dir"]].rename(columns={"job_dir": "dropped_dir"})
    duplicates.insert(3, "kept_dir", first_dir.reindex(
        pd.MultiIndex.from_frame(duplicates[KEY])).to_numpy())
    for d in duplicates.itertuples():
        log.warning("config %s: task %d episode %d is in both %s and %s; counted once (%s)",
                    d.config, d.task, d.episode, d.kept_dir, d.dropped_dir, d.kept_dir)
    return rows[~dropped].reset_index(drop=True), duplicates.reset_index(drop=True)


def expected(config_id: str, config: dict, seen_tasks: list[int]) -> pd.DataFrame | None:
    """The (config, task, episode) a config should have: `env.tasks` x
    `env.episodes_per_task`, episode ids `episode_id(task, i)` as the loop
    numbers them. `env.tasks: all` stands for the tasks seen (the env's task count is not
    in the run). None if the config does not say (no `env` section)."""
    env = config.get("env") or {}
    if "tasks" not in env or "episodes_per_task" not in env:
        return None
    tasks = (sorted(set(seen_tasks)) if str(env["tasks"]) == "all"
             else [int(t) for t in str(env["tasks"]).split(",")])
    return pd.DataFrame(
        [(config_id, task, episode_id(task, i))
         for task in tasks for i in range(int(env["episodes_per_task"]))],
        columns=KEY)


def control_period_s(rows: pd.DataFrame) -> pd.Series:
    """Each row's control period dt (seconds per tick), which no file records as such: its
    `time_<state>_s` over its `ticks_<state>` (the store writes count x dt for each state)."""
    states = [c.removeprefix("ticks_") for c in rows.columns if c.startswith("ticks_")
              and f"time_{c.removeprefix('ticks_')}_s" in rows]
    ticks = rows[[f"ticks_{s}" for s in states]].fillna(0).sum(axis=1)
    seconds = rows[[f"time_{s}_s" for s in states]].fillna(0).sum(axis=1)
    return (seconds / ticks.where(ticks > 0)).round(6)


def trace_path(job_dir: Path, task: int, episode: int) -> Path:
    """Where the harness wrote an episode's per-tick trace."""
    return job_dir / "traces" / f"{ResultsStore.key(task, episode)}.parquet"
