"""One flow model for every task of a LIBERO suite (policies/flow/features.py, libero.py):
the features mean the same in every task, the model loads for any task with that task's
contract, and what it was not trained for is refused by name. Real LIBERO scenes (the BDDL
contracts, and the simulator where a test needs an observation); the networks are small and
untrained (only what they read is under test)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from envs.base import EnvObservation
from envs.libero import suite_instructions, task_contract
from policies.config import PolicyConfigError, default_flow_weights
from policies.flow.features import (
    FlatState,
    LiberoScene,
    UnknownInstruction,
    features_from_metadata,
)
from policies.flow.libero import libero_rollouts
from policies.flow.model import VelocityNet
from policies.flow.policy import FlowPolicy
from policies.registry import PolicyTask, policy_entry
from policies.torch_policy import state_size

SUITE = "libero_object"


@pytest.fixture(scope="module")
def instructions() -> list[str]:
    return suite_instructions(SUITE)


def untrained(features: LiberoScene, rtc: str = "guidance") -> FlowPolicy:
    torch.manual_seed(0)
    spec = task_contract(SUITE, 0)
    net = VelocityNet(features.dim, 16, spec.action_dim, hidden=16, layers=1)
    return FlowPolicy(dataclasses.replace(spec, chunk_size=8), net,
                      np.zeros(features.dim), np.ones(features.dim), rtc=rtc, features=features)


def scene(task: int, instruction: str) -> EnvObservation:
    """A made-up observation of task `task`'s objects, each at a position of its own."""
    state = {}
    for i, (key, spec) in enumerate(task_contract(SUITE, task).state.items()):
        state[key] = np.full(spec.shape, 0.01 * (i + 1), np.float32)
    state["robot0_eef_quat"] = np.array([0, 0, 0, 1], np.float32)
    return EnvObservation(state, {}, instruction)


def test_the_features_have_one_length_and_say_which_task(instructions):
    features = LiberoScene(instructions)
    assert len(instructions) == 10 and len(set(instructions)) == 10
    rows = []
    for task in (0, 7):
        observation = scene(task, instructions[task])
        features.reset()
        row = features(observation)
        rows.append(row)
        assert row.shape == (features.dim,) == (LiberoScene.SCENE_DIM + 10,)
        one_hot = row[LiberoScene.SCENE_DIM:]
        assert one_hot[task] == 1.0 and one_hot.sum() == 1.0
        # The object the instruction names, relative to the hand.
        obj, _, _ = features._resolve(observation.instruction, {
            k[:-4]: v for k, v in observation.state.items()
            if k.endswith("_pos") and not k.startswith("robot0")})
        expected = observation.state[f"{obj}_pos"] - observation.state["robot0_eef_pos"]
        np.testing.assert_allclose(row[8:11], expected, atol=1e-6)
    assert not np.array_equal(rows[0], rows[1])


def test_an_instruction_it_was_not_trained_on_is_refused_by_name(instructions):
    features = LiberoScene(instructions[:3])
    with pytest.raises(UnknownInstruction, match="not one of the 3"):
        features(scene(7, instructions[7]))
    with pytest.raises(UnknownInstruction, match="names no pick-and-place"):
        LiberoScene(["open the top drawer"])(scene(0, "open the top drawer"))


def test_an_unknown_kind_of_features_is_an_error_listing_the_kinds():
    with pytest.raises(ValueError, match=r"'pixels'.*\['flat_state', 'libero_scene'\]"):
        features_from_metadata({"kind": "pixels"})


def test_one_file_loads_for_any_task_with_that_tasks_contract(tmp_path, instructions):
    path = tmp_path / "flow.safetensors"
    trained = untrained(LiberoScene(instructions))
    trained.save(path)
    for task in (0, 4):
        loaded = FlowPolicy.load(path, task_state=task_contract(SUITE, task).state)
        assert isinstance(loaded.features, LiberoScene)
        assert loaded.features.instructions == instructions
        assert loaded.spec.state == task_contract(SUITE, task).state
        loaded.reset(seed=1)
        trained.reset(seed=1)
        observation = scene(task, instructions[task])
        assert np.array_equal(loaded.predict(observation), trained.predict(observation))
    assert task_contract(SUITE, 0).state != task_contract(SUITE, 4).state


def test_a_file_from_before_features_were_named_reads_the_flat_state():
    loaded = FlowPolicy.load(default_flow_weights("mujoco_pick_place"))
    assert isinstance(loaded.features, FlatState)
    assert loaded.features.keys == tuple(loaded.spec.state)


