"""The harness as a library: run a configured job, serve a model you hold, drive a robot.

The command line (`python -m harness ...`) is a thin shell over the same pieces; these are
for training scripts and notebooks, where a researcher has a model object in memory and no
wish to write a YAML file for it:

    import harness
    result = harness.run(["env=mujoco_reach", "transport=zmq", "env.episodes_per_task=3"])
    print(result.summary["success_rate"], result.run_dir)

    with harness.serve(MyPolicy, env="mujoco_reach", transport="zmq") as server:
        ...  # robots connect to server.address; server.stop() drains

    engine = harness.client_engine("mujoco_reach", connect="tcp://gpu-box:5555")
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    """What `run` produced: the exit status the command line would have, the run directory
    (episodes, traces, events, summary.json) and its summary."""

    status: int
    run_dir: Path
    summary: dict[str, Any]


def compose(overrides: Sequence[str] = ()):
    """The validated `HarnessConfig` for `overrides`, as the command line composes it.

    Raises:
        harness.config.ConfigError: a value is invalid, naming the field.
        hydra.errors.ConfigCompositionException: an unknown group option or key.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from harness.config import config_dir, register_configs, validate

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = hydra_compose("config", overrides=list(overrides))
    return cfg, validate(cfg)


def run(overrides: Sequence[str] = (), *, run_dir: str | Path | None = None) -> RunResult:
    """Run the job `overrides` configure (the loop job by default) in this process.

    `run_dir` defaults to a new `outputs/api/<date-time>-<id>`; a directory that already holds
    some of the same config's episodes is resumed, one of another config refused (status 2).

    Raises:
        harness.config.ConfigError: an invalid value, before anything starts.
    """
    from omegaconf import OmegaConf

    from envs import task_ids
    from harness.config import ConfigError, Job

    cfg, config = compose(overrides)
    if config.job is Job.bench:
        raise ConfigError("job=bench: run it from the command line (python -m harness "
                          "job=bench) or harness.bench.transport.run_benchmark")
    try:
        task_ids(config.env.name, config.env.tasks)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    run_dir = Path(run_dir or Path("outputs") / "api" / (
        time.strftime("%Y-%m-%d_%H-%M-%S") + f"-{uuid.uuid4().hex[:6]}"))
    run_dir.mkdir(parents=True, exist_ok=True)
    if config.job is Job.evaluate:
        from harness.jobs.evaluate import run_evaluate

        return RunResult(0, run_dir, run_evaluate(config, run_dir))
    from harness.jobs.loop import run_loop
    from harness.results.store import ResultsStore

    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved.pop("resume", None)
    resolved.pop("logger", None)
    resolved.pop("record", None)
    status = run_loop(config, run_dir, list(overrides), resolved_config=resolved,
                      job_overrides=list(overrides))
    store = ResultsStore(run_dir)
    summary = ({} if store.rows().empty else  # a run refused at start-up wrote no episode
               store.summarize(latency_budget_s=config.latency.budget_s,
                               clock_latency=config.latency.kind))
    return RunResult(status, run_dir, summary)


