"""The report's plotly figures, each from a `Sweep` alone (no file reads but the timeline's
traces). Every figure draws something for any sweep with at least one episode; with none it
is an empty figure saying so.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from statsmodels.stats.proportion import proportion_confint

from harness.client.states import ClientState
from harness.results.failsafe import FaultSpan, fault_spans
from reports import traces
from reports.sweep import Sweep

log = logging.getLogger(__name__)

STATE_COLOURS = {ClientState.CONNECTING.value: "#9e9e9e", ClientState.STREAMING.value: "#2ca02c",
                 ClientState.DEGRADED.value: "#e6b800", ClientState.STALLED.value: "#ff7f0e",
                 ClientState.RECONNECTING.value: "#d62728", ClientState.DEAD.value: "#222222"}
"""The client engine's states, green (all well) to black (gave up)."""

FONT = dict(family="system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif")
"""Fonts the machine has: no web font is loaded."""

CDF_POINTS = 201
"""Quantiles drawn per latency CDF: the file stays small whatever the sweep's size."""

FAILSAFE = {"time_to_detect_s_p50": "detect p50 s", "time_to_detect_s_max": "detect max s",
            "time_to_recover_s_p50": "recover p50 s", "time_to_recover_s_max": "recover max s",
            "faults_undetected": "undetected", "faults_unrecovered": "unrecovered",
            "blind_s": "blind s", "blind_path_m_max": "blind path max m",
            "blind_peak_speed_mps_max": "blind peak m/s", "stale_actions": "stale actions",
            "requests_lost": "requests lost", "sessions_reopened": "re-opens",
            "invariant_breaches": "breaches", "dead_episodes": "dead episodes"}
"""Config column: heat-map column title."""


