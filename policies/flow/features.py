"""What the flow network reads from an observation: one fixed-length vector per kind of env.

A MuJoCo task has one contract, so its state entries, flattened in the contract's order, are
the features (`FlatState`). A LIBERO suite has ten tasks with different objects, and one model
serves them all: `LiberoScene` reads what the scripted oracle plans from (the hand, the
object the instruction names, the receptacle it names, how high the rest of the scene stands)
relative to the hand, plus which of the suite's instructions it is given, so the same numbers
mean the same thing in every task. The kind and its parameters travel in the weights file's
metadata (`metadata`, `features_from_metadata`); an unknown kind is an error listing the kinds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from envs.base import EnvObservation
from harness.protocol.contract import Contract
from policies.torch_policy import flatten_state, state_size


class StateFeatures(Protocol):
    """Observation -> the float32 vector the network is conditioned on."""

    dim: int

    def __call__(self, observation: EnvObservation) -> np.ndarray: ...

    def reset(self) -> None:
        """A new episode starts (a kind that remembers the episode's first observation)."""

    def check_task(self, env: str, task_id: int) -> None:
        """ValueError if these features cannot read task `task_id` of `env` (at start-up,
        not at the robot's first request)."""

    def metadata(self) -> dict:
        """JSON-ready: the kind (`kind`) and what `features_from_metadata` rebuilds it from."""


class FlatState:
    """The contract's state entries, concatenated in its order (one contract, one task)."""

    def __init__(self, keys: tuple[str, ...], dim: int):
        self.keys, self.dim = tuple(keys), dim

    @classmethod
    def of(cls, spec: Contract) -> FlatState:
        """Every state entry of `spec`, in its order."""
        return cls(tuple(spec.state), state_size(spec))

    def __call__(self, observation: EnvObservation) -> np.ndarray:
        return flatten_state(observation.state, self.keys)

    def reset(self) -> None:
        pass

    def check_task(self, env: str, task_id: int) -> None:
        pass  # the session's contract check compares the state entries

    def metadata(self) -> dict:
        return {"kind": "flat_state", "keys": list(self.keys), "dim": self.dim}


class UnknownInstruction(ValueError):
    """An instruction the model was not trained on, or one naming no object of the scene."""


class LiberoScene:
    """Task-independent features of a LIBERO pick-and-place observation (module docstring).

    The (object, receptacle) pair is resolved from the instruction at the episode's first
    observation and kept, as the oracle does ("the bowl on the stove" stops naming that bowl
    once it is carried); so is the object's starting height (whether it is lifted).
    """

    SCENE_DIM = 27

    def __init__(self, instructions: list[str]):
        self.instructions = list(instructions)
        self.dim = self.SCENE_DIM + len(self.instructions)
        self._task: tuple[str, str, str, float] | None = None

    def reset(self) -> None:
        self._task = None

    def metadata(self) -> dict:
        return {"kind": "libero_scene", "instructions": self.instructions}

    def check_task(self, env: str, task_id: int) -> None:
        from envs import LIBERO_SUITES

        if env not in LIBERO_SUITES:
            raise ValueError(f"trained on LIBERO instructions; env={env} is not a LIBERO suite")
        from envs.libero import suite_instructions

        self.task_index(suite_instructions(env)[task_id])

    def task_index(self, instruction: str) -> int:
        try:
            return self.instructions.index(instruction)
        except ValueError:
            raise UnknownInstruction(
                f"instruction {instruction!r} is not one of the {len(self.instructions)} this "
                "model was trained on") from None

    def _resolve(self, instruction: str, positions: dict[str, np.ndarray]
                 ) -> tuple[str, str, float]:
        from policies.libero_instructions import parse_instruction

        if self._task is None or self._task[0] != instruction:
            pair = parse_instruction(instruction, positions)
            if pair is None:
                raise UnknownInstruction(f"instruction {instruction!r} names no pick-and-place "
                                         "between objects of this scene")
            self._task = (instruction, *pair, float(positions[pair[0]][2]))
        return self._task[1:]

    def __call__(self, observation: EnvObservation) -> np.ndarray:
        from policies.libero_scene import rotation

        state = {k: np.asarray(v, np.float64) for k, v in observation.state.items()}
        positions = {k[:-4]: v for k, v in state.items()
                     if k.endswith("_pos") and not k.startswith("robot0")}
        task = np.zeros(len(self.instructions))
        task[self.task_index(observation.instruction)] = 1.0
        obj, goal, start_z = self._resolve(observation.instruction, positions)
        hand = state["robot0_eef_pos"]
        closing = rotation(state["robot0_eef_quat"])[:, 1]
        others_z = [p[2] for n, p in positions.items() if n not in (obj, goal)]
        fingers = state["robot0_gripper_qpos"]
        wrist = float(state["robot0_joint_pos"][-1])
        scene = np.concatenate([
            hand, closing[:2], [fingers[0] - fingers[1], np.sin(wrist), np.cos(wrist)],
            positions[obj] - hand, state[f"{obj}_quat"],
            positions[goal] - hand, positions[goal] - positions[obj], state[f"{goal}_quat"],
            [positions[obj][2] - start_z, max(others_z, default=hand[2]) - hand[2]]])
        return np.concatenate([scene, task]).astype(np.float32)


def _flat_state(raw: dict) -> StateFeatures:
    return FlatState(tuple(raw["keys"]), int(raw["dim"]))


def _libero_scene(raw: dict) -> StateFeatures:
    return LiberoScene(list(raw["instructions"]))


FEATURES: dict[str, Callable[[dict], StateFeatures]] = {
    "flat_state": _flat_state, "libero_scene": _libero_scene}


def features_from_metadata(raw: dict) -> StateFeatures:
    """The features a weights file declares. ValueError naming the kinds if unknown, KeyError
    if a field is missing."""
    kind = raw["kind"]
    if kind not in FEATURES:
        raise ValueError(f"features kind {kind!r}: expected one of {sorted(FEATURES)}")
    return FEATURES[kind](raw)
