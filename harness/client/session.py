"""The client's session with the policy server: open, accept or reject, re-open, reset, close.

A session is what makes the server's chunks executable here: the server accepts it with the
contract of the model it hosts and an epoch, and every message carries that epoch, so nothing
from an earlier session (or an earlier server process) is ever executed. The session also
owns the lifecycle half of the engine's fail-safe states:

    CONNECTING    no session yet: every tick falls back while the session is opened
    RECONNECTING  the server is gone, or answered that our session is unknown (it restarted
                  faster than presence showed): the session is re-opened on a thread of its
                  own (`Reopen`), so the ticks go on with the fallback action meanwhile
    DEAD          offline past `max_offline_s` (ends only its episode: the next one tries
                  again), or the server's contract changed or was refused (DEAD for good:
                  no later episode can fix that); the robot stops safely

A reject is fatal only when no retry can fix it (the contract does not match, the client id
is refused: `protocol.retryable_reject`); a draining server or one at `max_sessions` may
accept later, so those are retried with a growing backoff for up to `client.reject_retry_s`
of wall time before the episode gives up (`RejectBackoff`).

Only episode boundaries (`start_episode`, `close`) and `open` wait for the server; a tick
never does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from harness import protocol
from harness.client.states import ClientState, EngineStats
from harness.protocol import sealing
from transports import TransportClient, TransportError

log = logging.getLogger(__name__)

BACKOFF_INITIAL_S = 0.1
BACKOFF_MAX_S = 2.0


def session_unknown(reply: protocol.Message) -> bool:
    """The server answered that it holds no session of our epoch: re-open, don't retry."""
    return (reply.msg_type is protocol.MessageType.ERROR
            and reply.body.code == protocol.SESSION_UNKNOWN)


