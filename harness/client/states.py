"""What the engine reports: its fail-safe state, where each executed action came from, and
what happened on the wire in an episode."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np


class ClientState(enum.Enum):
    CONNECTING = "connecting"
    STREAMING = "streaming"
    DEGRADED = "degraded"
    STALLED = "stalled"
    RECONNECTING = "reconnecting"
    DEAD = "dead"


class ActionSource(enum.Enum):
    FRESH = "fresh"
    """The first action executed from a chunk that just arrived."""
    QUEUED = "queued"
    FALLBACK = "fallback"
    WAIT = "wait"
    """Holding still by design while the synchronous client waits: not a fallback. The
    hold action (zero deltas, gripper kept as it is), whatever `client.fallback` says."""


@dataclass
class TickResult:
    action: np.ndarray
    source: ActionSource
    state: ClientState
    age_ticks: int | None
    """Ticks between the observation the action was predicted from and now (None: fallback
    or wait). For a chunk merged on resume (synchronous mode) they count from the tick the
    robot resumed at: it held still since the observation, so nothing aged."""
    seq: int | None = None
    episode: int | None = None
    epoch: int | None = None
    model_id: str | None = None
    latency_s: float | None = None
    """Round trip of the chunk merged at this tick, if one was: the one the clock used."""
    measured_latency_s: float | None = None
    """The same chunk's real, measured round trip (equal to `latency_s` unless a latency
    model replaced it)."""
    observed_tick: int | None = None
    """Tick of the observation the action was predicted from (None: fallback or wait).
    `tick - age_ticks` unless the chunk was merged on resume: then earlier, and every tick
    in between was a WAIT tick, which the invariant checker verifies. For a delay-aware
    chunk they count from its start tick, and the checker verifies that the ticks in between
    executed the prefix the observation committed to."""
    committed: np.ndarray | None = None
    """The committed prefix of the observation sent at this tick (empty: it carried none;
    None: nothing was sent)."""
    server_queue_s: float | None = None
    """The merged chunk's wait in the server's mailbox (its own report): with
    `server_infer_s`, what splits `measured_latency_s` into network, queue and inference."""
    server_infer_s: float | None = None
    """The merged chunk's inference time on the server (its own report)."""
    server_batch_size: int | None = None
    """How many robots the server's pass that predicted the merged chunk served."""


@dataclass
class EngineStats:
    """What happened on the wire during one episode (reset by `ClientEngine.reset`)."""

    sent: int = 0
    chunks: int = 0
    reset_wait_s: float = 0.0
    """Wall time the episode's start (session open, reset) waited for the server."""
    lost: int = 0
    """Requests with no chunk back within `request_timeout_s`."""
    reopened: int = 0
    """Sessions re-opened after the server restarted or forgot this session."""
    rejected: int = 0
    """Chunks dropped on arrival: wrong shape, a non-finite value, or (out_of_bounds=reject)
    an action outside the env's bounds. None of them was executed."""
    forged: int = 0
    """Replies dropped on arrival because their seal was not this session's (a sealed
    stream, security=mtls): none of them was executed."""
    clipped: int = 0
    """Chunks with actions outside the env's bounds, saturated at them (out_of_bounds=clip)."""
    trimmed: int = 0
    """Chunk actions dropped on arrival because their tick had passed: the ones the round
    trip made stale (asynchronous), or only a reply later than expected (delay_aware)."""
    execution: str = ""
    """How chunks were executed this episode: the client mode, or for delay_aware with a
    model that is not, "asynchronous (...)" saying so."""
    errors: list[str] = field(default_factory=list)
    """As text: every ERROR reply (also counted in `error_replies`), and the engine's own
    failures (a reply that did not decode, a chunk dropped on arrival, a publish or reset
    that failed, error replies lost to a set-aside overflow)."""
    error_replies: dict[str, int] = field(default_factory=dict)
    """ERROR replies the server streamed to this robot's session, by `Error.code`
    ("inference": the model failed, or its external server was unavailable; "session": the
    server holds no session of our epoch; "contract", "protocol", "internal", "decode").
    Each is counted exactly once, when it arrives, whatever newer reply overtook it before
    the engine polled (`harness.client.replies`). The server counts the same replies when it
    sends them (`policy_error_replies`, `harness.server.metrics`), so over a run the two
    agree; one still in flight when an episode ends is counted in the next episode's."""

    @property
    def server_errors(self) -> int:
        """ERROR replies received this episode, of every code (the results' `server_errors`)."""
        return sum(self.error_replies.values())

    @property
    def client_errors(self) -> int:
        """The engine's own failures this episode (`errors` that are no ERROR reply)."""
        return len(self.errors) - self.server_errors
