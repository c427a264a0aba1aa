"""ActionQueue: stale actions trimmed, overlaps ensembled, order and provenance kept."""

from __future__ import annotations

import numpy as np
import pytest

from harness.client.action_queue import ActionQueue


def chunk(*values: float) -> np.ndarray:
    return np.array([[v, -v] for v in values], np.float32)


def merge(queue: ActionQueue, values, *, obs_tick: int, now_tick: int, seq: int) -> int:
    return queue.merge(chunk(*values), obs_tick=obs_tick, now_tick=now_tick, seq=seq,
                       episode=1, epoch=2, model_id="m")


def test_actions_already_in_the_past_are_trimmed_not_executed():
    queue = ActionQueue()
    assert merge(queue, [0, 1, 2, 3], obs_tick=10, now_tick=12, seq=1) == 2
    assert queue.trimmed == 2
    assert queue.pop(12).action.tolist() == [2.0, -2.0]
    assert queue.pop(13).tick == 13
    assert queue.pop(14) is None


def test_a_chunk_arriving_entirely_late_contributes_nothing():
    queue = ActionQueue()
    assert merge(queue, [0, 1], obs_tick=0, now_tick=5, seq=1) == 0
    assert queue.depth(5) == 0


@pytest.mark.parametrize(("ensembling", "expected"), [
    ("newest", [10.0, 11.0]),                  # the newer chunk wins the overlap
    ("average", [(2 + 10) / 2, (3 + 11) / 2]),  # equal weights
    ("exponential", [0.5 * 2 + 0.5 * 10, 0.5 * 3 + 0.5 * 11]),
])
def test_overlapping_chunks_are_ensembled_as_configured(ensembling, expected):
    queue = ActionQueue(ensembling)
    merge(queue, [0, 1, 2, 3], obs_tick=0, now_tick=0, seq=1)
    merge(queue, [10, 11, 12], obs_tick=2, now_tick=2, seq=2)
    assert [queue.pop(2).action[0], queue.pop(3).action[0]] == pytest.approx(expected)
    assert queue.pop(4).action[0] == 12.0  # only the newer chunk covers tick 4


def test_popped_action_carries_the_newest_contributing_chunk_provenance():
    queue = ActionQueue("average")
    merge(queue, [0, 1, 2], obs_tick=0, now_tick=0, seq=4)
    merge(queue, [5, 6], obs_tick=1, now_tick=1, seq=5)
    popped = queue.pop(1)
    assert (popped.seq, popped.obs_tick, popped.episode, popped.epoch, popped.model_id) == (
        5, 1, 1, 2, "m")


def test_chunk_of_an_older_observation_is_dropped_whole():
    queue = ActionQueue()
    merge(queue, [1, 1, 1], obs_tick=5, now_tick=5, seq=9)
    assert merge(queue, [7, 7, 7, 7], obs_tick=4, now_tick=5, seq=8) == 0
    assert queue.out_of_order == 1
    assert queue.pop(5).seq == 9


def test_depth_counts_consecutive_actions_and_pop_forgets_older_ones():
    queue = ActionQueue()
    merge(queue, [0, 1, 2, 3], obs_tick=0, now_tick=0, seq=1)
    assert queue.depth(0) == 4 and queue.depth(2) == 2
    assert queue.pop(3).tick == 3
    assert queue.depth(0) == 0  # ticks 0..2 were forgotten by popping tick 3


def test_clear_empties_the_queue_and_accepts_sequence_ids_from_zero_again():
    queue = ActionQueue()
    merge(queue, [0, 1], obs_tick=0, now_tick=0, seq=5)
    queue.clear()
    assert queue.depth(0) == 0
    assert merge(queue, [3], obs_tick=0, now_tick=0, seq=0) == 1


def test_bad_ensembling_settings_are_rejected_naming_the_field():
    with pytest.raises(ValueError, match="client.ensembling='median'"):
        ActionQueue("median")
    with pytest.raises(ValueError, match="client.exponential_weight=0"):
        ActionQueue("exponential", exponential_weight=0)
