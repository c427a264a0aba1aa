"""Chunk acceptance (`harness.protocol.checks`): which arriving chunk the client merges, where
it starts, what is trimmed as stale; every drop reason fires."""

from __future__ import annotations

import numpy as np
import pytest

from harness import protocol
from harness.protocol.checks import (
    Accepted,
    Dropped,
    DropReason,
    Placed,
    Request,
    check_chunk,
    place_chunk,
)

EPOCH, EPISODE, ACTION_DIM, CHUNK_SIZE = 7, 3, 2, 4
BOUNDS = (np.array([-1.0, -1.0], np.float32), np.array([1.0, 1.0], np.float32))
IN_FLIGHT = Request(5, 10)
"""Observation seq 5, taken at tick 10, announcing no delay."""


def chunk(actions=None, *, start_tick: int = 10, model_id: str = "m") -> protocol.ActionChunk:
    if actions is None:
        actions = np.full((CHUNK_SIZE, ACTION_DIM), 0.5, np.float32)
    return protocol.ActionChunk(np.asarray(actions, np.float32), obs_seq=5, queue_wait_ns=0,
                                infer_ns=0, model_id=model_id, start_tick=start_tick)


def reply(body=None, *, seq: int = 5, epoch: int = EPOCH,
          episode: int = EPISODE) -> protocol.Message:
    return protocol.Message(chunk() if body is None else body, seq=seq, episode=episode,
                            epoch=epoch, client_ns=0)


def check(message: protocol.Message, request: Request | None = IN_FLIGHT, *,
          reject: bool = False, chunk_size: int = CHUNK_SIZE):
    return check_chunk(message, request, epoch=EPOCH, episode=EPISODE, chunk_size=chunk_size,
                       action_dim=ACTION_DIM, bounds=BOUNDS, reject_out_of_bounds=reject)


# ---- on arrival -----------------------------------------------------------------------------


def test_a_chunk_answering_the_request_in_flight_is_accepted_as_it_came():
    message = reply()
    decision = check(message)
    assert decision == Accepted(message, clipped=False)
    assert decision.reply is message  # nothing copied when nothing was changed


@pytest.mark.parametrize(("message", "request_", "reason", "detail"), [
    # a session answer on the chunk stream
    (protocol.Message(protocol.Reset(), seq=5, episode=EPISODE, epoch=EPOCH, client_ns=0),
     Request(5, 10), DropReason.not_a_chunk, "a RESET on the chunk stream"),
    # nothing asked (the request expired as lost): a late answer
    (reply(), None, DropReason.not_awaited, "answers 5, awaited None"),
    # answers an earlier observation than the one in flight
    (reply(seq=4), Request(5, 10), DropReason.not_awaited, "answers 4, awaited 5"),
    # from the session before a re-open
    (reply(epoch=6), Request(5, 10), DropReason.other_epoch, "epoch 6, session epoch 7"),
    # from the episode before
    (reply(episode=2), Request(5, 10), DropReason.other_episode, "episode 2, expected 3"),
])
def test_a_reply_answering_nothing_of_ours_is_dropped_as_foreign(message, request_, reason,
                                                                 detail):
    assert check(message, request_) == Dropped(reason, detail)
    assert reason.foreign


@pytest.mark.parametrize(("body", "request_", "reason", "detail"), [
    # one action short of the agreed chunk size
    (chunk(np.zeros((3, 2))), Request(5, 10), DropReason.shape, "shape [3, 2], expected [4, 2]"),
    # the wrong action width
    (chunk(np.zeros((4, 3))), Request(5, 10), DropReason.shape, "shape [4, 3], expected [4, 2]"),
    # neither the observation's tick nor the end of its prefix
    (chunk(start_tick=12), Request(5, 10, delay_ticks=3), DropReason.start_tick,
     "start_tick 12, expected one of [10, 13] (observation tick 10, delay 3)"),
    (chunk(np.array([[0.0, np.nan]] * 4)), Request(5, 10), DropReason.non_finite,
     "non-finite actions"),
    (chunk(np.array([[0.0, np.inf]] * 4)), Request(5, 10), DropReason.non_finite,
     "non-finite actions"),
])
def test_an_answer_the_robot_must_not_execute_is_dropped_with_its_reason(body, request_, reason,
                                                                          detail):
    assert check(reply(body), request_) == Dropped(reason, detail)
    assert not reason.foreign


def test_a_chunk_of_any_length_passes_when_no_chunk_size_was_agreed():
    assert isinstance(check(reply(chunk(np.zeros((9, 2)))), chunk_size=0), Accepted)


def test_a_delay_aware_chunk_may_start_after_the_prefix_or_at_the_observation():
    for start in (10, 13):
        assert isinstance(check(reply(chunk(start_tick=start)), Request(5, 10, 3)), Accepted)


def test_out_of_bounds_actions_are_clipped_by_default():
    body = chunk(np.array([[2.0, -0.5], [-3.0, 0.0], [0.0, 0.0], [1.0, -1.0]]))
    decision = check(reply(body))
    assert isinstance(decision, Accepted) and decision.clipped
    assert decision.reply.body.actions.tolist() == [[1.0, -0.5], [-1.0, 0.0], [0.0, 0.0],
                                                    [1.0, -1.0]]
    assert body.actions[0, 0] == 2.0  # the original is untouched


def test_out_of_bounds_actions_drop_the_chunk_under_reject():
    body = chunk(np.array([[0.0, 1.5]] * 4))
    assert check(reply(body), reject=True) == Dropped(DropReason.out_of_bounds,
                                                      "actions outside the env's bounds")


def test_the_first_problem_found_is_the_reason():
    """Wrong shape and non-finite: the shape is reported."""
    assert check(reply(chunk(np.full((3, 2), np.nan)))).reason is DropReason.shape


# ---- when it becomes usable -----------------------------------------------------------------


@pytest.mark.parametrize(("start_tick", "tick", "resumed", "expected"), [
    # asynchronous: observed at 10, merged at 13: three actions are in the past
    (10, 13, False, Placed(10, 3)),
    # usable on its own tick: nothing stale
    (10, 10, False, Placed(10, 0)),
    # so late that every action is past: all four trimmed, no more
    (10, 20, False, Placed(10, 4)),
    # synchronous, the robot held still: starts when merged, whatever it names
    (10, 13, True, Placed(13, 0)),
    # delay-aware, starting after a 3-tick prefix: on time, nothing trimmed
    (13, 13, False, Placed(13, 0)),
    # delay-aware, usable before its start: it waits in the queue
    (13, 12, False, Placed(13, 0)),
    # delay-aware, two ticks later than announced: only that excess is trimmed
    (13, 15, False, Placed(13, 2)),
])
def test_a_chunk_is_placed_at_its_start_and_trimmed_of_the_ticks_already_past(
        start_tick, tick, resumed, expected):
    assert place_chunk(chunk(start_tick=start_tick), tick=tick, model_id="m",
                       resumed=resumed) == expected


def test_a_chunk_from_another_model_is_a_contract_change():
    decision = place_chunk(chunk(model_id="other"), tick=12, model_id="m")
    assert decision == Dropped(DropReason.model_changed, "contract changed: chunk from model "
                                                         "'other', session opened with 'm'")
    assert not decision.reason.foreign

