"""Sweeps on one machine: parallel jobs (the joblib launcher) each on their own port and in
their own directory, a re-run that skips what is finished, shards of one config that add up
to the whole, and several robots sharing one server (the capacity axis)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from harness.loop.ports import PortRangeError, default_port, job_transport
from harness.overrides import quoted_override
from transports.config import (
    GrpcTransportConfig,
    LocalTransportConfig,
    ZenohTransportConfig,
    ZmqTransportConfig,
)

# Modelled faults over the in-process transport with a fixed latency: deterministic
# episodes, no server process, a second or two each.
DETERMINISTIC = ("transport=local", "faults=fixed_delay", "faults.apply=modelled",
                 "faults.timed.0.delay_s=0.02", "latency.kind=fixed", "latency.value_s=0.05")


def harness(tmp_path: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=timeout)


def rows(run_dir: Path) -> dict[tuple[int, int], dict]:
    """The run's episode rows by (task, episode)."""
    found = {}
    for path in sorted((run_dir / "episodes").glob("*.json")):
        row = json.loads(path.read_text())
        found[row["task"], row["episode"]] = row
    return found


def test_job_n_of_a_sweep_listens_n_ports_up_and_job_0_where_configured():
    zmq = ZmqTransportConfig(listen="tcp://127.0.0.1:5555")
    assert job_transport(zmq, 0) is zmq
    assert job_transport(zmq, 3).listen == "tcp://127.0.0.1:5558"
    assert job_transport(GrpcTransportConfig(listen="127.0.0.1:50051"), 2).listen == \
        "127.0.0.1:50053"
    assert job_transport(ZenohTransportConfig(listen="tcp/127.0.0.1:7447"), 1).listen == \
        "tcp/127.0.0.1:7448"


def test_a_user_named_server_address_and_the_local_transport_are_left_alone():
    external = ZmqTransportConfig(listen="tcp://127.0.0.1:5555", connect="tcp://10.0.0.5:5555")
    assert job_transport(external, 4) is external
    local = LocalTransportConfig()
    assert job_transport(local, 4) is local


def test_a_port_past_65535_is_refused_naming_the_field():
    with pytest.raises(PortRangeError, match="transport.listen=tcp://127.0.0.1:65535"):
        job_transport(ZmqTransportConfig(listen="tcp://127.0.0.1:65535"), 1)


@pytest.mark.parametrize("path", ["/tmp/sweep/faults=lte,transport=zmq/server-task0",
                                  "/tmp/it's [odd]/a\\b", "/tmp/end\\", "/tmp/q\\'x"])
def test_a_quoted_override_reaches_hydra_as_the_one_string_it_was(path):
    """A sweep names its run directories by their overrides: unquoted, the server's
    `hydra.run.dir=.../faults=lte,transport=zmq` parsed as a list and the server never
    started."""
    override = OverridesParser.create().parse_overrides([quoted_override("hydra.run.dir", path)])
    assert override[0].value() == path


@pytest.mark.slow
@pytest.mark.network
def test_parallel_jobs_each_serve_on_their_own_port_and_a_rerun_skips_them(tmp_path):
    """Two zmq jobs at once under joblib (n_jobs=2): with one port they would bind the same
    address; each must serve its own episodes. Run again, nothing is re-run."""
    sweep = tmp_path / "sweep"
    args = ("-m", "transport=zmq", "client=synchronous,async_newest", "env.episodes_per_task=2",
            "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}")
    first = harness(tmp_path, *args)
    assert first.returncode == 0, first.stderr[-3000:]
    jobs = sorted(p.parent for p in sweep.glob("*/config.json"))
    assert [p.name for p in jobs] == ["client=async_newest,env.episodes_per_task=2,transport=zmq",
                                      "client=synchronous,env.episodes_per_task=2,transport=zmq"]
    addresses = set()
    for job in jobs:
        assert json.loads((job / "summary.json").read_text())["successes"] == 2
        assert "transport=zmq" in json.loads((job / "overrides.json").read_text())
        addresses |= set(re.findall(r"policy server \(zmq at (\S+)\)",
                                    (job / "__main__.log").read_text()))
    assert addresses == {f"tcp://127.0.0.1:{default_port(5555)}",
                         f"tcp://127.0.0.1:{default_port(5556)}"}
    written = {p: p.stat().st_mtime_ns for p in sweep.glob("*/episodes/*.json")}
    second = harness(tmp_path, *args)
    assert second.returncode == 0, second.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in sweep.glob("*/episodes/*.json")} == written
    assert (second.stdout + second.stderr).count("all 2 episodes already in") == 2


