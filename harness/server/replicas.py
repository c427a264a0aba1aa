"""Replicas of the policy server (`server.replicas=N`): N supervised servers of one policy,
each on its own address, and the robots' transports to all of them.

Replica i listens on the job's port + i x `server.replica_port_stride` (the stride keeps the
replicas of parallel sweep jobs apart: job n already listens on the configured port + n).
A zenoh replica also serves under keys of its own (`<namespace>/replica<i>`), and a robot
reaches every replica over one zenoh session (through the router, if there is one). Each
robot dials every replica and starts on replica `robot % N`, so the robots spread evenly;
on a dead replica, or one that refuses the session for a reason another may not have (full,
draining), it re-opens on another (`transports.failover`). A process fault acts on replica
0: the others keep serving, which is what replicas are for.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from harness.overrides import quoted_override
from harness.server.launch import start_server
from transports import make_client, make_replica_clients
from transports.failover import FailoverClient
from transports.loopback import tcp_address, tcp_host_port
from transports.registry import transport_entry

log = logging.getLogger(__name__)


class ReplicaPortError(ValueError):
    """The replicas' ports cannot be laid out from this listen address (names the field)."""


def replica_transports(transport, replicas: int, stride: int) -> list:
    """The transport config of each replica: replica 0's is `transport`, replica i's listens
    on its port + i x `stride`.

    Raises:
        ReplicaPortError: `replicas` > 1 with a transport that does not cross processes, an
            explicit `connect`, a listen address that is not TCP or is port 0, or a last port
            past 65535; naming `server.replicas` and what to change.
    """
    if replicas == 1:
        return [transport]
    if not transport_entry(str(transport.kind)).networked:
        raise ReplicaPortError(f"server.replicas={replicas}: transport={transport.kind} does "
                               "not cross processes; replicas need zmq, grpc or zenoh")
    if transport.connect is not None:
        raise ReplicaPortError(f"server.replicas={replicas} with transport.connect="
                               f"{transport.connect}: the harness starts the replicas on "
                               "addresses of its own; leave transport.connect unset")
    try:
        host, port = tcp_host_port(str(transport.kind), transport.listen)
    except ValueError as exc:
        raise ReplicaPortError(f"server.replicas={replicas}: transport.listen="
                               f"{transport.listen} is not a TCP address ({exc})") from exc
    last = port + (replicas - 1) * stride
    if port == 0 or last > 65535:
        raise ReplicaPortError(
            f"server.replicas={replicas}: replica {replicas - 1} would listen on port {last} "
            f"(transport.listen={transport.listen} + {replicas - 1} x "
            f"server.replica_port_stride={stride}); no ports to spare: choose a listen port "
            f"from 1 to {65535 - (replicas - 1) * stride}")
    entry = transport_entry(str(transport.kind))
    return [dataclasses.replace(transport, listen=tcp_address(str(transport.kind), host,
                                                              port + i * stride),
                                **entry.replica_fields(transport, i))
            for i in range(replicas)]


def _replica_values(transport) -> dict[str, object]:
    """What a replica's server is told besides the run's overrides: its `listen`, and the
    fields that keep it apart from the other replicas (a zenoh replica's namespace)."""
    apart = transport_entry(str(transport.kind)).replica_fields(transport, 0)
    return {"listen": transport.listen,
            **{name: getattr(transport, name) for name in apart}}


def start_replicas(config, task: int, overrides: list[str], run_dir: Path, transports: list,
                   **server_options) -> list:
    """One server per entry of `transports` (replica i's log in
    `run_dir/replica<i>/server-task<task>`), each serving when this returns. A replica that
    fails to start stops the ones already started before its error is raised."""
    if len(transports) == 1:
        return [start_server(config, task, overrides, run_dir, **server_options)]
    servers = []
    try:
        for index, transport in enumerate(transports):
            replica_overrides = [*overrides, *(
                quoted_override(f"transport.{name}", value)
                for name, value in _replica_values(transport).items())]
            servers.append(start_server(
                config, task, replica_overrides, run_dir / f"replica{index}",
                **server_options))
            log.info("replica %d of task %d serves on %s", index, task, transport.listen)
    except BaseException:
        for server in servers:
            if server is not None:
                server.stop()
        raise
    return servers


def replica_client(transports: list, robot: int):
    """Robot `robot`'s transport client: to the one server, or to every replica, starting on
    replica `robot % len(transports)`."""
    if len(transports) == 1:
        return make_client(transports[0])
    return FailoverClient(make_replica_clients(transports), first=robot)
