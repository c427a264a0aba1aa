"""Job directories under a run or multirun directory, and what each says about itself.

A job directory is one that holds `config.json` (the harness's resolved config, written when
the job starts), or Hydra's `.hydra/overrides.yaml` and no job below it (a job that never
started its loop). They are found by those files, not by name: a sweep's subdirectories
were job numbers and are now override strings.

A job's overrides are its own `overrides.json` (the harness's record of its command line),
else its `.hydra/overrides.yaml`, else its parent's: the shards of one config write
`shard-i-of-n/` inside the config's directory, where Hydra keeps one `.hydra/` for them all.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml
from omegaconf import OmegaConf

from reports import overrides as ov

log = logging.getLogger(__name__)

_NOT_JOBS = ("episodes", "traces", ".hydra", "server-task", "wandb")
"""Subfolders (by name prefix) that never hold a job; not walked into."""


@dataclass(frozen=True)
class Job:
    """One job directory as read from disk."""

    path: Path
    overrides: dict[str, object] | None
    """Its parsed overrides (`reports.overrides.parse`) from the first record of them it has
    (see the module docstring); None with none."""
    config: dict
    """Its resolved config: `config.json`, else Hydra's `.hydra/config.yaml`, else {}."""

    @property
    def shard(self) -> str | None:
        """`i/n` if this job ran one shard of its config's episodes."""
        shard = self.config.get("shard")
        if shard is None and self.overrides:
            shard = self.overrides.get("shard")
        return None if shard is None else str(shard)

    @property
    def config_id(self) -> str:
        """The name of the config this job ran, the same for all shards of one config: its
        overrides less `shard`/`resume`, or, for a job run without Hydra's record, a hash of
        its resolved config less those keys."""
        if self.overrides is not None:
            return ov.config_id(self.overrides)
        flat = pd.json_normalize(self.config).iloc[0].drop(list(ov.NOT_IDENTITY),
                                                           errors="ignore").to_dict()
        digest = hashlib.sha1(json.dumps(flat, sort_keys=True, default=str).encode())
        return f"config-{digest.hexdigest()[:10]}"


def find_jobs(root: Path) -> list[Path]:
    """Every job directory at or under `root` (see the module docstring), sorted."""
    started, unstarted = [], []
    for folder, subfolders, _ in os.walk(root):
        here = Path(folder)
        subfolders[:] = sorted(s for s in subfolders if not s.startswith(_NOT_JOBS))
        if (here / "config.json").is_file():
            started.append(here)
        elif (here / ".hydra" / "overrides.yaml").is_file():
            unstarted.append(here)
    unstarted = [u for u in unstarted if not any(u in s.parents for s in started)]
    return sorted(started + unstarted)


def _read_overrides(path: Path) -> dict[str, object] | None:
    """The job's parsed overrides from the first of its records that exists (see the
    module docstring); None if it has none."""
    candidates = [path / "overrides.json", path / ".hydra" / "overrides.yaml"]
    if not (path.parent / "config.json").is_file():
        candidates.append(path.parent / ".hydra" / "overrides.yaml")
    for candidate in candidates:
        if candidate.is_file():
            try:  # JSON is YAML: one reader for both
                return ov.parse(yaml.safe_load(candidate.read_text()) or [])
            except (yaml.YAMLError, ValueError) as exc:
                raise ValueError(f"{candidate}: {exc}") from exc
    return None


def read_job(path: Path) -> Job:
    """Read a job directory's overrides and resolved config (not its episodes).

    Raises:
        ValueError: a config or overrides file that cannot be parsed, naming it.
    """
    return Job(path, _read_overrides(path), _read_config(path))


def _read_config(path: Path) -> dict:
    config_json, hydra_yaml = path / "config.json", path / ".hydra" / "config.yaml"
    try:
        if config_json.is_file():
            return json.loads(config_json.read_text())  # the harness writes inf as Infinity
        if hydra_yaml.is_file():
            log.info("%s has no config.json (the job never started its loop); using %s",
                     path, hydra_yaml)
            return OmegaConf.to_container(OmegaConf.load(hydra_yaml), resolve=False)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: unreadable config: {exc}") from exc
    return {}
