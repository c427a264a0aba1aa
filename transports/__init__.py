"""Transport backends behind one interface (`transports.base`); `make_server`/`make_client`
pick one from its config's `kind` through the registry (`transports.registry`). Backends
import lazily, so a missing optional package fails only when that backend is chosen, with an
error that names it."""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from transports.base import (
    PayloadTooLarge,
    RequestHandler,
    ServerUnavailable,
    StreamItem,
    StreamStats,
    TransportClient,
    TransportClosed,
    TransportError,
    TransportServer,
    TransportTimeout,
)
from transports.config import (
    GrpcTransportConfig,
    LocalTransportConfig,
    TransportConfig,
    TransportConfigError,
    TransportKind,
    ZenohTransportConfig,
    ZmqTransportConfig,
)
from transports.registry import (
    TransportEntry,
    UnknownTransport,
    register_transport,
    transport_entry,
    transport_names,
)


def _backend(config: TransportConfig) -> tuple[type, type]:
    """(server class, client class) of `config.kind`, importing its module now.

    Raises:
        UnknownTransport: the registry does not know the kind.
        ImportError: the backend's module (or its package) cannot be imported; names both.
    """
    entry = transport_entry(config.kind)
    try:
        module = importlib.import_module(entry.module)
    except ImportError as exc:
        raise ImportError(
            f"transport {config.kind!r} needs the {entry.package!r} package: {exc}"
        ) from exc
    missing = [n for n in (entry.server_class, entry.client_class) if not hasattr(module, n)]
    if missing:
        raise UnknownTransport(f"transport.kind={config.kind!r}: {entry.module} has no "
                               f"{' or '.join(missing)}")
    return getattr(module, entry.server_class), getattr(module, entry.client_class)


def make_server(config: TransportConfig) -> TransportServer:
    """Build (not start) the server side of `config.kind`; `start(handler)` binds it."""
    server_cls, _ = _backend(config)
    return server_cls(config)


def make_client(config: TransportConfig) -> TransportClient:
    """Build and connect the client side of `config.kind` (it reconnects by itself)."""
    _, client_cls = _backend(config)
    return client_cls(config)


def make_replica_clients(configs: Sequence[TransportConfig]) -> list[TransportClient]:
    """One robot's client to each replica of a server (`configs`, one kind): over one
    connection where the backend has one for replicas (`TransportEntry.replica_clients`),
    else one client each."""
    entry = transport_entry(configs[0].kind)
    if entry.replica_clients is None:
        return [make_client(config) for config in configs]
    _backend(configs[0])  # the ImportError naming the package, as make_client's
    module = importlib.import_module(entry.module)
    return getattr(module, entry.replica_clients)(configs)


__all__ = [
    "GrpcTransportConfig", "LocalTransportConfig", "PayloadTooLarge", "RequestHandler",
    "ServerUnavailable", "StreamItem", "StreamStats", "TransportClient", "TransportClosed",
    "TransportConfig", "TransportConfigError", "TransportEntry", "TransportError",
    "TransportKind", "TransportServer", "TransportTimeout", "UnknownTransport",
    "ZenohTransportConfig", "ZmqTransportConfig", "make_client", "make_replica_clients",
    "make_server", "register_transport", "transport_entry", "transport_names",
]
