"""How smoothly an episode's chunks join: the jump between the last action executed from one
chunk and the first executed from the next, against the jumps between consecutive actions of
one chunk.

Real-time chunking exists for this number (Black, Galliker, Levine 2025): a chunk generated
from a later observation, by a policy whose chunks vary, need not continue the one the robot
is executing, and the arm jerks where they meet. A join ratio near 1 means chunks continue
each other as smoothly as a chunk continues itself. Jumps are Euclidean norms over the whole
action vector (gripper included), counted only between actions taken from chunks: a hold
(fallback or wait) between two chunks does not hide their join.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from harness.results.trace import TickRecord

FROM_A_CHUNK = ("fresh", "queued")


def chunk_join_columns(ticks: Iterable[TickRecord]) -> dict[str, float | int | None]:
    """`join_jump` and `inside_jump` (mean norms; None without any), their ratio
    `join_ratio`, and the number of `joins`, for an episode row."""
    joins, inside = [], []
    last: tuple[int | None, np.ndarray] | None = None
    previous_from_chunk = False
    for tick in ticks:
        from_chunk = tick.source in FROM_A_CHUNK
        if from_chunk:
            action = np.asarray(tick.action, np.float64)
            if last is not None:
                jump = float(np.linalg.norm(action - last[1]))
                if tick.seq != last[0]:
                    joins.append(jump)
                elif previous_from_chunk:
                    inside.append(jump)
            last = (tick.seq, action)
        previous_from_chunk = from_chunk
    join = float(np.mean(joins)) if joins else None
    within = float(np.mean(inside)) if inside else None
    return {"joins": len(joins), "join_jump": join, "inside_jump": within,
            "join_ratio": join / within if join is not None and within else None}


def summarize_joins(rows) -> dict[str, float | None]:
    """Over episode rows (a DataFrame with `join_jump`, `inside_jump`): the mean jump at
    joins and inside chunks, and their ratio, a ratio of means (an episode weighs by its
    jumps, not one vote each). None where no row has them (rows older than the columns)."""
    means = {}
    for column in ("join_jump", "inside_jump"):
        values = rows[column].dropna().astype(float) if column in rows else []
        means[column] = float(np.mean(values)) if len(values) else None
    join, within = means["join_jump"], means["inside_jump"]
    return {**means, "join_ratio": join / within if join is not None and within else None}
