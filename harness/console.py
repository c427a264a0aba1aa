"""The one rich console every job prints its tables to."""

from __future__ import annotations

import sys

from rich.console import Console


def make_console() -> Console:
    """A console wide enough for the table even when output goes to a file or a pipe."""
    return Console() if sys.stdout.isatty() else Console(width=110)
