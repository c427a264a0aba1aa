"""Episode ids: one formula, used by the loop job that writes episodes and by the reports
that check a sweep for missing ones."""

from __future__ import annotations

EPISODE_IDS_PER_TASK = 10_000
"""Ids of task t are t * EPISODE_IDS_PER_TASK + 1 ...: unique across a run's tasks."""


def episode_id(task: int, index: int) -> int:
    """The id of the task's `index`-th episode (0-based); never 0 (0 means no episode)."""
    if not 0 <= index < EPISODE_IDS_PER_TASK - 1:
        raise ValueError(f"episode index {index}: must be in 0..{EPISODE_IDS_PER_TASK - 2}")
    return task * EPISODE_IDS_PER_TASK + index + 1
