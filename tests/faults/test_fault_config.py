"""Fault schedules that cannot act on the configured system stop `python -m harness` at
startup with exit 2, naming the fault and what would make it work; and a bad fault value
names its field."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from harness.faults.kernel import detect as kernel_support
from tests.faults.conftest import events_of, run_faulted
from tests.test_main import run_harness
from transports.loopback import free_port

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("overrides", "message"), [
    (["transport=local", "faults=wan_50ms"],
     "faults=wan_50ms: network faults act on the bytes of a networked transport"),
    (["transport=zmq", "server=external", "faults=gc_pause"],
     "faults=gc_pause: model faults act inside the predict of a server the harness starts"),
    (["transport=zmq", "faults=lte", "faults.timed.1.loss_bad=1.5"],
     "faults.timed[].loss_bad=1.5: must be in [0, 1]"),
    (["transport=zmq", "client.max_offline_s=12"],
     "client.max_offline_s=12 must be below server.session_idle_timeout_s=10"),
    (["transport=zmq", "policy=remote", "policy.protocol=openpi",
      "policy.url=ws://127.0.0.1:9", "faults=wifi_lossy", "faults.link=model"],
     "faults.link=model with faults=wifi_lossy: message-level kinds (loss) act in the "
     "robot's client wrapper, on the robot's link only"),
    (["transport=zmq", "policy=remote", "policy.protocol=openpi",
      "policy.url=ws://127.0.0.1:9", "faults=corrupt", "faults.link=both"],
     "faults.link=both with faults=corrupt: message-level kinds (corrupt)"),
])
def test_a_fault_that_cannot_act_fails_at_startup_naming_it(tmp_path, overrides, message):
    result = run_harness(*overrides, f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-2000:]
    assert message in output and "Traceback" not in output
    assert not (tmp_path / "run" / "episodes").exists()


@pytest.mark.parametrize(("override", "message"), [
    ("faults.timed.0.jitter_dist=gauss", "Invalid value 'gauss', expected one of [normal, pareto]"),
    ("faults.apply=simulated", "Invalid value 'simulated', expected one of [emulated, modelled]"),
])
def test_a_fault_value_outside_its_choices_is_refused_by_hydra_naming_them(tmp_path, override,
                                                                          message):
    result = run_harness("transport=zmq", "faults=wan_50ms", override,
                         f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr  # before Hydra runs (preflight)
    assert override in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "episodes").exists()


def test_the_same_network_schedule_applied_modelled_runs_over_the_local_transport(tmp_path):
    result = run_harness("transport=local", "faults=partition_3s", "faults.apply=modelled",
                         "latency.kind=fixed", "latency.value_s=0.1", "env.episodes_per_task=1",
                         f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-2000:]
    assert "faults=partition_3s (modelled): 1 windows through modelled" in output


@pytest.mark.network
def test_kernel_network_faults_on_a_machine_without_ip_fail_at_startup_naming_why(tmp_path):
    """`ip` and `tc` unreachable (PATH holds neither): detection says so, the run exits 2
    before a server starts, in one line."""
    env = {**os.environ, "PATH": str(tmp_path)}  # python runs by absolute path
    result = subprocess.run(
        [sys.executable, "-m", "harness", "transport=zmq",
         f"transport.listen=tcp://127.0.0.1:{free_port()}", "faults=partition_3s",
         "faults.network=kernel", f"hydra.run.dir={tmp_path}/run"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-2000:]
    assert "faults.network=kernel: netns: ip not found on PATH" in output
    assert "Traceback" not in output and not (tmp_path / "run" / "server-task0").exists()


@pytest.mark.network
def test_without_netem_the_kernel_path_still_delays_in_the_proxy(tmp_path):
    """faults.network=kernel with a delay: netem where the kernel has it, else (this
    machine) the user-space proxy, and the event says which ran."""
    if not kernel_support().netns:
        pytest.skip(f"no network namespaces here: {kernel_support().reasons}")
    run, summary = run_faulted(tmp_path, "wan_50ms", episodes=1,
                               extra=("faults.network=kernel",))
    starts = [e["mechanism"] for e in events_of(run) if e.get("phase") == "start"]
    expected = "kernel: netem 25 ms" if kernel_support().netem else "proxy delay 25 ms both"
    assert starts and starts[0].startswith(expected), starts
    assert summary["measured_latency_p50_s"] >= 0.050


@pytest.mark.network
@pytest.mark.parametrize(("heartbeat_timeout_s", "warned"), [(0.5, True), (2.0, False)])
def test_a_delay_past_the_heartbeat_timeout_is_warned_about_before_the_run(tmp_path,
                                                                          heartbeat_timeout_s,
                                                                          warned):
    result = run_harness("transport=zmq", f"transport.listen=tcp://127.0.0.1:{free_port()}",
                         "faults=fixed_delay", "faults.timed.0.delay_s=0.3",
                         f"transport.heartbeat_timeout_s={heartbeat_timeout_s}",
                         "env.episodes_per_task=1", "env.max_steps=30",
                         f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    output = result.stdout + result.stderr
    if not warned:  # then chunks arrive, 0.6 s late: the run measured something
        assert result.returncode == 0, output[-2000:]
    assert ("adds up to 600 ms to a round trip, more than transport.heartbeat_timeout_s"
            in output) is warned
