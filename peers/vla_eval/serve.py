"""A test double of a vla-eval model, served by vla-eval's own `run_server` (vla-eval 0.8.0).

`ActionFromObservationDouble` is a `PredictModelServer` with no model: its actions are
exact functions of the observation and of the session's episode bookkeeping, so the tests
know every value the real server must send back and can tell which field an adapter got
wrong. It declares an action spec (position 3 + rotation 3 + gripper 1 = 7 dims) and an
observation spec, which vla-eval's server puts in its HELLO reply.

Run: `python serve.py --address 127.0.0.1:PORT [--args.chunk_size 10]` (with chunk_size,
vla-eval's server buffers each predicted chunk and answers one action per observation).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from vla_eval.model_servers.base import SessionContext
from vla_eval.model_servers.predict import PredictModelServer
from vla_eval.model_servers.serve import run_server
from vla_eval.specs import (
    GRIPPER_CLOSE_POS,
    IMAGE_RGB,
    LANGUAGE,
    POSITION_DELTA,
    ROTATION_AA,
    DimSpec,
)

PRIMARY, WRIST = "agentview", "wrist"


def image_feature(image: np.ndarray) -> float:
    """The image's mean plus its pixel (row 1, column 0, channel 2): a transposed or
    channel-swapped image changes it."""
    return float(image.mean()) + float(image[1, 0, 2])


class ActionFromObservationDouble(PredictModelServer):
    """Test double of a model. `predict` returns a (horizon, 7) float32 chunk `a` with

    - `a[t, j] = f(images[agentview]) + f(images[wrist]) / 2 + state[j % len(state)]
      + 10 t + j` for j < 5 (`f` = `image_feature`);
    - `a[t, 5] = 1000 len(task name of the last EPISODE_START) + 100 (EPISODE_ENDs seen on
      this session) + ctx.step`;
    - `a[t, 6] = len(task_description)`.

    It raises `RuntimeError("test double told to fail: <value>")` when the observation has
    a `fail` key (the real server then answers with an ERROR message), and raises from
    `on_episode_start` when the task name is `fail` (an ERROR for the EPISODE_START). It
    sleeps `sleep_s` seconds first when the observation has that key (a model slower than
    the client's timeout). An observation's `horizon` key sets that chunk's length (a model
    whose chunk is not the one configured).
    """

    def __init__(self, horizon: int = 10, chunk_size: int | None = None) -> None:
        super().__init__(chunk_size=chunk_size)
        self.horizon = horizon
        self._task_names: dict[str, str] = {}
        self._episodes_ended: dict[str, int] = {}

    def predict(self, obs: dict[str, Any], ctx: SessionContext) -> dict[str, Any]:
        time.sleep(float(obs.get("sleep_s", 0.0)))
        if "fail" in obs:
            raise RuntimeError(f"test double told to fail: {obs['fail']}")
        images, state = obs["images"], np.asarray(obs["state"], np.float64)
        base = image_feature(images[PRIMARY]) + image_feature(images[WRIST]) / 2
        horizon = int(obs.get("horizon", self.horizon))
        actions = np.zeros((horizon, 7))
        for t in range(horizon):
            for j in range(5):
                actions[t, j] = base + state[j % len(state)] + 10 * t + j
        sid = ctx.session_id
        actions[:, 5] = (1000 * len(self._task_names[sid]) + 100 * self._episodes_ended.get(sid, 0)
                         + ctx.step)
        actions[:, 6] = len(obs["task_description"])
        return {"actions": actions.astype(np.float32)}

    async def on_episode_start(self, config: dict[str, Any], ctx: SessionContext) -> None:
        if config["task"]["name"] == "fail":
            raise RuntimeError("test double told to fail the episode start")
        self._task_names[ctx.session_id] = config["task"]["name"]
        await super().on_episode_start(config, ctx)

    async def on_episode_end(self, result: dict[str, Any], ctx: SessionContext) -> None:
        sid = ctx.session_id
        self._episodes_ended[sid] = self._episodes_ended.get(sid, 0) + 1
        await super().on_episode_end(result, ctx)

    def get_action_spec(self) -> dict[str, DimSpec]:
        return {"position": POSITION_DELTA, "rotation": ROTATION_AA,
                "gripper": GRIPPER_CLOSE_POS}

    def get_observation_spec(self) -> dict[str, DimSpec]:
        return {PRIMARY: IMAGE_RGB, WRIST: IMAGE_RGB,
                "state": DimSpec("state", 8, "eef_pos3_axisangle3_gripper2"),
                "language": LANGUAGE}


if __name__ == "__main__":
    run_server(ActionFromObservationDouble)
