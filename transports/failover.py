"""One robot's transport to several replicas of a policy server, one of them active.

`server.replicas=N` starts N servers on N addresses; each robot dials all of them (one client
per replica, each with its own heartbeat) and talks to one, starting on replica
`first % N` so the robots spread over the replicas. It moves to another when:

- the active replica is gone (its heartbeat or liveliness says so): the next presence check
  or request moves to the first replica that is present;
- the session layer asks (`fail_over`): the active replica refused the session for a reason
  another may not have (full at `max_sessions`, draining), or did not answer.

What moves is only where requests and observations go; the session layer sees a re-open, as
after a server restart, and every rule of the fail-safe states holds: a chunk of the old
replica's session carries its epoch and is never executed. Stream messages are taken from the
active replica only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from transports.base import StreamStats, TransportClient, TransportTimeout

log = logging.getLogger(__name__)


class FailoverClient:
    """A `TransportClient` over `replicas` (each a connected client), starting on
    `replicas[first % len(replicas)]`."""

    def __init__(self, replicas: Sequence[TransportClient], *, first: int = 0) -> None:
        if not replicas:
            raise ValueError("FailoverClient needs at least one replica's client")
        self.replicas = list(replicas)
        self.active = first % len(self.replicas)
        self.failovers = 0
        """How many times this robot moved to another replica."""
        self._lock = threading.Lock()

    # ---- which replica --------------------------------------------------------------------

    @property
    def client_id(self) -> str:
        return self._client.client_id

    @property
    def stats(self) -> StreamStats:
        return self._client.stats

    @property
    def _client(self) -> TransportClient:
        return self.replicas[self.active]

    def fail_over(self, reason: str) -> bool:
        """Move to the next replica, preferring one that is present; False (staying) when
        there is no other replica."""
        if len(self.replicas) == 1:
            return False
        with self._lock:
            order = self._others()
            present = [index for index in order if self.replicas[index].server_present()]
            self._move((present or order)[0], reason)
        return True

    def choose(self) -> None:
        """An active replica that is gone is left for a present one: before a session open
        (which names this robot's id on the replica it goes to) and before every request.
        Checked and moved under one lock: threads asking at once (the re-open, the
        keepalive) move the robot once."""
        if len(self.replicas) == 1:
            return
        with self._lock:
            if self._client.server_present():
                return
            present = [index for index in self._others()
                       if self.replicas[index].server_present()]
            if present:
                self._move(present[0], "is gone")

    def _others(self) -> list[int]:
        """The other replicas, in order after the active one."""
        count = len(self.replicas)
        return [(self.active + step) % count for step in range(1, count)]

    def _move(self, index: int, reason: str) -> None:
        """Under the lock."""
        log.warning("replica %d %s: moving to replica %d", self.active, reason, index)
        self.active = index
        self.failovers += 1

    # ---- the TransportClient interface ------------------------------------------------------

    def request(self, payload: bytes, *, timeout_s: float) -> bytes:
        self.choose()
        return self._client.request(payload, timeout_s=timeout_s)

    def publish(self, payload: bytes) -> None:
        self._client.publish(payload)

    def take_stream(self, timeout_s: float = 0.0) -> bytes | None:
        return self._client.take_stream(timeout_s)

    def take_stream_timed(self, timeout_s: float = 0.0) -> tuple[bytes, int] | None:
        return self._client.take_stream_timed(timeout_s)

    def order_stream_by(self, key: Callable[[bytes], int],
                        on_displaced: Callable[[bytes, int], bool] | None = None) -> None:
        for client in self.replicas:
            client.order_stream_by(key, on_displaced)

    def server_present(self) -> bool:
        """Whether a replica is: an active one that is gone is left for a present one here
        (the engine asks every tick), and the robot's next observation there is answered
        "session unknown", on which the engine re-opens its session, as after a restart."""
        self.choose()
        return self._client.server_present()

    def wait_ready(self, timeout_s: float) -> None:
        """Until the active replica is present (every replica was started and reported
        ready before the robots dial).

        Raises TransportTimeout naming the replica."""
        try:
            self._client.wait_ready(timeout_s)
        except TransportTimeout as exc:
            raise TransportTimeout(f"replica {self.active}: {exc}") from exc

    def close(self) -> None:
        for client in self.replicas:
            client.close()
