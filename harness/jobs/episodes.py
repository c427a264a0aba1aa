"""One robot's episodes: its engine, each episode under its fault timeline, its row written.

Shared by the loop job's two ways of running robots, threads of the harness
(`harness.jobs.loop`) and processes of their own (`harness.jobs.robots`): an episode run by
either is the same episode, seeded, timed and written the same way.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import NamedTuple

from envs import env_family, make_env
from envs.slowed import SlowedEnv
from harness.client.engine import engine_for
from harness.client.latency import LatencyModel
from harness.config import HarnessConfig
from harness.faults.controller import Mechanisms, episode_faults
from harness.faults.modelled import ModelledLink
from harness.loop.runner import run_episode
from harness.results.episodes import episode_id
from harness.results.overlay import FaultSpan
from harness.results.store import ResultsStore
from harness.results.video import VideoRecorder

log = logging.getLogger(__name__)


class Ended(NamedTuple):
    """An episode written: whether it succeeded, and its INFO line (`episode_line`)."""

    success: bool
    line: str


def robot_env(config: HarnessConfig, task: int, recorder: VideoRecorder):
    """One robot's env for task `task` (slowed when `env.step_sleep_s` says so); None,
    logged in one line, if the run records videos and the env cannot film (then it is
    closed)."""
    env_config = config.env
    env = make_env(env_config.name, cameras=tuple(env_config.cameras),
                   image_size=(env_config.image_size, env_config.image_size),
                   max_steps=env_config.max_steps, task_id=task)
    if env_config.step_sleep_s:
        env = SlowedEnv(env, env_config.step_sleep_s)
    if recorder.enabled and not hasattr(env, "video_frame"):
        log.error("record=%s: env %s cannot film its episodes (it has no video_frame, see "
                  "envs.base.VideoEnv); use record=none", config.record, env_config.name)
        env.close()
        return None
    return env


def robot_engine(config: HarnessConfig, env, client, mechanisms: Mechanisms):
    """One robot's engine, with the latency model its clock uses (a modelled link wraps
    the configured one when the faults are modelled)."""
    latency = LatencyModel(config.latency.kind, value_s=config.latency.value_s,
                           sigma=config.latency.sigma, seed=config.seed)
    if mechanisms.modelled:
        latency = ModelledLink.for_contract(latency, env.spec.contract,
                                            chunk_size=config.policy.chunk_size,
                                            seed=config.seed)
    return engine_for(env.spec, client, config.client,
                      chunk_size=config.policy.robot_chunk_size, latency=latency)


def fault_spans(windows, dt: float) -> tuple[FaultSpan, ...]:
    """An episode's fault windows (`FaultWindow`, control seconds) in its ticks: a window is
    open from the first tick whose control time (tick x dt) reaches its start to the first
    that reaches its end, as `FaultController.on_tick` opens and closes it."""

    def first_tick_at(t_s: float) -> int:
        tick = max(0, math.ceil(t_s / dt - 1e-9))
        while tick * dt < t_s:  # the controller compares tick x dt, not the quotient
            tick += 1
        return tick

    return tuple(FaultSpan(w.kind, first_tick_at(w.start_s),
                           None if math.isinf(w.end_s) else first_tick_at(w.end_s))
                 for w in windows)


def _filming(recorder: VideoRecorder, env, engine, *, key: str, windows: list):
    """The episode's video (`EpisodeVideo`) for a `with` block, or None when the run
    records none."""
    if not recorder.enabled:
        return contextlib.nullcontext()
    return recorder.episode(env, key=key, dt=engine.dt, horizon_ticks=env.spec.max_steps,
                            spans=fault_spans(windows, engine.dt))


def run_one_episode(config: HarnessConfig, store: ResultsStore, env, engine, *, task: int,
                    index: int, mechanisms: Mechanisms, recorder: VideoRecorder,
                    robot: int) -> Ended:
    """Run the task's episode number `index` on one robot and write it (its video, when
    `recorder` records, before its row, so a row's `video` exists)."""
    episode = episode_id(task, index)
    init_state = env_family(config.env.name).init_state(index)
    faults = episode_faults(config.faults, seed=config.seed, episode=episode,
                            horizon_s=env.spec.max_steps * engine.dt,
                            mechanisms=mechanisms, latency=engine.latency)
    with _filming(recorder, env, engine, key=store.key(task, episode),
                  windows=faults.windows if faults else []) as video:
        trace = run_episode(env, video.film(engine) if video else engine, episode=episode,
                            seed=config.seed + index, init_state=init_state,
                            clock=config.clock, on_tick=faults.on_tick if faults else None)
        filmed = {"video": video.finish(trace)} if video else {}
    if faults:
        faults.finish(trace.steps, trace.steps * engine.dt)
    events = faults.events if faults else []
    if engine.dead_reason:
        events.append({"dead": engine.dead_reason})
    store.write_episode(task=task, seed=config.seed + index, init_state=init_state,
                        trace=trace, extra={"transport": config.transport.kind,
                                            "client_state_end": engine.state.value,
                                            "faults": config.faults.name,
                                            "faults_apply": str(config.faults.apply),
                                            "faults_started": len(faults.windows)
                                            if faults else 0,
                                            "clients": config.clients, "robot": robot,
                                            "clients_as": str(config.clients_as),
                                            "shard": config.shard, **filmed},
                        events=events)
    line = episode_line(task, episode, trace, events)
    log.info("%s", line)
    return Ended(trace.success, line)


def episode_line(task: int, episode: int, trace, events: list[dict]) -> str:
    """The one INFO line of an episode (each fault window's start and end are DEBUG): how it
    ended, its fallback ticks, and the windows it had, by kind and ticks."""
    windows = [f"{e['fault']} {e['tick']}-" for e in events if e.get("phase") == "start"]
    ends = [e["tick"] for e in events if e.get("phase") == "end"]
    spans = [f"{w}{end}" for w, end in zip(windows, ends, strict=False)] + windows[len(ends):]
    fallback = sum(tick.source == "fallback" for tick in trace.ticks)
    return (f"task {task} episode {episode}: {trace.termination} after {trace.steps} ticks, "
            f"{fallback} on the fallback" + (f"; faults (ticks): {', '.join(spans)}"
                                             if spans else ""))
