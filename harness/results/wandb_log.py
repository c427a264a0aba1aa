"""A finished run copied to Weights & Biases: one wandb run per Hydra job (`logger=wandb`).

The run directory (`harness.results.store`) is the record; wandb is a view of it for browsing
and comparing the jobs of a sweep (`logger.group`). So `log_run` is called after `summarize`
has written every file, and a wandb failure is logged, not raised: it must not change a
job's exit status or end a sweep's other jobs, and it loses nothing, since the files are
already on disk and `log_run` can be run again on them.

`logger.mode=offline` (the default) writes `<dir>/wandb/offline-run-*/` and opens no
network connection; upload it later with `wandb sync <dir>/wandb/offline-run-*`. The
`mode="offline"` argument of `wandb.init` alone is not enough for that: wandb reads part
of its settings (telemetry, git, the staging of artifact files) from the environment, and
with only the argument its telemetry looks up its server (api.forge.coreweave.com:443) at
process exit, after the run. So `log_run` sets `WANDB_MODE` and its companions for the
duration of the call and restores them after. The environment is the process's, hence
one `log_run` at a time per process (a lock); each call starts and stops wandb's service
process, so calls made one after another by the jobs of a sweep in one process do not
share wandb state.
"""

from __future__ import annotations

import contextlib
import enum
import importlib
import logging
import math
import os
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

from harness.choices import choice

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install -e '.[wandb]'"
FINISH_TIMEOUT_S = 300.0
"""Online: longest wait for the upload at the end; after it the data stays on disk for
`wandb sync` and the run shows as crashed (offline writes only to disk and never waits)."""
EPISODE_PREFIX = "episode/"
"""History keys are `episode/<column>`, so a column never shadows a summary key of the same
name (`fallback_ticks` per episode vs. the run's total)."""
_ONE_RUN_AT_A_TIME = threading.Lock()


class LoggerKind(enum.StrEnum):
    """Where a run's results are copied besides its run directory."""

    none = "none"
    """Nowhere: the run directory only."""
    wandb = "wandb"
    """A Weights & Biases run per job (needs the `[wandb]` extra)."""


class LoggerMode(enum.StrEnum):
    """How the wandb run is recorded (`WANDB_MODE` for the duration of `log_run`)."""

    offline = "offline"
    """Only to disk under `logger.dir`; no network (upload later with `wandb sync`)."""
    online = "online"
    """Uploaded to the server while logging (needs a login or WANDB_API_KEY)."""
    disabled = "disabled"
    """Nothing is recorded; `log_run` returns None without importing wandb."""


class WandbUnavailable(ImportError):
    """logger=wandb without the wandb package installed."""


@dataclass
class LoggerConfig:
    """Whether and where a finished run is also logged (`conf/logger/`)."""

    kind: LoggerKind = LoggerKind.none
    project: str = "robot-policy-harness"
    entity: Optional[str] = None
    """wandb user or team; None uses the login's default (online only)."""
    group: Optional[str] = None
    """Groups runs in the wandb UI: the sweep's name, so the jobs of one sweep sit together."""
    mode: LoggerMode = LoggerMode.offline
    dir: Optional[str] = None
    """Where wandb writes its `wandb/` folder; None: the job's run directory."""

    def __post_init__(self) -> None:
        self.kind = choice(LoggerKind, self.kind, "logger.kind")
        self.mode = choice(LoggerMode, self.mode, "logger.mode")
        # wandb refuses these characters in a project name, and names over 128 characters
        if not self.project or re.search(r"[/\\#?%:]", self.project) or len(self.project) > 128:
            raise ValueError(f"logger.project={self.project!r}: must be 1..128 characters "
                             "without / \\ # ? % :")
        for field_name in ("entity", "group"):
            value = getattr(self, field_name)
            if value is not None and not 1 <= len(value.strip()) <= 128:
                raise ValueError(f"logger.{field_name}={value!r}: must be 1..128 characters "
                                 "or null")
        if self.dir is not None and not self.dir.strip():
            raise ValueError(f"logger.dir={self.dir!r}: name a directory, or null for the run "
                             "directory")


def _import_wandb():
    """The wandb module, or WandbUnavailable saying how to install it."""
    try:
        return importlib.import_module("wandb")
    except ImportError as exc:
        raise WandbUnavailable(f"logger=wandb needs the wandb package: {INSTALL_HINT}") from exc


