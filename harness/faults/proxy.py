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
import collections
import concurrent.futures
import dataclasses
import enum
import itertools
import logging
import math
import numbers
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.faults.schedule import JitterDist, jittered

__all__ = ["Direction", "FaultProxy", "JitterSource", "LinkShape", "ProxyStats"]

logger = logging.getLogger(__name__)

READ_SIZE = 64 * 1024
"""Bytes read from a socket at once."""

_SPIN_S = 0.001
"""A delayed chunk's timer fires this early and the last stretch is polled: asyncio's epoll
timeouts are rounded up to whole milliseconds, which would otherwise add ~0.5 ms per chunk."""

_PACE_S = 0.001
"""Bandwidth pieces hold at least this much link time, so a small bucket at a high rate does
not take one loop iteration per ~1500 bytes."""


class Direction(enum.StrEnum):
    """Which way bytes travel through the proxy."""

    to_server = "to_server"
    to_client = "to_client"


JITTER_DISTS = ("normal", "pareto")


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass(frozen=True)
class LinkShape:
    """How one direction of the link treats bytes (see the module docstring for jitter)."""

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
            if not _is_real(value) or not math.isfinite(value) or value < 0:
                raise ValueError(f"LinkShape.{name} must be a finite number >= 0, got {value!r}")
        if self.jitter_dist not in JITTER_DISTS:
            raise ValueError(f"LinkShape.jitter_dist must be one of {JITTER_DISTS}, "
                             f"got {self.jitter_dist!r}")
        if not _is_int(self.burst_bytes) or self.burst_bytes < 1:
            raise ValueError(f"LinkShape.burst_bytes must be an int >= 1, "
                             f"got {self.burst_bytes!r}")
        alpha = self.pareto_alpha
        if not _is_real(alpha) or not math.isfinite(alpha) or alpha <= 1:
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


class _Bucket:
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


class _Kind(enum.Enum):
    data = 1
    eof = 2
    rst = 3


@dataclass(slots=True)
class _Item:
    kind: _Kind
    release: float
    """Loop time at which the item may leave (before the bandwidth limit)."""
    delay: float
    """Its one-way delay, to release it again after a partition."""
    data: bytes = b""
    offset: int = 0
    """Bytes of data already written."""


