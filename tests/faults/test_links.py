"""`ProxyGroup`: with faults.link=both, one fault acts on the robot's link and the model's
link at once; each proxy's draws stay its own."""

from __future__ import annotations

import pytest

from harness.faults.links import ProxyGroup
from harness.faults.proxy import FaultProxy
from tests.faults.test_proxy import EchoServer, connect, echo_once


@pytest.fixture
def two_links():
    servers = [EchoServer(), EchoServer()]
    proxies = [FaultProxy("127.0.0.1", s.port, seed=1) for s in servers]
    for proxy in proxies:
        proxy.start()
    yield servers, proxies
    for proxy in proxies:
        proxy.stop()
    for server in servers:
        server.close()


@pytest.mark.network
def test_a_partition_and_a_reset_reach_every_link_of_the_group(two_links):
    _, proxies = two_links
    group = ProxyGroup(proxies)
    sockets = [connect(p.port) for p in proxies]
    try:
        assert [echo_once(s, b"up") for s in sockets] == [b"up", b"up"]
        group.set_partition(True)
        for sock in sockets:
            sock.sendall(b"held")
            sock.settimeout(0.3)
            with pytest.raises(TimeoutError):
                sock.recv(1)
        assert [p.stats.held_bytes for p in proxies] == [4, 4]
        group.set_partition(False)
        assert group.reset_connections() == 2  # one connection through each
    finally:
        for sock in sockets:
            sock.close()


def test_each_link_draws_its_own_jitter_yet_the_first_keeps_the_single_links():
    calls = []

    class Recorder:  # test double of a proxy: records what the group passes on
        def __init__(self, name):
            self.name = name

        def reseed(self, seed):
            calls.append((self.name, seed))

    ProxyGroup([Recorder("client"), Recorder("model")]).reseed(7)
    assert calls == [("client", 7), ("model", 57)]  # the client's as with one proxy


def test_an_empty_group_is_refused():
    with pytest.raises(ValueError, match="at least one proxy"):
        ProxyGroup([])
