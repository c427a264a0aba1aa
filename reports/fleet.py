"""The fleet load test's page (`python -m harness.bench.fleet` writes it beside fleet.csv):
one self-contained HTML report, like a sweep's, with the table of every replica count and a
plot of the served rate against min(demand, supply) and the p99 round trip against the
budget."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from reports.html import STYLE, Section, _section_html

FLEET_PLOT_ID = "plot-fleet"
COLUMNS = {"replicas": "replicas", "robots": "robots", "opened": "sessions opened",
           "closed": "sessions closed", "sessions_left": "sessions left", "breaches": "breaches",
           "errors": "error replies", "demand_per_s": "demand obs/s",
           "expected_per_s": "min(demand, supply) obs/s", "served_per_s": "served obs/s",
           "p50_ms": "p50 ms", "p99_ms": "p99 ms", "budget_ms": "budget ms",
           "least_served_robot": "least served robot"}


def fleet_table(rows: pd.DataFrame) -> str:
    shown = rows[[c for c in COLUMNS if c in rows]].rename(columns=COLUMNS)
    return ('<div class="table-wrap">'
            + shown.to_html(index=False, float_format=lambda v: f"{v:.1f}", border=0)
            + "</div>")


def fleet_figure(rows: pd.DataFrame) -> go.Figure:
    figure = make_subplots(rows=1, cols=2, subplot_titles=(
        "served against min(demand, supply)", "p99 round trip against the budget"))
    replicas = rows["replicas"].astype(str)
    figure.add_bar(x=replicas, y=rows["served_per_s"], name="served obs/s", row=1, col=1)
    figure.add_scatter(x=replicas, y=rows["expected_per_s"], name="min(demand, supply)",
                       mode="markers+lines", row=1, col=1)
    figure.add_bar(x=replicas, y=rows["p99_ms"], name="p99 ms", row=1, col=2)
    figure.add_scatter(x=replicas, y=rows["budget_ms"], name="budget", mode="lines",
                       row=1, col=2)
    figure.update_xaxes(title_text="replicas")
    figure.update_layout(height=420, barmode="group")
    return figure


def write_fleet_report(rows: pd.DataFrame, path: Path, *, title: str) -> Path:
    """report.html of a fleet run at `path`; returns it."""
    parts = [Section("Fleet load test", FLEET_PLOT_ID, fleet_figure(rows)),
             Section("Every replica count", body=fleet_table(rows),
                     note="Every session must be opened and closed, none left on the "
                          "replicas, and no breach.")]
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<title>Fleet report</title>"
            f"<style>{STYLE}</style>"
            f'<script type="text/javascript">{get_plotlyjs()}</script></head>'
            f"<body><h1>Fleet report</h1><p>{html.escape(title)}</p>"
            f"{''.join(_section_html(s) for s in parts)}</body></html>\n")
    path.write_text(page)
    return path
