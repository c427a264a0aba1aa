"""How every benchmark times a call, and what one timed path yields: a row of samples.

One place, so the transport rows, the real peers' rows and the fault proxy's figures are
timed the same way (`time.perf_counter_ns`, warm-up calls first, a lost call kept as NaN
rather than dropped, so a loss is counted, not hidden).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import numpy as np

from transports import TransportClient

CALL_TIMEOUT_S = 5.0
"""Deadline of one benchmark call: far above any round trip, low enough to fail a hang."""


@dataclasses.dataclass
class BenchResult:
    """The samples of one path on one payload, and what its ratios compare it with."""

    path: str
    """What carried the round trip, e.g. "zenoh request" or "tcp floor"."""
    payload: str
    """"raw" or "jpeg" (a peer's own encodings: "png")."""
    request_bytes: int
    samples_ms: np.ndarray
    """One per round trip; NaN for a round trip that was lost (best-effort stream path)."""
    floor_payload: str | None = None
    """The payload whose floors the ratios use; None: its own (a peer's png row is compared
    with the raw floors: the same observation)."""

    @property
    def lost(self) -> int:
        return int(np.isnan(self.samples_ms).sum())

    def percentile(self, q: float) -> float:
        """The q-th percentile in ms, of the round trips that were answered."""
        return float(np.nanpercentile(self.samples_ms, q))


def time_calls(call: Callable[[], object], *, warmup: int, round_trips: int) -> np.ndarray:
    """Milliseconds per call after `warmup` untimed calls; NaN where `call` returned False
    (a lost round trip). Exceptions of `call` propagate."""
    for _ in range(warmup):
        call()
    samples = np.empty(round_trips)
    for i in range(round_trips):
        started = time.perf_counter_ns()
        answered = call()
        samples[i] = np.nan if answered is False else (time.perf_counter_ns() - started) / 1e6
    return samples


def round_trips_s(client: TransportClient, payload: bytes, n: int, *,
                  idle_s: float = 0.0) -> np.ndarray:
    """`n` request round trips of `client`, in seconds, after one warm-up call, `idle_s`
    apart. A direct baseline for a delay D is taken 2D apart: through the fault proxy every
    thread on the path idles about that long per call, and waking after an idle costs a
    fraction of a ms here; that is the machine's, not the proxy's."""
    client.request(payload, timeout_s=CALL_TIMEOUT_S)
    times = np.empty(n)
    for i in range(n):
        time.sleep(idle_s)
        started = time.perf_counter()
        client.request(payload, timeout_s=CALL_TIMEOUT_S)
        times[i] = time.perf_counter() - started
    return times


def median_round_trip_s(client: TransportClient, payload: bytes, n: int, *,
                        idle_s: float = 0.0) -> float:
    """Median of `round_trips_s`."""
    return float(np.median(round_trips_s(client, payload, n, idle_s=idle_s)))
