"""`python -m harness.certs` then `python -m harness security=mtls security.dir=DIR` runs the
default job over each transport, our server in its own process with the same keys; and bad
security settings stop the run at startup in one line, exit 2, with nothing written."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest

from transports.registry import transport_entry

pytestmark = [pytest.mark.slow, pytest.mark.network]


def harness(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    out = tmp_path_factory.mktemp("keys") / "keys"
    made = harness("harness.certs", "--out", str(out), "--robots", "2", cwd=out.parent)
    assert made.returncode == 0, made.stderr
    assert "security=mtls security.dir=" in made.stderr  # it says how to use them
    return out


@pytest.mark.parametrize("kind", ["zenoh", "grpc", "zmq"])
def test_the_default_job_runs_with_mtls_on_every_transport(keys, tmp_path, kind):
    run = tmp_path / "run"
    result = harness("harness", "security=mtls", f"security.dir={keys}", f"transport={kind}",
                     "env.episodes_per_task=2", "security.identity=robot-2",
                     f"hydra.run.dir={run}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader(open(run / "episodes.csv")))
    assert [r["success"] for r in rows] == ["True", "True"]
    assert transport_entry(kind).security in ("tls", "curve")


def test_the_default_job_runs_through_a_supervised_zenoh_router_with_mtls(keys, tmp_path):
    """transport.router=auto: the harness starts the router (mTLS, its ACL built from the
    robots' certificates); the robot and the server both dial it."""
    run = tmp_path / "run"
    result = harness("harness", "security=mtls", f"security.dir={keys}", "transport=zenoh",
                     "transport.router=auto", "env.episodes_per_task=2",
                     f"hydra.run.dir={run}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader(open(run / "episodes.csv")))
    assert [r["success"] for r in rows] == ["True", "True"]
    (router_log,) = (run / "router").glob("*.log")
    assert "zenoh router on tls/127.0.0.1:" in router_log.read_text()
    assert "(mTLS, ACL)" in router_log.read_text()


@pytest.mark.parametrize(("overrides", "message"), [
    (["security=mtls"], "security.mode=mtls needs security.dir"),
    (["security=mtls", "security.dir=/nonexistent/keys"],
     "security.dir=/nonexistent/keys: no such directory"),
    (["security=mtls", "security.dir={keys}", "transport=local"],
     "security=mtls with transport=local: this transport cannot authenticate its ends"),
    (["security=mtls", "security.dir={keys}", "transport=zmq", "transport.client_id=bob"],
     "transport.client_id='bob' with security=mtls"),
    (["security=mtls", "security.dir={keys}", "security.identity=robot-7"],
     "robots/robot-7.pem is missing"),
    (["security.mode=tls"], "security.mode='tls': expected one of none, mtls"),
    (["security=mtls", "security.dir={keys}", "server.health_host=0.0.0.0"],
     "server.health_host=0.0.0.0 with security=mtls: /metrics names every robot"),
    (["transport.router=auto", "server=external"],
     "transport.router=auto with server=external"),
    (["transport.router=auto", "faults=wifi_lossy"],
     "transport.router=auto with faults=wifi_lossy: network faults on a link through a router"),
    (["transport.router=router.lab:7447"],
     "transport.router='router.lab:7447': expected auto or a zenoh locator"),
    (["faults=router_crash", "transport=zmq"],
     "faults=router_crash: router_crash need the Zenoh router the harness starts"),
], ids=["no-dir", "missing-dir", "local", "client-id", "unknown-robot", "bad-mode",
        "metrics-exposed", "router-external", "router-faults", "router-locator",
        "router-fault-without-router"])
def test_bad_security_settings_stop_the_run_in_one_line(keys, tmp_path, overrides, message):
    run = tmp_path / "run"
    result = harness("harness", *(o.format(keys=keys) for o in overrides),
                     f"hydra.run.dir={run}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (run / "episodes.csv").exists()
