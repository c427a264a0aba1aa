"""Every failure counted once (issue 21): under a partition of the model link, the error
replies our server sends the robot are counted alike by the episode row, the run's summary,
the server's Prometheus metrics and its audit log, on every transport.

A closed loop of the real parts: the episode runner and the robot's engine over a real
transport, our policy server hosting `policy=remote` (OpenVLA's /act protocol), the fault
proxy in front of a test double of OpenVLA's deploy.py (the model link, as
`faults.link=model` wires it), the results store writing the row and the summary. The env
is a still stand-in with LIBERO's contract, so the episode costs wall time only.

Reproduced as it was observed: the link heals just after the server answered an
observation with an error, so the chunk of the next observation lands before the robot
polls. With the inbox latest-only by sequence id, that error was dropped unseen (the audit
log said 2 `inference_error`, the row `server_errors=0`); now it is set aside and counted.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

from envs import robot_contract
from envs.base import EnvObservation, EnvSpec, StepResult
from harness import protocol
from harness.client.config import EngineConfig
from harness.client.engine import ClientEngine, engine_for
from harness.client.states import ClientState, EngineStats
from harness.faults.proxy import FaultProxy
from harness.loop.clock import Clock
from harness.loop.runner import run_episode
from harness.results.store import ResultsStore
from harness.results.trace import EpisodeTrace, TickRecord
from harness.server.metrics import audit_error_replies
from harness.server.policy_server import PolicyServer
from harness.server.sessions import short_id
from policies.remote import RemotePolicyConfig, make_remote_policy
from tests.conftest import poll_until, wait_until
from tests.loop.conftest import observation_of
from transports import make_client, make_server, transport_names
from transports.loopback import loopback_config

pytestmark = pytest.mark.network

ENV, CAMERAS, IMAGE_SIZE = "libero_object", ("agentview",), (256, 256)
"""What OpenVLA's LIBERO convention reads: one 256x256 agent-view camera."""
TICKS = 40
"""2 s at LIBERO's 20 Hz."""
CUT_TICK, HEAL_TICK = 6, 14
"""The model link is cut at tick 6 and heals at tick 14 or soon after, just after an error
reply (`ModelLinkPartition`)."""
REMOTE_TIMEOUT_S = 0.25
"""`policy.request_timeout_s`: a request into the partition fails as an inference error
after this long; the robot's own request timeout (0.1 s) is shorter, so a newer
observation always waits at the server when an error goes out."""


@dataclass
class StillEnv:
    """LIBERO's contract without its simulator: the same observation every tick, never
    done. The counts under test live on the wire, not in the scene."""

    spec: EnvSpec

    def reset(self, *, seed: int, init_state: int | None = None) -> EnvObservation:
        state, images = self.spec.contract.zero_arrays()
        return EnvObservation(state, {k: np.full_like(v, 51) for k, v in images.items()},
                              "pick up the alphabet soup and place it in the basket")

    def step(self, action: np.ndarray) -> StepResult:
        return StepResult(self.reset(seed=0), success=False, done=False)

    def ee_pos(self) -> np.ndarray | None:
        return None

    def close(self) -> None:
        pass


class ModelLinkPartition:
    """The episode's fault, as a tick hook: cut the model link at `CUT_TICK`; from
    `HEAL_TICK` on, wait (holding the tick, so the robot does not poll) for the server's next
    error reply; if the robot has sent a newer observation than the one that failed, heal
    the link at once and keep holding the tick until that observation's chunk has landed in
    the robot's inbox too: the error reply is overtaken before the robot polls. (If not, the
    server would have nothing to answer with a chunk: let the tick run and try again.)"""

    def __init__(self, proxy: FaultProxy, server: PolicyServer, client,
                 errored_seqs: Callable[[], list[int]]) -> None:
        self.proxy, self.server, self.client = proxy, server, client
        self.errored_seqs = errored_seqs
        """Sequence ids of the observations the server answered with an error, in order."""
        self.engine: ClientEngine | None = None
        self.healed_at: int | None = None

    def __call__(self, tick: int, t: float, state) -> bool:
        if tick == CUT_TICK:
            self.proxy.set_partition(True)
        if tick >= HEAL_TICK and self.healed_at is None:
            errors, served = len(self.errored_seqs()), self.server.metrics.served_total()
            received = self.client.stats.received
            if not poll_until(lambda: len(self.errored_seqs()) > errors, 2.0):
                # Nothing in flight to fail (on a loaded machine the last request failed
                # before this tick): let the tick run, so the robot sends, and try again.
                return True
            if self.engine.session.seq > self.errored_seqs()[-1]:
                self.proxy.set_partition(False)
                self.healed_at = tick
                wait_until(lambda: self.server.metrics.served_total() > served, 5.0,
                           "a chunk")
                wait_until(lambda: self.client.stats.received >= received + 2, 5.0,
                           "the error and the chunk to land")
        return tick >= CUT_TICK and self.healed_at is None


