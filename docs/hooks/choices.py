"""mkdocs hook: the choice lists of the documentation, read from the registries at build time.

A page holds a marker, `<!-- choices:NAME -->` on a line of its own, and the build replaces it
with a Markdown table made from the code that decides what is valid: the transport, policy,
env, fault-kind and remote-protocol registries, the YAML choices of each config group
(`harness.config.group_options`: the `<name>_schema` entries of the ConfigStore are not
choices), the enum-valued settings of `HarnessConfig` and the default config as Hydra
composes it. Nothing is copied by hand, so a new transport or preset shows up on the next
build.

It fails loudly: a registry that cannot be imported, a marker no table answers to, or a table
that comes out empty stops the build (a `PluginError` naming the cause), strict or not.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import re
import sys
import typing
from collections.abc import Callable
from pathlib import Path

from mkdocs.exceptions import PluginError

MARKER = re.compile(r"^<!--\s*choices:([a-z_]+)\s*-->\s*$", re.MULTILINE)
REGISTRIES = ("transports", "policies.registry", "envs", "harness.faults.kinds",
              "policies.remote.protocols", "harness.config")
"""Imported when the build starts; any failure stops it."""
GROUP_ORDER = ("transport", "env", "policy", "server", "client", "faults", "logger",
               "experiment")
"""Config groups in the order the choices page lists them (any other group follows)."""

_modules: dict[str, typing.Any] = {}


def on_config(config, **_):
    """Import every registry now, so a broken one stops the build before any page."""
    root = Path(__file__).resolve().parents[2]
    if (root / "harness").is_dir() and str(root) not in sys.path:
        sys.path.insert(0, str(root))  # a checkout; an installed package is found anyway
    _modules.clear()
    for name in REGISTRIES:
        try:
            _modules[name] = importlib.import_module(name)
        except Exception as exc:  # any failure is the build's failure
            raise PluginError(f"docs/hooks/choices.py: cannot import {name!r} ({exc!r}); the "
                              "documentation's choice lists are read from it") from exc
    return config


def on_page_markdown(markdown: str, page, **_) -> str:
    """Replace each `<!-- choices:NAME -->` line of a page with its table."""

    def table(match: re.Match) -> str:
        name = match.group(1)
        make = TABLES.get(name)
        if make is None:
            raise PluginError(f"{page.file.src_uri}: unknown marker 'choices:{name}'; "
                              f"known: {sorted(TABLES)}")
        try:
            text = make()
        except PluginError:
            raise
        except Exception as exc:  # a table that cannot be made stops the build
            raise PluginError(f"{page.file.src_uri}: choices:{name} failed: {exc!r}") from exc
        if not text.strip():
            raise PluginError(f"{page.file.src_uri}: choices:{name} came out empty")
        return text

    return MARKER.sub(table, markdown)


def _module(name: str):
    if name not in _modules:  # on_config not run (a direct call, as the tests make)
        _modules[name] = importlib.import_module(name)
    return _modules[name]


def _cell(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _rows(header: tuple[str, ...], rows: list[tuple[object, ...]]) -> str:
    if not rows:
        raise PluginError(f"a choices table ({', '.join(header)}) has no rows")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _summary(doc: str | None) -> str:
    """A docstring's first paragraph, on one line (a colon that introduced an example
    becomes a full stop)."""
    text = " ".join((doc or "").strip().split("\n\n")[0].split())
    return text[:-1] + "." if text.endswith(":") else text


def _yaml_comment(group: str, option: str, sentences: int = 0) -> str:
    """The leading comment of `conf/<group>/<option>.yaml`, without Hydra's `@package`
    line, the pointer to the schema and example command lines; its first `sentences`
    sentences if that is not 0."""
    config_dir = Path(_module("harness.config").config_dir())
    lines = []
    for line in (config_dir / group / f"{option}.yaml").read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if (text.startswith(("Every field", "python ", "@package"))
                or "every field and its meaning" in text or text.endswith("\\")):
            continue
        lines.append(text)
    text = " ".join(lines)
    if sentences:
        text = " ".join(re.split(r"(?<=\.) ", text)[:sentences])
    return text


def transports_table() -> str:
    transports = _module("transports")
    rows = []
    for name in transports.transport_names():
        entry = transports.transport_entry(name)
        rows.append((f"`{name}`", f"`{entry.module}`", entry.package,
                     "yes" if entry.networked else "no (in-process)",
                     "yes" if entry.needs_heartbeat else "no"))
    return _rows(("`transport=`", "module", "package", "networked", "client pings the server"),
                 rows)


def policies_table() -> str:
    registry = _module("policies.registry")
    rows = [(f"`{name}`", f"`{registry.policy_entry(name).config_class.__name__}`",
             _summary(registry.policy_entry(name).config_class.__doc__))
            for name in registry.policy_names()]
    return _rows(("`policy=`", "settings (`policies/config.py`)", "what"), rows)


def envs_table() -> str:
    envs = _module("envs")
    rows = []
    for name in envs.env_names():
        family = envs.env_family(name)
        rows.append((f"`{name}`", f"`{type(family).__name__}`", _summary(type(family).__doc__)))
    return _rows(("`env=`", "family", "what"), rows)


def fault_kinds_table() -> str:
    kinds = _module("harness.faults.kinds")
    rows = []
    for name in kinds.kind_names():
        entry = kinds.fault_kind(name)
        rows.append((f"`{name}`", entry.group, "yes" if entry.paced else "no", entry.doc))
    return _rows(("kind", "group", "paced (lives in wall time)", "what it does"), rows)


def _group_table(group: str, key: str, sentences: int = 0) -> str:
    options = _module("harness.config").group_options(group)
    rows = [(f"`{option}`", _yaml_comment(group, option, sentences)) for option in options]
    return _rows((f"`{key}=`", "what"), rows)


def fault_presets_table() -> str:
    return _group_table("faults", "faults")


def client_modes_table() -> str:
    return _group_table("client", "client")


def experiments_table() -> str:
    return _group_table("experiment", "+experiment", sentences=1)


def protocols_table() -> str:
    protocols = _module("policies.remote.protocols")
    rows = []
    for name in protocols.protocol_names():
        entry = protocols.protocol_entry(name)
        reads = ", ".join(f"`policy.{s}`" for s in sorted(entry.reads)) or "-"
        rows.append((f"`{name}`", f"`{entry.default_convention}`", reads))
    header = ("`policy.protocol=`", "default `policy.convention`", "protocol settings it reads")
    return _rows(header, rows)


def groups_table() -> str:
    config = _module("harness.config")
    groups = sorted((p.name for p in Path(config.config_dir()).iterdir()
                     if p.is_dir() and p.name != "hydra" and any(p.glob("*.yaml"))),
                    key=lambda g: (GROUP_ORDER.index(g) if g in GROUP_ORDER else 99, g))
    rows = [(f"`{'+' if g == 'experiment' else ''}{g}=`",
             ", ".join(f"`{o}`" for o in config.group_options(g))) for g in groups]
    return _rows(("group", "choices"), rows)


def _enum_fields(cls: type, prefix: str = "") -> list[tuple[str, type[enum.Enum], object]]:
    """(key, enum, default) of every enum-valued field under the dataclass `cls`."""
    hints = typing.get_type_hints(cls)
    found = []
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        is_list = typing.get_origin(hint) is list
        for candidate in (hint, *typing.get_args(hint)):
            if isinstance(candidate, type) and issubclass(candidate, enum.Enum):
                default = field.default if field.default is not dataclasses.MISSING else None
                found.append((prefix + field.name, candidate, default))
                break
            if isinstance(candidate, type) and dataclasses.is_dataclass(candidate):
                inner = f"{prefix}{field.name}.{'<i>.' if is_list else ''}"
                found += _enum_fields(candidate, inner)
                break
    return found


def settings_table() -> str:
    config = _module("harness.config")
    rows = []
    for key, kind, default in _enum_fields(config.HarnessConfig):
        values = ", ".join(f"`{m.value}`" for m in kind)
        shown = f"`{default.value}`" if isinstance(default, enum.Enum) else "(per preset)"
        rows.append((f"`{key}`", values, shown, f"`{kind.__name__}`"))
    return _rows(("setting", "choices", "default", "enum"), rows)


def default_config_block() -> str:
    """The default config (`python -m harness --cfg job`), composed by Hydra."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    config = _module("harness.config")
    config.register_configs()
    with initialize_config_dir(config_dir=config.config_dir(), version_base="1.3"):
        composed = compose(config_name="config")
    text = OmegaConf.to_yaml(composed)
    return "```yaml\n" + text + "```\n"


TABLES: dict[str, Callable[[], str]] = {
    "transports": transports_table,
    "policies": policies_table,
    "envs": envs_table,
    "fault_kinds": fault_kinds_table,
    "fault_presets": fault_presets_table,
    "client_modes": client_modes_table,
    "experiments": experiments_table,
    "protocols": protocols_table,
    "groups": groups_table,
    "settings": settings_table,
    "default_config": default_config_block,
}
