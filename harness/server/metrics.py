"""Prometheus metrics and the `/healthz` + `/metrics` HTTP endpoint of the policy server.

Each server owns its registry, so several servers in one process (tests, benchmarks) never
share counters.

Every ERROR reply streamed to a robot is counted by code in `policy_error_replies` where it is
sent (`PolicyServer._send`): the replies a robot counts on arrival (`EngineStats.error_replies`,
the results' `server_errors`). The audit log says the same per client: `ERROR_REPLY_OUTCOMES`
says which outcomes are such a reply, and `audit_error_replies` counts them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

from harness import protocol

_LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

ERROR_REPLY_OUTCOMES = {
    "inference_error": "inference",
    "internal_error": protocol.ERROR_INTERNAL,
    "rejected_observation": protocol.ERROR_CONTRACT,
}
"""Audit outcome -> the `Error.code` of the reply it sent, for the outcomes that always
answer the robot's stream with an ERROR: the model failed or its external server was
unavailable ("inference"), serving failed unforeseen ("internal"), the observation broke
the contract ("contract"). The robot counts each of these replies once, on arrival, by code
(`EngineStats.error_replies`). Two outcomes answer with an ERROR on the stream only for some
messages, and the counter cannot tell which (the audit line can, by its `type`:
`audit_error_replies`): "rejected" (of an OBSERVATION on the stream: no session of its epoch,
"session"; otherwise a refused session open or a control message answered on the request
path) and "decode_error" (on the stream or the request path)."""
SESSION_UNKNOWN_OUTCOME = ("rejected", "OBSERVATION")
"""(outcome, type) of an audit line whose reply was a session-unknown ERROR on the stream.
An OBSERVATION sent on the request path is audited alike (answered there with a protocol
error); a robot's engine never sends one."""


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.sessions = Gauge("policy_sessions", "Open sessions", registry=self.registry)
        self.sessions_rejected = Counter("policy_sessions_rejected", "Rejected session opens",
                                         registry=self.registry)
        self.requests = Counter("policy_requests", "Handled messages by outcome", ["outcome"],
                                registry=self.registry)
        self.error_replies_sent = Counter(
            "policy_error_replies", "ERROR replies sent on the robots' streams, by code (what "
            "the robots count on arrival)", ["code"], registry=self.registry)
        self.served_all = Counter("policy_chunks_served_all", "Action chunks sent, to anyone",
                                  registry=self.registry)
        self.served = Counter("policy_chunks_served", "Action chunks sent per open session's "
                              "client (its series is removed when the session ends)",
                              ["client"], registry=self.registry)
        self.stale_dropped = Counter("policy_stale_dropped",
                                     "Observations of a finished episode, dropped",
                                     registry=self.registry)
        self.sessions_expired = Counter("policy_sessions_expired",
                                        "Sessions removed after session_idle_timeout_s of silence",
                                        registry=self.registry)
        self.observations_rejected = Counter(
            "policy_observations_rejected", "Observations breaking the contract, not predicted",
            ["reason"], registry=self.registry)
        self.implicit_resets = Counter(
            "policy_implicit_resets", "Policies reset by an observation of a newer episode "
            "(its RESET was lost or late)", registry=self.registry)
        self.queue_wait = Histogram("policy_queue_wait_seconds", "Observation wait in mailbox",
                                    buckets=_LATENCY_BUCKETS_S, registry=self.registry)
        self.inference = Histogram("policy_inference_seconds", "policy.predict duration",
                                   buckets=_LATENCY_BUCKETS_S, registry=self.registry)
        self.batch_size = Histogram("policy_batch_size", "Robots predicted in the pass that "
                                    "served a chunk, per chunk (1: alone)",
                                    buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry)

    def observe_served(self, client_id: str, queue_wait_ns: int, infer_ns: int,
                       batch_size: int = 1) -> None:
        self.served_all.inc()
        self.batch_size.observe(batch_size)
        self.served.labels(client=client_id).inc()
        self.queue_wait.observe(queue_wait_ns / 1e9)
        self.inference.observe(infer_ns / 1e9)

    def served_total(self) -> float:
        return self.total(self.served_all)

    def error_replies(self) -> dict[str, int]:
        """ERROR replies sent on the robots' streams, by code (`policy_error_replies`: every
        one the server streamed, session-unknown included). Of every client: the counter has
        no client label (the audit log has: `audit_error_replies`)."""
        return {sample.labels["code"]: int(sample.value)
                for metric in self.error_replies_sent.collect() for sample in metric.samples
                if sample.name.endswith("_total") and sample.value}

    def forget_client(self, client_id: str) -> None:
        """Drop the per-client series of a client whose session ended: clients come and go
        for as long as the server runs, and each one's series must not stay forever."""
        try:
            self.served.remove(client_id)
        except KeyError:  # it was never served
            pass

    @staticmethod
    def total(counter: Counter) -> float:
        """The sum of `counter` over all its label values (the counter itself if it has none)."""
        return sum(sample.value for metric in counter.collect() for sample in metric.samples
                   if sample.name.endswith("_total"))

    def watch_transport(self, transport) -> None:
        """Export the refusals the transport counts itself, read at each scrape: requests
        dropped because too many were pending, and with security=mtls the messages whose
        claimed id was not their connection's identity and the refused handshakes."""
        self.registry.register(_TransportRefusals(transport))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _TransportRefusals:
    """A prometheus collector over a transport server's own counters."""

    def __init__(self, transport) -> None:
        self._transport = transport

    def collect(self):
        from prometheus_client.core import CounterMetricFamily

        transport = self._transport
        yield CounterMetricFamily("policy_requests_dropped",
                                  "Requests refused at once: too many were pending",
                                  value=getattr(transport, "requests_dropped", 0))
        yield CounterMetricFamily("policy_identity_refused",
                                  "Messages refused (security=mtls): the client id they claimed "
                                  "was not the identity their connection proved",
                                  value=transport.stats.identity_refused)
        yield CounterMetricFamily("policy_handshakes_refused",
                                  "Connections refused at the handshake (security=mtls, zmq: a "
                                  "CURVE key not on the allow-list)",
                                  value=getattr(transport, "handshakes_refused", 0))


