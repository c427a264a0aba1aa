"""Slow-model profiles: make any policy as slow as a large VLA on a given GPU.

The harness runs small policies on a CPU, but what it must judge is how a robot copes with
the inference time of a 7B VLA. `SlowPolicy` wraps any policy and sleeps, inside `predict`,
for a time drawn from a seeded distribution, so the server measures and reports it as
inference time and the closed loop sees it as latency. Presets follow the published OpenVLA
figures: ~405 ms mean per step served by SGLang on an L4
(SGLang's OpenVLA serving notes), ~120 ms per predict_action on an RTX 4090, i.e. 6-8 Hz with a
~30 ms LIBERO step (OpenVLA's LIBERO evaluation loop).

A batch of B robots predicted in one pass (the server's `micro_batch` scheduler) takes
t(B) = t1 * (1 + batch_alpha * (B - 1)): the part of a pass that B robots share (reading the
weights) is paid once, the part each robot adds (its own tokens' compute) B times. No batched
OpenVLA timing is published for these GPUs, so `batch_alpha` is a roofline estimate from
public figures, not a measurement. OpenVLA-7B in bf16 reads ~15 GB of weights per decoding
step; predict_action is one prefill of ~276 tokens (256 image patches and the prompt) and 7
decoding steps (one per action dimension). On an RTX 4090 (1,008 GB/s, 165 TFLOPS bf16 with
fp32 accumulation) the 7 weight reads take ~105 ms, which with the prefill is the ~120 ms
observed, and are shared by a batch; one more robot adds its prefill (2 x 7e9 x 276 = 3.9
TFLOP, ~25-30 ms near peak) and 7 tokens (~1 ms): alpha = 28 / 120 ~ 0.25. On an L4
(300 GB/s, 121 TFLOPS) the weight reads are ~350 of the ~405 ms and a robot adds ~55 ms:
alpha ~ 0.15. A measured t(B) of a real model (`python -m harness.bench.serving` measures
the flow policy's on this CPU) replaces the estimate.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from envs.base import EnvObservation
from harness.protocol.contract import Contract
from policies.base import BatchItem, BatchPolicy, Policy, predict_or_error


@dataclass(frozen=True)
class LatencyProfile:
    """Inference time in seconds: `median_s` scaled by a lognormal factor of spread `sigma`,
    clipped to [min_s, max_s]. sigma = 0 gives a fixed delay."""

    name: str
    median_s: float
    sigma: float = 0.0
    min_s: float = 0.0
    max_s: float = float("inf")
    batch_alpha: float = 1.0
    """The extra time of each robot beyond the first in a batched pass, as a fraction of one
    pass: 1 (the default) shares nothing, 0 makes a batch as fast as one robot."""

    def __post_init__(self) -> None:
        if not 0 <= self.batch_alpha <= 1:
            raise ValueError(f"latency profile {self.name!r}: batch_alpha={self.batch_alpha} "
                             "must be in [0, 1]")
        if self.median_s < 0 or self.sigma < 0 or not 0 <= self.min_s <= self.max_s:
            raise ValueError(f"latency profile {self.name!r}: need median_s >= 0, sigma >= 0 "
                             f"and 0 <= min_s <= max_s, got {self}")

    def sample(self, rng: np.random.Generator) -> float:
        factor = rng.lognormal(0.0, self.sigma) if self.sigma > 0 else 1.0
        return float(np.clip(self.median_s * factor, self.min_s, self.max_s))

    def batch_s(self, one_s: float, batch_size: int) -> float:
        """Time of a pass of `batch_size` robots whose pass alone would take `one_s`."""
        return one_s * (1.0 + self.batch_alpha * (batch_size - 1))


PROFILES: dict[str, LatencyProfile] = {
    "none": LatencyProfile("none", 0.0),
    # OpenVLA 7B served by SGLang on one L4: ~405 ms mean per action step.
    "openvla_l4": LatencyProfile("openvla_l4", 0.405, sigma=0.08, min_s=0.30, max_s=0.60,
                                 batch_alpha=0.15),
    # OpenVLA 7B on an RTX 4090: ~120 ms per predict_action (6-8 Hz with the sim step).
    "openvla_4090": LatencyProfile("openvla_4090", 0.120, sigma=0.08, min_s=0.095,
                                   max_s=0.160, batch_alpha=0.25),
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
        delay = self._draw_delay()
        started = time.monotonic()
        chunk = (self.inner.predict(observation) if committed is None
                 else self.inner.predict(observation, committed))
        remaining = delay - (time.monotonic() - started)
        if remaining > 0:
            time.sleep(remaining)
        return chunk

    def predict_batch(self, items: Sequence[BatchItem]) -> list[np.ndarray | Exception]:
        """The inner policy's chunks (batched if it batches, else one by one), in the time of
        one batched pass: each robot draws its delay from its own generator as `predict`
        does, and the pass takes `latency.batch_s` of their mean."""
        delays = [item.policy._draw_delay() for item in items]
        started = time.monotonic()
        inner = [BatchItem(item.policy.inner, item.observation, item.committed)
                 for item in items]
        if isinstance(self.inner, BatchPolicy):
            chunks = self.inner.predict_batch(inner)
        else:
            chunks = [predict_or_error(item) for item in inner]
        remaining = (self.latency.batch_s(float(np.mean(delays)), len(items))
                     - (time.monotonic() - started))
        if remaining > 0:
            time.sleep(remaining)
        return chunks

    def _draw_delay(self) -> float:
        delay = self.latency.sample(self._rng)
        self.delays_s.append(delay)
        return delay

