"""`report.html`: one self-contained page that opens offline, from a `Sweep`.

plotly.js is embedded once, inline, in the page's head (`plotly.offline.get_plotlyjs`, the
bundle `include_plotlyjs=True` would embed in each figure); each figure is a div with a
stable id (`PLOT_IDS`) that only calls it. No CDN, no web font, no link off the page: the
page's own markup names no URL at all (the plotly.js bundle holds some as text, for map and
geo traces and Chart Studio links this report never draws or shows).
"""

from __future__ import annotations

import html
from pathlib import Path

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from reports import figures
from reports.sweep import Sweep

PLOT_IDS = ("plot-success-matrix", "plot-success-vs-delay", "plot-latency-cdf", "plot-timeline",
            "plot-failsafe")
"""The ids of the page's plot divs, in page order; the config table is `table-configs`."""

TABLE_ID = "table-configs"

PLOT_CONFIG = {"displaylogo": False, "responsive": True}
"""plotly's options: no logo link to plotly.com."""

STYLE = """
body { font-family: system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif;
       margin: 1.5em; color: #222; }
section { margin-bottom: 2em; }
.table-wrap { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: 12px; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; white-space: nowrap; }
th { background: #f2f2f2; }
.missing { color: #a40000; }
"""


def _figure_div(figure: go.Figure, div_id: str) -> str:
    return figure.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                          config=PLOT_CONFIG, default_width="100%",
                          default_height=f"{figure.layout.height or 480}px")


def _missing_section(sweep: Sweep) -> str:
    """What the sweep lacks and what it holds twice, as lists; empty for a whole sweep."""
    items = [f"config {c}: no job directory" for c in sweep.missing.configs]
    items += [f"config {c}: shard {s} has no job directory" for c, s in sweep.missing.shards]
    for config, group in sweep.missing.episodes.groupby("config", sort=False):
        episodes = ", ".join(f"{t}/{e}" for t, e in zip(group["task"], group["episode"],
                                                        strict=True))
        items.append(f"config {config}: {len(group)} episode(s) missing (task/episode: "
                     f"{episodes})")
    items += [f"config {d.config}: task {d.task} episode {d.episode} is in both "
              f"{d.kept_dir} and {d.dropped_dir}; counted once"
              for d in sweep.duplicates.itertuples()]
    if not items:
        return ""
    listed = "".join(f"<li>{html.escape(item)}</li>" for item in items)
    return f'<section id="missing" class="missing"><h2>Missing</h2><ul>{listed}</ul></section>'


def _config_table(sweep: Sweep) -> str:
    table = sweep.configs.reset_index().to_html(
        index=False, na_rep="-", float_format=lambda v: f"{v:.4g}", border=0)
    return f'<div id="{TABLE_ID}" class="table-wrap">{table}</div>'


def render_report(sweep: Sweep, *, timeline_episodes: int = 3) -> str:
    """The whole page as one string (see the module docstring). Reads only the traces of
    the timeline's episodes."""
    sections = [
        ("Success per config", figures.success_matrix(sweep)),
        ("Success rate vs injected delay", figures.success_vs_delay(sweep)),
        ("Round-trip latency", figures.latency_cdf(sweep)),
        ("Client state per episode, with fault windows",
         figures.timeline(sweep, per_config=timeline_episodes)),
        ("Fail-safe figures", figures.failsafe_heatmap(sweep)),
    ]
    plots = "".join(f"<section><h2>{html.escape(title)}</h2>{_figure_div(figure, div_id)}"
                    f"</section>" for (title, figure), div_id in zip(sections, PLOT_IDS,
                                                                     strict=True))
    found, expected = int(sweep.configs["episodes"].sum()), sweep.configs["expected_episodes"]
    summary = (f"{len(sweep.configs)} config(s), {found} episode(s)"
               + (f" of {int(expected.sum())} expected" if expected.notna().all() else "")
               + f", from {html.escape(str(sweep.root))}")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<title>Benchmark report</title>"
        f"<style>{STYLE}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head>'
        f"<body><h1>Benchmark report</h1><p>{summary}</p>{_missing_section(sweep)}{plots}"
        f"<section><h2>Configs</h2>{_config_table(sweep)}</section></body></html>\n")


def write_report(sweep: Sweep, path: Path, *, timeline_episodes: int = 3) -> Path:
    """Write `render_report` to `path` (creating its folder); returns `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(sweep, timeline_episodes=timeline_episodes),
                    encoding="utf-8")
    return path
