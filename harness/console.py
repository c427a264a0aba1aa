"""The one rich console every job prints its tables to."""

from __future__ import annotations

import sys

from rich.console import Console


def make_console() -> Console:
    """A console of 100 columns when output goes to a file or a pipe (a terminal: its own)."""
    return Console() if sys.stdout.isatty() else Console(width=100)
