"""The config table on the terminal: a readable subset of `Sweep.configs` (the files and the
HTML report have every column)."""

from __future__ import annotations

import math
import sys

from rich.console import Console
from rich.table import Table

from reports.sweep import Sweep


def make_console() -> Console:
    """The terminal's console, or a wide one when output goes to a file or a pipe (a config
    label is long)."""
    return Console() if sys.stdout.isatty() else Console(width=200)


def _number(value: float, form: str = "{:.2f}", scale: float = 1.0) -> str:
    return "-" if value is None or math.isnan(value) else form.format(value * scale)


def _figure(config, name: str) -> float:
    """A figure of a config row; NaN if the table has no such column (no episode at all)."""
    return getattr(config, name, math.nan)


def config_rich_table(sweep: Sweep) -> Table:
    """One row per config: its swept overrides, episodes found/expected, success with its
    Wilson 95% interval, latency percentiles and the share over budget, fail-safe figures."""
    table = Table(title=f"{len(sweep.configs)} config(s) in {sweep.root}")
    table.add_column("config", overflow="fold", max_width=60)
    for header in ("episodes", "success (Wilson 95%)", "latency p50/p95/p99 ms",
                   "over budget", "detect/recover p50 s", "blind s", "breaches", "dead"):
        table.add_column(header, justify="right", no_wrap=True)
    table.add_column("mechanisms")
    for c in sweep.configs.itertuples():
        expected = _number(c.expected_episodes, "{:.0f}").replace("-", "?")
        success = "-" if not c.episodes else (
            f"{c.success_rate:.0%} ({c.wilson95_low:.0%}-{c.wilson95_high:.0%})")
        latency = "/".join(_number(_figure(c, f"latency_p{q}_s"), "{:.1f}", 1e3)
                           for q in (50, 95, 99))
        failsafe = "/".join(_number(_figure(c, f"time_to_{what}_s_p50"))
                            for what in ("detect", "recover"))
        table.add_row(c.label, f"{c.episodes}/{expected}", success, latency,
                      _number(c.over_budget_share, "{:.0%}"), failsafe,
                      _number(_figure(c, "blind_s")), str(c.invariant_breaches),
                      str(c.dead_episodes),
                      c.fault_mechanisms if isinstance(c.fault_mechanisms, str) else "-")
    return table


def print_configs(sweep: Sweep, console: Console | None = None) -> None:
    """Print the config table to `console` (default: `make_console()`)."""
    (console or make_console()).print(config_rich_table(sweep))
