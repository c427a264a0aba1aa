"""`security=mtls` on every transport, tried as an attacker would on loopback: a plaintext
client, a client with another CA's certificate (zmq: keys not on the allow-list), an expired
certificate, and a second authenticated robot claiming the first one's identity. Each gets
nothing; the server keeps serving the honest robot, which it knows by the name its
certificate (or CURVE key) proves. Keys come from `python -m harness.certs`'s own code."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path

import grpc
import pytest
import zenoh

from harness.certs import issue, load_ca, make_all, write_issued
from harness.server.metrics import ServerMetrics
from tests.conftest import wait_until
from transports import TransportError, make_client, make_server
from transports.config import SecurityConfig, SecurityError
from transports.loopback import free_port, loopback_config
from transports.security import check_key_material

pytestmark = pytest.mark.network

KINDS = ("zmq", "grpc", "zenoh")


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    """Our CA's directory (robot-1, robot-2, and an expired robot-9), another CA's."""
    base = tmp_path_factory.mktemp("keys")
    make_all(base / "ours", 2)
    make_all(base / "theirs", 2)
    expired = issue(load_ca(base / "ours"), "robot-9", days=-1)
    write_issued(expired, base / "expired-robot", "robot-9")
    return {"ours": base / "ours", "theirs": base / "theirs",
            "expired": base / "expired-robot"}


def secured(config, directory: Path, identity: str = "robot-1"):
    return dataclasses.replace(config, security=SecurityConfig(
        mode="mtls", dir=str(directory), identity=identity))


class Served:
    """A secured server answering `<client id>:<payload>`, and its honest robot-1."""

    def __init__(self, kind: str, directory: Path, tmp: Path | None = None) -> None:
        self.tmp = tmp
        self.config = secured(loopback_config(kind, heartbeat_interval_s=0.05), directory)
        self.server = make_server(self.config)
        self.server.start(lambda client_id, payload: client_id.encode() + b":" + payload)
        self.robot = make_client(self.config)
        self.robot.wait_ready(10.0)

    def honest_round_trip(self) -> None:
        """robot-1 still gets its answer, its observation and its chunk, by its name."""
        assert self.robot.request(b"hi", timeout_s=5.0) == b"robot-1:hi"
        self.robot.publish(b"observation")
        item = self.server.take_stream(5.0)
        assert (item.client_id, item.payload) == ("robot-1", b"observation")
        self.server.send_stream("robot-1", b"chunk")
        assert self.robot.take_stream(5.0) == b"chunk"

    def close(self) -> None:
        self.robot.close()
        self.server.close()


@pytest.fixture(params=KINDS)
def served(request, keys, tmp_path):
    served = Served(request.param, keys["ours"], tmp_path)
    yield served
    served.close()


def refused(client, for_s: float = 1.5) -> bool:
    """No request of `client` is answered, tried for `for_s` (its link and handshake take
    a moment: a zmq request before them fails at once, having reached no one); `client`
    is closed afterwards."""
    deadline = time.monotonic() + for_s
    try:
        while time.monotonic() < deadline:
            try:
                client.request(b"attack", timeout_s=0.5)
                return False
            except TransportError:
                time.sleep(0.05)
        return True
    finally:
        client.close()


def test_a_robot_is_known_by_the_name_its_certificate_proves(served):
    served.honest_round_trip()


def test_a_plaintext_client_gets_nothing_and_the_robot_is_still_served(served):
    plain = dataclasses.replace(served.config, security=SecurityConfig())
    assert refused(make_client(plain))
    served.honest_round_trip()


def test_a_client_with_another_cas_keys_gets_nothing(served, keys):
    """It knows the server (our CA, our server's public CURVE key: public facts) but holds
    a robot certificate of another CA (zmq: a key pair not on the allow-list). Its client
    makes none of our start-up checks."""
    kind, ours, theirs = served.config.kind, keys["ours"], keys["theirs"]
    if kind == "zmq":  # CURVE: refused by the ZAP handler, counted, told to the server
        told = listen_to_refusals(served.server)
        stranger = copy_keys(theirs, served.tmp / "stranger")
        shutil.copy(ours / "curve" / "server.key", stranger / "curve" / "server.key")
        assert refused(make_client(secured(served.config, stranger)))
        assert served.server.handshakes_refused >= 1  # (zmq retries: likely more than one)
        wait_until(lambda: len(told) == served.server.handshakes_refused, 5.0,
                   "every refused handshake told")  # a retry may still be in progress
        assert {outcome for outcome, _, _ in told} == {"handshake_refused"}
    elif kind == "grpc":
        assert grpc_refused(served.config.listen, ours / "ca.pem", theirs / "robots",
                            "robot-1")
    else:
        assert zenoh_refused(served.config, ours / "ca.pem", theirs / "robots", "robot-1")
    served.honest_round_trip()


def listen_to_refusals(server) -> list[tuple[str, str, dict]]:
    """What the server transport tells its listener (the policy server's audit log) of the
    refusals it makes on its own, as (outcome, client id, detail)."""
    told: list[tuple[str, str, dict]] = []
    server.stats.on_refused = lambda outcome, client_id, **detail: told.append(
        (outcome, client_id, detail))
    return told


def grpc_refused(target: str, ca: Path, robots: Path, name: str) -> bool:
    """A raw gRPC client with `robots/name` keys gets no answer (the TLS handshake fails)."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(), private_key=(robots / f"{name}.key").read_bytes(),
        certificate_chain=(robots / f"{name}.pem").read_bytes())
    with grpc.secure_channel(target, credentials) as channel:
        call = channel.unary_unary("/rph.Transport/Request")
        try:
            call(b"x", timeout=2.0, metadata=(("rph-client-id", name),))
            return False
        except grpc.RpcError as failure:
            return failure.code() in (grpc.StatusCode.UNAVAILABLE,
                                      grpc.StatusCode.DEADLINE_EXCEEDED)


def zenoh_refused(config, ca: Path, robots: Path, name: str) -> bool:
    """A raw Zenoh session with `robots/name` keys gets no reply to `name`'s request key."""
    from transports.zenoh import session_config
    from transports.zenoh_security import tls_locator

    session = zenoh.open(session_config(config, listen=[], connect=[tls_locator(config.listen)],
                                        secured={
        "transport/link/tls/root_ca_certificate": str(ca),
        "transport/link/tls/connect_certificate": str(robots / f"{name}.pem"),
        "transport/link/tls/connect_private_key": str(robots / f"{name}.key"),
        "transport/link/tls/enable_mtls": True}))
    try:
        replies = list(session.get(f"{config.namespace}/req/{name}", payload=b"x",
                                   timeout=1.0))
        return not any(reply.ok is not None for reply in replies)
    finally:
        session.close()


def claim_identity(client, kind: str, name: str) -> None:
    """Make an authenticated `client` claim to be robot `name` on its next requests (what
    an attacker's own client code would do; ours never does)."""
    if kind == "grpc":
        client._metadata = (("rph-client-id", name),)
    elif kind == "zmq":
        from transports.zmq import REQUEST_SOCKET
        client.client_id = name
        client._request_socket = client._connect(REQUEST_SOCKET)
    else:
        client._request_key = client._request_key.rsplit("/", 1)[0] + "/" + name


@pytest.mark.parametrize("kind", ["zmq", "grpc"])
def test_the_policy_server_audits_the_refusals_its_transport_makes(kind, keys, caplog):
    """The refused claim never reaches the policy server as a message; its transport tells
    it, and the audit log gets one line per refusal, with the identity that made it."""
    from harness.server.policy_server import PolicyServer
    from tests.server.wire import oracle

    caplog.set_level(logging.INFO, logger="harness.audit")
    config = secured(loopback_config(kind, heartbeat_interval_s=0.05), keys["ours"])
    server = PolicyServer(make_server(config), oracle, max_sessions=1)
    server.start()
    intruder = make_client(secured(config, keys["ours"], "robot-2"))
    try:
        intruder.wait_ready(10.0)
        claim_identity(intruder, kind, "robot-1")
        assert refused(intruder)
    finally:
        server.close()
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "harness.audit"]
    refusals = [(line["client"], line["outcome"], line["identity"]) for line in lines
                if line["outcome"] == "identity_refused"]
    assert refusals and len(refusals) == server.status()["identity_refused"]
    assert set(refusals) == {("robot-1", "identity_refused", "robot-2")}


