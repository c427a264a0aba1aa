"""Policy server: the model as a service, reachable over any transport.

The policy is loaded and warmed once; clients open sessions. Opening a session compares the
client's capabilities with the policy's spec (action names and order, observation keys and
shapes, image sizes, control rate, chunk size, model id) and rejects a mismatch with a reason
the client can log. Control messages (open, reset, status, close) are answered on the
transport's request path; observations arrive on its latest-only stream, and one inference
thread serves the sessions round-robin, so a newer observation replaces an unserved one
instead of queueing behind it. Every request leaves one JSON audit line, the server exposes
`/healthz` and Prometheus `/metrics`, and `drain()` (SIGTERM) finishes the inference in
progress, refuses new sessions and closes.

Clock rule: the server never sends an instant of its own clock. It echoes the client's stamp
and reports durations (queue wait, inference time) only.
"""

from __future__ import annotations

import itertools
import json
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from envs.base import ArrayField, EnvObservation, EnvSpec
from harness import wire
from harness.server_metrics import ServerMetrics
from policies.base import Policy, PolicySpec, SpecMismatch, check_compatible
from transports import StreamItem, TransportConfig, TransportServer, make_server

log = logging.getLogger(__name__)
audit_log = logging.getLogger("harness.audit")


def capabilities_of(spec: PolicySpec) -> wire.Capabilities:
    """What the server announces in SESSION_OK: the policy's spec in wire form."""
    return wire.Capabilities(
        model_id=spec.model_id, action_names=spec.action_names,
        state={k: wire.ArraySpec(f.dtype, f.shape) for k, f in spec.state.items()},
        images=dict(spec.images), control_hz=spec.control_hz, chunk_size=spec.chunk_size)


def check_capabilities(policy: PolicySpec, client: wire.Capabilities) -> None:
    """Raise SpecMismatch naming the first field where the client cannot use this policy."""
    if client.model_id and client.model_id != policy.model_id:
        raise SpecMismatch(f"model_id: client expects {client.model_id!r}, server hosts "
                           f"{policy.model_id!r}")
    if client.chunk_size != policy.chunk_size:
        raise SpecMismatch(f"chunk_size: client expects {client.chunk_size}, policy returns "
                           f"{policy.chunk_size}")
    as_env = EnvSpec(name="client", action_names=client.action_names,
                     action_low=(-1.0,) * len(client.action_names),
                     action_high=(1.0,) * len(client.action_names),
                     state={k: ArrayField(s.dtype, s.shape) for k, s in client.state.items()},
                     images=dict(client.images), control_hz=client.control_hz)
    check_compatible(policy, as_env)


@dataclass
class Session:
    session_id: str
    client_id: str
    epoch: int
    policy: Policy
    episode: int = 0
    served: int = 0


