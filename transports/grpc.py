"""gRPC backend: generic bytes methods on one service, no protobuf and no pickle.

Four methods on `/rph.Transport/`: `Request` (unary, the control path), `Publish` (unary,
one observation), `Subscribe` (server stream of action chunks for one client) and `Ping`
(presence). Payloads travel as raw bytes (no (de)serializer), so gRPC carries exactly what
`harness.protocol` encoded. Every call has a deadline; `wait_for_ready` turns "unreachable" into
DEADLINE_EXCEEDED, and short reconnect backoff (FACTS.md) keeps restarts quick.

gRPC's sync server runs every call on one thread pool, and a `Subscribe` stream holds its
thread for the stream's whole life: with 16 threads, the 16th connected client left none for
anyone's `Ping` or `Request`, and every client lost the server (issue 21, measured). So the
pool has room for `MAX_SUBSCRIBERS` streams, `MAX_CONCURRENT_REQUESTS` handlers (a handler
may wait on a prediction) and the quick calls besides; a call past either bound is refused at
once, and a client that subscribes again ends its own older stream.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc

from transports.base import (
    PayloadTooLarge,
    RequestHandler,
    ServerUnavailable,
    StreamItem,
    StreamStats,
    TransportClosed,
    TransportError,
    TransportTimeout,
    check_payload_size,
)
from transports.config import GrpcTransportConfig
from transports.heartbeat import Heartbeat
from transports.mailbox import LatestMailbox, LatestSlot
from transports.request_workers import MAX_PENDING_PER_CLIENT, Admission
from transports.security import client_tls, client_transport_id, server_tls

log = logging.getLogger(__name__)

SERVICE = "rph.Transport"
CLIENT_ID_KEY = "rph-client-id"
_SUBSCRIBED = b""  # first message of every Subscribe stream: "you are registered"
_PUBLISH_TIMEOUT_S = 1.0
_FRAME_OVERHEAD = 1024
MAX_SUBSCRIBERS = 32
"""Clients with a chunk stream open at once; the next one is refused (RESOURCE_EXHAUSTED)."""
MAX_CONCURRENT_REQUESTS = 8
"""Request handlers running at once (`MAX_PENDING_PER_CLIENT` of one client); the next
request is refused (UNAVAILABLE)."""
_QUICK_CALL_THREADS = 8
"""Threads left for Ping and Publish, which never wait, when every other slot is taken."""


def _claimed_id(context: grpc.ServicerContext) -> str:
    for key, value in context.invocation_metadata():
        if key == CLIENT_ID_KEY:
            return value
    context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"missing {CLIENT_ID_KEY} metadata")
    raise AssertionError("unreachable")


def _authenticated_name(context: grpc.ServicerContext) -> str | None:
    """The common name of the client certificate this call's TLS connection was
    authenticated with (None on a plaintext server)."""
    names = context.auth_context().get("x509_common_name") or []
    return names[0].decode("utf-8", "replace") if names else None


def _server_credentials(config: GrpcTransportConfig) -> grpc.ServerCredentials | None:
    if not config.security.enabled:
        return None
    files = server_tls(config.security)
    return grpc.ssl_server_credentials([(files.key_pem, files.cert_pem)],
                                       root_certificates=files.ca_pem,
                                       require_client_auth=True)


def _channel(config: GrpcTransportConfig, options: list) -> grpc.Channel:
    if not config.security.enabled:
        return grpc.insecure_channel(config.connect_address, options=options)
    files = client_tls(config.security)
    credentials = grpc.ssl_channel_credentials(root_certificates=files.ca_pem,
                                               private_key=files.key_pem,
                                               certificate_chain=files.cert_pem)
    return grpc.secure_channel(config.connect_address, credentials, options=options)


def _message_options(max_message_bytes: int) -> list[tuple[str, int]]:
    limit = max_message_bytes + _FRAME_OVERHEAD
    return [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]


class GrpcServer:
    def __init__(self, config: GrpcTransportConfig) -> None:
        self.config = config
        self.stats = StreamStats()
        self._handler: RequestHandler | None = None
        self._mailbox = LatestMailbox(self.stats)
        self._subscribers: dict[str, LatestSlot] = {}
        self._subscribers_lock = threading.Lock()
        self._stopping = threading.Event()
        self._requests = Admission("grpc-server", total=MAX_CONCURRENT_REQUESTS,
                                   per_client=MAX_PENDING_PER_CLIENT)
        self._executor: ThreadPoolExecutor | None = None
        self._server: grpc.Server | None = None
        self._closed = False

    def start(self, handler: RequestHandler) -> None:
        self._handler = handler
        credentials = _server_credentials(self.config)  # SecurityError before anything runs
        self._executor = ThreadPoolExecutor(
            max_workers=MAX_SUBSCRIBERS + MAX_CONCURRENT_REQUESTS + _QUICK_CALL_THREADS,
            thread_name_prefix="grpc-server")
        options = [*_message_options(self.config.max_message_bytes), ("grpc.so_reuseport", 0)]
        self._server = grpc.server(self._executor, options=options)
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
            "Request": grpc.unary_unary_rpc_method_handler(self._request),
            "Publish": grpc.unary_unary_rpc_method_handler(self._publish),
            "Subscribe": grpc.unary_stream_rpc_method_handler(self._subscribe),
            "Ping": grpc.unary_unary_rpc_method_handler(lambda request, context: b""),
        }),))
        try:
            port = (self._server.add_secure_port(self.config.listen, credentials)
                    if credentials is not None
                    else self._server.add_insecure_port(self.config.listen))
        except RuntimeError as exc:
            port = 0
            cause: Exception | None = exc
        else:
            cause = None
        if port == 0:
            self._executor.shutdown(wait=False)
            raise TransportError(f"cannot bind grpc endpoint {self.config.listen}") from cause
        self._server.start()

    @property
    def requests_dropped(self) -> int:
        """Requests refused because too many were in progress (`MAX_CONCURRENT_REQUESTS`)."""
        return self._requests.dropped

    def _client_id(self, context: grpc.ServicerContext) -> str:
        """The caller's id; with security, the one its certificate proves, and a call that
        claims another is refused (PERMISSION_DENIED) and counted."""
        claimed = _claimed_id(context)
        if not self.config.security.enabled:
            return claimed
        name = _authenticated_name(context)
        if name is None or claimed != name:
            self.stats.refuse("identity_refused", claimed, identity=name)
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"client id {claimed!r} is not this connection's identity {name!r}")
        return name

    def _request(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        client_id = self._client_id(context)
        if len(request) > self.config.max_message_bytes:  # grpc's limit has room for framing
            self.stats.rejected_oversize += 1
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"request of {len(request)} "
                          f"bytes exceeds max_message_bytes={self.config.max_message_bytes}")
        if not self._requests.admit(client_id):
            context.abort(grpc.StatusCode.UNAVAILABLE, "too many requests in progress")
        try:
            return self._handler(client_id, request)
        finally:
            self._requests.release(client_id)

    def _publish(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        if len(request) > self.config.max_message_bytes:  # grpc's limit has room for framing
            self.stats.rejected_oversize += 1
            return b""
        self._mailbox.put(self._client_id(context), request)
        return b""

    def _subscribe(self, request: bytes, context: grpc.ServicerContext):
        client_id = self._client_id(context)
        slot = LatestSlot()
        with self._subscribers_lock:
            full = (client_id not in self._subscribers
                    and len(self._subscribers) >= MAX_SUBSCRIBERS)
            if not full:  # a re-subscribing client replaces its old stream, which then ends
                self._subscribers[client_id] = slot
        if full:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"{MAX_SUBSCRIBERS} clients subscribed; try again")
        try:
            yield _SUBSCRIBED
            while (context.is_active() and not self._stopping.is_set()
                   and self._subscribers.get(client_id) is slot):
                item = slot.take(0.1)
                if item is not None:
                    yield item
        finally:
            with self._subscribers_lock:
                if self._subscribers.get(client_id) is slot:
                    del self._subscribers[client_id]

    def take_stream(self, timeout_s: float) -> StreamItem | None:
        return self._mailbox.take(timeout_s)

    def last_arrival_ns(self, client_id: str) -> int | None:
        return self._mailbox.last_arrival_ns(client_id)

    def forget(self, client_id: str) -> None:
        self._mailbox.forget(client_id)

    def send_stream(self, client_id: str, payload: bytes) -> None:
        check_payload_size(payload, self.config.max_message_bytes)
        with self._subscribers_lock:
            slot = self._subscribers.get(client_id)
        if slot is not None:
            self.stats.sent += 1
            if slot.put(payload):
                self.stats.superseded += 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        if self._server is not None:
            self._server.stop(grace=0.2).wait()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)


class GrpcClient:
    def __init__(self, config: GrpcTransportConfig) -> None:
        self.config = config
        self.client_id = client_transport_id(config) or uuid.uuid4().hex[:12]
        self.stats = StreamStats()
        self._metadata = ((CLIENT_ID_KEY, self.client_id),)
        self._closed = False
        options = [
            *_message_options(config.max_message_bytes),
            ("grpc.initial_reconnect_backoff_ms", config.initial_backoff_ms),
            ("grpc.min_reconnect_backoff_ms", config.initial_backoff_ms),
            ("grpc.max_reconnect_backoff_ms", config.max_backoff_ms),
        ]
        self._channel = _channel(config, options)
        self._request = self._channel.unary_unary(f"/{SERVICE}/Request")
        self._publish = self._channel.unary_unary(f"/{SERVICE}/Publish")
        self._subscribe = self._channel.unary_stream(f"/{SERVICE}/Subscribe")
        self._ping = self._channel.unary_unary(f"/{SERVICE}/Ping")

        self._inbox = LatestSlot(self.stats)
        self._outbox = LatestSlot()  # superseded observations are counted into self.stats below
        self._subscribed = threading.Event()
        self._stop = threading.Event()
        self._call_lock = threading.Lock()
        self._stream_call = None
        self._sender = threading.Thread(target=self._send_loop, daemon=True,
                                        name=f"grpc-client-{self.client_id}-send")
        self._receiver = threading.Thread(target=self._receive_loop, daemon=True,
                                          name=f"grpc-client-{self.client_id}-recv")
        self._heartbeat = Heartbeat(self._ping_once, interval_s=config.heartbeat_interval_s,
                                    timeout_s=config.heartbeat_timeout_s,
                                    name=f"grpc-client-{self.client_id}")
        self._sender.start()
        self._receiver.start()
        self._heartbeat.start()

    def _raise_for(self, exc: grpc.RpcError, timeout_s: float) -> TransportError:
        code = exc.code()
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return TransportTimeout(f"no grpc reply within {timeout_s:.3f} s")
        if code == grpc.StatusCode.UNAVAILABLE:
            return ServerUnavailable(f"grpc server unavailable: {exc.details()}")
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return PayloadTooLarge(f"grpc rejected the message size: {exc.details()}")
        if code == grpc.StatusCode.CANCELLED and self._closed:
            return TransportClosed("grpc client closed")
        return TransportError(f"grpc call failed with {code.name}: {exc.details()}")

    def request(self, payload: bytes, *, timeout_s: float) -> bytes:
        check_payload_size(payload, self.config.max_message_bytes)
        if self._closed:
            raise TransportClosed("grpc client is closed")
        try:
            return self._request(payload, timeout=timeout_s, metadata=self._metadata,
                                 wait_for_ready=True)
        except grpc.RpcError as exc:
            raise self._raise_for(exc, timeout_s) from None

    def _ping_once(self, timeout_s: float) -> None:
        try:
            self._ping(b"", timeout=timeout_s, metadata=self._metadata, wait_for_ready=False)
        except grpc.RpcError as exc:
            raise self._raise_for(exc, timeout_s) from None

    def publish(self, payload: bytes) -> None:
        check_payload_size(payload, self.config.max_message_bytes)
        if self._closed:
            raise TransportClosed("grpc client is closed")
        if self._outbox.put(payload):
            self.stats.superseded += 1

    def _send_loop(self) -> None:
        while not self._stop.is_set():
            payload = self._outbox.take(0.1)
            if payload is None:
                continue
            try:
                self._publish(payload, timeout=_PUBLISH_TIMEOUT_S, metadata=self._metadata,
                              wait_for_ready=False)
                self.stats.sent += 1
            except grpc.RpcError as exc:
                log.debug("observation lost: %s", exc.code().name)

    def _receive_loop(self) -> None:
        while not self._stop.is_set():
            with self._call_lock:
                if self._stop.is_set():
                    return
                call = self._subscribe(b"", metadata=self._metadata, wait_for_ready=True)
                self._stream_call = call
            try:
                for item in call:
                    if item == _SUBSCRIBED:
                        self._subscribed.set()
                    else:
                        self._inbox.put(item)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.CANCELLED:
                    log.debug("grpc stream ended (%s); resubscribing", exc.code().name)
            self._subscribed.clear()
            self._stop.wait(self.config.initial_backoff_ms / 1000)

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
        if not (self._heartbeat.wait_present(timeout_s) and self._subscribed.wait(timeout_s)):
            raise TransportTimeout(f"grpc server {self.config.connect_address} absent for "
                                   f"{timeout_s} s")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        with self._call_lock:
            if self._stream_call is not None:
                self._stream_call.cancel()
        self._heartbeat.stop()
        self._sender.join()
        self._receiver.join()
        self._channel.close()