@pytest.mark.parametrize("kind", KINDS)
def test_a_replayed_session_open_is_refused_and_the_named_session_goes_on(kind, keys, caplog):
    """robot-2 sends robot-1's session open byte for byte (on a network it could not read
    them: they travel encrypted). The server knows robot-2 by the identity its connection
    proved, refuses an open naming robot-1 for good, counts and audits it; robot-1's session
    goes on untouched."""
    from harness import protocol
    from harness.server.policy_server import PolicyServer
    from tests.server.wire import oracle

    caplog.set_level(logging.INFO, logger="harness.audit")
    config = secured(loopback_config(kind, heartbeat_interval_s=0.05), keys["ours"])
    server = PolicyServer(make_server(config), oracle, max_sessions=2, seal_streams=True)
    server.start()
    robots = [make_client(secured(config, keys["ours"], name))
              for name in ("robot-1", "robot-2")]
    try:
        for robot in robots:
            robot.wait_ready(10.0)
        opening = protocol.encode(protocol.Message(protocol.SessionOpen("robot-1",
                                                                        server.spec)))
        first, replayed = (protocol.decode(robot.request(opening, timeout_s=5.0))
                           for robot in robots)
        assert first.msg_type is protocol.MessageType.SESSION_OK
        assert replayed.msg_type is protocol.MessageType.SESSION_REJECT
        assert replayed.body.reason == (f"{protocol.REJECT_CLIENT_ID}: the session open names "
                                        "'robot-1', its connection proved 'robot-2'")
        assert not protocol.retryable_reject(replayed.body.reason)
        assert server._sessions.client_ids() == ["robot-1"]
        assert server._sessions.get("robot-1", first.epoch) is not None  # untouched
        assert server.status()["identity_refused"] == 1
    finally:
        for robot in robots:
            robot.close()
        server.close()
    opens = [(line["client"], line["outcome"]) for line in
             (json.loads(r.getMessage()) for r in caplog.records if r.name == "harness.audit")
             if line["type"] == "SESSION_OPEN"]
    assert opens == [("robot-1", "ok"), ("robot-2", "identity_refused")]


