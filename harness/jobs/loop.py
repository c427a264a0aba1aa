"""The closed-loop job: env and client engine here, the policy server where the config says.

For each selected task it starts (or, for `server=external`, finds) a policy server, runs the
episodes through a `ClientEngine` over the configured transport, and writes every episode to
the run directory as it ends. Episodes already written there are skipped, so re-running the
same command resumes a killed run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import queue
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.table import Table
from tqdm import tqdm

from envs import env_name, make_env, task_ids
from harness.client.engine import engine_for
from harness.config import HarnessConfig, ServerMode
from harness.console import make_console
from harness.faults.controller import Mechanisms, episode_faults
from harness.faults.kernel import NetnsLink
from harness.faults.kernel import detect as kernel_support
from harness.faults.links import ProxyGroup
from harness.faults.messages import FaultyClient
from harness.faults.modelled import ModelledLink
from harness.faults.proxy import FaultProxy
from harness.faults.schedule import FaultApply, FaultKind, FaultLink, NetworkPath
from harness.client.latency import LatencyModel
from harness.loop.runner import run_episode
from harness.overrides import quoted_override
from harness.results.episodes import episode_id
from harness.results.failsafe import failsafe_console_items
from harness.results.store import ConfigMismatch, ResultsStore
from harness.results.wandb_log import LoggerKind, WandbUnavailable, check_available, log_run
from harness.server.model_faults import write_model_fault
from harness.server.supervisor import ServerSupervisor
from policies import PolicyName
from transports import TransportKind, TransportTimeout, make_client
from transports.loopback import loopback_address, tcp_address, tcp_host_port

log = logging.getLogger(__name__)


def _start_server(config: HarnessConfig, task: int, overrides: list[str], run_dir: Path,
                  model_faults_path: Path | None, *, command_prefix: tuple[str, ...] = ()):
    """The task's policy server: a supervised child process, a thread, or None (external)."""
    mode = config.server.mode
    if config.transport.kind is TransportKind.local and mode is ServerMode.process:
        mode = ServerMode.inprocess  # the local transport does not cross processes
    if mode is ServerMode.external:
        return None
    if mode is ServerMode.inprocess:
        from harness.server.serve import InProcessServer  # needs the [server] extra

        env = dataclasses.replace(config.env, tasks=str(task))
        server = dataclasses.replace(config.server, model_faults_path=model_faults_path and
                                     str(model_faults_path))
        return InProcessServer(dataclasses.replace(config, env=env, server=server))
    if model_faults_path is not None:
        overrides = [*overrides, quoted_override("server.model_faults_path", model_faults_path)]
    server = ServerSupervisor([*overrides, f"env.tasks={task}"], run_dir / f"server-task{task}",
                              startup_timeout_s=config.server.startup_timeout_s,
                              command_prefix=command_prefix)
    server.start()
    return server


def _start_proxy(config: HarnessConfig, transport) -> tuple[FaultProxy, object]:
    """A fault proxy in front of `transport`'s server address, and the transport config a
    client dials it with."""
    host, port = tcp_host_port(transport.kind, transport.connect_address)
    proxy = FaultProxy(host, port, seed=config.seed)
    proxy_port = proxy.start()
    support = kernel_support()
    log.info("network faults through the user-space proxy 127.0.0.1:%d -> %s:%d (kernel "
             "netem: %s)", proxy_port, host, port, "present" if support.netem
             else "absent, " + support.reasons.get("netem", "?"))
    return proxy, dataclasses.replace(transport,
                                      connect=loopback_address(transport.kind, proxy_port))


def _start_model_proxy(config: HarnessConfig) -> tuple[FaultProxy, str]:
    """A fault proxy in front of the external model server (`policy.url`), and the URL our
    server dials it through."""
    parts = urllib.parse.urlsplit(config.policy.url)
    port = parts.port or {"https": 443, "wss": 443}.get(parts.scheme, 80)
    proxy = FaultProxy(parts.hostname, port, seed=config.seed)
    proxy_port = proxy.start()
    url = urllib.parse.urlunsplit(parts._replace(netloc=f"127.0.0.1:{proxy_port}"))
    log.info("network faults on the model link: our server dials %s, the proxy forwards to "
             "%s:%d", url, parts.hostname, port)
    return proxy, url


