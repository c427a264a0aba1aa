"""Checks of what arrives over the wire, as pure functions, both ends side by side: which
observation the server lets reach its policy (`check_observation`), and which action chunk
the client may execute, where it starts, and how much of it the round trip made stale.

A chunk is judged twice, because two moments decide its fate:

- On arrival (`check_chunk`): it must answer the one request in flight, in this session
  (epoch) and episode; anything else is late or foreign and never executed. Then it must be
  executable at all: the contract's shape, finite values, the env's bounds (clipped or
  rejected, as configured), and a start tick it may name: the observation's tick, or for a
  delay-aware observation the tick after the committed prefix, `tick + delay_ticks`.
- When it becomes usable (`place_chunk`), which under the virtual clock may be ticks later:
  the model must still be the session's, and the chunk starts at the tick it names, or, if
  the robot held still from the observation on (the synchronous client), at the tick it is
  merged, so nothing in it is stale. Actions meant for ticks already past are trimmed
  instead of executed late; a delay-aware chunk loses actions only when its reply came later
  than the delay the observation announced.

Nothing here has side effects or reads a clock: the client engine applies the decisions (and
counts them), and tests state them exactly.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass

import numpy as np

from harness.protocol.contract import Contract
from harness.protocol.messages import ActionChunk, Message, MessageType, Observation


class DropReason(enum.StrEnum):
    """Why a chunk is not merged."""

    not_a_chunk = "not_a_chunk"
    """The stream carried another kind of message."""
    not_awaited = "not_awaited"
    """No request is in flight, or it answers an earlier one (late)."""
    other_epoch = "other_epoch"
    """From another session (an earlier server process, or before a re-open)."""
    other_episode = "other_episode"
    shape = "shape"
    """Not (chunk_size, action_dim)."""
    start_tick = "start_tick"
    """Names a start the observation did not allow."""
    non_finite = "non_finite"
    out_of_bounds = "out_of_bounds"
    """An action outside the env's bounds, under out_of_bounds=reject."""
    model_changed = "model_changed"
    """From another model than the session was opened with: the contract changed."""

    @property
    def foreign(self) -> bool:
        """A reply that answers nothing of ours: ignored, neither an error nor a loss. Any
        other drop is an answer the robot must not execute: counted, and the request lost."""
        return self in (DropReason.not_a_chunk, DropReason.not_awaited, DropReason.other_epoch,
                        DropReason.other_episode)


@dataclass(frozen=True)
class Request:
    """The observation in flight, as far as its chunk is concerned."""

    seq: int
    tick: int
    """Control tick the observation was taken at."""
    delay_ticks: int = 0
    """The delay the observation announced (delay_aware; 0: none): its chunk may start at
    `tick` or at `tick + delay_ticks`, nowhere else."""


@dataclass(frozen=True)
class Accepted:
    """The chunk may be executed: `reply`, with its actions clipped to the bounds if
    `clipped`."""

    reply: Message
    clipped: bool = False


@dataclass(frozen=True)
class Placed:
    """Merge the chunk with its first action at `start_tick`; its first `trimmed` actions
    are for ticks already past and are dropped."""

    start_tick: int
    trimmed: int


@dataclass(frozen=True)
class Dropped:
    """Do not merge the chunk, for `reason`; `detail` says what was wrong, for the error
    the client records."""

    reason: DropReason
    detail: str


def check_chunk(reply: Message, request: Request | None, *, epoch: int, episode: int,
                chunk_size: int, action_dim: int,
                bounds: tuple[np.ndarray, np.ndarray] | None = None,
                reject_out_of_bounds: bool = False) -> Accepted | Dropped:
    """Judge a reply from the chunk stream on arrival.

    Args:
        reply: the decoded message.
        request: the request in flight, or None.
        epoch: the current session's epoch; episode: the current episode.
        chunk_size: actions per chunk the session agreed on (0: any number).
        action_dim: entries per action.
        bounds: (low, high) per action entry, or None (not checked).
        reject_out_of_bounds: drop a chunk with an action outside `bounds` instead of
            clipping it.

    Returns:
        `Accepted` (with the chunk clipped if it had to be), or `Dropped` with the first
        reason found, in this order: not a chunk, not awaited, other epoch, other episode,
        shape, start tick, non-finite, out of bounds.
    """
    if reply.msg_type is not MessageType.ACTION_CHUNK:
        return Dropped(DropReason.not_a_chunk, f"a {reply.msg_type.name} on the chunk stream")
    if request is None or reply.seq != request.seq:
        return Dropped(DropReason.not_awaited,
                       f"answers {reply.seq}, awaited {None if request is None else request.seq}")
    if reply.epoch != epoch:
        return Dropped(DropReason.other_epoch, f"epoch {reply.epoch}, session epoch {epoch}")
    if reply.episode != episode:
        return Dropped(DropReason.other_episode, f"episode {reply.episode}, expected {episode}")
    chunk: ActionChunk = reply.body
    actions = chunk.actions
    expected = (chunk_size or actions.shape[0], action_dim)
    starts = {request.tick, request.tick + request.delay_ticks}
    if actions.shape != expected:
        return Dropped(DropReason.shape,
                       f"shape {list(actions.shape)}, expected {list(expected)}")
    if chunk.start_tick not in starts:
        return Dropped(DropReason.start_tick,
                       f"start_tick {chunk.start_tick}, expected one of {sorted(starts)} "
                       f"(observation tick {request.tick}, delay {request.delay_ticks})")
    if not np.isfinite(actions).all():
        return Dropped(DropReason.non_finite, "non-finite actions")
    if bounds is not None:
        low, high = bounds
        if ((actions < low) | (actions > high)).any():
            if reject_out_of_bounds:
                return Dropped(DropReason.out_of_bounds, "actions outside the env's bounds")
            clipped = dataclasses.replace(chunk, actions=np.clip(actions, low, high))
            return Accepted(dataclasses.replace(reply, body=clipped), clipped=True)
    return Accepted(reply)


