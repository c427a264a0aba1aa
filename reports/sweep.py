"""`load_sweep`: a run or multirun directory read into tables, one row per config and one
per episode, with what is missing from it. The CLI, the HTML report and any later exporter
(wandb) start from a `Sweep` and never read the run files themselves.

A config is what a job's overrides say less `shard` and `resume` (`reports.overrides`): the
shards of one config merge into one row, each (task, episode) counted once. What a sweep
should hold is its `multirun.yaml`'s points (configs and shards) and each config's
`env.tasks` x `env.episodes_per_task` episodes; a partial sweep loads, and says what it
lacks in `Sweep.missing`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from reports import episodes as ep
from reports import overrides as ov
from reports import traces
from reports.aggregate import config_table
from reports.jobs import Job, find_jobs, read_job

log = logging.getLogger(__name__)


class NoRunsError(ValueError):
    """The directory holds no job directory at all (nothing to report on)."""


@dataclass(frozen=True)
class Missing:
    """What a sweep should hold and does not."""

    configs: list[str]
    """Config ids of `multirun.yaml` points with no job directory at all."""
    shards: list[tuple[str, str]]
    """(config id, shard) of a present config whose shard has no job directory."""
    episodes: pd.DataFrame
    """`config, task, episode` expected by a present config's own config and not found."""

    @property
    def empty(self) -> bool:
        return not self.configs and not self.shards and self.episodes.empty


@dataclass(frozen=True)
class Sweep:
    """A run or multirun directory as tables (see the module docstring)."""

    root: Path
    configs: pd.DataFrame
    """One row per config, indexed by config id (`overrides.config_id`): every override
    key a column (`override_keys`), the resolved config's transport, faults, budget and
    injected delay, then the figures of `reports.aggregate.config_table`."""
    episodes: pd.DataFrame
    """One row per (config, task, episode), the harness's row columns plus `config`,
    `job_dir` (relative to `root`), `shard`, `dt_s` (the control period) and `has_trace`;
    each episode once."""
    events: pd.DataFrame
    """Every event of those episodes (fault windows, fail-safe results, breaches), with
    `config`."""
    round_trips: pd.DataFrame
    """One row per merged chunk of every trace: `config, task, episode` and
    `traces.ROUND_TRIP` plus `network_s`."""
    job_dirs: dict[str, list[Path]]
    """Config id: its job directories (several for a sharded config)."""
    override_keys: list[str]
    """The override columns of `configs`, swept ones first."""
    swept_keys: list[str]
    """Override keys whose value differs between configs (or between the sweep's points)."""
    override_text: pd.DataFrame
    """Config x override key: the value as the config's job typed it, else as it ran with it
    (`Job.value_text`: `faults=none` for a job that never said `faults=`); None if unknown.
    What labels show, where `configs` holds the typed values."""
    missing: Missing
    duplicates: pd.DataFrame
    """`config, task, episode, kept_dir, dropped_dir` of episodes found in two jobs."""

    def labels(self, keys: list[str]) -> pd.Series:
        """Per config: `k=v` of each of `keys` as typed (`override_text`), space-joined;
        "all" with no key (nothing tells the configs apart)."""
        if not keys:
            return pd.Series("all", index=self.configs.index)
        text = self.override_text.reindex(index=self.configs.index, columns=keys)
        return pd.Series([_joined(row, keys) for row in text.to_dict("records")],
                         index=text.index)

    def trace_path(self, config: str, task: int, episode: int) -> Path:
        """The per-tick trace of one episode of `episodes`.

        Raises:
            KeyError: no such episode in the sweep.
        """
        row = self.episodes.set_index(ep.KEY).loc[(config, task, episode)]
        return ep.trace_path(self.root / row["job_dir"], task, episode)


