"""Execution modes of the client: when it asks for a chunk, what the observation carries, where
a chunk starts and what the robot does while it waits (`client.mode`).

- asynchronous (the default): send the observation when the queue of future actions runs
  low, keep executing meanwhile, and merge each arriving chunk after trimming the actions its
  latency made stale.
- synchronous: ask only when the queue is empty, hold still while waiting
  (`ActionSource.WAIT`, still STREAMING) and execute the chunk from its first action: the
  robot did not move, so nothing in it is stale.
- delay_aware: stream ahead as in asynchronous mode, but tell the policy what the robot will
  do while it waits: each observation carries the expected delay d and the committed prefix
  (the next d actions, queued or holding still); a delay-aware policy plans from where they
  lead, and its chunk is merged at the tick it names (t + d), so only a reply later than
  expected loses actions. Against a model that is not delay-aware it runs asynchronously and
  says so in `execution`.

A mode is chosen once from `config.mode` (`make_mode`), then once per session against the
model the server hosts (`ExecutionMode.executing`). The engine asks it the few questions
below and holds no mode-specific branch of its own; what every mode shares (the fail-safe
states, the committed prefix once a delay is announced, trimming by the chunk's start) stays
in the engine and in `harness.protocol.checks`.
"""

from __future__ import annotations

import logging

from harness import protocol
from harness.client.commitment import DelayEstimate
from harness.client.config import ClientMode
from harness.client.states import ClientState

log = logging.getLogger(__name__)


class ExecutionMode:
    """The hooks of an execution mode, with the asynchronous answers as defaults.

    Subclasses set `name` and override where they differ; instances are small and
    stateless apart from `execution`, the label reported per episode."""

    name: ClientMode = ClientMode.asynchronous
    holds_still: bool = False
    """Where a chunk starts: True if the robot holds still from the moment it sends an
    observation until that chunk arrives, so the chunk starts when merged and nothing in it
    is stale (unless a tick fell back meanwhile, which may move the robot)."""

    def __init__(self, execution: str | None = None) -> None:
        self.execution = execution or str(self.name)
        """How chunks are executed, as reported in `EngineStats.execution`."""

    def executing(self, contract: protocol.Contract) -> ExecutionMode:
        """The mode that runs against a session whose server hosts `contract`: this one,
        unless the model cannot do what it needs. Called at each session open."""
        return self

    def delay_ticks(self, delay: DelayEstimate, dt: float, expected_s: float | None) -> int:
        """What the observation carries: the delay d (ticks) it announces, and with it a
        committed prefix of d actions; 0 for none.

        Args:
            delay: the round trips measured so far.
            dt: seconds per control tick.
            expected_s: the latency model's round trip before any was measured, or None.
        """
        return 0

    def send_threshold(self, send_threshold: int, delay_ticks: int) -> int:
        """When to send: once fewer than this many executable actions remain queued (and
        no request is in flight). `send_threshold` is `client.send_threshold`."""
        return max(send_threshold, delay_ticks + 1)

    def waits(self, state: ClientState, *, pending: bool, last_loss_tick: int | None,
              last_chunk_tick: int | None) -> bool:
        """How a tick with nothing executable looks: True for a healthy WAIT (hold still,
        still STREAMING), False to fall back (STALLED).

        Args:
            state: the engine's state this tick.
            pending: a request is in flight, or its reply arrived but is not usable yet.
            last_loss_tick: the last tick a request was lost or its chunk rejected.
            last_chunk_tick: the last tick a chunk was merged.
        """
        return False

    def waits_again(self, state: ClientState, *, tick: int,
                    last_chunk_tick: int | None) -> bool:
        """Whether a chunk merged at `tick` that left nothing executable (every action
        stale) brings a STALLED engine back to STREAMING, so that the next request is
        waited for instead of fallen back through."""
        return False


class AsynchronousMode(ExecutionMode):
    """Ask ahead when fewer than `send_threshold` actions remain; trim what the round trip
    made stale; ensemble overlaps."""

    name = ClientMode.asynchronous


class SynchronousMode(ExecutionMode):
    """Ask when the queue is empty, hold still while waiting, execute the chunk from its
    first action. After a loss, a re-open or a rejected chunk the ticks fall back as in
    asynchronous mode, and the chunk of a request sent while falling back is trimmed (the
    fallback may have moved the robot: repeat_last)."""

    name = ClientMode.synchronous
    holds_still = True

    def send_threshold(self, send_threshold: int, delay_ticks: int) -> int:
        return 1

    def waits(self, state: ClientState, *, pending: bool, last_loss_tick: int | None,
              last_chunk_tick: int | None) -> bool:
        """The healthy wait for the chunk just asked for: STREAMING, a request pending, and
        no loss since the last chunk."""
        if state is not ClientState.STREAMING or not pending:
            return False
        return last_loss_tick is None or (
            last_chunk_tick is not None and last_chunk_tick >= last_loss_tick)

    def waits_again(self, state: ClientState, *, tick: int,
                    last_chunk_tick: int | None) -> bool:
        """A chunk came back after a loss but its actions were all stale (a server
        answering one action per observation always is, after a tick fell back): contact is
        back, so waiting resumes, or such a server never recovers."""
        return last_chunk_tick == tick and state is ClientState.STALLED


class DelayAwareMode(ExecutionMode):
    """Asynchronous, and each observation announces the expected delay d (the largest of
    the last `delay_window` round trips, or the latency model's before the first) with the
    committed prefix; asks when fewer than max(send_threshold, d + 1) actions remain."""

    name = ClientMode.delay_aware

    def executing(self, contract: protocol.Contract) -> ExecutionMode:
        if contract.delay_aware:
            return self
        log.warning("model %r is not delay-aware: executing asynchronously", contract.model_id)
        return AsynchronousMode(f"{ClientMode.asynchronous} (delay_aware asked; model "
                                f"{contract.model_id!r} is not delay-aware)")

    def delay_ticks(self, delay: DelayEstimate, dt: float, expected_s: float | None) -> int:
        return delay.ticks(dt, expected_s)


MODES: dict[ClientMode, type[ExecutionMode]] = {
    ClientMode.asynchronous: AsynchronousMode,
    ClientMode.synchronous: SynchronousMode,
    ClientMode.delay_aware: DelayAwareMode,
}
"""Every execution mode, by its `client.mode` name."""


def make_mode(name: str) -> ExecutionMode:
    """The execution mode named `name` (a `ClientMode` or its value).

    Raises:
        ValueError: `name` is no mode, naming the choices.
    """
    try:
        return MODES[name]()
    except KeyError:
        raise ValueError(f"client.mode={name!r}: expected one of "
                         f"{[str(mode) for mode in MODES]}") from None
