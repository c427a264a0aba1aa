"""Zenoh backend: peer-to-peer by default, router optional, liveliness for presence.

Keys under `<namespace>/`: `req` (queryable; the control path, the client id travels as the
query attachment), `obs/<client_id>` (observations: best-effort, express, dropped rather than
queued under congestion), `act/<client_id>` (action chunks: reliable, high priority, and also
dropped rather than queued under congestion: they are sent from the server's one inference
thread, which must never block, and latest-only means a dropped chunk is just a lost one,
which the client's engine already handles), and `alive` (the server's liveliness token).
Replicas of one server (`server.replicas=N`) serve under keys of their own, `<namespace>/
replica<i>/...` (the registry's `replica_fields`): with one shared namespace every replica's `obs/*`
subscriber would take every robot's observations (behind a router all of them do) and answer
the sessions it does not hold with "session unknown". A robot reaches all the replicas over
one session (`replica_clients`): through the router, or dialing each replica's locator, and
picks one by its key prefix, not by its address.

Multicast scouting and gossip are always off: they would send on the real network and let
sessions dial each other around a fault proxy (FACTS.md). Shared memory is off too.

Zenoh calls a queryable's callback for one query at a time: a request handler that waited
there (a session open waits for a prediction on its policy) held up every other client's
requests. The server's callback therefore only hands the query to `RequestWorkers`, which
reply from their own threads.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence

import zenoh

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
from transports.config import ROUTER_AUTO, TransportConfigError, ZenohTransportConfig
from transports.mailbox import LatestMailbox, LatestSlot
from transports.request_workers import RequestWorkers
from transports.security import client_transport_id
from transports.zenoh_security import client_values, server_values, tls_locator

log = logging.getLogger(__name__)


def session_config(config: ZenohTransportConfig, *, listen: list[str],
                   connect: list[str], secured: dict | None = None,
                   mode: str | None = None) -> zenoh.Config:
    """The zenoh session config the project uses everywhere: no scouting, no shared memory.

    Peer mode when the two sides dial each other; client mode when a router is configured,
    because a router does not broker between peers that have gossip turned off.
    """
    zconfig = zenoh.Config()
    values = {
        "mode": mode or ("client" if config.router else "peer"),
        "scouting/multicast/enabled": False,
        "scouting/gossip/enabled": False,
        "listen/endpoints": listen,
        "connect/endpoints": connect,
        "connect/retry": {
            "period_init_ms": config.retry_period_init_ms,
            "period_max_ms": config.retry_period_max_ms,
            "period_increase_factor": config.retry_period_increase_factor,
        },
        "transport/link/tx/lease": config.lease_ms,
        # Observations (REAL_TIME, DROP) of a few hundred KB are cut into 64 KB batches; with
        # the default 2-batch queue, a fragment that waits a few ms for a slot under CPU load
        # drops the whole observation silently (measured: ~1.5 per 1,000 round trips of 301 KB
        # on 2 loaded cores, none with 8 slots). 16, the most zenoh allows, holds ~1 MB.
        "transport/link/tx/queue/size/real_time": 16,
        # Shared memory would bypass the TCP link (and any fault proxy on it) between
        # processes on one host, and leaks a /dev/shm descriptor per session in 1.10.
        "transport/shared_memory/enabled": False,
        **(secured or {}),  # security=mtls: TLS files and, on the server, the ACL
    }
    for key, value in values.items():
        zconfig.insert_json5(key, json.dumps(value))
    return zconfig


def _endpoints(config: ZenohTransportConfig, *, server: bool) -> dict[str, list[str]]:
    """Peer mode: the server listens, clients connect to it. Router: everyone connects to it."""
    locator = tls_locator if config.security.enabled else str
    if config.router == ROUTER_AUTO:
        raise TransportConfigError("transport.router=auto: the harness starts that router "
                                   "(python -m harness); here give its locator")
    if config.router:
        return {"listen": [], "connect": [locator(config.router)]}
    if server:
        return {"listen": [locator(config.listen)], "connect": []}
    return {"listen": [], "connect": [locator(config.connect_address)]}


def _close_session(session: zenoh.Session | None, declared: list) -> None:
    """Undeclare entities newest first (the token goes before the queryable), then close."""
    for entity in reversed(declared):
        entity.undeclare()
    if session is not None:
        session.close()


class ZenohServer:
    def __init__(self, config: ZenohTransportConfig) -> None:
        self.config = config
        self.stats = StreamStats()
        self._handler: RequestHandler | None = None
        self._mailbox = LatestMailbox(self.stats)
        self._session: zenoh.Session | None = None
        self._declared: list = []
        self._workers: RequestWorkers | None = None
        self._closed = False

    @property
    def requests_dropped(self) -> int:
        """Requests refused at once because too many were pending (`RequestWorkers`)."""
        return self._workers.dropped if self._workers is not None else 0

    def start(self, handler: RequestHandler) -> None:
        self._handler = handler
        ns = self.config.namespace
        secured, robots = (server_values(self.config) if self.config.security.enabled
                           else (None, None))  # SecurityError before anything opens
        self._workers = RequestWorkers("zenoh-server-request")
        try:
            self._session = zenoh.open(session_config(
                self.config, **_endpoints(self.config, server=True), secured=secured))
        except zenoh.ZError as exc:
            raise TransportError(
                f"cannot open zenoh session on {self.config.listen}: {exc}") from exc
        # With security each robot has its own keys (transports.zenoh_security), and its
        # name is read from the key its ACL lets it use, not from what it claims.
        keys = [f"/{robot}" for robot in robots] if robots else [""]
        self._declared = [
            *(self._session.declare_queryable(f"{ns}/req{key}", self._on_query)
              for key in keys),
            *(self._session.declare_subscriber(f"{ns}/obs{key or '/*'}", self._on_observation)
              for key in keys),
            self._session.liveliness().declare_token(f"{ns}/alive"),
        ]

    def _on_query(self, query: zenoh.Query) -> None:
        """On zenoh's thread: take the bytes and hand the query to a worker, nothing slower."""
        handed_over = False
        try:
            # Any bytes may arrive: an id that is not UTF-8 is the handler's to refuse.
            client_id = (query.attachment.to_bytes().decode("utf-8", "replace")
                         if query.attachment else "")
            if self.config.security.enabled:  # the key the ACL let this robot query
                client_id = str(query.key_expr).rsplit("/", 1)[-1]
            payload = query.payload.to_bytes() if query.payload is not None else b""
            if len(payload) > self.config.max_message_bytes:
                self.stats.rejected_oversize += 1
                return
            handed_over = self._workers.submit(
                client_id, lambda: self._handler(client_id, payload),
                lambda answer: self._answer(query, answer))
            if not handed_over:
                query.reply_err("server busy: too many requests pending")
        except Exception:
            log.exception("taking a zenoh query failed; the client will time out")
        finally:
            if not handed_over:
                query.drop()

    def _answer(self, query: zenoh.Query, answer: bytes | None) -> None:
        """On a request worker: reply (unless the handler failed), then drop the query (its
        final reply)."""
        try:
            if answer is not None:
                query.reply(query.key_expr, answer)
        finally:
            query.drop()

    def _on_observation(self, sample: zenoh.Sample) -> None:
        payload = sample.payload.to_bytes()
        if len(payload) > self.config.max_message_bytes:
            self.stats.rejected_oversize += 1
            return
        client_id = str(sample.key_expr).rsplit("/", 1)[-1]
        self._mailbox.put(client_id, payload)

    def take_stream(self, timeout_s: float) -> StreamItem | None:
        return self._mailbox.take(timeout_s)

    def last_arrival_ns(self, client_id: str) -> int | None:
        return self._mailbox.last_arrival_ns(client_id)

    def forget(self, client_id: str) -> None:
        self._mailbox.forget(client_id)

    def send_stream(self, client_id: str, payload: bytes) -> None:
        check_payload_size(payload, self.config.max_message_bytes)
        if self._session is None or self._closed:
            raise TransportClosed("zenoh server is not running")
        self.stats.sent += 1
        self._session.put(f"{self.config.namespace}/act/{client_id}", payload,
                          congestion_control=zenoh.CongestionControl.DROP,
                          priority=zenoh.Priority.INTERACTIVE_HIGH)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._workers is not None:  # before the session: their replies need it
                self._workers.close()
            _close_session(self._session, self._declared)


