"""Config shape of the harness, registered with Hydra's ConfigStore.

YAML files under `conf/` only choose values; every field, its type and its default live here,
so a typo in YAML or on the command line fails at startup naming the key, and
`validate` turns range errors into a `ConfigError` naming the field.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import ipaddress
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from envs import UnknownEnv, env_family, task_ids
from harness.choices import choice
from harness.client.config import EngineConfig
from harness.client.latency import LatencyKind
from harness.faults.kinds import fault_kind
from harness.faults.schedule import FaultApply, FaultLink, FaultsConfig, NetworkPath
from harness.loop.clock import Clock
from harness.loop.ports import default_port
from harness.results.wandb_log import LoggerConfig
from harness.server.replicas import ReplicaPortError, replica_transports
from harness.server.scheduler import SCHEDULERS
from policies.config import PolicyConfig, PolicyConfigError
from policies.registry import UnknownPolicy, policy_entry, policy_names
from transports.config import SecurityConfig, TransportConfig, TransportConfigError
from transports.registry import transport_entry, transport_names


class ConfigError(ValueError):
    """A config value is invalid; the message names the field and the accepted range."""


class Job(enum.StrEnum):
    """What `python -m harness` runs (lower-case members: Hydra matches values by name)."""

    loop = "loop"
    """The closed loop through a policy server over the transport."""
    evaluate = "evaluate"
    """The policy on the env in-process, no transport: the reference."""
    bench = "bench"
    """Transport round trips against raw-TCP, codec and websocket floors."""


class Record(enum.StrEnum):
    """Which episodes leave a video in the run directory's `videos/` (the `video` extra)."""

    none = "none"
    failures = "failures"
    all = "all"


class ClientsAs(enum.StrEnum):
    """What each robot of `clients` runs in: a thread of the harness, or a process of its own."""

    threads = "threads"
    processes = "processes"


class ServerMode(enum.StrEnum):
    """Where the loop job finds its policy server."""

    process = "process"
    """The harness starts `python -m harness.server` and supervises it."""
    inprocess = "inprocess"
    """A thread of the harness (the only choice for transport=local)."""
    external = "external"
    """Already running elsewhere, at the transport's `connect` address."""


@dataclass
class EnvConfig:
    """Which simulated robot, which of its tasks, and what it renders."""

    name: str = "mujoco_pick_place"
    """A registered env (`envs.env_names`) or an import path 'package.module:FAMILY' naming
    an `envs.registry.EnvFamily` of your own."""
    tasks: str = "0"
    """LIBERO task ids: "0", "0,3,7" or "all" (MuJoCo tasks have only task 0)."""
    episodes_per_task: int = 10
    """Episodes per task; LIBERO episodes use the fixed init states 0, 1, ... in order."""
    cameras: list[str] = field(default_factory=list)
    """Cameras to render; empty renders nothing (LIBERO: agentview, wrist; MuJoCo: front, top)."""
    image_size: int = 128
    max_steps: Optional[int] = None
    """Step limit per episode; None uses the suite's usual horizon."""
    step_sleep_s: float = 0.0
    """Sleep this long (wall time) after every step: the simulator slower than real time on
    purpose (0.2 s at 20 Hz: 5x slower), to check that a config's results do not depend on
    the simulator's speed (`envs.slowed`)."""

    def __post_init__(self) -> None:
        try:
            env_family(self.name)
        except UnknownEnv as exc:
            raise ConfigError(str(exc)) from None
        if self.tasks != "all" and not all(t.strip().isdigit() for t in self.tasks.split(",")):
            raise ConfigError(f"env.tasks={self.tasks!r}: expected 'all' or ids like '0,3'")
        if self.episodes_per_task < 1:
            raise ConfigError(f"env.episodes_per_task={self.episodes_per_task}: must be >= 1")
        if not 16 <= self.image_size <= 1024:
            raise ConfigError(f"env.image_size={self.image_size}: must be in 16..1024")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"env.max_steps={self.max_steps}: must be >= 1 or null")
        if not 0 <= self.step_sleep_s <= 60:
            raise ConfigError(f"env.step_sleep_s={self.step_sleep_s}: must be in 0..60")


