"""A run's summary on the console, and the exit status it earns.

The job passes plain values (the summary `ResultsStore.summarize` returned, and the few
config values the table names), so this module knows no job, config or fault schema.
"""

from __future__ import annotations

import logging

from rich.table import Table

from harness.console import make_console
from harness.results.failsafe import failsafe_console_items

log = logging.getLogger(__name__)


def exit_status(summary: dict) -> int:
    """1 (logged in one line) if the run measured nothing: the server rejected the sessions,
    or no chunk was ever received; else 0."""
    if summary["rejected_episodes"]:
        log.error("the policy server rejected the session in %d of %d episodes: %s",
                  summary["rejected_episodes"], summary["episodes"], summary["first_dead_reason"])
        return 1
    if summary["chunks_received"] == 0:
        log.error("no episode was served: no chunk arrived in %d episodes (%s)",
                  summary["episodes"], summary["first_dead_reason"] or "no DEAD reason")
        return 1
    return 0


def print_summary(summary: dict, *, title: str, faults: str, faults_apply: str,
                  client_mode: str) -> None:
    """The run's table (success with its Wilson interval, latency percentiles, fail-safe
    counts) under `title`, then one line each on the faults that ran (`faults`, applied
    `faults_apply`), the execution mode when it was not `client_mode`, trimming, and the
    fail-safe states."""
    table = Table(title=title)
    for column in ("episodes", "success (Wilson 95%)", "round trip ms p50/p95/p99",
                   "over budget", "fallback", "breaches", "DEAD"):
        table.add_column(column, justify="right", no_wrap=column.startswith("round"))

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1e3:.1f}"

    low, high = summary["success_wilson95"]
    table.add_row(
        str(summary["episodes"]), f"{summary['success_rate']:.0%} ({low:.0%}-{high:.0%})",
        "/".join(ms(summary[k]) for k in ("latency_p50_s", "latency_p95_s", "latency_p99_s")),
        f"{summary['latency_over_budget']} trips", f"{summary['fallback_ticks']} ticks",
        str(summary["invariant_breaches"]), f"{summary['dead_episodes']} episodes")
    console = make_console()
    console.print(table)
    console.print("fallback: ticks with no usable action (the hold action); every episode's "
                  "first ticks are, while its first chunk is on its way", style="dim")
    if summary.get("faults_started"):
        console.print(f"faults={faults} ({faults_apply}): {summary['faults_started']} windows "
                      "through " + "; ".join(summary["fault_mechanisms"]))
    execution = summary.get("execution") or []
    if execution != [client_mode]:  # e.g. delay_aware asked of a model that is not
        console.print("execution: " + "; ".join(execution or ["no episode started a session"]))
    console.print(f"client={client_mode}: {summary['actions_trimmed']} chunk actions "
                  f"trimmed as stale, median episode {summary['steps_median']} steps")
    items = failsafe_console_items(summary)
    if items:
        console.print("fail-safe: " + ", ".join(f"{label} {value}" for label, value in items))
