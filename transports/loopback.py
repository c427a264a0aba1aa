"""Loopback addresses for tests, benchmarks and the parity check: a port the OS says is
free, and a config of any backend on it, so that runs side by side never collide."""

from __future__ import annotations

import dataclasses
import socket
import uuid

from transports.config import (
    GrpcTransportConfig,
    LocalTransportConfig,
    TransportConfig,
    TransportKind,
    ZenohTransportConfig,
    ZmqTransportConfig,
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that the OS says is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tcp_address(kind: str, host: str, port: int) -> str:
    """`host:port` in the address syntax of backend `kind`."""
    return {TransportKind.zenoh: f"tcp/{host}:{port}", TransportKind.grpc: f"{host}:{port}",
            TransportKind.zmq: f"tcp://{host}:{port}"}[TransportKind(kind)]


def loopback_address(kind: str, port: int) -> str:
    """`127.0.0.1:port` in the address syntax of backend `kind`."""
    return tcp_address(kind, "127.0.0.1", port)


def tcp_host_port(kind: str, address: str) -> tuple[str, int]:
    """(host, port) of a TCP address in the syntax of backend `kind`; ValueError naming the
    address if it is not TCP (a fault proxy can only sit on a TCP link)."""
    kind = TransportKind(kind)
    prefix = {TransportKind.zenoh: "tcp/", TransportKind.zmq: "tcp://",
              TransportKind.grpc: ""}.get(kind)
    if prefix is None or not address.startswith(prefix) or ":" not in address:
        raise ValueError(f"{address!r}: not a TCP address of {kind}")
    host, port = address[len(prefix):].rsplit(":", 1)
    if not port.isdigit():
        raise ValueError(f"{address!r}: no port number to put a proxy in front of")
    return host.strip("[]"), int(port)


def loopback_config(kind: str, **fields) -> TransportConfig:
    """A config of backend `kind` listening on a fresh loopback port (zenoh also in a fresh
    namespace, local under a fresh name); `fields` override any other field."""
    kind = TransportKind(kind)
    unique = uuid.uuid4().hex[:8]
    if kind is TransportKind.local:
        return LocalTransportConfig(**{"name": f"loopback-{unique}", **fields})
    listen = loopback_address(kind, free_port())
    if kind is TransportKind.zenoh:
        return ZenohTransportConfig(**{"listen": listen, "namespace": f"rph/{unique}", **fields})
    cls = GrpcTransportConfig if kind is TransportKind.grpc else ZmqTransportConfig
    return cls(**{"listen": listen, **fields})


def on_free_port(config: TransportConfig) -> TransportConfig:
    """`config` moved to a fresh loopback port (both addresses); a local config is unchanged."""
    if config.kind is TransportKind.local:
        return config
    return dataclasses.replace(config, listen=loopback_address(config.kind, free_port()),
                               connect=None)
