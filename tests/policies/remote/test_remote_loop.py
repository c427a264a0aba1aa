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


def start_episode(tmp_path: Path, name: str, url: str, settings: list[str],
                  cameras: str) -> tuple[subprocess.Popen, Path]:
    """`python -m harness` on one LIBERO episode with the model link partitioned, started
    (the protocols' runs go side by side: each mostly waits on its server and the clock)."""
    run = tmp_path / name
    command = [sys.executable, "-m", "harness", *settings, "env.tasks=0",
               f"env.cameras=[{cameras}]", "env.image_size=256", "env.episodes_per_task=1",
               "env.max_steps=50", "policy=remote", f"policy.url={url}",
               "policy.request_timeout_s=1.0", "transport=zmq",
               f"transport.listen=tcp://127.0.0.1:{free_port()}", *SHORT_PARTITION,
               "faults.link=model", f"hydra.run.dir={run}"]
    log = (tmp_path / f"{name}.log").open("w")
    return subprocess.Popen(command, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT), run


def check_episode(name: str, process: subprocess.Popen, run: Path, log: Path) -> dict:
    """The episode's row, after checking what a partition of the model link must do: the
    black-holed requests are server errors, the episode is served before and after it, and
    no invariant breaks."""
    assert process.wait(timeout=300) == 0, f"{name}:\n{log.read_text()[-3000:]}"
    (row,) = [json.loads(p.read_text()) for p in (run / "episodes").glob("*.json")]
    errors = [e["error"] for e in row["events"] if "error" in e]
    assert errors and all("Remote" in e for e in errors), (name, errors)
    assert row["server_errors"] == len(errors) and row["breaches"] == 0, name
    faults = [e for e in row["events"] if e.get("fault") == "partition"]
    assert [f["mechanism"] for f in faults] == ["proxy black hole",
                                               "proxy heals (held bytes released)"], name
    ticks = _trace(run)
    assert any(t["source"] == "fresh" for t in ticks[:faults[0]["tick"]]), name  # before
    assert any(t["source"] == "fresh" for t in ticks[faults[1]["tick"]:]), name  # after
    return row


@pytest.mark.slow
@pytest.mark.network
def test_a_partition_on_the_model_link_fails_requests_safely_and_control_resumes(tmp_path):
    """OpenVLA's deploy.py, an AutoEval server and SGLang's /generate (each a test double of
    its server) drive a LIBERO episode, one action per observation (client=synchronous),
    through a 1 s partition of the model link."""
    doubles, servers, runs = {}, [], {}
    try:
        for protocol in ("openvla", "autoeval", "sglang"):
            double, settings = http_double(protocol)
            server = ServerThread(double.app()).start()
            servers.append(server)
            doubles[protocol] = double
            runs[protocol] = start_episode(
                tmp_path, protocol, server.url,
                [*settings, f"policy.protocol={protocol}", "client=synchronous"], "agentview")
        for protocol, (process, run) in runs.items():
            check_episode(protocol, process, run, tmp_path / f"{protocol}.log")
            assert doubles[protocol].requests, protocol
    finally:
        for process, _ in runs.values():
            process.kill()
        for server in servers:
            server.stop()
    received = doubles["openvla"].requests[-1].payload  # OpenVLA's convention, applied
    assert received["image"].shape == (224, 224, 3) and received["image"].dtype == np.uint8
    assert received["instruction"] == "pick up the alphabet soup and place it in the basket"


PEER_RUNS = {
    "openpi": (openpi_peer, ["policy.protocol=openpi", "policy.reply_chunk=10",
                             "policy.chunk_size=5"]),
    "vla_eval": (vla_eval_peer, ["policy.protocol=vla_eval", "policy.convention=vla_eval_libero",
                                 "policy.reply_chunk=10", "policy.chunk_size=5"]),
}


@pytest.mark.slow
@pytest.mark.network
def test_the_harness_drives_the_real_peers_through_a_libero_episode_with_a_model_link_fault(
        tmp_path):
    """openpi's own WebsocketPolicyServer and a vla-eval PredictModelServer run by its own
    run_server (each in its venv, a dummy model inside), driven by the harness through a
    LIBERO episode while the model link is partitioned for 1 s: the partitioned requests
    fail as server errors, the robot falls back, the adapter reconnects after the heal and
    the episode is served again; no invariant breaks."""
    peers, runs = [], {}
    try:
        for name, (make_peer, settings) in PEER_RUNS.items():
            peers.append(make_peer(tmp_path).start())
            runs[name] = start_episode(tmp_path, name, peers[-1].url,
                                       [*settings, "env=libero_object",
                                        "client.out_of_bounds=clip"], "agentview,wrist")
        for name, (process, run) in runs.items():
            row = check_episode(name, process, run, tmp_path / f"{name}.log")
            assert row["chunks_received"] > 2, name
    finally:
        for process, _ in runs.values():
            process.kill()
        for peer in peers:
            peer.stop()


def _trace(run: Path) -> list[dict]:
    import pandas as pd

    (path,) = (run / "traces").glob("*.parquet")
    return pd.read_parquet(path).to_dict("records")
