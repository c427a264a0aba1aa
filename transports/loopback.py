"""Loopback addresses for tests, benchmarks and the parity check: a port the OS says is
free, and a config of any backend on it, so that runs side by side never collide.

Everything here reads the backend's `TransportEntry` (`transports.registry`): its TCP address
syntax (`tcp_prefix`) and what else keeps a config apart (`fresh_fields`), so a new backend
gets loopback configs without an edit here.
"""

from __future__ import annotations

import dataclasses
import random
import socket
import uuid
from pathlib import Path

from transports.config import TransportConfig
from transports.registry import transport_entry


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now, chosen below the kernel's ephemeral
    range: a port the OS hands out for `bind(0)` (a fault proxy) or for an outgoing
    connection can be taken between this call and the bind of whoever asked, and with tests
    on three workers one was (the proxy of a model link took the port a server was given)."""
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randrange(max(1024, low - 12000), low)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # all taken: the OS picks
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ephemeral_low() -> int:
    """The lowest port of the kernel's ephemeral range (32768 if it cannot be read)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _tcp_prefix(kind: str) -> str:
    """The TCP address prefix of `kind`; ValueError if the backend has no TCP address."""
    entry = transport_entry(kind)
    if entry.tcp_prefix is None:
        raise ValueError(f"transport {kind!r} has no TCP address (its TransportEntry's "
                         "tcp_prefix is None): a TCP port or fault proxy cannot apply to it")
    return entry.tcp_prefix


def tcp_address(kind: str, host: str, port: int) -> str:
    """`host:port` in the address syntax of backend `kind`.

    Raises:
        ValueError: `kind` has no TCP address (local, or an entry without `tcp_prefix`).
    """
    return f"{_tcp_prefix(kind)}{host}:{port}"


def loopback_address(kind: str, port: int) -> str:
    """`127.0.0.1:port` in the address syntax of backend `kind` (ValueError as `tcp_address`)."""
    return tcp_address(kind, "127.0.0.1", port)


def tcp_host_port(kind: str, address: str) -> tuple[str, int]:
    """(host, port) of a TCP address in the syntax of backend `kind`; ValueError naming the
    address if it is not TCP (a fault proxy can only sit on a TCP link)."""
    prefix = transport_entry(kind).tcp_prefix
    if prefix is None or not address.startswith(prefix) or ":" not in address:
        raise ValueError(f"{address!r}: not a TCP address of {kind}")
    host, port = address[len(prefix):].rsplit(":", 1)
    if not port.isdigit():
        raise ValueError(f"{address!r}: no port number to put a proxy in front of")
    return host.strip("[]"), int(port)


def loopback_fields(kind: str) -> dict[str, object]:
    """Fields that give a config of `kind` an endpoint no other on this host has: a `listen`
    on a free loopback port (TCP backends), plus its entry's `fresh_fields` (local: a name,
    zenoh: a namespace). What `loopback_config` sets, and what a server and its clients in
    other processes must all be told.

    Raises:
        UnknownTransport: `kind` is not registered.
        ValueError: a networked backend has neither a TCP address nor a fresh `listen`.
    """
    entry = transport_entry(kind)
    fields = dict(entry.fresh_fields(uuid.uuid4().hex[:8]))
    if entry.tcp_prefix is not None:
        fields.setdefault("listen", loopback_address(kind, free_port()))
    if entry.networked and "listen" not in fields:
        raise ValueError(f"transport {kind!r}: no loopback address; give its TransportEntry a "
                         "tcp_prefix or fresh_fields that set 'listen'")
    return fields


def loopback_config(kind: str, **fields) -> TransportConfig:
    """A config of backend `kind` on a fresh loopback endpoint (a free port; zenoh also in a
    fresh namespace, local under a fresh name); `fields` override any other field. The
    config's `kind` is `kind` as given, so an import path stays one (a child process
    resolves it too)."""
    return transport_entry(kind).config_class(**{"kind": str(kind), **loopback_fields(kind),
                                                 **fields})


def on_free_port(config: TransportConfig) -> TransportConfig:
    """`config` moved to a fresh loopback endpoint (both addresses: `connect` becomes None);
    an in-process (not networked) config is unchanged."""
    if not transport_entry(config.kind).networked:
        return config
    return dataclasses.replace(config, listen=loopback_fields(config.kind)["listen"],
                               connect=None)
