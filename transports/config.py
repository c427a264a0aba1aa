"""Config shape of every transport backend. Plain dataclasses: Hydra registers them in
`harness.config`, and tests and benchmarks build them directly.

Defaults follow what was measured on loopback (see ../shared/FACTS.md): zenoh reconnects in
~0.35 s with a 100 ms initial retry period and notices a silent partition after a 1 s lease;
gRPC reconnects quickly with 100 ms / 1 s backoff.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

MIB = 1024 * 1024


class TransportConfigError(ValueError):
    """A transport config value is out of range; the message names the field."""


def _require(condition: bool, field: str, value: object, why: str) -> None:
    if not condition:
        raise TransportConfigError(f"transport.{field}={value!r}: {why}")


@dataclass
class TransportConfig:
    """Fields every backend has."""

    kind: str = "local"
    max_message_bytes: int = 8 * MIB
    """Largest payload either side sends or accepts; larger ones raise PayloadTooLarge."""
    client_id: str = ""
    """Stable id of this client; empty picks a random one per client."""
    heartbeat_interval_s: float = 0.2
    """gRPC and ZeroMQ: how often the client pings the server to track its presence."""
    heartbeat_timeout_s: float = 0.5
    """gRPC and ZeroMQ: a ping slower than this counts as the server being absent."""

    def __post_init__(self) -> None:
        _require(self.max_message_bytes > 0, "max_message_bytes", self.max_message_bytes,
                 "must be positive")
        _require(self.heartbeat_interval_s > 0, "heartbeat_interval_s",
                 self.heartbeat_interval_s, "must be positive")
        _require(self.heartbeat_timeout_s > 0, "heartbeat_timeout_s", self.heartbeat_timeout_s,
                 "must be positive")


@dataclass
class LocalTransportConfig(TransportConfig):
    kind: str = "local"
    name: str = "policy"
    """Registry name clients look the in-process server up by."""


@dataclass
class ZenohTransportConfig(TransportConfig):
    kind: str = "zenoh"
    endpoint: str = "tcp/127.0.0.1:7447"
    """Where the server listens (peer mode) and clients connect."""
    router_endpoint: Optional[str] = None  # OmegaConf needs Optional, not "str | None"
    """Optional zenoh router: both sides then run in client mode and connect only to it."""
    namespace: str = "rph"
    """Key-expression prefix; servers with different namespaces never see each other."""
    lease_ms: int = 1000
    """Link lease: a silent partition is noticed after about this long (zenoh default 10 s)."""
    retry_period_init_ms: int = 100
    retry_period_max_ms: int = 500
    retry_period_increase_factor: float = 1.5

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.endpoint.startswith(("tcp/", "udp/", "quic/", "unixsock-stream/")),
                 "endpoint", self.endpoint, "expected a zenoh locator like tcp/127.0.0.1:7447")
        _require(bool(self.namespace) and "*" not in self.namespace, "namespace",
                 self.namespace, "must be a non-empty key expression without wildcards")
        _require(self.lease_ms > 0, "lease_ms", self.lease_ms, "must be positive")
        _require(0 < self.retry_period_init_ms <= self.retry_period_max_ms,
                 "retry_period_init_ms", self.retry_period_init_ms,
                 "must be positive and at most retry_period_max_ms")
        _require(self.retry_period_increase_factor >= 1.0, "retry_period_increase_factor",
                 self.retry_period_increase_factor, "must be >= 1")


@dataclass
class GrpcTransportConfig(TransportConfig):
    kind: str = "grpc"
    endpoint: str = "127.0.0.1:50051"
    """host:port the server binds and clients dial."""
    initial_backoff_ms: int = 100
    max_backoff_ms: int = 1000

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(":" in self.endpoint, "endpoint", self.endpoint, "expected host:port")
        _require(0 < self.initial_backoff_ms <= self.max_backoff_ms, "initial_backoff_ms",
                 self.initial_backoff_ms, "must be positive and at most max_backoff_ms")


@dataclass
class ZmqTransportConfig(TransportConfig):
    kind: str = "zmq"
    endpoint: str = "tcp://127.0.0.1:5555"
    """ZeroMQ address the ROUTER binds and DEALERs connect to."""
    reconnect_ivl_ms: int = 100
    reconnect_ivl_max_ms: int = 1000

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.endpoint.startswith(("tcp://", "ipc://", "inproc://")), "endpoint",
                 self.endpoint, "expected a ZeroMQ address like tcp://127.0.0.1:5555")
        _require(0 < self.reconnect_ivl_ms <= self.reconnect_ivl_max_ms, "reconnect_ivl_ms",
                 self.reconnect_ivl_ms, "must be positive and at most reconnect_ivl_max_ms")
