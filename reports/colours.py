"""The colours every figure of a report shares, so that a reader learns them once.

Series: one colour per transport and per client mode, fixed by their registries
(`transports.transport_names`, `ClientMode`), so `zmq` is the same colour in every figure and
in every report; a value no registry knows takes the next colour, in sorted order. Red is not
among them: red means failure.

Heat maps: a neutral scale (white to blue) for figures where zero is good and more is only
"more" (times, counts of lost requests), and red only for failures (DEAD episodes, invariant
breaches). Zero is white on both.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pandas as pd
from plotly.colors import hex_to_rgb, sample_colorscale

from harness.client.config import ClientMode
from transports import transport_names

SERIES = ("#1F77B4", "#FF7F0E", "#2CA02C", "#9467BD", "#8C564B", "#E377C2", "#17BECF",
          "#BCBD22", "#7F7F7F")
"""plotly's D3 colours less its red (#D62728), which stays for failures."""

NEUTRAL = "#ffffff"
"""A zero on either heat-map scale."""

NEUTRAL_TOP = "#2b6cb0"
"""The neutral scale's top (a column's maximum): a mid blue, its text still readable."""

FAILURE_FLOOR = 0.35
"""Where the smallest failure sits on the failure half of `HEAT_SCALE` (0-1 along it): one
DEAD episode is plainly red, not a faint pink."""

NEUTRAL_Z, FAILURE_Z = (0.0, 0.49), (0.5, 1.0)
"""The halves of `HEAT_SCALE`: z of the neutral figures (white to blue) and of failures
(red). One heat map draws both with one scale: plotly.js places the text of a second heat
map of one plot at the first one's cells."""

HEAT_SCALE = ((0.0, NEUTRAL), (NEUTRAL_Z[1], NEUTRAL_TOP), (FAILURE_Z[0], NEUTRAL),
              (FAILURE_Z[0] + (FAILURE_Z[1] - FAILURE_Z[0]) * FAILURE_FLOOR, "#fc9272"),
              (FAILURE_Z[1], "#a50f15"))
"""The fail-safe heat map's colours by z: 0 white (a zero of either kind), up to 0.49 white
to blue (figures where zero is good and more is only more), 0.5-1 the failures, from light to
dark red."""

NO_VALUE = "#eeeeee"
"""A heat-map cell without a value (no fault window, no episode): light grey."""


def series_colours(values: Iterable[object], known: Sequence[str] = ()) -> dict[str, str]:
    """A colour for each distinct value (as text): the `known` names (a registry's order)
    take the first `SERIES` colours whether present or not, any other value the following
    ones in sorted order. The same values give the same colours in every call."""
    present = sorted({str(v) for v in values})
    order = [*known, *(v for v in present if v not in known)]
    return {v: SERIES[order.index(v) % len(SERIES)] for v in present}


def transport_colours(kinds: Iterable[object]) -> dict[str, str]:
    """`series_colours` of transport kinds, in the transport registry's order."""
    return series_colours(kinds, transport_names())


def client_mode_colours(modes: Iterable[object]) -> dict[str, str]:
    """`series_colours` of client modes, in `ClientMode`'s order."""
    return series_colours(modes, [m.value for m in ClientMode])


@dataclass(frozen=True)
class ConfigColours:
    """Each config's series colour and what the colour stands for."""

    key: str
    """"transport", "client mode" or the override key the colours tell apart."""
    value: pd.Series
    """Config id: its value of `key` ("zmq")."""
    colour: pd.Series
    """Config id: its colour ("#1F77B4")."""


def config_colours(configs: pd.DataFrame, labels: pd.DataFrame) -> ConfigColours:
    """The colour of each config (rows of `Sweep.configs`): by its transport where the
    transports differ, else by its client mode where those differ, else by the first column
    of `labels` (config x override key, as typed) whose values differ, else by transport.
    Every figure of a report colours its series by this one mapping."""
    transports = configs["transport_kind"].fillna("?").astype(str)
    modes = configs["client_mode"].fillna("?").astype(str)
    if transports.nunique() < 2 and modes.nunique() > 1:
        return ConfigColours("client mode", modes, modes.map(client_mode_colours(modes)))
    if transports.nunique() < 2:
        for key in labels.columns:
            values = labels[key].reindex(configs.index).fillna("?").astype(str)
            if values.nunique() > 1:
                return ConfigColours(key, values, values.map(series_colours(values)))
    return ConfigColours("transport", transports, transports.map(transport_colours(transports)))


def shade(colour: str, i: int, count: int) -> str:
    """The `i`-th of `count` shades of `colour` (`#rrggbb`): the first is `colour` itself,
    the others lighter, up to 45% of the way to white: configs of one series colour told
    apart, still that colour."""
    if i == 0 or count < 2:
        return colour
    mix = 0.45 * i / (count - 1)
    red, green, blue = (round(c + (255 - c) * mix) for c in hex_to_rgb(colour))
    return f"#{red:02x}{green:02x}{blue:02x}"


def neutral_shade(values: pd.Series) -> pd.Series:
    """z on `HEAT_SCALE` of a figure where zero is good: its share of the column's maximum
    along the neutral half (0 white for a column of zeros); NaN kept (no value)."""
    top = values.max()
    share = values / top if top > 0 else values * 0
    return NEUTRAL_Z[0] + (NEUTRAL_Z[1] - NEUTRAL_Z[0]) * share


def failure_shade(values: pd.Series) -> pd.Series:
    """z on `HEAT_SCALE` of a failure count: 0 (white) for none, any failure on the red
    half, at least `FAILURE_FLOOR` along it, the column's maximum its darkest; NaN kept."""
    top = values.max()
    if not top > 0:
        return values * 0
    along = FAILURE_FLOOR + (1 - FAILURE_FLOOR) * values / top
    return values.where(values <= 0, FAILURE_Z[0] + (FAILURE_Z[1] - FAILURE_Z[0]) * along)


def colour_at(scale: Sequence[Sequence], z: float) -> str:
    """The colour a heat map paints `z` with on `scale` (`rgb(r, g, b)`), as plotly
    interpolates it."""
    return sample_colorscale([list(stop) for stop in scale], [z])[0]
