"""Message faults: stream messages hit in the client's transport wrapper (`FaultyClient`).

Emulated by the wrapper around the robot's transport client (`harness.faults.messages`): a
`MessageFault` (drop, corrupt, duplicate, delay, reorder) or a Gilbert-Elliott loss chain is
put in force for the window. Modelled: a dropped, corrupted or reordered message loses its
request with the window's probability, a delayed one adds `delay_s`, a duplicate changes
nothing on a latest-only stream, burst loss runs the same chain over the episode's requests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from harness.faults.kinds.base import FaultKindEntry, RunMechanisms
from harness.faults.kinds.effects import AddedDelay, LostIfSent, NoEffect
from harness.faults.messages import GilbertElliott, MessageFault

if TYPE_CHECKING:
    from harness.faults.modelled import ModelledLink
    from harness.faults.schedule import FaultWindow


@dataclass(frozen=True)
class MessageOnClient:
    """The wrapper hits stream messages with the kind's action while the window is open."""

    def apply(self, window: FaultWindow, run: RunMechanisms) -> str:
        spec = window.spec
        run.need("client", window.kind).fault = MessageFault(str(window.kind), spec.probability,
                                                             spec.delay_s)
        return f"message {window.kind}"

    def undo(self, window: FaultWindow, run: RunMechanisms) -> str:
        run.mechanisms.client.fault = None
        return f"message {window.kind} off"


def _chain(window: FaultWindow) -> GilbertElliott:
    spec = window.spec
    return GilbertElliott(spec.p_good_bad, spec.p_bad_good, spec.loss_good, spec.loss_bad)


@dataclass(frozen=True)
class LossOnClient:
    """Burst loss in the wrapper: a proxy cannot lose packets inside a TCP stream, and this
    kernel netem is not everywhere (not on the machine this was built on), so loss is
    message-level."""

    def apply(self, window: FaultWindow, run: RunMechanisms) -> str:
        run.need("client", window.kind).loss = _chain(window)
        return "message loss, Gilbert-Elliott, in the client wrapper"

    def undo(self, window: FaultWindow, run: RunMechanisms) -> str:
        run.mechanisms.client.loss = None
        return "message loss off"


class HeldBack(AddedDelay):
    """+ delay_s: the chunk is held back that long."""

    def added_delay(self, window: FaultWindow, salt: int, t: float, index: int,
                    link: ModelledLink) -> float:
        return window.spec.delay_s


class BurstLoss:
    """Gilbert-Elliott each way (the emulated loss's chain), stepped once per request in the
    order the engine asks (each request is asked about once it is sent, so the chain grows
    to `index` and no further); a request sent in the window is lost if either way is."""

    def added_delay(self, window: FaultWindow, salt: int, t: float, index: int,
                    link: ModelledLink) -> float:
        return 0.0

    def on_flight(self, window: FaultWindow, salt: int, t: float, index: int, base_s: float,
                  latency_s: float, link: ModelledLink) -> float:
        if not window.active(t):
            return latency_s
        chain, rng, lost = link.window_state(salt, lambda: (
            _chain(window), np.random.default_rng([link.seed, link.episode, 0x6E]), []))
        while len(lost) <= index:
            out, back = chain.lose(rng, "out"), chain.lose(rng, "in")
            lost.append(out or back)
        return math.inf if lost[index] else latency_s


KINDS = (
    FaultKindEntry("drop", "message", MessageOnClient(), LostIfSent(), paced=True,
                   lane="message",
                   doc="Stream messages (observations out, chunks in) dropped, each with "
                       "`probability`."),
    FaultKindEntry("corrupt", "message", MessageOnClient(), LostIfSent(), paced=True,
                   lane="message",
                   doc="Stream messages with bytes flipped: the codecs must reject them, "
                       "never crash."),
    FaultKindEntry("duplicate", "message", MessageOnClient(),
                   NoEffect("the stream is latest-only: a second copy replaces the first"),
                   paced=True, lane="message", doc="Observations sent twice."),
    FaultKindEntry("delay", "message", MessageOnClient(), HeldBack(), paced=True,
                   lane="message", doc="Incoming chunks held back `delay_s` of wall time."),
    FaultKindEntry("reorder", "message", MessageOnClient(), LostIfSent(), paced=True,
                   lane="message",
                   doc="An incoming chunk held back until the next one has been taken."),
    FaultKindEntry("loss", "message", LossOnClient(), BurstLoss(),
                   doc="Gilbert-Elliott burst loss of stream messages (message level: a proxy "
                       "cannot lose packets inside a TCP stream, and this kernel has no "
                       "netem)."),
)
