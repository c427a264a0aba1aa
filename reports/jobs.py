"""Job directories under a run or multirun directory, and what each says about itself.

A job directory is one that holds `config.json` (the harness's resolved config, written when
the job starts), or Hydra's `.hydra/overrides.yaml` and no job below it (a job that never
started its loop). They are found by those files, not by name: a sweep's subdirectories
were job numbers and are now override strings.

A job's overrides are its own `overrides.json` (the harness's record of its command line),
else its `.hydra/overrides.yaml`, else its parent's: the shards of one config write
`shard-i-of-n/` inside the config's directory, where Hydra keeps one `.hydra/` for them all.
Its config group choices (`faults: none` for a job that never said `faults=`) are Hydra's
`.hydra/hydra.yaml`, found the same way.
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
    override_texts: dict[str, str] | None = None
    """Its overrides' values as typed on the command line (`reports.overrides.texts`)."""
    choices: dict[str, str] | None = None
    """Hydra's config group choices of the job (`faults: none`); None with no record."""

    def value(self, key: str) -> object:
        """What the job ran with for an override key: its override, else its config group
        choice (`faults` -> `none`), else the resolved config's value at the dotted key
        (`env.episodes_per_task` -> 20, `faults.timed.0.delay_s` -> 0.05); None where none
        of them says, or where the key names a whole section."""
        if self.overrides and key in self.overrides:
            return self.overrides[key]
        if self.choices and self.choices.get(key) is not None:
            return self.choices[key]
        node: object = self.config
        for part in key.split("."):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return None
        return None if isinstance(node, dict) else node  # a whole group's node: no one value

    def value_text(self, key: str) -> str | None:
        """`value(key)` as a label shows it: the override as typed, else the value written
        as an override would write it (`reports.overrides.value_text`); None if unknown."""
        if self.override_texts and key in self.override_texts:
            return self.override_texts[key]
        value = self.value(key)
        return None if value is None else ov.value_text(value)

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


def _hydra_files(path: Path, name: str) -> list[Path]:
    """Where a job's Hydra record `name` may be: its own `.hydra/`, then its parent's
    unless the parent is a job itself (see the module docstring)."""
    candidates = [path / ".hydra" / name]
    if not (path.parent / "config.json").is_file():
        candidates.append(path.parent / ".hydra" / name)
    return candidates


def _read_overrides(path: Path) -> tuple[dict[str, object], dict[str, str]] | None:
    """The job's overrides (parsed, and as typed) from the first of its records that exists
    (see the module docstring); None if it has none."""
    for candidate in [path / "overrides.json", *_hydra_files(path, "overrides.yaml")]:
        if candidate.is_file():
            try:  # JSON is YAML: one reader for both
                lines = yaml.safe_load(candidate.read_text()) or []
                return ov.parse(lines), ov.texts(lines)
            except (yaml.YAMLError, ValueError) as exc:
                raise ValueError(f"{candidate}: {exc}") from exc
    return None


def _read_choices(path: Path) -> dict[str, str] | None:
    """Hydra's `runtime.choices` of the job (its config groups' options); None with no
    `hydra.yaml` or none in it. An unreadable file is logged and read as none: the choices
    only fill in labels."""
    for candidate in _hydra_files(path, "hydra.yaml"):
        if candidate.is_file():
            try:
                hydra = (yaml.safe_load(candidate.read_text()) or {}).get("hydra") or {}
            except yaml.YAMLError as exc:
                log.warning("%s: unreadable (%s); labels use the resolved config", candidate,
                            exc)
                return None
            choices = (hydra.get("runtime") or {}).get("choices")
            return {k: str(v) for k, v in choices.items() if v is not None} if choices \
                else None
    return None


def read_job(path: Path) -> Job:
    """Read a job directory's overrides, resolved config and group choices (not its
    episodes).

    Raises:
        ValueError: a config or overrides file that cannot be parsed, naming it.
    """
    overrides = _read_overrides(path)
    parsed, typed = overrides if overrides is not None else (None, None)
    return Job(path, parsed, _read_config(path), typed, _read_choices(path))


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
