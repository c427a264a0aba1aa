"""Fault schedules: which fault happens when, decided before the episode runs.

A schedule is config (`conf/faults/`, shape `FaultsConfig`): timed faults, each a kind, a
start and a duration in the episode's control time, and stochastic outages drawn from the
run's seed. `timeline` turns it into the episode's list of `FaultWindow`s; it depends only
on the config, the seed and the episode, never on wall time or on what happened before, so
the same seed gives the same timeline byte for byte (`timeline_digest`), a resumed run gets
the same faults, and the emulated and the modelled runs of a schedule see the same windows.

A fault's kind is a name in the registry of kinds (`harness.faults.kinds`): a built-in
("server_stall", "latency", ...) or an import path naming a user's entry. The entry says what
the kind is for the schedule (its lane: windows of one lane never overlap; its group: which
mechanisms the job wires) and how the controller (`controller.py`) emulates it or the
modelled link (`modelled.py`) models it.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from harness.choices import choice
from harness.faults.kinds.registry import fault_kind


def _kind_name(kind: str, field_name: str) -> str:
    """`kind` resolved in the registry, as its entry's name; ValueError naming `field_name`
    and the choices if no entry has it, or naming what an entry named by import path lacks
    (a complete one is registered)."""
    try:
        return fault_kind(str(kind)).name
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{field_name}: {exc}") from exc


class Direction(enum.StrEnum):
    """Which way a network fault acts: toward the server, toward the client, or both."""

    both = "both"
    to_server = "to_server"
    to_client = "to_client"


class JitterDist(enum.StrEnum):
    normal = "normal"
    """delay + N(0, jitter_s), cut at 0: symmetric around the delay, as netem's."""
    pareto = "pareto"
    """delay + a heavy tail (Pareto, shape 2, mean `jitter_s`): Wi-Fi's rare long stalls."""


class FaultApply(enum.StrEnum):
    emulated = "emulated"
    """On the real system: signals to the real server process, real traffic."""
    modelled = "modelled"
    """On the latency model and the engine's view of the link (`harness.faults.modelled`):
    replayable byte for byte."""


PARETO_SHAPE = 2.0
"""With shape 2 the Pareto (Lomax) extra delay has mean `jitter_s` and a heavy tail."""


def jittered(rng: np.random.Generator, base_s: float, dist: JitterDist, scale_s: float, *,
             pareto_shape: float = PARETO_SHAPE) -> float:
    """`base_s` with one seeded jitter draw: normal is symmetric, N(0, scale), cut at 0 (the
    mean stays at `base_s`, as netem does it); pareto adds a one-sided heavy tail scaled by
    `scale`. The fault proxy, the slowed predict and the modelled link all draw here, so
    the emulated and the modelled runs of a schedule share one distribution."""
    if scale_s == 0:
        return base_s
    if JitterDist(dist) is JitterDist.pareto:
        return base_s + scale_s * float(rng.pareto(pareto_shape))
    return max(0.0, base_s + float(rng.normal(0.0, scale_s)))


class NetworkPath(enum.StrEnum):
    """What carries emulated network faults."""

    proxy = "proxy"
    """The user-space TCP proxy (`harness.faults.proxy`): works anywhere, partitions are
    hold-and-release (optimistic: no TCP retransmission backoff after the heal)."""
    kernel = "kernel"
    """The server in a network namespace of its own behind a veth pair
    (`harness.faults.kernel`): partitions cut the link (TCP retransmits with backoff),
    bandwidth is tbf, delay and jitter netem where the kernel has it (else the proxy).
    Needs root, `ip` and `tc`; the run fails at start-up naming what is missing."""


@dataclass
class TimedFault:
    """One fault in every episode, at a fixed control time. Only the fields of its kind
    matter; the rest keep their defaults."""

    kind: str = "server_stall"
    """A registered kind's name (`harness.faults.kinds.kind_names()`), or an import path
    "package.module:ATTR" naming a `FaultKindEntry` in the user's module; stored as the
    entry's name."""
    start_s: float = 1.0
    """Control time since the episode began."""
    duration_s: float = 2.0
    """.inf: to the end of the episode."""
    target: str = "client-server"
    """The link it acts on: the client<->server link (the model link comes with adapters)."""
    direction: Direction = Direction.both
    """Network faults: which way."""
    probability: float = 1.0
    """Message faults: the share of stream messages in the window it acts on."""
    delay_s: float = 0.2
    """`latency`: one-way delay; `delay`: how long a chunk is held back; `slow_close`: how
    late a close arrives (wall time)."""
    jitter_s: float = 0.0
    """`latency`, `slow_model`: the scale of a seeded random extra delay."""
    jitter_dist: JitterDist = JitterDist.normal
    bandwidth_bps: float = 2e6
    """`bandwidth`: bits per second each way."""
    p_good_bad: float = 0.01
    """`loss` (Gilbert-Elliott): chance per message of entering the bad (bursty) state."""
    p_bad_good: float = 0.3
    """`loss`: chance per message of leaving it."""
    loss_good: float = 0.0
    """`loss`: share of messages lost in the good state."""
    loss_bad: float = 0.5
    """`loss`: share of messages lost in the bad state."""
    predict_s: float = 0.405
    """`slow_model`: the least time a prediction takes (OpenVLA on an L4: ~405 ms)."""

    def __post_init__(self) -> None:
        self.kind = _kind_name(self.kind, "faults.timed[].kind")
        self.direction = choice(Direction, self.direction, "faults.timed[].direction")
        self.jitter_dist = choice(JitterDist, self.jitter_dist, "faults.timed[].jitter_dist")
        if not 0 < self.probability <= 1:
            raise ValueError(f"faults.timed[].probability={self.probability}: must be in (0, 1]")
        for name in ("delay_s", "jitter_s", "predict_s"):
            if not 0 <= getattr(self, name) < float("inf"):
                raise ValueError(f"faults.timed[].{name}={getattr(self, name)}: must be a "
                                 "finite number >= 0")
        if not self.bandwidth_bps > 0:
            raise ValueError(f"faults.timed[].bandwidth_bps={self.bandwidth_bps}: must be > 0")
        for name in ("p_good_bad", "p_bad_good", "loss_good", "loss_bad"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"faults.timed[].{name}={getattr(self, name)}: must be in "
                                 "[0, 1]")
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

    kind: str = "server_stall"
    """As `TimedFault.kind`."""
    rate_per_min: float = 0.0
    """0: none."""
    median_s: float = 1.0
    sigma: float = 0.5

    def __post_init__(self) -> None:
        self.kind = _kind_name(self.kind, "faults.random.kind")
        if self.rate_per_min < 0 or self.median_s <= 0 or self.sigma < 0:
            raise ValueError(f"faults.random: rate_per_min={self.rate_per_min} >= 0, "
                             f"median_s={self.median_s} > 0 and sigma={self.sigma} >= 0")


