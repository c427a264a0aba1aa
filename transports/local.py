"""In-process transport: the parity reference, and the floor every network backend is held to.

Clients find servers by name in a process-wide registry, so stopping a server and starting a
new one under the same name behaves like a server restart. Requests still run on a server
worker thread, so deadlines behave exactly as over a network.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

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
from transports.config import LocalTransportConfig
from transports.mailbox import LatestMailbox, LatestSlot

log = logging.getLogger(__name__)

_registry_lock = threading.Lock()
_servers: dict[str, LocalServer] = {}
_inboxes: dict[tuple[str, str], LatestSlot] = {}


class LocalServer:
    def __init__(self, config: LocalTransportConfig) -> None:
        self.name = config.name
        self.stats = StreamStats()
        self._handler: RequestHandler | None = None
        self._max_message_bytes = config.max_message_bytes
        self._mailbox = LatestMailbox(self.stats)
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False

    def start(self, handler: RequestHandler) -> None:
        self._handler = handler
        with _registry_lock:
            if self.name in _servers:
                raise TransportError(f"a local server named {self.name!r} is already running")
            self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="local-req")
            _servers[self.name] = self

    def submit_request(self, client_id: str, payload: bytes) -> Future[bytes]:
        if self._closed or self._executor is None:
            raise ServerUnavailable(f"local server {self.name!r} is not running")
        return self._executor.submit(self._handler, client_id, payload)

    def deliver_stream(self, client_id: str, payload: bytes) -> None:
        if len(payload) > self._max_message_bytes:
            self.stats.rejected_oversize += 1
            return
        self._mailbox.put(client_id, payload)

    def take_stream(self, timeout_s: float) -> StreamItem | None:
        return self._mailbox.take(timeout_s)

    def last_arrival_ns(self, client_id: str) -> int | None:
        return self._mailbox.last_arrival_ns(client_id)

    def forget(self, client_id: str) -> None:
        self._mailbox.forget(client_id)

    def send_stream(self, client_id: str, payload: bytes) -> None:
        check_payload_size(payload, self._max_message_bytes)
        with _registry_lock:
            inbox = _inboxes.get((self.name, client_id))
        if inbox is not None:
            self.stats.sent += 1
            inbox.put(bytes(payload))

    def close(self) -> None:
        with _registry_lock:
            if self._closed:
                return
            self._closed = True
            if _servers.get(self.name) is self:
                del _servers[self.name]
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)


class LocalClient:
    def __init__(self, config: LocalTransportConfig) -> None:
        self.name = config.name
        self.client_id = config.client_id or uuid.uuid4().hex[:12]
        self.stats = StreamStats()
        self._max_message_bytes = config.max_message_bytes
        self._inbox = LatestSlot(self.stats)
        self._closed = False
        with _registry_lock:
            _inboxes[(self.name, self.client_id)] = self._inbox

    def _server(self) -> LocalServer:
        if self._closed:
            raise TransportClosed("local client is closed")
        with _registry_lock:
            server = _servers.get(self.name)
        if server is None:
            raise ServerUnavailable(f"no local server named {self.name!r}")
        return server

    def request(self, payload: bytes, *, timeout_s: float) -> bytes:
        check_payload_size(payload, self._max_message_bytes)
        future = self._server().submit_request(self.client_id, bytes(payload))
        try:
            return bytes(future.result(timeout=timeout_s))
        except FutureTimeout:
            future.cancel()
            raise TransportTimeout(f"no reply within {timeout_s:.3f} s") from None
        except Exception as exc:  # the handler raised: over a network this is a lost reply
            log.warning("local request handler raised %r", exc)
            raise TransportTimeout(f"handler failed: {exc!r}") from exc

    def publish(self, payload: bytes) -> None:
        check_payload_size(payload, self._max_message_bytes)
        try:
            server = self._server()
        except ServerUnavailable:
            return  # like a datagram to a dead host: lost, and staleness logic copes
        self.stats.sent += 1
        server.deliver_stream(self.client_id, bytes(payload))

    def take_stream(self, timeout_s: float = 0.0) -> bytes | None:
        return self._inbox.take(timeout_s)

    def take_stream_timed(self, timeout_s: float = 0.0) -> tuple[bytes, int] | None:
        return self._inbox.take_timed(timeout_s)

    def order_stream_by(self, key: Callable[[bytes], int],
                        on_displaced: Callable[[bytes, int], bool] | None = None) -> None:
        self._inbox.order_by(key, on_displaced)

    def server_present(self) -> bool:
        with _registry_lock:
            return self.name in _servers

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.server_present():
            if time.monotonic() >= deadline:
                raise TransportTimeout(f"no local server {self.name!r} within {timeout_s} s")
            time.sleep(0.005)

    def close(self) -> None:
        with _registry_lock:
            self._closed = True
            if _inboxes.get((self.name, self.client_id)) is self._inbox:
                del _inboxes[(self.name, self.client_id)]