def test_a_second_robot_claiming_the_firsts_identity_is_refused(served):
    """robot-2 authenticates as itself, then says it is robot-1: zmq and gRPC refuse and
    count each message; on Zenoh the ACL routes robot-2 nowhere but its own keys."""
    intruder = make_client(secured(served.config, Path(served.config.security.dir),
                                   "robot-2"))
    intruder.wait_ready(10.0)
    assert intruder.request(b"own", timeout_s=5.0) == b"robot-2:own"  # its own: served
    told = listen_to_refusals(served.server)
    kind = served.config.kind
    claim_identity(intruder, kind, "robot-1")
    assert refused(intruder)
    if kind in ("grpc", "zmq"):
        refusals = served.server.stats.identity_refused
        assert refusals >= 1
        metrics = ServerMetrics()  # what the policy server's /metrics exports
        metrics.watch_transport(served.server)
        assert (f"policy_identity_refused_total {float(refusals)}"
                in metrics.exposition().decode())
        assert told and len(told) == refusals  # each one told, for the audit log
        assert set(map(repr, told)) == {repr(("identity_refused", "robot-1",
                                              {"identity": "robot-2"}))}
    served.honest_round_trip()


def test_zenoh_a_chunk_forged_on_a_robots_action_key_never_reaches_it(keys):
    """The attack that made a robot execute another process's actions (810 of 1,158 ticks):
    robot-2 publishes on robot-1's action key, timed among the server's own chunks."""
    from transports.zenoh import session_config
    from transports.zenoh_security import client_values, tls_locator

    served = Served("zenoh", keys["ours"])
    try:
        intruder_config = secured(served.config, keys["ours"], "robot-2")
        session = zenoh.open(session_config(
            intruder_config, listen=[], connect=[tls_locator(intruder_config.listen)],
            secured=client_values(intruder_config)))
        try:
            time.sleep(0.5)  # its link is up
            action_key = f"{served.config.namespace}/act/robot-1"
            for i in range(5):
                session.put(action_key, b"forged")
                served.server.send_stream("robot-1", b"chunk-%d" % i)
                time.sleep(0.05)
            received = []
            while (chunk := served.robot.take_stream(0.5)) is not None:
                received.append(chunk)
            assert b"forged" not in received and received  # the server's chunks came
            for _ in range(5):  # observations flooded into robot-1's session: none arrive
                session.put(f"{served.config.namespace}/obs/robot-1", b"flood")
            while (item := served.server.take_stream(0.5)) is not None:
                assert item.payload != b"flood"
        finally:
            session.close()
        served.honest_round_trip()
    finally:
        served.close()