class KernelUnavailable(RuntimeError):
    """faults.network=kernel on a machine that cannot give it (not root, no ip/tc, ...)."""


def _check_kernel_path(config: HarnessConfig) -> None:
    """faults.network=kernel needs namespaces and tbf: say which is missing and why before
    anything starts (an env, a server)."""
    faults = config.faults
    if not (faults.apply is FaultApply.emulated and faults.has_network_faults
            and faults.network is NetworkPath.kernel):
        return
    support = kernel_support()
    if not (support.netns and support.tbf):
        raise KernelUnavailable("faults.network=kernel: " + "; ".join(
            f"{feature}: {reason}" for feature, reason in support.reasons.items()
            if feature in ("netns", "tbf")))


def _open_kernel_link(config: HarnessConfig) -> tuple[NetnsLink, object]:
    """A namespace for the server behind a veth pair, and the transport config with the
    server listening on its side of the link (same port)."""
    support = kernel_support()
    link = NetnsLink()
    transport = config.transport
    _, port = tcp_host_port(transport.kind, transport.listen)
    address = tcp_address(transport.kind, link.ns_ip, port)
    log.info("network faults in the kernel: the server in namespace %s at %s (netem %s)",
             link.name, address, "present" if support.netem else "absent: delay in the proxy")
    return link, dataclasses.replace(transport, listen=address, connect=None)


def _engine_for(config: HarnessConfig, env, client, mechanisms: Mechanisms):
    """One robot's engine, with the latency model its clock uses (a modelled link wraps
    the configured one when the faults are modelled)."""
    latency = LatencyModel(config.latency.kind, value_s=config.latency.value_s,
                           sigma=config.latency.sigma, seed=config.seed)
    if mechanisms.modelled:
        latency = ModelledLink.for_contract(latency, env.spec.contract,
                                            chunk_size=config.policy.chunk_size,
                                            seed=config.seed)
    # A remote model's chunk is what its server returns (cut to policy.chunk_size): the
    # robot accepts the chunk the session's contract names (0: any).
    chunk_size = 0 if config.policy.name is PolicyName.remote else config.policy.chunk_size
    return engine_for(env.spec, client, config.client, chunk_size=chunk_size, latency=latency)


def _run_task(config: HarnessConfig, store: ResultsStore, robots: list[tuple[object, object]],
              task: int, pending: list[int], mechanisms: Mechanisms) -> None:
    """The task's pending episodes, each written as it ends, each under its own fault
    timeline (none unless `faults=` says so). Each robot (env, transport client) has its own
    engine and takes the next pending episode when it finishes one: with `clients` > 1 they
    run at once, in threads, against the one server (the physics and the transports release
    the GIL; what they share is the server)."""
    episodes: queue.SimpleQueue[int] = queue.SimpleQueue()
    for i in pending:
        episodes.put(i)
    engines = [_engine_for(config, env, client, mechanisms) for env, client in robots]
    with tqdm(total=len(pending), desc=f"{config.env.name} task {task}") as progress:
        if len(robots) == 1:
            _run_episodes(config, store, robots[0][0], engines[0], task, episodes, mechanisms,
                          progress, robot=0)
        else:
            with ThreadPoolExecutor(len(robots), thread_name_prefix="robot") as pool:
                running = [pool.submit(_run_episodes, config, store, robots[r][0], engine, task,
                                       episodes, mechanisms, progress, robot=r)
                           for r, engine in enumerate(engines)]
                for future in running:
                    future.result()  # a robot's exception is the job's
    for engine in engines:
        engine.close()


def _run_episodes(config: HarnessConfig, store: ResultsStore, env, engine, task: int,
                  episodes: queue.SimpleQueue[int], mechanisms: Mechanisms, progress: tqdm, *,
                  robot: int) -> None:
    """Run episodes from `episodes` on one robot until none is left."""
    is_libero = env_name(config.env.name).is_libero
    while True:
        try:
            i = episodes.get_nowait()
        except queue.Empty:
            return
        episode = episode_id(task, i)
        init_state = i if is_libero else None
        faults = episode_faults(config.faults, seed=config.seed, episode=episode,
                                horizon_s=env.spec.max_steps * engine.dt,
                                mechanisms=mechanisms, latency=engine.latency)
        trace = run_episode(env, engine, episode=episode, seed=config.seed + i,
                            init_state=init_state, clock=config.clock,
                            on_tick=faults.on_tick if faults else None)
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
                                                "shard": config.shard},
                            events=events)
        progress.update(1)