class FaultLink(enum.StrEnum):
    """Which link network faults act on. Lower-case members: Hydra matches by name."""

    client = "client"
    """The robot (harness) <-> our policy server: the transport's traffic."""
    model = "model"
    """Our policy server <-> the external model server (policy=remote only)."""
    both = "both"


@dataclass
class FaultsConfig:
    """The `faults` group: `none` is the default; see conf/faults/ for the presets."""

    name: str = "none"
    apply: FaultApply = FaultApply.emulated
    network: NetworkPath = NetworkPath.proxy
    """Emulated network faults: through the user-space proxy or the kernel."""
    link: FaultLink = FaultLink.client
    """Emulated network faults: on the robot's link to our server, on our server's link to
    an external model server (policy=remote), or on both."""
    timed: list[TimedFault] = field(default_factory=list)
    random: RandomOutages = field(default_factory=RandomOutages)

    def __post_init__(self) -> None:
        self.apply = choice(FaultApply, self.apply, "faults.apply")
        self.network = choice(NetworkPath, self.network, "faults.network")
        self.link = choice(FaultLink, self.link, "faults.link")

    @property
    def empty(self) -> bool:
        return not self.timed and self.random.rate_per_min == 0

    @property
    def kinds(self) -> set[str]:
        """The fault kinds the schedule can open: its timed ones and, if it has random
        outages, theirs."""
        kinds = {f.kind for f in self.timed}
        if self.random.rate_per_min > 0:
            kinds.add(self.random.kind)
        return kinds

    def _groups(self) -> set[str]:
        return {fault_kind(kind).group for kind in self.kinds}

    @property
    def has_process_faults(self) -> bool:
        return "process" in self._groups()

    @property
    def has_message_faults(self) -> bool:
        return "message" in self._groups()

    @property
    def has_network_faults(self) -> bool:
        return "network" in self._groups()

    @property
    def has_model_faults(self) -> bool:
        return "model" in self._groups()


@dataclass(frozen=True)
class FaultWindow:
    """One fault of one episode, in its control time: active for start_s <= t < end_s."""

    kind: str
    """The kind's registered name (`harness.faults.kinds.fault_kind(kind)`: its entry)."""
    start_s: float
    end_s: float
    source: str
    """"timed" or "random"."""
    spec: TimedFault = field(default_factory=TimedFault, compare=False)
    """The fault's parameters (its kind's fields)."""

    def active(self, t: float) -> bool:
        return self.start_s <= t < self.end_s


def timeline(config: FaultsConfig, *, seed: int, episode: int,
             horizon_s: float) -> list[FaultWindow]:
    """The episode's fault windows within `horizon_s` of control time, sorted by start and
    clipped at it. Windows of one lane (`FaultKindEntry.lane`) never overlap: one that would
    overlap an earlier one of its lane is dropped."""
    windows = [FaultWindow(f.kind, f.start_s, min(f.start_s + f.duration_s, horizon_s), "timed",
                           f)
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
            start, end = round(t, 6), round(min(t + length, horizon_s), 6)
            windows.append(FaultWindow(outages.kind, start, end, "random",
                                       TimedFault(outages.kind, start, end - start)))
    kept: list[FaultWindow] = []
    for window in sorted(windows, key=lambda w: (w.start_s, w.source, str(w.kind))):
        lane = fault_kind(window.kind).overlap_lane
        group_end = max((w.end_s for w in kept if fault_kind(w.kind).overlap_lane == lane),
                        default=0.0)
        if window.start_s >= group_end and window.end_s > window.start_s:
            kept.append(window)
    return kept


def timeline_digest(windows: list[FaultWindow]) -> str:
    """sha256 of the timeline's canonical JSON: what "the same timeline" means in tests."""
    text = json.dumps([asdict(w) for w in windows], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


PRESETS_DIR = Path(__file__).resolve().parents[2] / "conf" / "faults"


def load_preset(name: str, *, apply: FaultApply | None = None) -> FaultsConfig:
    """The preset conf/faults/<name>.yaml as a FaultsConfig, outside Hydra (benchmarks, the
    parity check, tests); `apply` overrides how it is applied."""
    from omegaconf import OmegaConf

    path = PRESETS_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))
        raise ValueError(f"faults={name!r}: no such preset; expected one of {known}")
    values = {k: v for k, v in OmegaConf.to_container(OmegaConf.load(path)).items()
              if k != "defaults"}
    config = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(FaultsConfig), values))
    return config if apply is None else replace(config, apply=apply)
