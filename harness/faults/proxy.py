"""Network faults as a user-space TCP proxy between a transport client and its server.

Why a proxy: this kernel has no netem (see /work/shared/FACTS.md, "Fault injection on this
kernel"), so kernel delay, jitter and loss are impossible here, and all three backends (zenoh,
gRPC, ZeroMQ) run over TCP. The harness points the client's connect address at the proxy and
the proxy at the server's listen address; the proxy then shapes the byte stream of every
connection, in the style of Toxiproxy: asyncio, one background thread, stdlib and numpy only.

What it can emulate, per direction of the link:

- one-way delay and seeded jitter ("normal" or heavy-tailed "pareto") per chunk of bytes read;
  bytes in one stream are never reordered, as in TCP: a chunk is released at
  ``max(arrival + delay + draw, previous chunk's release)``;
- a bandwidth limit (a token bucket, so payload size matters: P bytes take about P/B longer);
- a partition (black hole): nothing crosses in either direction but no connection is closed;
  what was sent meanwhile is held and delivered when the partition ends;
- connection resets (RST to both ends) and slow closes (an EOF reaches the other end late).

What it cannot emulate:

- packet loss inside a stream. TCP retransmits lost segments, so an application never sees a
  hole; dropping bytes in the proxy would corrupt every protocol's framing instead of
  emulating loss. Loss as the application sees it (a late or missing message) is
  message-level, in ``harness/faults/messages.py``; loss as extra latency is jitter here.
- the cost of a real cut. Hold-and-release is optimistic: after a real cut heals, TCP
  delivers only when its next retransmission timer fires (exponential backoff from ~200 ms,
  so a 5 s cut can cost several seconds more), and a long cut can time the connection out.
  Here the held bytes leave as soon as the partition ends (plus the link's one-way delay).
- connection setup: the proxy accepts locally, so a client's connect succeeds at once (no
  handshake round trip, no unanswered SYN during a partition), and a server that refuses
  shows as a reset right after the connect (or already in it) instead of ECONNREFUSED.
- anything below TCP: segment sizes, the congestion window, kernel buffer sizes. The proxy
  terminates TCP on both sides, so each end sees a healthy loopback connection to the proxy;
  a sender is slowed only once the proxy holds ``max_buffer_bytes`` for its direction (then
  the proxy stops reading and the kernel's buffers fill, as on a real congested path).

Jitter: "normal" draws a symmetric N(0, jitter_s) per chunk, added to delay_s and truncated at
zero (the mean one-way delay stays delay_s while delay_s >> jitter_s, like netem); "pareto"
adds a one-sided Lomax (Pareto II) draw with scale jitter_s and shape ``pareto_alpha``
(default 2: mean extra jitter_s, infinite variance). Because bytes are not reordered, a chunk
that drew a short delay behind one that drew a long delay waits for it: with chunks closer
together than the jitter, the effective delays are skewed upwards (netem without reordering
does the same). A close (EOF) or a reset travels with the link's delay_s (no jitter draw), after
every byte before it. Bandwidth is the link's: one bucket per direction shared by every
connection, at the rate in force when the bytes leave; delay and jitter are taken when the
bytes arrive.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import itertools
import logging
import math
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any

from harness.faults.pipe import Conn, Side
from harness.faults.shaping import (
    JITTER_DISTS,
    Direction,
    JitterSource,
    LinkShape,
    ProxyStats,
    TokenBucket,
    is_int,
    is_real,
)

__all__ = ["JITTER_DISTS", "Direction", "FaultProxy", "JitterSource", "LinkShape",
           "ProxyStats"]

logger = logging.getLogger(__name__)


class FaultProxy:
    """A TCP proxy that shapes, partitions, resets and slow-closes the connections through it.

    `start()` binds the listener and runs an asyncio loop on a background thread; every other
    method may be called from any thread and takes effect before it returns.
    """

    def __init__(self, upstream_host: str, upstream_port: int, *, listen_host: str = "127.0.0.1",
                 listen_port: int = 0, seed: int = 0, connect_timeout_s: float = 5.0,
                 max_buffer_bytes: int = 4 * 1024 * 1024) -> None:
        if not is_int(seed) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        seed = int(seed)
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.connect_timeout_s = connect_timeout_s
        self._max_buffer_bytes = max_buffer_bytes
        self._shapes = {d: LinkShape() for d in Direction}
        self._buckets = {d: TokenBucket() for d in Direction}
        self._seed = seed
        self._jitter = self._make_jitter(seed)
        self._slow_close_s = 0.0
        self._partitioned = False
        self._conns: set[Conn] = set()
        self._ids = itertools.count()
        self._stats = ProxyStats()
        self._stats_lock = threading.Lock()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None
        self._stopped = False
        self._stop_event: asyncio.Event | None = None
        self._healed: asyncio.Event | None = None
        self._loop_now: Callable[[], float] = lambda: 0.0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> int:
        """Bind the listener, start the loop thread; return the listening port."""
        with self._lock:
            if self._thread is not None or self._stopped:
                raise RuntimeError("FaultProxy.start() may be called once")
            sock = socket.create_server((self.listen_host, self.listen_port), backlog=128)
            sock.setblocking(False)
            self._port = sock.getsockname()[1]
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._loop_now = loop.time
            ready: concurrent.futures.Future = concurrent.futures.Future()
            self._thread = threading.Thread(target=self._run, args=(loop, sock, ready),
                                            name=f"fault-proxy:{self._port}", daemon=True)
            self._thread.start()
        try:
            ready.result(timeout=10)
        except BaseException:
            self.stop()
            raise
        logger.info("fault proxy 127.0.0.1:%d -> %s:%d", self._port, self.upstream_host,
                    self.upstream_port)
        return self._port

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FaultProxy is not started")
        return self._port

    def stop(self) -> None:
        """Close every connection and the listener and join the thread (idempotent)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            thread, loop = self._thread, self._loop
            if thread is None or loop is None:
                return
            if self._stop_event is not None:
                try:
                    loop.call_soon_threadsafe(self._stop_event.set)
                except RuntimeError:  # the loop already ended (it failed)
                    pass
        thread.join(timeout=10)
        if thread.is_alive():
            logger.warning("fault proxy thread did not stop within 10 s")
        else:
            logger.info("fault proxy on port %s stopped", self._port)

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
             ready: concurrent.futures.Future) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main(sock, ready))
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            else:
                logger.exception("fault proxy loop failed")
        finally:
            try:
                tasks = asyncio.all_tasks(loop)
                for task in tasks:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())  # name lookups
            finally:
                loop.close()
                sock.close()

    async def _main(self, sock: socket.socket, ready: concurrent.futures.Future) -> None:
        loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        self._healed = asyncio.Event()
        if not self._partitioned:
            self._healed.set()
        server = await loop.create_server(self._accept, sock=sock)
        ready.set_result(None)
        await self._stop_event.wait()
        server.close()
        for conn in list(self._conns):
            conn.teardown(abort=True)
        await server.wait_closed()
        for _ in range(3):  # let the transports' connection_lost callbacks close the sockets
            await asyncio.sleep(0)

    def _accept(self) -> Side:
        return Conn(self, next(self._ids)).client

    def _register(self, conn: Conn) -> None:
        self._conns.add(conn)
        with self._stats_lock:
            self._stats.accepted += 1
            self._stats.open += 1
        logger.debug("connection %d accepted", conn.cid)

    def _unregister(self, conn: Conn) -> None:
        if conn in self._conns:
            self._conns.discard(conn)
            self._bump("open", -1)
            logger.debug("connection %d closed", conn.cid)

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn(*args)` on the loop thread (directly when not running) and return its result."""
        if threading.current_thread() is self._thread:
            return fn(*args)
        with self._lock:
            loop = self._loop
            if self._stopped and self._thread is not None:
                self._thread.join(timeout=10)  # its loop no longer touches the state
            if loop is None or self._stopped or self._stop_event is None:
                return fn(*args)
            fut: concurrent.futures.Future = concurrent.futures.Future()

            def run() -> None:
                try:
                    fut.set_result(fn(*args))
                except BaseException as exc:  # handed to the caller
                    fut.set_exception(exc)

            loop.call_soon_threadsafe(run)
            return fut.result(timeout=10)

    # -- faults ------------------------------------------------------------------------------

    def set_shape(self, shape: LinkShape, direction: Direction | None = None) -> None:
        """Shape `direction` (None = both) for the bytes arriving from now on."""
        if not isinstance(shape, LinkShape):
            raise TypeError(f"shape must be a LinkShape, got {type(shape).__name__}")
        directions = list(Direction) if direction is None else [Direction(direction)]
        self._call(self._set_shape, shape, directions)
        logger.debug("link shape %s: %s", "/".join(directions), shape)

    def _set_shape(self, shape: LinkShape, directions: list[Direction]) -> None:
        for d in directions:
            self._shapes[d] = shape
            self._buckets[d].configure(shape)
        self._kick_all()

    def shape(self, direction: Direction) -> LinkShape:
        return self._shapes[Direction(direction)]

    def set_partition(self, on: bool) -> None:
        """Black-hole both directions (on) or end it (off).

        While on, nothing is written to either end, no connection is closed, and what arrives
        is held (in order) and leaves when it ends, after the link's one-way delay. A client
        that connects meanwhile is accepted, but its upstream connection is made only after.
        """
        self._call(self._set_partition, bool(on))
        logger.debug("partition %s", "on" if on else "off")

    @property
    def partitioned(self) -> bool:
        return self._partitioned

    def _set_partition(self, on: bool) -> None:
        if on == self._partitioned:
            return
        self._partitioned = on
        if on:
            if self._healed is not None:
                self._healed.clear()
            held = sum(p.pending for c in self._conns for p in c.pipes.values())
            self._bump("held_bytes", held)
            return
        # Healed: what was held leaves now, still after the link's one-way delay, in order.
        now = self._loop_now()
        for conn in self._conns:
            for pipe in conn.pipes.values():
                running = -math.inf
                for item in pipe.queue:
                    item.release = max(item.release, now + item.delay, running)
                    running = item.release
                pipe.last_release = max(pipe.last_release, running)
        if self._healed is not None:
            self._healed.set()
        self._kick_all()

    def reset_connections(self) -> int:
        """Reset (RST, SO_LINGER 0) both sides of every open connection; return how many."""
        count = self._call(self._reset_connections)
        logger.debug("reset %d connection(s)", count)
        return count

    def _reset_connections(self) -> int:
        conns = list(self._conns)
        for conn in conns:
            conn.teardown(rst=True)
        self._bump("resets", len(conns))
        return len(conns)

    def set_slow_close(self, delay_s: float) -> None:
        """A close (EOF) from either end reaches the other end `delay_s` later (0 = at once)."""
        if not is_real(delay_s) or not math.isfinite(delay_s) or delay_s < 0:
            raise ValueError(f"slow close delay_s must be a finite number >= 0, got {delay_s!r}")
        self._call(setattr, self, "_slow_close_s", float(delay_s))

    def reseed(self, seed: int) -> None:
        """Restart the jitter draws of both directions from `seed`."""
        if not is_int(seed) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        self._call(self._reseed, int(seed))

    def _reseed(self, seed: int) -> None:
        self._seed = seed
        self._jitter = self._make_jitter(seed)

    @staticmethod
    def _make_jitter(seed: int) -> dict[Direction, JitterSource]:
        return {d: JitterSource(seed, i) for i, d in enumerate(Direction)}

    def _draw_delay(self, shape: LinkShape, direction: Direction) -> float:
        """The one-way delay of the next chunk in `direction` (the seeded jitter seam)."""
        return self._jitter[direction].delay(shape)

    @property
    def stats(self) -> ProxyStats:
        with self._stats_lock:
            return dataclasses.replace(self._stats)

    # -- loop-thread helpers -------------------------------------------------------------------

    def _bump(self, name: str, n: int = 1) -> None:
        with self._stats_lock:
            setattr(self._stats, name, getattr(self._stats, name) + n)

    def _count(self, direction: Direction, n: int) -> None:
        self._bump("bytes_to_server" if direction is Direction.to_server else "bytes_to_client", n)

    def _kick_all(self) -> None:
        for conn in self._conns:
            for pipe in conn.pipes.values():
                pipe.kick()

    @staticmethod
    def _rst(side: Side) -> None:
        """Close `side` with a RST: SO_LINGER on with a zero timeout, then close."""
        transport = side.transport
        if transport is None or side.lost:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        transport.abort()
