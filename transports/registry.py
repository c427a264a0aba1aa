"""Every transport backend the harness knows, by name: the one list everything else derives
from (`make_server`/`make_client`, loopback addresses, the benchmarks' defaults, the
conformance suite's parametrization).

A backend outside this repository needs no edit here: put a `TransportEntry` in your own
module and name it by import path, `transport.kind=my_pkg.my_transport:ENTRY`. The first
lookup imports the module and registers the entry under that path and under its name.

Importing this module imports no backend library: an entry names its module and classes as
strings, imported only when the backend is used (`transports.make_server`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from harness.imports import import_object
from transports.config import (
    GrpcTransportConfig,
    LocalTransportConfig,
    TransportConfig,
    TransportConfigError,
    ZenohTransportConfig,
    ZmqTransportConfig,
)

IMPORT_PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
"""`package.module:ATTR`: how a kind names an entry defined outside this registry."""


class UnknownTransport(TransportConfigError):
    """A kind is neither a registered name nor an import path of a `TransportEntry` (a
    `TransportConfigError`, hence a ValueError: a config value is wrong)."""


def _no_fields(token: str) -> Mapping[str, object]:
    return {}


def _no_replica_fields(config: TransportConfig, index: int) -> Mapping[str, object]:
    return {}


@dataclass(frozen=True)
class TransportEntry:
    """How to find, build and address one backend. Plain data: no backend import."""

    name: str
    """What `transport.kind` says, e.g. "zmq"; no ':' (that marks an import path)."""
    module: str
    """Module holding the server and client classes, imported only when the backend is used."""
    server_class: str
    """Class in `module` taking the config: the `TransportServer`."""
    client_class: str
    """Class in `module` taking the config: the `TransportClient`."""
    config_class: type[TransportConfig]
    """The config dataclass of this backend; `transport_entry(kind).config_class(**fields)`
    builds one from plain fields (JSON, YAML)."""
    package: str
    """The pip package an ImportError of `module` names ("pyzmq")."""
    networked: bool
    """False: in-process only (local); the server cannot live in another process."""
    needs_heartbeat: bool
    """The client pings the server to track its presence (grpc, zmq): a paused server is
    noticed by the pings, not by the library."""
    tcp_prefix: str | None
    """What goes before `host:port` in a TCP address ("tcp://" zmq, "tcp/" zenoh, "" grpc);
    None: this backend has no TCP address (a fault proxy cannot sit on its link)."""
    security: str | None = None
    """How the backend authenticates both ends under `security=mtls`: "tls" (certificates)
    or "curve" (ZeroMQ key pairs); None: it cannot, and `security=mtls` is refused for it
    rather than run in plaintext."""
    fresh_fields: Callable[[str], Mapping[str, object]] = field(default=_no_fields,
                                                                compare=False)
    """Fields besides a TCP `listen` that keep a loopback config of this kind apart from every
    other on this host, given a fresh hex token: a name (local), a key namespace (zenoh).
    A networked backend without `tcp_prefix` must return its `listen` here (an ipc path)."""
    replica_fields: Callable[[TransportConfig, int], Mapping[str, object]] = field(
        default=_no_replica_fields, compare=False)
    """Fields besides `listen` that keep replica i of a server apart from the others, given
    replica 0's config and i: its key namespace (zenoh, whose replicas a router or a robot's
    one session would otherwise see as one)."""
    replica_clients: str | None = None
    """A function in `module` taking every replica's config and returning one client to each
    over one connection (zenoh: one session); None: one client of its own per replica."""

    def __post_init__(self) -> None:
        if not self.name or ":" in self.name:
            raise ValueError(f"TransportEntry.name={self.name!r}: must be non-empty and "
                             "without ':' (that marks an import path)")
        if not (isinstance(self.config_class, type)
                and issubclass(self.config_class, TransportConfig)):
            raise ValueError(f"TransportEntry {self.name!r}: config_class="
                             f"{self.config_class!r} is not a TransportConfig subclass")


_ENTRIES: dict[str, TransportEntry] = {}
"""Names and import paths -> entries."""
_NAMES: list[str] = []
"""Entry names in registration order (import paths are aliases, not names)."""


def register_transport(entry: TransportEntry) -> TransportEntry:
    """Make `entry` known by its name; returns it. Registering the same entry again is a
    no-op.

    Raises:
        ValueError: the name is taken by a different entry.
    """
    taken = _ENTRIES.get(entry.name)
    if taken is not None and taken != entry:
        raise ValueError(f"transport name {entry.name!r} is already registered to "
                         f"{taken.module}.{taken.server_class}; pick another name")
    if taken is None:
        _ENTRIES[entry.name] = entry
        _NAMES.append(entry.name)
    return entry


def unregister_transport(name: str) -> None:
    """Forget the entry called `name` and every import path registered for it (tests that
    define a transport clean up with this). Unknown names are ignored."""
    entry = _ENTRIES.get(name)
    if entry is None:
        return
    for key in [k for k, v in _ENTRIES.items() if v == entry]:
        del _ENTRIES[key]
    _NAMES.remove(entry.name)


def transport_names() -> tuple[str, ...]:
    """Registered names: the built-ins first (local, zenoh, grpc, zmq), then any other in the
    order it was registered."""
    return tuple(_NAMES)


def transport_entry(kind: str) -> TransportEntry:
    """The entry of `kind`: a registered name, or an import path 'package.module:ATTR'
    whose attribute is a `TransportEntry` (imported, then registered under its name and
    under that path).

    Raises:
        UnknownTransport: anything else; the message lists the registered names.
        ValueError: the imported entry's name is taken by a different entry.
    """
    kind = str(kind)
    entry = _ENTRIES.get(kind)
    if entry is not None:
        return entry
    if not IMPORT_PATH.fullmatch(kind):
        raise UnknownTransport(f"transport.kind={kind!r}: expected one of "
                               f"{', '.join(_NAMES)}, or an import path "
                               "'package.module:ENTRY' whose ENTRY is a TransportEntry")
    entry = import_object(kind, field="transport.kind", error=UnknownTransport,
                          expected=TransportEntry)
    register_transport(entry)
    _ENTRIES[kind] = entry
    return entry


for _entry in (
    TransportEntry("local", "transports.local", "LocalServer", "LocalClient",
                   LocalTransportConfig, "numpy", networked=False, needs_heartbeat=False,
                   tcp_prefix=None, fresh_fields=lambda token: {"name": f"loopback-{token}"}),
    TransportEntry("zenoh", "transports.zenoh", "ZenohServer", "ZenohClient",
                   ZenohTransportConfig, "eclipse-zenoh", networked=True,
                   needs_heartbeat=False, tcp_prefix="tcp/", security="tls",
                   fresh_fields=lambda token: {"namespace": f"rph/{token}"},
                   replica_fields=lambda config, index: {
                       "namespace": f"{config.namespace}/replica{index}"},
                   replica_clients="replica_clients"),
    TransportEntry("grpc", "transports.grpc", "GrpcServer", "GrpcClient", GrpcTransportConfig,
                   "grpcio", networked=True, needs_heartbeat=True, tcp_prefix="",
                   security="tls"),
    TransportEntry("zmq", "transports.zmq", "ZmqServer", "ZmqClient", ZmqTransportConfig,
                   "pyzmq", networked=True, needs_heartbeat=True, tcp_prefix="tcp://",
                   security="curve"),
):
    register_transport(_entry)