def load_sweep(path: str | Path) -> Sweep:
    """Read every job under `path` (a run directory or a multirun directory) into a Sweep.
    Warns (logging) about each episode found twice; blocks only on file reads.

    Raises:
        NoRunsError: `path` is not a directory or holds no job directory.
        ValueError: a job's config, overrides or episode row cannot be parsed.
    """
    root = Path(path)
    if not root.is_dir():
        raise NoRunsError(f"{root}: not a directory")
    jobs = [read_job(p) for p in find_jobs(root)]
    if not jobs:
        raise NoRunsError(f"{root}: no runs found (no directory with config.json or "
                          ".hydra/overrides.yaml at or under it)")
    points = _sweep_points(root)
    job_dirs: dict[str, list[Path]] = {}
    for job in jobs:
        job_dirs.setdefault(job.config_id, []).append(job.path)
    order = list(dict.fromkeys([ov.config_id(p) for p in points] + sorted(job_dirs)))
    first = {job.config_id: job for job in reversed(jobs)}
    present = [c for c in order if c in job_dirs]

    rows, duplicates = ep.merge(_rows(root, jobs))
    rank = {config: i for i, config in enumerate(order)}
    rows = rows.sort_values(["task", "episode"], kind="stable").sort_values(
        "config", key=lambda c: c.map(rank), kind="stable").reset_index(drop=True)
    rows["dt_s"] = ep.control_period_s(rows)
    rows["has_trace"] = pd.Series([ep.trace_path(root / r.job_dir, r.task, r.episode).is_file()
                                   for r in rows.itertuples()], index=rows.index, dtype=bool)
    events = pd.DataFrame([{"config": row.config, **event} for row in rows.itertuples()
                           if isinstance(row.events, list) for event in row.events],
                          columns=["config"] if rows.empty else None)
    round_trips = _round_trips(root, rows)

    keys, swept = _override_keys([first[c] for c in present], points)
    base = pd.DataFrame([_config_columns(first[c], keys) for c in present],
                        index=pd.Index(present, name="config"))
    expected = [ep.expected(c, first[c].config, rows.loc[rows["config"] == c, "task"].tolist())
                for c in present]
    base["expected_episodes"] = [float("nan") if e is None else len(e) for e in expected]
    base["jobs"] = [len(job_dirs[c]) for c in present]
    text = pd.DataFrame([{k: first[c].value_text(k) for k in keys} for c in present],
                        index=pd.Index(present, name="config"), columns=keys, dtype=object)
    base["label"] = [_label(first[c], row, swept) for c, row in zip(
        present, text.to_dict("records"), strict=True)]
    table = config_table(base, rows, events, round_trips)
    for key in keys:
        table[key] = _tidy(table[key])

    missing = Missing(
        configs=[c for c in order if c not in job_dirs],
        shards=_missing_shards(points, jobs),
        episodes=_missing_episodes([e for e in expected if e is not None], rows))
    _log_missing(missing)
    return Sweep(root=root, configs=table, episodes=rows.drop(columns=["events"]),
                 events=events, round_trips=round_trips, job_dirs=job_dirs,
                 override_keys=keys, swept_keys=swept, override_text=text, missing=missing,
                 duplicates=duplicates)


def _sweep_points(root: Path) -> list[dict[str, object]]:
    multirun = root / "multirun.yaml"
    return ov.sweep_points(multirun) if multirun.is_file() else []


def _rows(root: Path, jobs: list[Job]) -> pd.DataFrame:
    """Every episode row of every job, in job order, with `config, job_dir, shard` first."""
    frames = [pd.DataFrame(ep.read_rows(job.path)).assign(
        config=job.config_id, job_dir=str(job.path.relative_to(root)), shard=job.shard)
        for job in jobs]
    rows = pd.concat([f for f in frames if not f.empty] or [pd.DataFrame()],
                     ignore_index=True)
    rows = rows.reindex(columns=list(dict.fromkeys(
        ["config", "job_dir", "shard", "task", "episode", "success", "events", *rows.columns])))
    return rows


def _round_trips(root: Path, rows: pd.DataFrame) -> pd.DataFrame:
    """Every round trip of the rows' traces (`traces.round_trips`); a row without its trace
    is warned about and adds none."""
    frames = []
    for row in rows.itertuples():
        path = ep.trace_path(root / row.job_dir, row.task, row.episode)
        if not row.has_trace:
            log.warning("config %s: task %d episode %d has a row but no trace (%s); its "
                        "round trips are not counted", row.config, row.task, row.episode, path)
            continue
        frames.append(traces.round_trips(path).assign(
            config=row.config, task=row.task, episode=row.episode))
    columns = [*ep.KEY, *traces.ROUND_TRIP, "network_s"]
    return pd.concat(frames, ignore_index=True)[columns] if frames \
        else pd.DataFrame(columns=columns).astype({c: float for c in columns[3:]})


