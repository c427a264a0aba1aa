"""The `python -m harness policy=remote ...` commands the documentation gives, one per
protocol, read from the page itself (docs/remote.md): the test that runs them runs what a
reader copies, and fails when a documented command stops working, not when a copy of it kept
in a test does."""

from __future__ import annotations

import shlex
from pathlib import Path

PAGE = Path(__file__).resolve().parents[3] / "docs" / "remote.md"
SECTION = "## Remote model servers"
"""The heading the commands' section starts with; it ends at the next `## ` heading."""
PREFIX = ["python", "-m", "harness"]


def documented_commands(text: str | None = None) -> list[tuple[str, list[str]]]:
    """(protocol, overrides) of each `python -m harness` command in the page's remote
    section (in a fenced or an indented code block; a trailing backslash continues a line),
    in order; overrides as the shell hands them over (quotes removed)."""
    text = PAGE.read_text() if text is None else text
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    command = " ".join(PREFIX) + " "
    commands, pending, fenced = [], "", False
    for line in text[start:end if end >= 0 else None].splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        starts = (line.lstrip().startswith(command) if fenced
                  else line.startswith("    " + command))
        if not pending and not starts:
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
