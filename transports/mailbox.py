"""Latest-only buffers shared by every backend's stream path.

A robot policy should act on the newest observation, never on a backlog: if the server is
busy, an observation that was not yet served is worth nothing once a newer one exists. Both
structures here keep one item per owner and count what they replace, so the harness can
report how much was superseded. What must never be superseded unseen (an error reply) the
owner of a client's slot marks, and the slot hands it to a `SetAside` instead.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from transports.base import StreamItem, StreamStats

SET_ASIDE_CAPACITY = 64
"""Payloads a `SetAside` holds between two takes. A robot polls its inbox every control tick
and has one request in flight, so a handful is already a burst; past it the oldest goes."""


class SetAside:
    """Where a latest-only inbox puts the payloads it must not drop, until their owner takes
    them.

    Latest-only is right for action chunks (a newer one makes an older one worthless), wrong
    for a message that reports a fact: an error reply says a request failed, and the robot
    must count it (and re-open its session if the error says so) whatever reply overtook it
    before the next poll. The transport stays opaque to what bytes mean: the owner says
    which payloads to keep (`marks`) and hands `offer` to the inbox
    (`TransportClient.order_stream_by(key, on_displaced=set_aside.offer)`), which offers
    each payload it displaces instead of dropping it; the owner drains them with `take`.

    Thread-safe: `offer` runs on the transport's receive thread (under the inbox's lock, so
    `marks` must be cheap and must not raise), `take` on the owner's.
    """

    def __init__(self, marks: Callable[[bytes], bool], *,
                 capacity: int = SET_ASIDE_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"SetAside capacity={capacity}: must be >= 1")
        self.marks = marks
        self.capacity = capacity
        self.kept = 0
        """Payloads set aside so far (taken or not)."""
        self.overflow = 0
        """Payloads set aside and then dropped, the oldest first, because `capacity` were
        waiting: lost after all, so counted."""
        self._lock = threading.Lock()
        self._items: list[tuple[bytes, int]] = []

    def offer(self, payload: bytes, arrival_ns: int) -> bool:
        """Keep `payload` (arrived at `arrival_ns`, `time.monotonic_ns()`) if `marks` says
        so; True if kept, False to let the inbox drop it as it would have."""
        if not self.marks(payload):
            return False
        with self._lock:
            if len(self._items) >= self.capacity:
                del self._items[0]
                self.overflow += 1
            self._items.append((payload, arrival_ns))
            self.kept += 1
        return True

    def take(self) -> list[tuple[bytes, int]]:
        """Every payload set aside since the last take, oldest first, each exactly once, with
        the `time.monotonic_ns()` it arrived at. Never blocks on the network."""
        with self._lock:
            items, self._items = self._items, []
        return items


class LatestSlot:
    """One latest-only item: `put` replaces, `take` waits for and removes it.

    "Latest" is the last arrival, unless `order_key` (bytes -> int) says which of two items
    is newer: then an item that arrives after a newer one nobody took yet (a reordered or
    duplicated older message) is dropped instead of overwriting it, and counted. An item
    displaced either way that `on_displaced` (bytes, arrival ns -> bool) keeps is handed to
    it instead of dropped (`SetAside.offer`, `TransportClient.order_stream_by`).
    """

    def __init__(self, stats: StreamStats | None = None,
                 order_key: Callable[[bytes], int] | None = None,
                 on_displaced: Callable[[bytes, int], bool] | None = None) -> None:
        self._cond = threading.Condition()
        self._item: bytes | None = None
        self._arrival_ns = 0
        self.stats = stats if stats is not None else StreamStats()
        self.order_key = order_key
        self.on_displaced = on_displaced

    def order_by(self, key: Callable[[bytes], int],
                 on_displaced: Callable[[bytes, int], bool] | None = None) -> None:
        """Set `order_key` and `on_displaced` together, between two arrivals (what every
        backend's `order_stream_by` does)."""
        with self._cond:
            self.order_key, self.on_displaced = key, on_displaced

    def _kept(self, item: bytes, arrival_ns: int) -> bool:
        """Whether `on_displaced` took the displaced `item` (then it is not dropped)."""
        if self.on_displaced is None or not self.on_displaced(item, arrival_ns):
            return False
        self.stats.set_aside += 1
        return True

    def put(self, item: bytes) -> bool:
        """Store `item`; return True if it replaced one nobody took."""
        with self._cond:
            self.stats.received += 1
            now_ns = time.monotonic_ns()
            if (self.order_key is not None and self._item is not None
                    and self.order_key(item) < self.order_key(self._item)):
                if not self._kept(item, now_ns):
                    self.stats.out_of_order += 1
                return False
            replaced = self._item is not None
            if replaced and not self._kept(self._item, self._arrival_ns):
                self.stats.superseded += 1
            self._item = item
            self._arrival_ns = now_ns
            self._cond.notify_all()
            return replaced

    def take(self, timeout_s: float = 0.0) -> bytes | None:
        """Remove and return the item, waiting up to `timeout_s` for one; None if none came."""
        taken = self.take_timed(timeout_s)
        return None if taken is None else taken[0]

    def take_timed(self, timeout_s: float = 0.0) -> tuple[bytes, int] | None:
        """Like `take`, with the `time.monotonic_ns()` at which the item arrived."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._item is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            item, self._item = self._item, None
            return item, self._arrival_ns


MAX_CLIENTS_REMEMBERED = 4096
"""Clients whose last arrival a mailbox remembers; a session's robot heard from recently is
never the oldest of them unless thousands of other ids have sent since."""


class LatestMailbox:
    """One latest-only slot per client, taken round-robin so no client starves another."""

    def __init__(self, stats: StreamStats | None = None) -> None:
        self._cond = threading.Condition()
        # Insertion order is the round-robin order: a client that was served moves to the end.
        self._pending: OrderedDict[str, tuple[bytes, int]] = OrderedDict()
        self._arrivals: OrderedDict[str, int] = OrderedDict()
        """client -> when its newest item arrived, taken or not (until `forget`), most recent
        last; at most MAX_CLIENTS_REMEMBERED, so ids that never open a session (a client
        cycling them) cannot grow it without bound."""
        self.stats = stats if stats is not None else StreamStats()

    def put(self, client_id: str, item: bytes) -> bool:
        """Store the client's newest item; return True if it replaced an unserved one."""
        with self._cond:
            self.stats.received += 1
            replaced = client_id in self._pending
            if replaced:
                self.stats.superseded += 1
            # A replaced item keeps its client's place in the round-robin order.
            now_ns = time.monotonic_ns()
            self._pending[client_id] = (item, now_ns)
            self._arrivals[client_id] = now_ns
            self._arrivals.move_to_end(client_id)
            if len(self._arrivals) > MAX_CLIENTS_REMEMBERED:
                self._arrivals.popitem(last=False)  # the one heard from longest ago
            self._cond.notify_all()
            return replaced

    def take(self, timeout_s: float) -> StreamItem | None:
        """Remove and return the item of the longest-waiting client, or None."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            client_id, (item, received_ns) = self._pending.popitem(last=False)
            return StreamItem(client_id, item, received_ns)

    def last_arrival_ns(self, client_id: str) -> int | None:
        """When the client's newest item arrived, taken or not; None if none since `forget`."""
        with self._cond:
            return self._arrivals.get(client_id)

    def forget(self, client_id: str) -> None:
        """Forget a client's unserved item and its arrival time (its session ended)."""
        with self._cond:
            self._pending.pop(client_id, None)
            self._arrivals.pop(client_id, None)
