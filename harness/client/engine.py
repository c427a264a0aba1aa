"""Client engine: the robot side of remote inference, with its fail-safe states.

Called once per control tick with the newest observation, it returns the action to execute
at once and does not wait on the network: observations go out on the latest-only stream,
chunks are collected without blocking, and re-opening the session after a server restart runs
on a thread of its own while the ticks go on with the fallback action. Only episode
boundaries (`reset`, `close`) wait for the server. It sends the observation when its queue of
future actions runs low, merges each arriving chunk after trimming the actions its latency
made stale (`client.mode=asynchronous`, the default). In `client.mode=synchronous` it asks
only when the queue is empty, holds still while it waits (`ActionSource.WAIT`, still
STREAMING) and executes the chunk from its first action: the robot did not move, so nothing
in it is stale. In `client.mode=delay_aware` it streams ahead as in asynchronous mode but tells
the policy what the robot will do while it waits: each observation carries the expected delay
d and the committed prefix (the next d actions, queued or holding still), a delay-aware policy
plans from where they lead, and its chunk is merged at the tick it names (t + d), so only a
reply later than expected loses actions. In every mode, when chunks stop coming it degrades in
steps:

    CONNECTING -> STREAMING -> DEGRADED (requests failing, queue still holds actions)
                            -> STALLED (queue empty or actions too old: fallback action)
                            -> RECONNECTING (server gone, or it answered that our session
                                             is unknown: re-open the session)
                            -> DEAD (offline past max_offline_s, or the server's contract
                                     changed: safe stop, fallback for good)

Time inside the engine is *control time* (tick x dt), given by the runner's clock, so the
same rules hold under the virtual clock and in real time. Latency is measured with this
process's monotonic clock only (the server's instants never cross the wire).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass

import numpy as np

from envs.base import EnvSpec
from harness import protocol
from harness.client.action_queue import ActionQueue
from harness.client.commitment import (
    Commitment,
    DelayEstimate,
    committed_prefix,
    hold_action,
    ticks_for,
)
from harness.client.config import ClientMode, EngineConfig, Fallback, OutOfBounds
from harness.client.session import RejectBackoff, Reopen, session_unknown
from harness.client.states import ActionSource, ClientState, EngineStats, TickResult
from harness.client.latency import LatencyModel
from transports import TransportClient, TransportError

log = logging.getLogger(__name__)


@dataclass
class _InFlight:
    seq: int
    tick: int
    sent_ns: int
    key: tuple[int, int]
    """(episode, index of the request in the episode): what latency models draw by."""
    delay_ticks: int = 0
    """The delay the observation announced (delay_aware): its chunk may start at `tick` or
    at `tick + delay_ticks`, nowhere else."""


class ClientEngine:
    def __init__(self, transport: TransportClient, contract: protocol.Contract,
                 config: EngineConfig, *, dt: float, gripper_index: int | None = None,
                 latency: LatencyModel | None = None,
                 action_bounds: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        self.transport = transport
        transport.order_stream_by(protocol.header_seq)  # a late older chunk never wins
        self.contract = contract
        """What this client declares at session open: the robot's side, with the chunk size
        it expects and, if not "", the model it insists on."""
        self.config = config
        self.dt = dt
        self.queue = ActionQueue(config.ensembling, max_age_ticks=math.floor(
            config.max_action_age_s / dt + 1e-9))
        self.state = ClientState.CONNECTING
        self.stats = EngineStats()
        self.dead_reason = ""
        self.epoch = 0
        self.episode = 0
        self.model_id = ""
        self._gripper_index = gripper_index
        self.latency = latency or LatencyModel()
        self._bounds = action_bounds
        """(low, high) per action entry, or None: the env clips what it is given."""
        self._seq = 0
        self._in_flight: _InFlight | None = None
        # Replies that arrived (wall time) but whose control tick may not have come yet:
        # (usable tick, observation tick, reply, latency_s the clock uses, measured_s).
        self._arrived: list[tuple[int, int, protocol.Message, float, float]] = []
        self._last_action = np.zeros(contract.action_dim, np.float32)
        self._merged_server_s: tuple[float | None, float | None] = (None, None)
        """(mailbox wait, inference) the server reported for the last chunk merged."""
        self._held = False
        """Synchronous mode: every tick since the pending request's observation was a WAIT
        tick, so its chunk starts when it is merged. False once a tick fell back (the
        fallback may move the robot: repeat_last): that chunk is trimmed as in asynchronous
        mode."""
        self._last_chunk_tick: int | None = None
        self._last_contact_tick: int | None = None
        self._last_loss_tick: int | None = None
        self._server_contract: protocol.Contract | None = None
        self._reopen: Reopen | None = None
        self._rejects = RejectBackoff(config.reject_retry_s)
        self._dead_for_good = False
        """DEAD because the contract changed or was refused: no later episode can fix that.
        Any other DEAD (offline too long) ends only its episode."""
        self._delay = DelayEstimate(config.delay_window)
        """From the round trips the clock used, across episodes (delay_aware)."""
        self._commitment: Commitment | None = None
        self.execution = str(config.mode)
        """How chunks are executed: the mode, unless delay_aware met a model that is not
        (then asynchronous, and this says why). Reported per episode in `stats.execution`."""

    # ---- session ----------------------------------------------------------------------------

    def _control(self, body: protocol.Body, *, epoch: int | None = None) -> protocol.Message:
        payload = protocol.encode(protocol.Message(
            body, seq=self._seq, episode=self.episode,
            epoch=self.epoch if epoch is None else epoch, client_ns=time.monotonic_ns()))
        return protocol.decode(self.transport.request(payload,
                                                  timeout_s=self.config.control_timeout_s))

    def _request_open(self) -> protocol.Message:
        return self._control(protocol.SessionOpen(self.transport.client_id, self.contract))

    def open_session(self) -> bool:
        """Open (or re-open) the session, waiting out retryable rejects (draining,
        `max_sessions`) for up to `reject_retry_s`; True if the server accepted it. A fatal
        reject, or a server whose contract differs from the first one's, makes the engine
        DEAD for good; rejects past the retry budget make it DEAD for this episode."""
        while True:
            try:
                reply = self._request_open()
            except protocol.UnsupportedVersion as exc:
                self._die(f"{protocol.REJECT_VERSION}: the server speaks {exc.version}, this "
                          f"client {protocol.SCHEMA_VERSION}", for_good=True)
                return False
            except (TransportError, protocol.WireError) as exc:
                log.info("session open failed: %s", exc)
                return False
            if self._accept_open(reply):
                return True
            if self.state is ClientState.DEAD:
                return False
            self._rejects.wait()

    def _accept_open(self, reply: protocol.Message) -> bool:
        """Apply the answer to a session open. A retryable reject only schedules the next
        try (see `RejectBackoff`); False unless the session is open."""
        if reply.msg_type is protocol.MessageType.SESSION_REJECT:
            reason = reply.body.reason
            if not protocol.retryable_reject(reason):
                self._die(f"session rejected: {reason}", for_good=True)
            elif self._rejects.record():
                log.warning("session rejected (%s): retrying", reason)
            else:
                self._die(f"session rejected for {self._rejects.rejecting_for_s:.1f} s "
                          f"(reject_retry_s={self.config.reject_retry_s}): {reason}")
            return False
        if reply.msg_type is not protocol.MessageType.SESSION_OK:
            self._die(f"unexpected reply to session open: {reply.msg_type.name}")
            return False
        if self._server_contract is not None and reply.body.contract != self._server_contract:
            self._die("contract changed: the server now hosts "
                      f"{reply.body.contract.model_id!r} with a different spec", for_good=True)
            return False
        self._rejects.clear()
        self._server_contract = reply.body.contract
        self.model_id = reply.body.contract.model_id
        self.epoch = reply.epoch
        self._forget_pending()
        self.execution = str(self.config.mode)
        if self.config.mode is ClientMode.delay_aware and not reply.body.contract.delay_aware:
            self.execution = (f"{ClientMode.asynchronous} (delay_aware asked; model "
                              f"{self.model_id!r} is not delay-aware)")
            log.warning("model %r is not delay-aware: executing asynchronously", self.model_id)
        return True

    def _forget_pending(self) -> None:
        """Drop every queued action, request in flight, arrived reply and commitment."""
        self.queue.clear()
        self._in_flight = None
        self._arrived.clear()
        self._commitment = None

    @property
    def _plans_delay(self) -> bool:
        """delay_aware execution against a delay-aware model."""
        return (self.config.mode is ClientMode.delay_aware and self._server_contract is not None
                and self._server_contract.delay_aware)

    def reset(self, episode: int) -> None:
        """Start an episode: tell the server, forget every queued action. Unlike a tick, this
        waits for the server (a re-open still running is finished first); how long is
        `stats.reset_wait_s`."""
        started = time.monotonic()
        self.stats = EngineStats()
        try:
            self._start_episode(episode)
        finally:
            self.stats.reset_wait_s = time.monotonic() - started

    def _start_episode(self, episode: int) -> None:
        self._finish_reopen()
        self.episode = episode
        self._forget_pending()
        self._last_chunk_tick = self._last_contact_tick = self._last_loss_tick = None
        if self.state is ClientState.DEAD:
            if self._dead_for_good:
                return
            log.info("episode %d: the last one ended DEAD (%s); reconnecting", episode,
                     self.dead_reason)
            self.state, self.dead_reason = ClientState.CONNECTING, ""
        if self.state is ClientState.CONNECTING and not self.open_session():
            return  # the ticks go on trying (CONNECTING), bounded by max_offline_s
        try:
            if session_unknown(self._control(protocol.Reset())):
                # The server restarted between episodes without us seeing it gone.
                log.warning("server forgot the session: re-opening it")
                if self.open_session():
                    self.stats.reopened += 1
                    self._control(protocol.Reset())
        except (TransportError, protocol.WireError) as exc:
            log.warning("reset not acknowledged: %s", exc)
            self.stats.errors.append(f"reset: {exc}")
        if self.state is not ClientState.DEAD:
            self.state = ClientState.STREAMING
        self.stats.execution = self.execution

    def close(self) -> None:
        self._finish_reopen()
        if self.state is not ClientState.DEAD and self.epoch:
            try:
                self._control(protocol.Close())
            except (TransportError, protocol.WireError):
                pass

    def _die(self, reason: str, *, for_good: bool = False) -> None:
        self.state = ClientState.DEAD
        self.dead_reason = reason
        self._dead_for_good = self._dead_for_good or for_good
        log.error("client engine DEAD%s: %s", " for good" if for_good else "", reason)

    # ---- the control tick -------------------------------------------------------------------

    def poll(self, tick: int) -> None:
        """Collect arrived replies (never blocks). The runner calls this while it waits."""
        while (taken := self.transport.take_stream_timed(0.0)) is not None:
            payload, received_ns = taken  # arrival time, not when this tick got to it
            try:
                reply = protocol.decode(payload)
            except protocol.DecodeError as exc:
                self.stats.errors.append(f"decode: {exc}")
                continue
            if reply.msg_type is protocol.MessageType.ERROR:
                self.stats.errors.append(f"{reply.body.code}: {reply.body.detail}")
                if (session_unknown(reply) and reply.epoch == self.epoch
                        and self.state is not ClientState.DEAD):
                    # The server restarted (or dropped us) faster than presence showed it.
                    self._in_flight = self._commitment = None
                    self.state = ClientState.RECONNECTING
                continue
            flight = self._in_flight
            if (reply.msg_type is not protocol.MessageType.ACTION_CHUNK or flight is None
                    or reply.seq != flight.seq or reply.epoch != self.epoch
                    or reply.episode != self.episode):
                continue  # late, foreign or from another episode: never executed
            reply = self._checked_chunk(reply, tick, flight)
            if reply is None:  # answered, but with nothing the robot may execute
                self._in_flight = self._commitment = None
                continue
            measured_s = (received_ns - flight.sent_ns) / 1e9
            latency_s = self.latency.latency_for(flight.key, measured_s, sent_tick=flight.tick)
            if math.isinf(latency_s):
                continue  # lost on the modelled link: it expires as lost, like a real loss
            usable = flight.tick + ticks_for(latency_s, self.dt)
            self._delay.record(latency_s)
            self._arrived.append((usable, flight.tick, reply, latency_s, measured_s))
            self._in_flight = None
            self.stats.chunks += 1

    def _checked_chunk(self, reply: protocol.Message, tick: int,
                       flight: _InFlight) -> protocol.Message | None:
        """The chunk as the robot may execute it, or None (counted, an error) if it must not:
        wrong shape, a non-finite value, a start other than its observation's tick or the end
        of the prefix it was sent, or out of bounds under out_of_bounds=reject."""
        actions = reply.body.actions
        chunk_size = (self._server_contract.chunk_size if self._server_contract
                      else self.contract.chunk_size)
        expected = (chunk_size or actions.shape[0], self.contract.action_dim)
        starts = {flight.tick, flight.tick + flight.delay_ticks}
        problem = ""
        if actions.shape != expected:
            problem = f"shape {list(actions.shape)}, expected {list(expected)}"
        elif reply.body.start_tick not in starts:
            problem = (f"start_tick {reply.body.start_tick}, expected one of {sorted(starts)} "
                       f"(observation tick {flight.tick}, delay {flight.delay_ticks})")
        elif not np.isfinite(actions).all():
            problem = "non-finite actions"
        elif self._bounds is not None:
            low, high = self._bounds
            if ((actions < low) | (actions > high)).any():
                if self.config.out_of_bounds is OutOfBounds.reject:
                    problem = "actions outside the env's bounds"
                else:
                    self.stats.clipped += 1
                    clipped = dataclasses.replace(reply.body, actions=np.clip(actions, low, high))
                    return dataclasses.replace(reply, body=clipped)
        if not problem:
            return reply
        self.stats.rejected += 1
        self.stats.errors.append(f"chunk {reply.seq} dropped: {problem}")
        self._last_loss_tick = tick
        return None

    def reply_pending_until(self) -> tuple[tuple[int, int], int, int] | None:
        """(latency key, sent tick, sent ns) of the request still in flight, for the
        virtual clock."""
        flight = self._in_flight
        return None if flight is None else (flight.key, flight.tick, flight.sent_ns)

    def tick(self, tick: int, observation: protocol.Observation) -> TickResult:
        """Choose the action for `tick` and maybe send `observation`. Never blocks."""
        self.poll(tick)
        latency_s, measured_s = self._merge_usable(tick)
        self._expire_in_flight(tick)
        self._update_state(tick)
        sent = self._maybe_send(tick, observation) if self.state is not ClientState.DEAD else None
        result = self._choose(tick, latency_s, measured_s)
        result.committed = sent
        if latency_s is not None:  # the merged chunk's share of its round trip on the server
            result.server_queue_s, result.server_infer_s = self._merged_server_s
        return result

    def _choose(self, tick: int, latency_s: float | None,
                measured_s: float | None) -> TickResult:
        queued = self.queue.pop(tick) if self.state is not ClientState.DEAD else None
        max_age = math.floor(self.config.max_action_age_s / self.dt + 1e-9)
        if queued is not None and tick - queued.obs_tick <= max_age:
            fresh = latency_s is not None
            self._last_action = queued.action
            return TickResult(queued.action, ActionSource.FRESH if fresh else ActionSource.QUEUED,
                              self.state, tick - queued.obs_tick, queued.seq, queued.episode,
                              queued.epoch, queued.model_id, latency_s, measured_s,
                              queued.observed_tick)
        committed = self._committed_row(tick)
        if committed is not None:  # the prefix promised to hold still here: it does
            return TickResult(committed, ActionSource.WAIT, self.state, None,
                              latency_s=latency_s, measured_latency_s=measured_s)
        if self._waiting():  # nothing executable queued (none, or a tail past max age)
            return TickResult(self._hold(), ActionSource.WAIT, self.state, None,
                              latency_s=latency_s, measured_latency_s=measured_s)
        self._held = False
        if self.state in (ClientState.STREAMING, ClientState.DEGRADED):
            self.state = ClientState.STALLED
        return TickResult(self._fallback(), ActionSource.FALLBACK, self.state, None,
                          latency_s=latency_s, measured_latency_s=measured_s)

    def _merge_usable(self, tick: int) -> tuple[float | None, float | None]:
        """Merge the chunks usable by `tick`; (latency the clock used, measured round trip)
        of the last one merged, or Nones."""
        latency_s = measured_s = None
        ready = [item for item in self._arrived if item[0] <= tick]
        self._arrived = [item for item in self._arrived if item[0] > tick]
        for _, obs_tick, reply, latency, measured in ready:
            chunk = reply.body
            if chunk.model_id != self.model_id:
                self._die(f"contract changed: chunk from model {chunk.model_id!r}, session "
                          f"opened with {self.model_id!r}", for_good=True)
                return None, None
            trimmed = self.queue.trimmed
            self.queue.merge(chunk.actions, obs_tick=obs_tick, now_tick=tick, seq=reply.seq,
                             episode=reply.episode, epoch=reply.epoch, model_id=chunk.model_id,
                             resumed=self._held, start_tick=chunk.start_tick)
            self.stats.trimmed += self.queue.trimmed - trimmed
            self._last_chunk_tick = self._last_contact_tick = tick
            latency_s, measured_s = latency, measured
            self._merged_server_s = (chunk.queue_wait_ns / 1e9, chunk.infer_ns / 1e9)
        return latency_s, measured_s

    def _expire_in_flight(self, tick: int) -> None:
        flight = self._in_flight
        if flight is not None and (tick - flight.tick) * self.dt >= self.config.request_timeout_s:
            self._in_flight = None
            self._commitment = None
            self._last_loss_tick = tick
            self.stats.lost += 1

    def _committed_row(self, tick: int) -> np.ndarray | None:
        """The committed action for `tick` when the queue has none to execute (a prefix
        padded with holding still), while its request is pending and not DEAD."""
        commitment = self._commitment
        if commitment is None or self.state is ClientState.DEAD:
            return None
        if tick >= commitment.end:
            self._commitment = None
            return None
        return commitment.row(tick)

    def _waiting(self) -> bool:
        """Synchronous mode: the healthy wait for the chunk just asked for (STREAMING, a
        request in flight or its reply not yet usable, no loss since the last chunk). After
        a loss, a re-open or a rejected chunk the ticks fall back as in asynchronous mode."""
        if (self.config.mode is not ClientMode.synchronous
                or self.state is not ClientState.STREAMING):
            return False
        if self._in_flight is None and not self._arrived:
            return False
        return self._last_loss_tick is None or (
            self._last_chunk_tick is not None and self._last_chunk_tick >= self._last_loss_tick)

    def _update_state(self, tick: int) -> None:
        if self.state is ClientState.DEAD:
            return
        if self._last_contact_tick is None:
            self._last_contact_tick = tick  # the episode's first tick counts as contact
        offline_s = (tick - self._last_contact_tick) * self.dt
        if offline_s >= self.config.max_offline_s:
            self._die(f"no chunk for {offline_s:.2f} s (max_offline_s="
                      f"{self.config.max_offline_s})")
            return
        without_session = self.state in (ClientState.CONNECTING, ClientState.RECONNECTING)
        if not self.transport.server_present():
            if not without_session:
                log.warning("server absent at tick %d: reconnecting", tick)
                self.state = ClientState.RECONNECTING
            return
        if without_session:
            self._advance_reopen()
            return
        if self.queue.depth(tick) == 0:
            if (self.config.mode is ClientMode.synchronous and self._last_chunk_tick == tick
                    and self.state is ClientState.STALLED):
                # A chunk came back after a loss but its actions were all stale (a server
                # answering one action per observation always is, after a tick fell back):
                # contact is back, so the next request is waited for again, not fallen
                # back through, or such a server never recovers.
                self.state = ClientState.STREAMING
            return  # tick() decides STALLED when it has to fall back
        lost_since_chunk = self._last_loss_tick is not None and (
            self._last_chunk_tick is None or self._last_loss_tick > self._last_chunk_tick)
        self.state = ClientState.DEGRADED if lost_since_chunk else ClientState.STREAMING

    def _advance_reopen(self) -> None:
        """Start a background re-open, or apply the one that finished (never waits)."""
        if self._reopen is None:
            if self._rejects.ready():  # after a retryable reject, not before its backoff
                self._reopen = Reopen(self)
            return
        if not self._reopen.done():
            return
        reopen, self._reopen = self._reopen, None
        if reopen.error is not None:
            log.info("session re-open failed: %s", reopen.error)
            return  # the next tick tries again
        reopening = self.state is ClientState.RECONNECTING
        if self._accept_open(reopen.reply):
            self.stats.reopened += reopening
            self.state = ClientState.STALLED

    def _finish_reopen(self) -> None:
        """Wait for a re-open still talking to the server (two threads must not share the
        request path) and drop its answer: the caller opens or resets the session itself."""
        if self._reopen is not None:
            self._reopen.join()
            self._reopen = None

    def _committed_prefix(self, tick: int, delay_ticks: int) -> np.ndarray:
        return committed_prefix(self.queue, tick, delay_ticks, self._last_action,
                                self._gripper_index)

    def _maybe_send(self, tick: int, observation: protocol.Observation) -> np.ndarray | None:
        """Send `observation` if the queue runs low; the committed prefix it carried (empty
        if none), or None if nothing was sent."""
        if self._in_flight is not None or self._arrived:
            return None
        if self._commitment is not None and tick < self._commitment.end:
            return None  # the last chunk has not started yet
        delay_ticks = (self._delay.ticks(self.dt, self.latency.expected_s())
                       if self._plans_delay else 0)
        threshold = (1 if self.config.mode is ClientMode.synchronous
                     else max(self.config.send_threshold, delay_ticks + 1))
        if self.queue.depth(tick) >= threshold:
            return None
        if self.state in (ClientState.CONNECTING, ClientState.RECONNECTING):
            return None  # no session to send in
        committed = (self._committed_prefix(tick, delay_ticks) if delay_ticks
                     else protocol.NO_PREFIX)
        observation = dataclasses.replace(observation, tick=tick, delay_ticks=delay_ticks,
                                          committed=committed)
        self._seq += 1
        sent_ns = time.monotonic_ns()
        payload = protocol.encode(protocol.Message(observation, seq=self._seq, episode=self.episode,
                                                   epoch=self.epoch, client_ns=sent_ns),
                                  jpeg_quality=self.config.jpeg_quality if observation.images
                                  else None)
        try:
            self.transport.publish(payload)
        except TransportError as exc:
            self.stats.errors.append(f"publish: {exc}")
            return None
        self._in_flight = _InFlight(self._seq, tick, sent_ns, (self.episode, self.stats.sent),
                                    delay_ticks)
        self._held = self.config.mode is ClientMode.synchronous
        self.stats.sent += 1
        if delay_ticks:
            self._commitment = Commitment(tick, committed)
        return committed

    def _fallback(self) -> np.ndarray:
        if self.config.fallback is Fallback.repeat_last:
            return self._last_action.copy()
        if self.config.fallback is Fallback.hold:
            return self._hold()
        return np.zeros_like(self._last_action)

    def _hold(self) -> np.ndarray:
        """Zero deltas, gripper kept as it is."""
        return hold_action(self._last_action, self._gripper_index)


def engine_for(env_spec: EnvSpec, transport: TransportClient, config: EngineConfig, *,
               chunk_size: int, latency: LatencyModel | None = None) -> ClientEngine:
    """An engine driving an env of `env_spec`: it declares the env's contract with the chunk
    size it expects, ticks at the env's control rate, checks chunks against the env's action
    bounds, and holds the env's gripper (if it has one) in the `hold` fallback."""
    contract = dataclasses.replace(env_spec.contract, chunk_size=chunk_size)
    names = contract.action_names
    return ClientEngine(transport, contract, config, dt=1.0 / contract.control_hz,
                        gripper_index=names.index("gripper") if "gripper" in names else None,
                        latency=latency,
                        action_bounds=(np.asarray(env_spec.action_low, np.float32),
                                       np.asarray(env_spec.action_high, np.float32)))