class _SharedSession:
    """One zenoh session used by several clients (one per replica of a server); the last
    client to close closes it."""

    def __init__(self, session: zenoh.Session, users: int) -> None:
        self.session = session
        self._users = users
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            last = self._users == 0
        if last:
            self.session.close()


def _client_session(configs: Sequence[ZenohTransportConfig]) -> _SharedSession:
    """One client session for `configs` (one server, or every replica of one), connected to
    each distinct endpoint they dial: the router, or each server's locator."""
    first = configs[0]
    connect = [address for config in configs
               for address in _endpoints(config, server=False)["connect"]]
    session = zenoh.open(session_config(
        first, listen=[], connect=list(dict.fromkeys(connect)),
        secured=client_values(first) if first.security.enabled else None))
    return _SharedSession(session, len(configs))


def replica_clients(configs: Sequence[ZenohTransportConfig]) -> list[ZenohClient]:
    """One robot's client to each replica in `configs` (which differ in `listen` and
    `namespace`), all over one zenoh session: connected to the router, or to every replica."""
    shared = _client_session(configs)
    client_id = client_transport_id(configs[0]) or uuid.uuid4().hex[:12]
    return [ZenohClient(config, shared=shared, client_id=client_id) for config in configs]


class ZenohClient:
    def __init__(self, config: ZenohTransportConfig, *, shared: _SharedSession | None = None,
                 client_id: str | None = None) -> None:
        """Over a session of its own, or over `shared` (`replica_clients`)."""
        self.config = config
        self.client_id = client_id or client_transport_id(config) or uuid.uuid4().hex[:12]
        self.stats = StreamStats()
        self._inbox = LatestSlot(self.stats)
        self._present = threading.Event()
        self._closed = False
        ns = config.namespace
        self._request_key = (f"{ns}/req/{self.client_id}" if config.security.enabled
                             else f"{ns}/req")
        self._shared = shared or _client_session([config])
        self._session = self._shared.session
        self._attachment = self.client_id.encode()
        self._publisher = self._session.declare_publisher(
            f"{ns}/obs/{self.client_id}",
            congestion_control=zenoh.CongestionControl.DROP,
            priority=zenoh.Priority.REAL_TIME,
            express=True,
        )
        self._declared = [
            self._publisher,
            self._session.declare_subscriber(f"{ns}/act/{self.client_id}", self._on_chunk),
            self._session.liveliness().declare_subscriber(f"{ns}/alive", self._on_liveliness,
                                                          history=True),
        ]

    def _on_chunk(self, sample: zenoh.Sample) -> None:
        self._inbox.put(sample.payload.to_bytes())

    def _on_liveliness(self, sample: zenoh.Sample) -> None:
        if sample.kind == zenoh.SampleKind.PUT:
            self._present.set()
        else:
            self._present.clear()

    def request(self, payload: bytes, *, timeout_s: float) -> bytes:
        check_payload_size(payload, self.config.max_message_bytes)
        if self._closed:
            raise TransportClosed("zenoh client is closed")
        replies = self._session.get(self._request_key, payload=payload,
                                    attachment=self._attachment, timeout=timeout_s)
        for reply in replies:
            if reply.ok is not None:
                return reply.ok.payload.to_bytes()
            text = reply.err.payload.to_bytes().decode("utf-8", "replace")
            if "timeout" in text.lower():
                raise TransportTimeout(f"no zenoh reply within {timeout_s:.3f} s")
            raise TransportError(f"zenoh query failed: {text}")
        # No reply at all, at once: zenoh knows of no queryable for the key.
        raise ServerUnavailable(f"no zenoh server answers {self._request_key}")

    def publish(self, payload: bytes) -> None:
        check_payload_size(payload, self.config.max_message_bytes)
        if self._closed:
            raise TransportClosed("zenoh client is closed")
        self.stats.sent += 1
        self._publisher.put(payload)

    def take_stream(self, timeout_s: float = 0.0) -> bytes | None:
        return self._inbox.take(timeout_s)

    def take_stream_timed(self, timeout_s: float = 0.0) -> tuple[bytes, int] | None:
        return self._inbox.take_timed(timeout_s)

    def order_stream_by(self, key: Callable[[bytes], int],
                        on_displaced: Callable[[bytes, int], bool] | None = None) -> None:
        self._inbox.order_by(key, on_displaced)

    def server_present(self) -> bool:
        return self._present.is_set()

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not (self._present.is_set() and self._publisher.matching_status.matching):
            if time.monotonic() >= deadline:
                raise TransportTimeout(
                    f"zenoh server under {self.config.namespace!r} absent for {timeout_s} s")
            time.sleep(0.005)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _close_session(None, self._declared)
            self._shared.release()
