"""Config shape of the client engine (`client.*` on the command line) and its choices."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from harness.choices import choice


class Ensembling(enum.StrEnum):
    """How an arriving chunk combines with actions already queued for the same ticks."""

    newest = "newest"
    average = "average"
    exponential = "exponential"


class Fallback(enum.StrEnum):
    """What the robot executes when no usable action is queued."""

    hold = "hold"
    """Zero deltas, gripper kept as it is."""
    repeat_last = "repeat_last"
    zero = "zero"


class OutOfBounds(enum.StrEnum):
    """What the engine does with a chunk holding actions outside the env's bounds."""

    clip = "clip"
    """Saturate them at the bounds, as an arm's controller would (counted)."""
    reject = "reject"
    """Drop the whole chunk, as if it were lost (counted)."""


@dataclass
class EngineConfig:
    send_threshold: int = 4
    """Send a new observation when fewer than this many queued actions remain."""
    ensembling: Ensembling = Ensembling.newest
    request_timeout_s: float = 1.0
    """A chunk not back within this long counts as lost (control time)."""
    max_action_age_s: float = 0.5
    """Never execute an action predicted from an observation older than this."""
    max_offline_s: float = 5.0
    """Without any chunk for this long (control time), give up: DEAD."""
    fallback: Fallback = Fallback.hold
    out_of_bounds: OutOfBounds = OutOfBounds.clip
    """A chunk of the wrong shape or with a non-finite value is always dropped."""
    control_timeout_s: float = 2.0
    """Deadline of control messages (open, reset, close) on the request path."""
    reject_retry_s: float = 30.0
    """How long (wall time) to keep retrying a session the server rejects for a reason that
    may clear (draining, max_sessions reached) before the episode ends DEAD."""

    def __post_init__(self) -> None:
        if self.send_threshold < 1:
            raise ValueError(f"client.send_threshold={self.send_threshold}: must be >= 1")
        self.ensembling = choice(Ensembling, self.ensembling, "client.ensembling")
        self.fallback = choice(Fallback, self.fallback, "client.fallback")
        self.out_of_bounds = choice(OutOfBounds, self.out_of_bounds, "client.out_of_bounds")
        for name in ("request_timeout_s", "max_action_age_s", "max_offline_s",
                     "control_timeout_s", "reject_retry_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"client.{name}={getattr(self, name)}: must be positive")
