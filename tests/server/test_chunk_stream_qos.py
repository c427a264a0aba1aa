"""The server's chunk stream over zenoh never blocks the inference thread: chunks are put
with congestion control DROP (latest-only: a dropped chunk is a lost one, which clients
handle), at the priority the design gives them."""

from __future__ import annotations

import queue

import pytest

from transports import make_server
from transports.loopback import loopback_config

zenoh = pytest.importorskip("zenoh")
pytestmark = pytest.mark.network


def test_zenoh_server_streams_chunks_with_drop_congestion_control():
    from transports.zenoh import session_config

    config = loopback_config("zenoh")
    server = make_server(config)
    server.start(lambda client_id, payload: payload)
    listener = zenoh.open(session_config(config, listen=[], connect=[config.connect_address]))
    samples: queue.Queue = queue.Queue()
    subscriber = listener.declare_subscriber(f"{config.namespace}/act/robot-1", samples.put)
    try:
        sample = None
        for _ in range(200):  # until the subscription has reached the server: 10 s at most
            server.send_stream("robot-1", b"chunk")
            try:
                sample = samples.get(timeout=0.05)
                break
            except queue.Empty:
                continue
        assert sample is not None, "no chunk reached the subscriber within 10 s"
        assert sample.payload.to_bytes() == b"chunk"
        assert sample.congestion_control == zenoh.CongestionControl.DROP
        assert sample.priority == zenoh.Priority.INTERACTIVE_HIGH
        assert sample.express is False
    finally:
        subscriber.undeclare()
        listener.close()
        server.close()
