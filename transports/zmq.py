"""ZeroMQ backend: one DEALER per client, one ROUTER per server, frames tagged with a kind
and a request id.

DEALER/ROUTER rather than REQ/REP because REQ wedges after a lost reply ("lazy pirate") while
DEALER survives timeouts; the cost is that a reply can arrive after its deadline, so replies
are matched by request id and late ones dropped.

ZeroMQ sockets are not thread-safe. A client therefore has two DEALERs: a *request* socket
the calling thread uses directly under a lock (no thread hand-off on the control path), and a
*stream* socket owned by an I/O thread that receives chunks whenever they come and sends
observations and heartbeat pings that callers queue through a deque and a wake-up pipe. The
server tells them apart by a routing-id prefix. It answers pings and takes observations on its
one I/O thread, but runs the request handler on a few threads of their own (`RequestWorkers`):
a handler may wait (a session open or reset waits for a prediction on its policy), and on the
I/O thread that wait stalled every client's observations, pings and requests (issue 21).
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

import zmq

from transports.base import (
    RequestHandler,
    ServerUnavailable,
    StreamItem,
    StreamStats,
    TransportClosed,
    TransportError,
    TransportTimeout,
    check_payload_size,
)
from transports.config import ZmqTransportConfig
from transports.heartbeat import Heartbeat
from transports.mailbox import LatestMailbox, LatestSlot
from transports.request_workers import RequestWorkers
from transports.security import client_transport_id
from transports.zmq_curve import (
    CurveServer,
    client_route_suffix,
    routed_client_id,
    secure_client,
)

log = logging.getLogger(__name__)

# Frame kinds. Client -> server: request, observation, ping. Server -> client: reply,
# streamed chunk, pong. Every message is [kind, request id (8 bytes LE, empty if none), payload].
REQUEST, OBSERVATION, PING = b"R", b"O", b"P"
REPLY, CHUNK, PONG = b"r", b"c", b"p"
# Routing-id prefixes of a client's two sockets; the rest of the id is the client id.
REQUEST_SOCKET, STREAM_SOCKET = b"q:", b"s:"
_FRAME_OVERHEAD = 64
_BIND_RETRY_S = 3.0


class _SocketLoop:
    """Owns one socket on one thread; other threads queue frames with `send`."""

    def __init__(self, socket: zmq.Socket, on_frames, name: str, *,
                 user_ids: bool = False) -> None:
        self._socket = socket
        self._on_frames = on_frames
        self._user_ids = user_ids
        """Pass each message's `User-Id` (what CURVE's ZAP handler authenticated) on."""
        self._outgoing: collections.deque = collections.deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def send(self, frames: list[bytes]) -> None:
        self._outgoing.append(frames)
        self._wake()

    def send_callable(self, make_frames: Callable[[], list[bytes] | None]) -> None:
        """Queue a callable the I/O thread calls right before sending; it may return None.

        This lets the latest-only outbox pick its payload at the last possible moment."""
        self._outgoing.append(make_frames)
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass  # pipe full (the loop is already awake) or closed during shutdown

    def stop(self) -> None:
        self._stop = True
        self._wake()
        if self._thread.is_alive():
            self._thread.join()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def _dispatch(self, frames: list[bytes] | None, unsent: list[bytes] | None,
                  user_id: str | None = None) -> None:
        try:
            if self._user_ids:
                self._on_frames(frames, unsent, user_id)
            else:
                self._on_frames(frames, unsent)
        except Exception:  # one bad message must not kill the socket's only thread
            log.exception("zmq frame handler failed")

    def _receive(self) -> tuple[list[bytes], str | None]:
        """One message (zmq.Again if none); with `user_ids`, also who sent it."""
        if not self._user_ids:
            return self._socket.recv_multipart(zmq.NOBLOCK), None
        frames = self._socket.recv_multipart(zmq.NOBLOCK, copy=False)
        user_id = frames[-1].get("User-Id") if frames else None
        return [frame.bytes for frame in frames], user_id

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        try:
            while not self._stop:
                events = dict(poller.poll(100))
                if self._wake_r in events:
                    os.read(self._wake_r, 4096)
                while self._outgoing:
                    item = self._outgoing.popleft()
                    frames = item() if callable(item) else item
                    if frames is None:
                        continue
                    try:
                        self._socket.send_multipart(frames, zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        self._dispatch(None, frames)  # unsendable: let the owner fail it
                if self._socket in events:
                    while True:
                        try:
                            frames, user_id = self._receive()
                        except zmq.Again:
                            break
                        self._dispatch(frames, None, user_id)
        finally:
            self._socket.close(linger=0)


class ZmqServer:
    def __init__(self, config: ZmqTransportConfig) -> None:
        self.config = config
        self.stats = StreamStats()
        self._handler: RequestHandler | None = None
        self._mailbox = LatestMailbox(self.stats)
        self._loop: _SocketLoop | None = None
        self._workers: RequestWorkers | None = None
        self._curve: CurveServer | None = None
        self._stream_routes: dict[str, bytes] = {}
        """Under CURVE: each robot's chunk socket, as last seen (its id has a random part)."""
        self._closed = False

    @property
    def requests_dropped(self) -> int:
        """Requests dropped unanswered because too many were pending (`RequestWorkers`)."""
        return self._workers.dropped if self._workers is not None else 0

    @property
    def handshakes_refused(self) -> int:
        """Under CURVE: connections refused at the handshake (a key not on the allow-list)."""
        return self._curve.refused if self._curve is not None else 0

    def start(self, handler: RequestHandler) -> None:
        self._handler = handler
        if self.config.security.enabled:
            self._curve = CurveServer(self.config, self.stats)  # SecurityError first
        context = self._curve.context if self._curve else zmq.Context.instance()
        socket = context.socket(zmq.ROUTER)
        if self._curve is not None:
            self._curve.secure(socket)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a reconnecting client keeps its id
        socket.setsockopt(zmq.MAXMSGSIZE, self.config.max_message_bytes + _FRAME_OVERHEAD)
        deadline = time.monotonic() + _BIND_RETRY_S
        while True:  # the previous server's socket may still be closing on zmq's I/O thread
            try:
                socket.bind(self.config.listen)
                break
            except zmq.ZMQError as exc:
                if time.monotonic() > deadline:
                    socket.close(linger=0)
                    if self._curve is not None:
                        self._curve.close()
                    raise TransportError(f"cannot bind {self.config.listen}: {exc}") from exc
                time.sleep(0.05)
        self._workers = RequestWorkers("zmq-server-request")
        self._loop = _SocketLoop(socket, self._on_frames, "zmq-server-io",
                                 user_ids=self._curve is not None)
        self._loop.start()

    def _on_frames(self, frames: list[bytes] | None, unsent: list[bytes] | None,
                   user_id: str | None = None) -> None:
        if frames is None:
            return  # an unsendable reply: the client is gone, its deadline handles it
        if len(frames) != 4:
            log.warning("dropping malformed zmq message with %d frames", len(frames))
            return
        identity, kind, request_id, payload = frames
        client_id = routed_client_id(identity, len(STREAM_SOCKET),
                                     curve=self._curve is not None)
        if self._curve is not None:
            if user_id != client_id:  # claims another robot's id: refused, counted
                self.stats.refuse("identity_refused", client_id, identity=user_id)
                return
            if identity.startswith(STREAM_SOCKET):
                self._stream_routes[client_id] = identity
        if kind == PING:
            self._loop.send([identity, PONG, request_id, b""])
        elif kind == OBSERVATION:
            if len(payload) > self.config.max_message_bytes:
                self.stats.rejected_oversize += 1
                return
            self._mailbox.put(client_id, payload)
        elif kind == REQUEST:
            # zmq's own limit (MAXMSGSIZE) has room for frame overhead: check the payload.
            if len(payload) > self.config.max_message_bytes:
                self.stats.rejected_oversize += 1
                return
            self._workers.submit(identity, lambda: self._handler(client_id, payload),
                                 lambda answer: self._answer(identity, request_id, answer))
        else:
            log.warning("dropping zmq message of unknown kind %r", kind[:8])

    def _answer(self, identity: bytes, request_id: bytes, answer: bytes | None) -> None:
        """On a request worker: the handler's reply goes back through the I/O thread, the
        only one that may touch the socket (none if the handler failed)."""
        if answer is not None:
            self._loop.send([identity, REPLY, request_id, answer])

    def take_stream(self, timeout_s: float) -> StreamItem | None:
        return self._mailbox.take(timeout_s)

    def last_arrival_ns(self, client_id: str) -> int | None:
        return self._mailbox.last_arrival_ns(client_id)

    def forget(self, client_id: str) -> None:
        self._mailbox.forget(client_id)

    def send_stream(self, client_id: str, payload: bytes) -> None:
        check_payload_size(payload, self.config.max_message_bytes)
        if self._loop is None or self._closed:
            raise TransportClosed("zmq server is not running")
        self.stats.sent += 1
        route = self._stream_routes.get(client_id, STREAM_SOCKET + client_id.encode())
        self._loop.send([route, CHUNK, b"", payload])

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._workers is not None:  # first: no reply may be queued on a stopped loop
            self._workers.close()
        if self._loop is not None:
            self._loop.stop()
        if self._curve is not None:
            self._curve.close()