@dataclass
class ServerConfig:
    """Where the policy server runs (`ServerMode`) and what it admits."""

    mode: ServerMode = ServerMode.process
    max_sessions: int = 4
    health_host: str = "127.0.0.1"
    """Address /healthz and /metrics bind to; 0.0.0.0 for a server scraped from elsewhere."""
    health_port: int = 0
    """HTTP port of /healthz and /metrics; 0 picks a free one."""
    startup_timeout_s: float = 120.0
    session_idle_timeout_s: float = 10.0
    """A session that sent nothing for this long (wall time) expires and frees its slot."""
    max_client_id_chars: int = 128
    """Longer client ids are rejected at session open (and never logged in full)."""
    scheduler: str = "round_robin"
    """What the inference thread serves next: `round_robin` (one robot's observation at a
    time) or `micro_batch` (up to `max_batch_size` robots' in one pass of the model; a policy
    without a batched predict is still served one robot at a time)."""
    max_batch_size: int = 8
    """micro_batch: the most robots predicted in one pass."""
    max_wait_ms: float = 5.0
    """micro_batch: how long the first observation of a batch waits for others to join it."""
    torch_threads: int = 0
    """Threads torch's operations use in the server (`torch.set_num_threads`, which sets
    OpenMP's count for the whole process); 0 (default): torch's own, one per core. One
    served the small flow policy a quarter faster at 16 robots on 2 cores (the serving
    bench sets it on both servers); as a default it made the remote-policy LIBERO loop,
    whose server hosts no torch model, twice as slow (docs/measurements.md)."""
    replicas: int = 1
    """Servers of the policy the harness starts (mode=process), each robot dialling all and
    re-opening its session on another when its own dies or refuses it for being full or
    draining (`harness.server.replicas`)."""
    replica_port_stride: int = 100
    """Replica i listens on the job's port + i x this (parallel sweep jobs take port + n)."""
    model_faults_path: Optional[str] = None
    """A JSON file naming the model fault in force (`harness.server.model_faults`); the
    harness sets it for the servers it starts when the schedule has model faults."""

    def __post_init__(self) -> None:
        self.mode = choice(ServerMode, self.mode, "server.mode")
        if self.max_sessions < 1:
            raise ConfigError(f"server.max_sessions={self.max_sessions}: must be >= 1")
        if not 0 <= self.health_port <= 65535:
            raise ConfigError(f"server.health_port={self.health_port}: must be in 0..65535")
        if self.startup_timeout_s <= 0:
            raise ConfigError(f"server.startup_timeout_s={self.startup_timeout_s}: must be > 0")
        if self.session_idle_timeout_s <= 0:
            raise ConfigError(f"server.session_idle_timeout_s={self.session_idle_timeout_s}: "
                              "must be > 0")
        if not 1 <= self.max_client_id_chars <= 4096:
            raise ConfigError(f"server.max_client_id_chars={self.max_client_id_chars}: must be "
                              "in 1..4096")
        if not self.health_host:
            raise ConfigError("server.health_host='': name an address, e.g. 127.0.0.1")
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"server.scheduler={self.scheduler!r}: expected one of "
                              f"{list(SCHEDULERS)}")
        if not 1 <= self.max_batch_size <= 256:
            raise ConfigError(f"server.max_batch_size={self.max_batch_size}: must be in 1..256")
        if not 0 <= self.torch_threads <= 256:
            raise ConfigError(f"server.torch_threads={self.torch_threads}: must be in 0..256 "
                              "(0: torch's default)")
        if not 1 <= self.replicas <= 16:
            raise ConfigError(f"server.replicas={self.replicas}: must be in 1..16")
        if self.replica_port_stride < 1:
            raise ConfigError(f"server.replica_port_stride={self.replica_port_stride}: must "
                              "be >= 1")
        if not 0 <= self.max_wait_ms <= 1000:
            raise ConfigError(f"server.max_wait_ms={self.max_wait_ms}: must be in 0..1000 "
                              "(milliseconds the first observation of a batch may wait)")


