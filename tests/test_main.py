"""`python -m harness` end to end: each job writes its table into the Hydra run directory,
and a bad value stops it at startup naming the field."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def run_harness(*overrides: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *overrides], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_evaluate_job_writes_one_row_per_episode(tmp_path):
    result = run_harness("job=evaluate", "env.episodes_per_task=3", f"hydra.run.dir={tmp_path}/run",
                         cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(open(tmp_path / "run" / "episodes.csv")))
    assert [r["seed"] for r in rows] == ["0", "1", "2"]
    assert all(r["env"] == "mujoco_pick_place" and r["success"] == "True" for r in rows)
    assert "mujoco_pick_place / oracle" in result.stdout


def test_bench_job_writes_the_benchmark_table(tmp_path):
    result = run_harness("job=bench", "transport=local", "bench.round_trips=3",
                         "bench.warmup=1", "bench.image_size=32", f"hydra.run.dir={tmp_path}/run",
                         cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(open(tmp_path / "run" / "bench.csv")))
    assert {r["path"] for r in rows} == {"tcp floor", "codec floor", "websocket+msgpack",
                                         "local request", "local stream"}


def test_invalid_value_exits_2_naming_the_field(tmp_path):
    result = run_harness("policy.chunk_size=0", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert result.returncode == 2
    assert "policy.chunk_size=0: must be >= 1" in result.stdout + result.stderr


@pytest.mark.parametrize(("overrides", "message"), [
    (["env=mujoco_pick_place", "env.tasks=3"],
     "env.tasks='3': mujoco_pick_place has only task 0, not [3]"),
    (["env=libero_object", "env.tasks=99"], "env.tasks='99': libero_object has tasks 0..9"),
    (["transport=zmq", "transport.listen=tcp://127.0.0.1:99999"],
     "transport.listen='tcp://127.0.0.1:99999': the port must be in 1..65535"),
    (["transport=grpc", "transport.connect=10.0.0.5:0"],
     "transport.connect='10.0.0.5:0': the port must be in 1..65535"),
])
def test_config_holes_fail_in_one_line_with_exit_2_before_anything_starts(tmp_path, overrides,
                                                                          message):
    result = run_harness(*overrides, f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-2000:]
    assert message in output and "Traceback" not in output
    assert not (tmp_path / "run" / "episodes").exists()  # nothing ran


@pytest.mark.parametrize(("override", "message"), [
    ("+client.fallbak=hold", "client.fallbak: no such setting; did you mean client.fallback?"),
    ("transport=zmq_schema", "transport=zmq_schema: a schema, not a choice; choose one of "
                             "grpc, local, zenoh, zmq"),
])
def test_a_mistyped_setting_exits_2_in_one_line_before_anything_runs(tmp_path, override,
                                                                     message):
    """Hydra's own `+` adds a key no schema has, and a schema registered beside the YAMLs
    composes as if it were a choice: both ran with the defaults before."""
    result = run_harness(override, f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2 and message in output, output[-2000:]
    assert "Traceback" not in output
    assert not (tmp_path / "run" / "episodes").exists()


@pytest.mark.parametrize(("package", "extra", "job"), [
    ("mujoco", "sim", "job=evaluate"),
    ("prometheus_client", "server", "server=inprocess"),
])
def test_a_missing_extra_exits_2_in_one_line_naming_the_install(tmp_path, package, extra, job):
    """The package is made missing the way Python reports it (`sys.modules[name] = None`: a
    test double of it not being installed; every extra is installed here)."""
    script = (f"import sys, runpy; sys.modules[{package!r}] = None; sys.argv = ['harness', "
              f"{job!r}, 'env.episodes_per_task=1', 'hydra.run.dir={tmp_path}/run']; "
              "runpy.run_module('harness', run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-2000:]
    assert (f"missing package {package!r}: install the '{extra}' extra, "
            f"pip install -e '.[{extra}]'") in output
    assert "Traceback" not in output


def test_the_server_entry_point_has_its_own_help(tmp_path):
    result = subprocess.run([sys.executable, "-m", "harness.server", "--help"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout.startswith("harness.server: one policy server, alone")
    assert "  transport: grpc, local, zenoh, zmq\n" in result.stdout  # no schemas among them
    assert "closed-loop benchmark harness" not in result.stdout  # not the harness's help