def audit_error_replies(lines: Iterable[str], client: str | None = None) -> dict[str, int]:
    """ERROR replies sent on the robots' streams by code, counted from audit lines (the JSON
    the "harness.audit" logger writes, one per message handled), of one client (as the audit
    line shows it: `short_id`) or of all: the outcomes of `ERROR_REPLY_OUTCOMES`, and
    "session" for each OBSERVATION refused for want of a session (`SESSION_UNKNOWN_OUTCOME`).
    What the robot's `EngineStats.error_replies` must match.

    Raises:
        ValueError: a line is not a JSON object (json.JSONDecodeError is one).
    """
    counts: dict[str, int] = {}
    for line in lines:
        record = json.loads(line)
        if not isinstance(record, dict):
            raise ValueError(f"audit line is not a JSON object: {line[:200]!r}")
        if client is not None and record.get("client") != client:
            continue
        outcome = record.get("outcome")
        code = ERROR_REPLY_OUTCOMES.get(outcome) or (
            protocol.SESSION_UNKNOWN
            if (outcome, record.get("type")) == SESSION_UNKNOWN_OUTCOME else None)
        if code is not None:
            counts[code] = counts.get(code, 0) + 1
    return counts


class HealthEndpoint:
    """`GET /healthz` (200 "ok" or 503) and `GET /metrics` on `host`:`port` (0 picks one).

    `host` is 127.0.0.1 unless told otherwise: metrics name clients and the endpoint has no
    authentication, so it is opened to the network (0.0.0.0) only on purpose.
    """

    def __init__(self, metrics: ServerMetrics, healthy: Callable[[], bool], *,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                if self.path == "/healthz":
                    ok = outer._healthy()
                    self._respond(200 if ok else 503, b"ok\n" if ok else b"unhealthy\n",
                                  "text/plain")
                elif self.path == "/metrics":
                    self._respond(200, outer._metrics.exposition(), CONTENT_TYPE_LATEST)
                else:
                    self._respond(404, b"not found\n", "text/plain")

            def _respond(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:  # keep scrapes out of the log
                pass

        self._metrics, self._healthy = metrics, healthy
        self._http = ThreadingHTTPServer((host, port), Handler)
        self.host: str = self._http.server_address[0]
        """The address it is bound to."""
        self.port: int = self._http.server_address[1]
        self._thread = threading.Thread(target=self._http.serve_forever, name="health-http",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop serving and release the socket. Safe before `start` (`shutdown` would wait
        forever for a serving loop that never ran)."""
        if self._thread.is_alive():
            self._http.shutdown()
            self._thread.join()
        self._http.server_close()
