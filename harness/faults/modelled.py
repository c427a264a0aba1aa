"""Modelled faults: the fault schedule applied to the latency model, so a faulted run replays
byte for byte (`faults.apply=modelled`).

Emulated faults act on the real system, and what the robot sees then depends on timing: how
many messages fall into a window, when a reconnect completes. A modelled fault decides, for
each request, from the schedule, the run's seed and the request's key alone, how late its
reply becomes usable or whether it is lost; the real server still answers at once and the
virtual clock holds each reply until the modelled round trip says so. Nothing then depends on
the transport or on the machine, which is what golden parity under faults checks.

What each kind does to a request sent at control time t whose round trip is L (the base
latency model's, fixed or lognormal) is its entry's modelling (`harness.faults.kinds`): time
added to L, a flight held to the window's end, or a lost request. The built-ins: latency
adds its delay and jitter draws per direction, bandwidth the bytes over the rate, slow_model
and model_pause the prediction's extra time, delay its `delay_s`; partition and server_stall
hold a flight overlapping the window to its end + L; server_crash, server_drain and reset
lose it; drop, corrupt and reorder lose a request sent in the window with `probability`;
loss runs a Gilbert-Elliott chain over the episode's requests; duplicate and slow_close
change nothing.

What it does not model: a session lost to a restart (the engine stays in its session, so
there is no RECONNECTING), wall-time mechanisms such as leases and TCP backoff. Comparing a
modelled with an emulated run of one schedule (the agreement report) measures exactly that.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from harness.client.latency import LatencyModel
from harness.faults.kinds import fault_kind
from harness.faults.schedule import FaultWindow


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
        self._state: dict[int, object] = {}
        """Window index -> what its modelling keeps for the episode (`window_state`)."""

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
        self._state = {}

    @property
    def episode(self) -> int:
        """The episode whose windows are in force."""
        return self._episode

    def rng(self, index: int, salt: int) -> np.random.Generator:
        """The generator of request `index` for stream `salt` (a window's index, or an
        offset of it): seeded by the run, the episode, the request and the stream alone."""
        return np.random.default_rng([self.seed, self._episode, index, salt])

    def window_state(self, salt: int, make: Callable[[], object]):
        """What window `salt`'s modelling keeps for the episode (a loss chain, the first
        request sent in it): `make()` on first use, then the same object until the next
        `start_episode`."""
        if salt not in self._state:
            self._state[salt] = make()
        return self._state[salt]

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
            latency = fault_kind(window.kind).modelling.on_flight(window, salt, t, index, base,
                                                                  latency, self)
            if latency == math.inf:
                return math.inf
        return latency

    @staticmethod
    def _overlaps(window: FaultWindow, t: float, latency: float) -> bool:
        return t < window.end_s and t + latency > window.start_s

    def _added_delay(self, t: float, index: int) -> float:
        added = 0.0
        for salt, window in enumerate(self.windows):
            if window.active(t):
                added += fault_kind(window.kind).modelling.added_delay(window, salt, t, index,
                                                                       self)
        return added


def payload_sizes(contract, chunk_size: int) -> tuple[int, int]:
    """Encoded bytes of an observation and of a chunk of `contract` (a `protocol.Contract`):
    what the modelled bandwidth fault charges each request for."""
    from harness import protocol

    state, images = contract.zero_arrays()
    request = protocol.encode(protocol.Message(protocol.Observation(state, images, ""), seq=1))
    chunk = protocol.ActionChunk(np.zeros((chunk_size, contract.action_dim), np.float32), 1,
                                 0, 0, contract.model_id)
    return len(request), len(protocol.encode(protocol.Message(chunk, seq=1)))
