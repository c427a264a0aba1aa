"""What a fault kind is: one entry naming how it is emulated and how it is modelled.

Read this first when adding a fault kind. A kind is a `FaultKindEntry` with two halves, both
required, because a schedule may be applied either way (`faults.apply`) and the two runs of
one schedule must agree (the agreement report compares them):

- `Emulation`: what it does to the real system at a window's start and end, through the
  mechanisms the job wired (`RunMechanisms`: the server supervisor's signals, the fault
  proxy's link shape, the kernel's veth link, the faulty client wrapper, the model-faults
  file). It returns one line saying what it did: the event log's `mechanism`.
- `Modelling`: what it does to a request on the modelled link (`harness.faults.modelled`):
  seconds added to the round trip, a reply held to the window's end, or a lost request
  (`math.inf`). It must decide from the window, the run's seed and the request's key alone,
  so that a modelled run replays byte for byte.

A kind with no effect on one side says so explicitly (`effects.NoEffect(why)`): silence is
what the registry refuses (`registry.register_kind`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from harness.faults.controller import Mechanisms
    from harness.faults.modelled import ModelledLink
    from harness.faults.schedule import FaultWindow

GROUPS = ("process", "network", "message", "model")
"""Which mechanism family a kind acts through; the job wires a mechanism only for the groups
a schedule uses (`FaultsConfig.has_network_faults`, ...):
process: the server supervisor; network: the fault proxy (or the kernel link); message: the
faulty client wrapper; model: the server's model-faults file."""


class RunMechanisms(Protocol):
    """What an emulation acts through: the fault controller of the episode."""

    mechanisms: Mechanisms

    def need(self, name: str, kind: str):
        """The `Mechanisms` field `name`; RuntimeError naming `kind` if the run has none."""

    def open_windows(self) -> list[FaultWindow]:
        """The windows open now (this one included at its start, excluded at its end)."""

    def reshape_proxy(self, window: FaultWindow) -> None:
        """Set the proxy's shape, both directions, to what the open `LinkShaping` windows
        add up to; `window` is the one starting or ending (named if there is no proxy)."""

    def restart_server(self, window: FaultWindow, target: str = "server") -> None:
        """Start the server (or the router, `target`) again on a thread of its own (the
        ticks go on meanwhile)."""

    def join_restart(self) -> None:
        """Wait for a restart still running; raise its error if it failed."""

    def next_id(self) -> str:
        """A fresh id, unique in this process (a model pause happens once per id)."""


class Emulation(Protocol):
    """How a kind acts on the real system."""

    def apply(self, window: FaultWindow, run: RunMechanisms) -> str:
        """The window starts: put the fault in force; return what was done (one line)."""

    def undo(self, window: FaultWindow, run: RunMechanisms) -> str:
        """The window ends (or the episode did): take it back; return what was done."""


class Modelling(Protocol):
    """How a kind acts on the modelled link. Both methods are called in the order of the
    episode's windows; `salt` is the window's index there (a distinct seeded stream)."""

    def added_delay(self, window: FaultWindow, salt: int, t: float, index: int,
                    link: ModelledLink) -> float:
        """Seconds added to the round trip of request `index` sent at control time `t`, for
        a window active at `t`."""

    def on_flight(self, window: FaultWindow, salt: int, t: float, index: int, base_s: float,
                  latency_s: float, link: ModelledLink) -> float:
        """The round trip of a request whose flight [t, t + latency_s) overlaps the window:
        `latency_s` unchanged, a longer one, or `math.inf` (lost). `base_s` is the base
        model's round trip, without any fault."""


class LinkShaping(Protocol):
    """An emulation that acts through the proxy's link shape: when any shaping window opens
    or closes, the controller asks each open one to add its part to one shape per
    direction (`RunMechanisms.reshape_proxy`)."""

    def shape(self, window: FaultWindow, shape: dict[str, float | str],
              run: RunMechanisms) -> None:
        """Add this window's part to `shape` (keys of `proxy.LinkShape`: delay_s, jitter_s,
        jitter_dist, bandwidth_bps), for a direction the window acts on."""


@dataclass(frozen=True)
class FaultKindEntry:
    """One fault kind. `name` is what config, the timeline and the event log call it."""

    name: str
    group: str
    """One of `GROUPS`."""
    emulation: Emulation
    modelling: Modelling
    paced: bool = False
    """Whether it acts through mechanisms that live in wall time (a restart, a lease, TCP
    backoff, a stalled prediction): then the pacing rule holds the ticks to wall time for
    the whole window. A delay or a loss needs no pacing: the measured round trip and the
    request timeout already put it in control time."""
    lane: str = ""
    """Windows of one lane never overlap (a later one is dropped from the timeline); windows
    of different lanes may (a slow, lossy link during a server stall). "": the kind's own
    name."""
    doc: str = ""
    """One line for listings: what it does."""

    @property
    def overlap_lane(self) -> str:
        return self.lane or self.name
