"""What a closed-loop run needs of the robot's, the server's and the model link's settings
together, checked before anything starts (by `run_loop` and by `python -m harness --check`).
The server alone, `python -m harness.server`, is not held to its robots' settings, so these
are not part of `validate`."""

from __future__ import annotations

from harness.client.config import ClientMode
from harness.config import ConfigError, HarnessConfig, Job, ServerMode
from harness.faults.kinds.process import ROUTER_KINDS
from harness.faults.schedule import FaultApply
from policies.config import PolicyConfigError
from policies.registry import policy_entry
from transports.config import ROUTER_AUTO, SecurityError
from transports.registry import transport_entry
from transports.security import check_key_material, robot_names, router_tls


def check_loop_config(config: HarnessConfig) -> None:
    """What only a closed-loop run needs of the robot's and the server's settings together
    (the server alone, `python -m harness.server`, is not held to its robots' settings).

    Raises:
        ConfigError: naming the fields and the fix.
    """
    check_timeout_order(config)
    check_policy(config)
    check_keys(config, server=config.server.mode is not ServerMode.external)
    check_router(config)
    if config.policy.one_action_per_reply and config.client.mode is not ClientMode.synchronous:
        raise ConfigError(
            f"client.mode={config.client.mode} with policy.protocol={config.policy.protocol}, "
            "which answers one action per observation: each arrives after the tick it was for "
            "and would be trimmed as stale; use client=synchronous (or policy.reply_chunk=N "
            "for a server that sends chunks of N)")


def check_policy(config: HarnessConfig) -> None:
    """What the policy's kind can tell without being built (`PolicyEntry.check`: its
    weights file is there), where this run builds it: in-process, or in the server it
    starts (not `server=external`, whose model is elsewhere). Without it, a missing file
    showed only as the server exiting during start-up, and `--check` said ok."""
    if config.job is Job.loop and config.server.mode is ServerMode.external:
        return
    check = policy_entry(config.policy.name).check
    if check is not None:
        try:
            check(config.policy, config.env.name)
        except PolicyConfigError as exc:
            raise ConfigError(str(exc)) from None


def check_keys(config: HarnessConfig, *, server: bool, client: bool = True) -> None:
    """With security=mtls, every key file the run's robot (and the server, if the harness
    starts it) will read: present, readable, in date and from one CA."""
    if not config.security.enabled:
        return
    try:
        check_key_material(config.security, transport_entry(config.transport.kind).security,
                           server=server, client=client)
    except SecurityError as exc:
        raise ConfigError(str(exc)) from exc


def check_router(config: HarnessConfig) -> None:
    """`transport.router=auto` (the harness starts the router) needs a server the harness
    starts, which it can point at the router; and a fault proxy cannot sit on a link through
    a router yet. Router faults need that router."""
    router_kinds = sorted(ROUTER_KINDS & set(config.faults.kinds))
    if getattr(config.transport, "router", None) != ROUTER_AUTO:
        if router_kinds and config.faults.apply is not FaultApply.modelled:
            raise ConfigError(f"faults={config.faults.name}: {', '.join(router_kinds)} need "
                              "the Zenoh router the harness starts: transport=zenoh "
                              "transport.router=auto")
        return
    if config.server.mode is ServerMode.external:
        raise ConfigError("transport.router=auto with server=external: the harness cannot "
                          "point a server it did not start at its router; give the router's "
                          "locator (transport.router=tls/host:port)")
    if config.faults.has_network_faults and config.faults.apply is not FaultApply.modelled:
        raise ConfigError(f"transport.router=auto with faults={config.faults.name}: network "
                          "faults on a link through a router are not built; use "
                          "faults.apply=modelled, or no router")
    check_router_keys(config)


def check_router_keys(config: HarnessConfig) -> None:
    """With security=mtls, the router's certificate and the robots' it builds its ACL from."""
    if not config.security.enabled:
        return
    try:
        router_tls(config.security)
        robot_names(config.security)
    except SecurityError as exc:
        raise ConfigError(str(exc)) from exc


def check_timeout_order(config: HarnessConfig) -> None:
    """The timeouts of the robot, our server and the model link must trip in one order:

        transport.heartbeat_timeout_s, client.request_timeout_s, policy.request_timeout_s
            < client.max_offline_s < server.session_idle_timeout_s
        client.keepalive_s < server.session_idle_timeout_s

    A robot has to notice the server gone, and a hung model request has to come back as an
    error, before the robot gives up (else an episode ends DEAD with nothing counted); and the
    server has to keep a silent robot's session at least as long as the robot keeps trying
    (else a robot that survives an outage finds its session gone), and a robot that waits
    must say it is there before the server gives up on it. Out of order, the outcome
    depends on which clock runs faster: refused here, naming the pair.

    Raises:
        ConfigError: naming the first pair out of order and the fix.
    """
    client = config.client
    before_offline = [("transport.heartbeat_timeout_s", config.transport.heartbeat_timeout_s),
                      ("client.request_timeout_s", client.request_timeout_s)]
    if config.policy.model_link is not None:
        before_offline.append(("policy.request_timeout_s", config.policy.request_timeout_s))
    pairs = [(name, value, "client.max_offline_s", client.max_offline_s)
             for name, value in before_offline]
    idle = ("server.session_idle_timeout_s", config.server.session_idle_timeout_s)
    pairs += [("client.max_offline_s", client.max_offline_s, *idle),
              ("client.keepalive_s", client.keepalive_s, *idle)]
    for first, first_s, then, then_s in pairs:
        if first_s >= then_s:
            raise ConfigError(f"{first}={first_s:g} must be below {then}={then_s:g}: lower "
                              f"{first} or raise {then}")