class PolicyServer:
    """Hosts one policy for up to `max_sessions` clients over one transport."""

    def __init__(self, transport: TransportConfig, make_policy: Callable[[], Policy], *,
                 max_sessions: int = 4, metrics: ServerMetrics | None = None) -> None:
        self._make_policy = make_policy
        self._warm_policy = make_policy()
        self.spec = self._warm_policy.spec
        self.capabilities = capabilities_of(self.spec)
        self.max_sessions = max_sessions
        self.metrics = metrics or ServerMetrics()
        self._transport: TransportServer = make_server(transport, self._answer_request)
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        # Epochs start at a random point so that a restarted server never reissues the epoch
        # of a session its predecessor handed out (a client must never mix the two).
        self._epochs = itertools.count(secrets.randbelow(2**31) + 1)
        self._draining = threading.Event()
        self._stopped = threading.Event()
        self._inference = threading.Thread(target=self._serve_observations,
                                           name="policy-inference", daemon=True)

    # ---- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Warm the policy with one prediction, then start serving."""
        started = time.monotonic()
        self._warm_policy.predict(self._blank_observation())
        log.info("policy %s warmed in %.3f s", self.spec.model_id, time.monotonic() - started)
        self._transport.start()
        self._inference.start()

    def drain(self) -> None:
        """Refuse new sessions, let the inference in progress finish, then close."""
        self._draining.set()
        self.close()

    def close(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._inference.is_alive():
            self._inference.join()
        self._transport.close()

    def healthy(self) -> bool:
        return self._inference.is_alive() and not self._stopped.is_set()

    def _blank_observation(self) -> EnvObservation:
        state = {k: np.zeros(f.shape, f.dtype) for k, f in self.spec.state.items()}
        images = {c: np.zeros((h, w, 3), np.uint8) for c, (h, w) in self.spec.images.items()}
        return EnvObservation(state, images, "")

    # ---- control path -----------------------------------------------------------------------

    def _answer_request(self, client_id: str, payload: bytes) -> bytes:
        started = time.monotonic_ns()
        try:
            request = wire.decode(payload)
        except wire.DecodeError as exc:
            self._audit(client_id, None, "decode_error", started, detail=str(exc))
            return self._reply(wire.Error("decode", str(exc)))
        handlers = {
            wire.MessageType.SESSION_OPEN: self._open,
            wire.MessageType.RESET: self._reset,
            wire.MessageType.STATUS: self._status,
            wire.MessageType.CLOSE: self._close,
        }
        handler = handlers.get(request.msg_type)
        if handler is None:
            reply, outcome = self._reply(wire.Error(
                "protocol", f"{request.msg_type.name} is not a request"), request), "rejected"
        else:
            reply, outcome = handler(client_id, request)
        self._audit(client_id, request, outcome, started)
        return reply

    def _reply(self, body: wire.Body, request: wire.Message | None = None, *,
               epoch: int | None = None) -> bytes:
        """Encode `body` as the answer to `request`, echoing its ids and client clock; an
        undecodable request has none to echo, so its answer carries zeros."""
        if request is None:
            return wire.encode(wire.Message(body, flags=wire.Flags.RESPONSE))
        return wire.encode(wire.Message(
            body, seq=request.seq, episode=request.episode,
            epoch=request.epoch if epoch is None else epoch, client_ns=request.client_ns,
            flags=wire.Flags.RESPONSE))

    def _open(self, client_id: str, request: wire.Message) -> tuple[bytes, str]:
        with self._lock:
            active = len(self._sessions)
            if self._draining.is_set():
                reason = "server is draining"
            elif active >= self.max_sessions and client_id not in self._sessions:
                reason = f"max_sessions={self.max_sessions} reached ({active} active)"
            else:
                try:
                    check_capabilities(self.spec, request.body.capabilities)
                    reason = ""
                except SpecMismatch as exc:
                    reason = f"capabilities mismatch: {exc}"
            if reason:
                self.metrics.sessions_rejected.inc()
                log.warning("rejected session of %s: %s", client_id, reason)
                return self._reply(wire.SessionReject(reason, active, self.max_sessions),
                                   request), "rejected"
            epoch = next(self._epochs)
            session = Session(uuid.uuid4().hex[:12], client_id, epoch, self._make_policy())
            self._sessions[client_id] = session  # a re-opening client replaces its session
            self.metrics.sessions.set(len(self._sessions))
        return self._reply(wire.SessionOk(session.session_id, self.capabilities), request,
                           epoch=epoch), "ok"

    def _session_for(self, client_id: str, request: wire.Message) -> Session | None:
        with self._lock:
            session = self._sessions.get(client_id)
        return session if session is not None and session.epoch == request.epoch else None

    def _reset(self, client_id: str, request: wire.Message) -> tuple[bytes, str]:
        session = self._session_for(client_id, request)
        if session is None:
            return self._reply(wire.Error(wire.SESSION_UNKNOWN, "no open session with this epoch"),
                               request), "rejected"
        session.policy.reset(seed=request.episode)
        session.episode = request.episode
        return self._reply(wire.Reset(), request), "ok"

    def _status(self, client_id: str, request: wire.Message) -> tuple[bytes, str]:
        return self._reply(wire.Status(self.status()), request), "ok"

    def status(self) -> dict[str, int | float | str | bool]:
        with self._lock:
            sessions = len(self._sessions)
        stats = self._transport.stats
        return {"model_id": self.spec.model_id, "sessions": sessions,
                "max_sessions": self.max_sessions, "draining": self._draining.is_set(),
                "received": stats.received, "superseded": stats.superseded,
                "served": int(self.metrics.served_total())}

    def _close(self, client_id: str, request: wire.Message) -> tuple[bytes, str]:
        with self._lock:
            session = self._sessions.get(client_id)
            if session is not None and session.epoch == request.epoch:
                del self._sessions[client_id]
            self.metrics.sessions.set(len(self._sessions))
        return self._reply(wire.Close(), request), "ok"

    # ---- stream path ------------------------------------------------------------------------

    def _serve_observations(self) -> None:
        while not self._stopped.is_set():
            item = self._transport.take_stream(timeout_s=0.1)
            if item is not None:
                self._serve_one(item)

    def _serve_one(self, item: StreamItem) -> None:
        started = time.monotonic_ns()
        queue_wait_ns = started - item.received_ns
        try:
            request = wire.decode(item.payload)
        except wire.DecodeError as exc:
            self._send(item.client_id, wire.Error("decode", str(exc)))
            self._audit(item.client_id, None, "decode_error", started, detail=str(exc))
            return
        session = self._session_for(item.client_id, request)
        if request.msg_type is not wire.MessageType.OBSERVATION or session is None:
            self._send(item.client_id, wire.Error(
                wire.SESSION_UNKNOWN, "observation without an open session of this epoch"),
                request)
            self._audit(item.client_id, request, "rejected", started)
            return
        if request.episode != session.episode:
            self.metrics.stale_dropped.inc()
            self._audit(item.client_id, request, "stale_episode", started)
            return
        body = request.body
        observation = EnvObservation(dict(body.state), dict(body.images), body.instruction)
        try:
            chunk = session.policy.predict(observation)
        except Exception as exc:  # the model failing must not take the server down
            log.exception("policy failed for %s", item.client_id)
            self._send(item.client_id, wire.Error("inference", repr(exc)), request)
            self._audit(item.client_id, request, "inference_error", started, detail=repr(exc))
            return
        infer_ns = time.monotonic_ns() - started
        session.served += 1
        self.metrics.observe_served(item.client_id, queue_wait_ns, infer_ns)
        self._send(item.client_id, wire.ActionChunk(np.asarray(chunk, np.float32), request.seq,
                                                    queue_wait_ns, infer_ns, self.spec.model_id),
                   request)
        self._audit(item.client_id, request, "served", started, queue_wait_ns=queue_wait_ns,
                    infer_ns=infer_ns)

    def _send(self, client_id: str, body: wire.Body, request: wire.Message | None = None):
        self._transport.send_stream(client_id, self._reply(body, request))

    def _audit(self, client_id: str, request: wire.Message | None, outcome: str,
               started_ns: int, **extra: object) -> None:
        record = {"client": client_id, "type": request.msg_type.name if request else None,
                  "seq": request.seq if request else None,
                  "episode": request.episode if request else None,
                  "epoch": request.epoch if request else None, "outcome": outcome,
                  "handled_ns": time.monotonic_ns() - started_ns, **extra}
        self.metrics.requests.labels(outcome=outcome).inc()
        audit_log.info(json.dumps(record, sort_keys=True))


def serve_forever(config, *, ready: Callable[[int], None] | None = None,
                  stop: threading.Event | None = None) -> None:
    """Run a policy server for `config` (a HarnessConfig) until SIGTERM/SIGINT or `stop`."""
    import signal

    from envs import make_env
    from harness.evaluate import task_ids
    from harness.server_metrics import HealthEndpoint
    from policies import make_policy

    task = task_ids(config.env.name, config.env.tasks)[0]
    env = make_env(config.env.name, cameras=tuple(config.env.cameras),
                   image_size=(config.env.image_size, config.env.image_size), task_id=task)
    env_spec = env.spec  # the policy's spec follows the env's (LIBERO: per task)
    env.close()
    policy = config.policy
    server = PolicyServer(config.transport, lambda: make_policy(
        policy.name, env_spec, chunk_size=policy.chunk_size, weights=policy.weights,
        latency_profile=policy.latency_profile, seed=config.seed),
        max_sessions=config.server.max_sessions)
    server.start()
    health = HealthEndpoint(server.metrics, server.healthy, port=config.server.health_port)
    health.start()
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    log.info("serving %s on %s; health on port %d", server.spec.model_id,
             config.transport.kind, health.port)
    if ready is not None:
        ready(health.port)
    stop.wait()
    log.info("draining")
    server.drain()
    health.close()


def main() -> None:
    """`python -m harness.server [overrides]`: one policy server, alone, until SIGTERM."""
    import hydra
    from omegaconf import DictConfig

    from harness.config import config_dir, register_configs, validate_or_exit

    register_configs()

    @hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
    def _run(cfg: DictConfig) -> None:
        serve_forever(validate_or_exit(cfg), ready=lambda port: print(f"READY {port}", flush=True))

    _run()


if __name__ == "__main__":
    main()
