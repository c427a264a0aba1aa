"""The benchmark's plumbing: peers start in their own process, rows carry consistent ratios.

Tiny round-trip counts: this checks what the benchmark computes, not how fast anything is.
"""

from __future__ import annotations

import numpy as np
import pytest

from harness import protocol
from harness.bench import transport as bench
from transports import LocalTransportConfig, ZmqTransportConfig

pytestmark = pytest.mark.network


def test_realistic_observation_matches_the_documented_sizes():
    payloads = bench.observation_payloads(image_size=224, jpeg_quality=80)
    assert 300_000 < len(payloads["raw"]) < 305_000  # two 224x224x3 images + state + text
    assert len(payloads["jpeg"]) < len(payloads["raw"]) / 4
    observation = protocol.decode(payloads["raw"]).body
    assert sorted(observation.images) == ["agentview", "wrist"]
    assert observation.images["wrist"].shape == (224, 224, 3)
    assert observation.state["robot_state"].shape == (9,)


def test_benchmark_rows_cover_every_path_with_ratios_to_the_floors():
    results = bench.run_benchmark([LocalTransportConfig(name="bench-test"), ZmqTransportConfig()],
                                  round_trips=5, warmup=1, image_size=32)
    rows = bench.result_rows(results)
    paths = {(row["path"], row["payload"]) for row in rows}
    expected_paths = ["tcp floor", "codec floor", "websocket+msgpack", "local request",
                      "local stream", "zmq request", "zmq stream"]
    assert paths == {(p, n) for p in expected_paths for n in ("raw", "jpeg")}
    for row in rows:
        assert row["round_trips"] == 5
        assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
        if row["path"] == "tcp floor":
            assert row["x_tcp_floor"] == 1.0
        if row["path"] == "websocket+msgpack":
            assert row["x_websocket"] == 1.0


def test_a_lost_stream_round_trip_is_counted_not_fatal():
    result = bench.BenchResult("zenoh stream", "raw", 10,
                               np.array([1.0, np.nan, 2.0, 3.0, np.nan]))
    assert result.lost == 2 and result.percentile(50) == 2.0
    (row,) = bench.result_rows([result])
    assert (row["round_trips"], row["lost"], row["p50_ms"]) == (5, 2, 2.0)
