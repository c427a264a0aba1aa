"""The install extras are real cuts: each side imports only what its job needs.

Each check runs in a fresh interpreter in which the packages of the extras left out cannot be
imported (`sys.modules[name] = None` makes `import name` raise ImportError), so a module
that needs them fails here as it would in a venv without them. And each block is shown to
bite: the same interpreter cannot import a module that does need what is blocked.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from harness import protocol
from transports import make_client
from transports.loopback import loopback_config

pytestmark = pytest.mark.slow

SIMULATORS = ("mujoco", "robosuite", "libero")
SERVER_ONLY = ("prometheus_client",)
TORCH = ("torch", "safetensors")


def python_without(blocked: tuple[str, ...], code: str, *args: str,
                   **popen) -> subprocess.Popen:
    """`python -c code args` with the `blocked` packages made unimportable."""
    prelude = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in blocked)
    return subprocess.Popen([sys.executable, "-c", prelude + textwrap.dedent(code), *args],
                            text=True, **popen)


def run_without(blocked: tuple[str, ...], code: str) -> subprocess.CompletedProcess:
    process = python_without(blocked, code, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


CLIENT_MODULES = ("harness.__main__", "harness.jobs.loop", "harness.client.engine",
                  "harness.protocol", "harness.results.store", "transports.zenoh",
                  "transports.grpc", "transports.zmq", "policies", "envs")


def test_the_robot_side_core_needs_no_simulator_server_or_torch_package():
    result = run_without(SIMULATORS + SERVER_ONLY + TORCH,
                         "import importlib\n"
                         f"for name in {CLIENT_MODULES!r}:\n"
                         "    importlib.import_module(name)\n")
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize(("blocked", "module"), [
    (SIMULATORS, "envs.mujoco_tasks"),
    (SERVER_ONLY, "harness.server.serve"),
    (TORCH, "policies.torch_policy"),
])
def test_the_block_bites_on_a_module_that_needs_the_package(blocked, module):
    result = run_without(blocked, f"import {module}")
    assert result.returncode != 0 and "halted; None in sys.modules" in result.stderr


SERVER = """
    import runpy
    sys.argv = ["harness.server", *sys.argv[1:]]
    runpy.run_module("harness.server", run_name="__main__")
"""


def serve_one_chunk(blocked: tuple[str, ...], policy: str, run_dir) -> tuple[int, str]:
    """Start `python -m harness.server policy=<policy>` with `blocked` unimportable; if it
    comes up, open a session and get one chunk. Returns (chunk rows or -1, server output)."""
    config = loopback_config("zmq")
    server = python_without(blocked, SERVER, "transport=zmq", f"transport.listen={config.listen}",
                            f"policy={policy}", "env=mujoco_pick_place", f"hydra.run.dir={run_dir}",
                            "hydra.output_subdir=null", stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, cwd=run_dir)
    lines = []
    try:
        for line in server.stdout:
            lines.append(line)
            if line.startswith("READY"):
                break
        else:
            return -1, "".join(lines)
        contract = protocol.Contract(
            action_names=("dx", "dy", "dz", "gripper"),
            state={name: protocol.ArraySpec("float32", (n,)) for name, n in (
                ("hand_pos", 3), ("gripper_opening", 1), ("object_pos", 3), ("goal_pos", 3))},
            control_hz=20.0, chunk_size=8)
        client = make_client(config)
        try:
            client.wait_ready(10.0)
            opened = protocol.decode(client.request(protocol.encode(protocol.Message(
                protocol.SessionOpen(client.client_id, contract))), timeout_s=5.0))
            assert opened.msg_type is protocol.MessageType.SESSION_OK, opened.body
            state = {name: spec_zeros(spec) for name, spec in contract.state.items()}
            client.publish(protocol.encode(protocol.Message(
                protocol.Observation(state, {}, "pick"), seq=1, epoch=opened.epoch)))
            reply = protocol.decode(client.take_stream(timeout_s=10.0))
            return reply.body.actions.shape[0], "".join(lines)
        finally:
            client.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


def spec_zeros(spec: protocol.ArraySpec):
    import numpy as np

    return np.zeros(spec.shape, spec.dtype)


def test_a_server_hosting_the_torch_policy_loads_no_simulator(tmp_path):
    rows, output = serve_one_chunk(SIMULATORS, "torch", tmp_path)
    assert rows == 8, output[-2000:]


def test_the_oracle_reads_its_task_definition_and_so_needs_the_simulator(tmp_path):
    rows, output = serve_one_chunk(SIMULATORS, "oracle", tmp_path)
    assert rows == -1 and "halted; None in sys.modules" in output
