"""The record of one episode: what the robot executed at every control tick, and why.

Written by the episode runner (`harness.loop.runner`), read by the results store, the
fail-safe metrics, the parity check and the reports; it lives with the results because they
own it, so reading a trace never imports the loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from harness.client.states import EngineStats


@dataclass
class TickRecord:
    tick: int
    source: str
    state: str
    age_ticks: int | None
    seq: int | None
    latency_s: float | None
    """Round trip of the chunk merged at this tick: the one the clock used."""
    action: list[float]
    paced: bool = False
    """Virtual clock: this tick was held to wall time (the engine was not STREAMING)."""
    measured_latency_s: float | None = None
    """The same chunk's real round trip (differs from `latency_s` under a latency model)."""
    ee_pos: list[float] | None = None
    """End-effector position after this tick's step, metres, world frame (`Env.ee_pos`);
    None if the env cannot say. What the fail-safe metrics measure motion with."""
    server_queue_s: float | None = None
    """The merged chunk's wait in the server's mailbox; measured_latency_s minus this and
    `server_infer_s` is the network's share (both as the server reports them)."""
    server_infer_s: float | None = None
    server_batch_size: int | None = None
    """Robots served by the pass that predicted the merged chunk (1: alone); what
    `server_infer_s` was shared with."""


@dataclass
class EpisodeTrace:
    episode: int
    success: bool = False
    steps: int = 0
    termination: str = "max_steps"
    ticks: list[TickRecord] = field(default_factory=list)
    breaches: list[str] = field(default_factory=list)
    overruns: int = 0
    final_sim_state: bytes = b""
    dt: float = 0.0
    """Control period, seconds: ticks x dt is control time."""
    wire: EngineStats = field(default_factory=EngineStats)
    """The engine's requests, chunks, losses, re-opens and server errors in this episode."""
    ee_pos_start: list[float] | None = None
    """End-effector position after the reset: where tick 0's step starts from."""
    max_age_ticks: int | None = None
    """The invariant checker's limit on an executed action's age (`client.max_action_age_s`
    in ticks), for counting stale actions from the trace alone."""
    request_timeout_s: float | None = None
    """`client.request_timeout_s`: how long after a fault the engine may take to notice."""

    def action_digest(self) -> bytes:
        """Executed actions as bytes, for parity checks."""
        return np.asarray([t.action for t in self.ticks], np.float32).tobytes()