@pytest.mark.parametrize("kind", ["grpc", "zenoh"])
def test_a_client_with_an_expired_certificate_is_refused_by_the_server(keys, kind):
    """Past our own start-up check (an attacker's client makes none): the TLS handshake.
    (CURVE keys do not expire: on zmq the allow-list is what ends a robot's access.)"""
    served = Served(kind, keys["ours"])
    try:
        if kind == "grpc":
            assert grpc_refused(served.config.listen, keys["ours"] / "ca.pem",
                                keys["expired"], "robot-9")
        else:
            assert zenoh_refused(served.config, keys["ours"] / "ca.pem", keys["expired"],
                                 "robot-9")
        served.honest_round_trip()
    finally:
        served.close()


def copy_keys(source: Path, target: Path) -> Path:
    return Path(shutil.copytree(source, target))


@pytest.mark.parametrize(("damage", "mechanism", "message"), [
    (lambda d: (d / "robots" / "robot-1.key").unlink(), "tls",
     "robots/robot-1.key is missing; make the files with python -m harness.certs"),
    (lambda d: (d / "server.pem").write_text("not a certificate"), "tls",
     "server.pem is not a PEM certificate"),
    (lambda d: shutil.copy(d.parent / "theirs" / "robots" / "robot-1.pem",
                           d / "robots" / "robot-1.pem"), "tls",
     "robots/robot-1.pem was not signed by ca.pem"),
    (lambda d: shutil.copy(d / "robots" / "robot-2.key", d / "robots" / "robot-1.key"),
     "tls", "robots/robot-1.key is not the key of robot-1.pem"),
    (lambda d: (d / "curve" / "server.key_secret").unlink(), "curve",
     "curve/server.key_secret is missing"),
], ids=["missing", "malformed", "another-ca", "wrong-key", "curve-missing"])
def test_bad_key_material_is_one_error_naming_the_file(keys, tmp_path, damage, mechanism,
                                                       message):
    directory = copy_keys(keys["ours"], tmp_path / "ours")
    shutil.copytree(keys["theirs"], tmp_path / "theirs")
    damage(directory)
    with pytest.raises(SecurityError, match=message.replace(".", r"\.")) as failure:
        check_key_material(SecurityConfig(mode="mtls", dir=str(directory)), mechanism,
                           server=True, client=True)
    assert str(failure.value).startswith(f"security.dir={directory}: ")


def test_an_expired_certificate_is_refused_at_start_up_with_its_date(keys, tmp_path):
    directory = copy_keys(keys["ours"], tmp_path / "ours")
    shutil.copy(keys["expired"] / "robot-9.pem", directory / "robots" / "robot-1.pem")
    shutil.copy(keys["expired"] / "robot-9.key", directory / "robots" / "robot-1.key")
    with pytest.raises(SecurityError, match=r"robots/robot-1\.pem expired on \d{4}-\d\d-\d\d"):
        check_key_material(SecurityConfig(mode="mtls", dir=str(directory)), "tls",
                           server=False, client=True)


