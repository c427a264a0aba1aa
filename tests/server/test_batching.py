"""Micro-batching on the policy server: robots' observations predicted in one pass, each
robot's committed prefix and noise its own (its chunk is the one it would get alone), a
robot whose observation breaks the contract or whose predict raises fails alone, no robot
starves when there are more robots than a batch holds, and the batch size each chunk rode in
is counted. Real parts: the policy server over zmq, the shipped flow policy (torch on CPU),
the MuJoCo env's observations; raw clients speak the wire directly."""

from __future__ import annotations

import contextlib
import threading
import time

import numpy as np
import pytest

from envs.base import EnvObservation
from harness import protocol
from harness.server.scheduler import MicroBatch, RoundRobin, make_scheduler, predict_together
from policies.base import BatchItem
from policies.config import default_flow_weights
from policies.flow.policy import FlowPolicy
from policies.slow import LatencyProfile, SlowPolicy
from tests.server.wire import RawClient, RecordingPolicy, contract, oracle, start_server
from transports import StreamItem

network = pytest.mark.network
WEIGHTS = default_flow_weights("mujoco_pick_place")


def flow(rtc: str = "guidance") -> FlowPolicy:
    return FlowPolicy.load(WEIGHTS, rtc=rtc)


def batch_sizes(server) -> tuple[float, float]:
    """(chunks served, sum of the batch sizes they rode in)."""
    registry = server.metrics.registry
    return (registry.get_sample_value("policy_batch_size_count") or 0.0,
            registry.get_sample_value("policy_batch_size_sum") or 0.0)


def opened(config, spec, episode: int) -> RawClient:
    client = RawClient(config)
    assert client.open(spec).msg_type is protocol.MessageType.SESSION_OK
    client.call(protocol.Reset(), episode=episode)
    return client


def observation_message(env, seed: int, *, prefix: np.ndarray, tick: int = 10,
                        state_fix=None) -> protocol.Observation:
    observation = env.reset(seed=seed)
    state = dict(observation.state)
    if state_fix is not None:
        state = state_fix(state)
    return protocol.Observation(state, {}, observation.instruction, tick=tick,
                                delay_ticks=len(prefix), committed=prefix)


# ---- the scheduler alone ----------------------------------------------------------------


class Arrivals:
    """The mailbox's `take_stream` as the scheduler sees it: queued items handed out in
    order, then None; records the timeouts it was asked to wait."""

    def __init__(self, *client_ids: str) -> None:
        self.items = [StreamItem(client_id, client_id.encode(), n)
                      for n, client_id in enumerate(client_ids)]
        self.timeouts: list[float] = []

    def __call__(self, timeout_s: float):
        self.timeouts.append(timeout_s)
        return self.items.pop(0) if self.items else None


def test_a_micro_batch_stops_at_its_size_and_keeps_the_rest_for_the_next():
    take = Arrivals("a", "b", "c", "d", "e")
    scheduler = MicroBatch(max_batch_size=2, max_wait_s=1.0)
    assert [item.client_id for item in scheduler.collect(take, 0.1)] == ["a", "b"]
    assert [item.client_id for item in scheduler.collect(take, 0.1)] == ["c", "d"]
    assert [item.client_id for item in scheduler.collect(take, 0.1)] == ["e"]
    assert scheduler.collect(take, 0.1) == []
    assert take.timeouts[0] == 0.1 and all(t <= 1.0 for t in take.timeouts)


def test_a_robot_seen_twice_while_a_batch_fills_keeps_its_newest_observation_only():
    take = Arrivals("a", "b", "a")
    batch = MicroBatch(max_batch_size=8, max_wait_s=0.0).collect(take, 0.1)
    assert [(item.client_id, item.received_ns) for item in batch] == [("a", 2), ("b", 1)]


def test_round_robin_serves_one_observation_per_pass():
    take = Arrivals("a", "b")
    assert [item.client_id for item in RoundRobin().collect(take, 0.1)] == ["a"]


