"""A test double of an openpi model, served by openpi's own `WebsocketPolicyServer`
(`openpi-server` 0.1.0, the code of openpi's `src/openpi/serving/websocket_policy_server.py`).

`ActionFromObservationDouble` stands where openpi puts a trained `Policy`: no model, its
actions are exact functions of the observation, so the tests know every value the real
server must send back and can tell which field an adapter got wrong.

Run: `python serve.py --port PORT [--bare-metadata]`. The metadata frame declares
`action_dim` 7 and `action_horizon` 10 (the names of openpi's model config fields);
`--bare-metadata` sends what openpi's own LIBERO and DROID configs send instead (a
`reset_pose`, no action shape), so the client must take the shape from its config.
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
from openpi_client.base_policy import BasePolicy
from openpi_server import WebsocketPolicyServer

ACTION_DIM, HORIZON = 7, 10
METADATA = {"action_dim": ACTION_DIM, "action_horizon": HORIZON,
            "model": "ActionFromObservationDouble"}
BARE_METADATA = {"reset_pose": [0, -1.5, 1.5, 0, 0, 0]}


def image_feature(image: np.ndarray) -> float:
    """The image's mean plus its pixel (row 1, column 0, channel 2): a transposed or
    channel-swapped image changes it."""
    return float(image.mean()) + float(image[1, 0, 2])


class ActionFromObservationDouble(BasePolicy):
    """Test double of an openpi policy. `infer` returns `{"actions": a}`, `a` float64 of
    shape (horizon, 7) with

    - `a[t, j] = f(obs["observation/image"]) + f(obs["observation/wrist_image"]) / 2
      + state[j % len(state)] + 10 t + j` for j < 6 (`f` = `image_feature`, `state` =
      `obs["observation/state"]`);
    - `a[t, 6] = len(obs["prompt"])`.

    `horizon` is 10 unless the observation has a `horizon` key (a reply of another shape).
    It raises `RuntimeError("test double told to fail: <value>")` when the observation has
    a `fail` key (the real server then sends its traceback and closes with 1011), and
    sleeps `sleep_s` seconds first when it has that key (a model slower than the client's
    timeout).
    """

    def infer(self, obs: dict) -> dict:
        time.sleep(float(obs.get("sleep_s", 0.0)))
        if "fail" in obs:
            raise RuntimeError(f"test double told to fail: {obs['fail']}")
        horizon = int(obs.get("horizon", HORIZON))
        state = np.asarray(obs["observation/state"], np.float64)
        base = (image_feature(obs["observation/image"])
                + image_feature(obs["observation/wrist_image"]) / 2)
        actions = np.empty((horizon, ACTION_DIM))
        for t in range(horizon):
            for j in range(ACTION_DIM - 1):
                actions[t, j] = base + state[j % len(state)] + 10 * t + j
        actions[:, ACTION_DIM - 1] = len(obs["prompt"])
        return {"actions": actions}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bare-metadata", action="store_true",
                        help="declare no action shape (as openpi's own configs)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    server = WebsocketPolicyServer(ActionFromObservationDouble(), host=args.host,
                                   port=args.port,
                                   metadata=BARE_METADATA if args.bare_metadata else METADATA)
    server.serve_forever()


if __name__ == "__main__":
    main()
