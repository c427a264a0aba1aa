"""The transport registry: one list of backends, unknown kinds refused with the choices, and
the proof that a backend defined in one outside module needs no edit of this repository:
`zmq_ipc` (ZeroMQ over ipc:// sockets), written to a temporary module at test time, passes
the real conformance suite by its import path."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap

import pytest

from tests.transports.conformance import CHECKS, NETWORKED_CHECKS, checks_for
from transports import (
    LocalTransportConfig,
    TransportConfigError,
    TransportEntry,
    UnknownTransport,
    ZmqTransportConfig,
    make_server,
    register_transport,
    transport_entry,
    transport_names,
)
from transports.loopback import loopback_config, loopback_fields, tcp_address, tcp_host_port
from transports.registry import unregister_transport

PLUGIN_MODULE = "rph_test_zmq_ipc"
PLUGIN_KIND = f"{PLUGIN_MODULE}:ENTRY"
PLUGIN_SOURCE = '''
"""A transport outside the harness: ZeroMQ over ipc:// sockets in one directory."""

import dataclasses

from transports.config import ZmqTransportConfig
from transports.registry import TransportEntry
from transports.zmq import ZmqClient, ZmqServer

SOCKET_DIR = {socket_dir!r}


@dataclasses.dataclass
class ZmqIpcConfig(ZmqTransportConfig):
    kind: str = f"{{__name__}}:ENTRY"
    listen: str = f"ipc://{{SOCKET_DIR}}/policy.sock"


class ZmqIpcServer(ZmqServer):
    """The zmq server, bound to an ipc path."""


class ZmqIpcClient(ZmqClient):
    """The zmq client, dialling an ipc path."""


ENTRY = TransportEntry(
    name="zmq_ipc", module=__name__, server_class="ZmqIpcServer", client_class="ZmqIpcClient",
    config_class=ZmqIpcConfig, package="pyzmq", networked=True, needs_heartbeat=True,
    tcp_prefix=None, fresh_fields=lambda token: {{"listen": f"ipc://{{SOCKET_DIR}}/{{token}}"}})
