"""A policy of your own, served by the harness without editing it (see examples/README.md).

A proportional controller for `mujoco_reach`: each chunk steps the hand toward the target,
`gain` of the remaining distance per tick, in the env's action units.
"""

import dataclasses

import numpy as np

MOVE_PER_ACTION_M = 0.02  # mujoco_reach: an action of 1.0 moves the hand 2 cm


class ReachPolicy:
    def __init__(self, task, gain: float = 0.5):
        # `task` (policies.PolicyTask) gives the robot's contract: declare the same one,
        # with our chunk size and a model id.
        self.spec = dataclasses.replace(task.robot_contract(), chunk_size=task.chunk_size,
                                        model_id=f"reach-p{gain}")
        self.gain = gain

    def reset(self, *, seed: int) -> None:
        pass  # nothing kept between episodes

    def predict(self, observation, committed=None) -> np.ndarray:
        hand = np.asarray(observation.state["hand_pos"], np.float64)
        target = np.asarray(observation.state["target_pos"], np.float64)
        chunk = []
        for _ in range(self.spec.chunk_size):
            step = np.clip(self.gain * (target - hand) / MOVE_PER_ACTION_M, -1.0, 1.0)
            hand = hand + step * MOVE_PER_ACTION_M
            chunk.append(step)
        return np.asarray(chunk, np.float32)
