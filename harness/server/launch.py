"""Start, or find, the policy server a job's robots talk to.

A job (the closed loop) needs a server for each task: a supervised child process
(`server.mode=process`, the default), a thread of its own process (`inprocess`, and always
for a transport that does not cross processes), or none it starts (`external`: one already
serving at the transport's `connect` address). What else the server must be given is the
caller's business, passed in as plain values: extra overrides, a command prefix (a network
namespace), a predict hook (model faults). This package knows nothing of faults or of the
config's schema: `config` is read by attribute (a `HarnessConfig`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path

from harness.overrides import quoted_override
from harness.server.supervisor import ServerSupervisor
from transports import TransportTimeout
from transports.registry import transport_entry

log = logging.getLogger(__name__)


def start_server(config, task: int, overrides: list[str], run_dir: Path, *,
                 model_faults_path: Path | None = None,
                 predict_hook: Callable[[float], object] | None = None,
                 command_prefix: tuple[str, ...] = ()):
    """The task's policy server, serving when this returns: a `ServerSupervisor` (its log
    in `run_dir/server-task<task>`), an `InProcessServer`, or None (`server.mode=external`).

    `overrides` are the run's own (the child composes the same config from them);
    `model_faults_path` is added to them as `server.model_faults_path` (the child builds its
    own hook from it), while an in-process server takes `predict_hook` directly.

    Raises:
        ServerStartError: the child exited or did not report ready in time.
        RuntimeError: the in-process server failed to start.
    """
    mode = str(config.server.mode)
    if not transport_entry(str(config.transport.kind)).networked and mode == "process":
        mode = "inprocess"  # a transport that does not cross processes
    if mode == "external":
        return None
    if mode == "inprocess":
        from harness.server.serve import InProcessServer  # needs the [server] extra

        env = dataclasses.replace(config.env, tasks=str(task))
        server = dataclasses.replace(config.server, model_faults_path=model_faults_path and
                                     str(model_faults_path))
        return InProcessServer(dataclasses.replace(config, env=env, server=server),
                               predict_hook=predict_hook)
    if model_faults_path is not None:
        overrides = [*overrides, quoted_override("server.model_faults_path", model_faults_path)]
    server = ServerSupervisor([*overrides, f"env.tasks={task}"], run_dir / f"server-task{task}",
                              startup_timeout_s=config.server.startup_timeout_s,
                              command_prefix=command_prefix)
    server.start()
    return server


def router_overrides(overrides: list[str], locator: str) -> list[str]:
    """The run's overrides with `transport.router` pointing at `locator`."""
    return [*(o for o in overrides if not o.startswith("transport.router=")),
            f"transport.router={locator}"]


def start_router(config, overrides: list[str], run_dir: Path) -> tuple[ServerSupervisor, str]:
    """`transport.router=auto`: the run's Zenoh router, supervised like a server (its log in
    `run_dir/router`), on a free loopback port; and its locator.

    Raises:
        ServerStartError: the router exited or did not report ready in time.
    """
    from transports.loopback import free_port

    locator = f"tcp/127.0.0.1:{free_port()}"
    router = ServerSupervisor(router_overrides(overrides, locator), run_dir / "router",
                              startup_timeout_s=config.server.startup_timeout_s,
                              module="harness.server.router")
    router.start()
    return router, locator


WAIT_REPORT_S = 5.0
"""How often a wait for the policy server says it is still waiting."""


def wait_for_server(client, transport, *, timeout_s: float) -> bool:
    """Wait up to `timeout_s` for the policy server `client` dials over `transport` (its
    config), saying where and for how long; False (logged in one line) if it never came."""
    where = getattr(transport, "connect_address", getattr(transport, "name", ""))
    log.info("waiting up to %.0f s for the policy server (%s at %s)", timeout_s,
             transport.kind, where)
    started = time.monotonic()
    while True:  # a line every few seconds: a silent wait looks like a hang
        remaining = timeout_s - (time.monotonic() - started)
        try:
            client.wait_ready(min(WAIT_REPORT_S, max(remaining, 0.0)))
            return True
        except TransportTimeout:
            waited = time.monotonic() - started
            if waited >= timeout_s:
                break
            log.info("still no policy server over %s at %s after %.0f s (giving up at %.0f s: "
                     "server.startup_timeout_s)", transport.kind, where, waited, timeout_s)
    log.error("no policy server answered over %s at %s within %.0f s "
              "(server.startup_timeout_s); is it running?", transport.kind, where, timeout_s)
    return False
