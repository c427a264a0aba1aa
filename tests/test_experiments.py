"""Named experiments (`conf/experiment/`, `python -m harness -m +experiment=NAME`): each
composes, each of its swept values makes a valid config, and a multirun runs every job even
when one fails (a job's exit status must not end the sweep)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from harness.config import config_dir, register_configs, validate

register_configs()
EXPERIMENTS = sorted(p.stem for p in Path(config_dir(), "experiment").glob("*.yaml"))


def compose_with(*overrides: str, hydra_config: bool = False):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides),
                       return_hydra_config=hydra_config)


def sweep_params(name: str) -> dict[str, list[str]]:
    params = compose_with(f"+experiment={name}", hydra_config=True).hydra.sweeper.params
    return {key: str(values).split(",") for key, values in params.items()}


def test_the_named_experiments_are_there_and_say_how_to_run_them():
    assert EXPERIMENTS == ["capacity", "client_settings", "fault_matrix", "latency_sweep",
                           "transport_comparison"]
    for name in EXPERIMENTS:
        text = Path(config_dir(), "experiment", f"{name}.yaml").read_text()
        assert text.startswith("# @package _global_\n")
        assert f"python -m harness -m +experiment={name}" in text


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_point_of_an_experiment_is_a_valid_config(name):
    params = sweep_params(name)
    assert params and all(len(values) >= 2 for values in params.values())
    for point in itertools.product(*params.values()):
        overrides = [f"{key}={value}" for key, value in zip(params, point, strict=True)]
        validate(compose_with(f"+experiment={name}", *overrides))  # raises on a bad value


def test_an_experiment_sets_what_it_says():
    latency = compose_with("+experiment=latency_sweep")
    assert (latency.transport.kind, latency.faults.name) == ("zmq", "fixed_delay")
    assert latency.transport.heartbeat_timeout_s == 2.0
    assert sweep_params("latency_sweep")["client"] == ["synchronous", "async_newest",
                                                       "delay_aware"]
    assert compose_with("+experiment=client_settings").faults.name == "lte"


def run_multirun(tmp_path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", "-m", *overrides,
                           f"hydra.sweep.dir={tmp_path}/sweep"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_a_named_experiment_runs_every_job_of_its_sweep(tmp_path):
    result = run_multirun(tmp_path, "+experiment=transport_comparison",
                          "env.episodes_per_task=1")
    assert result.returncode == 0, result.stderr[-2000:]
    summaries = sorted((tmp_path / "sweep").glob("*/summary.json"))
    assert len(summaries) == 4  # local, zenoh, grpc, zmq
    kinds = [json.loads((s.parent / "config.json").read_text())["transport"]["kind"]
             for s in summaries]
    assert sorted(kinds) == ["grpc", "local", "zenoh", "zmq"]
    assert all(json.loads(s.read_text())["successes"] == 1 for s in summaries)


@pytest.mark.slow
def test_a_failing_job_does_not_end_the_sweep_and_the_sweep_fails(tmp_path):
    """Before, the job's `sys.exit` ended a multirun after its first job, whatever its
    status: `-m transport=zenoh,grpc,zmq` ran zenoh only."""
    result = run_multirun(tmp_path, "server=external", "transport=zmq",
                          "transport.connect=tcp://127.0.0.1:1,tcp://127.0.0.1:2",
                          "server.startup_timeout_s=1", "env.episodes_per_task=1")
    assert result.returncode == 1
    assert len(list((tmp_path / "sweep").rglob("config.json"))) == 2  # a run dir per config
    output = result.stdout + result.stderr
    assert "#1 : server=external" in output and "JobFailed" in output
    assert "no policy server answered over zmq at tcp://127.0.0.1:2" in output
