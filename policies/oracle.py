"""Scripted oracle for the MuJoCo tasks: a planner that reads privileged state (object and
goal positions) and returns chunks planned ahead.

It plans like a learned chunking policy acts: from one observation it rolls its plan forward
`chunk_size` steps, assuming the hand follows every command exactly. A chunk that arrives
late is therefore wrong in the same way a late VLA chunk is: it steers from where the hand
*was*. Every decision is a function of the observation (hand position, finger gap, where the
box is, whether it is held), never of a step count, so the oracle recovers after a stall or a
dropped box and does not depend on how many of its chunks were executed.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from envs.base import EnvObservation
from envs.mujoco_tasks import BOX_HALF_M, MOVE_PER_STEP_M, TASKS

OPEN, CLOSE = -1.0, 1.0
NEAR_XY_M = 0.01
NEAR_Z_M = 0.005
FINGER_SPEED_M = 0.015
"""Modelled change of the finger gap per step when rolling a chunk forward."""
OPEN_GAP_M = 0.07
HOVER_Z, GRASP_Z, CARRY_Z, PLACE_Z = 0.12, 0.04, 0.14, 0.045
HELD_OFFSET_Z = GRASP_Z - BOX_HALF_M
"""Height of the hand above the centre of a box it holds."""


def xy_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Horizontal distance; math.hypot on two floats costs 1.0 us against np.linalg.norm's
    6.7 (measured), in a planner that runs it dozens of times per chunk."""
    return math.hypot(float(a[0] - b[0]), float(a[1] - b[1]))


@dataclass
class PickPlaceState:
    """What the planner knows, from an observation or from its own roll-forward."""

    hand: np.ndarray
    gap: float
    box: np.ndarray
    goal: np.ndarray

    def box_between_fingers(self) -> bool:
        return (xy_distance(self.hand, self.box) < 1.5 * NEAR_XY_M
                and self.hand[2] < self.box[2] + 0.035)

    def holding(self) -> bool:
        return self.box_between_fingers() and self.gap < 2 * BOX_HALF_M + 0.006


def pick_place_target(s: PickPlaceState) -> tuple[np.ndarray, float]:
    """Where the hand should go next and the gripper command, from the state alone."""

    def at(xy: np.ndarray, z: float) -> np.ndarray:
        return np.array([xy[0], xy[1], z])

    def far(xy: np.ndarray) -> bool:
        return xy_distance(s.hand, xy) > NEAR_XY_M

    if s.holding():
        if far(s.goal):
            if s.hand[2] < CARRY_Z - 2 * NEAR_Z_M:
                return at(s.hand, CARRY_Z), CLOSE  # lift before travelling
            return at(s.goal, CARRY_Z), CLOSE
        if s.hand[2] > PLACE_Z + NEAR_Z_M:
            return at(s.goal, PLACE_Z), CLOSE
        return at(s.goal, PLACE_Z), OPEN  # release
    on_goal = (xy_distance(s.box, s.goal) < NEAR_XY_M * 2.5
               and s.box[2] < BOX_HALF_M + NEAR_Z_M)
    if on_goal:
        return at(s.hand, HOVER_Z), OPEN  # done: retreat upwards
    if far(s.box):
        if s.hand[2] < HOVER_Z - 2 * NEAR_Z_M:
            return at(s.hand, HOVER_Z), OPEN  # rise before travelling
        return at(s.box, HOVER_Z), OPEN
    if s.hand[2] > GRASP_Z + NEAR_Z_M:
        if s.gap < OPEN_GAP_M - 0.01:
            return at(s.box, s.hand[2]), OPEN  # open fully before descending over the box
        return at(s.box, GRASP_Z), OPEN
    return at(s.box, GRASP_Z), CLOSE


def roll_forward(s: PickPlaceState, delta: np.ndarray, grip: float) -> PickPlaceState:
    """The state after one step of `delta` (in [-1, 1] per axis) and gripper command `grip`,
    assuming the hand follows it exactly: how a chunk is planned and a committed prefix
    rolled through."""
    held = s.holding()
    closing = grip > 0.0
    hand = s.hand + np.clip(delta, -1.0, 1.0) * MOVE_PER_STEP_M
    if closing:
        floor = 2 * BOX_HALF_M if s.box_between_fingers() else 0.0
        gap = max(floor, s.gap - FINGER_SPEED_M)
    else:
        gap = min(OPEN_GAP_M, s.gap + FINGER_SPEED_M)
    box = hand - np.array([0, 0, HELD_OFFSET_Z]) if held and closing else s.box
    if not (held and closing) and s.box[2] > BOX_HALF_M:
        box = np.array([box[0], box[1], BOX_HALF_M])  # released: it lands
    return PickPlaceState(hand, gap, box, s.goal)


class MujocoOracle:
    """Privileged planner for `mujoco_reach` and `mujoco_pick_place`. Delay-aware: given
    the committed prefix, it rolls its state through it and plans from where the hand will
    be when the chunk starts."""

    def __init__(self, task: str, *, chunk_size: int = 8, model_id: str = "oracle",
                 max_speed: float = 1.0):
        """`max_speed` (0, 1]: the largest action it commands; below 1 it moves slower
        (demonstrations of varied pace, `policies.flow.train`)."""
        if task not in TASKS:
            raise ValueError(f"env: the MuJoCo oracle cannot solve {task!r}")
        if not 0.0 < max_speed <= 1.0:
            raise ValueError(f"max_speed={max_speed}: must be in (0, 1]")
        self._pick_place = task == "mujoco_pick_place"
        self.max_speed = max_speed
        self.spec = dataclasses.replace(TASKS[task].contract(), chunk_size=chunk_size,
                                        model_id=model_id, delay_aware=True)

    def reset(self, *, seed: int) -> None:
        """Nothing to clear: every decision is a function of the observation."""

    def predict(self, observation: EnvObservation,
                committed: np.ndarray | None = None) -> np.ndarray:
        state = {k: np.asarray(v, np.float64) for k, v in observation.state.items()}
        prefix = np.zeros((0, len(self.spec.action_names))) if committed is None else (
            np.asarray(committed, np.float64))
        actions = np.zeros((self.spec.chunk_size, len(self.spec.action_names)), np.float32)
        if not self._pick_place:
            hand = state["hand_pos"]
            for delta in prefix:
                hand = hand + np.clip(delta, -1.0, 1.0) * MOVE_PER_STEP_M
            for step in range(self.spec.chunk_size):
                delta = np.clip((state["target_pos"] - hand) / MOVE_PER_STEP_M,
                                -self.max_speed, self.max_speed)
                hand = hand + delta * MOVE_PER_STEP_M
                actions[step] = delta
            return actions
        sim = PickPlaceState(state["hand_pos"], float(state["gripper_opening"][0]),
                             state["object_pos"], state["goal_pos"])
        for action in prefix:
            sim = roll_forward(sim, action[:3], float(action[3]))
        for step in range(self.spec.chunk_size):
            target, grip = pick_place_target(sim)
            delta = np.clip((target - sim.hand) / MOVE_PER_STEP_M, -self.max_speed,
                            self.max_speed)
            actions[step] = [*delta, grip]
            sim = roll_forward(sim, delta, grip)
        return actions


def make_mujoco_oracle(env: str, task_id: int = 0, *, chunk_size: int = 8) -> MujocoOracle:
    """The oracle of MuJoCo task `env` (`EnvFamily.oracle` of the MuJoCo tasks: they have one
    task each, so `task_id` is always 0)."""
    return MujocoOracle(env, chunk_size=chunk_size)
