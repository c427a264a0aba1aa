"""The harness drives an external model server through a LIBERO episode with a fault on the
model link: our server's requests to it are black-holed for a while (faults.link=model),
those requests fail as inference errors the client counts, the fail-safe path holds the
robot, nothing breaches the invariants, and control resumes after the partition. The real
openpi and vla-eval servers run in their own venvs; OpenVLA's deploy.py, AutoEval and SGLang
are test doubles of their servers (no GPU, no 7B weights here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from policies.remote.action_tokens import LIBERO_SPATIAL_STATISTICS
from tests.policies.remote.doubles import ServerThread
from tests.policies.remote.doubles.autoeval import AutoEvalDouble
from tests.policies.remote.doubles.openvla_deploy import DeployDouble
from tests.policies.remote.doubles.sglang_generate import SglangDouble
from tests.policies.remote.peers import openpi_peer, vla_eval_peer
from transports.loopback import free_port

SHORT_PARTITION = ("faults=partition_3s", "faults.timed.0.start_s=0.5",
                   "faults.timed.0.duration_s=1.0")
"""The model link black-holed from 0.5 s to 1.5 s of a 2.5 s episode (50 ticks at 20 Hz)."""


def http_double(protocol: str):
    """The test double of the HTTP server `protocol` drives, and the settings it needs."""
    if protocol == "openvla":
        return DeployDouble(), ["env=libero_object"]
    if protocol == "autoeval":
        return AutoEvalDouble(), ["env=libero_object"]
    return SglangDouble(output_ids=[31999, 31744, 31872, 31872, 31800, 31900, 31744]), [
        "env=libero_spatial", "policy.unnorm_key=libero_spatial",
        f"policy.dataset_statistics={LIBERO_SPATIAL_STATISTICS}",
        "policy.model_id=openvla/openvla-7b"]


@pytest.mark.slow
@pytest.mark.network
@pytest.mark.parametrize("protocol", ["openvla", "autoeval", "sglang"])
def test_a_partition_on_the_model_link_fails_requests_safely_and_control_resumes(
        tmp_path, protocol):
    """OpenVLA's deploy.py, an AutoEval server and SGLang's /generate (each a test double of
    its server) drive a LIBERO episode, one action per observation, through a 1 s partition
    of the model link."""
    double, settings = http_double(protocol)
    server = ServerThread(double.app()).start()
    run = tmp_path / "run"
    try:
        result = subprocess.run(
            [sys.executable, "-m", "harness", *settings, "env.tasks=0",
             "env.cameras=[agentview]", "env.image_size=256", "env.episodes_per_task=1",
             "env.max_steps=50", "policy=remote", f"policy.protocol={protocol}",
             f"policy.url={server.url}", "policy.request_timeout_s=1.0",
             "client=synchronous", "transport=zmq",
             f"transport.listen=tcp://127.0.0.1:{free_port()}", *SHORT_PARTITION,
             "faults.link=model", f"hydra.run.dir={run}"],
            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = [json.loads(p.read_text()) for p in (run / "episodes").glob("*.json")]
    errors = [e["error"] for e in row["events"] if "error" in e]
    assert errors and all("RemoteUnavailable" in e for e in errors)  # the black-holed ones
    assert row["server_errors"] == len(errors) and row["breaches"] == 0
    faults = [e for e in row["events"] if e.get("fault") == "partition"]
    assert [f["mechanism"] for f in faults] == ["proxy black hole",
                                               "proxy heals (held bytes released)"]
    ticks = _trace(run)
    assert any(t["source"] == "fresh" for t in ticks[:faults[0]["tick"]])  # before: served
    assert any(t["source"] == "fresh" for t in ticks[faults[1]["tick"]:])  # after: again
    assert double.requests
    if protocol == "openvla":  # what deploy.py was sent: OpenVLA's convention, applied
        received = double.requests[-1].payload
        assert received["image"].shape == (224, 224, 3) and received["image"].dtype == np.uint8
        assert received["instruction"] == "pick up the alphabet soup and place it in the basket"


def _trace(run: Path) -> list[dict]:
    import pandas as pd

    (path,) = (run / "traces").glob("*.parquet")
    return pd.read_parquet(path).to_dict("records")


PEER_RUNS = {
    "openpi": (openpi_peer, ["policy.protocol=openpi", "policy.reply_chunk=10",
                             "policy.chunk_size=5"]),
    "vla_eval": (vla_eval_peer, ["policy.protocol=vla_eval", "policy.convention=vla_eval_libero",
                                 "policy.reply_chunk=10", "policy.chunk_size=5"]),
}


@pytest.mark.slow
@pytest.mark.network
@pytest.mark.parametrize("peer", sorted(PEER_RUNS))
def test_the_harness_drives_a_real_peer_through_a_libero_episode_with_a_model_link_fault(
        tmp_path, peer):
    """openpi's own WebsocketPolicyServer and a vla-eval PredictModelServer run by its own
    run_server (each in its venv, a dummy model inside), driven by the harness through a
    LIBERO episode while the model link is partitioned for 1 s: the partitioned requests
    fail as server errors, the robot falls back, the adapter reconnects after the heal and
    the episode is served again; no invariant breaks."""
    make_peer, settings = PEER_RUNS[peer]
    server = make_peer(tmp_path).start()
    try:
        run = tmp_path / "run"
        result = subprocess.run(
            [sys.executable, "-m", "harness", "env=libero_object", "env.tasks=0",
             "env.cameras=[agentview,wrist]", "env.image_size=256", "env.episodes_per_task=1",
             "env.max_steps=50", "policy=remote", *settings, f"policy.url={server.url}",
             "policy.request_timeout_s=1.0", "client.out_of_bounds=clip", "transport=zmq",
             f"transport.listen=tcp://127.0.0.1:{free_port()}", *SHORT_PARTITION,
             "faults.link=model", f"hydra.run.dir={run}"],
            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = [json.loads(p.read_text()) for p in (run / "episodes").glob("*.json")]
    errors = [e["error"] for e in row["events"] if "error" in e]
    assert errors and all("Remote" in e for e in errors), errors
    assert row["breaches"] == 0 and row["chunks_received"] > 2
    faults = [e for e in row["events"] if e.get("fault") == "partition"]
    ticks = _trace(run)
    assert any(t["source"] == "fresh" for t in ticks[:faults[0]["tick"]])
    assert any(t["source"] == "fresh" for t in ticks[faults[1]["tick"]:])
