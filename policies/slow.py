"""Slow-model profiles: make any policy as slow as a large VLA on a given GPU.

The harness runs small policies on a CPU, but what it must judge is how a robot copes with
the inference time of a 7B VLA. `SlowPolicy` wraps any policy and sleeps, inside `predict`,
for a time drawn from a seeded distribution, so the server measures and reports it as
inference time and the closed loop sees it as latency. Presets follow the published OpenVLA
figures: ~405 ms mean per step served by SGLang on an L4
(SGLang's OpenVLA serving notes), ~120 ms per predict_action on an RTX 4090, i.e. 6-8 Hz with a
~30 ms LIBERO step (OpenVLA's LIBERO evaluation loop).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from envs.base import EnvObservation
from harness.protocol.contract import Contract
from policies.base import Policy


@dataclass(frozen=True)
class LatencyProfile:
    """Inference time in seconds: `median_s` scaled by a lognormal factor of spread `sigma`,
    clipped to [min_s, max_s]. sigma = 0 gives a fixed delay."""

    name: str
    median_s: float
    sigma: float = 0.0
    min_s: float = 0.0
    max_s: float = float("inf")

    def __post_init__(self) -> None:
        if self.median_s < 0 or self.sigma < 0 or not 0 <= self.min_s <= self.max_s:
            raise ValueError(f"latency profile {self.name!r}: need median_s >= 0, sigma >= 0 "
                             f"and 0 <= min_s <= max_s, got {self}")

    def sample(self, rng: np.random.Generator) -> float:
        factor = rng.lognormal(0.0, self.sigma) if self.sigma > 0 else 1.0
        return float(np.clip(self.median_s * factor, self.min_s, self.max_s))


PROFILES: dict[str, LatencyProfile] = {
    "none": LatencyProfile("none", 0.0),
    # OpenVLA 7B served by SGLang on one L4: ~405 ms mean per action step.
    "openvla_l4": LatencyProfile("openvla_l4", 0.405, sigma=0.08, min_s=0.30, max_s=0.60),
    # OpenVLA 7B on an RTX 4090: ~120 ms per predict_action (6-8 Hz with the sim step).
    "openvla_4090": LatencyProfile("openvla_4090", 0.120, sigma=0.08, min_s=0.095,
                                   max_s=0.160),
}


def profile(name: str) -> LatencyProfile:
    if name not in PROFILES:
        raise ValueError(f"policy.latency_profile={name!r}: expected one of {sorted(PROFILES)}")
    return PROFILES[name]


class SlowPolicy:
    """`inner` plus a sampled sleep in every `predict`. Reseeded at each `reset(seed=...)`, so
    an episode's delays repeat exactly; `delays_s` lists this episode's delays."""

    def __init__(self, inner: Policy, latency: LatencyProfile, *, seed: int = 0) -> None:
        self.inner = inner
        self.latency = latency
        self.spec: Contract = inner.spec
        self._rng = np.random.default_rng(seed)
        self.delays_s: list[float] = []

    def reset(self, *, seed: int) -> None:
        self._rng = np.random.default_rng(seed)
        self.delays_s = []
        self.inner.reset(seed=seed)

    def predict(self, observation: EnvObservation,
                committed: np.ndarray | None = None) -> np.ndarray:
        delay = self.latency.sample(self._rng)
        self.delays_s.append(delay)
        started = time.monotonic()
        chunk = (self.inner.predict(observation) if committed is None
                 else self.inner.predict(observation, committed))
        remaining = delay - (time.monotonic() - started)
        if remaining > 0:
            time.sleep(remaining)
        return chunk
