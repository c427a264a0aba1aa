"""Config shape of the client engine (`client.*` on the command line) and its choices."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional  # OmegaConf needs Optional, not "int | None"

from harness.choices import choice


class ClientMode(enum.StrEnum):
    """When the client asks for a chunk, and what the robot does while it waits."""

    asynchronous = "asynchronous"
    """Ask when fewer than `send_threshold` queued actions remain and keep executing them
    meanwhile; an arriving chunk is trimmed of the actions its round trip made stale (the
    robot moved on) and merged by `ensembling`."""
    synchronous = "synchronous"
    """Ask only when the queue is empty and nothing is in flight, and hold still (zero
    deltas, gripper kept: `ActionSource.WAIT`, still STREAMING) until the chunk comes, then
    execute it from its first action: nothing in it is stale, a long round trip costs
    episode time instead (openpi's and OpenVLA's LIBERO loops). `send_threshold` is ignored
    and chunks never overlap, so `ensembling` has nothing to combine. Losses, timeouts and
    outages are handled as in asynchronous mode: after a loss the ticks fall back, and the
    chunk of a request sent while falling back is trimmed (the fallback may have moved the
    robot)."""
    delay_aware = "delay_aware"
    """Asynchronous, and each observation carries the expected delay d (ticks, the largest
    of the last `delay_window` round trips, or the latency model's before the first) and the
    committed prefix: the d actions the robot executes before the reply can be used (queued
    ones, then holding still). A delay-aware policy plans from where they lead and its chunk
    starts at tick t + d, so nothing in it is stale unless the reply is later than d; only
    that excess is trimmed. Asks when fewer than max(send_threshold, d + 1) actions remain.
    Ages count from the chunk's start (the invariant checker verifies the robot executed the
    prefix exactly). With a policy that is not delay-aware it runs asynchronously and says so
    (`execution` in the results)."""


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
    mode: ClientMode = ClientMode.asynchronous
    """asynchronous (stream ahead, trim stale actions) or synchronous (ask when the queue is
    empty, hold still while waiting): see `ClientMode`."""
    send_threshold: int = 4
    """Send a new observation when fewer than this many queued actions remain
    (asynchronous mode; synchronous mode ignores it and sends when the queue is empty)."""
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
    keepalive_s: float = 2.0
    """After this long (wall time) without sending the server anything, send a STATUS so it
    keeps the session of a robot that waits in control time (a simulator slower than real
    time stretches a wait of a few ticks past `server.session_idle_timeout_s`:
    `harness.client.keepalive`). Below that idle timeout (checked at startup)."""
    reject_retry_s: float = 30.0
    """How long (wall time) to keep retrying a session the server rejects for a reason that
    may clear (draining, max_sessions reached) before the episode ends DEAD."""
    delay_window: int = 8
    """delay_aware: the expected delay is the largest of this many latest round trips (the
    ones the clock used): a reply later than expected costs trimmed actions, an earlier one
    only waits in the queue."""
    jpeg_quality: Optional[int] = None
    """Camera images travel as JPEG of this quality (1..100); None: raw. What a bandwidth
    fault bites on: a 128x128 frame is 49 KB raw, a few KB as JPEG."""

    def __post_init__(self) -> None:
        if self.jpeg_quality is not None and not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"client.jpeg_quality={self.jpeg_quality}: must be in 1..100 "
                             "(or null: raw images)")
        if self.delay_window < 1:
            raise ValueError(f"client.delay_window={self.delay_window}: must be >= 1")
        if self.send_threshold < 1:
            raise ValueError(f"client.send_threshold={self.send_threshold}: must be >= 1")
        self.mode = choice(ClientMode, self.mode, "client.mode")
        self.ensembling = choice(Ensembling, self.ensembling, "client.ensembling")
        self.fallback = choice(Fallback, self.fallback, "client.fallback")
        self.out_of_bounds = choice(OutOfBounds, self.out_of_bounds, "client.out_of_bounds")
        for name in ("request_timeout_s", "max_action_age_s", "max_offline_s",
                     "control_timeout_s", "reject_retry_s", "keepalive_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"client.{name}={getattr(self, name)}: must be positive")
