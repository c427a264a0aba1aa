"""Fail-safe metrics: how an episode behaved while something was wrong, from its trace and
its fault events alone (pure functions, no I/O), so that fallbacks (`client.fallback=hold|
zero|repeat_last`) and transports can be compared under the same faults.

Success rate says whether the robot got there; these say whether it was safe on the way:

- **time to detect** (per fault window, `detect_s`): control time from the fault's start to
  the first tick at or after it whose state is not STREAMING. Until then the robot executes
  whatever it has queued as if nothing happened; a long detection is time spent trusting a
  link that is gone. None if the engine stayed STREAMING for the whole window and
  `request_timeout_s` after it: the fault went unnoticed, which is fine for one that did not
  matter (a small added delay) and is counted (`faults_undetected`), not averaged in.
- **time to recover** (per window, `recover_s`): control time from the fault's end to the
  first tick at or after it that is STREAMING again and executes a non-fallback action: how
  long the robot stays degraded after the cause went away (a reconnect, a session re-open,
  a new chunk's round trip). None if the episode ended first (`faults_unrecovered`).
- **blind time** (`blind_s`): control time the robot executed fallback actions
  (`source == "fallback"`; a synchronous client's WAIT ticks hold still by design and are
  not blind). It includes tick 0, before any chunk can arrive.
- **motion while blind** (`blind_path_m`, `blind_peak_speed_mps`): the end effector's path
  length (sum of |Δee_pos| over the steps that executed a fallback) and its peak speed
  (|Δee_pos| / dt over those steps). This is what tells the fallbacks apart: `hold` and
  `zero` should leave the arm nearly still, `repeat_last` keeps it going in the last
  commanded direction with nobody watching. None if the env cannot say where its end
  effector is.
- **stale actions executed** (`stale_actions`): ticks whose executed action is older than
  `max_action_age_s` (in ticks, as the invariant checker counts it). The engine must never
  do this, so it must be 0; it is recounted from the trace so that a summary shows it next
  to the other figures rather than only as a breach string.

Sessions re-opened and requests lost are the engine's own counts (`sessions_reopened`,
`requests_lost` columns) and stay where they are.

A tick's control time is `tick * dt`; a fault's start and end are its events' `control_s`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

STREAMING = "streaming"
FALLBACK = "fallback"
_EPS = 1e-9


@dataclass(frozen=True)
class FaultSpan:
    """One fault window as its events tell it."""

    fault: str
    start_s: float
    end_s: float | None
    """None: no end event (the episode's events stop inside the window)."""


@dataclass(frozen=True)
class WindowFailsafe:
    fault: str
    start_s: float
    end_s: float | None
    detect_s: float | None
    recover_s: float | None
    to_episode_end: bool = False
    """The window lasted until the episode ended (a whole-episode link fault): there is
    nothing to recover from within it, so no recovery is missing."""

    def event(self) -> dict:
        return {"failsafe": self.fault, "start_s": self.start_s, "end_s": self.end_s,
                "detect_s": self.detect_s, "recover_s": self.recover_s,
                "to_episode_end": self.to_episode_end}


@dataclass(frozen=True)
class EpisodeFailsafe:
    windows: list[WindowFailsafe] = field(default_factory=list)
    blind_s: float = 0.0
    blind_path_m: float | None = 0.0
    blind_peak_speed_mps: float | None = 0.0
    stale_actions: int | None = 0

    @property
    def time_to_detect_s(self) -> float | None:
        return _max(w.detect_s for w in self.windows)

    @property
    def time_to_recover_s(self) -> float | None:
        return _max(w.recover_s for w in self.windows)

    def columns(self) -> dict[str, object]:
        """The episode row's fail-safe columns."""
        return {"time_to_detect_s": self.time_to_detect_s,
                "time_to_recover_s": self.time_to_recover_s,
                "blind_s": self.blind_s, "blind_path_m": self.blind_path_m,
                "blind_peak_speed_mps": self.blind_peak_speed_mps,
                "stale_actions": self.stale_actions}

    def events(self) -> list[dict]:
        """One event per fault window: `{"failsafe": fault, "detect_s", "recover_s", ...}`."""
        return [w.event() for w in self.windows]


def _max(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def fault_spans(events: Iterable[dict]) -> list[FaultSpan]:
    """Pair each fault's start event with the next end event of the same fault (windows of
    different kinds may overlap), in start order. Events without `fault`/`phase` (breaches,
    DEAD reasons, fail-safe results) are ignored."""
    spans: list[list] = []
    open_by_fault: dict[str, list[int]] = {}
    for event in events:
        fault, phase = event.get("fault"), event.get("phase")
        if fault is None or phase not in ("start", "end"):
            continue
        control_s = float(event["control_s"])
        if phase == "start":
            open_by_fault.setdefault(fault, []).append(len(spans))
            spans.append([fault, control_s, None])
        elif open_by_fault.get(fault):
            spans[open_by_fault[fault].pop(0)][2] = control_s
    return [FaultSpan(fault, start, end) for fault, start, end in spans]


def window_failsafe(ticks: Sequence, span: FaultSpan, *, dt: float,
                    request_timeout_s: float | None) -> WindowFailsafe:
    """Time to detect and to recover from one fault window (see the module docstring).
    `ticks` are the episode's tick records (anything with `tick`, `state`, `source`)."""
    horizon = (math.inf if span.end_s is None else span.end_s) + (request_timeout_s or 0.0)
    # The episode's first ticks are never STREAMING (no chunk can have arrived yet): a
    # fault from t=0 is not "detected" by them.
    first_streaming = next((t.tick for t in ticks if t.state == STREAMING), math.inf)
    detect = None
    for t in ticks:
        at = t.tick * dt
        if at < span.start_s - _EPS or t.tick < first_streaming:
            continue
        if at > horizon + _EPS:
            break
        if t.state != STREAMING:
            detect = round(at - span.start_s, 6)
            break
    recover = None
    if span.end_s is not None:
        recover = next((round(t.tick * dt - span.end_s, 6) for t in ticks
                        if t.tick * dt >= span.end_s - _EPS and t.state == STREAMING
                        and t.source != FALLBACK), None)
    last_s = ticks[-1].tick * dt if len(ticks) else 0.0
    to_end = span.end_s is None or span.end_s >= last_s - _EPS
    return WindowFailsafe(span.fault, span.start_s, span.end_s, detect, recover, to_end)


def blind_motion(ticks: Sequence, *, dt: float, ee_pos_start: Sequence[float] | None
                 ) -> tuple[float, float | None, float | None]:
    """(blind_s, blind_path_m, blind_peak_speed_mps) over the ticks that executed a
    fallback. A step's motion is its end-effector position minus the one before it (the
    reset's for tick 0); path and peak are None if a blind step's motion cannot be told
    (the env gives no positions)."""
    blind = [i for i, t in enumerate(ticks) if t.source == FALLBACK]
    blind_s = round(len(blind) * dt, 6)
    steps: list[float] = []
    for i in blind:
        before = ee_pos_start if i == 0 else ticks[i - 1].ee_pos
        after = ticks[i].ee_pos
        if _missing_position(before) or _missing_position(after):
            continue
        steps.append(float(np.linalg.norm(np.asarray(after, float) - np.asarray(before, float))))
    if blind and not steps:
        return blind_s, None, None
    path = round(sum(steps), 9)
    peak = round(max(steps) / dt, 9) if steps else 0.0
    return blind_s, path, peak


def _missing_position(position) -> bool:
    if position is None:
        return True
    try:
        return len(position) == 0
    except TypeError:  # a NaN read back from parquet
        return True


def stale_actions(ticks: Iterable, *, max_age_ticks: int | None) -> int | None:
    """Ticks that executed a non-fallback action older than `max_age_ticks` (None: the
    limit is unknown, as in a trace recorded before it was kept)."""
    if max_age_ticks is None:
        return None
    return sum(1 for t in ticks if t.source != FALLBACK and not _missing(t.age_ticks)
               and t.age_ticks > max_age_ticks)


def episode_failsafe(ticks: Sequence, events: Iterable[dict] = (), *, dt: float,
                     ee_pos_start: Sequence[float] | None = None,
                     max_age_ticks: int | None = None,
                     request_timeout_s: float | None = None) -> EpisodeFailsafe:
    """Every fail-safe metric of one episode. `ticks`: its tick records in order (the
    runner's `TickRecord`s, or the rows of its parquet trace via `itertuples()`)."""
    ticks = list(ticks)
    windows = [window_failsafe(ticks, span, dt=dt, request_timeout_s=request_timeout_s)
               for span in fault_spans(events)]
    blind_s, path, peak = blind_motion(ticks, dt=dt, ee_pos_start=ee_pos_start)
    return EpisodeFailsafe(windows, blind_s, path, peak,
                           stale_actions(ticks, max_age_ticks=max_age_ticks))


def trace_failsafe(trace, events: Iterable[dict] = ()) -> EpisodeFailsafe:
    """`episode_failsafe` of a runner's `EpisodeTrace`."""
    return episode_failsafe(trace.ticks, events, dt=trace.dt, ee_pos_start=trace.ee_pos_start,
                            max_age_ticks=trace.max_age_ticks,
                            request_timeout_s=trace.request_timeout_s)


def summarize_failsafe(rows, events: Iterable[dict]) -> dict[str, object]:
    """The run's fail-safe figures from its episode rows (a DataFrame) and all their events.
    Rows written before a column existed count as nothing: 0 for totals, absent for maxima.

    Detection and recovery percentiles are over fault windows (the `failsafe` events), not
    over episodes; windows never detected or never recovered are counted, not averaged."""
    windows = [e for e in events if "failsafe" in e]
    detect = [e["detect_s"] for e in windows if not _missing(e.get("detect_s"))]
    recover = [e["recover_s"] for e in windows if not _missing(e.get("recover_s"))]

    def column_max(column: str) -> float | None:
        if column not in rows:
            return None
        value = rows[column].max()  # skips NaN/None
        return None if _missing(value) else float(value)

    def column_total(column: str) -> float:
        return float(rows[column].fillna(0).sum()) if column in rows else 0.0

    return {
        "time_to_detect_s_p50": float(np.percentile(detect, 50)) if detect else None,
        "time_to_detect_s_max": max(detect) if detect else None,
        "time_to_recover_s_p50": float(np.percentile(recover, 50)) if recover else None,
        "time_to_recover_s_max": max(recover) if recover else None,
        "faults_undetected": sum(1 for e in windows if _missing(e.get("detect_s"))),
        "faults_unrecovered": sum(1 for e in windows if _missing(e.get("recover_s"))
                                  and not e.get("to_episode_end")),
        "blind_s": round(column_total("blind_s"), 6),
        "blind_path_m_max": column_max("blind_path_m"),
        "blind_peak_speed_mps_max": column_max("blind_peak_speed_mps"),
        "stale_actions": int(column_total("stale_actions")),
    }


CONSOLE_FIGURES: list[tuple[str, str, str]] = [
    ("time_to_detect_s_p50", "time to detect p50", "{:.2f} s"),
    ("time_to_detect_s_max", "time to detect max", "{:.2f} s"),
    ("faults_undetected", "faults the engine never noticed", "{:d}"),
    ("time_to_recover_s_p50", "time to recover p50", "{:.2f} s"),
    ("time_to_recover_s_max", "time to recover max", "{:.2f} s"),
    ("faults_unrecovered", "faults unrecovered (the episode ended before it)", "{:d}"),
    ("blind_s", "blind time (fallback actions)", "{:.2f} s"),
    ("blind_path_m_max", "path while blind, max", "{:.3f} m"),
    ("blind_peak_speed_mps_max", "peak speed while blind, max", "{:.3f} m/s"),
    ("stale_actions", "stale actions executed (must be 0)", "{:d}"),
    ("sessions_reopened", "sessions re-opened", "{:d}"),
    ("requests_lost", "requests lost", "{:d}"),
]
"""(summary key, label, format) of each fail-safe figure the console shows, in order."""


def failsafe_console_items(summary: dict) -> list[tuple[str, str]]:
    """(label, formatted value) for each fail-safe figure of `summary` that is neither zero
    nor None (nor absent: a summary of an older version), in `CONSOLE_FIGURES` order."""
    items = []
    for key, label, form in CONSOLE_FIGURES:
        value = summary.get(key)
        if _missing(value) or value == 0:
            continue
        items.append((label, form.format(int(value) if form == "{:d}" else float(value))))
    return items
