"""The byte pipe of the fault proxy: each proxied connection's two sides and one pipe each way.

An accepted client socket and its upstream socket are `Side`s (asyncio protocols); a `Pipe`
carries one direction of one connection: a queue of timestamped chunks (and EOF or RST
markers) and the task that writes them out when they are due, under the proxy's partition
and bandwidth limit; `Conn` ties them together and tears them down. All of it runs on the
proxy's loop thread and reads the proxy's state (`harness.faults.proxy.FaultProxy`), which
its control API changes through that thread.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
import math
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.faults.shaping import Direction

if TYPE_CHECKING:
    from harness.faults.proxy import FaultProxy

logger = logging.getLogger("harness.faults.proxy")

READ_SIZE = 64 * 1024
"""Bytes read from a socket at once."""

_SPIN_S = 0.001
"""A delayed chunk's timer fires this early and the last stretch is polled: asyncio's epoll
timeouts are rounded up to whole milliseconds, which would otherwise add ~0.5 ms per chunk."""


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


class Side(asyncio.BufferedProtocol):
    """One end of a proxied connection: the accepted client socket or the upstream socket."""

    def __init__(self, conn: Conn, outgoing: Direction) -> None:
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


class Pipe:
    """One direction of one connection: a queue of timestamped chunks and the task that
    writes them out when they are due."""

    def __init__(self, conn: Conn, direction: Direction, src: Side, dst: Side) -> None:
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


class Conn:
    """One proxied connection: the client side, its own upstream side, a pipe each way."""

    def __init__(self, proxy: FaultProxy, cid: int) -> None:
        self.proxy = proxy
        self.cid = cid
        self.client = Side(self, Direction.to_server)
        self.upstream = Side(self, Direction.to_client)
        self.pipes = {
            Direction.to_server: Pipe(self, Direction.to_server, self.client, self.upstream),
            Direction.to_client: Pipe(self, Direction.to_client, self.upstream, self.client),
        }
        self.closed = False
        self.connect_task: asyncio.Task | None = None

    def pipe_to(self, side: Side) -> Pipe:
        return self.pipes[Direction.to_client if side is self.client else Direction.to_server]

    def side_connected(self, side: Side) -> None:
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

    def received(self, side: Side, data: bytes) -> None:
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

    def _push_marker(self, side: Side, kind: _Kind) -> None:
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

    def eof_received(self, side: Side) -> None:
        if not self.closed and not self.pipes[side.outgoing].input_closed:
            logger.debug("connection %d: EOF from %s", self.cid, side.name)
            self._push_marker(side, _Kind.eof)

    def side_lost(self, side: Side, exc: Exception | None) -> None:
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
