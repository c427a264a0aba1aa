"""The transport benchmark's rows for the real peers (`harness.bench.peers`): present with
sane numbers where the peer's venv exists, skipped with one line naming peers/setup.sh where
it does not. 20 round trips on small images: this checks the plumbing, not the speed."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from harness.bench import peers
from harness.bench import transport as bench

pytestmark = [pytest.mark.network, pytest.mark.slow]

ROUND_TRIPS = 20
PEER_ROWS = {
    peers.OPENPI: {("openpi client", "raw"), ("zmq stream -> server -> openpi", "raw")},
    peers.VLA_EVAL: {("vla-eval client", "png"), ("vla-eval client", "raw")},
}


@pytest.fixture(scope="module")
def rows():
    if not any(peer.python.exists() for peer in PEER_ROWS):
        pytest.skip("no peer venv (peers/.venv-openpi, peers/.venv-vlaeval): build them with "
                    "peers/setup.sh")
    results = bench.run_benchmark([], round_trips=ROUND_TRIPS, warmup=2, image_size=64,
                                  peers=True)
    return {(row["path"], row["payload"]): row for row in bench.result_rows(results)}


@pytest.mark.parametrize("peer", list(PEER_ROWS), ids=lambda peer: peer.name)
def test_a_peer_with_its_venv_has_its_rows_with_ordered_percentiles(rows, peer):
    if not peer.python.exists():
        pytest.skip(f"{peer.venv.name} is absent: build it with peers/setup.sh")
    raw_size = rows[("tcp floor", "raw")]["request_bytes"]
    for key in PEER_ROWS[peer]:
        row = rows[key]
        assert row["round_trips"] == ROUND_TRIPS and row["lost"] == 0
        assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
        assert row["x_tcp_floor"] > 0 and row["x_websocket"] > 0  # against the raw floors
        assert row["request_bytes"] > raw_size / 4  # the same two images, in some encoding


def test_absent_venvs_skip_the_peer_rows_with_one_line_naming_setup(monkeypatch, tmp_path,
                                                                    caplog):
    for name in ("OPENPI", "VLA_EVAL"):
        monkeypatch.setattr(peers, name, dataclasses.replace(getattr(peers, name),
                                                             venv=tmp_path / name))
    with caplog.at_level(logging.WARNING, logger=peers.__name__):
        jobs = peers.peer_jobs(image_size=8, warmup=0, round_trips=1)
    assert jobs == []
    (record,) = caplog.records
    assert "peers/setup.sh" in record.getMessage()
