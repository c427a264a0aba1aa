"""The report's timeline: the client's state per tick over a few episodes of one config, with
the fault windows drawn on them, and a menu to pick the config. It opens on the config with
the most fault events (the one most worth a look), not on the first.
"""

from __future__ import annotations

import logging
import math

import pandas as pd
import plotly.graph_objects as go

from harness.client.states import ClientState
from harness.results.failsafe import FaultSpan, fault_spans
from harness.results.overlay import STATE_COLOURS as VIDEO_STATE_COLOURS
from reports import traces
from reports.figures import FONT, empty
from reports.sweep import Sweep

log = logging.getLogger(__name__)

STATE_COLOURS = {state.value: "#{:02x}{:02x}{:02x}".format(*VIDEO_STATE_COLOURS[state.value])
                 for state in ClientState}
"""The client engine's states in the colours its episode videos draw them
(`harness.results.overlay`): green (all well), yellow, orange, purple, red (DEAD, gave up),
so a video linked from the report reads as its timeline does."""

FAULT_COLOURS = ("#2171b5", "#17becf", "#8c564b", "#e377c2", "#636363", "#bcbd22", "#08306b")
"""The fault windows' lanes, one colour per fault kind (sorted): none of the state colours,
so a window never reads as a state."""

BAR_HALF = 0.22
"""Half the height of an episode's state bar, in rows; its fault lanes sit above it."""

TITLE = "Client state per episode"

MENU_TOP_PX = 48
"""The config menu's top edge, in pixels below the figure's top: under the title, which
sits in the top 40 px; the plot starts `MARGIN_TOP_PX` down (less with no menu)."""

MARGIN_TOP_PX = 100


def pick_episodes(episodes: pd.DataFrame, count: int) -> pd.DataFrame:
    """The `count` episodes of one config most worth a look: failures first, then the
    longest blind, then in (task, episode) order."""
    ranked = episodes.assign(failed=~episodes["success"].fillna(False).astype(bool),
                             blind=episodes.get("blind_s", 0.0))
    return ranked.sort_values(["failed", "blind", "task", "episode"],
                              ascending=[False, False, True, True]).head(count)


def fault_event_counts(events: pd.DataFrame) -> pd.Series:
    """Per config: its events that name a fault (window starts and ends, lifts), less the
    `ready` phases; configs without any are absent."""
    if not {"config", "fault"} <= set(events.columns):
        return pd.Series(dtype=int)
    named = events[events["fault"].notna()
                   & events.reindex(columns=["phase"])["phase"].ne("ready")]
    return named.groupby("config", sort=False).size()


def _episode_events(events: pd.DataFrame, config: str, task: int, episode: int) -> list[dict]:
    """The episode's fault start and end events, as `fault_spans` reads them."""
    if not {"config", "task", "episode", "fault"} <= set(events.columns):
        return []
    mine = events[(events["config"] == config) & (events["task"] == task)
                  & (events["episode"] == episode) & events["fault"].notna()]
    return mine[["fault", "phase", "control_s"]].to_dict("records")


def _window_shapes(spans: list[FaultSpan], y: int, end_s: float, faults: list[str]
                   ) -> list[dict]:
    """Each fault window of the episode drawn at row `y`: a named strip in its fault's lane
    above the state bar, and a dotted outline over the bar (a window with no end event
    lasts to the episode's end, `end_s`)."""
    lanes = list(dict.fromkeys(span.fault for span in spans))
    lane_height = (0.5 - BAR_HALF - 0.02) / max(len(lanes), 1)
    shapes = []
    for span in spans:
        x1, colour = end_s if span.end_s is None else span.end_s, \
            FAULT_COLOURS[faults.index(span.fault) % len(FAULT_COLOURS)]
        top = y - 0.48 + lanes.index(span.fault) * lane_height
        shapes.append(dict(type="rect", xref="x", yref="y", x0=span.start_s, x1=x1, y0=top,
                           y1=top + lane_height, fillcolor=colour, opacity=0.8,
                           line=dict(width=0), layer="above",
                           label=dict(text=span.fault, textposition="middle left",
                                      font=dict(size=9, color="white"))))
        shapes.append(dict(type="rect", xref="x", yref="y", x0=span.start_s, x1=x1,
                           y0=y - BAR_HALF, y1=y + BAR_HALF, fillcolor="rgba(0,0,0,0)",
                           line=dict(width=1.5, color=colour, dash="dot"), layer="above"))
    return shapes


