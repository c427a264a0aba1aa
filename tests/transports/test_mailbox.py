"""The server's latest-only mailbox: what it remembers of clients stays bounded."""

from __future__ import annotations

from transports.mailbox import MAX_CLIENTS_REMEMBERED, LatestMailbox


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
