"""The policy server checks every observation against the session's contract before the
policy sees it, and answers a stream message that is not an observation as a protocol error."""

from __future__ import annotations

import dataclasses
import json
import logging
import re

import numpy as np
import pytest

from envs.base import EnvObservation
from harness import protocol
from tests.conftest import wait_until
from tests.server.wire import RawClient, RecordingFactory, contract, counter, oracle, start_server

pytestmark = pytest.mark.network

CAMERA = "wrist"
SPEC = dataclasses.replace(oracle().spec, images={CAMERA: (8, 6)})
"""The oracle's contract plus one camera, so that images are checked too."""


def valid_observation(env) -> EnvObservation:
    observation = env.reset(seed=0)
    return EnvObservation(dict(observation.state), {CAMERA: np.zeros((8, 6, 3), np.uint8)},
                          "checked")


def with_state(key: str, value: np.ndarray | None):
    def change(observation: EnvObservation) -> EnvObservation:
        state = dict(observation.state)
        if value is None:
            del state[key]
        else:
            state[key] = value
        return EnvObservation(state, observation.images, observation.instruction)
    return change


def with_image(value: np.ndarray | None):
    def change(observation: EnvObservation) -> EnvObservation:
        images = {} if value is None else {CAMERA: value}
        return EnvObservation(observation.state, images, observation.instruction)
    return change


F32 = np.float32
CASES = [
    # A NaN in one coordinate.
    pytest.param(with_state("hand_pos", np.array([0.1, np.nan, 0.2], F32)), "non_finite",
                 r"state\['hand_pos'\] has 1 non-finite value", id="nan"),
    # +inf and -inf.
    pytest.param(with_state("object_pos", np.array([np.inf, 0.0, -np.inf], F32)), "non_finite",
                 r"state\['object_pos'\] has 2 non-finite values", id="inf"),
    # A key the policy reads is absent (extra keys would be fine).
    pytest.param(with_state("goal_pos", None), "missing", r"state\['goal_pos'\] is missing",
                 id="missing_state"),
    # One entry too many.
    pytest.param(with_state("hand_pos", np.zeros(4, F32)), "shape",
                 r"state\['hand_pos'\] has shape \(4,\), the contract says \(3,\)",
                 id="shape_state"),
    # Right shape, wrong dtype.
    pytest.param(with_state("gripper_opening", np.zeros(1, np.float64)), "dtype",
                 r"state\['gripper_opening'\] has dtype float64, the contract says float32",
                 id="dtype_state"),
    # The camera the policy needs is absent.
    pytest.param(with_image(None), "missing", r"images\['wrist'\] is missing",
                 id="missing_image"),
    # Transposed image.
    pytest.param(with_image(np.zeros((6, 8, 3), np.uint8)), "shape",
                 r"images\['wrist'\] has shape \(6, 8, 3\), the contract says \(8, 6, 3\)",
                 id="shape_image"),
]


@pytest.fixture(params=["local", "zmq"])
def checked(request, env):
    factory = RecordingFactory(spec=SPEC)
    server, config = start_server(env, kind=request.param, max_sessions=1,
                                  policy_factory=factory)
    client = RawClient(config)
    assert client.open(contract(env, images=dict(SPEC.images))).msg_type is \
        protocol.MessageType.SESSION_OK
    yield server, client, factory
    client.close()
    server.close()


@pytest.mark.parametrize(("change", "reason", "detail"), CASES)
def test_an_observation_breaking_the_contract_is_answered_and_not_predicted(
        checked, env, caplog, change, reason, detail):
    caplog.set_level(logging.INFO, logger="harness.audit")
    server, client, factory = checked
    client.observe(change(valid_observation(env)), seq=11, episode=0)
    reply = client.next_reply()
    assert reply.msg_type is protocol.MessageType.ERROR
    assert reply.body.code == protocol.ERROR_CONTRACT
    assert re.search(detail, reply.body.detail), reply.body.detail
    assert (reply.seq, reply.episode, reply.epoch, reply.client_ns) == (
        11, 0, client.epoch, 11_000)
    assert counter(server, "policy_observations_rejected", reason=reason) == 1
    assert server.status()["observations_rejected"] == 1
    assert factory.predictions("checked") == []

    def audited() -> list[tuple[int, str, str]]:  # written just after the reply is sent
        lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "harness.audit"]
        return [(a["seq"], a["outcome"], a["reason"]) for a in lines if a["type"] == "OBSERVATION"]

    wait_until(audited, 5.0, "the audit line")
    assert audited() == [(11, "rejected_observation", reason)]

    client.observe(valid_observation(env), seq=12, episode=0)  # the session goes on
    reply = client.next_reply()
    assert (reply.msg_type, reply.seq) == (protocol.MessageType.ACTION_CHUNK, 12)
    assert factory.predictions("checked") == [0]


def test_extra_state_keys_are_allowed(checked, env):
    server, client, factory = checked
    observation = with_state("cube_colour", np.array([np.nan], F32))(valid_observation(env))
    client.observe(observation, seq=1, episode=0)
    assert client.next_reply().msg_type is protocol.MessageType.ACTION_CHUNK
    assert server.status()["observations_rejected"] == 0


@pytest.mark.parametrize("body", [
    protocol.Reset(),
    protocol.ActionChunk(np.zeros((8, 4), F32), 1, 0, 0, "oracle"),
], ids=["reset", "action_chunk"])
def test_a_stream_message_that_is_not_an_observation_is_a_protocol_error(checked, env, body):
    server, client, factory = checked
    client.publish(body, seq=5, episode=0)
    reply = client.next_reply()
    assert reply.msg_type is protocol.MessageType.ERROR
    assert reply.body.code == protocol.ERROR_PROTOCOL
    assert type(body).__name__.upper().replace("ACTIONCHUNK", "ACTION_CHUNK") in reply.body.detail
    assert (reply.seq, reply.epoch) == (5, client.epoch)
    client.observe(valid_observation(env), seq=6, episode=0)  # the session is intact
    assert client.next_reply().msg_type is protocol.MessageType.ACTION_CHUNK


def test_an_observation_without_a_session_is_still_session_unknown(checked, env):
    server, client, factory = checked
    client.epoch += 1  # an epoch the server never issued
    client.observe(valid_observation(env), seq=1, episode=0)
    assert client.next_reply().body.code == protocol.SESSION_UNKNOWN
