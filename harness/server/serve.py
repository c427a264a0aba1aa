"""Run one policy server from a config until it is told to stop.

The policy is built from `config.policy` (and, for the scripted oracles, the env's task
definition), never from a running env: a server hosting a learned model loads no simulator.
A server started by the harness's supervisor also watches its lifeline, a pipe whose other
end only the harness holds, and drains when it closes: the harness exiting in any way,
SIGKILL included, never leaves a server behind holding the port.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable

from envs import task_ids
from harness.server.metrics import HealthEndpoint
from harness.server.policy_server import PolicyServer
from harness.server.scheduler import make_scheduler
from harness.server.supervisor import LIFELINE_ENV, ServerStartError
from policies import Policy, PolicyTask
from policies import policy_factory as registry_factory
from transports import make_server

log = logging.getLogger(__name__)


def policy_factory(config) -> Callable[[], Policy]:
    """A builder of the policy `config` (a HarnessConfig) names, one instance per call: any
    kind the registry has (`policies.registry`), a researcher's own class included."""
    env = config.env
    # "all" starts at task 0: no need to ask the suite how many it has.
    task = 0 if env.tasks == "all" else task_ids(env.name, env.tasks)[0]
    return registry_factory(config.policy, PolicyTask(
        env.name, task, tuple(env.cameras), (env.image_size, env.image_size),
        config.policy.chunk_size, config.seed))


def watch_lifeline(stop: threading.Event) -> None:
    """If started by a supervisor, set `stop` when the supervisor's end of the pipe closes."""
    fd = os.environ.get(LIFELINE_ENV)
    if fd is None:
        return

    def wait_for_eof() -> None:
        try:
            while os.read(int(fd), 1):
                pass
        except OSError:
            pass
        log.warning("the harness that started this server is gone: draining")
        stop.set()

    threading.Thread(target=wait_for_eof, name="lifeline", daemon=True).start()


def limit_torch_threads(threads: int) -> None:
    """`server.torch_threads`: how many threads torch's operations use in this process, once
    the policy is built (0: leave torch's default). A policy without torch never imports it
    (it costs a second of start-up), so nothing is set then."""
    if threads and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def serve_forever(config, *, ready: Callable[[int], None] | None = None,
                  stop: threading.Event | None = None,
                  predict_hook: Callable[[float], object] | None = None) -> None:
    """Run a policy server for `config` (a HarnessConfig) until SIGTERM/SIGINT, the lifeline
    closing, or `stop`; then drain. `ready(health_port)` is called once it serves;
    `predict_hook` is passed to `PolicyServer` (the entry point that composes the run gives
    the model faults' hook when `server.model_faults_path` is set)."""
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        watch_lifeline(stop)
    server = PolicyServer(make_server(config.transport), policy_factory(config),
                          max_sessions=config.server.max_sessions,
                          session_idle_timeout_s=config.server.session_idle_timeout_s,
                          max_client_id_chars=config.server.max_client_id_chars,
                          predict_hook=predict_hook,
                          seal_streams=config.transport.security.enabled,
                          scheduler=make_scheduler(
                              config.server.scheduler, max_batch_size=config.server.max_batch_size,
                              max_wait_ms=config.server.max_wait_ms))
    limit_torch_threads(config.server.torch_threads)
    # Bound before the server starts, so a health address that cannot be bound fails the
    # start-up without leaving a serving transport behind.
    health = HealthEndpoint(server.metrics, server.healthy, host=config.server.health_host,
                            port=config.server.health_port)
    try:
        server.start()
    except BaseException:
        health.close()
        raise
    health.start()
    log.info("serving %s on %s; health on %s:%d", server.spec.model_id,
             config.transport.kind, health.host, health.port)
    if ready is not None:
        ready(health.port)
    stop.wait()
    log.info("draining")
    server.drain()
    health.close()


class InProcessServer:
    """`serve_forever` on a thread of this process (the only choice for transport=local);
    the same start/stop shape as `ServerSupervisor`, without signals to send.
    `predict_hook` as `serve_forever`'s."""

    def __init__(self, config, *,
                 predict_hook: Callable[[float], object] | None = None) -> None:
        self._stop = threading.Event()
        started = threading.Event()
        self._failure: BaseException | None = None

        def run() -> None:
            try:
                serve_forever(config, ready=lambda port: started.set(), stop=self._stop,
                              predict_hook=predict_hook)
            except BaseException as exc:  # reported to the starting thread below
                self._failure = exc
                started.set()

        self._thread = threading.Thread(target=run, name="policy-server", daemon=True)
        self._thread.start()
        if not started.wait(config.server.startup_timeout_s):
            raise ServerStartError("in-process policy server did not start within "
                               f"{config.server.startup_timeout_s} s")
        if self._failure is not None:
            raise ServerStartError(f"in-process policy server failed to start: "
                               f"{self._failure!r}") from self._failure

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
