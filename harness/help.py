"""`python -m harness --help`, with its choice lists read from `conf/` and the registries.

Hydra's own help lists every entry of the ConfigStore under a group, so the schemas
(`transport=zmq_schema`) read as choices, and anything hand-copied into the help text goes
stale as soon as a transport or a fault kind is registered. Here every list is computed:
a group's choices are its YAML files, and the names a field takes (fault kinds, remote
protocols, env names) come from the registries that resolve them.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from omegaconf import OmegaConf

from envs import env_names
from harness.config import config_dir, group_options
from harness.faults.kinds import kind_names
from policies.registry import policy_names
from policies.remote.protocols import protocol_names
from transports import transport_names

FOOTER = """\
Check a command without running it (one line per job of a sweep):
  python -m harness --check [-m] overrides...
Every field and its value: python -m harness --cfg job [overrides...]
Hydra's own flags: python -m harness --hydra-help
HARNESS_PORT_OFFSET=N moves every default listen port up by N (two runs on one host)."""


def registry_lines() -> list[str]:
    """What the registries hold: names a field accepts besides a group's YAML choice."""
    return [f"transport.kind: {', '.join(transport_names())}",
            f"policy.name: {', '.join(policy_names())} (yours: policy=custom "
            "policy.target=my_pkg.module:Class)",
            f"policy.protocol (policy=remote): {', '.join(protocol_names())}",
            f"env.name: {', '.join(env_names())} (or my_pkg.module:FAMILY)",
            f"fault kinds (faults.timed[].kind): {', '.join(kind_names())}"]


def group_lines() -> list[str]:
    """`group: choice, ...` for every config group of `conf/`."""
    groups = sorted(p.name for p in Path(config_dir()).iterdir()
                    if p.is_dir() and p.name != "hydra" and any(p.glob("*.yaml")))
    lines = [f"{group}: {', '.join(group_options(group))}" for group in groups]
    return [line.replace("experiment:", "+experiment:", 1) for line in lines]


def harness_help(header: str, config_yaml: str) -> str:
    """The whole help text: Hydra's header from conf/config.yaml, the groups and registries,
    the composed default config, and how to check a command."""
    return "\n".join([
        header.rstrip(), "",
        "== Configuration groups == (group=choice)", *_wrapped(group_lines()), "",
        "== Registered names == (field=name)", *_wrapped(registry_lines()), "",
        "== Config == (any field: foo.bar=value)", config_yaml.rstrip(), "",
        FOOTER, ""])


def _wrapped(lines: list[str]) -> list[str]:
    """Each line in 100 columns, continued with an indent."""
    return [wrapped for line in lines
            for wrapped in textwrap.wrap(line, 100, subsequent_indent="    ",
                                         break_on_hyphens=False)]


def help_for_defaults(compose) -> str:
    """`harness_help` of the default config, composed by `compose(overrides)` (which returns
    the config with its `hydra` node)."""
    cfg = compose([])
    header = str(cfg.hydra.help.header)
    config = OmegaConf.to_container(cfg, resolve=False)
    config.pop("hydra")
    return harness_help(header, OmegaConf.to_yaml(config))
