"""Zenoh specifics the conformance suite cannot see: the session config and router mode."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid

import pytest
import zenoh

from transports import (
    ZenohTransportConfig,
    make_client,
    make_replica_clients,
    make_server,
    transport_entry,
)
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
    router = _router(router_endpoint)
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


def _router(endpoint: str) -> zenoh.Session:
    config = zenoh.Config()
    for key, value in {"mode": "router", "listen/endpoints": [endpoint],
                       "scouting/multicast/enabled": False,
                       "scouting/gossip/enabled": False}.items():
        config.insert_json5(key, json.dumps(value))
    return zenoh.open(config)


def test_replicas_behind_one_router_each_take_only_their_own_robots_observations():
    """Two replicas of one namespace behind a router used to share its keys: each took every
    robot's observations (and answered the sessions it did not hold with "session unknown").
    Under their replica keys, a robot's one session reaches each replica by its prefix, and
    only the replica it addresses hears it; its clients share the session until the last
    closes."""
    router_endpoint = f"tcp/127.0.0.1:{free_port()}"
    router = _router(router_endpoint)
    base = ZenohTransportConfig(router=router_endpoint,
                                namespace=f"test/{uuid.uuid4().hex[:8]}")
    entry = transport_entry("zenoh")
    configs = [dataclasses.replace(base, **entry.replica_fields(base, index))
               for index in range(2)]
    servers = [make_server(config) for config in configs]
    for index, server in enumerate(servers):
        server.start(lambda client_id, payload, index=index: b"replica%d:" % index + payload)
    robot = make_replica_clients(configs)
    try:
        assert len({client.client_id for client in robot}) == 1
        for client in robot:
            client.wait_ready(10.0)
        assert [client.request(b"hi", timeout_s=5.0) for client in robot] == [
            b"replica0:hi", b"replica1:hi"]
        robot[1].publish(b"obs")
        assert servers[1].take_stream(timeout_s=5.0)[:2] == (robot[1].client_id, b"obs")
        assert servers[0].take_stream(timeout_s=0.5) is None
        servers[0].send_stream(robot[0].client_id, b"chunk")
        assert robot[0].take_stream(5.0) == b"chunk"
        assert robot[1].take_stream(0.3) is None
        robot[0].close()
        assert robot[1].request(b"still", timeout_s=5.0) == b"replica1:still"
        assert [config.namespace for config in configs] == [
            f"{base.namespace}/replica0", f"{base.namespace}/replica1"]
    finally:
        for client in robot:
            client.close()
        for server in servers:
            server.close()
        router.close()
