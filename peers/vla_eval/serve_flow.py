"""Our flow policy's network served by vla-eval's own batched model server (vla-eval 0.8.0):
the other side of `python -m harness.bench.serving`'s head-to-head.

`FlowBatchServer` is a `PredictModelServer` with `max_batch_size` and `max_wait_time` (vla-eval
0.8.0's batching: its `predict_batch` is called with up to `max_batch_size` observations that
arrived within `max_wait_time` of the first). It runs what our server runs for the variant
without a prefix (`policy.rtc=none`): the same weights file, the same network
(`policies/flow/model.py`, loaded by path, so none of our package's other imports are
needed here), normalization, `denoise_steps` Euler steps from noise, clamp, the first
`chunk_size` actions. An observation carries the flat state vector in the order of the
weights file's contract (`state`); it answers the whole chunk (`chunk_size=None` in vla-eval:
no server-side buffering), as our server does.

Run (in peers/.venv-vlaeval-bench, `peers/setup.sh vla_eval_bench`):
    python serve_flow.py --address 127.0.0.1:PORT --args.weights W --args.max_batch_size 8 \
        --args.max_wait_time 0.005
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from vla_eval.model_servers.base import SessionContext
from vla_eval.model_servers.predict import PredictModelServer
from vla_eval.model_servers.serve import run_server

MODEL_PY = Path(__file__).resolve().parents[2] / "policies" / "flow" / "model.py"


def _flow_model():
    """Our `policies/flow/model.py`, imported from its file (it needs only torch)."""
    spec = importlib.util.spec_from_file_location("harness_flow_model", MODEL_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FlowBatchServer(PredictModelServer):
    def __init__(self, weights: str, max_batch_size: int = 1, max_wait_time: float = 0.01,
                 denoise_steps: int = 10, threads: int = 0) -> None:
        super().__init__(chunk_size=None, max_batch_size=max_batch_size,
                         max_wait_time=max_wait_time)
        if threads:
            torch.set_num_threads(threads)
        model = _flow_model()
        with safe_open(weights, "pt") as handle:
            meta = json.loads(handle.metadata()["flow_spec"])
        tensors = load_file(weights)
        self.mean, self.std = tensors["norm.mean"], tensors["norm.std"]
        self.chunk_actions = int(meta["chunk_size"])  # not chunk_size: vla-eval's own
        action_dim = len(meta["action_names"])
        self.net = model.VelocityNet(len(self.mean), int(meta["horizon"]), action_dim,
                                     hidden=int(meta["hidden"]), layers=int(meta["layers"]))
        self.net.load_state_dict({k[len("net."):]: v for k, v in tensors.items()
                                  if k.startswith("net.")})
        self.net.eval()
        self._sample = model.sample
        self.denoise_steps = denoise_steps
        self._generator = torch.Generator().manual_seed(0)

    def predict(self, obs: dict[str, Any], ctx: SessionContext) -> dict[str, Any]:
        return self.predict_batch([obs], [ctx])[0]

    def predict_batch(self, obs_batch: list[dict[str, Any]],
                      ctx_batch: list[SessionContext]) -> list[dict[str, Any]]:
        states = torch.from_numpy(np.stack([np.asarray(obs["state"], np.float32)
                                            for obs in obs_batch]))
        noise = torch.randn((len(obs_batch), self.net.horizon, self.net.action_dim),
                            generator=self._generator)
        with torch.inference_mode():
            planned = self._sample(self.net, (states - self.mean) / self.std, noise,
                                   self.denoise_steps)
        chunks = planned.clamp(-1.0, 1.0)[:, :self.chunk_actions].numpy().astype(np.float32)
        return [{"actions": chunk} for chunk in chunks]



if __name__ == "__main__":
    run_server(FlowBatchServer)
