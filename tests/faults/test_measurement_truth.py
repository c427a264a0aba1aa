"""Measurement truth: what the fault proxy says it adds is what every transport measures.

A fixed delay D each way must raise the measured round trip by 2D: the fastest round trip
through the proxy never less than 2D - 1 ms over the fastest direct one (the proxy must not
deliver early; fastest against fastest, because this machine's scheduling noise only ever
adds and a median of the direct baseline once came out 2.3 ms slow with the suite running on
both cores), the median at most max(10 ms, 20%) over the direct median (the proxy's own
overhead plus that noise: a median of 9 came out 6.1 ms over 2 x 25 ms), still far from D or
3D; a bandwidth B
must add P/B for a payload of P bytes within 10%. Medians of
a few round trips, direct and through the proxy, in one test. The bench measures the
accuracy itself (0.3-1.8 ms over 2D here).
These are the checks that make a sweep over emulated delays mean what its axis says. The
figures themselves: `python -m harness.bench.link`.
"""

from __future__ import annotations

import numpy as np
import pytest

from harness.bench.link import ProxiedLink, median_round_trip_s
from harness.bench.timing import round_trips_s
from harness.faults.shaping import LinkShape
from tests.transports.test_conformance import config_for

pytestmark = [pytest.mark.network, pytest.mark.slow]


@pytest.fixture(params=["zenoh", "grpc", "zmq"])
def link(request):
    opened = ProxiedLink(config_for(request.param))
    yield opened
    opened.close()


def test_a_fixed_delay_each_way_adds_twice_itself_to_the_round_trip(link):
    payload = b"x" * 300
    for delay_s in (0.025, 0.100):
        direct_s = round_trips_s(link.direct, payload, 9, idle_s=2 * delay_s)
        link.proxy.set_shape(LinkShape(delay_s=delay_s))
        proxied_s = round_trips_s(link.proxied, payload, 9)
        fastest_added_s = proxied_s.min() - direct_s.min()
        median_added_s = float(np.median(proxied_s) - np.median(direct_s))
        assert fastest_added_s >= 2 * delay_s - 1e-3, (link.config.kind, delay_s, fastest_added_s)
        assert median_added_s <= 2 * delay_s + max(10e-3, 0.2 * 2 * delay_s), \
            (link.config.kind, delay_s, median_added_s)


def test_a_bandwidth_adds_the_payload_over_the_rate(link):
    payload = bytes(200_000)
    bandwidth_bps = 8e6
    unshaped_s = median_round_trip_s(link.proxied, payload, 5)
    link.proxy.set_shape(LinkShape(bandwidth_bps=bandwidth_bps))
    added_s = median_round_trip_s(link.proxied, payload, 5) - unshaped_s
    expected_s = 8 * len(payload) / bandwidth_bps  # 0.2 s; the 300-byte reply adds 0.3 ms
    assert added_s == pytest.approx(expected_s, rel=0.10), (link.config.kind, added_s)
