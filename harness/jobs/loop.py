"""The closed-loop job: env and client engine here, the policy server where the config says.

For each selected task it starts (or, for `server=external`, finds) a policy server
(`harness.server.launch`), wires the task's emulated faults around it
(`harness.faults.wiring`), runs the episodes through a `ClientEngine` over the configured
transport, and writes every episode to the run directory as it ends (with `record=failures|
all`, its video too: `harness.results.video`). Episodes already written there are skipped,
so re-running the same command resumes a killed run. The summary and the exit status come
from `harness.results.summary`.

With `clients` > 1 the robots share the task's server (or its replicas), each with its own
env and engine: threads of the harness (`clients_as=threads`, the default) or processes of
their own (`clients_as=processes`, `harness.jobs.robots`); an episode is run and written the
same way by either (`harness.jobs.episodes`).

Each task has a progress bar that says what runs (env, task, transport, fault schedule,
client mode) and how it goes (`ok <successes>/<episodes ended>`); each episode also logs
one INFO line (`harness.jobs.episodes.episode_line`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from envs import task_ids
from harness.checks import check_loop_config
from harness.config import ClientsAs, ConfigError, HarnessConfig, ServerMode
from harness.faults.controller import Mechanisms
from harness.faults.schedule import NetworkPath
from harness.faults.wiring import (
    KernelUnavailable,
    check_kernel_path,
    fault_wiring,
    warn_if_presence_will_trip,
)
from harness.jobs.episodes import robot_engine, robot_env, run_one_episode
from harness.jobs.robots import RobotFailure, run_robot_processes
from harness.loop.ports import PortInUse, check_listen_free
from harness.results.episodes import episode_id
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
    engines = [robot_engine(config, env, client, mechanisms) for env, client in robots]
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
    """Run episodes from `episodes` on one robot until none is left."""
    while True:
        try:
            index = episodes.get_nowait()
        except queue.Empty:
            return
        ended = run_one_episode(config, store, env, engine, task=task, index=index,
                                mechanisms=mechanisms, recorder=recorder, robot=robot)
        progress.episode_ended(ended.success)


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
    failures: list[RobotFailure] = []
    for position, task in enumerate(task_ids(env_config.name, env_config.tasks)):
        first = position * env_config.episodes_per_task  # the task's first index in the run
        mine = [i for i in range(env_config.episodes_per_task) if (first + i) % shards == shard]
        pending = [i for i in mine if not store.done(task, episode_id(task, i))]
        if not pending:
            log.info("task %d: all %d episodes%s already in %s", task, len(mine),
                     f" of shard {config.shard}" if config.shard else "", output_dir)
            continue
        status = _run_one_task(config, store, overrides, output_dir, recorder, router,
                               task=task, pending=pending, failures=failures)
        if status is not None:
            return status
    summary = store.summarize(latency_budget_s=config.latency.budget_s,
                              clock_latency=config.latency.kind)
    print_summary(summary, title=f"{config.env.name} / {config.policy.name} over "
                                 f"{config.transport.kind} ({config.clock} clock)",
                  faults=config.faults.name, faults_apply=str(config.faults.apply),
                  client_mode=str(config.client.mode))
    if config.logger.kind is LoggerKind.wandb:
        _copy_to_wandb(config, store, output_dir, summary, resolved_config or {})
    log.info("results in %s; report: python -m reports %s", output_dir, output_dir)
    for failure in failures:
        log.error("%s", failure.message)
    return max(exit_status(summary), 1 if failures else 0)


def _robot_envs(config: HarnessConfig, task: int, recorder: VideoRecorder,
                running: contextlib.ExitStack) -> list | None:
    """The task's robots' envs (closed with `running`); None, logged in one line, if the run
    records videos and the env cannot film."""
    envs = []
    for _ in range(config.clients):
        env = robot_env(config, task, recorder)
        if env is None:
            return None
        envs.append(env)
        running.callback(env.close)
    return envs


def _run_one_task(config: HarnessConfig, store: ResultsStore, overrides: list[str],
                  output_dir: Path, recorder: VideoRecorder, router: object, *, task: int,
                  pending: list[int], failures: list[RobotFailure]) -> int | None:
    """One task: its server(s), its robots, its pending episodes; None when the run goes on,
    else the run's exit status (nothing could run). Robot processes that died are added to
    `failures`."""
    processes = config.clients_as is ClientsAs.processes
    with contextlib.ExitStack() as running:
        envs = [] if processes else _robot_envs(config, task, recorder, running)
        if envs is None:
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
        if processes:
            return _run_task_in_processes(config, overrides, dial, task=task, pending=pending,
                                          output_dir=output_dir, failures=failures)
        robots = []
        for index, env in enumerate(envs):
            client = wiring.wrap_client(replica_client(dial, index))
            running.callback(client.close)
            if not wait_for_server(client, config.transport,
                                   timeout_s=config.server.startup_timeout_s):
                return 1
            robots.append((env, client))
        _run_task(config, store, robots, task, pending, wiring.mechanisms, recorder)
    return None


def _run_task_in_processes(config: HarnessConfig, overrides: list[str], dial: list, *,
                           task: int, pending: list[int], output_dir: Path,
                           failures: list[RobotFailure]) -> int | None:
    """The task's episodes on robot processes (`harness.jobs.robots`); None when the run goes
    on, else its exit status: when no robot started, 2 if each refused its config or env
    (status 2), else 1."""
    with tqdm(total=len(pending), desc=progress_description(config, task)) as bar:
        lost = run_robot_processes(config, overrides, dial, task=task, pending=pending,
                                   run_dir=output_dir, progress=TaskProgress(bar))
    failures.extend(lost)
    robots = min(config.clients, len(pending))  # as many as have work
    if len(lost) == robots and not any(failure.started for failure in lost):
        for failure in lost:
            log.error("%s", failure.message)
        return 2 if all(failure.exit_status == 2 for failure in lost) else 1
    return None


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
