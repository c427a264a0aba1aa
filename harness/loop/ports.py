"""Ports of the jobs of one sweep: each job's server listens on its own; and the offset
that moves every default port of a host (`HARNESS_PORT_OFFSET`).

A multirun runs its jobs side by side (the joblib launcher) or on one host of a cluster;
two servers told to listen on the same port would fail at bind or, worse, serve each other's
clients. Job n listens on the configured port + n: deterministic (a re-run of the sweep gets
the same ports, and each run directory's recorded config stays the configured one), and
distinct within the sweep. A transport with an explicit `connect` (a server the user runs) is
left as it is: its address is the user's.

Two people (or two test workers) running the harness on one host would both take the shipped
default ports. `HARNESS_PORT_OFFSET=N` moves every default listen port of `conf/transport/`
up by N (the YAML reads `${port:5555}`); an address given on the command line is never moved.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import socket

from transports.loopback import free_port, tcp_address, tcp_host_port
from transports.registry import transport_entry

log = logging.getLogger(__name__)


PORT_OFFSET_ENV = "HARNESS_PORT_OFFSET"


class PortRangeError(ValueError):
    """The job's port would pass 65535."""


def default_port(base: int | str) -> int:
    """The shipped default port `base` moved up by `HARNESS_PORT_OFFSET` (0 when unset): the
    `${port:...}` resolver of `conf/transport/*.yaml`.

    Raises:
        PortRangeError: the offset is not a whole number >= 0, or moves the port past 65535
            (naming the variable).
    """
    raw = os.environ.get(PORT_OFFSET_ENV, "0").strip() or "0"
    if not raw.isdigit():
        raise PortRangeError(f"{PORT_OFFSET_ENV}={raw!r}: expected a whole number >= 0")
    port = int(base) + int(raw)
    if port > 65535:
        raise PortRangeError(f"{PORT_OFFSET_ENV}={raw}: moves default port {base} to {port} "
                             "> 65535; choose a smaller offset")
    return port


def job_transport(transport, job_num: int):
    """`transport` with its listen port moved up by `job_num` (unchanged for job 0, the local
    transport, an explicit `connect`, or a non-TCP address).

    Raises:
        PortRangeError: the moved port would be past 65535 (naming the field).
    """
    if (job_num == 0 or not transport_entry(transport.kind).networked
            or transport.connect is not None):
        return transport
    try:
        host, port = tcp_host_port(transport.kind, transport.listen)
    except ValueError:
        log.warning("transport.listen=%s is not a TCP address: parallel jobs of this sweep "
                    "share it", transport.listen)
        return transport
    if port == 0:
        return transport
    if port + job_num > 65535:
        raise PortRangeError(f"transport.listen={transport.listen}: job {job_num} of the sweep "
                             f"would listen on port {port + job_num} > 65535; choose a lower "
                             "base port")
    return dataclasses.replace(transport,
                               listen=tcp_address(transport.kind, host, port + job_num))


class PortInUse(ValueError):
    """The server's listen address is taken: said before anything starts, naming the field."""


def check_listen_free(transport) -> None:
    """Bind the server's TCP listen address for a moment, as the server will: a port another
    run or server holds fails here in one line instead of a traceback from the server's
    start-up. Nothing to check for a non-networked transport, a non-TCP address or port 0.

    Raises:
        PortInUse: naming `transport.listen` and a free port to use instead.
    """
    if not transport_entry(transport.kind).networked:
        return
    try:
        host, port = tcp_host_port(transport.kind, transport.listen)
    except ValueError:
        return
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                return  # not ours to judge (an address of another host): the server says
            raise PortInUse(
                f"transport.listen={transport.listen}: address already in use (another run "
                f"or server listens there); choose another port, e.g. transport.listen="
                f"{tcp_address(transport.kind, host, free_port())}") from None