def place_chunk(chunk: ActionChunk, *, tick: int, model_id: str,
                resumed: bool = False) -> Placed | Dropped:
    """Where a checked chunk goes when it is merged at `tick`.

    Args:
        chunk: the chunk `check_chunk` accepted.
        tick: the control tick it is merged at (its usable tick, or later).
        model_id: the model the session was opened with.
        resumed: the robot held still from the observation's tick until `tick` (the
            synchronous client, no tick fell back since it asked): the chunk starts at
            `tick`, whatever start it names.

    Returns:
        `Placed` (start tick, actions trimmed as already past: 0 up to the chunk's length),
        or `Dropped` for `model_changed`.
    """
    if chunk.model_id != model_id:
        return Dropped(DropReason.model_changed,
                       f"contract changed: chunk from model {chunk.model_id!r}, session "
                       f"opened with {model_id!r}")
    start = tick if resumed else chunk.start_tick
    return Placed(start, min(len(chunk.actions), max(0, tick - start)))


MAX_PREFIX_S = 10.0
"""Longest committed prefix a delay-aware policy is asked to roll through: a delay past
`max_offline_s` (5 s by default) has the client DEAD anyway, and an absurd one would keep
the inference thread busy for every other session."""


def check_observation(spec: Contract,
                      observation: Observation) -> tuple[str, str] | None:
    """The first way `observation` breaks `spec`, as (reason, detail), or None if it fits.

    `reason` is one of missing, dtype, shape, non_finite (the label of the rejection counter);
    `detail` names the key and what is wrong. Only what the policy reads is checked (a robot
    may observe more). Runs on every observation, so it stays cheap: dtype and shape compares,
    and `np.isfinite` on float state only (images are uint8).
    """
    for key, wanted in spec.state.items():
        where, value = f"state[{key!r}]", observation.state.get(key)
        if value is None:
            return "missing", f"{where} is missing: the policy reads it"
        if value.dtype.name != wanted.dtype:
            return "dtype", (f"{where} has dtype {value.dtype.name}, the contract says "
                             f"{wanted.dtype}")
        if value.shape != tuple(wanted.shape):
            return "shape", (f"{where} has shape {value.shape}, the contract says "
                             f"{tuple(wanted.shape)}")
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            bad = value.size - int(np.count_nonzero(np.isfinite(value)))
            return "non_finite", (f"{where} has {bad} non-finite value{'s' if bad > 1 else ''} "
                                  "(NaN or inf)")
    committed = observation.committed
    if committed.shape[0] > MAX_PREFIX_S * spec.control_hz:
        return "shape", (f"committed holds {committed.shape[0]} actions, more than "
                         f"{MAX_PREFIX_S:g} s of control at {spec.control_hz:g} Hz")
    if committed.shape[0] and committed.shape[1] != spec.action_dim:
        return "shape", (f"committed has {committed.shape[1]} entries per action, the "
                         f"contract's actions have {spec.action_dim}")
    if not np.isfinite(committed).all():
        return "non_finite", "committed holds non-finite actions (NaN or inf)"
    for camera, (height, width) in spec.images.items():
        where, image = f"images[{camera!r}]", observation.images.get(camera)
        if image is None:
            return "missing", f"{where} is missing: the policy needs this camera"
        if image.dtype != np.uint8:
            return "dtype", f"{where} has dtype {image.dtype.name}, the contract says uint8"
        if image.shape != (height, width, 3):
            return "shape", (f"{where} has shape {image.shape}, the contract says "
                             f"{(height, width, 3)}")
    return None
