"""The report's plotly figures but the timeline (`reports.timeline`), each from a `Sweep`
alone. Every figure draws something for any sweep with at least one episode; with none it is
an empty figure saying so. Series take their colours from one mapping (`colours_of`), so a
transport is one colour in every figure; heat maps paint zero white and only failures red
(`reports.colours`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from statsmodels.stats.proportion import proportion_confint

from reports import colours
from reports.sweep import Sweep

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

FAILURES = ("invariant_breaches", "dead_episodes")
"""The fail-safe figures that are failures whatever their size: painted red (any other
figure is a time or a count where only "more" is known, painted on the neutral scale)."""

ROW_PX = 40
"""A heat map's row height."""

MIN_PLOT_PX = 140
"""A heat map's smallest plot area: one row is still a readable band, not a pixel."""

DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
"""Line styles that tell apart the configs of one series colour."""


def empty(title: str, why: str) -> go.Figure:
    """A figure with nothing to draw, saying `why` in its middle."""
    figure = go.Figure(layout=dict(title=title, font=FONT))
    figure.add_annotation(text=why, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
    return figure


def heatmap_height(rows: int, top_px: int, bottom_px: int = 30) -> int:
    """A heat map's height for `rows` rows: `ROW_PX` a row, at least `MIN_PLOT_PX` of plot,
    plus its margins."""
    return top_px + bottom_px + max(ROW_PX * rows, MIN_PLOT_PX)


def _others(sweep: Sweep) -> list[str]:
    """The swept keys that are neither the transport nor what sets the injected delay (a
    `faults` preset or a fault's delay): what tells a transport's series apart."""
    return [k for k in sweep.swept_keys
            if k != "transport" and "delay" not in k and k.split(".")[0] != "faults"]


def colours_of(sweep: Sweep) -> colours.ConfigColours:
    """The one series-colour mapping of every figure of a report (`colours.config_colours`
    over the transport, the client mode and the series keys, `_others`)."""
    return colours.config_colours(sweep.configs, sweep.override_text[_others(sweep)])


def delay_swept(sweep: Sweep) -> bool:
    """True if the configs with episodes inject more than one one-way delay (the sum of
    their faults' latency `delay_s`: a swept `faults.timed.0.delay_s`, or fault presets
    with distinct delays): only then is success against delay a plot, not a column."""
    configs = sweep.configs[sweep.configs["episodes"] > 0]
    return configs["injected_delay_s"].nunique() > 1


def success_vs_delay(sweep: Sweep) -> go.Figure:
    """Success rate against the injected one-way delay, one series per transport (and per
    other swept override but the faults), with Wilson 95% error bars, and a band where a
    series has more than one delay. Configs of one series at one delay (in a fault matrix:
    every fault preset that adds no delay) are pooled into one point, its interval from the
    pooled counts; the success matrix shows them apart. The delays are evenly spaced columns
    (0, 0.25 and 30 ms stay readable), series dodged sideways a little within a column so
    that points at one delay do not hide each other. Worth drawing only where
    `delay_swept`."""
    configs = sweep.configs[sweep.configs["episodes"] > 0]
    if configs.empty:
        return empty("Success rate vs injected delay", "no episodes")
    others, colour = _others(sweep), colours_of(sweep).colour
    names = configs["transport_kind"].fillna("?").astype(str)
    if others:
        names = names + " " + sweep.labels(others).reindex(configs.index)
    configs = configs.assign(series=names, colour=colour.reindex(configs.index))
    pooled = (configs.groupby(["series", "injected_delay_s"], sort=True)
              .agg(successes=("successes", "sum"), episodes=("episodes", "sum"),
                   colour=("colour", "first"),
                   labels=("label", lambda labels: "<br>".join(labels)))
              .reset_index())
    pooled["success_rate"] = pooled["successes"] / pooled["episodes"]
    pooled["wilson95_low"], pooled["wilson95_high"] = proportion_confint(
        pooled["successes"], pooled["episodes"], alpha=0.05, method="wilson")
    delays_ms = np.sort(pooled["injected_delay_s"].unique() * 1e3)
    column = {delay: i for i, delay in enumerate(delays_ms)}  # evenly spaced: 0 and 0.25 ms
    order = list(dict.fromkeys(configs["series"]))  # the sweep's order, as the other figures
    dodge = 0.3 / max(len(order), 1)
    figure = go.Figure()
    for i, name in enumerate(order):
        points = pooled[pooled["series"] == name]
        hue = points["colour"].iloc[0]
        x = np.array([column[d] for d in points["injected_delay_s"] * 1e3]) \
            + (i - (len(order) - 1) / 2) * dodge
        if points["injected_delay_s"].nunique() > 1:
            figure.add_trace(go.Scatter(
                x=[*x, *x[::-1]],
                y=[*points["wilson95_high"], *points["wilson95_low"].to_numpy()[::-1]],
                fill="toself", fillcolor=hue, opacity=0.12, line=dict(width=0),
                hoverinfo="skip", showlegend=False, legendgroup=name))
        figure.add_trace(go.Scatter(
            x=x, y=points["success_rate"], name=name, legendgroup=name,
            mode="lines+markers" if len(points) > 1 else "markers",
            marker=dict(color=hue, size=9), line=dict(color=hue),
            error_y=dict(type="data", array=points["wilson95_high"] - points["success_rate"],
                         arrayminus=points["success_rate"] - points["wilson95_low"],
                         color=hue),
            customdata=np.stack([points["labels"], points["successes"], points["episodes"],
                                 points["injected_delay_s"] * 1e3], axis=-1),
            hovertemplate="%{customdata[0]}<br>delay %{customdata[3]} ms: "
                          "%{customdata[1]}/%{customdata[2]} = %{y:.0%}<extra></extra>"))
    figure.update_layout(title="Success rate vs injected one-way delay (Wilson 95%)",
                         xaxis=dict(title="injected one-way delay (ms), one column per delay",
                                    tickvals=list(column.values()),
                                    ticktext=[f"{d:g}" for d in delays_ms],
                                    range=[-0.5, len(delays_ms) - 0.5], showgrid=False),
                         yaxis=dict(title="success rate", range=[-0.05, 1.05],
                                    tickformat=".0%"), font=FONT)
    return figure


def success_matrix(sweep: Sweep) -> go.Figure:
    """Success per config at a glance: a transport per column, the rest of each config's
    swept overrides as typed (the fault preset, the client settings) per row, each cell its
    success rate with its count and Wilson 95% interval (red to green: a low rate is a
    failure)."""
    configs = sweep.configs[sweep.configs["episodes"] > 0]
    if configs.empty:
        return empty("Success per config", "no episodes")
    rows = sweep.labels([k for k in sweep.swept_keys if k != "transport"])
    cells = configs.assign(row=rows.reindex(configs.index),
                           column=configs["transport_kind"].fillna("?").astype(str))
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
        texttemplate="%{text}", colorscale="RdYlGn", zmin=0, zmax=1, xgap=2, ygap=2,
        colorbar=dict(title="success", tickformat=".0%", len=1, lenmode="fraction"),
        hovertemplate="%{y} over %{x}<br>%{text}<extra></extra>"))
    figure.update_layout(title="Success per config (successes/episodes, Wilson 95%)",
                         font=FONT, height=heatmap_height(len(order), top_px=110),
                         yaxis=dict(autorange="reversed", showgrid=False),
                         xaxis=dict(side="top", showgrid=False),
                         plot_bgcolor=colours.NO_VALUE, margin=dict(t=110, b=30))
    return figure


