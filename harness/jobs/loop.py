"""The closed-loop job: env and client engine here, the policy server where the config says.

For each selected task it starts (or, for `server=external`, finds) a policy server
(`harness.server.launch`), wires the task's emulated faults around it
(`harness.faults.wiring`), runs the episodes through a `ClientEngine` over the configured
transport, and writes every episode to the run directory as it ends (with `record=failures|
all`, its video too: `harness.results.video`). Episodes already written there are skipped,
so re-running the same command resumes a killed run. The summary and the exit status come
from `harness.results.summary`.

Each task has a progress bar that says what runs (env, task, transport, fault schedule,
client mode) and how it goes (`ok <successes>/<episodes ended>`); each episode also logs
one INFO line (`episode_line`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from envs import env_family, make_env, task_ids
from envs.slowed import SlowedEnv
from harness.checks import check_loop_config
from harness.client.engine import engine_for
from harness.client.latency import LatencyModel
from harness.config import ConfigError, HarnessConfig, ServerMode
from harness.faults.controller import Mechanisms, episode_faults
from harness.faults.modelled import ModelledLink
from harness.faults.schedule import NetworkPath
from harness.faults.wiring import (
    KernelUnavailable,
    check_kernel_path,
    fault_wiring,
    warn_if_presence_will_trip,
)
from harness.loop.ports import PortInUse, check_listen_free
from harness.loop.runner import run_episode
from harness.results.episodes import episode_id
from harness.results.overlay import FaultSpan
from harness.results.store import ConfigMismatch, ResultsStore
from harness.results.summary import exit_status, print_summary
from harness.results.video import VideoRecorder, VideoUnavailable
from harness.results.video import check_available as check_video_available
from harness.results.wandb_log import LoggerKind, WandbUnavailable, check_available, log_run
from harness.server.launch import router_overrides, start_router, wait_for_server
from harness.server.replicas import replica_client, replica_transports, start_replicas
from harness.server.supervisor import ServerStartError
from transports.config import ROUTER_AUTO

log = logging.getLogger(__name__)


def _engine_for(config: HarnessConfig, env, client, mechanisms: Mechanisms):
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


class TaskProgress:
    """A task's progress bar and its running success count, `ok <successes>/<ended>` after
    the bar; thread-safe, since several robots end episodes at once.

    Args:
        bar: the bar (a `tqdm`, or anything with `set_postfix_str(text, refresh=)` and
            `update(n)`).
    """

    def __init__(self, bar) -> None:
        self.bar = bar
        self.ended = 0
        self.successes = 0
        self._lock = threading.Lock()

    def episode_ended(self, success: bool) -> None:
        """Count one ended episode and move the bar (the count first, so the bar's redraw
        shows it)."""
        with self._lock:
            self.ended += 1
            self.successes += bool(success)
            self.bar.set_postfix_str(f"ok {self.successes}/{self.ended}", refresh=False)
            self.bar.update(1)


def progress_description(config: HarnessConfig, task: int) -> str:
    """What a task's bar runs: env and task, transport, fault schedule, client mode."""
    return (f"{config.env.name} task {task} | {config.transport.kind} | "
            f"faults={config.faults.name} | {config.client.mode}")


def _fault_spans(windows, dt: float) -> tuple[FaultSpan, ...]:
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
                            spans=_fault_spans(windows, engine.dt))


def _run_task(config: HarnessConfig, store: ResultsStore, robots: list[tuple[object, object]],
              task: int, pending: list[int], mechanisms: Mechanisms,
              recorder: VideoRecorder) -> None:
    """The task's pending episodes, each written as it ends, each under its own fault
    timeline (none unless `faults=` says so). Each robot (env, transport client) has its own
    engine and takes the next pending episode when it finishes one: with `clients` > 1 they
    run at once, in threads, against the one server (the physics and the transports release
    the GIL; what they share is the server)."""
    episodes: queue.SimpleQueue[int] = queue.SimpleQueue()
    for i in pending:
        episodes.put(i)
    engines = [_engine_for(config, env, client, mechanisms) for env, client in robots]
    with tqdm(total=len(pending), desc=progress_description(config, task)) as bar:
        progress = TaskProgress(bar)
        if len(robots) == 1:
            _run_episodes(config, store, robots[0][0], engines[0], task, episodes, mechanisms,
                          progress, recorder, robot=0)
        else:
            with ThreadPoolExecutor(len(robots), thread_name_prefix="robot") as pool:
                running = [pool.submit(_run_episodes, config, store, robots[r][0], engine, task,
                                       episodes, mechanisms, progress, recorder, robot=r)
                           for r, engine in enumerate(engines)]
                for future in running:
                    future.result()  # a robot's exception is the job's
    for engine in engines:
        engine.close()


