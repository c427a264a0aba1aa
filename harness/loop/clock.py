"""The clock of the loop: which control tick a reply becomes usable at, and how ticks pace.

A simulator on a CPU does not run at the robot's control rate, so wall time cannot decide
which chunk is in time. Under `Clock.virtual` the env advances in ticks of dt = 1/control_hz
and a request sent at tick s with round trip L becomes usable at tick s + ceil(L/dt): a reply
that arrives early (wall time) is held, and when the sim reaches a tick at which the reply
could still be usable, the runner waits for it (`wait_for_due_reply`). The loop thus sees
exactly the latency a real robot at control_hz would see. A `LatencyModel` may replace the
measured L with a fixed or a seeded value per request: that is what makes runs replayable
byte for byte. Under `Clock.realtime` ticks are paced by the wall clock and overruns counted.
"""

from __future__ import annotations

import enum
import math
import time

from harness.client.engine import ClientEngine

_POLL_S = 0.0002


class Clock(enum.StrEnum):
    """Lower-case members: Hydra matches config values by name."""

    virtual = "virtual"
    """Ticks of 1/control_hz, as fast as the sim runs; a chunk is usable when its round trip
    says so (see the module docstring)."""
    realtime = "realtime"
    """Ticks paced by the wall clock; overruns counted."""


def wait_for_due_reply(engine: ClientEngine, tick: int, hold_s: float | None = None) -> None:
    """Virtual clock: block until the in-flight reply is known to be usable or not by `tick`
    (measured latency: until its wall age reaches its control age; modelled: at most
    `hold_s` of wall time once it is due, one tick when None).

    One tick keeps a real outage (a stopped server under an emulated fault) at real time. A
    caller with a live server and nothing emulated (the golden parity episodes) may hold
    longer, so that a loaded machine cannot make a due reply late and the replay differ."""
    entered_ns = time.monotonic_ns()
    while (pending := engine.reply_pending_until()) is not None:
        key, sent_tick, sent_ns = pending
        model_s = engine.latency.latency_for(key, sent_tick=sent_tick)
        if model_s is not None and math.isinf(model_s):
            return  # lost on the modelled link: nothing to wait for
        if model_s is None:  # measured: usable now only if it comes back within the ticks
            deadline_ns = sent_ns + (tick - sent_tick) * engine.dt * 1e9
        elif tick >= sent_tick + max(1, math.ceil(model_s / engine.dt - 1e-9)):
            # Due by the model but not back: hold this tick for at most one tick of wall
            # time, then go on at real time. A real round trip longer than the model then
            # shows as a later merge, and the request is lost after request_timeout_s of
            # control time, as everywhere else.
            deadline_ns = entered_ns + (engine.dt if hold_s is None else hold_s) * 1e9
        else:
            return
        if time.monotonic_ns() >= deadline_ns:
            return
        engine.poll(tick)
        if engine.reply_pending_until() is None:
            return
        time.sleep(_POLL_S)


class Pacer:
    """The pacing rule of the virtual clock.

    Control time may run ahead of wall time only while the engine is STREAMING: then the
    loop runs as fast as the sim. Over a stretch of ticks in which it is not (server absent,
    reconnecting, stalled on lost requests), each tick waits until the control time since
    the stretch began is no more than the wall time since, so the mechanisms that live in
    wall time (TCP retransmission backoff, a zenoh lease, grpc's reconnect backoff, a server
    restarting) take the control time they would take on a robot, and `max_offline_s` means
    what it says. The first tick of a stretch never waits, so a one-tick stall (the first
    chunk of an episode) costs nothing.
    """

    def __init__(self, dt: float) -> None:
        self.dt = dt
        self._anchor: tuple[int, float] | None = None
        """(tick, wall time) at which the current stretch began; None while streaming."""

    def pace(self, tick: int, *, hold: bool) -> bool:
        """Call at the start of every tick; `hold` says whether the rule applies now. Blocks
        as long as the rule requires; returns whether this tick was held to wall time (every
        tick of a stretch but its first)."""
        if not hold:
            self._anchor = None
            return False
        now = time.monotonic()
        if self._anchor is None:
            self._anchor = (tick, now)
            return False
        first_tick, first_wall = self._anchor
        wait_s = first_wall + (tick - first_tick) * self.dt - now
        if wait_s > 0:
            time.sleep(wait_s)
        return True
