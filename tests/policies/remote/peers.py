"""The real peer servers the adapter tests drive: openpi's and vla-eval's own server code, each
from its own venv (`peers/setup.sh` builds them; their numpy pins differ from ours), started
as a subprocess on a loopback port the OS picks, ready once its health endpoint answers,
killed by pid. Without a peer's venv its tests skip and say how to build it."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from harness.bench.peers import OPENPI, VLA_EVAL, Peer, healthy
from transports.loopback import free_port

REPO = Path(__file__).resolve().parents[3]
OPENPI_VENV = OPENPI.venv
VLA_EVAL_VENV = VLA_EVAL.venv
START_TIMEOUT_S = 30.0


def peer_python(venv: Path) -> Path:
    """The venv's interpreter; skips the test when the venv is absent."""
    python = venv / "bin" / "python"
    if not python.exists():
        pytest.skip(f"{venv.relative_to(REPO)} is absent: build it with peers/setup.sh")
    return python


def run_in_peer(venv: Path, script: str, *args: str, stdin: bytes = b"",
                timeout_s: float = 30.0) -> bytes:
    """Run `script` (Python source kept in the test module) under the peer's interpreter;
    returns its stdout, fails the test with its stderr if it exits non-zero."""
    done = subprocess.run([str(peer_python(venv)), "-c", script, *args], input=stdin,
                          capture_output=True, timeout=timeout_s, check=False)
    if done.returncode != 0:
        pytest.fail(f"peer script failed ({done.returncode}):\n{done.stderr.decode()}",
                    pytrace=False)
    return done.stdout


def assert_same_value(got: object, want: object) -> None:
    """Equal values of equal types, dtypes and shapes, through maps and lists."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys()
        for key in want:
            assert_same_value(got[key], want[key])
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert_same_value(g, w)
    elif isinstance(want, np.ndarray | np.generic):
        assert type(got) is type(want) and got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
        assert np.shape(got) == np.shape(want)
    else:
        assert type(got) is type(want) and got == want


@dataclass
class PeerServer:
    """One peer server process; `start` and `stop` may alternate (same port each time)."""

    peer: Peer
    """Where its venv and script are, how it takes its port, where its health endpoint is
    (`harness.bench.peers`: the benchmark starts the same servers)."""
    args: list[str]
    log_path: Path
    port: int = field(default_factory=free_port)
    _proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> PeerServer:
        """Start the server and block until its health endpoint answers 200; fails the test
        with the server's log after `START_TIMEOUT_S`."""
        python = peer_python(self.peer.venv)
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [str(python), str(self.peer.script), *self.peer.address_args(self.port),
                 *self.args], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not healthy(self.port, self.peer.health_path):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"peer {self.peer.script.relative_to(REPO)} did not become ready "
                            f"on port {self.port}:\n{self.log_path.read_text()[-3000:]}",
                            pytrace=False)
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """SIGKILL the server (a crash, not a shutdown) and reap it; idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
        if proc is not None:
            proc.wait(timeout=10)


def openpi_peer(tmp_path: Path, *args: str) -> PeerServer:
    """`peers/openpi/serve.py` (openpi's `WebsocketPolicyServer`), not yet started."""
    return PeerServer(OPENPI, list(args), tmp_path / "openpi-peer.log")


def vla_eval_peer(tmp_path: Path, *args: str) -> PeerServer:
    """`peers/vla_eval/serve.py` (vla-eval's `run_server`), not yet started."""
    return PeerServer(VLA_EVAL, list(args), tmp_path / "vla-eval-peer.log")
