"""Client engine: the robot side of remote inference, with its fail-safe states.

Called once per control tick with the newest observation, it returns the action to execute
at once and does not wait on the network: observations go out on the latest-only stream,
chunks are collected without blocking, and re-opening the session after a server restart runs
on a thread of its own while the ticks go on with the fallback action. Only episode
boundaries (`reset`, `close`) wait for the server. When to send, what the observation carries
and where a chunk starts depend on the execution mode (`client.mode`, see `modes.py`); which
arriving chunk is merged, where, and what is trimmed as stale is decided by
`harness.protocol.checks`; the session (open, reject, re-open, epoch) is `session.py`; taking
replies off the stream, each error reply counted once, is `replies.py`. In every mode, when
chunks stop coming it degrades in steps:

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
from harness.client.config import EngineConfig, Fallback, OutOfBounds
from harness.client.keepalive import KeepAlive
from harness.client.latency import LatencyModel
from harness.client.modes import make_mode
from harness.client.replies import Arrived, InFlight, Replies
from harness.client.session import Session
from harness.client.states import ActionSource, ClientState, EngineStats, TickResult
from harness.protocol import checks
from transports import TransportClient, TransportError

log = logging.getLogger(__name__)


def _session_field(name: str, doc: str, *, settable: bool = False) -> property:
    """An engine attribute that is the session's `name`."""
    setter = (lambda engine, value: setattr(engine.session, name, value)) if settable else None
    return property(lambda engine: getattr(engine.session, name), setter, doc=doc)