def test_features_that_do_not_fit_the_network_are_refused(instructions):
    features = LiberoScene(instructions)
    net = VelocityNet(features.dim + 1, 16, 7, hidden=8, layers=1)
    with pytest.raises(ValueError, match=f"features of {features.dim} numbers for a network "
                                         f"that reads {features.dim + 1}"):
        FlowPolicy(task_contract(SUITE, 0), net, np.zeros(features.dim + 1),
                   np.ones(features.dim + 1), features=features)
    flat = state_size(task_contract(SUITE, 0))  # no features given: the contract's, flat
    with pytest.raises(ValueError, match=f"features of {flat} numbers for a network that "
                                         f"reads {features.dim + 1}"):
        FlowPolicy(task_contract(SUITE, 0), net, np.zeros(features.dim + 1),
                   np.ones(features.dim + 1))


def test_missing_libero_weights_name_the_command_that_makes_them(tmp_path):
    config = policy_entry("flow").config_class(weights=str(tmp_path / f"flow_{SUITE}.safetensors"))
    with pytest.raises(PolicyConfigError, match=rf"policies.flow.train --env {SUITE}`"):
        policy_entry("flow").check(config, SUITE)
    with pytest.raises(PolicyConfigError, match="trains .*libero_object.* only; there are no "
                                                "weights for env=libero_goal"):
        config = policy_entry("flow").config_class(
            weights=str(tmp_path / "flow_libero_goal.safetensors"))
        policy_entry("flow").check(config, "libero_goal")


@pytest.mark.slow(20)
def test_delayed_rollouts_label_each_task_by_its_own_oracle(instructions):
    """On the real simulator: each task contributes its states, and the one-hot of every
    sample names the task it came from."""
    policy = untrained(LiberoScene(instructions), rtc="training")
    states, chunks, delays = libero_rollouts(SUITE, policy, episodes_per_task=1, seed=3,
                                             max_delay=4, tasks=(2, 7), max_steps=6)
    tasks = states[:, LiberoScene.SCENE_DIM:].argmax(1)
    assert list(tasks) == [2] * 6 + [7] * 6
    assert chunks.shape == (12, 16, 7) and set(np.unique(delays)) <= set(range(5))
    assert np.all(np.abs(chunks) <= 1.0)


def test_a_scene_model_warms_itself_not_on_the_servers_blank_observation(instructions):
    """The server warms a policy on zeros with no instruction, which these features refuse
    (the policy server exited at start-up on it); the model warms itself at load instead."""
    policy = untrained(LiberoScene(instructions), rtc="training")
    assert policy.warm_up is False
    state, images = policy.spec.zero_arrays()
    with pytest.raises(UnknownInstruction, match="instruction '' is not one of the 10"):
        policy.predict(EnvObservation(state, images, ""))
    assert FlowPolicy.load(default_flow_weights("mujoco_pick_place")).warm_up is True


def test_a_model_is_refused_at_build_for_a_task_it_was_not_trained_on(tmp_path, instructions):
    path = tmp_path / "flow.safetensors"
    untrained(LiberoScene(instructions[:4])).save(path)
    config = policy_entry("flow").config_class(weights=str(path))
    build = policy_entry("flow").build
    assert build(config, PolicyTask(SUITE, 3)).spec.state == task_contract(SUITE, 3).state
    with pytest.raises(PolicyConfigError, match=r"policy.weights: instruction .* is not one of "
                                                r"the 4 this model was trained on"):
        build(config, PolicyTask(SUITE, 4))
    with pytest.raises(PolicyConfigError, match="env=mujoco_pick_place is not a LIBERO suite"):
        build(config, PolicyTask("mujoco_pick_place", 0))


@pytest.mark.slow(15)
def test_the_shipped_model_solves_tasks_from_initial_states_it_never_trained_on():
    """The committed weights (`python -m policies.flow.train --env libero_object`, initial
    states 10-49), in-process on initial state 0 of two tasks with other objects and
    receptacles: each is solved, in about the oracle's number of steps (it needs ~130)."""
    from harness.jobs.evaluate import evaluate_tasks

    config = policy_entry("flow").config_class()
    results = evaluate_tasks(SUITE, config, tasks="2,9", episodes_per_task=1)
    assert [(task, outcome.success) for task, outcome in results] == [(2, True), (9, True)]
    assert all(outcome.steps < 200 for _, outcome in results)
