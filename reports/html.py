"""`report.html`: one self-contained page that opens offline, from a `Sweep`.

plotly.js is embedded once, inline, in the page's head (`plotly.offline.get_plotlyjs`, the
bundle `include_plotlyjs=True` would embed in each figure); each figure is a div with a
stable id (`PLOT_IDS`) that only calls it. No CDN, no web font, no link off the page: the
page's own markup names no URL at all (the plotly.js bundle holds some as text, for map and
geo traces and Chart Studio links this report never draws or shows), and no directory of the
machine it was built on: the sweep is named by its folder's name, episode videos are linked
relative to the page.

A plot that would say nothing is left out or replaced by a table (`sections`): success
against delay where no delay is swept, the heat maps of a one-config report.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from reports import figures, tables
from reports.sweep import Sweep
from reports.timeline import timeline

PLOT_IDS = ("plot-success-matrix", "plot-success-vs-delay", "plot-latency-cdf", "plot-timeline",
            "plot-failsafe")
"""The ids of every plot div a page may have, in page order (`sections` leaves some out);
the config table is `TABLE_ID`."""

TABLE_ID = tables.CONFIG_TABLE_ID

PLOT_CONFIG = {"displaylogo": False, "responsive": True}
"""plotly's options: no logo link to plotly.com."""

STYLE = """
body { font-family: system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif;
       margin: 1.5em; color: #222; }
section { margin-bottom: 2em; }
.table-wrap { overflow-x: auto; max-width: 100%; }
.episodes { max-height: 28em; overflow-y: auto; }
table { border-collapse: collapse; font-size: 12px; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; white-space: nowrap; }
th { background: #f2f2f2; }
td.failure { background: #fc9272; }
.missing { color: #a40000; }
.note { color: #555; font-size: 14px; }
"""


@dataclass(frozen=True)
class Section:
    """One part of the page: a plot (`figure`, drawn in a div `div_id`) or markup
    (`body`: a table, a line of text), with a note under its heading."""

    title: str
    div_id: str | None = None
    figure: go.Figure | None = None
    body: str = ""
    note: str = ""


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


def one_config(sweep: Sweep) -> bool:
    """True if exactly one config has episodes: its heat maps would be one row, shaded
    against itself, so the page shows tables instead."""
    return int((sweep.configs["episodes"] > 0).sum()) == 1


def sections(sweep: Sweep, page_dir: Path, *, timeline_episodes: int = 3) -> list[Section]:
    """The page's parts in order (see the module docstring for what is left out)."""
    single, swept = one_config(sweep), figures.delay_swept(sweep)
    delays = sorted(sweep.configs.loc[sweep.configs["episodes"] > 0, "injected_delay_s"])
    no_delay = "" if swept or not delays else (
        "No success-vs-delay plot: every config injects the same one-way delay "
        f"({delays[0] * 1e3:g} ms).")
    return [
        Section("Success per config", body=tables.success_table(sweep), note=no_delay)
        if single else Section("Success per config", PLOT_IDS[0],
                               figures.success_matrix(sweep), note=no_delay),
        *([Section("Success rate vs injected delay", PLOT_IDS[1],
                   figures.success_vs_delay(sweep))] if swept else []),
        Section("Round-trip latency", PLOT_IDS[2], figures.latency_cdf(sweep)),
        Section("Client state per episode, with fault windows", PLOT_IDS[3],
                timeline(sweep, per_config=timeline_episodes)),
        Section("Fail-safe figures", body=tables.failsafe_table(sweep)) if single
        else Section("Fail-safe figures", PLOT_IDS[4], figures.failsafe_heatmap(sweep)),
        Section("Failed episodes and videos", body=tables.episode_table(sweep, page_dir)),
        Section("Configs", body=tables.config_table(sweep)),
    ]


def _section_html(section: Section) -> str:
    note = f'<p class="note">{html.escape(section.note)}</p>' if section.note else ""
    body = section.body if section.figure is None else _figure_div(section.figure,
                                                                   section.div_id)
    return f"<section><h2>{html.escape(section.title)}</h2>{note}{body}</section>"


def render_report(sweep: Sweep, *, timeline_episodes: int = 3,
                  page_dir: Path | None = None) -> str:
    """The whole page as one string (see the module docstring), for a page written into
    `page_dir` (default: the sweep's root), which video links are relative to. Reads only
    the traces of the timeline's episodes."""
    parts = sections(sweep, sweep.root if page_dir is None else page_dir,
                     timeline_episodes=timeline_episodes)
    found, expected = int(sweep.configs["episodes"].sum()), sweep.configs["expected_episodes"]
    summary = (f"{len(sweep.configs)} config(s), {found} episode(s)"
               + (f" of {int(expected.sum())} expected" if expected.notna().all() else "")
               + f", in {html.escape(sweep.root.resolve().name)}")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<title>Benchmark report</title>"
        f"<style>{STYLE}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head>'
        f"<body><h1>Benchmark report</h1><p>{summary}</p>{_missing_section(sweep)}"
        f"{''.join(_section_html(s) for s in parts)}</body></html>\n")


def write_report(sweep: Sweep, path: Path, *, timeline_episodes: int = 3) -> Path:
    """Write `render_report` to `path` (creating its folder), its video links relative to
    `path`'s folder; returns `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(sweep, timeline_episodes=timeline_episodes,
                                  page_dir=path.parent), encoding="utf-8")
    return path
