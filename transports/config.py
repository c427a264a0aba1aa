"""Config shape of every built-in transport backend. Plain dataclasses: Hydra registers them in
`harness.config`, and tests and benchmarks build them directly (or from plain fields with
`transports.registry.transport_entry(kind).config_class(**fields)`).

Every networked backend has two addresses: `listen`, where the server binds, and `connect`,
where clients dial (None: the listen address). They differ when something sits between the
two, a fault proxy or a NAT, or when the server binds a wildcard address.

Defaults follow what was measured on loopback (see ../shared/FACTS.md): zenoh reconnects in
~0.35 s with a 100 ms initial retry period and notices a silent partition after a 1 s lease;
gRPC reconnects quickly with 100 ms / 1 s backoff.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Optional

MIB = 1024 * 1024


class TransportKind(enum.StrEnum):
    """The built-in backends' names, as constants. A kind is any string the registry knows
    (`transports.registry`): test it with `==` or, better, by its entry's properties
    (`transport_entry(kind).networked`), never with `is`."""

    local = "local"
    zenoh = "zenoh"
    grpc = "grpc"
    zmq = "zmq"


class TransportConfigError(ValueError):
    """A transport config value is out of range; the message names the field."""


def _require(condition: bool, field: str, value: object, why: str) -> None:
    if not condition:
        raise TransportConfigError(f"transport.{field}={value!r}: {why}")


def _require_port(field: str, address: str) -> None:
    """The port after the last ':' of a TCP-style address is 1..65535 (or '*', zmq's
    wildcard). A backend handed 99999 would bind some other port, or none, silently."""
    if ":" not in address:
        return
    port = address.rsplit(":", 1)[1]
    _require(port == "*" or (port.isdigit() and 1 <= int(port) <= 65535), field, address,
             "the port must be in 1..65535")


def _checked_kind(config: TransportConfig) -> str:
    """`config.kind` if the registry knows it and it names `config`'s class (or a base of
    it), else TransportConfigError naming `transport.kind` and the choices. A plain str:
    compare kinds with `==` or ask the entry (`networked`, `needs_heartbeat`)."""
    # Imported here: the registry imports this module for the built-in config classes.
    from transports.registry import transport_entry

    kind = config.kind
    entry = transport_entry(kind)  # UnknownTransport, a TransportConfigError
    _require(isinstance(config, entry.config_class), "kind", kind,
             f"needs a {entry.config_class.__name__}, not a "
             f"{type(config).__name__}; choose transport={entry.name}")
    return str(kind)


CERTS_COMMAND = "python -m harness.certs --out DIR --robots N"
ROUTER_AUTO = "auto"
"""`transport.router=auto`: the harness starts the Zenoh router itself."""


class SecurityMode(enum.StrEnum):
    none = "none"
    """Plaintext and unauthenticated (loopback, `make run`)."""
    mtls = "mtls"
    """Mutual authentication: TLS with client certificates (gRPC, Zenoh), CURVE (ZeroMQ)."""


class SecurityError(TransportConfigError):
    """Key material is missing, unreadable, expired, malformed or from another CA; or a
    transport cannot run with the chosen security."""


@dataclass
class SecurityConfig:
    mode: str = "none"
    """none or mtls."""
    dir: Optional[str] = None
    """With mtls: the directory `python -m harness.certs --out DIR` made (or the part of it
    one machine holds: a robot needs ca.pem, its own robots/ pair and curve/ pair, and
    curve/server.key)."""
    identity: str = "robot-1"
    """With mtls: the robot this harness's clients are (robots/<identity>.pem, its key and
    curve/<identity>.key_secret); the server knows it by this name."""

    def __post_init__(self) -> None:
        try:
            self.mode = SecurityMode(self.mode)
        except ValueError:
            raise SecurityError(f"security.mode={self.mode!r}: expected one of "
                                f"{', '.join(m.value for m in SecurityMode)}") from None
        if self.mode is SecurityMode.mtls and not self.dir:
            raise SecurityError(f"security.mode=mtls needs security.dir: make one with "
                                f"{CERTS_COMMAND}, then security.dir=DIR")
        if not self.identity or "/" in self.identity or "*" in self.identity:
            raise SecurityError(f"security.identity={self.identity!r}: a robot name such as "
                                "robot-1 (no '/' or '*')")

    @property
    def enabled(self) -> bool:
        return self.mode is SecurityMode.mtls


@dataclass
class TransportConfig:
    """Fields every backend has."""

    kind: str = "local"
    """A name in `transports.registry` or an import path 'package.module:ENTRY'."""
    max_message_bytes: int = 8 * MIB
    """Largest payload either side sends or accepts; larger ones raise PayloadTooLarge."""
    client_id: str = ""
    """Stable id of this client; empty picks a random one per client."""
    heartbeat_interval_s: float = 0.2
    """Backends whose entry `needs_heartbeat` (grpc, zmq): how often the client pings the
    server to track its presence."""
    heartbeat_timeout_s: float = 0.5
    """Backends whose entry `needs_heartbeat`: a ping slower than this counts as the server
    being absent."""
    security: SecurityConfig = field(default_factory=SecurityConfig)
    """Set from the top-level `security` group (`security=mtls security.dir=DIR`)."""

    def __post_init__(self) -> None:
        self.kind = _checked_kind(self)
        if isinstance(self.security, dict):  # built from plain fields (JSON, asdict)
            self.security = SecurityConfig(**self.security)
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


class _Addresses:
    """`connect_address`: where a client dials, for configs with `listen` and `connect`."""

    listen: str
    connect: Optional[str]

    @property
    def connect_address(self) -> str:
        return self.connect if self.connect is not None else self.listen


@dataclass
class ZenohTransportConfig(_Addresses, TransportConfig):
    kind: str = "zenoh"
    listen: str = "tcp/127.0.0.1:7447"
    """Zenoh locator the server listens on (peer mode)."""
    connect: Optional[str] = None
    """Locator clients dial; None: `listen`."""
    router: Optional[str] = None  # OmegaConf needs Optional, not "str | None"
    """A Zenoh router both sides connect to (in client mode) instead of dialing each other:
    its locator (tcp/ or tls/), or `auto`: the harness starts and supervises one on a free
    loopback port (`python -m harness.server.router`). None: peer to peer."""
    namespace: str = "rph"
    """Key-expression prefix; servers with different namespaces never see each other."""
    lease_ms: int = 1000
    """Link lease: a silent partition is noticed after about this long (zenoh default 10 s)."""
    retry_period_init_ms: int = 100
    retry_period_max_ms: int = 500
    retry_period_increase_factor: float = 1.5

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, address in (("listen", self.listen), ("connect", self.connect_address)):
            _require(address.startswith(("tcp/", "udp/", "quic/", "unixsock-stream/")),
                     name, address, "expected a zenoh locator like tcp/127.0.0.1:7447")
            if not address.startswith("unixsock-stream/"):
                _require_port(name, address)
        _require(self.router in (None, ROUTER_AUTO) or str(self.router).startswith(
            ("tcp/", "tls/")), "router", self.router,
            "expected auto or a zenoh locator like tcp/127.0.0.1:7448")
        if self.router not in (None, ROUTER_AUTO):
            _require_port("router", self.router)
        _require(bool(self.namespace) and "*" not in self.namespace, "namespace",
                 self.namespace, "must be a non-empty key expression without wildcards")
        _require(self.lease_ms > 0, "lease_ms", self.lease_ms, "must be positive")
        _require(0 < self.retry_period_init_ms <= self.retry_period_max_ms,
                 "retry_period_init_ms", self.retry_period_init_ms,
                 "must be positive and at most retry_period_max_ms")
        _require(self.retry_period_increase_factor >= 1.0, "retry_period_increase_factor",
                 self.retry_period_increase_factor, "must be >= 1")


@dataclass
class GrpcTransportConfig(_Addresses, TransportConfig):
    kind: str = "grpc"
    listen: str = "127.0.0.1:50051"
    """host:port the server binds."""
    connect: Optional[str] = None
    """host:port clients dial; None: `listen`."""
    initial_backoff_ms: int = 100
    max_backoff_ms: int = 1000

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, address in (("listen", self.listen), ("connect", self.connect_address)):
            _require(":" in address, name, address, "expected host:port")
            _require_port(name, address)
        _require(0 < self.initial_backoff_ms <= self.max_backoff_ms, "initial_backoff_ms",
                 self.initial_backoff_ms, "must be positive and at most max_backoff_ms")


@dataclass
class ZmqTransportConfig(_Addresses, TransportConfig):
    kind: str = "zmq"
    listen: str = "tcp://127.0.0.1:5555"
    """ZeroMQ address the ROUTER binds."""
    connect: Optional[str] = None
    """Address the DEALERs connect to; None: `listen`."""
    reconnect_ivl_ms: int = 100
    reconnect_ivl_max_ms: int = 1000

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, address in (("listen", self.listen), ("connect", self.connect_address)):
            _require(address.startswith(("tcp://", "ipc://", "inproc://")), name, address,
                     "expected a ZeroMQ address like tcp://127.0.0.1:5555")
            if address.startswith("tcp://"):
                _require_port(name, address)
        _require(0 < self.reconnect_ivl_ms <= self.reconnect_ivl_max_ms, "reconnect_ivl_ms",
                 self.reconnect_ivl_ms, "must be positive and at most reconnect_ivl_max_ms")