def _wake(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


class _Side(asyncio.BufferedProtocol):
    """One end of a proxied connection: the accepted client socket or the upstream socket."""

    def __init__(self, conn: _Conn, outgoing: Direction) -> None:
        self.conn = conn
        self.outgoing = outgoing
        """The direction of the bytes read from this side."""
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.read_paused = False
        self.write_paused = False
        self._buf = bytearray(READ_SIZE)
        self._view = memoryview(self._buf)

    @property
    def name(self) -> str:
        return "client" if self.outgoing is Direction.to_server else "server"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.conn.side_connected(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        self.conn.received(self, bytes(self._view[:nbytes]))

    def eof_received(self) -> bool:
        self.conn.eof_received(self)
        return True  # keep the other half open: EOF is forwarded as a half-close

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.conn.side_lost(self, exc)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self.conn.pipe_to(self).kick()

    def pause_reading(self) -> None:
        if not self.read_paused and self.transport is not None and not self.lost:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused and self.transport is not None and not self.lost:
            self.read_paused = False
            self.transport.resume_reading()


class _Pipe:
    """One direction of one connection: a queue of timestamped chunks and the task that
    writes them out when they are due."""

    def __init__(self, conn: _Conn, direction: Direction, src: _Side, dst: _Side) -> None:
        self.conn = conn
        self.proxy = conn.proxy
        self.direction = direction
        self.src = src
        self.dst = dst
        self.queue: collections.deque[_Item] = collections.deque()
        self.pending = 0
        """Bytes queued and not yet written."""
        self.last_release = -math.inf
        self.input_closed = False
        """An EOF or reset from src is queued: nothing more comes."""
        self.eof_sent = False
        self.finished = False
        """A reset was forwarded or dst is gone: nothing more can be written."""
        self.task: asyncio.Task | None = None
        self._waiter: asyncio.Future | None = None

    def done(self) -> bool:
        return (self.finished or self.eof_sent) and not self.queue

    def kick(self) -> None:
        if self._waiter is not None:
            _wake(self._waiter)

    def push(self, item: _Item) -> None:
        if (item.kind is _Kind.data and not self.queue and item.release <= self.proxy._loop_now()
                and self._can_write() and self.proxy._buckets[self.direction].rate <= 0):
            self._write(item.data)  # fast path: nothing waits before it
            return
        self.queue.append(item)
        self.pending += len(item.data)
        if self.pending > self.proxy._max_buffer_bytes:
            self.src.pause_reading()
        self.kick()

    def drop(self) -> None:
        self.finished = True
        self.queue.clear()
        self.pending = 0
        self.kick()

    def _can_write(self) -> bool:
        return (not self.proxy._partitioned and self.dst.transport is not None
                and not self.dst.lost and not self.dst.write_paused and not self.finished)

    def _write(self, data: bytes) -> None:
        assert self.dst.transport is not None
        self.dst.transport.write(data)
        self.proxy._count(self.direction, len(data))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.finished and not self.conn.closed:
            if not self.queue or not self._can_write():
                await self._wait()
                continue
            item = self.queue[0]
            now = loop.time()
            if now < item.release:
                await self._wait(item.release, precise=True)
                continue
            if item.kind is _Kind.data:
                pace_until = self._send_ready_pieces(item, now)
                if pace_until is not None:
                    await self._wait(pace_until)
                    continue
                self.queue.popleft()
            elif item.kind is _Kind.eof:
                self.queue.popleft()
                assert self.dst.transport is not None
                self.dst.transport.write_eof()  # shutdown(SHUT_WR) once its buffer is written
                self.eof_sent = True
                logger.debug("connection %d: EOF forwarded %s", self.conn.cid, self.direction)
            else:
                self.queue.popleft()
                self.proxy._rst(self.dst)
                self.finished = True
                logger.debug("connection %d: reset forwarded %s", self.conn.cid, self.direction)
            if self.src.read_paused and self.pending < self.proxy._max_buffer_bytes // 2:
                self.src.resume_reading()
            self.conn.check_done()

    def _send_ready_pieces(self, item: _Item, now: float) -> float | None:
        """Write what of `item` the bucket lets out by `now`; return when the next piece may
        go, or None when all of it is written."""
        bucket = self.proxy._buckets[self.direction]
        parts = []
        size = len(item.data)
        next_at = None
        while item.offset < size:
            n = size - item.offset if bucket.rate <= 0 else min(size - item.offset, bucket.piece())
            at = bucket.earliest(item.release, n)
            if at > now:
                next_at = at
                break
            bucket.commit(at, n)
            parts.append(item.data[item.offset:item.offset + n])
            item.offset += n
        if parts:
            data = parts[0] if len(parts) == 1 else b"".join(parts)
            self.pending -= len(data)
            self._write(data)
        return next_at

    async def _wait(self, deadline: float | None = None, precise: bool = False) -> None:
        """Until `deadline` (loop time) or a kick; `precise` polls the last millisecond."""
        loop = asyncio.get_running_loop()
        handle = None
        if deadline is not None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            if precise and remaining <= _SPIN_S:
                await asyncio.sleep(0)
                return
            wake_at = deadline - _SPIN_S if precise else deadline
        fut = loop.create_future()
        self._waiter = fut
        if deadline is not None:
            handle = loop.call_at(wake_at, _wake, fut)
        try:
            await fut
        finally:
            self._waiter = None
            if handle is not None:
                handle.cancel()


class _Conn:
    """One proxied connection: the client side, its own upstream side, a pipe each way."""

    def __init__(self, proxy: FaultProxy, cid: int) -> None:
        self.proxy = proxy
        self.cid = cid
        self.client = _Side(self, Direction.to_server)
        self.upstream = _Side(self, Direction.to_client)
        self.pipes = {
            Direction.to_server: _Pipe(self, Direction.to_server, self.client, self.upstream),
            Direction.to_client: _Pipe(self, Direction.to_client, self.upstream, self.client),
        }
        self.closed = False
        self.connect_task: asyncio.Task | None = None

    def pipe_to(self, side: _Side) -> _Pipe:
        return self.pipes[Direction.to_client if side is self.client else Direction.to_server]

    def side_connected(self, side: _Side) -> None:
        if self.closed:  # torn down while the upstream connect was completing
            assert side.transport is not None
            side.transport.abort()
            return
        if side is self.client:
            self.proxy._register(self)
            loop = asyncio.get_running_loop()
            for pipe in self.pipes.values():
                pipe.task = loop.create_task(pipe.run())
            self.connect_task = loop.create_task(self._connect_upstream())
        else:
            logger.debug("connection %d: upstream connected", self.cid)
            self.pipes[Direction.to_server].kick()

    async def _connect_upstream(self) -> None:
        proxy = self.proxy
        while proxy._partitioned:  # a SYN does not cross a partition either
            await proxy._healed.wait()
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: self.upstream, proxy.upstream_host,
                                       proxy.upstream_port),
                proxy.connect_timeout_s)
        except (OSError, TimeoutError) as exc:
            logger.info("connection %d: upstream %s:%d unavailable (%s); resetting the client",
                        self.cid, proxy.upstream_host, proxy.upstream_port, exc)
            proxy._bump("upstream_failures")
            self.teardown(rst=True)

    def received(self, side: _Side, data: bytes) -> None:
        proxy = self.proxy
        now = proxy._loop_now()
        direction = side.outgoing
        pipe = self.pipes[direction]
        if pipe.finished or pipe.input_closed:
            return
        if proxy._partitioned:
            proxy._bump("held_bytes", len(data))
        delay = proxy._draw_delay(proxy._shapes[direction], direction)
        release = max(now + delay, pipe.last_release)
        pipe.last_release = release
        pipe.push(_Item(_Kind.data, release, delay, data))

    def _push_marker(self, side: _Side, kind: _Kind) -> None:
        proxy = self.proxy
        pipe = self.pipes[side.outgoing]
        if pipe.finished:
            return
        pipe.input_closed = True
        delay = proxy._shapes[side.outgoing].delay_s
        if kind is _Kind.eof:
            delay += proxy._slow_close_s
        release = max(proxy._loop_now() + delay, pipe.last_release)
        pipe.last_release = release
        pipe.push(_Item(kind, release, delay))

    def eof_received(self, side: _Side) -> None:
        if not self.closed and not self.pipes[side.outgoing].input_closed:
            logger.debug("connection %d: EOF from %s", self.cid, side.name)
            self._push_marker(side, _Kind.eof)

    def side_lost(self, side: _Side, exc: Exception | None) -> None:
        if self.closed:
            return
        logger.debug("connection %d: %s side lost (%r)", self.cid, side.name, exc)
        self.pipe_to(side).drop()
        if exc is not None:
            self._push_marker(side, _Kind.rst)
        elif not self.pipes[side.outgoing].input_closed:
            self._push_marker(side, _Kind.eof)
        self.check_done()

    def check_done(self) -> None:
        if not self.closed and all(pipe.done() for pipe in self.pipes.values()):
            self.teardown()

    def teardown(self, *, rst: bool = False, abort: bool = False) -> None:
        """Close both sides (flushing what was written, or with a RST, or abortively)."""
        if self.closed:
            return
        self.closed = True
        for side in (self.client, self.upstream):
            if side.transport is None or side.lost:
                continue
            if rst:
                self.proxy._rst(side)
            elif abort:
                side.transport.abort()
            else:
                side.transport.close()
        current = asyncio.current_task()
        for task in (self.connect_task, *(p.task for p in self.pipes.values())):
            if task is not None and task is not current:
                task.cancel()
        self.proxy._unregister(self)


