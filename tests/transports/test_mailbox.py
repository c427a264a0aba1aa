"""The server's latest-only mailbox: what it remembers of clients stays bounded. The
client's latest-only slot: what its owner marks (error replies) is set aside, never dropped."""

from __future__ import annotations

import time

import numpy as np
import pytest

from harness import protocol
from transports.mailbox import MAX_CLIENTS_REMEMBERED, LatestMailbox, LatestSlot, SetAside


def test_arrival_times_are_kept_for_the_most_recent_clients_only():
    mailbox = LatestMailbox()
    mailbox.put("robot", b"obs")
    assert mailbox.take(0.0).client_id == "robot"
    for i in range(MAX_CLIENTS_REMEMBERED - 1):  # the robot is still the oldest remembered
        mailbox.put(f"id-{i}", b"x")
    assert mailbox.last_arrival_ns("robot") is not None
    mailbox.put("robot", b"obs")  # heard again: now the most recent
    mailbox.put("one-more", b"x")
    assert mailbox.last_arrival_ns("robot") is not None
    assert mailbox.last_arrival_ns("id-0") is None  # the one heard from longest ago went
    for i in range(2 * MAX_CLIENTS_REMEMBERED):
        mailbox.put(f"cycling-{i}", b"x")
    assert len(mailbox._arrivals) == MAX_CLIENTS_REMEMBERED
    assert mailbox.last_arrival_ns("robot") is None
    assert mailbox.last_arrival_ns(f"cycling-{2 * MAX_CLIENTS_REMEMBERED - 1}") is not None


# ---- the client's slot: latest-only, but what the owner marks is set aside ----------------

def _marked(payload: bytes) -> bool:
    return payload.startswith(b"error")


def _seq(payload: bytes) -> int:
    return int(payload.rsplit(b"-", 1)[1])


def test_a_marked_payload_overtaken_before_take_is_set_aside_once_and_not_counted_dropped():
    set_aside = SetAside(_marked)
    slot = LatestSlot(order_key=_seq, on_displaced=set_aside.offer)
    slot.put(b"error-1")
    slot.put(b"chunk-2")  # lands before anyone took the error
    assert slot.take() == b"chunk-2"
    assert [payload for payload, _ in set_aside.take()] == [b"error-1"]
    assert set_aside.take() == []  # each exactly once
    assert (slot.stats.superseded, slot.stats.out_of_order, slot.stats.set_aside) == (0, 0, 1)


def test_an_older_marked_payload_arriving_late_is_set_aside_with_its_arrival_time():
    set_aside = SetAside(_marked)
    slot = LatestSlot(order_key=_seq, on_displaced=set_aside.offer)
    slot.put(b"chunk-6")
    before_ns = time.monotonic_ns()
    slot.put(b"error-5")  # reordered: older than the chunk waiting
    ((payload, arrival_ns),) = set_aside.take()
    assert payload == b"error-5" and arrival_ns >= before_ns
    assert slot.take() == b"chunk-6"
    assert (slot.stats.out_of_order, slot.stats.set_aside) == (0, 1)


def test_unmarked_payloads_stay_latest_only_and_counted():
    set_aside = SetAside(_marked)
    slot = LatestSlot(order_key=_seq, on_displaced=set_aside.offer)
    for payload in (b"chunk-1", b"chunk-3", b"chunk-2"):
        slot.put(payload)
    assert slot.take() == b"chunk-3" and slot.take() is None
    assert set_aside.take() == []
    assert (slot.stats.superseded, slot.stats.out_of_order, slot.stats.set_aside) == (1, 1, 0)


def test_without_a_set_aside_an_overtaken_error_is_dropped():
    """What the client's inbox did before set-asides (issue 21): the error is lost."""
    slot = LatestSlot(order_key=_seq)
    slot.put(b"error-1")
    slot.put(b"chunk-2")
    assert slot.take() == b"chunk-2" and slot.take() is None
    assert slot.stats.superseded == 1


def test_a_full_set_aside_drops_its_oldest_and_counts_it():
    set_aside = SetAside(_marked, capacity=2)
    for seq in range(1, 4):
        assert set_aside.offer(f"error-{seq}".encode(), seq)
    assert not set_aside.offer(b"chunk-4", 4)
    assert set_aside.take() == [(b"error-2", 2), (b"error-3", 3)]
    assert (set_aside.kept, set_aside.overflow) == (3, 1)
    with pytest.raises(ValueError, match="capacity=0"):
        SetAside(_marked, capacity=0)


def test_the_real_error_mark_reads_the_header_only():
    chunk = protocol.encode(protocol.Message(protocol.ActionChunk(
        np.zeros((1, 2), np.float32), 1, 0, 0, "m"), seq=1))
    error = protocol.encode(protocol.Message(protocol.Error("inference", "boom"), seq=1))
    assert protocol.is_error(error) and not protocol.is_error(chunk)
    assert not protocol.is_error(b"") and not protocol.is_error(b"XX" + error[2:])
