"""Replicas and failover: a robot refused by a full replica opens its session on another
without waiting out a backoff; a robot whose replica is killed (SIGKILL, a process fault)
moves to the live one at once and loses no episode; robots spread over the replicas; a
replica layout without ports to spare, or replicas of a server the harness does not start,
fail at start-up naming `server.replicas`. Real parts: policy servers over zmq (and zenoh
behind its router) on loopback (in threads, and as supervised processes through the
harness), the MuJoCo oracle."""

from __future__ import annotations

import csv

import pytest

import harness
from harness.api import compose
from harness.client.config import EngineConfig
from harness.client.engine import engine_for
from harness.config import ConfigError
from harness.server.replicas import ReplicaPortError, replica_transports
from tests.conftest import wait_until
from tests.server.wire import start_server
from transports import make_client
from transports.failover import FailoverClient
from transports.loopback import loopback_config

network = pytest.mark.network


@network
def test_a_full_replica_sends_the_robot_to_another_without_a_backoff(env):
    """Two replicas of one session each: the second robot, sent to replica 0 first, is
    refused there (max_sessions) and accepted by replica 1 in the same open."""
    servers = [start_server(env, kind="zmq", max_sessions=1) for _ in range(2)]
    configs = [config for _, config in servers]
    robots = [FailoverClient([make_client(config) for config in configs], first=0)
              for _ in range(2)]
    try:
        engines = [engine_for(env.spec, robot, EngineConfig(reject_retry_s=0.5), chunk_size=8)
                   for robot in robots]
        for replica in (client for robot in robots for client in robot.replicas):
            replica.wait_ready(10.0)  # both present: a replica not yet heard is not moved to
        assert engines[0].open_session() and robots[0].active == 0
        assert engines[1].open_session()
        assert (robots[1].active, robots[1].failovers) == (1, 1)
        assert [len(server._sessions) for server, _ in servers] == [1, 1]
    finally:
        for robot in robots:
            robot.close()
        for server, _ in servers:
            server.close()


@network
def test_a_robot_leaves_a_gone_replica_for_a_present_one_and_stays_when_all_are_gone(env):
    server, live = start_server(env, kind="zmq")
    robot = FailoverClient([make_client(loopback_config("zmq")), make_client(live)], first=0)
    try:
        wait_until(lambda: robot.replicas[1].server_present(), 10.0, "replica 1 present")
        assert robot.server_present() and (robot.active, robot.failovers) == (1, 1)
        server.close()
        wait_until(lambda: not robot.replicas[1].server_present(), 10.0, "replica 1 gone")
        assert not robot.server_present() and (robot.active, robot.failovers) == (1, 1)
    finally:
        robot.close()
        server.close()


@network
def test_robots_spread_over_the_replicas_from_their_index():
    configs = [loopback_config("zmq") for _ in range(3)]
    robots = [FailoverClient([make_client(config) for config in configs], first=index)
              for index in range(4)]
    try:
        assert [robot.active for robot in robots] == [0, 1, 2, 0]
        assert len({robot.client_id for robot in robots}) == 4
    finally:
        for robot in robots:
            robot.close()


@network
@pytest.mark.timeout(300)
@pytest.mark.parametrize("transport", [["transport=zmq"],
                                       ["transport=zenoh", "transport.router=auto"]],
                         ids=["zmq", "zenoh-router"])
def test_a_killed_replica_of_two_costs_no_episode(tmp_path, transport):
    """server_crash SIGKILLs replica 0 for 2 s in each episode. The robot, on replica 0,
    moves to replica 1 when its heartbeat (zenoh: liveliness) stops: every episode succeeds,
    none ends DEAD, the crash episode re-opens its session once, and it recovers in less
    than the 2 s that replica 0 is down (one server cannot do that: the robot waits for it
    to come back). Behind a zenoh router both replicas once took every observation and
    every episode ended DEAD."""
    result = harness.run([*transport, "faults=server_crash", "server.replicas=2",
                          "env.episodes_per_task=2"], run_dir=tmp_path / "run")
    assert result.status == 0
    with open(tmp_path / "run" / "episodes.csv") as rows:
        episodes = list(csv.DictReader(rows))
    assert [row["success"] for row in episodes] == ["True", "True"]
    assert all(row["client_state_end"] != "dead" for row in episodes)
    first = min(episodes, key=lambda row: int(row["episode"]))
    assert first["sessions_reopened"] == "1"
    assert float(first["time_to_recover_s"]) < 2.0
    assert (tmp_path / "run" / "replica1" / "server-task0").is_dir()


@pytest.mark.parametrize(("listen", "replicas", "message"), [
    ("tcp://127.0.0.1:65500", 2, "replica 1 would listen on port 65600"),
    ("tcp://127.0.0.1:64100", 16, "replica 15 would listen on port 65600"),
])
def test_replicas_without_ports_to_spare_fail_naming_the_field(listen, replicas, message):
    transport = loopback_config("zmq")
    transport = type(transport)(**{**transport.__dict__, "listen": listen})
    with pytest.raises(ReplicaPortError, match=message) as failure:
        replica_transports(transport, replicas, 100)
    assert f"server.replicas={replicas}" in str(failure.value)
    assert "no ports to spare" in str(failure.value)


@pytest.mark.parametrize(("overrides", "message"), [
    (["transport=zmq", "transport.listen=tcp://127.0.0.1:65500", "server.replicas=2"],
     "server.replicas=2: replica 1 would listen on port 65600"),
    (["transport=zmq", "server=inprocess", "server.replicas=2"],
     "server.replicas=2 with server.mode=inprocess"),
    (["transport=local", "server.replicas=2"], "server.replicas=2: transport=local does not"),
    (["transport=zmq", "server.replicas=0"], "server.replicas=0: must be in 1..16"),
    (["transport=zmq", "server.replicas=2", "faults=wan_50ms"],
     "server.replicas=2 with faults=wan_50ms"),
])
def test_bad_replica_settings_fail_at_start_up_naming_the_field(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        compose(overrides)
