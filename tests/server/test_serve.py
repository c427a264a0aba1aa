"""`serve_forever` runs the policy server with the config's `server.*` settings, and the
health endpoint binds where it is told (127.0.0.1 unless the config opens it up)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest
from hydra import compose, initialize_config_dir

from harness import protocol
from harness.config import config_dir, register_configs, validate
from harness.server.metrics import HealthEndpoint, ServerMetrics
from harness.server.serve import serve_forever
from tests.conftest import wait_until
from tests.server.wire import RawClient, contract, start_server

pytestmark = pytest.mark.network
register_configs()


def test_health_endpoint_reports_the_host_it_bound_and_answers_on_loopback():
    endpoint = HealthEndpoint(ServerMetrics(), lambda: True, host="0.0.0.0")
    endpoint.start()
    try:
        assert endpoint.host == "0.0.0.0"
        assert urllib.request.urlopen(
            f"http://127.0.0.1:{endpoint.port}/healthz", timeout=5.0).read() == b"ok\n"
    finally:
        endpoint.close()


def test_health_endpoint_binds_to_127_0_0_1_by_default_and_closes_unstarted():
    endpoint = HealthEndpoint(ServerMetrics(), lambda: True)
    assert endpoint.host == "127.0.0.1"
    # close() must not wait for a serving loop that never ran (it would wait forever).
    closer = threading.Thread(target=endpoint.close, name="test-close", daemon=True)
    closer.start()
    closer.join(5.0)
    assert not closer.is_alive()


@pytest.fixture
def served_from_config():
    """serve_forever on a thread, over a local transport of a fresh name, with the health
    endpoint on 127.0.0.2 (another loopback address) and short session settings."""
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        config = validate(compose(config_name="config", overrides=[
            "transport=local", f"transport.name=serve-{uuid.uuid4().hex[:8]}",
            "env=mujoco_pick_place", "server=inprocess", "server.health_host=127.0.0.2",
            "server.session_idle_timeout_s=0.3", "server.max_client_id_chars=16"]))
    stop, ports = threading.Event(), []
    thread = threading.Thread(target=serve_forever, args=(config,),
                              kwargs={"ready": ports.append, "stop": stop}, name="test-serve")
    thread.start()
    clients: list[RawClient] = []
    try:
        wait_until(lambda: ports or not thread.is_alive(), 30.0, "the server to serve")
        assert ports, "serve_forever exited before it was ready"
        yield config, ports[0], clients
    finally:
        for client in clients:
            client.close()
        stop.set()
        thread.join(30.0)
    assert not thread.is_alive()


def test_serve_forever_applies_the_server_settings(served_from_config, env):
    config, port, clients = served_from_config
    assert urllib.request.urlopen(f"http://127.0.0.2:{port}/healthz",
                                  timeout=5.0).read() == b"ok\n"
    with pytest.raises(urllib.error.URLError, match="refused"):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5.0)

    contract = env.spec.contract
    clients.append(RawClient(dataclasses.replace(config.transport, client_id="x" * 17)))
    reply = clients[-1].open(contract)
    assert reply.msg_type is protocol.MessageType.SESSION_REJECT
    assert reply.body.reason.startswith(protocol.REJECT_CLIENT_ID)
    assert "max_client_id_chars=16" in reply.body.reason

    clients.append(RawClient(dataclasses.replace(config.transport, client_id="x" * 16)))
    assert clients[-1].open(contract).msg_type is protocol.MessageType.SESSION_OK

    def expired() -> bool:
        metrics = urllib.request.urlopen(f"http://127.0.0.2:{port}/metrics", timeout=5.0)
        return "policy_sessions_expired_total 1.0" in metrics.read().decode()

    wait_until(expired, 5.0, "the silent session to expire after 0.3 s")



def test_a_predict_hook_runs_after_each_prediction_and_counts_as_inference_time(env):
    """The seam model faults act through: the hook gets the prediction's monotonic start
    and what it waits is inference time the client sees (`infer_ns`)."""
    hold_s, starts = 0.05, []

    def hold(started_s: float) -> None:
        starts.append(started_s)
        time.sleep(hold_s)

    server, config = start_server(env, predict_hook=hold)
    client = RawClient(config)
    try:
        assert client.open(contract(env)).msg_type is protocol.MessageType.SESSION_OK
        before = time.monotonic()
        client.observe(env.reset(seed=0), seq=1, episode=0)
        reply = client.next_reply(5.0)
        assert reply.msg_type is protocol.MessageType.ACTION_CHUNK and reply.body.obs_seq == 1
        assert len(starts) == 1 and before <= starts[0] <= time.monotonic()
        assert reply.body.infer_ns >= hold_s * 1e9
    finally:
        client.close()
        server.drain()


def test_the_server_package_imports_nothing_of_the_faults_or_the_config():
    """harness.server sits below harness.faults: the model faults reach it only through the
    predict hook its entry points pass."""
    code = ("import sys\n"
            "import harness.server.policy_server, harness.server.serve, "
            "harness.server.launch, harness.server.supervisor\n"
            "print(sorted(m for m in sys.modules if m.startswith(('harness.faults', "
            "'harness.config', 'harness.jobs'))))")
    assert _python(code) == "[]"


def test_the_server_sets_torch_threads_only_for_a_policy_that_imported_torch():
    """`server.torch_threads` is applied once the policy is built; a policy without torch
    (the oracle) must not pay a second of start-up importing it for that."""
    script = ("import sys\n"
              "from harness.server.serve import limit_torch_threads\n"
              "limit_torch_threads(1)\n"
              "assert 'torch' not in sys.modules, 'imported torch for nothing'\n"
              "import torch\n"
              "torch.set_num_threads(2)\n"
              "limit_torch_threads(1)\n"
              "assert torch.get_num_threads() == 1, torch.get_num_threads()\n"
              "limit_torch_threads(0)\n"
              "assert torch.get_num_threads() == 1, 'zero leaves torch as it is'\n"
              "print('ok')\n")
    assert _python(script) == "ok"


def _python(code: str) -> str:
    """What `code` prints, run in a fresh interpreter (what it imports is its own)."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip()