def _run_episodes(config: HarnessConfig, store: ResultsStore, env, engine, task: int,
                  episodes: queue.SimpleQueue[int], mechanisms: Mechanisms,
                  progress: TaskProgress, recorder: VideoRecorder, *, robot: int) -> None:
    """Run episodes from `episodes` on one robot until none is left; film each one when
    `recorder` records (its video is written before its row, so a row's `video` exists)."""
    family = env_family(config.env.name)
    while True:
        try:
            i = episodes.get_nowait()
        except queue.Empty:
            return
        episode = episode_id(task, i)
        init_state = family.init_state(i)
        faults = episode_faults(config.faults, seed=config.seed, episode=episode,
                                horizon_s=env.spec.max_steps * engine.dt,
                                mechanisms=mechanisms, latency=engine.latency)
        with _filming(recorder, env, engine, key=store.key(task, episode),
                      windows=faults.windows if faults else []) as video:
            trace = run_episode(env, video.film(engine) if video else engine, episode=episode,
                                seed=config.seed + i, init_state=init_state,
                                clock=config.clock, on_tick=faults.on_tick if faults else None)
            filmed = {"video": video.finish(trace)} if video else {}
        if faults:
            faults.finish(trace.steps, trace.steps * engine.dt)
        events = faults.events if faults else []
        if engine.dead_reason:
            events.append({"dead": engine.dead_reason})
        store.write_episode(task=task, seed=config.seed + i, init_state=init_state,
                            trace=trace, extra={"transport": config.transport.kind,
                                                "client_state_end": engine.state.value,
                                                "faults": config.faults.name,
                                                "faults_apply": str(config.faults.apply),
                                                "faults_started": len(faults.windows)
                                                if faults else 0,
                                                "clients": config.clients, "robot": robot,
                                                "shard": config.shard, **filmed},
                            events=events)
        log.info("%s", episode_line(task, episode, trace, events))
        progress.episode_ended(trace.success)


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


def _server_overrides(overrides: list[str]) -> list[str]:
    """The run's overrides a child server composes its config from: not the task selection
    (each server gets its task), not the job, not Hydra's own settings except the search
    path (a preset in a user's config directory must compose in the child too)."""
    from hydra.core.hydra_config import HydraConfig

    kept = [o for o in overrides if not o.startswith(("env.tasks=", "job=", "hydra."))]
    if HydraConfig.initialized():
        kept += [o for o in HydraConfig.get().overrides.hydra
                 if o.startswith("hydra.searchpath=")]
    return kept


def run_loop(config: HarnessConfig, output_dir: Path, overrides: list[str], *,
             resolved_config: dict | None = None, job_overrides: list[str] | None = None) -> int:
    """Run every selected task's episodes into `output_dir` and summarize them; returns the
    process's exit status: 0, 1 if no policy server answered, none served an episode or one
    rejected the sessions, 2 if `output_dir` holds a run of another config. Every failure
    is one line in the log."""
    try:
        check_loop_config(config)
        if config.server.mode is not ServerMode.external and not (
                config.faults.has_network_faults and config.faults.network is NetworkPath.kernel):
            check_listen_free(config.transport)  # (the kernel path listens in a namespace)
    except (ConfigError, PortInUse) as exc:
        log.error("%s", exc)
        return 2
    store = ResultsStore(output_dir)
    if resolved_config is not None:
        try:
            store.bind_config(resolved_config)
        except ConfigMismatch as exc:
            log.error("%s", exc)
            return 2
    if job_overrides is not None:
        store.record_overrides(job_overrides)
    warn_if_presence_will_trip(config.faults, config.transport)
    try:
        check_kernel_path(config.faults)
        check_available(config.logger)
        check_video_available(config.record)
    except (KernelUnavailable, WandbUnavailable, VideoUnavailable) as exc:
        log.error("%s", exc)
        return 2
    recorder = VideoRecorder(output_dir, config.record)
    overrides = _server_overrides(overrides)
    with contextlib.ExitStack() as run:
        try:
            config, overrides, router = _with_router(config, overrides, output_dir, run)
        except ServerStartError as exc:  # one line: the router's own exception
            log.error("%s", exc)
            return 2
        return _run_tasks(config, store, overrides, output_dir, recorder, resolved_config,
                          router)


def _with_router(config: HarnessConfig, overrides: list[str], output_dir: Path,
                 run: contextlib.ExitStack) -> tuple[HarnessConfig, list[str], object]:
    """`transport.router=auto`: start the run's Zenoh router (stopped when `run` closes),
    point the robots' config and the server's overrides at it; and the router's supervisor
    (None without one), which router faults act on."""
    if getattr(config.transport, "router", None) != ROUTER_AUTO:
        return config, overrides, None
    router, locator = start_router(config, overrides, output_dir)
    run.callback(router.stop)
    transport = dataclasses.replace(config.transport, router=locator)
    return (dataclasses.replace(config, transport=transport),
            router_overrides(overrides, locator), router)


