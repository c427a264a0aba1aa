"""The one compatibility check: a model's contract against a robot's names the first field
that disagrees, with both values."""

from __future__ import annotations

import dataclasses

import pytest

from harness.protocol import ArraySpec, Contract, ContractMismatch, check_contract

ROBOT = Contract(action_names=("dx", "dy", "dz", "gripper"),
                 state={"hand_pos": ArraySpec("float32", (3,)),
                        "object_pos": ArraySpec("float32", (3,))},
                 images={"front": (64, 64)}, control_hz=20.0)
MODEL = Contract(action_names=("dx", "dy", "dz", "gripper"),
                 state={"object_pos": ArraySpec("float32", (3,))},
                 images={"front": (64, 64)}, control_hz=20.0, chunk_size=8, model_id="m")


def test_a_model_reading_a_subset_of_the_state_fits():
    assert check_contract(MODEL, ROBOT) is None
    assert check_contract(MODEL, dataclasses.replace(ROBOT, chunk_size=8, model_id="m")) is None


@pytest.mark.parametrize(("model", "robot", "match"), [
    ({"action_names": ("dy", "dx", "dz", "gripper")}, {}, "action_names: policy"),
    ({"state": {"object_pose": ArraySpec("float32", (7,))}}, {}, r"state\['object_pose'\]"),
    ({"state": {"object_pos": ArraySpec("float64", (3,))}}, {},
     r"state\['object_pos'\]: policy expects .*float64.* env gives .*float32"),
    ({"images": {"top": (64, 64)}}, {}, r"images\['top'\]: the policy needs it"),
    ({"images": {"front": (128, 128)}}, {}, r"expects \(128, 128\), env renders \(64, 64\)"),
    ({"control_hz": 10.0}, {}, "control_hz: policy 10.0 != env 20.0"),
    ({"chunk_size": 0}, {}, "chunk_size: 0 must be >= 1"),
    ({}, {"chunk_size": 16}, "chunk_size: client expects 16, policy returns 8"),
    ({}, {"model_id": "openvla-7b"}, "model_id: client expects 'openvla-7b', server hosts 'm'"),
])
def test_mismatch_raises_naming_the_field(model, robot, match):
    with pytest.raises(ContractMismatch, match=match):
        check_contract(dataclasses.replace(MODEL, **model), dataclasses.replace(ROBOT, **robot))


def test_the_robot_side_accepts_any_chunk_size_and_model():
    for chunk_size, model_id in ((1, "a"), (32, "b")):
        check_contract(dataclasses.replace(MODEL, chunk_size=chunk_size, model_id=model_id), ROBOT)
