"""The policy server's stream path: observations the scheduler took together are decoded and
checked one by one (a robot's bad message is answered and leaves the batch), predicted in one
pass under every robot's session lock, and each robot answered with its own chunk or error.

A mixin of `PolicyServer` (`harness.server.policy_server`), which owns the state it reads:
the session table, the metrics, the transport (`_send`), the audit log (`_audit`), the spec
and the model-fault hook. Kept apart so that each file reads in one sitting.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import NamedTuple

import numpy as np

from envs.base import EnvObservation
from harness import protocol
from harness.protocol.checks import check_observation
from harness.server.scheduler import predict_together
from harness.server.sessions import Session, short_id
from policies.base import BatchItem
from transports import StreamItem

log = logging.getLogger("harness.server.policy_server")

class Refusal(NamedTuple):
    """Why an observation does not reach the policy: the reply to send (None: drop it
    silently), the audit outcome, and extra audit fields."""

    reply: protocol.Error | None
    outcome: str
    extra: dict[str, object]


class Admitted(NamedTuple):
    """An observation decoded, of an open session, on its way to the policy."""

    item: StreamItem
    request: protocol.Message
    session: Session
    plans_from_prefix: bool


class StreamPath:
    """Serving a batch of observations (see the module's docstring)."""

    def _serve_batch_safely(self, items: list[StreamItem]) -> None:
        """`_serve_batch`, and if anything escapes it (a bug, a value no check foresaw), each
        robot of the batch not yet answered gets an error, counted and audited: the inference
        thread serves every other robot, so no single message may end it."""
        started = time.monotonic_ns()
        answered: set[str] = set()
        try:
            self._serve_batch(items, answered)
        except Exception as exc:  # noqa: BLE001 - the thread outlives any one request
            detail = protocol.bounded(f"{type(exc).__name__}: {exc}")
            unanswered = [item for item in items if item.client_id not in answered]
            log.exception("serving the messages of %s failed: %s",
                          ", ".join(short_id(item.client_id) for item in unanswered), detail)
            for item in unanswered:
                with contextlib.suppress(Exception):  # the reply itself may be what failed
                    self._send(item.client_id, protocol.Error(protocol.ERROR_INTERNAL, detail))
                with contextlib.suppress(Exception):
                    self._audit(item.client_id, None, "internal_error", started, detail=detail)

    def _serve_batch(self, items: list[StreamItem], answered: set[str]) -> None:
        """Serve the observations the scheduler took together: each is decoded and checked on
        its own (a robot's bad message is answered and leaves the batch), every admitted
        robot's session lock is held while the batch is predicted in one pass
        (`_predict_admitted`), and each robot gets its chunk or its own error. Every robot's
        figures are its own: its queue wait from its arrival, the batch's inference time
        (what it waited for) and the batch's size, in its audit line."""
        started = time.monotonic_ns()
        admitted = [entry for entry in (self._admit(item, started, answered) for item in items)
                    if entry is not None]
        refused: list[tuple[Admitted, Refusal]] = []
        with contextlib.ExitStack() as locks:
            ready = []
            for entry in admitted:
                locks.enter_context(entry.session.lock)
                refusal = self._refusal(entry.session, entry.request)
                if refusal is None:
                    ready.append(entry)
                else:
                    refused.append((entry, refusal))
            results = self._predict_admitted(ready) if ready else []
        infer_ns = time.monotonic_ns() - started
        for entry, refusal in refused:
            self._refuse(entry.item.client_id, entry.request, refusal, started, answered)
        for entry, result in zip(ready, results, strict=True):
            self._answer(entry, result, started, infer_ns, len(ready), answered)

    def _admit(self, item: StreamItem, started: int, answered: set[str]) -> Admitted | None:
        """The observation decoded and its session found, or None: then it was answered."""
        client_id = item.client_id
        try:
            request = protocol.decode(item.payload)
        except protocol.DecodeError as exc:
            self._refuse(client_id, None, Refusal(protocol.Error("decode", str(exc)),
                                                  "decode_error", {"detail": str(exc)}),
                         started, answered)
            return None
        if request.msg_type is not protocol.MessageType.OBSERVATION:
            self._refuse(client_id, request, Refusal(protocol.Error(
                protocol.ERROR_PROTOCOL, f"{request.msg_type.name} on the stream path, which "
                "carries observations only (control messages go on the request path)"),
                "rejected", {}), started, answered)
            return None
        session = self._sessions.get(client_id, request.epoch)
        if session is None:
            self._refuse(client_id, request, self._no_session(), started, answered)
            return None
        return Admitted(item, request, session, self._plans_from_prefix(request.body))

    def _refuse(self, client_id: str, request: protocol.Message | None, refusal: Refusal,
                started: int, answered: set[str]) -> None:
        """Answer one robot's observation that does not reach the policy (no reply for a
        silent refusal), mark it answered, audit it."""
        if refusal.reply is not None:
            self._send(client_id, refusal.reply, request)
        answered.add(client_id)
        self._audit(client_id, request, refusal.outcome, started, **refusal.extra)

    def _predict_admitted(self, ready: list[Admitted]) -> list[np.ndarray | Exception]:
        """Every admitted robot's chunk, or its exception; under the robots' session locks.
        A batch of one, or a policy without `predict_batch`, is predicted robot by robot;
        a batched pass that raises is retried robot by robot, so only a robot whose own
        predict raises fails. The model-fault hook runs once per pass: its delay is every
        robot's, its exception every robot's of that pass."""
        predict_started = time.monotonic()
        results: list[np.ndarray | Exception | None] = [None] * len(ready)
        requests, rows = [], []
        for row, entry in enumerate(ready):
            body = entry.request.body
            try:
                self._adopt_episode(entry.session, entry.request.episode)
            except Exception as exc:  # noqa: BLE001 - its policy's reset failed: its own error
                results[row] = exc
                continue
            rows.append(row)
            requests.append(BatchItem(entry.session.policy, EnvObservation(
                dict(body.state), dict(body.images), body.instruction),
                body.committed if entry.plans_from_prefix else None))
        predicted = predict_together(requests) if requests else []
        for row, result in zip(rows, predicted, strict=True):
            results[row] = result
        if self.predict_hook is not None:
            try:
                self.predict_hook(predict_started)
            except Exception as exc:  # noqa: BLE001 - a model fault fails the whole pass
                results = [exc] * len(ready)
        return results

    def _answer(self, entry: Admitted, result: np.ndarray | Exception, started: int,
                infer_ns: int, batch_size: int, answered: set[str]) -> None:
        """Send one robot its chunk (or its prediction's error), count and audit it."""
        client_id, request = entry.item.client_id, entry.request
        if isinstance(result, Exception):
            log.error("policy failed for %s", short_id(client_id), exc_info=result)
            self._send(client_id, protocol.Error("inference", repr(result)), request)
            answered.add(client_id)
            self._audit(client_id, request, "inference_error", started, detail=repr(result),
                        batch_size=batch_size)
            return
        queue_wait_ns = started - entry.item.received_ns
        self._recent_latency_s.append((queue_wait_ns + infer_ns) / 1e9)
        entry.session.served += 1
        self.metrics.observe_served(client_id, queue_wait_ns, infer_ns, batch_size)
        body = request.body
        start_tick = body.tick + (body.delay_ticks if entry.plans_from_prefix else 0)
        self._send(client_id, protocol.ActionChunk(np.asarray(result, np.float32), request.seq,
                                                   queue_wait_ns, infer_ns, self.spec.model_id,
                                                   start_tick, batch_size), request)
        answered.add(client_id)
        self._audit(client_id, request, "served", started, queue_wait_ns=queue_wait_ns,
                    infer_ns=infer_ns, batch_size=batch_size)

    def _plans_from_prefix(self, observation: protocol.Observation) -> bool:
        """A delay-aware policy given a delay plans past the prefix: its chunk starts at
        `tick + delay_ticks`. Any other chunk starts at the observation's tick."""
        return self.spec.delay_aware and observation.delay_ticks > 0

    @staticmethod
    def _no_session() -> Refusal:
        return Refusal(protocol.Error(protocol.SESSION_UNKNOWN,
                                      "observation without an open session of this epoch"),
                       "rejected", {})

    def _refusal(self, session: Session, request: protocol.Message) -> Refusal | None:
        """Why this observation must not reach the policy, or None. Under `session.lock`."""
        if session.closed:  # closed or expired since it was looked up
            return self._no_session()
        if request.episode < session.episode:
            self.metrics.stale_dropped.inc()
            return Refusal(None, "stale_episode", {})
        problem = check_observation(self.spec, request.body)
        if problem is not None:
            reason, detail = problem
            self.metrics.observations_rejected.labels(reason=reason).inc()
            return Refusal(protocol.Error(protocol.ERROR_CONTRACT, detail),
                           "rejected_observation", {"reason": reason, "detail": detail})
        return None

    def _adopt_episode(self, session: Session, episode: int) -> None:
        """An observation of a newer episode than the session's means its RESET was lost or is
        late: reset the policy as that RESET would have, so the episode is not lost. Under
        `session.lock`."""
        if episode <= session.episode:
            return
        log.info("session %s of %s: observation of episode %d, the session was at %d; "
                 "resetting without a RESET", session.session_id[:8], short_id(session.client_id),
                 episode, session.episode)
        session.policy.reset(seed=episode)
        session.episode = episode
        self.metrics.implicit_resets.inc()

