"""The `python -m harness policy=remote ...` commands README.md documents, one per protocol,
read from the README itself: the test that runs them runs what a reader copies, and fails
when a documented command stops working, not when a copy of it kept in a test does."""

from __future__ import annotations

import shlex
from pathlib import Path

README = Path(__file__).resolve().parents[3] / "README.md"
SECTION = "## Remote model servers"
PREFIX = ["python", "-m", "harness"]


def documented_commands(text: str | None = None) -> list[tuple[str, list[str]]]:
    """(protocol, overrides) of each `python -m harness` command in the README's remote
    section (an indented block; a trailing backslash continues a line), in order; overrides
    as the shell hands them over (quotes removed)."""
    text = README.read_text() if text is None else text
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    commands, pending = [], ""
    for line in text[start:end if end >= 0 else None].splitlines():
        if not pending and not line.startswith("    " + " ".join(PREFIX) + " "):
            continue
        pending = f"{pending} {line.strip()}".strip()
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        words = shlex.split(pending, comments=True)[len(PREFIX):]
        commands.append((value(words, "policy.protocol"), words))
        pending = ""
    return commands


def key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def value(overrides: list[str], name: str) -> str | None:
    """The value `overrides` give `name`, or None."""
    found = [o.split("=", 1)[1] for o in overrides if key(o) == name and "=" in o]
    return found[-1] if found else None


def replaced(overrides: list[str], values: dict[str, object]) -> list[str]:
    """`overrides` with each `name: value` of `values` set in place of the documented one, or
    appended where none is documented."""
    wanted = {name: f"{name}={v}" for name, v in values.items()}
    out = [wanted.pop(key(o), o) for o in overrides]
    return out + list(wanted.values())