def _override_keys(jobs: list[Job], points: list[dict]) -> tuple[list[str], list[str]]:
    """(all override keys, swept first; the swept ones). A key is swept if the jobs ran
    with different values of it (`Job.value`: a job that did not override it ran with its
    default, so `client=async_newest` given to one job only sweeps nothing when that is the
    default), or if the sweep's points give it different values."""
    identities = [ov.identity(j.overrides or {}) for j in jobs] + \
        [ov.identity(p) for p in points]
    keys = list(dict.fromkeys(k for overrides in identities for k in overrides))

    def differ(values: list[object]) -> bool:
        return len({float(v) if isinstance(v, int | float) and not isinstance(v, bool)
                    else repr(v) for v in values}) > 1

    swept = [k for k in keys if differ([j.value(k) for j in jobs])
             or differ([ov.identity(p).get(k) for p in points])]
    return swept + [k for k in keys if k not in swept], swept


def _config_columns(job: Job, keys: list[str]) -> dict[str, object]:
    """The overrides of a config's job (for a key it did not override, what it ran with:
    `Job.value`), and what its resolved config says it measured."""
    config = job.config
    faults = config.get("faults") or {}
    timed = faults.get("timed") or []
    return {
        **{key: job.value(key) for key in keys},
        "transport_kind": (config.get("transport") or {}).get("kind"),
        "faults_name": faults.get("name"),
        "faults_apply": faults.get("apply"),
        "client_mode": (config.get("client") or {}).get("mode"),
        "latency_kind": (config.get("latency") or {}).get("kind"),
        "latency_budget_s": (config.get("latency") or {}).get("budget_s", float("nan")),
        # One way, each way: `delay_s` of every latency fault (0 with none).
        "injected_delay_s": float(sum(t.get("delay_s", 0.0) for t in timed
                                      if t.get("kind") == "latency")),
    }


def _joined(text: dict[str, object], keys: list[str]) -> str:
    """`k=v` of `keys` from one config's row of `Sweep.override_text`, space-joined; `?`
    for a value no record says."""
    return " ".join(f"{k}={'?' if pd.isna(text.get(k)) else text[k]}"
                    for k in keys)


def _label(job: Job, text: dict[str, str | None], swept: list[str]) -> str:
    """A config's short name in figures: its swept keys as typed (`_joined`), else its
    config id."""
    return _joined(text, swept) or job.config_id


def _tidy(column: pd.Series) -> pd.Series:
    """An override column as one type (parquet needs it): numbers stay numbers, anything
    mixing text and numbers becomes text."""
    kind = pd.api.types.infer_dtype(column, skipna=True)
    if kind == "integer":  # Int64: a config without the key stays NA, not 10 -> 10.0
        return column.astype("Int64")
    if kind in ("floating", "mixed-integer-float", "boolean", "empty"):
        return column.infer_objects()
    return column.map(lambda v: v if pd.isna(v) else str(v)).astype("string")


def _missing_shards(points: list[dict], jobs: list[Job]) -> list[tuple[str, str]]:
    present_configs = {job.config_id for job in jobs}
    present = {(job.config_id, job.shard) for job in jobs}
    wanted = [(ov.config_id(p), str(p["shard"])) for p in points if "shard" in p]
    return [w for w in dict.fromkeys(wanted) if w[0] in present_configs and w not in present]


def _missing_episodes(expected: list[pd.DataFrame], rows: pd.DataFrame) -> pd.DataFrame:
    if not expected:
        return pd.DataFrame(columns=ep.KEY)
    wanted = pd.concat(expected, ignore_index=True)
    found = pd.MultiIndex.from_frame(rows[ep.KEY].astype({"task": int, "episode": int}))
    return wanted[~pd.MultiIndex.from_frame(wanted).isin(found)].reset_index(drop=True)


def _log_missing(missing: Missing) -> None:
    for config in missing.configs:
        log.warning("config %s: no job directory (a point of multirun.yaml)", config)
    for config, shard in missing.shards:
        log.warning("config %s: shard %s has no job directory", config, shard)
    for config, group in missing.episodes.groupby("config", sort=False):
        listed = ", ".join(f"task {t} episode {e}" for t, e in zip(
            group["task"], group["episode"], strict=True))
        log.warning("config %s: %d episode(s) missing: %s", config, len(group), listed)


def write_tables(sweep: Sweep, out_dir: Path) -> list[Path]:
    """Write `configs.csv`, `configs.parquet`, `episodes.csv`, `episodes.parquet` (the same
    rows in both formats) into `out_dir`, creating it; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, frame in (("configs", sweep.configs.reset_index()), ("episodes", sweep.episodes)):
        for suffix, write in ((".csv", frame.to_csv), (".parquet", frame.to_parquet)):
            written.append(out_dir / f"{name}{suffix}")
            write(written[-1], index=False)
    return written