def _empty(title: str, why: str) -> go.Figure:
    figure = go.Figure(layout=dict(title=title, font=FONT))
    figure.add_annotation(text=why, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
    return figure


def _others(sweep: Sweep) -> list[str]:
    """The swept keys that are neither the transport nor what sets the injected delay (a
    `faults` preset or a fault's delay): what tells a transport's series apart."""
    return [k for k in sweep.swept_keys
            if k != "transport" and "delay" not in k and k.split(".")[0] != "faults"]


def _series(configs: pd.DataFrame, others: list[str]) -> pd.Series:
    """Each config's series in the success-vs-delay plot: its transport, and the other
    swept overrides (`_others`)."""
    names = configs["transport_kind"].fillna("?").astype(str)
    for key in others:
        names = names + " " + key + "=" + configs[key].astype(str)
    return names


def success_vs_delay(sweep: Sweep) -> go.Figure:
    """Success rate against the injected one-way delay, one series per transport (and per
    other swept override but the faults), with Wilson 95% error bars, and a band where a
    series has more than one delay. Configs of one series at one delay (in a fault matrix:
    every fault preset that adds no delay) are pooled into one point, its interval from the
    pooled counts; the success matrix shows them apart. Series are dodged sideways a little
    so that points at one delay do not hide each other; the axis ticks are the delays."""
    configs = sweep.configs[sweep.configs["episodes"] > 0]
    if configs.empty:
        return _empty("Success rate vs injected delay", "no episodes")
    configs = configs.assign(series=_series(configs, _others(sweep)))
    pooled = (configs.groupby(["series", "injected_delay_s"], sort=True)
              .agg(successes=("successes", "sum"), episodes=("episodes", "sum"),
                   labels=("label", lambda labels: "<br>".join(labels)))
              .reset_index())
    pooled["success_rate"] = pooled["successes"] / pooled["episodes"]
    pooled["wilson95_low"], pooled["wilson95_high"] = proportion_confint(
        pooled["successes"], pooled["episodes"], alpha=0.05, method="wilson")
    delays_ms = np.sort(pooled["injected_delay_s"].unique() * 1e3)
    series = pooled.groupby("series", sort=True)
    dodge_ms = 0.015 * (np.ptp(delays_ms) or 20.0)
    figure, palette = go.Figure(), qualitative.Plotly
    for i, (name, points) in enumerate(series):
        colour = palette[i % len(palette)]
        x_ms = points["injected_delay_s"].to_numpy() * 1e3 + (i - (series.ngroups - 1) / 2) \
            * dodge_ms
        if points["injected_delay_s"].nunique() > 1:
            figure.add_trace(go.Scatter(
                x=[*x_ms, *x_ms[::-1]],
                y=[*points["wilson95_high"], *points["wilson95_low"].to_numpy()[::-1]],
                fill="toself", fillcolor=colour, opacity=0.15, line=dict(width=0),
                hoverinfo="skip", showlegend=False, legendgroup=name))
        figure.add_trace(go.Scatter(
            x=x_ms, y=points["success_rate"], name=name, legendgroup=name,
            mode="lines+markers" if len(points) > 1 else "markers",
            marker=dict(color=colour, size=9), line=dict(color=colour),
            error_y=dict(type="data", array=points["wilson95_high"] - points["success_rate"],
                         arrayminus=points["success_rate"] - points["wilson95_low"]),
            customdata=np.stack([points["labels"], points["successes"], points["episodes"],
                                 points["injected_delay_s"] * 1e3], axis=-1),
            hovertemplate="%{customdata[0]}<br>delay %{customdata[3]} ms: "
                          "%{customdata[1]}/%{customdata[2]} = %{y:.0%}<extra></extra>"))
    figure.update_layout(title="Success rate vs injected one-way delay (Wilson 95%)",
                         xaxis=dict(title="injected one-way delay (ms)", tickvals=delays_ms,
                                    range=[delays_ms[0] - 10 * dodge_ms,
                                           delays_ms[-1] + 10 * dodge_ms]),
                         yaxis=dict(title="success rate", range=[-0.05, 1.05],
                                    tickformat=".0%"), font=FONT)
    return figure


def success_matrix(sweep: Sweep) -> go.Figure:
    """Success per config at a glance: a transport per column, the rest of each config's
    swept overrides (the fault preset, the client settings) per row, each cell its success
    rate with its count and Wilson 95% interval."""
    configs = sweep.configs[sweep.configs["episodes"] > 0]
    if configs.empty:
        return _empty("Success per config", "no episodes")
    others = [k for k in sweep.swept_keys if k != "transport"]
    rows = (configs[others].astype(str).apply(lambda r: " ".join(
        f"{k}={v}" for k, v in r.items()), axis=1) if others
        else pd.Series("all", index=configs.index))
    cells = configs.assign(row=rows, column=configs["transport_kind"].fillna("?").astype(str))
    cells["text"] = [f"{s}/{n}<br>{lo:.0%}-{hi:.0%}" for s, n, lo, hi in zip(
        cells["successes"], cells["episodes"], cells["wilson95_low"], cells["wilson95_high"],
        strict=True)]
    order = list(dict.fromkeys(cells["row"]))
    columns = list(dict.fromkeys(cells["column"]))
    rate = cells.pivot_table(index="row", columns="column", values="success_rate",
                             aggfunc="first").reindex(index=order, columns=columns)
    text = cells.pivot_table(index="row", columns="column", values="text",
                             aggfunc="first").reindex(index=order, columns=columns)
    figure = go.Figure(go.Heatmap(
        z=rate.to_numpy(), x=columns, y=order, text=text.fillna("").to_numpy(),
        texttemplate="%{text}", colorscale="RdYlGn", zmin=0, zmax=1,
        colorbar=dict(title="success", tickformat=".0%"),
        hovertemplate="%{y} over %{x}<br>%{text}<extra></extra>"))
    figure.update_layout(title="Success per config (successes/episodes, Wilson 95%)",
                         font=FONT, height=220 + 46 * len(order),
                         yaxis=dict(autorange="reversed"), xaxis=dict(side="top"),
                         margin=dict(t=140))
    return figure


def latency_cdf(sweep: Sweep) -> go.Figure:
    """The round-trip latency's CDF per config (`CDF_POINTS` quantiles of every round trip
    its traces hold), with each distinct budget as a dashed line."""
    round_trips = sweep.round_trips.dropna(subset=["latency_s"])
    if round_trips.empty:
        return _empty("Round-trip latency CDF", "no round trips")
    figure = go.Figure()
    levels = np.linspace(0, 1, CDF_POINTS)
    for config, latency in round_trips.groupby("config", sort=False)["latency_s"]:
        figure.add_trace(go.Scatter(
            x=latency.quantile(levels).to_numpy() * 1e3, y=levels, mode="lines",
            name=sweep.configs.at[config, "label"],
            hovertemplate="%{x:.1f} ms: %{y:.0%}<extra>%{fullData.name}</extra>"))
    for budget_s in sweep.configs["latency_budget_s"].dropna().unique():
        figure.add_trace(go.Scatter(  # a trace, not a shape: shapes misplace on log axes
            x=[budget_s * 1e3] * 2, y=[0, 1], mode="lines", name=f"budget {budget_s * 1e3:g} ms",
            line=dict(dash="dash", color="#555"), hoverinfo="skip"))
    positive = bool((round_trips["latency_s"] > 0).all())
    figure.update_layout(title="Round-trip latency CDF (the latency the clock used)",
                         xaxis=dict(title="round trip (ms)", type="log" if positive else "linear"),
                         yaxis=dict(title="share of round trips", tickformat=".0%"), font=FONT)
    return figure


def pick_episodes(episodes: pd.DataFrame, count: int) -> pd.DataFrame:
    """The `count` episodes of one config most worth a look: failures first, then the
    longest blind, then in (task, episode) order."""
    ranked = episodes.assign(failed=~episodes["success"].fillna(False).astype(bool),
                             blind=episodes.get("blind_s", 0.0))
    return ranked.sort_values(["failed", "blind", "task", "episode"],
                              ascending=[False, False, True, True]).head(count)


BAR_HALF = 0.22
"""Half the height of an episode's state bar, in rows; its fault lanes sit above it."""


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
    palette = qualitative.Dark2
    shapes = []
    for span in spans:
        x1, colour = end_s if span.end_s is None else span.end_s, \
            palette[faults.index(span.fault) % len(palette)]
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


def timeline(sweep: Sweep, per_config: int = 3) -> go.Figure:
    """The client's state per tick as coloured segments over control time, with the fault
    windows drawn on them (`_window_shapes`), for `per_config` episodes (`pick_episodes`,
    among those with a trace) of one config at a time: a menu selects the config."""
    faults = sorted(sweep.events["fault"].dropna().unique()) if "fault" in sweep.events else []
    figure, views = go.Figure(), []
    traced = sweep.episodes[sweep.episodes["has_trace"]]
    for config, episodes in traced.groupby("config", sort=False):
        first_trace, shapes, ticks, in_legend = len(figure.data), [], [], set()
        for y, row in enumerate(pick_episodes(episodes, per_config).itertuples()):
            dt_s = row.dt_s
            if math.isnan(dt_s):
                log.warning("config %s: task %d episode %d: no control period in its row; "
                            "its timeline counts ticks as seconds", config, row.task,
                            row.episode)
                dt_s = 1.0
            segments = traces.state_segments(sweep.trace_path(config, row.task, row.episode),
                                             dt_s)
            ticks.append(f"task {row.task} ep {row.episode} {'✓' if row.success else '✗'}")
            for state, runs in segments.groupby("state", sort=False):
                figure.add_trace(go.Bar(
                    orientation="h", y=[y] * len(runs), base=runs["start_s"],
                    x=runs["end_s"] - runs["start_s"], width=2 * BAR_HALF, name=state,
                    legendgroup=state, marker_color=STATE_COLOURS.get(state, "#7f7f7f"),
                    visible=not views, showlegend=state not in in_legend,
                    hovertemplate=f"{state}: %{{base:.2f}} s + %{{x:.2f}} s<extra></extra>"))
                in_legend.add(state)
            end_s = float(segments["end_s"].max())
            spans = fault_spans(_episode_events(sweep.events, config, row.task, row.episode))
            shapes += _window_shapes(spans, y, end_s, faults)
        views.append((config, range(first_trace, len(figure.data)), shapes, ticks))
    if not views:
        return _empty("Client state per episode", "no episodes")

    def view_layout(config: str, shapes: list[dict], ticks: list[str]) -> dict:
        """The layout of one config's view, in `relayout`'s dotted keys."""
        return {"shapes": shapes, "yaxis.tickvals": list(range(len(ticks))),
                "yaxis.ticktext": ticks, "yaxis.range": [len(ticks) - 0.5, -0.5],
                "title.text": f"Client state per episode: {sweep.configs.at[config, 'label']}"}

    buttons = [dict(method="update", label=sweep.configs.at[config, "label"],
                    args=[{"visible": [i in indices for i in range(len(figure.data))]},
                          view_layout(config, shapes, ticks)])
               for config, indices, shapes, ticks in views]
    rows = max(len(ticks) for *_, ticks in views)
    first = view_layout(views[0][0], *views[0][2:])
    figure.update_layout(
        barmode="overlay", font=FONT, height=220 + 90 * rows, xaxis_title="control time (s)",
        legend_title="client state", margin=dict(t=140), shapes=first["shapes"],
        title_text=first["title.text"],
        yaxis=dict(tickvals=first["yaxis.tickvals"], ticktext=first["yaxis.ticktext"],
                   range=first["yaxis.range"]),
        updatemenus=[dict(buttons=buttons, x=0, xanchor="left", y=1.15, yanchor="bottom",
                          showactive=True)])
    return figure


def failsafe_heatmap(sweep: Sweep) -> go.Figure:
    """The fail-safe figures per config as a heat map: each column shaded against its own
    maximum (0 white), each cell showing its value; a blank cell has no value (no fault
    window, or no position)."""
    configs = sweep.configs[sweep.configs["episodes"] > 0]
    if configs.empty:
        return _empty("Fail-safe figures", "no episodes")
    values = configs.reindex(columns=list(FAILSAFE)).astype(float)
    maxima = values.max()
    shade = values.div(maxima.where(maxima > 0)).fillna(values * 0)  # a column of 0s: white
    text = values.map(lambda v: "" if math.isnan(v) else f"{v:.3g}")
    figure = go.Figure(go.Heatmap(
        z=shade.to_numpy(), x=list(FAILSAFE.values()), y=configs["label"].tolist(),
        text=text.to_numpy(), texttemplate="%{text}", colorscale="Reds", zmin=0, zmax=1,
        showscale=False, hovertemplate="%{y}<br>%{x}: %{text}<extra></extra>"))
    figure.update_layout(title="Fail-safe figures per config (shade: share of the column's "
                               "maximum)", font=FONT, height=200 + 40 * len(configs),
                         yaxis=dict(autorange="reversed"), xaxis=dict(side="top"),
                         margin=dict(t=160))
    return figure