def _check_replicas(config: HarnessConfig) -> None:
    """`server.replicas` > 1: servers the harness starts as processes, on ports it can lay
    out, and no emulated network faults (their proxy fronts one address)."""
    replicas = config.server.replicas
    if replicas == 1:
        return
    if config.server.mode is not ServerMode.process:
        raise ConfigError(f"server.replicas={replicas} with server.mode={config.server.mode}: "
                          "replicas are servers the harness starts as processes "
                          "(server=process)")
    try:
        replica_transports(config.transport, replicas, config.server.replica_port_stride)
    except ReplicaPortError as exc:
        raise ConfigError(str(exc)) from None
    if (config.faults.apply is FaultApply.emulated and config.faults.has_network_faults):
        raise ConfigError(f"server.replicas={replicas} with faults={config.faults.name} "
                          "(emulated network faults): their proxy stands in front of one "
                          "server's address; use faults.apply=modelled or server.replicas=1")


def _check_clients_as(config: HarnessConfig) -> None:
    """`clients_as=processes`: robots that reach the server over a transport that crosses
    processes, and no emulated faults (their mechanisms act on the harness's own clients)."""
    if config.clients_as is ClientsAs.threads:
        return
    if not transport_entry(str(config.transport.kind)).networked:
        raise ConfigError(f"clients_as=processes with transport={config.transport.kind}: it "
                          "does not cross processes; robots as processes need zmq, grpc or "
                          "zenoh")
    if config.faults.apply is FaultApply.emulated and not config.faults.empty:
        raise ConfigError(f"clients_as=processes with faults={config.faults.name} (emulated): "
                          "the fault mechanisms act on the harness's own clients; use "
                          "faults.apply=modelled or clients_as=threads")


@dataclass
class LatencyConfig:
    """Which round trip the virtual clock uses: the measured one, or a replayable model."""

    kind: LatencyKind = LatencyKind.measured
    value_s: float = 0.1
    """fixed: the latency; lognormal: its median."""
    sigma: float = 0.0
    budget_s: float = 0.2
    """Latency budget the summary reports against."""

    def __post_init__(self) -> None:
        self.kind = choice(LatencyKind, self.kind, "latency.kind")
        if self.value_s <= 0 or self.sigma < 0 or self.budget_s <= 0:
            raise ConfigError(f"latency: value_s={self.value_s} and budget_s={self.budget_s} "
                              f"must be > 0, sigma={self.sigma} >= 0")


@dataclass
class BenchConfig:
    """The transport benchmark (`job=bench`)."""

    round_trips: int = 1000
    warmup: int = 100
    image_size: int = 224
    jpeg_quality: int = 80
    floors: bool = True
    """Also measure the raw TCP, codec and websocket references in the same run."""
    csv: str = "bench.csv"
    """Written inside the Hydra run directory."""

    def __post_init__(self) -> None:
        if self.round_trips < 1:
            raise ConfigError(f"bench.round_trips={self.round_trips}: must be >= 1")
        if self.warmup < 0:
            raise ConfigError(f"bench.warmup={self.warmup}: must be >= 0")
        if not 16 <= self.image_size <= 4096:
            raise ConfigError(f"bench.image_size={self.image_size}: must be in 16..4096")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"bench.jpeg_quality={self.jpeg_quality}: must be in 1..100")


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
            self.transport = _transport_from_fields(self.transport)
        _security_of(self)
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
        if self.clients > self.server.max_sessions:
            raise ConfigError(f"clients={self.clients}: more than server.max_sessions="
                              f"{self.server.max_sessions} would be turned away at session "
                              "open; raise server.max_sessions to measure them")
        _check_replicas(self)
        _check_clients_as(self)
        if self.clients > 1 and self.job is Job.loop and (
                self.faults.apply is FaultApply.emulated and not self.faults.empty):
            raise ConfigError(f"clients={self.clients} with faults={self.faults.name} "
                              "(emulated): each episode opens and closes its own fault "
                              "windows on the one server and link, so robots running at once "
                              "would stack them; use faults.apply=modelled or clients=1")
        if self.job is not Job.loop or self.faults.apply is FaultApply.modelled:
            return  # a modelled schedule touches nothing real
        faults = self.faults
        if faults.link is not FaultLink.client and faults.has_network_faults:
            if self.policy.model_link is None:
                raise ConfigError(f"faults.link={faults.link}: the model link is our server's "
                                  "link to an external model server (policy=remote), not "
                                  f"policy={self.policy.name}")
            if self.server.mode is ServerMode.external or faults.network is NetworkPath.kernel:
                raise ConfigError(f"faults.link={faults.link}: the model link's proxy needs a "
                                  "server the harness starts (server=process or inprocess) "
                                  "and faults.network=proxy")
        if faults.link is not FaultLink.client and faults.has_message_faults:
            kinds = sorted(k for k in faults.kinds if fault_kind(k).group == "message")
            raise ConfigError(
                f"faults.link={faults.link} with faults={faults.name}: message-level kinds "
                f"({', '.join(kinds)}) act in the robot's client wrapper, on the robot's link "
                "only; the model link has no message-level emulation. Run them with "
                "faults.link=client, or use a schedule without them on the model link")
        if (faults.has_network_faults and not transport_entry(self.transport.kind).networked
                and faults.link is not FaultLink.model):
            raise ConfigError(f"faults={faults.name}: network faults act on the bytes of a "
                              "networked transport (zenoh, grpc or zmq); transport=local has "
                              "none (faults.apply=modelled applies them to the latency model)")
        if (faults.has_network_faults and faults.network is NetworkPath.kernel
                and self.server.mode is not ServerMode.process):
            raise ConfigError(f"faults.network=kernel: the server must run in a network "
                              f"namespace, so in a process the harness starts (server=process,"
                              f" not server.mode={self.server.mode})")
        if faults.has_model_faults and self.server.mode is ServerMode.external:
            raise ConfigError(f"faults={faults.name}: model faults act inside the predict of a "
                              "server the harness starts (server=process or inprocess), not "
                              "server=external")
        if self.faults.has_process_faults and (
                self.server.mode is not ServerMode.process
                or not transport_entry(self.transport.kind).networked):
            raise ConfigError(f"faults={self.faults.name}: process faults act on a server the "
                              "harness supervises: server=process over zenoh, grpc or zmq "
                              f"(not server.mode={self.server.mode}, transport.kind="
                              f"{self.transport.kind})")


