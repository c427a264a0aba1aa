"""`RemotePolicy`: the policy our server hosts for an external model. Its spec is the robot's
contract narrowed to what the model family reads, with the external chunk cut to
`policy.chunk_size`; a reply it must not execute (wrong shape, non-finite) is an error, and
the episode's start reaches the adapter with the first observation's prompt."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from envs import robot_contract
from envs.base import EnvObservation
from policies.remote.base import ModelInput, RemoteError, RemoteSpec, SpecMismatch
from policies.remote.policy import RemotePolicy


class ScriptedAdapter:
    """Test double of an adapter: answers each act with the next of `replies`."""

    def __init__(self, spec: RemoteSpec, replies: list[np.ndarray]) -> None:
        self.spec, self.replies, self.calls = spec, list(replies), []

    def connect(self, timeout_s: float) -> RemoteSpec:
        self.calls.append(("connect", timeout_s))
        return self.spec

    def reset(self, *, prompt: str) -> None:
        self.calls.append(("reset", prompt))

    def act(self, model_input: ModelInput) -> np.ndarray:
        self.calls.append(("act", model_input.prompt))
        return self.replies.pop(0)

    def close(self) -> None:
        self.calls.append(("close",))


class StateOnly:
    """Test double of a convention: reads the hand position, passes actions through."""

    def reads(self):
        return ("hand_pos",), ()

    def model_input(self, observation: EnvObservation) -> ModelInput:
        return ModelInput({}, observation.state["hand_pos"], observation.instruction)

    def env_actions(self, raw: np.ndarray) -> np.ndarray:
        return raw


ROBOT = robot_contract("mujoco_reach", 0, cameras=(), image_size=(64, 64))
SPEC = RemoteSpec(action_dim=ROBOT.action_dim, chunk_size=10, model_id="pi0-test")


def observation(instruction: str = "reach the target") -> EnvObservation:
    state = {k: np.zeros(v.shape, np.float32) for k, v in ROBOT.state.items()}
    return EnvObservation(state, {}, instruction)


def test_the_spec_is_the_robots_contract_narrowed_with_the_models_chunk_and_id():
    policy = RemotePolicy(ScriptedAdapter(SPEC, []), StateOnly(), ROBOT, chunk_size=4,
                          connect_timeout_s=3.0)
    assert list(policy.spec.state) == ["hand_pos"] and policy.spec.images == {}
    assert (policy.spec.chunk_size, policy.spec.model_id) == (4, "pi0-test")
    assert policy.spec.action_names == ROBOT.action_names


def test_a_reply_is_cut_to_the_chunk_used_and_the_episode_starts_with_its_prompt():
    chunk = np.arange(10 * ROBOT.action_dim, dtype=np.float32).reshape(10, -1) / 100
    adapter = ScriptedAdapter(SPEC, [chunk, chunk, chunk])
    policy = RemotePolicy(adapter, StateOnly(), ROBOT, chunk_size=4, connect_timeout_s=3.0)
    policy.reset(seed=1)
    np.testing.assert_array_equal(policy.predict(observation("go")), chunk[:4])
    policy.predict(observation("go"))
    policy.reset(seed=2)
    policy.predict(observation("again"))
    assert [c for c in adapter.calls if c[0] == "reset"] == [("reset", "go"), ("reset", "again")]


@pytest.mark.parametrize(("reply", "problem"), [
    (np.zeros((9, ROBOT.action_dim), np.float32), "reply of shape"),
    (np.full((10, ROBOT.action_dim), np.nan, np.float32), "non-finite"),
])
def test_a_reply_the_robot_must_not_execute_is_an_error(reply, problem):
    policy = RemotePolicy(ScriptedAdapter(SPEC, [reply]), StateOnly(), ROBOT, chunk_size=4,
                          connect_timeout_s=3.0)
    with pytest.raises(RemoteError, match=problem):
        policy.predict(observation())


def test_a_convention_reading_what_the_env_does_not_give_fails_naming_it():
    class NeedsCamera(StateOnly):
        def reads(self):
            return (), ("agentview",)

    with pytest.raises(ValueError, match=r"\['agentview'\].*set env.cameras"):
        RemotePolicy(ScriptedAdapter(SPEC, []), NeedsCamera(), ROBOT, chunk_size=4,
                     connect_timeout_s=3.0)


def test_a_model_of_another_action_width_is_refused_before_any_session():
    wide = RemoteSpec(action_dim=ROBOT.action_dim + 4, chunk_size=10, model_id="pi0-7d")
    with pytest.raises(SpecMismatch, match=r"action_dim: the external model 'pi0-7d' returns "
                                           rf"{ROBOT.action_dim + 4}, the env takes "
                                           rf"{ROBOT.action_dim}"):
        RemotePolicy(ScriptedAdapter(wide, []), StateOnly(), ROBOT, chunk_size=4,
                     connect_timeout_s=3.0)


def test_our_server_does_not_warm_a_remote_model_with_a_blank_request():
    """Warm-up predicted once on a blank observation (empty instruction): for a remote
    model that was a garbage request to someone's server at every start (OpenVLA then
    templated an empty prompt). A local policy is still warmed."""
    from harness.server.policy_server import PolicyServer
    from transports import LocalTransportConfig, make_server

    adapters = []

    def remote():
        adapters.append(ScriptedAdapter(SPEC, []))
        return RemotePolicy(adapters[-1], StateOnly(), ROBOT, chunk_size=4,
                            connect_timeout_s=3.0)

    server = PolicyServer(make_server(LocalTransportConfig(name="no-warm-remote")), remote,
                          max_sessions=2)
    server.start()
    try:
        assert [[c[0] for c in a.calls] for a in adapters] == [["connect"], ["connect"]]
    finally:
        server.close()

    warmed = []

    class Local:
        spec = dataclasses.replace(ROBOT, chunk_size=4, model_id="local")

        def reset(self, *, seed):
            pass

        def predict(self, observation):
            warmed.append(observation.instruction)
            return np.zeros((4, ROBOT.action_dim), np.float32)

    server = PolicyServer(make_server(LocalTransportConfig(name="warm-local")), Local)
    server.start()
    server.close()
    assert warmed == [""]