class ServingHandle:
    """A policy server `serve` started: where robots connect, and how to stop it (drains:
    in-flight requests are answered, new sessions refused). A context manager."""

    def __init__(self, server, transport_config) -> None:
        self._server = server
        self.transport = transport_config
        self.address: str = getattr(transport_config, "connect_address",
                                    getattr(transport_config, "name", ""))
        """Where robots dial, in the transport's address syntax."""

    @property
    def metrics(self):
        return self._server.metrics

    def stop(self) -> None:
        self._server.drain()

    def __enter__(self) -> ServingHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(policy: Any, *, env: str, task_id: int = 0, transport: str = "zmq",
          listen: str | None = None, max_sessions: int | None = None,
          cameras: Sequence[str] = (), image_size: int = 128, chunk_size: int = 8,
          seed: int = 0, **transport_fields) -> ServingHandle:
    """Put our policy server around `policy` and start serving (returns at once).

    Args:
        policy: a `policies.base.Policy` instance (served to one robot at a time, since a
            policy may keep per-episode state), a class or function building one (one
            instance per session; given `task=PolicyTask` if it takes a `task` keyword), or
            an import path "package.module:Class".
        env: the env the robots run: sessions are checked against its contract.
        transport: a registered transport (zmq, zenoh, grpc, local) or an import path.
        listen: the address to bind, in the transport's syntax; None: a free loopback port.
        max_sessions: robots served at once (default 1 for an instance, 4 otherwise).
        transport_fields: further fields of the transport's config.

    Raises:
        policies.PolicyConfigError: `policy` does not satisfy the interface.
        harness.protocol.contract.ContractMismatch: its spec does not fit `env`'s robot.
    """
    from harness.protocol.contract import check_contract
    from harness.server.policy_server import PolicyServer
    from policies.registry import PolicyTask, resolve_target, validated_policy
    from transports import make_server
    from transports.loopback import loopback_config
    from transports.registry import transport_entry

    task = PolicyTask(env, task_id, tuple(cameras), (image_size, image_size), chunk_size, seed)
    if isinstance(policy, str):
        policy = resolve_target(policy)
    if hasattr(policy, "predict") and not isinstance(policy, type):
        instance = validated_policy(policy, repr(policy))
        factory: Callable[[], Any] = lambda: instance  # noqa: E731
        max_sessions = max_sessions or 1
        if max_sessions > 1:
            log.warning("serving one policy instance to %d robots at once: its per-episode "
                        "state is shared (pass its class to give each session its own)",
                        max_sessions)
    else:
        from policies.registry import build_target

        factory = lambda: build_target(policy, {}, task)  # noqa: E731
        max_sessions = max_sessions or 4
    if listen is None:
        config = loopback_config(transport, **transport_fields)
    else:
        config = transport_entry(transport).config_class(kind=transport, listen=listen,
                                                         **transport_fields)
    server = PolicyServer(make_server(config), factory, max_sessions=max_sessions)
    try:  # the pool is built and its specs agree: check the one it serves, before binding
        check_contract(server.spec, task.robot_contract())
    except BaseException:
        server.close()
        raise
    server.start()
    log.info("serving %s over %s at %s", server.spec.model_id, transport,
             getattr(config, "connect_address", getattr(config, "name", "")))
    return ServingHandle(server, config)


def client_engine(env: str, *, transport: str = "zmq", connect: str | None = None,
                  task_id: int = 0, cameras: Sequence[str] = (), image_size: int = 128,
                  chunk_size: int = 0, transport_config=None, action_low: float = -1.0,
                  action_high: float = 1.0, **engine_fields):
    """A `ClientEngine` for a robot with `env`'s contract, connected to a policy server.

    The loop on a real robot is then: `engine.reset(episode)` once per episode, and at each
    control tick t `engine.tick(t, Observation(state, images, instruction)).action`; it never
    blocks on the network, and falls back (hold, repeat_last, zero) when chunks stop coming.
    `engine_fields` are fields of `harness.client.config.EngineConfig` (mode, fallback, ...).
    `transport_config` (a TransportConfig) overrides `transport` and `connect`; chunks with
    an action outside [action_low, action_high] are refused (the built-in envs use -1..1).
    """
    from envs import robot_contract
    from envs.base import EnvSpec
    from harness.client.config import EngineConfig
    from harness.client.engine import engine_for
    from transports import make_client
    from transports.registry import transport_entry

    contract = robot_contract(env, task_id, cameras=tuple(cameras),
                              image_size=(image_size, image_size))
    if transport_config is None:
        fields = {"kind": transport}
        if connect is not None:
            fields.update(listen=connect)
        transport_config = transport_entry(transport).config_class(**fields)
    spec = EnvSpec(env, contract, action_low=(action_low,) * contract.action_dim,
                   action_high=(action_high,) * contract.action_dim)
    return engine_for(spec, make_client(transport_config), EngineConfig(**engine_fields),
                      chunk_size=chunk_size)


__all__ = ["RunResult", "ServingHandle", "client_engine", "compose", "run", "serve"]
