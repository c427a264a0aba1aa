"""Modelled faults: the fault schedule applied to the latency model, so a faulted run replays
byte for byte (`faults.apply=modelled`).

Emulated faults act on the real system, and what the robot sees then depends on timing: how
many messages fall into a window, when a reconnect completes. A modelled fault decides, for
each request, from the schedule, the run's seed and the request's key alone, how late its
reply becomes usable or whether it is lost; the real server still answers at once and the
virtual clock holds each reply until the modelled round trip says so. Nothing then depends on
the transport or on the machine, which is what golden parity under faults checks.

What each kind does to a request sent at control time t whose round trip is L (the base
latency model's, fixed or lognormal):

- latency: + delay (per direction it acts on) + a seeded jitter draw per direction;
- bandwidth: + request bytes / B toward the server, + reply bytes / B back;
- slow_model: + predict_s + a jitter draw; model_pause: + the pause, for the first
  request sent in the window;
- delay: + delay_s (a chunk held back);
- partition, server_stall: a flight overlapping the window lands at its end + L (bytes held
  and released, a stopped process resumed);
- server_crash, server_drain, reset: a flight overlapping the window is lost;
- drop, corrupt, reorder: lost with `probability` if sent in the window (a corrupt chunk is
  rejected by the codec; a reordered one arrives after its successor and is dropped);
  duplicate: nothing (the stream is latest-only);
- loss: a Gilbert-Elliott chain over the episode's requests, each way.

What it does not model: a session lost to a restart (the engine stays in its session, so
there is no RECONNECTING), wall-time mechanisms such as leases and TCP backoff. Comparing a
modelled with an emulated run of one schedule (the agreement report) measures exactly that.
"""

from __future__ import annotations

import math

import numpy as np

from harness.faults.messages import GilbertElliott
from harness.faults.schedule import Direction, FaultKind, FaultWindow, jittered
from harness.client.latency import LatencyModel


def _ways(direction: Direction) -> int:
    return 2 if direction is Direction.both else 1


class ModelledLink:
    """A latency model with the episode's fault windows applied (see the module docstring).
    The job calls `start_episode` with each episode's timeline."""

    def __init__(self, base: LatencyModel, *, dt: float, seed: int, request_bytes: int,
                 reply_bytes: int) -> None:
        self.base = base
        self.kind = base.kind
        self.dt = dt
        self.seed = seed
        self.request_bytes, self.reply_bytes = request_bytes, reply_bytes
        self.windows: list[FaultWindow] = []
        self._episode = 0
        self._chains: dict[int, tuple[GilbertElliott, np.random.Generator, list[bool]]] = {}
        """Window index -> its loss chain, generator and the losses drawn so far."""
        self._first_in: dict[int, int] = {}
        """Window index -> index of the first request sent in it."""

    @classmethod
    def for_contract(cls, base: LatencyModel, contract, *, chunk_size: int,
                     seed: int) -> ModelledLink:
        """The modelled link of a robot of `contract` (a `protocol.Contract`): its control
        period, and its messages' encoded sizes for the bandwidth fault."""
        request_bytes, reply_bytes = payload_sizes(contract, chunk_size)
        return cls(base, dt=1.0 / contract.control_hz, seed=seed, request_bytes=request_bytes,
                   reply_bytes=reply_bytes)

    def start_episode(self, episode: int, windows: list[FaultWindow]) -> None:
        self._episode, self.windows = episode, windows
        self._chains, self._first_in = {}, {}

    def _rng(self, index: int, salt: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self._episode, index, salt])

    def expected_s(self) -> float | None:
        """The base model's: a client expects the fault-free round trip."""
        return self.base.expected_s()

    def latency_for(self, key: tuple[int, int], measured_s: float | None = None, *,
                    sent_tick: int = 0) -> float | None:
        base = self.base.latency_for(key, measured_s)
        if base is None:
            return None  # measured, not back yet: nothing to add to
        index = key[1]
        t = sent_tick * self.dt
        latency = base + self._added_delay(t, index)
        for salt, window in enumerate(self.windows):
            if not self._overlaps(window, t, latency):
                continue
            kind = window.kind
            if kind in (FaultKind.partition, FaultKind.server_stall):
                latency = max(latency, window.end_s - t + base)
            elif kind in (FaultKind.server_crash, FaultKind.server_drain, FaultKind.reset):
                return math.inf
            elif kind in (FaultKind.drop, FaultKind.corrupt, FaultKind.reorder):
                if window.active(t) and self._rng(index, 100 + salt).random() < \
                        window.spec.probability:
                    return math.inf
            elif kind is FaultKind.loss and window.active(t) and self._chain_loses(
                    salt, window, index):
                return math.inf
        return latency

    @staticmethod
    def _overlaps(window: FaultWindow, t: float, latency: float) -> bool:
        return t < window.end_s and t + latency > window.start_s

    def _added_delay(self, t: float, index: int) -> float:
        added = 0.0
        for salt, window in enumerate(self.windows):
            if not window.active(t):
                continue
            spec, kind = window.spec, window.kind
            if kind is FaultKind.latency:
                rng = self._rng(index, salt)
                added += sum(jittered(rng, spec.delay_s, spec.jitter_dist, spec.jitter_s)
                             for _ in range(_ways(spec.direction)))
            elif kind is FaultKind.bandwidth:
                up = spec.direction in (Direction.both, Direction.to_server)
                down = spec.direction in (Direction.both, Direction.to_client)
                bits = 8 * (self.request_bytes * up + self.reply_bytes * down)
                added += bits / spec.bandwidth_bps
            elif kind is FaultKind.slow_model:
                added += jittered(self._rng(index, salt), spec.predict_s, spec.jitter_dist,
                                  spec.jitter_s)
            elif kind is FaultKind.model_pause and self._first_in.setdefault(salt, index) == index:
                # the first request sent in the window (the engine asks in the order it sends)
                added += window.end_s - window.start_s
            elif kind is FaultKind.delay:
                added += spec.delay_s
        return added

    def _chain_loses(self, salt: int, window: FaultWindow, index: int) -> bool:
        """Gilbert-Elliott each way (`messages.GilbertElliott`, the emulated loss's chain),
        stepped once per request in the order the engine asks (each request is asked about
        once it is sent, so the chain grows to `index` and no further)."""
        if salt not in self._chains:
            spec = window.spec
            self._chains[salt] = (GilbertElliott(spec.p_good_bad, spec.p_bad_good,
                                                 spec.loss_good, spec.loss_bad),
                                  np.random.default_rng([self.seed, self._episode, 0x6E]), [])
        chain, rng, lost = self._chains[salt]
        while len(lost) <= index:
            out, back = chain.lose(rng, "out"), chain.lose(rng, "in")
            lost.append(out or back)
        return lost[index]


def payload_sizes(contract, chunk_size: int) -> tuple[int, int]:
    """Encoded bytes of an observation and of a chunk of `contract` (a `protocol.Contract`):
    what the modelled bandwidth fault charges each request for."""
    from harness import protocol

    state, images = contract.zero_arrays()
    request = protocol.encode(protocol.Message(protocol.Observation(state, images, ""), seq=1))
    chunk = protocol.ActionChunk(np.zeros((chunk_size, contract.action_dim), np.float32), 1,
                                 0, 0, contract.model_id)
    return len(request), len(protocol.encode(protocol.Message(chunk, seq=1)))