class Session:
    """The session of one client with its policy server, and the header every message of
    it carries (sequence id, episode, epoch).

    Not thread-safe but for `Reopen`, which only talks to the server while the control loop
    does not (no session: nothing is sent); its answer is applied on the control loop's
    thread (`advance_reopen`).

    Args:
        transport: the client's transport; its request path carries the control messages.
        contract: what this client declares at session open: the robot's side, with the
            chunk size it expects and, if not "", the model it insists on.
        control_timeout_s: deadline of each control message (open, reset, close).
        reject_retry_s: how long (wall time) retryable rejects are retried.
        on_open: called with the server's contract each time a session is accepted, before
            `open` (or the tick applying a re-open) returns: everything pending from the old
            session must go.
    """

    def __init__(self, transport: TransportClient, contract: protocol.Contract, *,
                 control_timeout_s: float, reject_retry_s: float,
                 on_open: Callable[[protocol.Contract], None]) -> None:
        self.transport = transport
        self.contract = contract
        self.state = ClientState.CONNECTING
        self.dead_reason = ""
        self.epoch = 0
        """The accepted session's epoch (0: none yet)."""
        self.episode = 0
        self.model_id = ""
        """The model the server hosts, as its contract names it."""
        self.server_contract: protocol.Contract | None = None
        """The contract of the first session accepted; any later session must match it."""
        self.seq = 0
        """Sequence id of the last observation sent; control messages carry it too."""
        self._control_timeout_s = control_timeout_s
        self._reject_retry_s = reject_retry_s
        self._on_open = on_open
        self.stream_key: bytes | None = None
        """The open session's sealing key, when the server seals its stream (SEALED)."""
        self._reopen: Reopen | None = None
        self._rejects = RejectBackoff(reject_retry_s)
        self._failovers_since_open = 0
        """Replicas moved to since the last accepted open: each is asked once before rejects
        are waited out."""
        self._dead_for_good = False
        """DEAD because the contract changed or was refused: no later episode can fix that.
        Any other DEAD (offline too long) ends only its episode."""

    # ---- messages ---------------------------------------------------------------------------

    def next_seq(self) -> int:
        """The sequence id of the next observation (ids never go backwards, across episodes
        and sessions alike)."""
        self.seq += 1
        return self.seq

    def control(self, body: protocol.Body, *, epoch: int | None = None) -> protocol.Message:
        """Send a control message on the request path and return the server's answer.

        Blocks up to `control_timeout_s`. Raises `TransportError` (no answer) or
        `protocol.WireError` (an answer that does not decode)."""
        payload = protocol.encode(protocol.Message(
            body, seq=self.seq, episode=self.episode,
            epoch=self.epoch if epoch is None else epoch, client_ns=time.monotonic_ns()))
        return protocol.decode(self.transport.request(payload,
                                                      timeout_s=self._control_timeout_s))

    def request_open(self) -> protocol.Message:
        """Ask for a session; the answer is not applied (see `open`). Raises as `control`.
        With replicas, a gone one is left first (the open names the id it is sent with)."""
        choose = getattr(self.transport, "choose", None)
        if choose is not None:
            choose()
        return self.control(protocol.SessionOpen(self.transport.client_id, self.contract))

    # ---- open, accept, reject ---------------------------------------------------------------

    def open(self) -> bool:
        """Open (or re-open) the session, waiting out retryable rejects (draining,
        `max_sessions`) for up to `reject_retry_s`; True if the server accepted it. A fatal
        reject, or a server whose contract differs from the first one's, makes the session
        DEAD for good; rejects past the retry budget make it DEAD for this episode."""
        while True:
            try:
                reply = self.request_open()
            except protocol.UnsupportedVersion as exc:
                self.die(f"{protocol.REJECT_VERSION}: the server speaks {exc.version}, this "
                         f"client {protocol.SCHEMA_VERSION}", for_good=True)
                return False
            except (TransportError, protocol.WireError) as exc:
                log.info("session open failed: %s", exc)
                self._fail_over("did not answer the session open")
                return False
            if self._accept(reply):
                return True
            if self.state is ClientState.DEAD:
                return False
            self._rejects.wait()

    def _accept(self, reply: protocol.Message) -> bool:
        """Apply the answer to a session open. A retryable reject only schedules the next
        try (see `RejectBackoff`); False unless the session is open."""
        if reply.msg_type is protocol.MessageType.SESSION_REJECT:
            reason = reply.body.reason
            if not protocol.retryable_reject(reason):
                self.die(f"session rejected: {reason}", for_good=True)
            elif self._fail_over(f"refused the session ({reason})"):
                pass  # another replica is asked next, without waiting
            elif self._rejects.record():
                log.warning("session rejected (%s): retrying", reason)
            else:
                self.die(f"session rejected for {self._rejects.rejecting_for_s:.1f} s "
                         f"(reject_retry_s={self._reject_retry_s}): {reason}")
            return False
        if reply.msg_type is not protocol.MessageType.SESSION_OK:
            self.die(f"unexpected reply to session open: {reply.msg_type.name}")
            return False
        if self.server_contract is not None and reply.body.contract != self.server_contract:
            self.die("contract changed: the server now hosts "
                     f"{reply.body.contract.model_id!r} with a different spec", for_good=True)
            return False
        self._rejects.clear()
        self._failovers_since_open = 0
        self.server_contract = reply.body.contract
        self.model_id = reply.body.contract.model_id
        self.epoch = reply.epoch
        self.stream_key = sealing.stream_key_of(reply)
        self._on_open(reply.body.contract)
        return True

    def _fail_over(self, reason: str) -> bool:
        """With replicas (`transports.failover`), move to another one and say so; False
        with a single server, or when every replica was asked since the last accepted open
        (then rejects are waited out as with one server)."""
        fail_over = getattr(self.transport, "fail_over", None)
        replicas = len(getattr(self.transport, "replicas", ()))
        if fail_over is None:
            return False
        if self._failovers_since_open >= replicas - 1:
            self._failovers_since_open = 0  # the next round starts after the backoff
            return False
        self._failovers_since_open += 1
        return fail_over(reason)

    def die(self, reason: str, *, for_good: bool = False) -> None:
        """DEAD: the robot stops safely. `for_good`: no later episode may reconnect."""
        self.state = ClientState.DEAD
        self.dead_reason = reason
        self._dead_for_good = self._dead_for_good or for_good
        log.error("client engine DEAD%s: %s", " for good" if for_good else "", reason)

    def forgot_us(self, reply: protocol.Message) -> bool:
        """Whether `reply` (from the stream) says the server holds no session of our current
        epoch while we are not DEAD: it restarted, or dropped us, faster than presence
        showed, and the session must be re-opened."""
        return (session_unknown(reply) and reply.epoch == self.epoch
                and self.state is not ClientState.DEAD)

    # ---- re-open in the background ----------------------------------------------------------

    @property
    def reopening(self) -> Reopen | None:
        """The re-open running or finished but not yet applied, if any."""
        return self._reopen

    def advance_reopen(self) -> bool:
        """Start a background re-open, or apply the one that finished (never waits). True
        if this call applied an accepted session; the state is then unchanged, the caller
        decides what comes next."""
        if self._reopen is None:
            if self._rejects.ready():  # after a retryable reject, not before its backoff
                self._reopen = Reopen(self)
            return False
        if not self._reopen.done():
            return False
        reopen, self._reopen = self._reopen, None
        if reopen.error is not None:
            log.info("session re-open failed: %s", reopen.error)
            self._fail_over("did not answer the session re-open")
            return False  # the next tick tries again
        return self._accept(reopen.reply)

    def finish_reopen(self) -> None:
        """Wait for a re-open still talking to the server (two threads must not share the
        request path) and drop its answer: the caller opens or resets the session itself."""
        if self._reopen is not None:
            self._reopen.join()
            self._reopen = None

    # ---- episode boundaries -----------------------------------------------------------------

    def start_episode(self, episode: int, stats: EngineStats) -> bool:
        """Tell the server an episode starts, opening (or re-opening) the session first if
        needed; blocks on the server. A server that forgot the session is re-opened
        (`stats.reopened`), a reset that was not acknowledged is counted in `stats.errors`.

        Returns False if the episode starts without a session: DEAD for good, or the open
        failed (CONNECTING: the ticks go on trying, bounded by `max_offline_s`). Otherwise
        the state is STREAMING, unless the re-open made it DEAD."""
        self.finish_reopen()
        self.episode = episode
        if self.state is ClientState.DEAD:
            if self._dead_for_good:
                return False
            log.info("episode %d: the last one ended DEAD (%s); reconnecting", episode,
                     self.dead_reason)
            self.state, self.dead_reason = ClientState.CONNECTING, ""
        if self.state is ClientState.CONNECTING and not self.open():
            return False
        try:
            if session_unknown(self.control(protocol.Reset())):
                # The server restarted between episodes without us seeing it gone.
                log.warning("server forgot the session: re-opening it")
                if self.open():
                    stats.reopened += 1
                    self.control(protocol.Reset())
        except (TransportError, protocol.WireError) as exc:
            log.warning("reset not acknowledged: %s", exc)
            stats.errors.append(f"reset: {exc}")
        if self.state is not ClientState.DEAD:
            self.state = ClientState.STREAMING
        return True

    def close(self) -> None:
        """Close the session on the server, if one is open and not DEAD (best effort:
        failures are ignored). Blocks up to `control_timeout_s`."""
        self.finish_reopen()
        if self.state is not ClientState.DEAD and self.epoch:
            try:
                self.control(protocol.Close())
            except (TransportError, protocol.WireError):
                pass


