"""The per-tick traces (`traces/taskNNN-epNNNN.parquet`) a report reads: round trips for
the latency figures, states for the timelines. Only the columns needed are read, and the
newer ones (`server_queue_s`, `server_infer_s`) are optional: a trace written before they
existed reads as NaN there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

ROUND_TRIP = ["latency_s", "measured_latency_s", "server_queue_s", "server_infer_s"]
"""Per merged chunk: the round trip the clock used, the measured one, and the server's
mailbox wait and inference time of that chunk (seconds)."""

TIMELINE = ["tick", "state", "source"]


def read_columns(path: Path, columns: list[str]) -> pd.DataFrame:
    """`columns` of one trace, NaN-filled where the trace has no such column.

    Raises:
        FileNotFoundError: no trace at `path`.
    """
    present = set(pq.read_schema(path).names)
    frame = pd.read_parquet(path, columns=[c for c in columns if c in present])
    return frame.reindex(columns=columns, fill_value=np.nan)


def round_trips(path: Path) -> pd.DataFrame:
    """One row per tick that merged a chunk (`latency_s` set), `ROUND_TRIP` columns plus
    `network_s`: the measured round trip less the server's queue and inference time."""
    frame = read_columns(path, ROUND_TRIP).dropna(subset=["latency_s"])
    return frame.assign(network_s=frame["measured_latency_s"] - frame["server_queue_s"]
                        - frame["server_infer_s"]).reset_index(drop=True)


def state_segments(path: Path, dt_s: float) -> pd.DataFrame:
    """The client's state over one episode as runs of equal state: `state, start_s, end_s`
    (control time, a tick lasting dt from tick x dt)."""
    ticks = read_columns(path, TIMELINE)
    run = ticks["state"].ne(ticks["state"].shift()).cumsum()
    segments = ticks.groupby(run).agg(state=("state", "first"), first=("tick", "min"),
                                      last=("tick", "max"))
    return pd.DataFrame({"state": segments["state"], "start_s": segments["first"] * dt_s,
                         "end_s": (segments["last"] + 1) * dt_s}).reset_index(drop=True)
