"""Zenoh specifics the conformance suite cannot see: the session config and router mode."""

from __future__ import annotations

import json
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
                                  router_endpoint=router_endpoint,
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