class Reopen:
    """A session re-open (open, then reset) on its own thread, so that the tick noticing the
    server is back does not wait up to `control_timeout_s` for its answer. It only talks to
    the server; the session applies the answer on a later tick (`Session.advance_reopen`)."""

    def __init__(self, session: Session) -> None:
        self.reply: protocol.Message | None = None
        self.error: Exception | None = None
        self._session = session
        self._thread = threading.Thread(target=self._run, name="session-reopen", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            reply = self._session.request_open()
            if reply.msg_type is protocol.MessageType.SESSION_OK:
                self._session.control(protocol.Reset(), epoch=reply.epoch)
            self.reply = reply
        except Exception as exc:  # noqa: BLE001 (any failure, a raw zenoh.ZError too, is an
            self.error = exc  # answer: reply and error must never both be None when done)

    def done(self) -> bool:
        """Whether the thread has finished (then `reply` or `error` is set). Never blocks."""
        return not self._thread.is_alive()

    def join(self) -> None:
        """Wait for the thread to finish (at most about `control_timeout_s` twice)."""
        self._thread.join()


class RejectBackoff:
    """Retryable session rejects: when the next attempt may go, and when to stop trying."""

    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self._first_s: float | None = None
        self._delay_s = BACKOFF_INITIAL_S
        self._next_s = 0.0

    def record(self) -> bool:
        """A retryable reject just came back: schedule the next try. False once rejects have
        gone on for longer than the budget (time to give up)."""
        now = time.monotonic()
        if self._first_s is None:
            self._first_s = now
        self._next_s = now + self._delay_s
        self._delay_s = min(2 * self._delay_s, BACKOFF_MAX_S)
        return now - self._first_s < self.budget_s

    def ready(self) -> bool:
        """Whether the backoff since the last reject has passed."""
        return time.monotonic() >= self._next_s

    def wait(self) -> None:
        """Sleep until the next try may go."""
        time.sleep(max(0.0, self._next_s - time.monotonic()))

    def clear(self) -> None:
        """The session was accepted: the next reject starts a new budget."""
        self._first_s, self._delay_s, self._next_s = None, BACKOFF_INITIAL_S, 0.0

    @property
    def rejecting_for_s(self) -> float:
        """Wall time since the first reject of the current run of rejects (0: none)."""
        return 0.0 if self._first_s is None else time.monotonic() - self._first_s