def run_loop(config: HarnessConfig, output_dir: Path, overrides: list[str], *,
             resolved_config: dict | None = None, job_overrides: list[str] | None = None) -> int:
    """Run every selected task's episodes into `output_dir` and summarize them; returns the
    process's exit status: 0, 1 if no policy server answered, none served an episode or one
    rejected the sessions, 2 if `output_dir` holds a run of another config. Every failure
    is one line in the log."""
    store = ResultsStore(output_dir)
    if resolved_config is not None:
        try:
            store.bind_config(resolved_config)
        except ConfigMismatch as exc:
            log.error("%s", exc)
            return 2
    if job_overrides is not None:
        store.record_overrides(job_overrides)
    _warn_if_presence_will_trip(config)
    try:
        _check_kernel_path(config)
        check_available(config.logger)
    except (KernelUnavailable, WandbUnavailable) as exc:
        log.error("%s", exc)
        return 2
    env_config = config.env
    overrides = [o for o in overrides if not o.startswith(("env.tasks=", "job=", "hydra."))]
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
                envs.append(make_env(env_config.name, cameras=tuple(env_config.cameras),
                                     image_size=(env_config.image_size, env_config.image_size),
                                     max_steps=env_config.max_steps, task_id=task))
                running.callback(envs[-1].close)
            faults = config.faults
            emulated = faults.apply is FaultApply.emulated
            network = emulated and faults.has_network_faults
            model_faults_path = None
            if emulated and faults.has_model_faults:
                model_faults_path = output_dir / f"server-task{task}" / "model_faults.json"
                write_model_fault(model_faults_path, {})
            transport, kernel, prefix, server_overrides = config.transport, None, (), overrides
            if network and faults.network is NetworkPath.kernel:
                kernel, transport = _open_kernel_link(config)
                running.callback(kernel.close)  # after the server has stopped
                prefix = tuple(kernel.exec_prefix())
                server_overrides = [*(o for o in overrides
                                      if not o.startswith("transport.listen=")),
                                    f"transport.listen={transport.listen}"]
            links = faults.link if network else FaultLink.client
            model_proxy, run_config = None, config
            if links is not FaultLink.client:  # before the server: it dials the model at start
                model_proxy, url = _start_model_proxy(config)
                running.callback(model_proxy.stop)
                server_overrides = [*(o for o in server_overrides
                                      if not o.startswith("policy.url=")),
                                    quoted_override("policy.url", url)]
                run_config = dataclasses.replace(
                    config, policy=dataclasses.replace(config.policy, url=url))
            server = _start_server(run_config, task, server_overrides, output_dir,
                                   model_faults_path, command_prefix=prefix)
            if server is not None:
                running.callback(server.stop)
            mechanisms = Mechanisms(server=server if isinstance(server, ServerSupervisor)
                                    else None, model_faults_path=model_faults_path,
                                    kernel=kernel, modelled=not emulated)
            if network and links is not FaultLink.model:
                mechanisms.proxy, transport = _start_proxy(config, transport)
                running.callback(mechanisms.proxy.stop)
            if model_proxy is not None:
                mechanisms.proxy = (model_proxy if mechanisms.proxy is None
                                    else ProxyGroup([mechanisms.proxy, model_proxy]))
            robots = []
            for env in envs:
                client = make_client(transport)
                if emulated and faults.has_message_faults:  # clients=1: the config checks it
                    client = mechanisms.client = FaultyClient(client)
                running.callback(client.close)
                if not _wait_for_server(config, client):
                    return 1
                robots.append((env, client))
            _run_task(config, store, robots, task, pending, mechanisms)
    summary = store.summarize(latency_budget_s=config.latency.budget_s,
                              clock_latency=config.latency.kind)
    print_summary(config, summary)
    if config.logger.kind is LoggerKind.wandb:
        _copy_to_wandb(config, store, output_dir, summary, resolved_config or {})
    return _exit_status(summary)


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