def _security_of(config: HarnessConfig) -> None:
    """One place says who may talk to the server: the top-level `security` group. It is
    copied into the transport config, which every backend reads; a value set on
    `transport.security` directly would be silently replaced, so it is refused."""
    if config.transport.security not in (SecurityConfig(), config.security):
        raise ConfigError("transport.security: set the top-level group instead "
                          "(security=mtls security.dir=DIR)")
    if config.security.enabled and transport_entry(config.transport.kind).security is None:
        raise ConfigError(f"security=mtls with transport={config.transport.kind}: this "
                          "transport cannot authenticate its ends; choose zenoh, grpc or zmq")
    if (config.security.enabled and config.transport.client_id
            and config.transport.client_id != config.security.identity):
        raise ConfigError(f"transport.client_id={config.transport.client_id!r} with "
                          "security=mtls: a robot goes by its certificate's name; choose it "
                          "with security.identity")
    if config.security.enabled and not _is_loopback(config.server.health_host):
        raise ConfigError(f"server.health_host={config.server.health_host} with security=mtls: "
                          "/metrics names every robot and /healthz has no authentication; "
                          "keep them on 127.0.0.1 and scrape through an authenticated proxy")
    if config.security.enabled and config.clients > 1:
        raise ConfigError(f"clients={config.clients} with security=mtls: each robot is one "
                          "identity (security.identity); run one harness per robot")
    config.transport.security = config.security


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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


def register_configs() -> None:
    """Put every schema in the ConfigStore; YAML files extend them by name."""
    if not OmegaConf.has_resolver("port"):  # conf/transport/*.yaml: ${port:5555}
        OmegaConf.register_new_resolver("port", default_port)
    store = ConfigStore.instance()
    store.store(name="harness_schema", node=HarnessConfig)
    store.store(group="env", name="env_schema", node=EnvConfig)
    for name in policy_names():
        store.store(group="policy", name=f"{name}_schema", node=policy_entry(name).config_class)
    store.store(group="server", name="server_schema", node=ServerConfig)
    store.store(group="faults", name="faults_schema", node=FaultsConfig)
    store.store(group="client", name="client_schema", node=EngineConfig)
    store.store(group="logger", name="logger_schema", node=LoggerConfig)
    store.store(group="security", name="security_schema", node=SecurityConfig)
    for name in transport_names():
        store.store(group="transport", name=f"{name}_schema",
                    node=transport_entry(name).config_class)