def _draw_config(figure: go.Figure, sweep: Sweep, config: str, episodes: pd.DataFrame,
                 per_config: int, faults: list[str]) -> tuple[list[dict], list[str]]:
    """Add one config's state bars to `figure` (hidden); returns its (shapes, row ticks)."""
    shapes, ticks, in_legend = [], [], set()
    for y, row in enumerate(pick_episodes(episodes, per_config).itertuples()):
        dt_s = row.dt_s
        if math.isnan(dt_s):
            log.warning("config %s: task %d episode %d: no control period in its row; its "
                        "timeline counts ticks as seconds", config, row.task, row.episode)
            dt_s = 1.0
        segments = traces.state_segments(sweep.trace_path(config, row.task, row.episode), dt_s)
        ticks.append(f"task {row.task} ep {row.episode} {'✓' if row.success else '✗'}")
        for state, runs in segments.groupby("state", sort=False):
            figure.add_trace(go.Bar(
                orientation="h", y=[y] * len(runs), base=runs["start_s"],
                x=runs["end_s"] - runs["start_s"], width=2 * BAR_HALF, name=state,
                legendgroup=state, marker_color=STATE_COLOURS.get(state, "#7f7f7f"),
                visible=False, showlegend=state not in in_legend,
                hovertemplate=f"{state}: %{{base:.2f}} s + %{{x:.2f}} s<extra></extra>"))
            in_legend.add(state)
        spans = fault_spans(_episode_events(sweep.events, config, row.task, row.episode))
        shapes += _window_shapes(spans, y, float(segments["end_s"].max()), faults)
    return shapes, ticks


def timeline(sweep: Sweep, per_config: int = 3) -> go.Figure:
    """The client's state per tick as coloured segments over control time, with the fault
    windows drawn on them (`_window_shapes`), for `per_config` episodes (`pick_episodes`,
    among those with a trace) of one config at a time. It opens on the config with the most
    fault events (`fault_event_counts`; on a tie the one with more failed episodes, then the
    first in sweep order); a menu under the title selects another (no menu for one
    config)."""
    faults = sorted(sweep.events["fault"].dropna().unique()) if "fault" in sweep.events else []
    figure, views = go.Figure(), []
    traced = sweep.episodes[sweep.episodes["has_trace"]]
    for config, episodes in traced.groupby("config", sort=False):
        first_trace = len(figure.data)
        shapes, ticks = _draw_config(figure, sweep, config, episodes, per_config, faults)
        views.append((config, range(first_trace, len(figure.data)), shapes, ticks))
    if not views:
        return empty(TITLE, "no episodes")

    def view(indices: range, shapes: list[dict], ticks: list[str]) -> tuple[dict, dict]:
        """One config's (trace visibility, layout in `relayout`'s dotted keys)."""
        return ({"visible": [i in indices for i in range(len(figure.data))]},
                {"shapes": shapes, "yaxis.tickvals": list(range(len(ticks))),
                 "yaxis.ticktext": ticks, "yaxis.range": [len(ticks) - 0.5, -0.5]})

    counts = fault_event_counts(sweep.events)
    failed = sweep.configs["episodes"] - sweep.configs["successes"]
    active = max(range(len(views)), key=lambda i: (counts.get(views[i][0], 0),
                                                   failed.get(views[i][0], 0), -i))
    labels = sweep.configs["label"]
    buttons = [dict(method="update", label=labels[config], args=list(view(*rest)))
               for config, *rest in views]
    visible, layout = view(*views[active][1:])
    for trace, shown in zip(figure.data, visible["visible"], strict=True):
        trace.visible = shown
    rows = max(len(ticks) for *_, ticks in views)
    top_px = MARGIN_TOP_PX if len(views) > 1 else MENU_TOP_PX + 12
    height = top_px + 80 + max(90 * rows, 120)
    title = TITLE if len(views) > 1 else f"{TITLE}: {labels[views[0][0]]}"
    figure.update_layout(
        barmode="overlay", font=FONT, height=height, xaxis_title="control time (s)",
        legend_title="client state", margin=dict(t=top_px, b=80),
        shapes=layout["shapes"],
        title=dict(text=title, x=0, xref="paper", y=1, yref="container", yanchor="top",
                   pad=dict(t=12)),
        yaxis=dict(tickvals=layout["yaxis.tickvals"], ticktext=layout["yaxis.ticktext"],
                   range=layout["yaxis.range"]))
    if len(views) > 1:
        plot_px = height - MARGIN_TOP_PX - 80
        figure.update_layout(updatemenus=[dict(
            buttons=buttons, active=active, showactive=True, type="dropdown",
            x=0, xanchor="left", y=1 + (MARGIN_TOP_PX - MENU_TOP_PX) / plot_px,
            yanchor="top", pad=dict(t=0, b=0))],
            annotations=[dict(text="config:", showarrow=False, xref="paper", yref="paper",
                              x=0, xanchor="right", xshift=-8,
                              y=1 + (MARGIN_TOP_PX - MENU_TOP_PX) / plot_px, yanchor="top",
                              yshift=-4)])
    return figure