@pytest.fixture
def deploy():
    """A test double of OpenVLA's deploy.py, and the fault proxy our server dials it by."""
    from tests.policies.remote.doubles import ServerThread
    from tests.policies.remote.doubles.openvla_deploy import DeployDouble

    double = ServerThread(DeployDouble().app()).start()
    proxy = FaultProxy("127.0.0.1", double.port, seed=0)
    port = proxy.start()
    yield proxy, f"http://127.0.0.1:{port}"
    proxy.stop()
    double.stop()


@pytest.mark.parametrize("kind", transport_names())
def test_row_summary_metrics_and_audit_count_the_same_error_replies(kind, deploy, tmp_path,
                                                                     caplog):
    caplog.set_level(logging.INFO, logger="harness.audit")
    for attempt in range(ATTEMPTS):
        caplog.clear()
        if counts_agree_in_an_episode(kind, *deploy, tmp_path / f"episode-{attempt}", caplog):
            return
    pytest.fail(f"in {ATTEMPTS} episodes no error reply was overtaken by a chunk before the "
                "robot polled and the robot then served again: the case under test never "
                "happened", pytrace=False)


ATTEMPTS = 3
"""Episodes tried until one shows the case under test (the link healed just after an error
reply, which a chunk then overtook before the robot polled); on a loaded machine the timing
may not line up in one episode (it failed so in CI runs). Every episode's counts must
agree."""


def counts_agree_in_an_episode(kind: str, proxy: FaultProxy, url: str, tmp_path, caplog
                               ) -> bool:
    """One episode under the partition; asserts that the row, the summary, the metrics and
    the audit log count the same error replies. Whether an error reply was overtaken."""
    settings = RemotePolicyConfig(protocol="openvla", url=url, connect_timeout_s=5.0,
                                  request_timeout_s=REMOTE_TIMEOUT_S)
    config = loopback_config(kind)
    server = PolicyServer(make_server(config), lambda: make_remote_policy(
        settings, env=ENV, task_id=0, cameras=CAMERAS, image_size=IMAGE_SIZE), max_sessions=1)
    server.start()
    client = make_client(config)

    def audit_lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "harness.audit"]

    def errored_seqs() -> list[int]:
        return [record["seq"] for record in map(json.loads, audit_lines())
                if record["outcome"] == "inference_error"]

    partition = ModelLinkPartition(proxy, server, client, errored_seqs)
    try:
        client.wait_ready(10.0)
        contract = robot_contract(ENV, 0, cameras=CAMERAS, image_size=IMAGE_SIZE)
        env = StillEnv(EnvSpec(ENV, contract, (-1.0,) * 7, (1.0,) * 7, max_steps=TICKS))
        engine = engine_for(env.spec, client, EngineConfig(mode="synchronous",
                                                           request_timeout_s=0.1),
                            chunk_size=0)
        partition.engine = engine
        trace = run_episode(env, engine, episode=1, seed=0, clock=Clock.realtime,
                            on_tick=partition)
        # On a loaded machine the last observation is still being answered when the episode
        # ends (an error comes REMOTE_TIMEOUT_S later): the row is written once the server
        # has answered it and the reply has landed, so it counts what the server sent.
        last = engine.session.seq
        wait_until(lambda: any(r["seq"] == last and r["type"] == "OBSERVATION"
                               for r in map(json.loads, audit_lines())), 5.0,
                   f"the server to answer observation {last}")
        wait_until(lambda: engine.poll(TICKS) or engine.stats.error_replies.get("inference")
                   == server.metrics.error_replies().get("inference"), 5.0,
                   "the error replies in flight to land")
        engine.close()
        store = ResultsStore(tmp_path)
        row = store.write_episode(task=0, seed=0, init_state=None, trace=trace)
        summary = store.summarize(latency_budget_s=0.5)
    finally:
        proxy.set_partition(False)  # an episode whose link never healed: the next one dials
        client.close()              # the model through the same proxy
        server.close()
    metrics = server.metrics.error_replies()
    audit = audit_error_replies(audit_lines(), client=short_id(client.client_id))
    assert set(metrics) == set(audit) == {"inference"}, (metrics, audit)
    counts = (row.get("server_errors_inference"), summary.get("server_errors_inference"),
              metrics["inference"], audit["inference"])
    assert counts[2] >= 2 and len(set(counts)) == 1, counts  # row, summary, metrics, audit
    assert row["server_errors"] == summary["server_errors"] == counts[0]
    assert all("RemoteUnavailable" in e for e in trace.wire.errors), trace.wire.errors
    assert trace.wire.chunks > 0 and not trace.breaches
    if partition.healed_at is None:  # no error came while a newer observation waited
        return False
    if not any(t.source == "fresh" for t in trace.ticks[partition.healed_at:]):
        # Not served again within the episode's 2 s of wall time after the heal: on a
        # loaded machine (five test workers on two cores) the model's answer can take
        # longer. Inconclusive, not a pass: three such episodes fail the test.
        return False
    return client.stats.set_aside >= 1  # an error reply was overtaken: the case under test