def test_the_certs_tool_never_overwrites_and_adds_robots_under_the_same_ca(tmp_path):
    from harness.certs import main

    out = tmp_path / "keys"
    assert main(["--out", str(out), "--robots", "1"]) == 0
    ca = (out / "ca.pem").read_bytes()
    assert main(["--out", str(out), "--robots", "1"]) == 2  # refused, nothing replaced
    assert (out / "ca.pem").read_bytes() == ca
    assert main(["--out", str(out), "--robots", "2", "--add"]) == 0
    assert sorted(p.name for p in (out / "robots").glob("*.pem")) == [
        "robot-1.pem", "robot-2.pem", "robot-3.pem"]
    check_key_material(SecurityConfig(mode="mtls", dir=str(out), identity="robot-3"), "tls",
                       server=True, client=True)
    check_key_material(SecurityConfig(mode="mtls", dir=str(out), identity="robot-3"),
                       "curve", server=True, client=True)
    assert oct((out / "robots" / "robot-3.key").stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("kind", KINDS)
def test_golden_parity_holds_with_security_on(keys, kind):
    """The same seeded episodes execute byte-identical actions over a secured transport."""
    from harness.bench import parity
    from tests.transports.test_conformance import config_for

    golden = json.loads(parity.GOLDEN.read_text())["digests"]
    traces = parity.run_parity_episodes(secured(config_for(kind), keys["ours"]))
    assert {str(t.episode): parity.digest(t) for t in traces} == golden
    assert all(t.success and t.breaches == [] for t in traces)


def _secured_router(keys, config):
    """A router holding the run's ACL (`router_values`) on a free port, the config pointed at
    it, and a session of robot-2 through it: the intruder."""
    from transports.zenoh import session_config
    from transports.zenoh_security import client_values, router_values, tls_locator

    locator = f"tcp/127.0.0.1:{free_port()}"
    config = dataclasses.replace(config, router=locator)
    router = zenoh.open(session_config(config, listen=[tls_locator(locator)], connect=[],
                                       mode="router", secured=router_values(config)))
    intruder_config = secured(config, keys["ours"], "robot-2")
    intruder = zenoh.open(session_config(intruder_config, listen=[],
                                         connect=[tls_locator(locator)],
                                         secured=client_values(intruder_config)))
    return router, config, intruder


def test_through_a_router_each_robot_still_reaches_only_its_own_keys(keys):
    """The router tier: robots and the server dial a router (mTLS) whose ACL gives each
    robot's certificate its own keys and the server's all of the namespace. robot-2 cannot
    query robot-1's request key nor get a chunk onto robot-1's action key through it."""
    router, config, intruder = _secured_router(
        keys, secured(loopback_config("zenoh"), keys["ours"]))
    server = make_server(config)
    server.start(lambda client_id, payload: client_id.encode() + b":" + payload)
    robot = make_client(config)
    try:
        robot.wait_ready(10.0)
        assert robot.request(b"hi", timeout_s=5.0) == b"robot-1:hi"
        ns = config.namespace
        replies = list(intruder.get(f"{ns}/req/robot-1", payload=b"x", timeout=1.0))
        assert not any(reply.ok is not None for reply in replies)
        for i in range(5):
            intruder.put(f"{ns}/act/robot-1", b"forged")
            server.send_stream("robot-1", b"chunk-%d" % i)
            time.sleep(0.05)
        received = []
        while (chunk := robot.take_stream(0.5)) is not None:
            received.append(chunk)
        assert received and b"forged" not in received
        assert robot.request(b"again", timeout_s=5.0) == b"robot-1:again"
    finally:
        intruder.close()
        robot.close()
        server.close()
        router.close()


def test_through_a_router_a_robot_reaches_each_replica_under_its_own_keys_only(keys):
    """Replicas serve under `<ns>/replica<i>`: the router's ACL lets robot-1 use its keys
    under any replica (it was refused there, and the run waited for a server until its
    start-up timeout), and still nobody else's."""
    from transports import make_replica_clients, transport_entry

    router, base, intruder = _secured_router(
        keys, secured(loopback_config("zenoh"), keys["ours"]))
    entry = transport_entry("zenoh")
    configs = [dataclasses.replace(base, **entry.replica_fields(base, index))
               for index in range(2)]
    servers = [make_server(config) for config in configs]
    for index, server in enumerate(servers):
        server.start(lambda client_id, payload, index=index:
                     b"%d:" % index + client_id.encode() + b":" + payload)
    robot = make_replica_clients(configs)
    try:
        for client in robot:
            client.wait_ready(10.0)
        assert [client.request(b"hi", timeout_s=5.0) for client in robot] == [
            b"0:robot-1:hi", b"1:robot-1:hi"]
        replies = list(intruder.get(f"{configs[1].namespace}/req/robot-1", payload=b"x",
                                    timeout=1.0))
        assert not any(reply.ok is not None for reply in replies)
    finally:
        intruder.close()
        for client in robot:
            client.close()
        for server in servers:
            server.close()
        router.close()
