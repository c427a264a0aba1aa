"""Wiring a task's emulated faults into a run: the mechanisms each group of kinds acts through.

The loop job calls `fault_wiring` once per task, around starting its policy server and its
robots' clients. What it sets up depends on the schedule's groups (`FaultsConfig.has_*`) and
only when the faults are emulated (`faults.apply=modelled` wires nothing real):

- model faults: the model-faults file, cleared, that the server's predict hook reads
  (`harness.faults.model_faults`; a child server gets its path, an in-process one the hook);
- network faults, `faults.network=kernel`: the server's own network namespace behind a veth
  pair (the server then runs through `command_prefix` and listens on its side of the link);
- network faults on the model link (`faults.link=model|both`): a proxy in front of the
  external model server, dialled by our server (set up before it starts: it dials at start);
- after the server started (`FaultWiring.server_started`): the supervisor for process
  faults, and the proxy in front of the server's address that the robots dial;
- message faults: each robot's client wrapped (`FaultWiring.wrap_client`);
- outage kinds (paced, acting on the server, a link or the model): each robot's client
  wrapped in the gate that holds it inside a window the world has left on a simulator
  slower than real time (`harness.faults.gate`).

Leaving the context stops what it started, in reverse order: the proxies, then the kernel
link (after the server, which the job stops first, has left the namespace).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

from harness.faults.controller import OUTAGE_GROUPS, Mechanisms
from harness.faults.gate import RobotSideGate
from harness.faults.kernel import NetnsLink
from harness.faults.kernel import detect as kernel_support
from harness.faults.kinds import fault_kind
from harness.faults.links import ProxyGroup
from harness.faults.messages import FaultyClient
from harness.faults.model_faults import predict_hook, write_model_fault
from harness.faults.proxy import FaultProxy
from harness.faults.schedule import FaultApply, FaultLink, FaultsConfig, NetworkPath
from harness.overrides import quoted_override
from harness.server.supervisor import ServerSupervisor
from transports.loopback import loopback_address, tcp_address, tcp_host_port
from transports.registry import transport_entry

log = logging.getLogger(__name__)


class KernelUnavailable(RuntimeError):
    """faults.network=kernel on a machine that cannot give it (not root, no ip/tc, ...)."""


def check_kernel_path(faults: FaultsConfig) -> None:
    """faults.network=kernel needs namespaces and tbf: say which is missing and why before
    anything starts (an env, a server).

    Raises:
        KernelUnavailable: naming each missing feature and why.
    """
    if not (faults.apply is FaultApply.emulated and faults.has_network_faults
            and faults.network is NetworkPath.kernel):
        return
    support = kernel_support()
    if not (support.netns and support.tbf):
        raise KernelUnavailable("faults.network=kernel: " + "; ".join(
            f"{feature}: {reason}" for feature, reason in support.reasons.items()
            if feature in ("netns", "tbf")))


def warn_if_presence_will_trip(faults: FaultsConfig, transport) -> None:
    """A heartbeat slower than `transport.heartbeat_timeout_s` counts as the server gone
    (the transports that need a heartbeat): a schedule adding more round trip than that
    measures the presence check, not control under delay. Say so before the run, not in a
    table of DEAD episodes."""
    if faults.apply is not FaultApply.emulated or \
            not transport_entry(str(transport.kind)).needs_heartbeat:
        return
    added_s = max([(2 if f.direction == "both" else 1) * (f.delay_s + 3 * f.jitter_s)
                   for f in faults.timed if f.kind == "latency"]
                  + [f.predict_s for f in faults.timed if f.kind == "slow_model"]
                  + [0.0])
    if added_s >= transport.heartbeat_timeout_s:
        log.warning("faults=%s adds up to %.0f ms to a round trip, more than transport."
                    "heartbeat_timeout_s=%g s: the client will take the slow server for an "
                    "absent one (RECONNECTING); raise it to measure control under this delay",
                    faults.name, added_s * 1e3, transport.heartbeat_timeout_s)


class FaultWiring:
    """What one task's run goes through; the job reads these where it used its config's."""

    def __init__(self, config, *, emulated: bool, message_faults: bool,
                 outages: bool = False) -> None:
        self.mechanisms = Mechanisms(modelled=not emulated, link=str(config.faults.link))
        self.transport = config.transport
        """The transport config the robots dial (through the proxy once the server started)
        and, with the kernel path, the one the server listens with (its side of the veth
        link)."""
        self.server_config = config
        """The config an in-process server is built from (`policy.url` through the model
        proxy)."""
        self.server_overrides: list[str] = []
        """The overrides a child server is started with."""
        self.command_prefix: tuple[str, ...] = ()
        """What a child server runs through (`ip netns exec <ns>`)."""
        self.model_faults_path: Path | None = None
        self.predict_hook: Callable[[float], object] | None = None
        """For an in-process server: the model faults' hook on `model_faults_path`."""
        self.proxy_for_robots = False
        self._seed = config.seed
        self._message_faults = message_faults
        self._outages = outages
        self._stack = contextlib.ExitStack()

    def server_started(self, server: object) -> None:
        """The task's server serves (`server`: a `ServerSupervisor`, an in-process server or
        None): process faults act on a supervisor; the robots' proxy goes in front of it."""
        if isinstance(server, ServerSupervisor):
            self.mechanisms.server = server
        if self.proxy_for_robots:
            proxy, self.transport = _start_proxy(self.transport, self._seed)
            self._stack.callback(proxy.stop)
            model_proxy = self.mechanisms.proxy
            self.mechanisms.proxy = (proxy if model_proxy is None
                                     else ProxyGroup([proxy, model_proxy]))

    def wrap_client(self, client):
        """`client` (a robot's transport client), wrapped for message faults if the schedule
        has emulated ones (then clients=1: the config checks it), and in the gate if it has
        outage kinds."""
        if self._message_faults:
            client = self.mechanisms.client = FaultyClient(client)
        if self._outages:
            client = self.mechanisms.gate = RobotSideGate(client)
        return client


