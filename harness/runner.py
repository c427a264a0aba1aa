"""Episode runner and its clock: which action the robot executes at each control tick.

A simulator on a CPU does not run at the robot's control rate, so wall time cannot decide
which chunk is in time. Under `clock="virtual"` the env advances in ticks of dt = 1/control_hz
and a request sent at tick s with round trip L becomes usable at tick s + ceil(L/dt): a reply
that arrives early (wall time) is held, and when the sim reaches a tick at which the reply
could still be usable, the runner waits for it. The loop thus sees exactly the latency a real
robot at control_hz would see. A `LatencyModel` may replace the measured L with a fixed or a
seeded value per request: that is what makes runs replayable byte for byte. Under
`clock="realtime"` ticks are paced by the wall clock and overruns are counted.

Every tick is checked against the invariants: no executed action older than
`max_action_age_s`, none from another episode, session epoch or model, sequence ids never
going backwards. Breaches are recorded, never silently fixed.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from envs.base import Env
from harness import wire
from harness.engine import ActionSource, ClientEngine, EngineStats, TickResult

CLOCKS = ("virtual", "realtime")
_POLL_S = 0.0002


@dataclass
class TickRecord:
    tick: int
    source: str
    state: str
    age_ticks: int | None
    seq: int | None
    latency_s: float | None
    action: list[float]


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

    def action_digest(self) -> bytes:
        """Executed actions as bytes, for parity checks."""
        return np.asarray([t.action for t in self.ticks], np.float32).tobytes()


class InvariantChecker:
    """The safety invariants of DESIGN.md, checked on every executed action."""

    def __init__(self, *, max_age_ticks: int) -> None:
        self.max_age_ticks = max_age_ticks
        self.last_seq = -1

    def check(self, result: TickResult, *, tick: int, episode: int, epoch: int,
              model_id: str) -> list[str]:
        if result.source is ActionSource.FALLBACK:
            return []
        breaches = []
        if result.age_ticks is None or result.age_ticks > self.max_age_ticks:
            breaches.append(f"tick {tick}: action age {result.age_ticks} ticks > "
                            f"{self.max_age_ticks}")
        if (result.episode, result.epoch, result.model_id) != (episode, epoch, model_id):
            breaches.append(f"tick {tick}: action from episode {result.episode} epoch "
                            f"{result.epoch} model {result.model_id!r}, expected {episode} "
                            f"{epoch} {model_id!r}")
        if result.seq is not None and result.seq < self.last_seq:
            breaches.append(f"tick {tick}: sequence id went back {self.last_seq} -> {result.seq}")
        if result.seq is not None:
            self.last_seq = result.seq
        return breaches


def _wait_for_due_reply(engine: ClientEngine, tick: int) -> None:
    """Virtual clock: block until the in-flight reply is known to be usable or not by `tick`."""
    while (pending := engine.reply_pending_until()) is not None:
        seq, sent_tick, sent_ns = pending
        model_s = engine.latency.latency_for(seq)
        if model_s is None:  # measured: usable now only if it comes back within the ticks
            deadline_ns = sent_ns + (tick - sent_tick) * engine.dt * 1e9
        elif tick >= sent_tick + max(1, math.ceil(model_s / engine.dt - 1e-9)):
            deadline_ns = sent_ns + engine.config.request_timeout_s * 1e9  # it is due: wait
        else:
            return
        if time.monotonic_ns() >= deadline_ns:
            return
        engine.poll(tick)
        if engine.reply_pending_until() is None:
            return
        time.sleep(_POLL_S)


def run_episode(env: Env, engine: ClientEngine, *, episode: int, seed: int,
                init_state: int | None = None, clock: str = "virtual") -> EpisodeTrace:
    """Run one episode; the engine's latency model decides when chunks become usable."""
    if clock not in CLOCKS:
        raise ValueError(f"clock={clock!r}: expected one of {CLOCKS}")
    trace = EpisodeTrace(episode, dt=engine.dt)
    observation = env.reset(seed=seed, init_state=init_state)
    engine.reset(episode)
    checker = InvariantChecker(
        max_age_ticks=math.floor(engine.config.max_action_age_s / engine.dt + 1e-9))
    next_tick_at = time.monotonic()
    for tick in range(env.spec.max_steps):
        if clock == "virtual":
            _wait_for_due_reply(engine, tick)
        body = wire.Observation(observation.state, observation.images, observation.instruction)
        result = engine.tick(tick, body)
        trace.breaches += checker.check(result, tick=tick, episode=episode, epoch=engine.epoch,
                                        model_id=engine.model_id)
        step = env.step(result.action)
        trace.ticks.append(TickRecord(tick, result.source.value, result.state.value,
                                      result.age_ticks, result.seq, result.latency_s,
                                      [float(a) for a in result.action]))
        trace.steps = tick + 1
        observation = step.observation
        if step.success:
            trace.success, trace.termination = True, "success"
            break
        if result.state.value == "dead":
            trace.termination = "dead"
            break
        if clock == "realtime":
            next_tick_at += engine.dt
            remaining = next_tick_at - time.monotonic()
            if remaining > 0:
                time.sleep(remaining)
            else:
                trace.overruns += 1
    trace.wire = engine.stats
    if hasattr(env, "sim_state"):
        trace.final_sim_state = env.sim_state()
    return trace
