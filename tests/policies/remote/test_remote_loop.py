"""The `policy=remote` command docs/remote.md documents for each protocol, run as documented
against its server: the real openpi server and a real vla-eval `PredictModelServer` (with
server-side chunking, the default of vla-eval's model servers), each in its own venv, and
test doubles of OpenVLA's deploy.py, an AutoEval server and SGLang (no GPU, no 7B weights
here). The commands are read from docs/remote.md (`documented.py`) and every documented override
is passed as written; the test changes only where things are (policy.url, a free port, the
run directory) and how long they run (one episode of task 0: 30 ticks where the documented
fault is there from the first tick, 60 where it comes later, a documented fault window moved
inside it; a 0.5 s model request timeout). So a documented command that stops
working fails here: a run that exits non-zero, serves nothing, breaks an invariant or never
meets its documented fault.

Where the documented fault is a partition of the model link, the test also checks what one
must do: the black-holed requests fail as server errors the client counts, the fail-safe path
holds the robot, and control resumes after the heal. On a simulator slower than real time
(this machine under load) the world's partition is lifted after its wall time while the robot
is held in it until its control end (docs/concepts.md): its requests then go unanswered, are
counted lost, and it may re-open its session, whose stale observation is then refused."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from harness.config import config_dir, register_configs, validate
from policies.remote import protocol_names
from tests.policies.remote.documented import documented_commands, replaced, value
from tests.policies.remote.doubles import ServerThread
from tests.policies.remote.doubles.autoeval import AutoEvalDouble
from tests.policies.remote.doubles.openvla_deploy import DeployDouble
from tests.policies.remote.doubles.sglang_generate import SglangDouble
from tests.policies.remote.peers import REPO, openpi_peer, vla_eval_peer
from transports.loopback import loopback_fields

register_configs()

SHORT_RUN = {"env.tasks": 0, "env.episodes_per_task": 1, "env.max_steps": 30,
             "policy.request_timeout_s": 0.5}
"""One 1.5 s episode (30 ticks at 20 Hz): a fault that spans it is met from the first tick,
and a synchronous client over its 100 ms round trip still gets ten chunks. Each tick renders
the documented cameras (70 ms a 256 px image on this CPU): the episode is kept short."""
LATER_FAULTS = {"flapping": {"env.max_steps": 60}}
"""Documented faults that start after the first tick, given a 3 s episode: random partitions
at 20 a minute (the seeded schedule's first falls inside 3 s)."""
FAULT_WINDOWS = {"partition_3s": {"faults.timed.0.start_s": 1.0,
                                  "faults.timed.0.duration_s": 1.0, "env.max_steps": 60}}
"""Documented faults that do not span the whole episode, moved inside a 3 s one (the others
run as documented: from 0 s, for ever); a model request black-holed for 0.5 s fails, well
inside the 1 s partition. From 1 s: with the suite on both cores, the first vla-eval round
trip took longer than 0.5 s, and no chunk came before the window."""
VLA_EVAL_CHUNK = 10
"""The vla-eval peer's server-side chunk (`PredictModelServer(chunk_size=10)`, pi0's)."""


@dataclass
class Server:
    """A started peer or double: where it listens, how to stop it, what it received."""

    url: str
    stop: Callable[[], None]
    requests: list | None = None
    """What a double received (None for a peer: it runs in its own process)."""


def start_server(protocol: str, tmp_path: Path) -> Server:
    """The server `protocol`'s documented command drives, started on a free port."""
    if protocol in ("openpi", "vla_eval"):
        peer = (openpi_peer(tmp_path) if protocol == "openpi" else
                vla_eval_peer(tmp_path, "--args.chunk_size", str(VLA_EVAL_CHUNK))).start()
        return Server(peer.url, peer.stop)
    double = {"openvla": DeployDouble, "autoeval": AutoEvalDouble}.get(protocol)
    double = double() if double else SglangDouble(
        output_ids=[31999, 31744, 31872, 31872, 31800, 31900, 31744])
    thread = ServerThread(double.app()).start()
    return Server(thread.url, thread.stop, double.requests)


def composed(overrides: list[str]):
    """The run's config as the harness validates it at startup."""
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return validate(compose(config_name="config", overrides=overrides))


def test_the_docs_give_one_command_per_protocol_each_valid_as_written():
    commands = documented_commands()
    built_in = [name for name in protocol_names() if ":" not in name]  # not other tests' own
    assert [protocol for protocol, _ in commands] == built_in
    for protocol, overrides in commands:
        policy = composed(overrides).policy
        assert (policy.name, policy.protocol) == ("remote", protocol)


def test_commands_are_read_from_the_remote_section_as_a_shell_reads_them():
    """Continued lines joined, quotes and comments gone, other sections' commands and other
    programs left out."""
    text = ("## Remote model servers\n\n    python -m harness policy=remote "
            "policy.protocol=openpi \\\n        policy.url=ws://h:1 env.tasks=0  # note\n"
            "    bash peers/setup.sh\n\n## Development\n    python -m harness x=1\n")
    assert documented_commands(text) == [
        ("openpi", ["policy=remote", "policy.protocol=openpi", "policy.url=ws://h:1",
                    "env.tasks=0"])]


def run_overrides(overrides: list[str], url: str, run: Path) -> list[str]:
    """The documented overrides, pointed at `url` and shortened (module docstring)."""
    transport = composed(overrides).transport.kind
    return replaced(overrides, {
        "policy.url": url, **SHORT_RUN, **LATER_FAULTS.get(value(overrides, "faults"), {}),
        **FAULT_WINDOWS.get(value(overrides, "faults"), {}),
        **{f"transport.{k}": v for k, v in loopback_fields(transport).items()},
        "hydra.run.dir": run})


def check_run(protocol: str, overrides: list[str], process: subprocess.Popen, run: Path,
              log: Path) -> dict:
    """The episode's row, after checking that the run did what the documented command
    promises (module docstring)."""
    assert process.wait(timeout=300) == 0, f"{protocol}:\n{log.read_text()[-3000:]}"
    (row,) = [json.loads(p.read_text()) for p in (run / "episodes").glob("*.json")]
    # At least two chunks: served more than once. How many more depends on the measured
    # round trip (the virtual clock makes a chunk usable ceil(RTT / dt) ticks after its
    # request): about ten at 100 ms, two in a 30-tick episode at the 550-800 ms the five
    # runs side by side took in a fresh-clone CI on 2 cores.
    assert row["breaches"] == 0 and row["chunks_received"] >= 2, (protocol, row)
    errors = [e["error"] for e in row["events"] if "error" in e]
    assert all("Remote" in e or (e.startswith("session:") and row["sessions_reopened"])
               for e in errors), (protocol, errors)
    faults = [e for e in row["events"] if "fault" in e]
    assert faults and {f["link"] for f in faults} == {value(overrides, "faults.link")}, (
        protocol, faults)
    ticks = _trace(run)
    if value(overrides, "faults") in FAULT_WINDOWS:  # a partition of the model link
        assert row["server_errors"] == len(errors) and (errors or row["requests_lost"]), (
            protocol, row)
        assert [f["mechanism"] for f in faults] == ["proxy black hole",
                                                   "proxy heals (held bytes released)"]
        assert any(t["source"] == "fresh" for t in ticks[:faults[0]["tick"]]), protocol
        assert any(t["source"] == "fresh" for t in ticks[faults[1]["tick"]:]), protocol
    else:  # one action per request at most every other tick (client=synchronous)
        assert sum(t["source"] == "fresh" for t in ticks) >= 2, protocol
    return row


@pytest.mark.slow(90)  # seconds on this machine: started first under xdist
@pytest.mark.network
def test_each_documented_command_drives_its_server_through_a_libero_episode(tmp_path):
    """All five side by side (each mostly waits on its server and the clock)."""
    servers, runs = {}, {}
    try:
        for protocol, overrides in documented_commands():
            servers[protocol] = server = start_server(protocol, tmp_path)
            run = tmp_path / protocol
            with (tmp_path / f"{protocol}.log").open("w") as log:
                runs[protocol] = overrides, run, subprocess.Popen(  # where a reader runs it
                    [sys.executable, "-m", "harness",
                     *run_overrides(overrides, server.url, run)],
                    cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        for protocol, (overrides, run, process) in runs.items():
            check_run(protocol, overrides, process, run, tmp_path / f"{protocol}.log")
            assert servers[protocol].requests != [], protocol
    finally:
        for _, _, process in runs.values():
            process.kill()
        for server in servers.values():
            server.stop()
    received = servers["openvla"].requests[-1].payload  # OpenVLA's convention, applied
    assert received["image"].shape == (224, 224, 3) and received["image"].dtype == np.uint8
    assert received["instruction"] == "pick up the alphabet soup and place it in the basket"


def _trace(run: Path) -> list[dict]:
    import pandas as pd

    (path,) = (run / "traces").glob("*.parquet")
    return pd.read_parquet(path).to_dict("records")
