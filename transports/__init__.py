"""Transport backends behind one interface (`transports.base`); `make_server`/`make_client`
pick one from its config. Backends import lazily, so a missing optional package fails only
when that backend is chosen, with an error that names it."""

from __future__ import annotations

import importlib

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
    TransportKind,
    ZenohTransportConfig,
    ZmqTransportConfig,
)

KINDS = tuple(TransportKind)
_CLASSES = {
    TransportKind.local: ("transports.local", "LocalServer", "LocalClient", "numpy"),
    TransportKind.zenoh: ("transports.zenoh", "ZenohServer", "ZenohClient", "eclipse-zenoh"),
    TransportKind.grpc: ("transports.grpc", "GrpcServer", "GrpcClient", "grpcio"),
    TransportKind.zmq: ("transports.zmq", "ZmqServer", "ZmqClient", "pyzmq"),
}


def _backend(config: TransportConfig) -> tuple[type, type]:
    if config.kind not in _CLASSES:
        raise ValueError(f"transport.kind={config.kind!r}: expected one of {', '.join(KINDS)}")
    module_name, server_name, client_name, package = _CLASSES[config.kind]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(
            f"transport {config.kind!r} needs the {package!r} package: {exc}"
        ) from exc
    return getattr(module, server_name), getattr(module, client_name)


def make_server(config: TransportConfig) -> TransportServer:
    """Build (not start) the server side of `config.kind`; `start(handler)` binds it."""
    server_cls, _ = _backend(config)
    return server_cls(config)


def make_client(config: TransportConfig) -> TransportClient:
    """Build and connect the client side of `config.kind` (it reconnects by itself)."""
    _, client_cls = _backend(config)
    return client_cls(config)


__all__ = [
    "KINDS", "GrpcTransportConfig", "LocalTransportConfig", "PayloadTooLarge", "RequestHandler",
    "ServerUnavailable", "StreamItem", "StreamStats", "TransportClient", "TransportClosed",
    "TransportConfig", "TransportError", "TransportKind", "TransportServer", "TransportTimeout",
    "ZenohTransportConfig", "ZmqTransportConfig", "make_client", "make_server",
]