@contextlib.contextmanager
def fault_wiring(config, *, task: int, run_dir: Path,
                 server_overrides: list[str]) -> Iterator[FaultWiring]:
    """The mechanisms of `config.faults` (`config`: a `HarnessConfig`) for task `task`,
    set up before its server starts; see the module docstring for what and in which order.

    Raises:
        KernelCommandError, KernelFeatureMissing: the kernel link could not be built.
    """
    faults = config.faults
    emulated = faults.apply is FaultApply.emulated
    network = emulated and faults.has_network_faults
    with contextlib.ExitStack() as stack:
        wiring = FaultWiring(config, emulated=emulated,
                             message_faults=emulated and faults.has_message_faults,
                             outages=emulated and has_outages(faults))
        wiring.server_overrides = list(server_overrides)
        if emulated and faults.has_model_faults:
            wiring.model_faults_path = run_dir / f"server-task{task}" / "model_faults.json"
            write_model_fault(wiring.model_faults_path, {})
            wiring.mechanisms.model_faults_path = wiring.model_faults_path
            wiring.predict_hook = predict_hook(wiring.model_faults_path, seed=config.seed)
        if network and faults.network is NetworkPath.kernel:
            kernel, wiring.transport = _open_kernel_link(config.transport)
            stack.callback(kernel.close)  # after the server has stopped
            wiring.mechanisms.kernel = kernel
            wiring.command_prefix = tuple(kernel.exec_prefix())
            wiring.server_overrides = [
                *(o for o in wiring.server_overrides if not o.startswith("transport.listen=")),
                f"transport.listen={wiring.transport.listen}"]
        links = faults.link if network else FaultLink.client
        if links is not FaultLink.client:  # before the server: it dials the model at start
            model_proxy, url = _start_model_proxy(config.policy.url, config.seed)
            stack.callback(model_proxy.stop)
            wiring.mechanisms.proxy = model_proxy
            wiring.server_overrides = [
                *(o for o in wiring.server_overrides if not o.startswith("policy.url=")),
                quoted_override("policy.url", url)]
            wiring.server_config = dataclasses.replace(
                config, policy=dataclasses.replace(config.policy, url=url))
        wiring.proxy_for_robots = network and links is not FaultLink.model
        stack.enter_context(wiring._stack)
        yield wiring


def has_outages(faults: FaultsConfig) -> bool:
    """Whether the schedule has a kind the controller may lift early on a slow simulator
    (`FaultController._lift_outages`): paced, acting on the world."""
    return any(fault_kind(k).paced and fault_kind(k).group in OUTAGE_GROUPS
               for k in faults.kinds)


def _start_proxy(transport, seed: int) -> tuple[FaultProxy, object]:
    """A fault proxy in front of `transport`'s server address, and the transport config a
    client dials it with."""
    host, port = tcp_host_port(transport.kind, transport.connect_address)
    proxy = FaultProxy(host, port, seed=seed)
    proxy_port = proxy.start()
    support = kernel_support()
    log.info("network faults through the user-space proxy 127.0.0.1:%d -> %s:%d (kernel "
             "netem: %s)", proxy_port, host, port, "present" if support.netem
             else "absent, " + support.reasons.get("netem", "?"))
    return proxy, dataclasses.replace(transport,
                                      connect=loopback_address(transport.kind, proxy_port))


def _start_model_proxy(url: str, seed: int) -> tuple[FaultProxy, str]:
    """A fault proxy in front of the external model server at `url` (`policy.url`), and the
    URL our server dials it through."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or {"https": 443, "wss": 443}.get(parts.scheme, 80)
    proxy = FaultProxy(parts.hostname, port, seed=seed)
    proxy_port = proxy.start()
    proxied = urllib.parse.urlunsplit(parts._replace(netloc=f"127.0.0.1:{proxy_port}"))
    log.info("network faults on the model link: our server dials %s, the proxy forwards to "
             "%s:%d", proxied, parts.hostname, port)
    return proxy, proxied


def _open_kernel_link(transport) -> tuple[NetnsLink, object]:
    """A namespace for the server behind a veth pair, and the transport config with the
    server listening on its side of the link (same port)."""
    support = kernel_support()
    link = NetnsLink()
    _, port = tcp_host_port(transport.kind, transport.listen)
    address = tcp_address(transport.kind, link.ns_ip, port)
    log.info("network faults in the kernel: the server in namespace %s at %s (netem %s)",
             link.name, address, "present" if support.netem else "absent: delay in the proxy")
    return link, dataclasses.replace(transport, listen=address, connect=None)