def _log_ticks(low_ms: float, high_ms: float) -> list[float]:
    """1-2-5 ticks covering [low_ms, high_ms] on a log axis, in ms."""
    ticks = [m * 10.0 ** e for e in range(-3, 7) for m in (1, 2, 5)]
    inside = [t for t in ticks if low_ms / 2 <= t <= high_ms * 2]
    return inside or ticks


def latency_cdf(sweep: Sweep) -> go.Figure:
    """The round-trip latency's CDF per config (`CDF_POINTS` quantiles of every round trip
    its traces hold), coloured by its series colour (`colours_of`; the configs of one colour
    in shades and dashes, grouped in the legend), with each distinct budget as a grey dashed
    line."""
    round_trips = sweep.round_trips.dropna(subset=["latency_s"])
    if round_trips.empty:
        return empty("Round-trip latency CDF", "no round trips")
    figure, levels, series = go.Figure(), np.linspace(0, 1, CDF_POINTS), colours_of(sweep)
    drawn = [c for c in sweep.configs.index if c in set(round_trips["config"])]
    group = series.value.reindex(drawn)
    by_config = dict(list(round_trips.groupby("config", sort=False)["latency_s"]))
    for value, members in pd.Series(drawn, index=drawn).groupby(group, sort=False):
        for i, config in enumerate(members):
            figure.add_trace(go.Scatter(
                x=by_config[config].quantile(levels).to_numpy() * 1e3, y=levels,
                mode="lines", name=sweep.configs.at[config, "label"], legendgroup=value,
                legendgrouptitle_text=f"{series.key} {value}" if i == 0 else None,
                line=dict(color=colours.shade(series.colour[config], i, len(members)),
                          dash=DASHES[i % len(DASHES)], width=2),
                hovertemplate="%{x:.1f} ms: %{y:.0%}<extra>%{fullData.name}</extra>"))
    for budget_s in sweep.configs["latency_budget_s"].dropna().unique():
        figure.add_trace(go.Scatter(  # a trace, not a shape: shapes misplace on log axes
            x=[budget_s * 1e3] * 2, y=[0, 1], mode="lines", name=f"budget {budget_s * 1e3:g} ms",
            legendgroup="budget", line=dict(dash="dash", color="#555"), hoverinfo="skip"))
    latency_ms = round_trips["latency_s"] * 1e3
    low_ms = latency_ms.min()
    high_ms = max(latency_ms.max(), *(sweep.configs["latency_budget_s"].dropna() * 1e3))
    positive = bool(low_ms > 0)
    ticks = _log_ticks(low_ms, high_ms) if positive else None
    figure.update_layout(title="Round-trip latency CDF (the latency the clock used)",
                         xaxis=dict(title="round trip (ms)",
                                    type="log" if positive else "linear",
                                    range=[np.log10(low_ms) - 0.05, np.log10(high_ms) + 0.08]
                                    if positive else None,
                                    tickvals=ticks, ticktext=ticks and [f"{t:g}" for t in ticks]),
                         yaxis=dict(title="share of round trips", tickformat=".0%"),
                         legend=dict(groupclick="toggleitem"), font=FONT)
    return figure