class FaultProxy:
    """A TCP proxy that shapes, partitions, resets and slow-closes the connections through it.

    `start()` binds the listener and runs an asyncio loop on a background thread; every other
    method may be called from any thread and takes effect before it returns.
    """

    def __init__(self, upstream_host: str, upstream_port: int, *, listen_host: str = "127.0.0.1",
                 listen_port: int = 0, seed: int = 0, connect_timeout_s: float = 5.0,
                 max_buffer_bytes: int = 4 * 1024 * 1024) -> None:
        if not _is_int(seed) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        seed = int(seed)
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.connect_timeout_s = connect_timeout_s
        self._max_buffer_bytes = max_buffer_bytes
        self._shapes = {d: LinkShape() for d in Direction}
        self._buckets = {d: _Bucket() for d in Direction}
        self._seed = seed
        self._jitter = self._make_jitter(seed)
        self._slow_close_s = 0.0
        self._partitioned = False
        self._conns: set[_Conn] = set()
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

    def _accept(self) -> _Side:
        return _Conn(self, next(self._ids)).client

    def _register(self, conn: _Conn) -> None:
        self._conns.add(conn)
        with self._stats_lock:
            self._stats.accepted += 1
            self._stats.open += 1
        logger.debug("connection %d accepted", conn.cid)

    def _unregister(self, conn: _Conn) -> None:
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
        logger.info("link shape %s: %s", "/".join(directions), shape)

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
        logger.info("partition %s", "on" if on else "off")

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
        logger.info("reset %d connection(s)", count)
        return count

    def _reset_connections(self) -> int:
        conns = list(self._conns)
        for conn in conns:
            conn.teardown(rst=True)
        self._bump("resets", len(conns))
        return len(conns)

    def set_slow_close(self, delay_s: float) -> None:
        """A close (EOF) from either end reaches the other end `delay_s` later (0 = at once)."""
        if not _is_real(delay_s) or not math.isfinite(delay_s) or delay_s < 0:
            raise ValueError(f"slow close delay_s must be a finite number >= 0, got {delay_s!r}")
        self._call(setattr, self, "_slow_close_s", float(delay_s))

    def reseed(self, seed: int) -> None:
        """Restart the jitter draws of both directions from `seed`."""
        if not _is_int(seed) or seed < 0:
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
    def _rst(side: _Side) -> None:
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