class ClientEngine:
    """One robot's engine; not thread-safe (the control loop's thread calls it).

    Args:
        transport: the client's transport (stream for observations and chunks, request
            path for the session's control messages).
        contract: what this client declares at session open: the robot's side, with the
            chunk size it expects and, if not "", the model it insists on.
        config: the `client.*` settings.
        dt: seconds per control tick.
        gripper_index: the action entry the hold action keeps as it is, if any.
        latency: which round trip decides when a chunk is usable (default: measured).
        action_bounds: (low, high) per action entry, or None: the env clips what it is given.
    """

    def __init__(self, transport: TransportClient, contract: protocol.Contract,
                 config: EngineConfig, *, dt: float, gripper_index: int | None = None,
                 latency: LatencyModel | None = None,
                 action_bounds: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        self.transport = transport
        self.replies = Replies(transport)
        """The stream inbox's end: newest chunk by sequence id, every error reply kept."""
        self.config = config
        self.dt = dt
        self.session = Session(transport, contract, control_timeout_s=config.control_timeout_s,
                               reject_retry_s=config.reject_retry_s, on_open=self._opened)
        self.keepalive = KeepAlive(self.session, config.keepalive_s)
        self.queue = ActionQueue(config.ensembling, max_age_ticks=math.floor(
            config.max_action_age_s / dt + 1e-9))
        self.stats = EngineStats()
        self.latency = latency or LatencyModel()
        self._gripper_index = gripper_index
        self._bounds = action_bounds
        self._configured_mode = make_mode(config.mode)
        self._mode = self._configured_mode
        """The mode chunks are executed in: the configured one, or what it became against
        the session's model (`ExecutionMode.executing`)."""
        self.execution = str(config.mode)
        """How chunks are executed: the mode, unless delay_aware met a model that is not
        (then asynchronous, and this says why). Reported per episode in `stats.execution`."""
        self._in_flight: InFlight | None = None
        self._arrived: list[Arrived] = []
        self._last_action = np.zeros(contract.action_dim, np.float32)
        self._merged_server: tuple[float | None, float | None, int | None] = (None, None, None)
        """(mailbox wait s, inference s, batch size) the server reported for the last chunk
        merged."""
        self._held = False
        """The mode holds still while waiting and every tick since the pending request's
        observation was a WAIT tick, so its chunk starts when it is merged. False once a tick
        fell back (the fallback may move the robot: repeat_last): that chunk is trimmed as
        in asynchronous mode."""
        self._last_chunk_tick: int | None = None
        self._last_contact_tick: int | None = None
        self._last_loss_tick: int | None = None
        self._delay = DelayEstimate(config.delay_window)
        """From the round trips the clock used, across episodes (delay_aware)."""
        self._commitment: Commitment | None = None

    # ---- the session (see `Session`) -------------------------------------------------------

    contract = _session_field("contract", "What this client declares at session open.")
    state = _session_field("state", "The fail-safe state.", settable=True)
    dead_reason = _session_field("dead_reason", "Why the engine is DEAD (\"\" if not).")
    epoch = _session_field("epoch", "The session's epoch (0: none opened yet).")
    episode = _session_field("episode", "The episode the server was last told of.")
    model_id = _session_field("model_id", "The model the server hosts.")
    _reopen = _session_field("reopening", "The pending re-open (tests look at it).")

    def open_session(self) -> bool:
        """Open (or re-open) the session: see `Session.open`. Blocks on the server."""
        return self.session.open()

    def _opened(self, contract: protocol.Contract) -> None:
        """A session was accepted: nothing pending from the old one may run, and the mode
        is chosen against the model the server hosts."""
        self._forget_pending()
        self.replies.expect_seal(self.session.stream_key)
        self._mode = self._configured_mode.executing(contract)
        self.execution = self._mode.execution

    def _forget_pending(self) -> None:
        """Drop every queued action, request in flight, arrived reply and commitment."""
        self.queue.clear()
        self._in_flight = None
        self._arrived.clear()
        self._commitment = None

    def reset(self, episode: int) -> None:
        """Start an episode: tell the server, forget every queued action. Unlike a tick, this
        waits for the server (a re-open still running is finished first); how long is
        `stats.reset_wait_s`."""
        started = time.monotonic()
        self.stats = EngineStats()
        try:
            self.keepalive.join()
            self.session.finish_reopen()
            self._forget_pending()
            self._last_chunk_tick = self._last_contact_tick = self._last_loss_tick = None
            # The hold action keeps the last action's gripper: the previous episode's must
            # not close the gripper at this one's first tick (an episode would then depend
            # on which episode its robot ran before).
            self._last_action = np.zeros_like(self._last_action)
            if self.session.start_episode(episode, self.stats):
                self.stats.execution = self.execution
        finally:
            self.stats.reset_wait_s = time.monotonic() - started

    def close(self) -> None:
        """Close the session (best effort; blocks up to `control_timeout_s`)."""
        self.keepalive.join()
        self.session.close()

    # ---- the control tick -------------------------------------------------------------------

    def poll(self, tick: int) -> None:
        """Collect arrived replies (never blocks). The runner calls this while it waits.
        Every error reply is counted once, on arrival, even one a newer chunk overtook
        (`Replies.take`); one saying our session is unknown re-opens it, once: a second
        such reply finds the re-open pending, or the new epoch. One answering the request in
        flight ends that request: it failed (counted as that error, not again as lost after
        `request_timeout_s`), and the next observation may go at once."""
        for reply, received_ns in self.replies.take(self.stats):
            if reply.msg_type is protocol.MessageType.ERROR:
                flight = self._in_flight
                if self.session.forgot_us(reply):
                    self._in_flight = self._commitment = None
                    self.state = ClientState.RECONNECTING
                elif (flight is not None and reply.seq == flight.request.seq
                      and reply.epoch == self.epoch):
                    self._in_flight = self._commitment = None
                    self._last_loss_tick = tick
                continue
            self._receive(reply, tick, received_ns)

    def _receive(self, reply: protocol.Message, tick: int, received_ns: int) -> None:
        """Check a reply from the stream on arrival and keep it until its tick is usable."""
        flight = self._in_flight
        server = self.session.server_contract
        decision = checks.check_chunk(
            reply, None if flight is None else flight.request, epoch=self.epoch,
            episode=self.episode,
            chunk_size=server.chunk_size if server else self.contract.chunk_size,
            action_dim=self.contract.action_dim, bounds=self._bounds,
            reject_out_of_bounds=self.config.out_of_bounds is OutOfBounds.reject)
        if isinstance(decision, checks.Dropped):
            if decision.reason.foreign:
                return  # late, foreign or from another episode: never executed
            self.stats.rejected += 1  # answered, but with nothing the robot may execute
            self.stats.errors.append(f"chunk {reply.seq} dropped: {decision.detail}")
            self._last_loss_tick = tick
            self._in_flight = self._commitment = None
            return
        self.stats.clipped += decision.clipped
        request = flight.request
        measured_s = (received_ns - flight.sent_ns) / 1e9
        latency_s = self.latency.latency_for(flight.key, measured_s, sent_tick=request.tick)
        if math.isinf(latency_s):
            return  # lost on the modelled link: it expires as lost, like a real loss
        self._delay.record(latency_s)
        self._arrived.append(Arrived(request.tick + ticks_for(latency_s, self.dt), request.tick,
                                     decision.reply, latency_s, measured_s))
        self._in_flight = None
        self.stats.chunks += 1

    def reply_pending_until(self) -> tuple[tuple[int, int], int, int] | None:
        """(latency key, sent tick, sent ns) of the request still in flight, for the
        virtual clock."""
        flight = self._in_flight
        return None if flight is None else (flight.key, flight.request.tick, flight.sent_ns)

    def tick(self, tick: int, observation: protocol.Observation) -> TickResult:
        """Choose the action for `tick` and maybe send `observation`. Never blocks."""
        self.poll(tick)
        latency_s, measured_s = self._merge_usable(tick)
        self._expire_in_flight(tick)
        self._update_state(tick)
        sent = self._maybe_send(tick, observation) if self.state is not ClientState.DEAD else None
        self.keepalive.tick()
        result = self._choose(tick, latency_s, measured_s)
        result.committed = sent
        if latency_s is not None:  # the merged chunk's share of its round trip on the server
            (result.server_queue_s, result.server_infer_s,
             result.server_batch_size) = self._merged_server
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
        if self._mode.waits(self.state, pending=self._in_flight is not None or bool(self._arrived),
                            last_loss_tick=self._last_loss_tick,
                            last_chunk_tick=self._last_chunk_tick):
            # nothing executable queued (none, or a tail past max age): hold still
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
        ready = [item for item in self._arrived if item.usable_tick <= tick]
        self._arrived = [item for item in self._arrived if item.usable_tick > tick]
        for item in ready:
            reply, chunk = item.reply, item.reply.body
            placed = checks.place_chunk(chunk, tick=tick, model_id=self.model_id,
                                        resumed=self._held)
            if isinstance(placed, checks.Dropped):
                self.session.die(placed.detail, for_good=True)
                return None, None
            self.queue.merge(chunk.actions, obs_tick=item.obs_tick, now_tick=tick,
                             seq=reply.seq, episode=reply.episode, epoch=reply.epoch,
                             model_id=chunk.model_id, start_tick=placed.start_tick)
            self.stats.trimmed += placed.trimmed
            self._last_chunk_tick = self._last_contact_tick = tick
            latency_s, measured_s = item.latency_s, item.measured_s
            self._merged_server = (chunk.queue_wait_ns / 1e9, chunk.infer_ns / 1e9,
                                   chunk.batch_size)
        return latency_s, measured_s

    def _expire_in_flight(self, tick: int) -> None:
        flight = self._in_flight
        if (flight is not None
                and (tick - flight.request.tick) * self.dt >= self.config.request_timeout_s):
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

    def _update_state(self, tick: int) -> None:
        if self.state is ClientState.DEAD:
            return
        if self._last_contact_tick is None:
            self._last_contact_tick = tick  # the episode's first tick counts as contact
        offline_s = (tick - self._last_contact_tick) * self.dt
        if offline_s >= self.config.max_offline_s:
            self.session.die(f"no chunk for {offline_s:.2f} s (max_offline_s="
                             f"{self.config.max_offline_s})")
            return
        without_session = self.state in (ClientState.CONNECTING, ClientState.RECONNECTING)
        if not self.transport.server_present():
            if not without_session:
                log.warning("server absent at tick %d: reconnecting", tick)
                self.state = ClientState.RECONNECTING
            return
        if without_session:
            reopening = self.state is ClientState.RECONNECTING
            if self.session.advance_reopen():
                self.stats.reopened += reopening
                self.state = ClientState.STALLED
            return
        if self.queue.depth(tick) == 0:
            if self._mode.waits_again(self.state, tick=tick,
                                      last_chunk_tick=self._last_chunk_tick):
                self.state = ClientState.STREAMING
            return  # tick() decides STALLED when it has to fall back
        lost_since_chunk = self._last_loss_tick is not None and (
            self._last_chunk_tick is None or self._last_loss_tick > self._last_chunk_tick)
        self.state = ClientState.DEGRADED if lost_since_chunk else ClientState.STREAMING

    def _committed_prefix(self, tick: int, delay_ticks: int) -> np.ndarray:
        """The `delay_ticks` actions the robot executes from `tick` on (see
        `committed_prefix`)."""
        return committed_prefix(self.queue, tick, delay_ticks, self._last_action,
                                self._gripper_index)

    def _maybe_send(self, tick: int, observation: protocol.Observation) -> np.ndarray | None:
        """Send `observation` if the queue runs low; the committed prefix it carried (empty
        if none), or None if nothing was sent."""
        if self._in_flight is not None or self._arrived:
            return None
        if self._commitment is not None and tick < self._commitment.end:
            return None  # the last chunk has not started yet
        delay_ticks = self._mode.delay_ticks(self._delay, self.dt, self.latency.expected_s())
        if self.queue.depth(tick) >= self._mode.send_threshold(self.config.send_threshold,
                                                               delay_ticks):
            return None
        if self.state in (ClientState.CONNECTING, ClientState.RECONNECTING):
            return None  # no session to send in
        committed = (self._committed_prefix(tick, delay_ticks) if delay_ticks
                     else protocol.NO_PREFIX)
        observation = dataclasses.replace(observation, tick=tick, delay_ticks=delay_ticks,
                                          committed=committed)
        seq = self.session.next_seq()
        sent_ns = time.monotonic_ns()
        payload = protocol.encode(protocol.Message(observation, seq=seq, episode=self.episode,
                                                   epoch=self.epoch, client_ns=sent_ns),
                                  jpeg_quality=self.config.jpeg_quality if observation.images
                                  else None)
        try:
            self.transport.publish(payload)
            self.keepalive.sent()
        except TransportError as exc:
            self.stats.errors.append(f"publish: {exc}")
            return None
        self._in_flight = InFlight(checks.Request(seq, tick, delay_ticks), sent_ns,
                                   (self.episode, self.stats.sent))
        self._held = self._mode.holds_still
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
