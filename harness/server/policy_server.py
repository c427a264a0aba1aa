"""Policy server: the model as a service, reachable over any transport.

The policy is loaded and warmed once; clients open sessions. Opening a session checks the
client's contract against the policy's (`harness.protocol.check_contract`: action names and
order, observation keys and shapes, image sizes, control rate, chunk size, model id) and
rejects a mismatch with a reason the client can log. Control messages (open, reset, status,
close) are answered on the transport's request path, on its request threads (never on an I/O
thread that also carries other robots' observations and pings); observations arrive on its
latest-only stream, and one inference thread serves the sessions round-robin, so a newer
observation replaces an unserved one instead of queueing behind it. Each observation is
checked against the contract before the policy sees it (keys, dtypes, shapes, finite values).
With `scheduler=MicroBatch(...)` (`server.scheduler=micro_batch`) several robots' observations
are predicted in one pass (`harness.server.scheduler`, `harness.server.stream_path`).
A session whose client sent nothing for `session_idle_timeout_s` expires and frees its slot (see
`harness.server.sessions` for the pool of policy instances sessions share). Every request
leaves one JSON audit line, the server exposes `/healthz` and Prometheus `/metrics`, and
`drain()` (SIGTERM) finishes the inference in progress, refuses new sessions and closes.

Clock rule: the server never sends an instant of its own clock. It echoes the client's stamp
and reports durations (queue wait, inference time) only.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable

from envs.base import EnvObservation
from harness import protocol
from harness.protocol import sealing
from harness.server.audit import AuditWriter, audit_log
from harness.server.memory import fix_mmap_threshold
from harness.server.metrics import ServerMetrics
from harness.server.scheduler import RoundRobin, Scheduler
from harness.server.sessions import SessionTable, short_id
from harness.server.stream_path import StreamPath
from policies.base import Policy
from transports import TransportServer

log = logging.getLogger(__name__)


class PolicyServer(StreamPath):
    """Hosts one policy for up to `max_sessions` clients over one transport server.

    The transport server is built (not started) by the caller, so a wrapper of it (a fault
    injector, a recorder) composes: `PolicyServer(Faulty(make_server(config)), ...)`; inside
    predict, `predict_hook` is that seam (model faults), so this package knows no faults.
    """

    def __init__(self, transport: TransportServer, make_policy: Callable[[], Policy], *,
                 max_sessions: int = 4, metrics: ServerMetrics | None = None,
                 session_idle_timeout_s: float = 10.0, max_client_id_chars: int = 128,
                 predict_hook: Callable[[float], object] | None = None,
                 seal_streams: bool = False, scheduler: Scheduler | None = None) -> None:
        """Build the pool: `make_policy` is called `max_sessions` times, here and never again
        (a session open must not load a model), and every instance must declare one spec.
        With `seal_streams` (security=mtls) every session's stream carries a MAC under its
        own key (`harness.protocol.sealing`), and a session open must name the client its
        transport proved (`_refuse_claimed_open`).

        Raises:
            ValueError: `max_sessions` < 1, or the instances declare different specs.
        """
        if max_sessions < 1:
            raise ValueError(f"max_sessions={max_sessions}: must be >= 1")
        policies = [make_policy() for _ in range(max_sessions)]
        self.spec: protocol.Contract = policies[0].spec
        for index, policy in enumerate(policies[1:], start=1):
            if policy.spec != self.spec:
                raise ValueError(f"make_policy() call {index} declared {policy.spec}, call 0 "
                                 f"{self.spec}: the pool's instances must be interchangeable")
        self.max_sessions = max_sessions
        self._scheduler = scheduler or RoundRobin()
        self.predict_hook = predict_hook
        """Called after each prediction with its monotonic start, inside the session's lock:
        its time counts as inference time, its exception as the prediction's."""
        self.max_client_id_chars = max_client_id_chars
        self.metrics = metrics or ServerMetrics()
        self._transport = transport
        self._seal_streams = seal_streams
        self._stream_keys: dict[str, bytes] = {}
        """client id -> its open session's sealing key (`seal_streams` only)."""
        self.metrics.watch_transport(transport)
        transport.stats.on_refused = self._audit_refusal
        self._sessions = SessionTable(policies, idle_timeout_s=session_idle_timeout_s)
        self._recent_latency_s: collections.deque[float] = collections.deque(
            maxlen=2 * max_sessions)
        """Arrival-to-reply time of the last observations served (inference thread only)."""
        self._draining = threading.Event()
        self._stopped = threading.Event()
        self._inference = threading.Thread(target=self._serve_observations,
                                           name="policy-inference", daemon=True)
        self._audit_writer = AuditWriter()

    # ---- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Warm one policy instance with one prediction, then start serving (a server
        process's memory must come back after large messages: `fix_mmap_threshold`)."""
        fix_mmap_threshold()
        started = time.monotonic()
        if self._sessions.warm(self._blank_observation()):
            log.info("policy %s warmed in %.3f s", self.spec.model_id,
                     time.monotonic() - started)
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
        self._audit_writer.close()  # every line of what was served, before the transport goes
        self._transport.close()

    def healthy(self) -> bool:
        return self._inference.is_alive() and not self._stopped.is_set()

    def _blank_observation(self) -> EnvObservation:
        state, images = self.spec.zero_arrays()
        return EnvObservation(state, images, "")

    # ---- control path -----------------------------------------------------------------------

    def _answer_request(self, client_id: str, payload: bytes) -> bytes:
        started = time.monotonic_ns()
        try:
            request = protocol.decode(payload)
        except protocol.UnsupportedVersion as exc:
            self._audit(client_id, None, "decode_error", started, detail=str(exc))
            if exc.msg_type != protocol.MessageType.SESSION_OPEN:
                return self._reply(protocol.Error("decode", str(exc)))
            # Answered in this server's version: a client of another one cannot decode it,
            # but it fails on the version too, and this log names both.
            reason = (f"{protocol.REJECT_VERSION}: the client speaks {exc.version}, this "
                      f"server {protocol.SCHEMA_VERSION}")
            self.metrics.sessions_rejected.inc()
            log.warning("rejected session of %s: %s", short_id(client_id), reason)
            return self._reply(protocol.SessionReject(reason, len(self._sessions),
                                                      self.max_sessions))
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
                protocol.ERROR_PROTOCOL, f"{request.msg_type.name} is not a request"),
                request), "rejected"
        else:
            reply, outcome = handler(client_id, request)
        self._audit(client_id, request, outcome, started)
        return reply

    def _reply(self, body: protocol.Body, request: protocol.Message | None = None, *,
               epoch: int | None = None,
               flags: protocol.Flags = protocol.Flags.RESPONSE) -> bytes:
        """Encode `body` as the answer to `request`, echoing its ids and client clock; an
        undecodable request has none to echo, so its answer carries zeros."""
        if request is None:
            return protocol.encode(protocol.Message(body, flags=protocol.Flags.RESPONSE))
        return protocol.encode(protocol.Message(
            body, seq=request.seq, episode=request.episode,
            epoch=request.epoch if epoch is None else epoch, client_ns=request.client_ns,
            flags=flags))

    def _open(self, client_id: str, request: protocol.Message) -> tuple[bytes, str]:
        longest = max(len(client_id), len(request.body.client_id))
        reason = ""
        if longest > self.max_client_id_chars:
            reason = (f"{protocol.REJECT_CLIENT_ID} of {longest} chars exceeds "
                      f"max_client_id_chars={self.max_client_id_chars}")
        elif self._seal_streams and request.body.client_id != client_id:
            return self._refuse_claimed_open(client_id, request)
        elif self._draining.is_set():
            reason = "server is draining"
        elif not self._inference.is_alive() and self._inference.ident is not None:
            reason = "server unhealthy: its inference thread stopped"
        else:
            try:
                protocol.check_contract(self.spec, request.body.contract)
            except protocol.ContractMismatch as exc:
                reason = f"{protocol.REJECT_CONTRACT}: {exc}"
        session = None if reason else self._sessions.open(client_id)
        if session is None and not reason:
            reason = f"max_sessions={self.max_sessions} reached ({len(self._sessions)} active)"
        if reason:
            self.metrics.sessions_rejected.inc()
            log.warning("rejected session of %s: %s", short_id(client_id), reason)
            return self._reply(protocol.SessionReject(reason, len(self._sessions),
                                                      self.max_sessions), request), "rejected"
        self.metrics.sessions.set(len(self._sessions))
        flags = protocol.Flags.RESPONSE
        if self._seal_streams:
            self._stream_keys[client_id] = sealing.stream_key(session.session_id)
            flags |= protocol.Flags.SEALED
        return self._reply(protocol.SessionOk(session.session_id, self.spec), request,
                           epoch=session.epoch, flags=flags), "ok"

    def _reset(self, client_id: str, request: protocol.Message) -> tuple[bytes, str]:
        """Reset the session's policy for `request.episode`, unless the session has already
        moved past it (a late RESET: acknowledged, nothing moves back). Waits for a predict
        in progress on the same policy."""
        session = self._sessions.get(client_id, request.epoch)
        if session is None:
            return self._unknown_session(request), "rejected"
        with session.lock:
            if session.closed:  # closed or expired since it was looked up
                return self._unknown_session(request), "rejected"
            if request.episode < session.episode:
                return self._reply(protocol.Reset(
                    f"late: the session is at episode {session.episode}"), request), "late_reset"
            session.policy.reset(seed=request.episode)
            session.episode = request.episode
        return self._reply(protocol.Reset(), request), "ok"

    def _unknown_session(self, request: protocol.Message) -> bytes:
        return self._reply(protocol.Error(protocol.SESSION_UNKNOWN,
                                          "no open session with this epoch"), request)

    def _status(self, client_id: str, request: protocol.Message) -> tuple[bytes, str]:
        self._sessions.get(client_id, request.epoch)  # a status request keeps a session alive
        return self._reply(protocol.Status(self.status()), request), "ok"

    def status(self) -> dict[str, int | float | str | bool]:
        stats = self._transport.stats
        return {"model_id": self.spec.model_id, "sessions": len(self._sessions),
                "max_sessions": self.max_sessions, "draining": self._draining.is_set(),
                "received": stats.received, "superseded": stats.superseded,
                "served": int(self.metrics.served_total()),
                "expired": int(self.metrics.total(self.metrics.sessions_expired)),
                "observations_rejected": int(self.metrics.total(
                    self.metrics.observations_rejected)),
                "identity_refused": stats.identity_refused}

    def _close(self, client_id: str, request: protocol.Message) -> tuple[bytes, str]:
        if self._sessions.close(client_id, request.epoch) is not None:
            self._stream_keys.pop(client_id, None)
            self.metrics.forget_client(client_id)
            self._transport.forget(client_id)
        self.metrics.sessions.set(len(self._sessions))
        return self._reply(protocol.Close(), request), "ok"

    # ---- stream path ------------------------------------------------------------------------

    def _serve_observations(self) -> None:
        try:
            while not self._stopped.is_set():
                items = self._scheduler.collect(self._transport.take_stream, 0.1)
                if items:
                    self._serve_batch_safely(items)
                self._expire_idle_sessions()
        except BaseException as exc:
            self._inference_stopped(exc)
            raise

    def _inference_stopped(self, exc: BaseException) -> None:
        """The inference thread is ending on something no request handling caught: the
        server is unhealthy from now on (`/healthz` 503, session opens refused), and every
        robot with a session is told, with an error it counts, instead of waiting for chunks
        that will never come."""
        detail = protocol.bounded(f"inference stopped ({type(exc).__name__}: {exc}): this "
                                  "server serves no more chunks")
        log.critical("%s", detail)
        for client_id in self._sessions.client_ids():
            with contextlib.suppress(Exception):
                self._send(client_id, protocol.Error(protocol.ERROR_INTERNAL, detail))

    def _expire_idle_sessions(self) -> None:
        """On the inference thread (it wakes at least every 0.1 s), never on the transport's.

        A session is heard from when its observation is taken, not when it arrives, and with
        a slow model an observation waits behind the other sessions' predictions; so the
        timeout is extended by the longest recent arrival-to-reply time, and a client that
        keeps sending never looks silent however busy the server is."""
        expired = self._sessions.expire(grace_s=max(self._recent_latency_s, default=0.0),
                                        arrived_s=self._arrived_s)
        for session in expired:
            self._stream_keys.pop(session.client_id, None)
            self.metrics.sessions_expired.inc()
            self.metrics.forget_client(session.client_id)
            self._transport.forget(session.client_id)
            log.info("session %s of %s expired: nothing heard for >= %.1f s",
                     session.session_id[:8],
                     short_id(session.client_id), self._sessions.idle_timeout_s)
        if expired:
            self.metrics.sessions.set(len(self._sessions))

    def _arrived_s(self, client_id: str) -> float | None:
        """When the transport last received a stream message of `client_id`, in seconds of
        `time.monotonic` (the session table's clock)."""
        arrived_ns = self._transport.last_arrival_ns(client_id)
        return None if arrived_ns is None else arrived_ns / 1e9

    def _send(self, client_id: str, body: protocol.Body, request: protocol.Message | None = None):
        if isinstance(body, protocol.Error):  # a detail may quote what the robot sent
            body = protocol.Error(body.code, protocol.bounded(body.detail))
        payload = self._reply(body, request)
        key = self._stream_keys.get(client_id)
        self._transport.send_stream(client_id, payload if key is None
                                    else sealing.seal(payload, key))
        if isinstance(body, protocol.Error):
            self.metrics.error_replies_sent.labels(code=body.code).inc()

    def _refuse_claimed_open(self, client_id: str, request: protocol.Message
                             ) -> tuple[bytes, str]:
        """security=mtls: the transport proved who sent this open; one that names another
        robot (a replayed or forged open) is refused for good and counted with the other
        identity refusals, whatever session it named going on untouched."""
        self._transport.stats.identity_refused += 1  # audited by the caller, as its outcome
        self.metrics.sessions_rejected.inc()
        reason = (f"{protocol.REJECT_CLIENT_ID}: the session open names "
                  f"{short_id(request.body.client_id)!r}, its connection proved "
                  f"{short_id(client_id)!r}")
        log.warning("refused a session open of %s: %s", short_id(client_id), reason)
        return self._reply(protocol.SessionReject(reason, len(self._sessions),
                                                  self.max_sessions), request), \
            "identity_refused"

    def _audit_refusal(self, outcome: str, client_id: str, **detail: str | None) -> None:
        """A refusal the transport made before any message reached this server (a claimed
        id its connection did not authenticate, a refused handshake): audited like the
        refusals made here, the authenticated identity shortened like a client id."""
        if detail.get("identity"):
            detail["identity"] = short_id(detail["identity"])
        self._audit(client_id, None, outcome, time.monotonic_ns(), **detail)

    def _audit(self, client_id: str, request: protocol.Message | None, outcome: str,
               started_ns: int, **extra: object) -> None:
        if "detail" in extra:
            extra["detail"] = protocol.bounded(str(extra["detail"]))
        record = {"client": short_id(client_id), "type": request.msg_type.name if request else None,
                  "seq": request.seq if request else None,
                  "episode": request.episode if request else None,
                  "epoch": request.epoch if request else None, "outcome": outcome,
                  "handled_ns": time.monotonic_ns() - started_ns, **extra}
        self.metrics.requests.labels(outcome=outcome).inc()
        if threading.current_thread() is self._inference:
            self._audit_writer.write(record)  # off the inference thread: `harness.server.audit`
        else:
            audit_log.info(json.dumps(record, sort_keys=True))