'''


def test_builtins_are_registered_in_a_stable_order_with_their_properties():
    assert transport_names() == ("local", "zenoh", "grpc", "zmq")
    assert {name: (transport_entry(name).networked, transport_entry(name).needs_heartbeat,
                   transport_entry(name).tcp_prefix, transport_entry(name).package)
            for name in transport_names()} == {
        "local": (False, False, None, "numpy"),
        "zenoh": (True, False, "tcp/", "eclipse-zenoh"),
        "grpc": (True, True, "", "grpcio"),
        "zmq": (True, True, "tcp://", "pyzmq"),
    }


def test_unknown_kind_raises_listing_the_choices_and_the_import_path_form():
    with pytest.raises(UnknownTransport) as failure:
        transport_entry("udp")
    assert str(failure.value) == (
        "transport.kind='udp': expected one of local, zenoh, grpc, zmq, or an import path "
        "'package.module:ENTRY' whose ENTRY is a TransportEntry")


@pytest.mark.parametrize(("kind", "message"), [
    # The module does not exist.
    ("no_such_module_rph:ENTRY",
     "transport.kind='no_such_module_rph:ENTRY': cannot import 'no_such_module_rph': "
     "No module named 'no_such_module_rph'"),
    # The attribute exists but is no TransportEntry.
    ("transports.config:MIB",
     "transport.kind='transports.config:MIB': transports.config.MIB is int, "
     "not a TransportEntry"),
    # The attribute does not exist.
    ("transports.config:NOPE",
     "transport.kind='transports.config:NOPE': transports.config has no 'NOPE'"),
])
def test_an_import_path_that_names_no_entry_is_refused(kind, message):
    with pytest.raises(UnknownTransport) as failure:
        transport_entry(kind)
    assert str(failure.value) == message


def test_a_config_of_an_unknown_kind_fails_naming_transport_kind_and_the_choices():
    with pytest.raises(TransportConfigError) as failure:
        ZmqTransportConfig(kind="udp")
    assert str(failure.value).startswith(
        "transport.kind='udp': expected one of local, zenoh, grpc, zmq, or an import path")


def test_a_config_of_another_backends_class_is_refused():
    with pytest.raises(TransportConfigError) as failure:
        ZmqTransportConfig(kind="grpc")
    assert str(failure.value) == ("transport.kind='grpc': needs a GrpcTransportConfig, not a "
                                  "ZmqTransportConfig; choose transport=grpc")


@pytest.mark.parametrize("kind", transport_names())
def test_config_class_rebuilds_a_config_from_its_json_fields(kind):
    config = loopback_config(kind)
    fields = json.loads(json.dumps(dataclasses.asdict(config)))
    assert transport_entry(kind).config_class(**fields) == config
    assert config.kind == kind


def test_a_taken_name_is_refused_and_the_same_entry_registers_twice_as_a_no_op():
    zmq = transport_entry("zmq")
    assert register_transport(zmq) is zmq
    with pytest.raises(ValueError, match="'zmq' is already registered to transports.zmq."
                                         "ZmqServer; pick another name"):
        register_transport(dataclasses.replace(zmq, server_class="OtherServer"))
    assert transport_names() == ("local", "zenoh", "grpc", "zmq")


def test_a_missing_backend_package_is_named_in_the_import_error():
    entry = register_transport(TransportEntry(
        "rph_missing", "no_such_backend_rph", "Server", "Client", LocalTransportConfig,
        "rph-backend", networked=False, needs_heartbeat=False, tcp_prefix=None))
    try:
        with pytest.raises(ImportError) as failure:
            make_server(LocalTransportConfig(kind=entry.name))
        assert str(failure.value) == ("transport 'rph_missing' needs the 'rph-backend' "
                                      "package: No module named 'no_such_backend_rph'")
    finally:
        unregister_transport(entry.name)
    assert transport_names() == ("local", "zenoh", "grpc", "zmq")


def test_tcp_addresses_follow_each_entry_and_a_non_tcp_kind_is_refused():
    assert [tcp_address(k, "10.0.0.2", 7) for k in ("zenoh", "grpc", "zmq")] == [
        "tcp/10.0.0.2:7", "10.0.0.2:7", "tcp://10.0.0.2:7"]
    assert tcp_host_port("zmq", "tcp://[::1]:5555") == ("::1", 5555)
    with pytest.raises(ValueError, match="transport 'local' has no TCP address"):
        tcp_address("local", "127.0.0.1", 1)
    with pytest.raises(ValueError, match="'name': not a TCP address of local"):
        tcp_host_port("local", "name")


def test_loopback_fields_are_fresh_per_call_and_local_gets_a_name_not_a_port():
    local = loopback_fields("local")
    assert list(local) == ["name"] and local["name"].startswith("loopback-")
    zenoh = loopback_fields("zenoh")
    assert sorted(zenoh) == ["listen", "namespace"]
    assert zenoh["listen"].startswith("tcp/127.0.0.1:")
    assert loopback_fields("zmq") != loopback_fields("zmq")


def test_importing_the_registry_imports_no_backend_library():
    code = ("import sys, transports.registry, transports.loopback; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('zmq', 'zenoh', "
            "'grpc')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def zmq_ipc_kind(tmp_path_factory):
    """The import path of `zmq_ipc`, written to a temporary module on sys.path; the module,
    its sys.path entry and its registration are gone afterwards."""
    pytest.importorskip("zmq")
    root = tmp_path_factory.mktemp("plugin")
    sockets = tmp_path_factory.mktemp("ipc")
    (root / f"{PLUGIN_MODULE}.py").write_text(
        textwrap.dedent(PLUGIN_SOURCE.format(socket_dir=str(sockets))))
    sys.path.insert(0, str(root))
    try:
        yield PLUGIN_KIND
    finally:
        unregister_transport("zmq_ipc")
        sys.path.remove(str(root))
        sys.modules.pop(PLUGIN_MODULE, None)


def test_an_outside_module_registers_by_import_path_under_both_names(zmq_ipc_kind):
    entry = transport_entry(zmq_ipc_kind)
    assert entry.name == "zmq_ipc" and transport_entry("zmq_ipc") is entry
    assert transport_names()[-1] == "zmq_ipc"
    config = loopback_config(zmq_ipc_kind)
    assert (config.kind, type(config).__name__) == (zmq_ipc_kind, "ZmqIpcConfig")
    assert config.listen.startswith("ipc://") and config.connect is None
    assert entry.config_class(**dataclasses.asdict(config)) == config
    assert checks_for(zmq_ipc_kind) == CHECKS + NETWORKED_CHECKS
    with pytest.raises(ValueError, match=f"transport '{zmq_ipc_kind}' has no TCP address"):
        tcp_address(zmq_ipc_kind, "127.0.0.1", 1)


@pytest.mark.network
@pytest.mark.parametrize("check", CHECKS + NETWORKED_CHECKS,
                         ids=lambda check: check.__name__.removeprefix("check_"))
def test_a_transport_defined_in_one_outside_module_meets_the_contract(zmq_ipc_kind, check):
    check(zmq_ipc_kind)


@pytest.mark.slow
@pytest.mark.network
def test_a_transport_of_ones_own_runs_a_closed_loop_job_from_one_yaml(tmp_path):
    """One module (the zmq_ipc backend) and one YAML (`conf/transport/zmq_ipc.yaml` in a
    search path of the test's own): `python -m harness transport=zmq_ipc` starts the policy
    server process on the ipc socket and runs its episodes over it."""
    import json
    import os
    import subprocess

    plugins, conf, sockets = tmp_path / "plugins", tmp_path / "conf" / "transport", tmp_path / "s"
    for folder in (plugins, conf, sockets):
        folder.mkdir(parents=True)
    (plugins / f"{PLUGIN_MODULE}.py").write_text(
        textwrap.dedent(PLUGIN_SOURCE.format(socket_dir=str(sockets))))
    (conf / "zmq_ipc.yaml").write_text(f"kind: {PLUGIN_KIND}\n"
                                       f"listen: ipc://{sockets}/from-yaml.sock\n")
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "harness", "transport=zmq_ipc", "env=mujoco_pick_place",
         "env.episodes_per_task=2", f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
         f"hydra.run.dir={run_dir}"], cwd=tmp_path, capture_output=True, text=True,
        timeout=240, env={**os.environ, "PYTHONPATH": str(plugins)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["episodes"] == 2 and summary["chunks_received"] > 0
    assert summary["success_rate"] == 1.0
    rows = [json.loads(p.read_text()) for p in (run_dir / "episodes").glob("*.json")]
    assert {r["transport"] for r in rows} == {PLUGIN_KIND}
