"""The whole run's config, `HarnessConfig`: its sections and top-level fields, each checked
on its own as it is built, then across sections (`harness.config.run_checks`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING

from harness.choices import choice
from harness.client.config import EngineConfig
from harness.config.enums import ClientsAs, ConfigError, Job, Record
from harness.config.run_checks import adopt_security, check_run
from harness.config.sections import BenchConfig, EnvConfig, LatencyConfig, ServerConfig
from harness.faults.schedule import FaultsConfig
from harness.loop.clock import Clock
from harness.results.wandb_log import LoggerConfig
from policies.config import PolicyConfig
from policies.registry import policy_entry
from transports.config import SecurityConfig, TransportConfig
from transports.registry import transport_entry


@dataclass
class HarnessConfig:
    job: Job = Job.loop
    transport: Any = MISSING
    """A `TransportConfig` of the chosen kind: built-in YAMLs name their schema (typos fail at
    compose time); a transport of your own is built from its registry entry in `validate`."""
    env: EnvConfig = MISSING
    policy: PolicyConfig = MISSING
    """The kind's own schema (`policies.config`, `policies.remote.config`)."""
    server: ServerConfig = MISSING
    client: EngineConfig = field(default_factory=EngineConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    clock: Clock = Clock.virtual
    bench: BenchConfig = field(default_factory=BenchConfig)
    faults: FaultsConfig = MISSING
    logger: LoggerConfig = MISSING
    """Where results are copied besides the run directory: logger=none (default) or wandb."""
    security: SecurityConfig = field(default_factory=SecurityConfig)
    """Who may talk to the policy server: security=none (default) or mtls (with
    security.dir from `python -m harness.certs`); every transport of the run uses it."""
    seed: int = 0
    resume: Optional[str] = None
    """A run directory to finish: its finished episodes are skipped, the rest written there.
    Refused if the directory's config differs from this one (naming the first key)."""
    shard: Optional[str] = None
    """"i/n": run only the i-th of n interleaved shares of the config's episodes (episode k
    of the task list, counted across tasks, when k % n == i), so one config can be spread
    over jobs; `python -m reports` merges the shards back into one config."""
    record: Record = Record.none
    """Episode videos from the env's camera with the client state and fault windows drawn:
    none, failures (episodes that did not succeed) or all; written to `videos/` and linked
    from the episode row, the HTML report and the wandb run."""
    clients: int = 1
    """Robots sharing the one policy server, each its own env, engine and transport client,
    taking the task's episodes in turn: the capacity axis."""
    clients_as: ClientsAs = ClientsAs.threads
    """threads (default): each robot a thread of the harness; processes: each robot a process
    of its own (`harness.jobs.robots`), so robots share no interpreter lock, as real ones."""

    @property
    def shard_of(self) -> tuple[int, int]:
        """(i, n) of `shard`; (0, 1) when the run is not sharded."""
        if self.shard is None:
            return 0, 1
        index, count = self.shard.split("/")
        return int(index), int(count)

    def __post_init__(self) -> None:
        if not isinstance(self.transport, TransportConfig):
            self.transport = transport_from_fields(self.transport)
        adopt_security(self)
        if type(self.policy) is not policy_entry(self.policy.name).config_class:
            raise ConfigError(f"policy.name={self.policy.name!r} with the schema of "
                              f"{type(self.policy).__name__}: a policy YAML names its kind's "
                              f"schema ({self.policy.name}_schema)")
        self.job = choice(Job, self.job, "job")
        self.clock = choice(Clock, self.clock, "clock")
        self.record = choice(Record, self.record, "record")
        self.clients_as = choice(ClientsAs, self.clients_as, "clients_as")
        if self.shard is not None:
            parts = str(self.shard).split("/")
            if (len(parts) != 2 or not all(p.strip().isdigit() for p in parts)
                    or not 0 <= int(parts[0]) < int(parts[1])):
                raise ConfigError(f"shard={self.shard!r}: expected 'i/n' with 0 <= i < n, "
                                  "e.g. shard=0/4")
            self.shard = f"{int(parts[0])}/{int(parts[1])}"
        if self.resume is not None:
            check_resumable(self.resume)
        if not 1 <= self.clients <= 64:
            raise ConfigError(f"clients={self.clients}: must be in 1..64")
        check_run(self)


def check_resumable(run_dir: str) -> None:
    """`resume=` names a run directory (one with its `config.json`), or a typo would start a
    fresh run where the user means to finish one.

    Raises:
        ConfigError: naming the directory and what it lacks.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise ConfigError(f"resume={run_dir}: no such directory; name the run directory to "
                          "finish (the one a run printed), or drop resume= to start a new run")
    if not (path / "config.json").is_file():
        raise ConfigError(f"resume={run_dir}: not a run directory (no config.json in it)")


def transport_from_fields(fields: Any) -> TransportConfig:
    """A transport YAML without a schema (a kind of your own, `kind: package.module:ENTRY`):
    its fields checked against its entry's config class, naming the first unknown one."""
    if not isinstance(fields, dict) or "kind" not in fields:
        raise ConfigError("transport: choose one with transport=<name> (e.g. transport=zmq), "
                          "or give transport.kind")
    try:
        config_class = transport_entry(str(fields["kind"])).config_class
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    known = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ConfigError(f"transport.{unknown[0]}: not a field of {config_class.__name__} "
                          f"(kind {fields['kind']!r}); it has {sorted(known)}")
    try:
        return config_class(**fields)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