def validate(cfg: DictConfig) -> HarnessConfig:
    """Turn the composed config into dataclasses, running every range check.

    Raises:
        ConfigError: a value is missing or out of range; the message names the field.
    """
    _refuse_unknown_keys(cfg)
    try:
        config = OmegaConf.to_object(cfg)
    except (ConfigError, TransportConfigError, PolicyConfigError, UnknownPolicy) as exc:
        raise ConfigError(str(exc)) from exc
    except ValueError as exc:  # range checks of dataclasses outside this module
        raise ConfigError(str(exc)) from exc
    except MissingMandatoryValue as exc:
        key = exc.full_key or "a field"
        raise ConfigError(f"{key}: no value given; set it ({key}=...)") from exc
    except OmegaConfBaseException as exc:
        cause = exc.__cause__ if isinstance(exc.__cause__, ValueError) else None
        raise ConfigError(str(cause or exc)) from exc
    assert isinstance(config, HarnessConfig)
    return config


def _refuse_unknown_keys(node: Any, path: str = "") -> None:
    """Hydra's `+key=value` adds a key even to a schema that has no such field, and the
    dataclass then carries it unread: a typo such as `+client.fallbak=hold` ran with the
    default. Every key of a schema'd node must be one of its fields.

    Raises:
        ConfigError: naming the key and the closest field.
    """
    if not isinstance(node, DictConfig):
        return
    schema = OmegaConf.get_type(node)
    if dataclasses.is_dataclass(schema):
        fields = [f.name for f in dataclasses.fields(schema)]
        for key in node.keys():
            if key not in fields:
                near = difflib.get_close_matches(str(key), fields, n=1)
                hint = f"; did you mean {path}{near[0]}?" if near else \
                    f"; its fields are {', '.join(fields)}"
                raise ConfigError(f"{path}{key}: no such setting{hint}")
    for key in node.keys():
        value = node._get_node(key)
        if isinstance(value, DictConfig) and not value._is_missing():
            _refuse_unknown_keys(value, f"{path}{key}.")


def _transport_from_fields(fields: Any) -> TransportConfig:
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


def validate_or_exit(cfg: DictConfig) -> HarnessConfig:
    """`validate` for an entry point: an invalid value is logged, naming the field, and the
    process exits with status 2 before anything starts."""
    try:
        return validate(cfg)
    except ConfigError as exc:
        logging.getLogger("harness").error("invalid config: %s", exc)
        sys.exit(2)


def schema_choice_error(choices: Any) -> str | None:
    """Group choices (Hydra's runtime choices) name a YAML of `conf/`, not a schema the
    ConfigStore registers beside them (`transport=zmq_schema` composed the bare schema as if
    it were a transport): None, or the one line naming the real choices."""
    for group, picked in dict(choices).items():
        if str(picked).endswith("_schema") and not str(group).startswith("hydra/"):
            return (f"{group}={picked}: a schema, not a choice; choose one of "
                    f"{', '.join(group_options(str(group)))}")
    return None


def check_choices_or_exit(choices: Any) -> None:
    """`schema_choice_error` for an entry point: logged, exit 2."""
    error = schema_choice_error(choices)
    if error is not None:
        logging.getLogger("harness").error("invalid config: %s", error)
        sys.exit(2)


def group_options(group: str) -> list[str]:
    """The choices of config group `group`: the YAML files of `conf/<group>/` (the schemas
    the ConfigStore registers beside them are not among them)."""
    return sorted(p.stem for p in (Path(config_dir()) / group).glob("*.yaml"))


def check_tasks_or_exit(config: HarnessConfig) -> None:
    """The selected tasks exist (a LIBERO suite is asked for its count): else one line naming
    `env.tasks`, exit 2, before anything starts."""
    try:
        task_ids(config.env.name, config.env.tasks)
    except ValueError as exc:
        logging.getLogger("harness").error("invalid config: %s", exc)
        sys.exit(2)


def config_dir() -> str:
    """Where `conf/` is: inside the package when installed from a wheel, else the checkout's."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"no conf/config.yaml next to {here} or its parent")
