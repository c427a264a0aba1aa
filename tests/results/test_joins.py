"""Chunk-join smoothness (`harness.results.joins`), on hand-made traces whose jumps are
known: joins and inside jumps told apart by the chunk an action came from, holds between
chunks skipped."""

from __future__ import annotations

import pytest

from harness.results.joins import chunk_join_columns
from harness.results.trace import TickRecord


def tick(i: int, source: str, seq: int | None, action: list[float]) -> TickRecord:
    return TickRecord(i, source, "streaming", 1, seq, None, action)


def test_joins_and_inside_jumps_are_told_apart_by_the_chunk_an_action_came_from():
    ticks = [tick(0, "fresh", 1, [0.0, 0.0]), tick(1, "queued", 1, [0.1, 0.0]),
             tick(2, "fresh", 2, [0.4, 0.4]),   # a join: from (0.1, 0) to (0.4, 0.4), 0.5
             tick(3, "queued", 2, [0.4, 0.5])]  # inside: 0.1
    columns = chunk_join_columns(ticks)
    assert columns["joins"] == 1
    assert columns["join_jump"] == pytest.approx(0.5)
    assert columns["inside_jump"] == pytest.approx(0.1)
    assert columns["join_ratio"] == pytest.approx(5.0)


def test_a_hold_between_two_chunks_does_not_hide_their_join_nor_count_inside():
    ticks = [tick(0, "fresh", 1, [1.0]), tick(1, "fallback", None, [0.0]),
             tick(2, "wait", None, [0.0]), tick(3, "fresh", 2, [0.25]),
             tick(4, "fallback", None, [0.0]), tick(5, "queued", 2, [0.5])]
    columns = chunk_join_columns(ticks)
    assert (columns["joins"], columns["join_jump"]) == (1, pytest.approx(0.75))
    assert columns["inside_jump"] is None and columns["join_ratio"] is None  # 3->5 held


def test_an_episode_without_chunks_has_no_figures():
    assert chunk_join_columns([tick(0, "fallback", None, [0.0])]) == {
        "joins": 0, "join_jump": None, "inside_jump": None, "join_ratio": None}
