"""How the policy server's inference thread picks what it serves next: one observation at a
time (`round_robin`), or a micro-batch of several robots' observations predicted in one pass
(`micro_batch`, with `max_batch_size` and `max_wait_ms`, as vla-eval's
`BatchPredictModelServer` has `max_batch_size` and `max_wait_time`).

Both take from the transport's mailbox, which keeps one newest observation per robot and hands
them out longest-waiting first: so a batch never holds two observations of one robot, and a
robot left out of a full batch is first in the next one (no robot starves). Waiting for a
batch to fill costs latency; the wait starts when the first observation is taken and never
exceeds `max_wait_ms`, and a batch that is full goes at once.

The reference design (`../shared/reference/decoupled-inference-design.md`, section 8.5) put
micro-batching behind this seam for later, because robots batched together have different
delays and prefixes; our wire carries each robot's delay and prefix, and a batched predict
takes them per robot (`policies.base.BatchItem`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from policies.base import BatchItem, BatchPolicy, predict_or_error
from transports import StreamItem

log = logging.getLogger(__name__)

Take = Callable[[float], "StreamItem | None"]
"""The transport's `take_stream(timeout_s)`."""


class Scheduler(Protocol):
    max_batch_size: int

    def collect(self, take: Take, timeout_s: float) -> list[StreamItem]:
        """The next observations to serve together, at most `max_batch_size` of distinct
        robots; empty if none arrived within `timeout_s`."""


@dataclass(frozen=True)
class RoundRobin:
    """One observation per pass, of the robot that has waited longest."""

    max_batch_size: int = 1

    def collect(self, take: Take, timeout_s: float) -> list[StreamItem]:
        item = take(timeout_s)
        return [] if item is None else [item]


@dataclass(frozen=True)
class MicroBatch:
    """Up to `max_batch_size` robots' observations, waiting at most `max_wait_s` after the
    first for the batch to fill."""

    max_batch_size: int
    max_wait_s: float

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"server.max_batch_size={self.max_batch_size}: must be >= 1")
        if self.max_wait_s < 0:
            raise ValueError(f"server.max_wait_ms={self.max_wait_s * 1e3:g}: must be >= 0")

    def collect(self, take: Take, timeout_s: float) -> list[StreamItem]:
        first = take(timeout_s)
        if first is None:
            return []
        batch = {first.client_id: first}
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            item = take(max(0.0, deadline - time.monotonic()))
            if item is None:
                break
            # A robot already in the batch sent a newer observation while it filled: the
            # newest wins, as in the mailbox, and keeps the robot's place.
            batch[item.client_id] = item
        return list(batch.values())


SCHEDULERS = ("round_robin", "micro_batch")


def make_scheduler(name: str, *, max_batch_size: int = 1, max_wait_ms: float = 0.0
                   ) -> Scheduler:
    """The scheduler `server.scheduler` names.

    Raises:
        ValueError: an unknown name (listing the known ones), or a bad batch setting (naming
            the field).
    """
    if name == "round_robin":
        return RoundRobin()
    if name == "micro_batch":
        return MicroBatch(max_batch_size, max_wait_ms / 1e3)
    raise ValueError(f"server.scheduler={name!r}: expected one of {list(SCHEDULERS)}")


def predict_together(requests: list[BatchItem]) -> list[np.ndarray | Exception]:
    """Every robot's chunk, or the exception of its own predict, in order. One batched pass
    when there are several robots and the policy has `predict_batch`; otherwise, or when the
    batched pass raises (or answers for another number of robots), robot by robot, so that
    only a robot whose own predict raises fails. Called with every robot's session lock
    held."""
    lead = requests[0].policy
    if len(requests) > 1 and isinstance(lead, BatchPolicy):
        try:
            results = lead.predict_batch(requests)
            if len(results) == len(requests):
                return results
            log.error("a batched predict of %d robots returned %d results: serving them one "
                      "by one", len(requests), len(results))
        except Exception:  # noqa: BLE001 - retried one by one below
            log.exception("a batched predict of %d robots failed: serving them one by one",
                          len(requests))
    return [predict_or_error(request) for request in requests]
