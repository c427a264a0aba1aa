"""Message faults: a wrapper of the client's transport that drops, corrupts, duplicates,
delays or reorders stream messages while a fault window is open.

It wraps the interface, not a backend (`FaultyClient(make_client(config))`), so the same
fault acts on zenoh, grpc, zmq and local alike, on the robot's side of the link: outgoing
observations and incoming action chunks. Requests (session open, reset, close) pass
untouched: a control message lost is a different fault (a partition). Which message is hit
is drawn from a generator seeded per episode; with the measured latency the number of
messages in a window varies with timing, so an emulated message fault is reproducible in
distribution, not byte for byte (`faults.apply=modelled` is: `harness.faults.modelled`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from transports import TransportClient


@dataclass(frozen=True)
class MessageFault:
    """What happens to each stream message while the window is open: with `probability`,
    `action` ("drop", "corrupt", "duplicate", "delay", "reorder"); `delay_s` for "delay"."""

    action: str
    probability: float = 1.0
    delay_s: float = 0.2

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"message fault action={self.action!r}: expected one of {ACTIONS}")


ACTIONS = ("drop", "corrupt", "duplicate", "delay", "reorder")


class GilbertElliott:
    """Burst loss: a two-state chain per direction (good, bad), stepped once per message;
    each state loses a message with its own probability. Bursts, not independent drops, are
    what Wi-Fi and LTE links do to a stream."""

    def __init__(self, p_good_bad: float, p_bad_good: float, loss_good: float,
                 loss_bad: float) -> None:
        self.p_good_bad, self.p_bad_good = p_good_bad, p_bad_good
        self.loss_good, self.loss_bad = loss_good, loss_bad
        self.bad = {"out": False, "in": False}

    def lose(self, rng: np.random.Generator, way: str) -> bool:
        bad = self.bad[way]
        bad = (rng.random() >= self.p_bad_good) if bad else (rng.random() < self.p_good_bad)
        self.bad[way] = bad
        return bool(rng.random() < (self.loss_bad if bad else self.loss_good))


@dataclass
class MessageFaultStats:
    hit: int = 0
    """Messages the fault acted on."""
    lost: int = 0
    """Messages the burst loss took."""


class FaultyClient:
    """A `TransportClient` that applies `fault` to its stream messages while `active`."""

    def __init__(self, inner: TransportClient, *, seed: int = 0) -> None:
        self.inner = inner
        self.client_id = inner.client_id
        self.stats = inner.stats
        self.fault_stats = MessageFaultStats()
        self.fault: MessageFault | None = None
        """The fault in force, or None (every message passes)."""
        self.loss: GilbertElliott | None = None
        """Burst loss in force (independent of `fault`), or None."""
        self.world_left = False
        """The window has lasted its duration in wall time while the robot's control time
        has not reached its end (a simulator slower than real time): outgoing messages,
        which the world sees, pass untouched; incoming ones, which the robot sees, are still
        hit (`harness.faults.gate` says why)."""
        self._rng = np.random.default_rng(seed)
        self._held: list[tuple[float, bytes, int]] = []
        """Incoming messages held back: (release at, payload, arrival ns)."""
        self._reordered: tuple[bytes, int] | None = None
        self._lock = threading.Lock()

    def reseed(self, seed: int) -> None:
        """Start the episode's draws (the job calls it with the episode's key)."""
        self._rng = np.random.default_rng(seed)

    def _hits(self) -> MessageFault | None:
        fault = self.fault
        if fault is None or self._rng.random() >= fault.probability:
            return None
        self.fault_stats.hit += 1
        return fault

    @staticmethod
    def _corrupt(payload: bytes) -> bytes:
        """Flip bits past the 34-byte header, or in it if there is no body: a codec must
        reject it, never crash."""
        data = bytearray(payload)
        if data:
            for i in range(min(34, len(data) - 1), len(data), max(1, len(data) // 8)):
                data[i] ^= 0xFF
        return bytes(data)

    # ---- the stream path, where the faults act --------------------------------------------

    def _lost(self, way: str) -> bool:
        if self.loss is None or not self.loss.lose(self._rng, way):
            return False
        self.fault_stats.lost += 1
        return True

    def publish(self, payload: bytes) -> None:
        if self.world_left:
            self.inner.publish(payload)
            return
        if self._lost("out"):
            return
        fault = self._hits()
        if fault is None or fault.action in ("delay", "reorder"):  # those act on the way in
            self.inner.publish(payload)
        elif fault.action == "corrupt":
            self.inner.publish(self._corrupt(payload))
        elif fault.action == "duplicate":
            self.inner.publish(payload)
            self.inner.publish(payload)
        # "drop": nothing is sent

    def take_stream_timed(self, timeout_s: float = 0.0) -> tuple[bytes, int] | None:
        with self._lock:
            taken = self.inner.take_stream_timed(timeout_s)
            if taken is not None:
                taken = self._arriving(*taken)
            now = time.monotonic()
            due = [h for h in self._held if h[0] <= now]
            if taken is None and due:
                self._held.remove(due[0])
                _, payload, _ = due[0]
                taken = (payload, time.monotonic_ns())  # it arrives now, late
            return taken

    def _arriving(self, payload: bytes, arrival_ns: int) -> tuple[bytes, int] | None:
        if self._lost("in"):
            return None
        fault = self._hits()
        if fault is None:
            if self._reordered is not None:  # the held one comes after this one
                held, self._reordered = self._reordered, None
                self._held.append((0.0, held[0], held[1]))
            return payload, arrival_ns
        if fault.action == "drop":
            return None
        if fault.action == "corrupt":
            return self._corrupt(payload), arrival_ns
        if fault.action == "delay":
            self._held.append((time.monotonic() + fault.delay_s, payload, arrival_ns))
            return None
        if fault.action == "reorder":
            if self._reordered is None:
                self._reordered = (payload, arrival_ns)
                return None
            earlier, self._reordered = self._reordered, None
            self._held.append((0.0, earlier[0], earlier[1]))
            return payload, arrival_ns
        return payload, arrival_ns  # "duplicate" acts on the way out

    def take_stream(self, timeout_s: float = 0.0) -> bytes | None:
        taken = self.take_stream_timed(timeout_s)
        return None if taken is None else taken[0]

    # ---- everything else passes through ---------------------------------------------------

    def request(self, payload: bytes, *, timeout_s: float) -> bytes:
        return self.inner.request(payload, timeout_s=timeout_s)

    def order_stream_by(self, key: Callable[[bytes], int],
                        on_displaced: Callable[[bytes, int], bool] | None = None) -> None:
        """Passed through: what the inner inbox sets aside (error replies a newer chunk
        displaced) reaches the caller without this wrapper's faults, which act on what is
        taken from the stream."""
        self.inner.order_stream_by(key, on_displaced)

    def server_present(self) -> bool:
        return self.inner.server_present()

    def wait_ready(self, timeout_s: float) -> None:
        self.inner.wait_ready(timeout_s)

    def close(self) -> None:
        self.inner.close()
