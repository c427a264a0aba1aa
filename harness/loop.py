"""The closed-loop job: env and client engine here, the policy server where the config says.

For each selected task it starts (or, for `server=external`, finds) a policy server, runs the
episodes through a `ClientEngine` over the configured transport, and writes every episode to
the run directory as it ends. Episodes already written there are skipped, so re-running the
same command resumes a killed run.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from pathlib import Path

from rich.table import Table
from tqdm import tqdm

from envs import LIBERO_SUITES, make_env
from harness.bench import make_console
from harness.config import HarnessConfig
from harness.engine import ClientEngine, client_capabilities
from harness.evaluate import task_ids
from harness.latency import LatencyModel
from harness.results import ResultsStore
from harness.runner import run_episode
from harness.server import serve_forever
from transports import make_client

log = logging.getLogger(__name__)
EPISODE_IDS_PER_TASK = 10_000


class ServerProcess:
    """`python -m harness.server` as a child process; stopped with SIGTERM (drain), then
    killed by pid if it does not exit."""

    def __init__(self, overrides: list[str], run_dir: Path, startup_timeout_s: float) -> None:
        command = [sys.executable, "-m", "harness.server", *overrides,
                   f"hydra.run.dir={run_dir}", "hydra.output_subdir=null"]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        self.health_port: int | None = None
        ready = threading.Event()

        def read_stdout() -> None:
            # Drain the child's stdout for its whole life (its log lines are in its log
            # file too); a full pipe would block the server.
            for line in self.process.stdout:
                if line.startswith("READY ") and not ready.is_set():
                    self.health_port = int(line.split()[1])
                    ready.set()

        threading.Thread(target=read_stdout, name="server-stdout", daemon=True).start()
        if not ready.wait(startup_timeout_s):
            self.stop()
            raise RuntimeError(f"policy server did not start within {startup_timeout_s} s "
                               f"(log in {run_dir})")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class InProcessServer:
    def __init__(self, config: HarnessConfig) -> None:
        self._stop = threading.Event()
        started = threading.Event()
        self._thread = threading.Thread(
            target=serve_forever, args=(config,),
            kwargs={"ready": lambda port: started.set(), "stop": self._stop}, daemon=True)
        self._thread.start()
        if not started.wait(config.server.startup_timeout_s):
            raise RuntimeError("in-process policy server did not start")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _start_server(config: HarnessConfig, task: int, overrides: list[str], run_dir: Path):
    mode = config.server.mode
    if config.transport.kind == "local" and mode == "process":
        mode = "inprocess"  # the local transport does not cross processes
    if mode == "external":
        return None
    if mode == "inprocess":
        from dataclasses import replace

        return InProcessServer(replace(config, env=replace(config.env, tasks=str(task))))
    return ServerProcess([*overrides, f"env.tasks={task}"], run_dir / f"server-task{task}",
                         config.server.startup_timeout_s)


def run_loop(config: HarnessConfig, output_dir: Path, overrides: list[str]) -> dict:
    """Run every selected task's episodes; returns the run's summary."""
    store = ResultsStore(output_dir)
    env_config = config.env
    is_libero = env_config.name in LIBERO_SUITES
    overrides = [o for o in overrides if not o.startswith(("env.tasks=", "job=", "hydra."))]
    for task in task_ids(env_config.name, env_config.tasks):
        pending = [i for i in range(env_config.episodes_per_task)
                   if not store.done(task, task * EPISODE_IDS_PER_TASK + i + 1)]
        if not pending:
            log.info("task %d: all %d episodes already in %s", task,
                     env_config.episodes_per_task, output_dir)
            continue
        env = make_env(env_config.name, cameras=tuple(env_config.cameras),
                       image_size=(env_config.image_size, env_config.image_size),
                       max_steps=env_config.max_steps, task_id=task)
        server = _start_server(config, task, overrides, output_dir)
        client = make_client(config.transport)
        try:
            client.wait_ready(config.server.startup_timeout_s)
            names = env.spec.action_names
            engine = ClientEngine(
                client, client_capabilities(env.spec, config.policy.chunk_size), config.client,
                dt=1.0 / env.spec.control_hz,
                gripper_index=names.index("gripper") if "gripper" in names else None,
                latency=LatencyModel(config.latency.kind, value_s=config.latency.value_s,
                                     sigma=config.latency.sigma, seed=config.seed))
            for i in tqdm(pending, desc=f"{env_config.name} task {task}"):
                episode = task * EPISODE_IDS_PER_TASK + i + 1
                init_state = i if is_libero else None
                trace = run_episode(env, engine, episode=episode, seed=config.seed + i,
                                    init_state=init_state, clock=config.clock)
                store.write_episode(task=task, seed=config.seed + i, init_state=init_state,
                                    trace=trace, extra={"transport": config.transport.kind,
                                                        "client_state_end": engine.state.value})
                if engine.dead_reason:
                    store.log_event({"task": task, "episode": episode, "dead": engine.dead_reason})
            engine.close()
        finally:
            client.close()
            if server is not None:
                server.stop()
            env.close()
    summary = store.summarize(latency_budget_s=config.latency.budget_s)
    print_summary(config, summary)
    return summary


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
    make_console().print(table)
