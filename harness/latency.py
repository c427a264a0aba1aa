"""Latency models for the virtual clock: which round trip decides when a chunk is usable."""

from __future__ import annotations

import numpy as np


class LatencyModel:
    """Round trip used for the clock: measured, fixed, or a seeded lognormal per request."""

    def __init__(self, kind: str = "measured", *, value_s: float = 0.0, sigma: float = 0.0,
                 seed: int = 0) -> None:
        if kind not in ("measured", "fixed", "lognormal"):
            raise ValueError(f"latency_model={kind!r}: expected measured, fixed or lognormal")
        if kind != "measured" and value_s <= 0:
            raise ValueError(f"latency_model.value_s={value_s}: must be positive")
        self.kind, self.value_s, self.sigma, self.seed = kind, value_s, sigma, seed

    def latency_for(self, seq: int, measured_s: float | None = None) -> float | None:
        """The latency to use for request `seq`; None if it is the (not yet) measured one."""
        if self.kind == "measured":
            return measured_s
        if self.kind == "fixed":
            return self.value_s
        rng = np.random.default_rng([self.seed, seq])
        return float(self.value_s * rng.lognormal(0.0, self.sigma))