def failsafe_heatmap(sweep: Sweep) -> go.Figure:
    """The fail-safe figures per config as a heat map, each cell showing its value: the
    failures (`FAILURES`) red, any one of them plainly so; every other figure on a neutral
    blue, shaded by its share of the column's maximum; zero white on both, a cell without a
    value (no fault window, no position) grey with a dash."""
    configs = sweep.configs[sweep.configs["episodes"] > 0]
    if configs.empty:
        return empty("Fail-safe figures", "no episodes")
    values = configs.reindex(columns=list(FAILSAFE)).astype(float)
    text = values.map(lambda v: "–" if math.isnan(v) else f"{v:.3g}")
    shade = pd.concat([values[[c]].apply(colours.failure_shade if c in FAILURES
                                         else colours.neutral_shade) for c in FAILSAFE], axis=1)
    figure = go.Figure(go.Heatmap(
        z=shade.to_numpy(), x=list(FAILSAFE.values()), y=configs["label"].tolist(),
        text=text.to_numpy(), texttemplate="%{text}", zmin=0, zmax=1, showscale=False,
        colorscale=[list(stop) for stop in colours.HEAT_SCALE], xgap=1, ygap=1,
        hovertemplate="%{y}<br>%{x}: %{text}<extra></extra>"))
    figure.update_layout(
        title="Fail-safe figures per config (blue: share of the column's maximum; "
              "red: failures; white: zero)",
        font=FONT, height=heatmap_height(len(configs), top_px=150),
        yaxis=dict(autorange="reversed", showgrid=False),
        xaxis=dict(side="top", showgrid=False), plot_bgcolor=colours.NO_VALUE,
        margin=dict(t=150, b=30))
    return figure