def test_session_unknown_replies_are_counted_alike_by_the_robot_and_the_audit_log(env, rig,
                                                                                 caplog):
    """A server restarted between two ticks answers the old epoch's observations with
    'session unknown' until the robot has re-opened: each such reply is one in the robot's
    count, one in the new server's audit log and one in its `policy_error_replies`
    counter."""
    caplog.set_level(logging.INFO, logger="harness.audit")
    loop = rig(max_offline_s=30.0)
    engine, body = loop.engine, observation_of(env)
    engine.reset(1)
    loop.restart()
    for tick in range(400):
        if engine.tick(tick, body).state is ClientState.STREAMING and engine.stats.reopened:
            break
        time.sleep(0.005)  # ticks paced like a robot's, so replies can arrive

    def audited() -> dict[str, int]:
        return audit_error_replies([r.getMessage() for r in caplog.records
                                    if r.name == "harness.audit"],
                                   client=short_id(loop.client.client_id))

    def settled() -> bool:  # a reply still on its way when the loop ended has landed
        engine.poll(tick)
        return engine.stats.error_replies == audited()

    wait_until(settled, 5.0, f"{engine.stats.error_replies} received == {audited()} audited")
    assert engine.stats.reopened == 1
    assert engine.stats.error_replies == {protocol.SESSION_UNKNOWN: audited()["session"]}
    assert engine.stats.error_replies == loop.server.metrics.error_replies()
    assert audited()["session"] >= 1


def test_rows_and_summary_count_error_replies_by_code_apart_from_the_engines_own_failures(
        tmp_path):
    """`server_errors` is the ERROR replies received (by code in `server_errors_<code>`, a
    code that is no plain name as `other`); the engine's own failures are `client_errors`."""
    store = ResultsStore(tmp_path)
    for episode, replies in ((1, {"inference": 2, "session": 1, "Bad Code!": 1}),
                             (2, {"inference": 1})):
        texts = [f"{code}: x" for code, n in replies.items() for _ in range(n)]
        wire = EngineStats(errors=[*texts, "decode: header.magic"], error_replies=replies)
        ticks = [TickRecord(0, "fallback", "stalled", None, None, None, [0.0] * 7)]
        row = store.write_episode(task=0, seed=0, init_state=None, trace=EpisodeTrace(
            episode, steps=1, ticks=ticks, dt=0.05, wire=wire))
        assert row["server_errors"] == sum(replies.values()) and row["client_errors"] == 1
    summary = store.summarize(latency_budget_s=0.5)
    assert {key: value for key, value in summary.items() if key.endswith("_errors")
            or key.startswith("server_errors_")} == {
        "server_errors": 5, "server_errors_inference": 3, "server_errors_session": 1,
        "server_errors_other": 1, "client_errors": 2}
