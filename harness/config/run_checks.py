"""Checks across the sections of a run's config: what one section's value asks of another
(replicas and robot processes need a server and a transport that cross processes, each kind
of fault the mechanism it acts through, security one identity per harness). They run from
`HarnessConfig.__post_init__` once every section is built, and raise a `ConfigError` naming
the fields in conflict and what to change."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from harness.config.enums import ClientsAs, ConfigError, Job, ServerMode
from harness.faults.kinds import fault_kind
from harness.faults.schedule import FaultApply, FaultLink, NetworkPath
from harness.server.replicas import ReplicaPortError, replica_transports
from transports.config import SecurityConfig
from transports.registry import transport_entry

if TYPE_CHECKING:
    from harness.config.schema import HarnessConfig


def check_run(config: HarnessConfig) -> None:
    """Every check across sections but security's (`adopt_security`, which runs first)."""
    if config.clients > config.server.max_sessions:
        raise ConfigError(f"clients={config.clients}: more than server.max_sessions="
                          f"{config.server.max_sessions} would be turned away at session "
                          "open; raise server.max_sessions to measure them")
    _check_replicas(config)
    _check_clients_as(config)
    if config.clients > 1 and config.job is Job.loop and (
            config.faults.apply is FaultApply.emulated and not config.faults.empty):
        raise ConfigError(f"clients={config.clients} with faults={config.faults.name} "
                          "(emulated): each episode opens and closes its own fault "
                          "windows on the one server and link, so robots running at once "
                          "would stack them; use faults.apply=modelled or clients=1")
    if config.job is not Job.loop or config.faults.apply is FaultApply.modelled:
        return  # a modelled schedule touches nothing real
    faults = config.faults
    if faults.link is not FaultLink.client and faults.has_network_faults:
        if config.policy.model_link is None:
            raise ConfigError(f"faults.link={faults.link}: the model link is our server's "
                              "link to an external model server (policy=remote), not "
                              f"policy={config.policy.name}")
        if config.server.mode is ServerMode.external or faults.network is NetworkPath.kernel:
            raise ConfigError(f"faults.link={faults.link}: the model link's proxy needs a "
                              "server the harness starts (server=process or inprocess) "
                              "and faults.network=proxy")
    if faults.link is not FaultLink.client and faults.has_message_faults:
        kinds = sorted(k for k in faults.kinds if fault_kind(k).group == "message")
        raise ConfigError(
            f"faults.link={faults.link} with faults={faults.name}: message-level kinds "
            f"({', '.join(kinds)}) act in the robot's client wrapper, on the robot's link "
            "only; the model link has no message-level emulation. Run them with "
            "faults.link=client, or use a schedule without them on the model link")
    if (faults.has_network_faults and not transport_entry(config.transport.kind).networked
            and faults.link is not FaultLink.model):
        raise ConfigError(f"faults={faults.name}: network faults act on the bytes of a "
                          "networked transport (zenoh, grpc or zmq); transport=local has "
                          "none (faults.apply=modelled applies them to the latency model)")
    if (faults.has_network_faults and faults.network is NetworkPath.kernel
            and config.server.mode is not ServerMode.process):
        raise ConfigError(f"faults.network=kernel: the server must run in a network "
                          f"namespace, so in a process the harness starts (server=process,"
                          f" not server.mode={config.server.mode})")
    if faults.has_model_faults and config.server.mode is ServerMode.external:
        raise ConfigError(f"faults={faults.name}: model faults act inside the predict of a "
                          "server the harness starts (server=process or inprocess), not "
                          "server=external")
    if config.faults.has_process_faults and (
            config.server.mode is not ServerMode.process
            or not transport_entry(config.transport.kind).networked):
        raise ConfigError(f"faults={config.faults.name}: process faults act on a server the "
                          "harness supervises: server=process over zenoh, grpc or zmq "
                          f"(not server.mode={config.server.mode}, transport.kind="
                          f"{config.transport.kind})")


def _check_replicas(config: HarnessConfig) -> None:
    """`server.replicas` > 1: servers the harness starts as processes, on ports it can lay
    out, and no emulated network faults (their proxy fronts one address)."""
    replicas = config.server.replicas
    if replicas == 1:
        return
    if config.server.mode is not ServerMode.process:
        raise ConfigError(f"server.replicas={replicas} with server.mode={config.server.mode}: "
                          "replicas are servers the harness starts as processes "
                          "(server=process)")
    try:
        replica_transports(config.transport, replicas, config.server.replica_port_stride)
    except ReplicaPortError as exc:
        raise ConfigError(str(exc)) from None
    if (config.faults.apply is FaultApply.emulated and config.faults.has_network_faults):
        raise ConfigError(f"server.replicas={replicas} with faults={config.faults.name} "
                          "(emulated network faults): their proxy stands in front of one "
                          "server's address; use faults.apply=modelled or server.replicas=1")


def _check_clients_as(config: HarnessConfig) -> None:
    """`clients_as=processes`: robots that reach the server over a transport that crosses
    processes, and no emulated faults (their mechanisms act on the harness's own clients)."""
    if config.clients_as is ClientsAs.threads:
        return
    if not transport_entry(str(config.transport.kind)).networked:
        raise ConfigError(f"clients_as=processes with transport={config.transport.kind}: it "
                          "does not cross processes; robots as processes need zmq, grpc or "
                          "zenoh")
    if config.faults.apply is FaultApply.emulated and not config.faults.empty:
        raise ConfigError(f"clients_as=processes with faults={config.faults.name} (emulated): "
                          "the fault mechanisms act on the harness's own clients; use "
                          "faults.apply=modelled or clients_as=threads")


def adopt_security(config: HarnessConfig) -> None:
    """One place says who may talk to the server: the top-level `security` group. It is
    copied into the transport config, which every backend reads; a value set on
    `transport.security` directly would be silently replaced, so it is refused."""
    if config.transport.security not in (SecurityConfig(), config.security):
        raise ConfigError("transport.security: set the top-level group instead "
                          "(security=mtls security.dir=DIR)")
    if config.security.enabled and transport_entry(config.transport.kind).security is None:
        raise ConfigError(f"security=mtls with transport={config.transport.kind}: this "
                          "transport cannot authenticate its ends; choose zenoh, grpc or zmq")
    if (config.security.enabled and config.transport.client_id
            and config.transport.client_id != config.security.identity):
        raise ConfigError(f"transport.client_id={config.transport.client_id!r} with "
                          "security=mtls: a robot goes by its certificate's name; choose it "
                          "with security.identity")
    if config.security.enabled and not _is_loopback(config.server.health_host):
        raise ConfigError(f"server.health_host={config.server.health_host} with security=mtls: "
                          "/metrics names every robot and /healthz has no authentication; "
                          "keep them on 127.0.0.1 and scrape through an authenticated proxy")
    if config.security.enabled and config.clients > 1:
        raise ConfigError(f"clients={config.clients} with security=mtls: each robot is one "
                          "identity (security.identity); run one harness per robot")
    config.transport.security = config.security


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
