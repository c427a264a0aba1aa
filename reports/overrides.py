"""A job's command-line overrides as the report sees them: parsed by Hydra's own override
parser, so that `env.tasks='0,3'`, `+experiment=x` and `~key` mean here what they meant to
the job, and keyed without their `+`/`++`/`~` prefix (that says how a key was set, not
which key it is).

A config's identity is its overrides less the ones that only say how its episodes were run:
`shard=i/n` (one config's episodes split over jobs), `resume=<dir>` and the address its server
listened on (`transport.listen`: the latency sweep gives every point a free port). The
expected jobs of a sweep are the points of its `multirun.yaml`, expanded by Hydra's basic
sweeper itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from omegaconf import OmegaConf

NOT_IDENTITY = ("shard", "resume", "transport.listen")
"""Override keys that do not change what a config measures, only how its jobs ran."""

DELETED = "~"
"""The value shown for a key an override deleted (`~key`)."""


def _parser() -> OverridesParser:
    return OverridesParser.create()


def _key(override: Override) -> str:
    """The key without its `+`/`++`/`~` prefix; `group@package` keeps its package."""
    package = f"@{override.package}" if override.package else ""
    return f"{override.key_or_group}{package}"


def parse(lines: Iterable[str]) -> dict[str, object]:
    """{key: value} of a job's override strings (`.hydra/overrides.yaml`), in their order.
    Values are Hydra's parsed values (`0.05` a float, `'0,3'` the string `0,3`); a deleted
    key maps to `DELETED`. Later overrides of a key win, as in Hydra.

    Raises:
        ValueError: an override Hydra cannot parse (naming it).
    """
    parsed: dict[str, object] = {}
    for override in _overrides(lines):
        if override.is_sweep_override():
            raise ValueError(f"{override.input_line!r} is a sweep, not one job's override")
        parsed[_key(override)] = (DELETED if override.type is OverrideType.DEL
                                  else override.value())
    return parsed


def texts(lines: Iterable[str]) -> dict[str, str]:
    """{key: value as the user typed it} of a job's override strings: what a report shows
    (`env.episodes_per_task=10`, not the `10.0` a table column of floats would print).
    Keyed as `parse` keys them; a deleted key maps to `DELETED`.

    Raises:
        ValueError: an override Hydra cannot parse (naming it).
    """
    return {_key(o): DELETED if o.type is OverrideType.DEL else o.input_line.split("=", 1)[1]
            for o in _overrides(lines)}


def _overrides(lines: Iterable[str]) -> list:
    """Hydra's parse of override strings; ValueError naming them if it cannot."""
    lines = list(lines)
    try:
        return _parser().parse_overrides(lines)
    except Exception as exc:  # Hydra raises its own OverrideParseException
        raise ValueError(f"cannot parse overrides {lines}: {exc}") from exc


def value_text(value: object) -> str:
    """A config value written the way an override would write it: `true`, `null`, `10`,
    `0.1`, `[1,2]`; what a label shows for a key the job did not override."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return "[" + ",".join(value_text(v) for v in value) + "]"
    return repr(value) if isinstance(value, float) else str(value)


def identity(overrides: dict[str, object]) -> dict[str, object]:
    """The overrides that make a config what it is (all but `NOT_IDENTITY`)."""
    return {k: v for k, v in overrides.items() if k not in NOT_IDENTITY}


def config_id(overrides: dict[str, object]) -> str:
    """A config's stable name: its identity overrides sorted by key, `k=v` joined by commas
    (the form of Hydra's `override_dirname`). "(no overrides)" for a default run."""
    items = sorted(identity(overrides).items())
    return ",".join(f"{k}={v}" for k, v in items) or "(no overrides)"


def sweep_points(multirun_yaml: Path) -> list[dict[str, object]]:
    """Every job a multirun launched or meant to: the product of `hydra.sweeper.params` and
    the command line's `hydra.overrides.task`, as the basic sweeper expands them (the command
    line wins for a key in both). Each point as `parse` returns a job's overrides.

    Raises:
        ValueError: the file has no `hydra.overrides.task`, or a sweep the basic sweeper
            cannot expand.
    """
    hydra = OmegaConf.load(multirun_yaml).get("hydra")
    if hydra is None or "overrides" not in hydra:
        raise ValueError(f"{multirun_yaml}: no hydra.overrides.task; is it a multirun.yaml?")
    params = OmegaConf.to_container(hydra.sweeper, resolve=False).get("params") or {}
    lines = [f"{key}={value}" for key, value in params.items()]
    lines += list(hydra.overrides.task)
    try:
        overrides = _parser().parse_overrides(lines)
        (batch,) = BasicSweeper.split_arguments(overrides, max_batch_size=None)
    except Exception as exc:
        raise ValueError(f"{multirun_yaml}: cannot expand the sweep {lines}: {exc}") from exc
    return [parse(job) for job in batch]