def _run_tasks(config: HarnessConfig, store: ResultsStore, overrides: list[str],
               output_dir: Path, recorder: VideoRecorder, resolved_config: dict | None,
               router: object) -> int:
    """Every selected task's episodes, then the summary; the process's exit status."""
    env_config = config.env
    shard, shards = config.shard_of
    for position, task in enumerate(task_ids(env_config.name, env_config.tasks)):
        first = position * env_config.episodes_per_task  # the task's first index in the run
        mine = [i for i in range(env_config.episodes_per_task) if (first + i) % shards == shard]
        pending = [i for i in mine if not store.done(task, episode_id(task, i))]
        if not pending:
            log.info("task %d: all %d episodes%s already in %s", task, len(mine),
                     f" of shard {config.shard}" if config.shard else "", output_dir)
            continue
        with contextlib.ExitStack() as running:
            envs = []
            for _ in range(config.clients):
                env = make_env(env_config.name, cameras=tuple(env_config.cameras),
                               image_size=(env_config.image_size, env_config.image_size),
                               max_steps=env_config.max_steps, task_id=task)
                envs.append(SlowedEnv(env, env_config.step_sleep_s)
                            if env_config.step_sleep_s else env)
                running.callback(envs[-1].close)
                if recorder.enabled and not hasattr(envs[-1], "video_frame"):
                    log.error("record=%s: env %s cannot film its episodes (it has no "
                              "video_frame, see envs.base.VideoEnv); use record=none",
                              config.record, env_config.name)
                    return 2
            wiring = running.enter_context(fault_wiring(config, task=task, run_dir=output_dir,
                                                        server_overrides=overrides))
            wiring.mechanisms.router = router
            replicas = replica_transports(wiring.transport, config.server.replicas,
                                          config.server.replica_port_stride)
            try:
                servers = start_replicas(wiring.server_config, task, wiring.server_overrides,
                                         output_dir, replicas,
                                         model_faults_path=wiring.model_faults_path,
                                         predict_hook=wiring.predict_hook,
                                         command_prefix=wiring.command_prefix)
            except ServerStartError as exc:  # one line: the server's own exception
                log.error("%s", exc)
                return 2  # nothing ran: like a refused config, not a failed run
            for server in servers:
                if server is not None:
                    running.callback(server.stop)
            wiring.server_started(servers[0])  # process faults act on replica 0
            # One server: what the robots dial is the wiring's (a fault proxy in front of it
            # once the server started); replicas have no proxy (the config refuses one).
            dial = replicas if len(replicas) > 1 else [wiring.transport]
            robots = []
            for index, env in enumerate(envs):
                client = wiring.wrap_client(replica_client(dial, index))
                running.callback(client.close)
                if not wait_for_server(client, config.transport,
                                       timeout_s=config.server.startup_timeout_s):
                    return 1
                robots.append((env, client))
            _run_task(config, store, robots, task, pending, wiring.mechanisms, recorder)
    summary = store.summarize(latency_budget_s=config.latency.budget_s,
                              clock_latency=config.latency.kind)
    print_summary(summary, title=f"{config.env.name} / {config.policy.name} over "
                                 f"{config.transport.kind} ({config.clock} clock)",
                  faults=config.faults.name, faults_apply=str(config.faults.apply),
                  client_mode=str(config.client.mode))
    if config.logger.kind is LoggerKind.wandb:
        _copy_to_wandb(config, store, output_dir, summary, resolved_config or {})
    log.info("results in %s; report: python -m reports %s", output_dir, output_dir)
    return exit_status(summary)


def _copy_to_wandb(config: HarnessConfig, store: ResultsStore, output_dir: Path,
                   summary: dict, resolved_config: dict) -> None:
    """The job's wandb run: named by its overrides, grouped by its sweep, with the job's own
    HTML report. A report that fails to render is logged and the run is copied without it:
    the results on disk are what counts."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    name = (hydra and hydra.job.override_dirname) or output_dir.name
    group = config.logger.group or (str(hydra.sweep.dir) if hydra and hydra.mode
                                    is RunMode.MULTIRUN else None)
    report = output_dir / "report.html"
    try:
        from reports import load_sweep
        from reports.html import write_report

        write_report(load_sweep(output_dir), report)
    except Exception:  # noqa: BLE001 - a report is a view; the job's results stay written
        log.exception("the HTML report of %s could not be rendered; wandb gets none",
                      output_dir)
        report = None
    log_run(output_dir, dataclasses.replace(config.logger, group=group),
            resolved_config=resolved_config, name=name, episodes=store.rows(),
            summary=summary, report_html=report)