class ZmqClient:
    def __init__(self, config: ZmqTransportConfig) -> None:
        self.config = config
        self.client_id = client_transport_id(config) or uuid.uuid4().hex[:12]
        self._route_suffix = client_route_suffix(config)
        self.stats = StreamStats()
        self.late_replies = 0
        """Replies that arrived after their caller's deadline and were dropped."""
        self._inbox = LatestSlot(self.stats)
        self._pings: dict[bytes, Future[bytes]] = {}
        self._pings_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._observation: bytes | None = None  # latest-only outbox
        self._observation_lock = threading.Lock()
        self._request_lock = threading.Lock()
        self._closed = False

        self._request_socket = self._connect(REQUEST_SOCKET)
        self._loop = _SocketLoop(self._connect(STREAM_SOCKET), self._on_frames,
                                 f"zmq-client-{self.client_id}")
        self._loop.start()
        self._heartbeat = Heartbeat(self._ping, interval_s=config.heartbeat_interval_s,
                                    timeout_s=config.heartbeat_timeout_s,
                                    name=f"zmq-client-{self.client_id}")
        self._heartbeat.start()

    def _connect(self, prefix: bytes) -> zmq.Socket:
        socket = zmq.Context.instance().socket(zmq.DEALER)
        socket.setsockopt(zmq.ROUTING_ID, prefix + self.client_id.encode() + self._route_suffix)
        if self.config.security.enabled:
            secure_client(socket, self.config)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.IMMEDIATE, 1)  # never queue to a server that is not connected
        socket.setsockopt(zmq.RECONNECT_IVL, self.config.reconnect_ivl_ms)
        socket.setsockopt(zmq.RECONNECT_IVL_MAX, self.config.reconnect_ivl_max_ms)
        socket.setsockopt(zmq.MAXMSGSIZE, self.config.max_message_bytes + _FRAME_OVERHEAD)
        socket.connect(self.config.connect_address)
        return socket

    def request(self, payload: bytes, *, timeout_s: float) -> bytes:
        check_payload_size(payload, self.config.max_message_bytes)
        deadline = time.monotonic() + timeout_s
        if not self._request_lock.acquire(timeout=max(0.0, timeout_s)):
            raise TransportTimeout(f"another zmq request held the socket past {timeout_s:.3f} s")
        try:
            if self._closed:
                raise TransportClosed("zmq client is closed")
            request_id = next(self._ids).to_bytes(8, "little")
            try:
                self._request_socket.send_multipart([REQUEST, request_id, payload], zmq.NOBLOCK,
                                                    copy=False)
            except zmq.Again:
                raise ServerUnavailable("not connected to zmq server") from None
            while True:
                remaining_ms = math.ceil((deadline - time.monotonic()) * 1000)
                if remaining_ms <= 0 or not self._request_socket.poll(remaining_ms, zmq.POLLIN):
                    raise TransportTimeout(f"no zmq reply within {timeout_s:.3f} s")
                frames = self._request_socket.recv_multipart()
                if len(frames) == 3 and frames[0] == REPLY and frames[1] == request_id:
                    return frames[2]
                self.late_replies += 1  # an earlier caller gave up on it at its deadline
        finally:
            self._request_lock.release()

    def _on_frames(self, frames: list[bytes] | None, unsent: list[bytes] | None) -> None:
        if unsent is not None:  # no connection to the server (IMMEDIATE): fail fast
            if unsent[0] == PING:
                self._settle_ping(bytes(unsent[1]), ServerUnavailable("not connected"))
            return
        if len(frames) != 3:
            log.warning("dropping malformed zmq message with %d frames", len(frames))
            return
        kind, request_id, payload = frames
        if kind == CHUNK:
            self._inbox.put(payload)
        elif kind == PONG:
            self._settle_ping(request_id, None)

    def _settle_ping(self, request_id: bytes, exc: Exception | None) -> None:
        with self._pings_lock:
            future = self._pings.pop(request_id, None)
        if future is None or future.done():
            return
        if exc is None:
            future.set_result(b"")
        else:
            future.set_exception(exc)

    def _ping(self, timeout_s: float) -> None:
        request_id = next(self._ids).to_bytes(8, "little")
        future: Future[bytes] = Future()
        with self._pings_lock:
            self._pings[request_id] = future
        self._loop.send([PING, request_id, b""])
        try:
            future.result(timeout=timeout_s)
        except FutureTimeout:
            raise TransportTimeout(f"no zmq pong within {timeout_s:.3f} s") from None
        finally:
            with self._pings_lock:
                self._pings.pop(request_id, None)

    def publish(self, payload: bytes) -> None:
        check_payload_size(payload, self.config.max_message_bytes)
        if self._closed:
            raise TransportClosed("zmq client is closed")
        # The I/O thread sends what it finds in the outbox; a newer observation that arrives
        # before it got there replaces the older one instead of queueing behind it.
        with self._observation_lock:
            replaced = self._observation is not None
            self._observation = payload
        if replaced:
            self.stats.superseded += 1
        else:
            self._loop.send_callable(self._flush_observation)

    def _flush_observation(self) -> list[bytes] | None:
        with self._observation_lock:
            payload, self._observation = self._observation, None
        if payload is None:
            return None
        self.stats.sent += 1
        return [OBSERVATION, b"", payload]

    def take_stream(self, timeout_s: float = 0.0) -> bytes | None:
        return self._inbox.take(timeout_s)

    def take_stream_timed(self, timeout_s: float = 0.0) -> tuple[bytes, int] | None:
        return self._inbox.take_timed(timeout_s)

    def order_stream_by(self, key: Callable[[bytes], int],
                        on_displaced: Callable[[bytes, int], bool] | None = None) -> None:
        self._inbox.order_by(key, on_displaced)

    def server_present(self) -> bool:
        return self._heartbeat.present()

    def wait_ready(self, timeout_s: float) -> None:
        if not self._heartbeat.wait_present(timeout_s):
            raise TransportTimeout(f"zmq server {self.config.connect_address} absent for "
                                   f"{timeout_s} s")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._heartbeat.stop()
        self._loop.stop()
        with self._request_lock:  # waits for an in-flight request, bounded by its deadline
            self._request_socket.close(linger=0)
