"""Episode runner: which action the robot executes at each control tick, and the record of it.

Each tick: the per-tick hook, then (virtual clock) the wait for a reply that is due
(`harness.loop.clock`), then the engine's action, checked against the invariants
(`harness.loop.invariants`), then the env step. The trace keeps every tick.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from envs.base import Env
from harness import protocol
from harness.client.engine import ClientEngine
from harness.client.states import ClientState
from harness.loop.clock import Clock, Pacer, wait_for_due_reply
from harness.loop.invariants import InvariantChecker
from harness.results.trace import EpisodeTrace, TickRecord

TickHook = Callable[[int, float, ClientState], bool | None]
"""Called at the start of every tick, before the engine chooses the action, with the tick,
its control time in seconds (tick x dt) and the engine's state: where tests look in and
where a fault controller starts and ends its faults. A true return says a fault is active:
the pacing rule then holds the tick to wall time as it does when the engine is not
STREAMING."""


def _ee_pos(env: Env) -> list[float] | None:
    """The env's end-effector position as plain floats; None if it cannot say (or has no
    `ee_pos`, like an env written before it was part of the interface)."""
    position = env.ee_pos() if hasattr(env, "ee_pos") else None
    return None if position is None else [float(x) for x in position]


def run_episode(env: Env, engine: ClientEngine, *, episode: int, seed: int,
                init_state: int | None = None, clock: Clock = Clock.virtual,
                on_tick: TickHook | None = None,
                due_reply_hold_s: float | None = None) -> EpisodeTrace:
    """Run one episode; the engine's latency model decides when chunks become usable
    (`due_reply_hold_s`: see `wait_for_due_reply`)."""
    clock = Clock(clock)
    trace = EpisodeTrace(episode, dt=engine.dt)
    with engine.keepalive.covering():  # a slow reset (LIBERO reloads its scene) keeps the session
        observation = env.reset(seed=seed, init_state=init_state)
    trace.ee_pos_start = _ee_pos(env)
    engine.reset(episode)
    checker = InvariantChecker(
        max_age_ticks=math.floor(engine.config.max_action_age_s / engine.dt + 1e-9))
    trace.max_age_ticks = checker.max_age_ticks
    trace.request_timeout_s = engine.config.request_timeout_s
    next_tick_at = time.monotonic()
    pacer = Pacer(engine.dt)
    for tick in range(env.spec.max_steps):
        fault_active = bool(on_tick(tick, tick * engine.dt, engine.state)) if on_tick else False
        paced = False
        if clock is Clock.virtual:
            paced = pacer.pace(tick, hold=fault_active
                               or engine.state is not ClientState.STREAMING)
            wait_for_due_reply(engine, tick, due_reply_hold_s)
        body = protocol.Observation(observation.state, observation.images, observation.instruction)
        result = engine.tick(tick, body)
        trace.breaches += checker.check(result, tick=tick, episode=episode, epoch=engine.epoch,
                                        model_id=engine.model_id)
        step = env.step(result.action)
        trace.ticks.append(TickRecord(tick, result.source.value, result.state.value,
                                      result.age_ticks, result.seq, result.latency_s,
                                      [float(a) for a in result.action], paced,
                                      result.measured_latency_s, _ee_pos(env),
                                      result.server_queue_s, result.server_infer_s,
                                      result.server_batch_size))
        trace.steps = tick + 1
        observation = step.observation
        if step.success:
            trace.success, trace.termination = True, "success"
            break
        if result.state is ClientState.DEAD:
            trace.termination = "dead"
            break
        if clock is Clock.realtime:
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
