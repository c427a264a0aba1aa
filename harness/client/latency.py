"""Latency models for the virtual clock: which round trip decides when a chunk is usable."""

from __future__ import annotations

import enum

import numpy as np


class LatencyKind(enum.StrEnum):
    """Lower-case members: Hydra matches config values by name."""

    measured = "measured"
    """The real round trip of each request."""
    fixed = "fixed"
    """`value_s` for every request: replayable byte for byte."""
    lognormal = "lognormal"
    """A seeded draw per request around the median `value_s`: replayable too."""


class LatencyModel:
    """Round trip used for the clock: measured, fixed, or a seeded lognormal per request."""

    def __init__(self, kind: LatencyKind = LatencyKind.measured, *, value_s: float = 0.0,
                 sigma: float = 0.0, seed: int = 0) -> None:
        kind = LatencyKind(kind)
        if kind is not LatencyKind.measured and value_s <= 0:
            raise ValueError(f"latency_model.value_s={value_s}: must be positive")
        self.kind, self.value_s, self.sigma, self.seed = kind, value_s, sigma, seed

    def expected_s(self) -> float | None:
        """The round trip to expect before any was measured: the configured value (the
        median for lognormal), None when latencies are measured."""
        return None if self.kind is LatencyKind.measured else self.value_s

    def latency_for(self, key: tuple[int, int], measured_s: float | None = None, *,
                    sent_tick: int = 0) -> float | None:
        """The latency to use for the request `key` = (episode, its index in the episode),
        sent at control tick `sent_tick`; None if it is the (not yet) measured one, inf if
        the request is lost (a modelled fault, `harness.faults.modelled`). Keyed by episode,
        not by a run-wide counter, so a resumed run or one episode run alone draws the same
        values."""
        if self.kind is LatencyKind.measured:
            return measured_s
        if self.kind is LatencyKind.fixed:
            return self.value_s
        rng = np.random.default_rng([self.seed, *key])
        return float(self.value_s * rng.lognormal(0.0, self.sigma))
