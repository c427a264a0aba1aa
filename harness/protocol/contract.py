"""The one contract a robot and a model agree on before the first step.

An env declares the robot's side (`EnvSpec.contract`: the actions it executes, the state and
images it observes, its control rate), a policy declares the model's side (`Policy.spec`),
and the session open carries the client's to the server, which answers with its own. There is
one type for all three and one check, `check_contract`, so a mismatch fails at session open
naming the first field that disagrees, instead of showing up later as a silently wrong action.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DTYPE_NAMES = ("bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
               "float16", "float32", "float64")
"""Array dtypes a contract may declare and the wire may carry."""


class ContractMismatch(ValueError):
    """A model and a robot disagree on a field; the message names it and both values."""


@dataclass(frozen=True)
class ArraySpec:
    """Declared dtype (a name from DTYPE_NAMES, e.g. "float32") and shape of one state array."""

    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Contract:
    """What one side consumes and emits.

    On the robot's side `model_id` is "" (any model) unless the client pins one; its `state`
    lists everything the robot observes, of which a model reads a subset.
    """

    action_names: tuple[str, ...]
    """Order of the action vector's entries."""
    state: dict[str, ArraySpec]
    """Low-dimensional observation entries (proprioception, privileged object state)."""
    images: dict[str, tuple[int, int]] = field(default_factory=dict)
    """camera -> (height, width) of an RGB uint8 image."""
    control_hz: float = 20.0
    chunk_size: int = 0
    """Actions per chunk; chunk k is meant for ticks t, t+1, ..., t+chunk_size-1. A model's
    is >= 1; 0 on the robot's side accepts any."""
    model_id: str = ""
    delay_aware: bool = False
    """A model's: it plans from the committed prefix an observation carries (where the robot
    will be when its chunk starts), and its chunk starts after that prefix. A robot's: it
    sends the prefix. Not compared by `check_contract`: a client asking for delay-aware
    execution of a model that is not runs asynchronously and says so."""

    @property
    def action_dim(self) -> int:
        return len(self.action_names)

    def zero_arrays(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(state, images) of this contract's shapes, all zeros: an observation to warm a
        model with or to size a message by."""
        state = {k: np.zeros(f.shape, f.dtype) for k, f in self.state.items()}
        images = {c: np.zeros((h, w, 3), np.uint8) for c, (h, w) in self.images.items()}
        return state, images


def check_contract(model: Contract, robot: Contract) -> None:
    """Raise ContractMismatch naming the first field where `model` cannot drive `robot`."""
    if robot.model_id and robot.model_id != model.model_id:
        raise ContractMismatch(f"model_id: client expects {robot.model_id!r}, server hosts "
                               f"{model.model_id!r}")
    if model.action_names != robot.action_names:
        raise ContractMismatch(f"action_names: policy {list(model.action_names)} != env "
                               f"{list(robot.action_names)} (names and order must match)")
    for key, wanted in model.state.items():
        have = robot.state.get(key)
        if have is None:
            raise ContractMismatch(f"state[{key!r}]: the policy reads it, the env has only "
                                   f"{sorted(robot.state)}")
        if have != wanted:
            raise ContractMismatch(f"state[{key!r}]: policy expects {wanted}, env gives {have}")
    for camera, size in model.images.items():
        if camera not in robot.images:
            raise ContractMismatch(f"images[{camera!r}]: the policy needs it, the env renders "
                                   f"{sorted(robot.images)}")
        if tuple(robot.images[camera]) != tuple(size):
            raise ContractMismatch(f"images[{camera!r}]: policy expects {tuple(size)}, env "
                                   f"renders {tuple(robot.images[camera])}")
    if abs(model.control_hz - robot.control_hz) > 1e-9:
        raise ContractMismatch(f"control_hz: policy {model.control_hz} != env "
                               f"{robot.control_hz}")
    if model.chunk_size < 1:
        raise ContractMismatch(f"chunk_size: {model.chunk_size} must be >= 1")
    if robot.chunk_size and model.chunk_size != robot.chunk_size:
        raise ContractMismatch(f"chunk_size: client expects {robot.chunk_size}, policy returns "
                               f"{model.chunk_size}")