def _warn_if_presence_will_trip(config: HarnessConfig) -> None:
    """A heartbeat slower than `transport.heartbeat_timeout_s` counts as the server gone
    (grpc, zmq): a schedule adding more round trip than that measures the presence check,
    not control under delay. Say so before the run, not in a table of DEAD episodes."""
    faults = config.faults
    if faults.apply is not FaultApply.emulated or config.transport.kind not in (
            TransportKind.grpc, TransportKind.zmq):
        return
    added_s = max([(2 if f.direction == "both" else 1) * (f.delay_s + 3 * f.jitter_s)
                   for f in faults.timed if f.kind is FaultKind.latency]
                  + [f.predict_s for f in faults.timed if f.kind is FaultKind.slow_model]
                  + [0.0])
    if added_s >= config.transport.heartbeat_timeout_s:
        log.warning("faults=%s adds up to %.0f ms to a round trip, more than transport."
                    "heartbeat_timeout_s=%g s: the client will take the slow server for an "
                    "absent one (RECONNECTING); raise it to measure control under this delay",
                    faults.name, added_s * 1e3, config.transport.heartbeat_timeout_s)


def _wait_for_server(config: HarnessConfig, client) -> bool:
    """Wait for the policy server, saying where and for how long; False (logged in one
    line) if it never came."""
    timeout_s = config.server.startup_timeout_s
    where = getattr(config.transport, "connect_address", getattr(config.transport, "name", ""))
    log.info("waiting up to %.0f s for the policy server (%s at %s)", timeout_s,
             config.transport.kind, where)
    try:
        client.wait_ready(timeout_s)
    except TransportTimeout:
        log.error("no policy server answered over %s at %s within %.0f s "
                  "(server.startup_timeout_s); is it running?", config.transport.kind, where,
                  timeout_s)
        return False
    return True


def _exit_status(summary: dict) -> int:
    """1 (logged in one line) if the run measured nothing: the server rejected the sessions,
    or no chunk was ever received; else 0."""
    if summary["rejected_episodes"]:
        log.error("the policy server rejected the session in %d of %d episodes: %s",
                  summary["rejected_episodes"], summary["episodes"], summary["first_dead_reason"])
        return 1
    if summary["chunks_received"] == 0:
        log.error("no episode was served: no chunk arrived in %d episodes (%s)",
                  summary["episodes"], summary["first_dead_reason"] or "no DEAD reason")
        return 1
    return 0


def print_summary(config: HarnessConfig, summary: dict) -> None:
    table = Table(title=f"{config.env.name} / {config.policy.name} over {config.transport.kind}"
                        f" ({config.clock} clock)")
    for column in ("episodes", "success", "Wilson 95%", "latency p50/p95/p99 ms",
                   "over budget", "fallback ticks", "breaches", "dead"):
        table.add_column(column, justify="right")

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1e3:.1f}"

    low, high = summary["success_wilson95"]
    table.add_row(
        str(summary["episodes"]), f"{summary['success_rate']:.0%}", f"{low:.0%}-{high:.0%}",
        "/".join(ms(summary[k]) for k in ("latency_p50_s", "latency_p95_s", "latency_p99_s")),
        str(summary["latency_over_budget"]), str(summary["fallback_ticks"]),
        str(summary["invariant_breaches"]), str(summary["dead_episodes"]))
    console = make_console()
    console.print(table)
    if summary.get("faults_started"):
        console.print(f"faults={config.faults.name} ({config.faults.apply}): "
                      f"{summary['faults_started']} windows through "
                      + "; ".join(summary["fault_mechanisms"]))
    execution = summary.get("execution") or []
    if execution != [str(config.client.mode)]:  # e.g. delay_aware asked of a model that is not
        console.print("execution: " + "; ".join(execution or ["no episode started a session"]))
    console.print(f"client={config.client.mode}: {summary['actions_trimmed']} chunk actions "
                  f"trimmed as stale, median episode {summary['steps_median']} steps")
    items = failsafe_console_items(summary)
    if items:
        console.print("fail-safe: " + ", ".join(f"{label} {value}" for label, value in items))
