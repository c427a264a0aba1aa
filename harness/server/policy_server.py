"""Policy server: the model as a service, reachable over any transport.

The policy is loaded and warmed once; clients open sessions. Opening a session checks the
client's contract against the policy's (`harness.protocol.check_contract`: action names and
order, observation keys and shapes, image sizes, control rate, chunk size, model id) and
rejects a mismatch with a reason the client can log. Control messages (open, reset, status,
close) are answered on the transport's request path; observations arrive on its latest-only
stream, and one inference thread serves the sessions round-robin, so a newer observation
replaces an unserved one instead of queueing behind it. Every request leaves one JSON audit
line, the server exposes `/healthz` and Prometheus `/metrics`, and `drain()` (SIGTERM)
finishes the inference in progress, refuses new sessions and closes.

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

from envs.base import EnvObservation
from harness import protocol
from harness.server.metrics import ServerMetrics
from policies.base import Policy
from transports import StreamItem, TransportServer

log = logging.getLogger(__name__)
audit_log = logging.getLogger("harness.audit")


@dataclass
class Session:
    session_id: str
    client_id: str
    epoch: int
    policy: Policy
    episode: int = 0
    served: int = 0


class PolicyServer:
    """Hosts one policy for up to `max_sessions` clients over one transport server.

    The transport server is built (not started) by the caller, so a wrapper of it (a fault
    injector, a recorder) composes: `PolicyServer(Faulty(make_server(config)), ...)`.
    """

    def __init__(self, transport: TransportServer, make_policy: Callable[[], Policy], *,
                 max_sessions: int = 4, metrics: ServerMetrics | None = None) -> None:
        self._make_policy = make_policy
        self._warm_policy = make_policy()
        self.spec: protocol.Contract = self._warm_policy.spec
        self.max_sessions = max_sessions
        self.metrics = metrics or ServerMetrics()
        self._transport = transport
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
        self._transport.start(self._answer_request)
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
            request = protocol.decode(payload)
        except protocol.DecodeError as exc:
            self._audit(client_id, None, "decode_error", started, detail=str(exc))
            return self._reply(protocol.Error("decode", str(exc)))
        handlers = {
            protocol.MessageType.SESSION_OPEN: self._open,
            protocol.MessageType.RESET: self._reset,
            protocol.MessageType.STATUS: self._status,
            protocol.MessageType.CLOSE: self._close,
        }
        handler = handlers.get(request.msg_type)
        if handler is None:
            reply, outcome = self._reply(protocol.Error(
                "protocol", f"{request.msg_type.name} is not a request"), request), "rejected"
        else:
            reply, outcome = handler(client_id, request)
        self._audit(client_id, request, outcome, started)
        return reply

    def _reply(self, body: protocol.Body, request: protocol.Message | None = None, *,
               epoch: int | None = None) -> bytes:
        """Encode `body` as the answer to `request`, echoing its ids and client clock; an
        undecodable request has none to echo, so its answer carries zeros."""
        if request is None:
            return protocol.encode(protocol.Message(body, flags=protocol.Flags.RESPONSE))
        return protocol.encode(protocol.Message(
            body, seq=request.seq, episode=request.episode,
            epoch=request.epoch if epoch is None else epoch, client_ns=request.client_ns,
            flags=protocol.Flags.RESPONSE))

    def _open(self, client_id: str, request: protocol.Message) -> tuple[bytes, str]:
        with self._lock:
            active = len(self._sessions)
            if self._draining.is_set():
                reason = "server is draining"
            elif active >= self.max_sessions and client_id not in self._sessions:
                reason = f"max_sessions={self.max_sessions} reached ({active} active)"
            else:
                try:
                    protocol.check_contract(self.spec, request.body.contract)
                    reason = ""
                except protocol.ContractMismatch as exc:
                    reason = f"contract mismatch: {exc}"
            if reason:
                self.metrics.sessions_rejected.inc()
                log.warning("rejected session of %s: %s", client_id, reason)
                return self._reply(protocol.SessionReject(reason, active, self.max_sessions),
                                   request), "rejected"
            epoch = next(self._epochs)
            session = Session(uuid.uuid4().hex[:12], client_id, epoch, self._make_policy())
            self._sessions[client_id] = session  # a re-opening client replaces its session
            self.metrics.sessions.set(len(self._sessions))
        return self._reply(protocol.SessionOk(session.session_id, self.spec), request,
                           epoch=epoch), "ok"

    def _session_for(self, client_id: str, request: protocol.Message) -> Session | None:
        with self._lock:
            session = self._sessions.get(client_id)
        return session if session is not None and session.epoch == request.epoch else None

    def _reset(self, client_id: str, request: protocol.Message) -> tuple[bytes, str]:
        session = self._session_for(client_id, request)
        if session is None:
            return self._reply(protocol.Error(protocol.SESSION_UNKNOWN,
                                              "no open session with this epoch"),
                               request), "rejected"
        session.policy.reset(seed=request.episode)
        session.episode = request.episode
        return self._reply(protocol.Reset(), request), "ok"

    def _status(self, client_id: str, request: protocol.Message) -> tuple[bytes, str]:
        return self._reply(protocol.Status(self.status()), request), "ok"

    def status(self) -> dict[str, int | float | str | bool]:
        with self._lock:
            sessions = len(self._sessions)
        stats = self._transport.stats
        return {"model_id": self.spec.model_id, "sessions": sessions,
                "max_sessions": self.max_sessions, "draining": self._draining.is_set(),
                "received": stats.received, "superseded": stats.superseded,
                "served": int(self.metrics.served_total())}

    def _close(self, client_id: str, request: protocol.Message) -> tuple[bytes, str]:
        with self._lock:
            session = self._sessions.get(client_id)
            if session is not None and session.epoch == request.epoch:
                del self._sessions[client_id]
            self.metrics.sessions.set(len(self._sessions))
        return self._reply(protocol.Close(), request), "ok"

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
            request = protocol.decode(item.payload)
        except protocol.DecodeError as exc:
            self._send(item.client_id, protocol.Error("decode", str(exc)))
            self._audit(item.client_id, None, "decode_error", started, detail=str(exc))
            return
        session = self._session_for(item.client_id, request)
        if request.msg_type is not protocol.MessageType.OBSERVATION or session is None:
            self._send(item.client_id, protocol.Error(
                protocol.SESSION_UNKNOWN, "observation without an open session of this epoch"),
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
            self._send(item.client_id, protocol.Error("inference", repr(exc)), request)
            self._audit(item.client_id, request, "inference_error", started, detail=repr(exc))
            return
        infer_ns = time.monotonic_ns() - started
        session.served += 1
        self.metrics.observe_served(item.client_id, queue_wait_ns, infer_ns)
        self._send(item.client_id, protocol.ActionChunk(np.asarray(chunk, np.float32), request.seq,
                                                    queue_wait_ns, infer_ns, self.spec.model_id),
                   request)
        self._audit(item.client_id, request, "served", started, queue_wait_ns=queue_wait_ns,
                    infer_ns=infer_ns)

    def _send(self, client_id: str, body: protocol.Body, request: protocol.Message | None = None):
        self._transport.send_stream(client_id, self._reply(body, request))

    def _audit(self, client_id: str, request: protocol.Message | None, outcome: str,
               started_ns: int, **extra: object) -> None:
        record = {"client": client_id, "type": request.msg_type.name if request else None,
                  "seq": request.seq if request else None,
                  "episode": request.episode if request else None,
                  "epoch": request.epoch if request else None, "outcome": outcome,
                  "handled_ns": time.monotonic_ns() - started_ns, **extra}
        self.metrics.requests.labels(outcome=outcome).inc()
        audit_log.info(json.dumps(record, sort_keys=True))
