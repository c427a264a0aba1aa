"""Zenoh specifics the conformance suite cannot see: the session config and router mode."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import zenoh

from transports import ZenohTransportConfig, make_client, make_server
from transports.loopback import free_port
from transports.zenoh import session_config

pytestmark = pytest.mark.network


def test_session_config_never_scouts_or_gossips_and_uses_tuned_lease():
    zconfig = session_config(ZenohTransportConfig(lease_ms=1000), listen=[], connect=[])
    assert json.loads(zconfig.get_json("scouting/multicast/enabled")) is False
    assert json.loads(zconfig.get_json("scouting/gossip/enabled")) is False
    assert json.loads(zconfig.get_json("transport/link/tx/lease")) == 1000
    assert json.loads(zconfig.get_json("transport/shared_memory/enabled")) is False
    assert json.loads(zconfig.get_json("connect/retry"))["period_init_ms"] == 100


def test_server_and_client_talk_through_an_optional_router():
    router_endpoint = f"tcp/127.0.0.1:{free_port()}"
    router_config = zenoh.Config()
    for key, value in {"mode": "router", "listen/endpoints": [router_endpoint],
                       "scouting/multicast/enabled": False,
                       "scouting/gossip/enabled": False}.items():
        router_config.insert_json5(key, json.dumps(value))
    router = zenoh.open(router_config)
    config = ZenohTransportConfig(listen=f"tcp/127.0.0.1:{free_port()}",
                                  router=router_endpoint,
                                  namespace=f"test/{uuid.uuid4().hex[:8]}")
    server = make_server(config)
    server.start(lambda client_id, payload: b"via router: " + payload)
    client = make_client(config)
    try:
        client.wait_ready(10.0)
        assert client.request(b"hello", timeout_s=5.0) == b"via router: hello"
        client.publish(b"obs")
        assert server.take_stream(timeout_s=5.0)[:2] == (client.client_id, b"obs")
    finally:
        client.close()
        server.close()
        router.close()


def test_a_query_whose_attachment_is_not_utf8_is_answered():
    """A client id is the query's attachment; bytes that are not UTF-8 used to raise in the
    server's callback (no reply, a traceback). The handler now gets the id with the bad
    bytes replaced, and its reply goes back."""
    config = ZenohTransportConfig(listen=f"tcp/127.0.0.1:{free_port()}",
                                  namespace=f"rph/{uuid.uuid4().hex[:8]}")
    server = make_server(config)
    seen: list[str] = []
    server.start(lambda client_id, payload: seen.append(client_id) or b"answer:" + payload)
    attacker = zenoh.open(session_config(config, listen=[], connect=[config.listen]))
    try:
        replies, deadline = [], time.monotonic() + 10.0
        while not replies and time.monotonic() < deadline:  # a get before the link is up
            replies = list(attacker.get(f"{config.namespace}/req", payload=b"x",  # has none
                                        attachment=b"\xff\xfe id", timeout=2.0))
            time.sleep(0.05)
        assert [r.ok.payload.to_bytes() if r.ok else r.err for r in replies] == [b"answer:x"]
        assert seen == ["\ufffd\ufffd id"]
    finally:
        attacker.close()
        server.close()