@pytest.mark.slow
def test_shards_of_a_config_add_up_to_the_whole_run_without_overlap(tmp_path):
    whole = harness(tmp_path, *DETERMINISTIC, "env.episodes_per_task=5",
                    f"hydra.run.dir={tmp_path}/whole")
    assert whole.returncode == 0, whole.stderr[-3000:]
    sharded = harness(tmp_path, "-m", *DETERMINISTIC, "env.episodes_per_task=5",
                      "shard=0/2,1/2", f"hydra.sweep.dir={tmp_path}/sweep")
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    shard_dirs = sorted((tmp_path / "sweep").glob("*/shard-*"))
    assert [p.name for p in shard_dirs] == ["shard-0-of-2", "shard-1-of-2"]
    parts = [rows(d) for d in shard_dirs]
    assert sorted(parts[0]) == [(0, 1), (0, 3), (0, 5)] and sorted(parts[1]) == [(0, 2), (0, 4)]
    expected = rows(tmp_path / "whole")
    merged = {**parts[0], **parts[1]}
    assert merged.keys() == expected.keys()
    for key, row in expected.items():  # the same seeded episode, whichever job ran it
        assert (merged[key]["success"], merged[key]["steps"]) == (row["success"], row["steps"])
    assert {merged[key]["shard"] for key in merged} == {"0/2", "1/2"}


@pytest.mark.parametrize("shard", ["2/2", "1/0", "a/b", "1"])
def test_a_bad_shard_fails_at_startup_naming_it(tmp_path, shard):
    result = harness(tmp_path, "transport=local", f"shard={shard}",
                     f"hydra.run.dir={tmp_path}/run", timeout=120)
    assert result.returncode == 2
    assert f"shard={shard!r}: expected 'i/n'" in result.stdout + result.stderr


@pytest.mark.parametrize(("overrides", "message"), [
    (("clients=5",), "clients=5: more than server.max_sessions=4"),
    (("clients=0",), "clients=0: must be in 1..64"),
    (("clients=2", "transport=zmq", "faults=server_stall"),
     "clients=2 with faults=server_stall (emulated)"),
])
def test_bad_client_counts_fail_at_startup_naming_the_fields(tmp_path, overrides, message):
    result = harness(tmp_path, *overrides, f"hydra.run.dir={tmp_path}/run", timeout=120)
    assert result.returncode == 2
    assert message in result.stdout + result.stderr


@pytest.mark.slow
@pytest.mark.network
def test_robots_sharing_a_slow_server_wait_in_its_queue(tmp_path):
    """Two robots, one server taking ~120 ms per inference: each robot's round trip splits
    into the server's mailbox wait (the other robot's inference) and its own inference."""
    result = harness(tmp_path, "transport=zmq", "clients=2", "policy.latency_profile=openvla_4090",
                     "env.episodes_per_task=2", "env.max_steps=40",
                     "transport.heartbeat_timeout_s=2.0", f"hydra.run.dir={tmp_path}/run")
    assert result.returncode == 0, result.stderr[-3000:]
    found = rows(tmp_path / "run")
    assert sorted(found) == [(0, 1), (0, 2)]
    assert {row["robot"] for row in found.values()} == {0, 1}  # both robots took one
    import pandas as pd

    ticks = pd.concat([pd.read_parquet(p) for p in (tmp_path / "run" / "traces").glob("*")])
    merged = ticks.dropna(subset=["measured_latency_s"])
    assert len(merged) > 0
    assert (merged["server_infer_s"] > 0.05).all()  # the profile: ~120 ms, jittered
    assert (merged["server_queue_s"] + merged["server_infer_s"]
            <= merged["measured_latency_s"]).all()  # the server's share is inside the trip
    assert merged["server_queue_s"].max() > 0.05  # some request waited for the other robot
    assert (merged["server_batch_size"] == 1).all()  # round robin: each predicted alone


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["parallel", "basic"])
def test_an_invalid_point_of_a_sweep_fails_alone(tmp_path, launcher):
    """Before, the invalid point's exit (status 2, from the config check) ended the sweep:
    the valid point after it never ran."""
    sweep = tmp_path / "sweep"
    result = harness(tmp_path, "-m", f"hydra/launcher={launcher}", "transport=local",
                     "clients=100,1", "env.episodes_per_task=1", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "clients=100: must be in 1..64" in output and "JobFailed: invalid config" in output
    assert [p.parent.parent.name for p in sweep.glob("*/episodes/*.json")] == [
        "clients=1,env.episodes_per_task=1,transport=local"]
