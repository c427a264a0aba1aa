"""Link shaping: how one direction of a proxied link treats bytes, and its seeded draws.

`LinkShape` is what the fault proxy's control API takes (`FaultProxy.set_shape`): one-way
delay, jitter, bandwidth; `JitterSource` draws the per-chunk delays from a seed, so the same
seed and shapes give the same draws; `TokenBucket` paces the bytes of a bandwidth limit. No
sockets here: the byte pipe (`harness.faults.pipe`) applies these as bytes arrive and leave.
See `harness.faults.proxy` for what the proxy can and cannot emulate.
"""

from __future__ import annotations

import enum
import math
import numbers
from dataclasses import dataclass

import numpy as np

from harness.faults.schedule import JitterDist, jittered

_PACE_S = 0.001
"""Bandwidth pieces hold at least this much link time, so a small bucket at a high rate does
not take one loop iteration per ~1500 bytes."""


class Direction(enum.StrEnum):
    """Which way bytes travel through the proxy."""

    to_server = "to_server"
    to_client = "to_client"


JITTER_DISTS = ("normal", "pareto")


def is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass(frozen=True)
class LinkShape:
    """How one direction of the link treats bytes (see `harness.faults.proxy` for jitter)."""

    delay_s: float = 0.0
    """One-way delay added to every chunk of bytes."""
    jitter_s: float = 0.0
    """Spread of a seeded random extra delay per chunk: the standard deviation for "normal",
    the scale for "pareto"."""
    jitter_dist: str = "normal"
    """"normal": delay_s + N(0, jitter_s), truncated at 0. "pareto": delay_s + a Lomax draw
    of scale jitter_s and shape pareto_alpha (always >= delay_s, heavy tail)."""
    bandwidth_bps: float = 0.0
    """Bits per second, 0 = unlimited. A token bucket: P bytes take about 8 P / bandwidth_bps."""
    burst_bytes: int = 1500
    """Depth of the token bucket: bytes that may leave at once after the link was idle."""
    pareto_alpha: float = 2.0
    """Shape of the "pareto" jitter, > 1 (the mean extra delay is jitter_s / (alpha - 1))."""

    def __post_init__(self) -> None:
        for name in ("delay_s", "jitter_s", "bandwidth_bps"):
            value = getattr(self, name)
            if not is_real(value) or not math.isfinite(value) or value < 0:
                raise ValueError(f"LinkShape.{name} must be a finite number >= 0, got {value!r}")
        if self.jitter_dist not in JITTER_DISTS:
            raise ValueError(f"LinkShape.jitter_dist must be one of {JITTER_DISTS}, "
                             f"got {self.jitter_dist!r}")
        if not is_int(self.burst_bytes) or self.burst_bytes < 1:
            raise ValueError(f"LinkShape.burst_bytes must be an int >= 1, "
                             f"got {self.burst_bytes!r}")
        alpha = self.pareto_alpha
        if not is_real(alpha) or not math.isfinite(alpha) or alpha <= 1:
            raise ValueError(f"LinkShape.pareto_alpha must be a finite number > 1, got {alpha!r}")


@dataclass
class ProxyStats:
    """Counters since start(); `FaultProxy.stats` returns a copy."""

    accepted: int = 0
    """Client connections accepted."""
    open: int = 0
    """Connections open now."""
    bytes_to_server: int = 0
    """Bytes written to the server side."""
    bytes_to_client: int = 0
    """Bytes written to the client side."""
    resets: int = 0
    """Connections reset by `reset_connections()`."""
    upstream_failures: int = 0
    """Client connections closed because the server refused (or timed out)."""
    held_bytes: int = 0
    """Bytes that were held in the proxy while a partition was on."""

    def forwarded(self, direction: Direction) -> int:
        return self.bytes_to_server if direction is Direction.to_server else self.bytes_to_client


class JitterSource:
    """Seeded per-chunk delays of one direction: the same seed and shapes give the same draws."""

    def __init__(self, seed: int, stream: int = 0) -> None:
        self._rng = np.random.default_rng([seed, stream])

    def delay(self, shape: LinkShape) -> float:
        """The one-way delay of the next chunk under `shape`, in seconds (a draw only when
        shape.jitter_s > 0)."""
        if shape.jitter_s <= 0:
            return shape.delay_s
        return jittered(self._rng, shape.delay_s, JitterDist(shape.jitter_dist), shape.jitter_s,
                        pareto_shape=shape.pareto_alpha)


class TokenBucket:
    """A token bucket in virtual time (GCRA): `earliest` and `commit` take the time a piece
    was due, not the time the writer got to it, so a late wake-up costs no throughput."""

    def __init__(self) -> None:
        self.rate = 0.0  # bytes per second; 0 = unlimited
        self.depth = 1500
        self._tat = -math.inf  # theoretical arrival time of the next byte

    def configure(self, shape: LinkShape) -> None:
        self.rate = shape.bandwidth_bps / 8.0
        self.depth = shape.burst_bytes

    def piece(self) -> int:
        """Bytes to pass the bucket at once."""
        return max(self.depth, math.ceil(self.rate * _PACE_S))

    def earliest(self, t: float, n: int) -> float:
        """When `n` bytes due at `t` may leave: once they fit in the bucket, or, larger than
        the bucket, once it is empty (they then hold the link for n / rate)."""
        if self.rate <= 0:
            return t
        return max(t, self._tat - max(0, self.depth - n) / self.rate)

    def commit(self, t: float, n: int) -> None:
        if self.rate > 0:
            self._tat = max(self._tat, t) + n / self.rate