def check_available(config: LoggerConfig | None = None) -> None:
    """Call at startup, before anything runs, so that a missing package does not surface only
    after the episodes. Checks unconditionally without `config`; with it, only when it will
    import wandb (kind=wandb, mode not disabled).

    Raises:
        WandbUnavailable: wandb is not importable; the message says what to install.
    """
    if config is None or _uses_wandb(config):
        _import_wandb()


def _uses_wandb(config: LoggerConfig) -> bool:
    return config.kind is LoggerKind.wandb and config.mode is not LoggerMode.disabled


def flatten_summary(summary: Mapping[str, object]) -> dict[str, object]:
    """The run summary as wandb summary keys: a `[low, high]` pair of numbers (an interval,
    e.g. `success_wilson95`) becomes `<key>_low` and `<key>_high`, so both can be sorted and
    plotted; every other value is kept as it is."""
    flat: dict[str, object] = {}
    for key, value in summary.items():
        if (isinstance(value, (list, tuple)) and len(value) == 2
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
            flat[f"{key}_low"], flat[f"{key}_high"] = value
        else:
            flat[key] = value
    return flat


def episode_metrics(row: Mapping[str, object]) -> dict[str, bool | int | float]:
    """One episode row's numbers and flags as `episode/<column>` (Python types); strings,
    lists and missing values (None, NaN) are left out of the history (the episodes table
    keeps them)."""
    metrics: dict[str, bool | int | float] = {}
    for key, value in row.items():
        if isinstance(value, (bool, np.bool_)):
            metrics[EPISODE_PREFIX + key] = bool(value)
        elif isinstance(value, (int, np.integer)):
            metrics[EPISODE_PREFIX + key] = int(value)
        elif isinstance(value, (float, np.floating)) and not math.isnan(value):
            metrics[EPISODE_PREFIX + key] = float(value)
    return metrics


def _episode_frame(episodes: list[dict] | pd.DataFrame) -> pd.DataFrame:
    """The rows without their `events` lists (those are in events.jsonl), indexed 0..n-1."""
    import pandas as pd  # here, not at import: harness.config imports this module's schema

    frame = episodes if isinstance(episodes, pd.DataFrame) else pd.DataFrame(list(episodes))
    return frame.drop(columns=["events"], errors="ignore").reset_index(drop=True)


def _episode_video(wandb, run_dir: Path, row: Mapping[str, object]):
    """The episode's video (`video`: a path relative to the run directory, written by
    `harness.results.video`) as a `wandb.Video` of the mp4 file, which wandb copies into
    the run's media (offline too); None if the row has none. A row naming a file that is
    not there is logged and left out: the run is logged without it."""
    relative = row.get("video")
    if not isinstance(relative, str) or not relative:
        return None
    path = run_dir / relative
    if not path.is_file():
        log.warning("wandb: episode %s names video %s, which is not there; logged without it",
                    row.get("episode"), path)
        return None
    return wandb.Video(str(path), caption=path.stem, format="mp4")


def _artifact_name(kind: str, name: str) -> str:
    """`<kind>-<name>` in the characters wandb accepts (a Hydra job name may hold `=` and `,`)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")[:100] or "run"
    return f"{kind}-{safe}"


def _environ_for(config: LoggerConfig, wandb_dir: Path) -> dict[str, str]:
    """The variables wandb reads at setup, where the `settings=` argument comes too late:
    the mode of its telemetry, git probing while it finds the program, console output, and,
    offline, error reports and the staging copies of artifact files (kept inside the run's
    wandb folder, where `wandb sync` later finds them, not in the user's data dir)."""
    environ = {"WANDB_MODE": str(config.mode), "WANDB_SILENT": "true",
               "WANDB_DISABLE_GIT": "true", "WANDB_DISABLE_CODE": "true"}
    if config.mode is LoggerMode.offline:
        environ |= {"WANDB_ERROR_REPORTING": "false",
                    "WANDB_DATA_DIR": str(wandb_dir / "wandb" / "data")}
    return environ


@contextlib.contextmanager
def _environ(overrides: Mapping[str, str]) -> Iterator[None]:
    """`os.environ` with `overrides` inside the block; each variable as it was after it."""
    before = {key: os.environ.get(key) for key in overrides}
    os.environ.update(overrides)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _settings(wandb, config: LoggerConfig):
    """Quiet and probe-free: no console capture, code or requirements saving, git, system
    metrics or metadata (the resolved config is the run's description, and the metrics of
    the process that copies finished results would describe nothing)."""
    return wandb.Settings(
        console="off", save_code=False, disable_code=True, disable_git=True,
        disable_job_creation=True, silent=True, x_disable_stats=True, x_disable_meta=True,
        x_disable_machine_info=True, x_save_requirements=False,
        finish_timeout=FINISH_TIMEOUT_S if config.mode is LoggerMode.online else 0.0)


def log_run(run_dir: Path, config: LoggerConfig, *, resolved_config: dict, name: str,
            episodes: list[dict] | pd.DataFrame, summary: dict,
            report_html: Path | None) -> Path | None:
    """Copy one finished job to a wandb run: the resolved config as its config, one history
    step per episode (its numbers and flags, `episode/<column>`, and its video, if it has
    one, as `episode/video`: a `wandb.Video` of the file), `summary` as its summary
    (`flatten_summary`), the episodes as a table artifact (type "episodes") and
    `report_html`, when given and present, as an artifact of type "report". Blocks until the
    run is finished (offline: about a second; online: the upload, at most FINISH_TIMEOUT_S).

    Call it after the run directory is complete (`ResultsStore.summarize`). Any error of
    wandb while logging is logged and None returned: the results are already written, and
    a job must not fail, nor a sweep stop, because a copy of them could not be made.
    It stops wandb's service at the end (`wandb.teardown`), which also finishes any other
    wandb run the process has open; the harness has none.

    Args:
        run_dir: the job's run directory; wandb writes under `<logger.dir or run_dir>/wandb/`.
        resolved_config: the job's resolved config (as in config.json).
        name: the run's display name, e.g. the Hydra job's override dirname.
        episodes: the episode rows (`ResultsStore.rows()`); `events` columns are left out.
        summary: the run summary (`ResultsStore.summarize`).
        report_html: the job's or sweep's HTML report, or None.

    Returns:
        The wandb run's local directory (`.../wandb/offline-run-*` offline, `run-*` online),
        or None if nothing was logged: logger=none, mode=disabled, or a wandb error.

    Raises:
        WandbUnavailable: logger=wandb and wandb is not installed (`check_available` says so
            at startup).
    """
    if not _uses_wandb(config):
        return None
    wandb = _import_wandb()
    wandb_dir = Path(config.dir) if config.dir else Path(run_dir)
    with _ONE_RUN_AT_A_TIME, _environ(_environ_for(config, wandb_dir)):
        run = None
        try:
            rows = _episode_frame(episodes)
            wandb_dir.mkdir(parents=True, exist_ok=True)  # else wandb falls back to /tmp
            run = wandb.init(project=config.project, entity=config.entity, group=config.group,
                             name=name, dir=str(wandb_dir), mode=str(config.mode),
                             config=resolved_config, settings=_settings(wandb, config),
                             reinit="create_new")  # never a run the process already has
            run.define_metric(EPISODE_PREFIX + "*", summary="none")  # the summary is `summary`
            for step, row in enumerate(rows.to_dict("records")):
                metrics: dict[str, object] = dict(episode_metrics(row))
                video = _episode_video(wandb, Path(run_dir), row)
                if video is not None:
                    metrics[EPISODE_PREFIX + "video"] = video
                run.log(metrics, step=step)
            run.summary.update(flatten_summary(summary))
            table = wandb.Artifact(_artifact_name("episodes", name), type="episodes")
            table.add(wandb.Table(dataframe=rows), "episodes")
            run.log_artifact(table)
            if report_html is not None and Path(report_html).is_file():
                report = wandb.Artifact(_artifact_name("report", name), type="report")
                report.add_file(str(report_html), name="report.html")
                run.log_artifact(report)
            elif report_html is not None:
                log.warning("wandb: no report at %s; logging the run without it", report_html)
            run.finish()
            local_dir = Path(run.settings.sync_dir)
        except Exception:
            log.error("wandb: could not log %s (its results are in the run directory; "
                      "rerun log_run on it to retry)", run_dir, exc_info=True)
            if run is not None:
                with contextlib.suppress(Exception):
                    run.finish(exit_code=1)
            return None
        finally:
            try:
                wandb.teardown()  # stops the service process; the next call starts afresh
            except Exception:
                log.warning("wandb: teardown failed", exc_info=True)
    log.info("wandb: %s run %s in %s", config.mode, run.id, local_dir)
    return local_dir
