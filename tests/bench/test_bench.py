"""The benchmark's plumbing: peers start in their own process, rows carry consistent ratios,
every registered transport gets its rows.

Tiny round-trip counts: this checks what the benchmark computes, not how fast anything is.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest

from harness import protocol
from harness.bench import transport as bench
from harness.bench.payloads import observation_payloads
from harness.bench.timing import BenchResult
from transports import transport_names
from transports.loopback import loopback_config

pytestmark = pytest.mark.network


def test_realistic_observation_matches_the_documented_sizes():
    payloads = observation_payloads(image_size=224, jpeg_quality=80)
    assert 300_000 < len(payloads["raw"]) < 305_000  # two 224x224x3 images + state + text
    assert len(payloads["jpeg"]) < len(payloads["raw"]) / 4
    observation = protocol.decode(payloads["raw"]).body
    assert sorted(observation.images) == ["agentview", "wrist"]
    assert observation.images["wrist"].shape == (224, 224, 3)
    assert observation.state["robot_state"].shape == (9,)


def test_floor_rows_cover_every_reference_with_ratios_of_one_to_themselves():
    rows = bench.result_rows(bench.run_benchmark([], round_trips=5, warmup=1, image_size=32))
    assert {(row["path"], row["payload"]) for row in rows} == {
        (p, n) for p in ("tcp floor", "codec floor", "websocket+msgpack")
        for n in ("raw", "jpeg")}
    for row in rows:
        assert row["round_trips"] == 5
        assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
        if row["path"] == "tcp floor":
            assert row["x_tcp_floor"] == 1.0
        if row["path"] == "websocket+msgpack":
            assert row["x_websocket"] == 1.0


@pytest.mark.parametrize("kind", transport_names())
def test_a_transport_has_request_and_stream_rows_for_both_payloads(kind):
    results = bench.run_benchmark([loopback_config(kind)], round_trips=5, warmup=1,
                                  image_size=32, floors=False)
    rows = bench.result_rows(results)
    assert sorted((row["path"], row["payload"]) for row in rows) == sorted(
        (f"{kind} {path}", payload) for path in ("request", "stream")
        for payload in ("raw", "jpeg"))
    for row in rows:
        assert row["round_trips"] == 5
        assert row["x_tcp_floor"] is None and row["x_websocket"] is None  # no floors ran
        if row["path"].endswith("request"):  # the request path is reliable: nothing lost
            assert row["lost"] == 0
            assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]


def test_a_lost_stream_round_trip_is_counted_not_fatal():
    result = BenchResult("zenoh stream", "raw", 10, np.array([1.0, np.nan, 2.0, 3.0, np.nan]))
    assert result.lost == 2 and result.percentile(50) == 2.0
    (row,) = bench.result_rows([result])
    assert (row["round_trips"], row["lost"], row["p50_ms"]) == (5, 2, 2.0)


def test_an_unknown_transport_on_the_command_line_fails_listing_the_choices(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--transports", "zmq,udp", "--no-floors", "--no-peers"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.endswith(
        "error: --transports: transport.kind='udp': expected one of local, zenoh, grpc, zmq, "
        "or an import path 'package.module:ENTRY' whose ENTRY is a TransportEntry\n")


@pytest.mark.network
def test_the_security_bench_measures_each_transport_off_and_on(tmp_path):
    """One row per transport with p50s off and on and their ratios (`harness.bench.security`),
    from keys it makes itself."""
    from harness.bench import security

    out = tmp_path / "security.csv"
    assert security.main(["--round-trips", "5", "--warmup", "1", "--handshakes", "1",
                          "--csv", str(out)]) == 0
    rows = list(csv.DictReader(open(out)))
    assert [row["transport"] for row in rows] == list(security.KINDS)
    for row in rows:
        for measure in ("handshake", "request", "stream"):
            plain, secured = (float(row[f"{measure}_p50_ms_{m}"]) for m in ("none", "mtls"))
            assert plain > 0 and secured > 0
            assert float(row[f"{measure}_ratio"]) == pytest.approx(secured / plain, abs=0.01)
