"""The sections of a run's config that belong to no lower package: the env, the server, the
latency model and the transport benchmark, each checking its own ranges (a `ConfigError`
naming the field). Sections with a package of their own keep their schema there (client,
faults, logger, policy, transport, security)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from envs import UnknownEnv, env_family
from harness.choices import choice
from harness.client.latency import LatencyKind
from harness.config.enums import ConfigError, ServerMode
from harness.server.scheduler import SCHEDULERS


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
