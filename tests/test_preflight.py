"""The command line judged before Hydra runs it (`harness.preflight`): one line and exit
status 2 for a bad value, nothing written; `--check` lists a sweep's jobs and runs nothing;
and `HARNESS_PORT_OFFSET` moves the default ports only."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness.__main__ import run_check
from harness.loop.ports import PortRangeError, default_port
from harness.preflight import CommandLineError, check_job, job_overrides


def harness(cwd, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("override", "said"), [
    ("record=bogus", "record=bogus: Invalid value 'bogus', expected one of [none, failures, all]"),
    ("faults=nosuch", "faults=nosuch: no such choice; choose one of bandwidth_2mbit"),
    ("+client.fallbak=hold", "client.fallbak: no such setting; did you mean client.fallback?"),
    ("resume=/nonexistent/run", "resume=/nonexistent/run: no such directory"),
    ("transport=zmq,grpc", "a list of values sweeps, which needs -m"),
])
def test_a_bad_command_line_is_one_line_exit_2_and_writes_nothing(tmp_path, override, said):
    """Hydra itself printed these as several lines with exit status 1, after making a run
    directory (a refused resume= left a fresh one under outputs/)."""
    result = harness(tmp_path, override)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and said in lines[0], result.stderr
    assert list(tmp_path.iterdir()) == []  # no outputs/, no run directory


def test_a_schema_is_not_offered_as_a_choice():
    with pytest.raises(CommandLineError, match="faults=nosuch: no such choice") as caught:
        check_job(["faults=nosuch"])
    assert "none" in str(caught.value) and "_schema" not in str(caught.value)
    with pytest.raises(CommandLineError, match="a schema, not a choice; choose one of grpc"):
        check_job(["transport=zmq_schema"])


def test_check_lists_every_job_of_a_sweep_and_runs_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status = run_check(["-m", "transport=zmq,grpc", "faults=none,bogus",
                        "env.episodes_per_task=3"])
    out = capsys.readouterr().out
    assert status == 2
    assert out.count("ok      ") == 2 and out.count("invalid ") == 2, out
    assert "transport=grpc faults=none env.episodes_per_task=3: loop: mujoco_pick_place " \
           "(1 task, 3 episodes)" in out
    assert "4 jobs, 2 invalid; nothing was run" in out
    assert list(tmp_path.iterdir()) == []


def test_an_experiments_sweep_is_expanded_and_the_command_line_wins():
    points = job_overrides(["+experiment=fault_matrix", "transport=zmq"], multirun=True)
    assert len(points) == 10  # its ten fault presets, over the one transport given
    assert all("transport=zmq" in p for p in points)
    assert sorted(p[-1] for p in points)[:2] == ["faults=flapping", "faults=lan"]
    assert len(job_overrides(["+experiment=fault_matrix"], multirun=True)) == 30


def test_check_prints_brackets_as_typed_not_as_markup(capsys):
    assert run_check(["record=bogus", "env.cameras=[a,b]"]) == 2
    out = capsys.readouterr().out
    assert "env.cameras=[a,b]" in out and "expected one of [none, failures, all]" in out


def test_check_of_a_valid_single_run_exits_0(capsys):
    assert run_check(["transport=zmq", "client=synchronous"]) == 0
    out = capsys.readouterr().out
    assert "transport=zmq, server=process, client=synchronous, faults=none" in out


def test_a_timeout_order_crossed_is_caught_by_check():
    with pytest.raises(CommandLineError, match="client.max_offline_s"):
        check_job(["client.max_offline_s=0.5"])


@pytest.mark.parametrize(("overrides", "said"), [
    (["policy=flow", "env=libero_goal"],
     "flow_libero_goal.safetensors does not exist; `python -m policies.flow.train` trains "
     "mujoco_reach, mujoco_pick_place, libero_object, libero_spatial only"),
    (["policy=flow", "env=libero_spatial"],
     "make it with `python -m policies.flow.train --env libero_spatial`"),
    (["policy=torch", "env=mujoco_reach"],
     "make it with `python -m policies.train --env mujoco_reach`"),
    (["job=evaluate", "policy=flow", "policy.weights=/nowhere/w.safetensors"],
     "policy.weights: /nowhere/w.safetensors does not exist; make it with "
     "`python -m policies.flow.train --env mujoco_pick_place`"),
])
def test_missing_weights_are_caught_by_check_naming_how_to_make_them(overrides, said):
    """They showed only as the policy server exiting during start-up, and --check said ok."""
    with pytest.raises(CommandLineError, match=None) as caught:
        check_job(overrides)
    assert said in str(caught.value)


def test_an_external_servers_weights_are_not_ours_to_check():
    checked = check_job(["policy=flow", "env=libero_object", "server=external"])
    assert checked.config.policy.name == "flow"


def test_the_port_offset_moves_default_ports_and_never_a_given_one(monkeypatch):
    monkeypatch.setenv("HARNESS_PORT_OFFSET", "300")
    assert default_port(5555) == 5855
    assert check_job(["transport=zmq"]).config.transport.listen == "tcp://127.0.0.1:5855"
    given = check_job(["transport=zmq", "transport.listen=tcp://127.0.0.1:6000"])
    assert given.config.transport.listen == "tcp://127.0.0.1:6000"
    monkeypatch.setenv("HARNESS_PORT_OFFSET", "70000")
    with pytest.raises(PortRangeError, match="HARNESS_PORT_OFFSET=70000"):
        default_port(5555)
    monkeypatch.setenv("HARNESS_PORT_OFFSET", "-1")
    with pytest.raises(CommandLineError, match="HARNESS_PORT_OFFSET='-1'"):
        check_job(["transport=grpc"])