@pytest.mark.parametrize(("options", "field"), [
    ({"max_batch_size": 0, "max_wait_ms": 5.0}, "server.max_batch_size"),
    ({"max_batch_size": 4, "max_wait_ms": -1.0}, "server.max_wait_ms"),
])
def test_a_bad_batch_setting_fails_naming_its_field(options, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        make_scheduler("micro_batch", **options)
    with pytest.raises(ValueError, match="round_robin"):
        make_scheduler("fifo")


# ---- batched predicts on the server -----------------------------------------------------


@network
def test_each_robot_gets_the_chunk_of_its_own_prefix_and_noise_in_one_batch(env):
    """Four robots with prefixes of 0, 2, 3 and 5 actions and episodes of their own, batched
    together: each chunk is the one its own policy instance predicts alone from that robot's
    observation, prefix and episode seed (to 1e-5: a batched matrix product may round its
    last bits otherwise; two robots' chunks differ by tenths), and starts after that robot's
    prefix. So prefixes, noise and chunks are not crossed between robots."""
    server, config = start_server(env, kind="zmq", policy_factory=flow,
                                  scheduler=MicroBatch(4, max_wait_s=5.0))
    spec = server.spec
    clients = [opened(config, contract(env, model_id=spec.model_id, delay_aware=True), 11 + i)
               for i in range(4)]
    rng = np.random.default_rng(7)
    prefixes = [rng.uniform(-1, 1, (d, spec.action_dim)).astype(np.float32)
                for d in (0, 2, 3, 5)]
    try:
        messages = [observation_message(env, i, prefix=prefix)
                    for i, prefix in enumerate(prefixes)]
        for client, message in zip(clients, messages, strict=True):
            client.publish(message, seq=1, episode=client_episode(clients, client))
        replies = [client.next_reply(timeout_s=20.0) for client in clients]
        for i, (reply, prefix, message) in enumerate(zip(replies, prefixes, messages,
                                                         strict=True)):
            assert reply is not None and reply.msg_type is protocol.MessageType.ACTION_CHUNK
            alone = flow()
            alone.reset(seed=11 + i)
            expected = alone.predict(EnvObservation(message.state, {}, message.instruction),
                                     prefix if len(prefix) else None)
            np.testing.assert_allclose(reply.body.actions, expected, rtol=0, atol=1e-5)
            assert reply.body.start_tick == 10 + len(prefix)
            assert reply.body.batch_size == 4  # each robot is told what it was batched with
        assert batch_sizes(server) == (4.0, 16.0)  # four chunks, each of a batch of four
    finally:
        for client in clients:
            client.close()
        server.close()


def client_episode(clients: list[RawClient], client: RawClient) -> int:
    return 11 + clients.index(client)


def with_nan(state: dict) -> dict:
    name = next(iter(state))
    bad = np.array(state[name], copy=True)
    bad.flat[0] = np.nan
    return {**state, name: bad}


@contextlib.contextmanager
def three_batched_robots(env, policy_factory):
    """A server batching up to three robots (waiting up to 5 s for them), and three robots
    with a session each in episode 1; closed after."""
    server, config = start_server(env, kind="zmq", policy_factory=policy_factory,
                                  scheduler=MicroBatch(3, max_wait_s=5.0))
    spec = contract(env, model_id=server.spec.model_id, delay_aware=True)
    clients = [opened(config, spec, 1) for _ in range(3)]
    try:
        yield server, clients
    finally:
        for client in clients:
            client.close()
        server.close()


@network
def test_a_robots_bad_observation_fails_that_robot_only(env):
    with three_batched_robots(env, flow) as (server, clients):
        for i, client in enumerate(clients):
            client.publish(observation_message(env, i, prefix=np.zeros((0, 4), np.float32),
                                               state_fix=with_nan if i == 1 else None),
                           seq=1, episode=1)
        replies = [client.next_reply(timeout_s=20.0) for client in clients]
        assert [reply.msg_type for reply in replies] == [
            protocol.MessageType.ACTION_CHUNK, protocol.MessageType.ERROR,
            protocol.MessageType.ACTION_CHUNK]
        assert replies[1].body.code == protocol.ERROR_CONTRACT
        assert batch_sizes(server) == (2.0, 4.0)  # the two good ones, predicted together
        assert [replies[0].body.batch_size, replies[2].body.batch_size] == [2, 2]


class FailsOnInstruction:
    """Test double around the real flow policy: `predict` raises for the instruction "fail"
    (a model that cannot take one robot's input), and so does a batch holding it."""

    def __init__(self) -> None:
        self.inner = flow()
        self.spec = self.inner.spec

    def reset(self, *, seed: int) -> None:
        self.inner.reset(seed=seed)

    def predict(self, observation, committed=None):
        if observation.instruction == "fail":
            raise RuntimeError("this robot's input breaks the model")
        return self.inner.predict(observation, committed)

    def predict_batch(self, items):
        if any(item.observation.instruction == "fail" for item in items):
            raise RuntimeError("one input in the batch breaks the model")
        return self.inner.predict_batch([item._replace(policy=item.policy.inner)
                                         for item in items])


@network
def test_a_robot_whose_predict_raises_fails_alone_and_the_batch_is_served_one_by_one(env):
    """Without the robot-by-robot retry the batched pass's error would fail all three."""
    with three_batched_robots(env, FailsOnInstruction) as (server, clients):
        for i, client in enumerate(clients):
            message = observation_message(env, i, prefix=np.zeros((0, 4), np.float32))
            if i == 2:
                message = protocol.Observation(message.state, {}, "fail", tick=10)
            client.publish(message, seq=1, episode=1)
        replies = [client.next_reply(timeout_s=20.0) for client in clients]
        assert [reply.msg_type for reply in replies] == [
            protocol.MessageType.ACTION_CHUNK, protocol.MessageType.ACTION_CHUNK,
            protocol.MessageType.ERROR]
        assert replies[2].body.code == "inference" and "breaks the model" in replies[2].body.detail
        assert server.healthy()


@network
def test_no_robot_starves_when_more_robots_wait_than_a_batch_holds(env):
    """Six robots each keep one observation waiting, batches hold two and take 20 ms a
    robot: over 1.5 s every robot is served, and no robot more than twice as often as the
    least served (the mailbox hands out the longest-waiting robots first)."""
    slow = LatencyProfile("test_20ms", 0.02, batch_alpha=1.0)
    server, config = start_server(env, kind="zmq", max_sessions=6,
                                  policy_factory=lambda: SlowPolicy(oracle(), slow),
                                  scheduler=MicroBatch(2, max_wait_s=0.0))
    clients = [opened(config, contract(env), 1) for _ in range(6)]
    served = [0] * 6
    deadline = time.monotonic() + 1.5

    def robot(index: int) -> None:
        seq = 0
        while time.monotonic() < deadline:
            seq += 1
            clients[index].observe(env.reset(seed=index), seq=seq, episode=1)
            reply = clients[index].next_reply(timeout_s=5.0)
            if reply is not None and reply.msg_type is protocol.MessageType.ACTION_CHUNK:
                served[index] += 1

    try:
        threads = [threading.Thread(target=robot, args=(i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert min(served) >= 3, served
        assert max(served) <= 2 * min(served), served
        count, total = batch_sizes(server)
        assert total / count > 1.5  # mostly pairs: six robots always waiting
    finally:
        for client in clients:
            client.close()
        server.close()


class AnswersShort(RecordingPolicy):
    """Test double: a batched predict that answers for one robot fewer than it was given."""

    def predict_batch(self, items):
        return [np.zeros((8, 4), np.float32)] * (len(items) - 1)


def test_a_batched_pass_answering_for_fewer_robots_is_served_robot_by_robot(env):
    calls: list = []
    robots = [AnswersShort(index, calls) for index in range(3)]
    observation = env.reset(seed=0)
    results = predict_together([BatchItem(robot, observation) for robot in robots])
    assert [float(result[0, 0]) for result in results] == [0.0, 1.0, 2.0]
    assert [call[:2] for call in calls] == [("predict", 0), ("predict", 1), ("predict", 2)]
