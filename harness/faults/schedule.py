"""Fault schedules: which fault happens when, decided before the episode runs.

A schedule is config (`conf/faults/`, shape `FaultsConfig`): timed faults, each a kind, a
start and a duration in the episode's control time, and stochastic outages drawn from the
run's seed. `timeline` turns it into the episode's list of `FaultWindow`s; it depends only
on the config, the seed and the episode, never on wall time or on what happened before, so
the same seed gives the same timeline byte for byte (`timeline_digest`), a resumed run gets
the same faults, and the emulated and the modelled runs of a schedule see the same windows.

Which mechanism carries out a window is the controller's business (`controller.py`).
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import asdict, dataclass, field

import numpy as np

from harness.choices import choice


class FaultKind(enum.StrEnum):
    """Lower-case members: Hydra matches config values by name."""

    server_crash = "server_crash"
    """SIGKILL the server at the start, start it again at the end."""
    server_stall = "server_stall"
    """SIGSTOP the server at the start, SIGCONT at the end."""
    server_drain = "server_drain"
    """SIGTERM (drain) at the start, start it again at the end."""
    drop = "drop"
    """Stream messages (observations out, chunks in) dropped, each with `probability`."""
    corrupt = "corrupt"
    """Stream messages with bytes flipped: the codecs must reject them, never crash."""
    duplicate = "duplicate"
    """Observations sent twice."""
    delay = "delay"
    """Incoming chunks held back `delay_s` of wall time."""
    reorder = "reorder"
    """An incoming chunk held back until the next one has been taken."""

    @property
    def is_process(self) -> bool:
        return self in PROCESS_FAULTS


PROCESS_FAULTS = frozenset({FaultKind.server_crash, FaultKind.server_stall,
                            FaultKind.server_drain})


class FaultApply(enum.StrEnum):
    emulated = "emulated"
    """On the real system: signals to the real server process, real traffic."""
    modelled = "modelled"
    """On the latency model and the engine's view of the link (a later issue)."""


@dataclass
class TimedFault:
    """One fault in every episode, at a fixed control time."""

    kind: FaultKind = FaultKind.server_stall
    start_s: float = 1.0
    """Control time since the episode began."""
    duration_s: float = 2.0
    target: str = "client-server"
    """The link it acts on: the client<->server link (the model link comes with adapters)."""
    probability: float = 1.0
    """Message faults: the share of stream messages in the window it acts on."""
    delay_s: float = 0.2
    """Message fault `delay`: how long a chunk is held back (wall time)."""

    def __post_init__(self) -> None:
        self.kind = choice(FaultKind, self.kind, "faults.timed[].kind")
        if not 0 < self.probability <= 1 or self.delay_s < 0:
            raise ValueError(f"faults.timed[]: probability={self.probability} must be in "
                             f"(0, 1] and delay_s={self.delay_s} >= 0")
        if self.start_s < 0 or self.duration_s <= 0:
            raise ValueError(f"faults.timed[]: start_s={self.start_s} must be >= 0 and "
                             f"duration_s={self.duration_s} > 0")
        if self.target != "client-server":
            raise ValueError(f"faults.timed[].target={self.target!r}: only 'client-server' "
                             "exists so far")


@dataclass
class RandomOutages:
    """Outages at random times: a Poisson process of `rate_per_min`, each lasting a seeded
    lognormal draw around `median_s`."""

    kind: FaultKind = FaultKind.server_stall
    rate_per_min: float = 0.0
    """0: none."""
    median_s: float = 1.0
    sigma: float = 0.5

    def __post_init__(self) -> None:
        self.kind = choice(FaultKind, self.kind, "faults.random.kind")
        if self.rate_per_min < 0 or self.median_s <= 0 or self.sigma < 0:
            raise ValueError(f"faults.random: rate_per_min={self.rate_per_min} >= 0, "
                             f"median_s={self.median_s} > 0 and sigma={self.sigma} >= 0")


@dataclass
class FaultsConfig:
    """The `faults` group: `none` is the default; see conf/faults/ for the presets."""

    name: str = "none"
    apply: FaultApply = FaultApply.emulated
    timed: list[TimedFault] = field(default_factory=list)
    random: RandomOutages = field(default_factory=RandomOutages)

    def __post_init__(self) -> None:
        self.apply = choice(FaultApply, self.apply, "faults.apply")
        if self.apply is FaultApply.modelled and not self.empty:
            raise ValueError("faults.apply=modelled: not built yet; process and message faults "
                             "are emulated (a modelled schedule comes with the network faults)")

    @property
    def empty(self) -> bool:
        return not self.timed and self.random.rate_per_min == 0

    @property
    def has_process_faults(self) -> bool:
        return (any(f.kind.is_process for f in self.timed)
                or (self.random.rate_per_min > 0 and self.random.kind.is_process))

    @property
    def has_message_faults(self) -> bool:
        return (any(not f.kind.is_process for f in self.timed)
                or (self.random.rate_per_min > 0 and not self.random.kind.is_process))


@dataclass(frozen=True)
class FaultWindow:
    """One fault of one episode, in its control time: active for start_s <= t < end_s."""

    kind: FaultKind
    start_s: float
    end_s: float
    source: str
    """"timed" or "random"."""
    probability: float = 1.0
    delay_s: float = 0.2


def timeline(config: FaultsConfig, *, seed: int, episode: int,
             horizon_s: float) -> list[FaultWindow]:
    """The episode's fault windows within `horizon_s` of control time, sorted by start,
    never overlapping (a random outage that would overlap an earlier window is dropped)."""
    windows = [FaultWindow(f.kind, f.start_s, f.start_s + f.duration_s, "timed",
                           f.probability, f.delay_s)
               for f in config.timed if f.start_s < horizon_s]
    outages = config.random
    if outages.rate_per_min > 0:
        rng = np.random.default_rng([seed, episode, 0xFA])
        t = 0.0
        while True:
            t += float(rng.exponential(60.0 / outages.rate_per_min))
            if t >= horizon_s:
                break
            length = float(outages.median_s * rng.lognormal(0.0, outages.sigma))
            windows.append(FaultWindow(outages.kind, round(t, 6), round(t + length, 6),
                                       "random"))
    kept: list[FaultWindow] = []
    for window in sorted(windows, key=lambda w: (w.start_s, w.source)):
        if not kept or window.start_s >= kept[-1].end_s:
            kept.append(window)
    return kept


def timeline_digest(windows: list[FaultWindow]) -> str:
    """sha256 of the timeline's canonical JSON: what "the same timeline" means in tests."""
    text = json.dumps([asdict(w) for w in windows], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()
