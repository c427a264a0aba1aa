"""A small torch policy trained from oracle demonstrations: real inference, CPU, no pickle.

An MLP maps the (normalized) state to a whole action chunk, like the chunking heads of ACT or
pi0 do, only small. Weights, normalization and the policy's spec travel in one safetensors
file (tensors plus a JSON string in its metadata), which loads without executing code.
`python -m policies.train` makes the file; it is committed under policies/weights/.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from envs.base import EnvObservation
from harness.protocol.contract import ArraySpec, Contract
from policies.base import BatchItem
from policies.config import present_weights


class ChunkMLP(nn.Module):
    """state (in_dim) -> chunk (chunk_size x action_dim) in [-1, 1]."""

    def __init__(self, in_dim: int, chunk_size: int, action_dim: int, hidden: int = 256):
        super().__init__()
        self.chunk_size, self.action_dim = chunk_size, action_dim
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, chunk_size * action_dim),
        )

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        out = torch.tanh(self.net(state))
        return out.view(-1, self.chunk_size, self.action_dim)


def contract_metadata(spec: Contract, model_id: str | None = None) -> dict:
    """The JSON-ready fields of `spec` a weights file declares (model id, action names, state
    entries, control rate, chunk size); `contract_of` reads them back."""
    return {"model_id": spec.model_id if model_id is None else model_id,
            "action_names": list(spec.action_names),
            "state": {k: {"dtype": f.dtype, "shape": list(f.shape)} for k, f in spec.state.items()},
            "control_hz": spec.control_hz, "chunk_size": spec.chunk_size}


def contract_of(raw: dict) -> Contract:
    """The contract a weights file's JSON metadata declares (`contract_metadata`). Raises
    KeyError, TypeError or ValueError on anything else."""
    return Contract(model_id=raw["model_id"], action_names=tuple(raw["action_names"]),
                    state={k: ArraySpec(v["dtype"], tuple(v["shape"]))
                           for k, v in raw["state"].items()},
                    images={}, control_hz=float(raw["control_hz"]),
                    chunk_size=int(raw["chunk_size"]))


def weights_contract(path: Path, key: str, refusal: str) -> tuple[dict, Contract]:
    """The JSON metadata a safetensors weights file holds under `key`, and the contract it
    declares (`contract_metadata`). ValueError "policy.weights: <path> <refusal> (why)" if
    either is missing or malformed: how the torch and the flow policy read their files."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    try:
        raw = json.loads(metadata[key])
        return raw, contract_of(raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"policy.weights: {path} {refusal} ({exc})") from exc


def state_size(spec: Contract) -> int:
    """How many numbers `flatten_state` makes of the spec's state entries."""
    return sum(int(np.prod(f.shape)) for f in spec.state.values())


def flatten_state(state: dict[str, np.ndarray], keys: tuple[str, ...]) -> np.ndarray:
    """Concatenate the state entries the policy reads, in its spec's order."""
    return np.concatenate([np.asarray(state[k], np.float32).ravel() for k in keys])


class TorchPolicy:
    def __init__(self, spec: Contract, model: ChunkMLP, mean: np.ndarray, std: np.ndarray):
        self.spec = spec
        self.model = model.eval()
        self._keys = tuple(spec.state)
        self._mean = torch.as_tensor(mean, dtype=torch.float32)
        self._std = torch.as_tensor(std, dtype=torch.float32)

    def reset(self, *, seed: int) -> None:
        """Stateless between steps: nothing to clear."""

    def predict(self, observation: EnvObservation,
                committed: np.ndarray | None = None) -> np.ndarray:
        """Not delay-aware (`spec.delay_aware` is False): trained on chunks that start at
        their observation, it has no input for a committed prefix; the server gives it none."""
        state = torch.from_numpy(flatten_state(observation.state, self._keys))
        with torch.inference_mode():
            chunk = self.model(((state - self._mean) / self._std).unsqueeze(0))[0]
        return chunk.numpy().astype(np.float32, copy=True)

    def predict_batch(self, items: Sequence[BatchItem]) -> list[np.ndarray | Exception]:
        """Every robot's chunk in one forward pass (the network keeps no per-robot state)."""
        results: list[np.ndarray | Exception | None] = [None] * len(items)
        rows, served = [], []
        for index, item in enumerate(items):
            try:
                rows.append(flatten_state(item.observation.state, self._keys))
                served.append(index)
            except Exception as exc:  # noqa: BLE001 - that robot's input, not the batch's
                results[index] = exc
        if rows:
            states = torch.from_numpy(np.stack(rows))
            with torch.inference_mode():
                chunks = self.model((states - self._mean) / self._std)
            for index, chunk in zip(served, chunks, strict=True):
                results[index] = chunk.numpy().astype(np.float32, copy=True)
        return results

    def save(self, path: Path) -> None:
        spec = {**contract_metadata(self.spec), "hidden": self.model.net[0].out_features}
        tensors = {f"model.{k}": v.contiguous() for k, v in self.model.state_dict().items()}
        tensors["norm.mean"], tensors["norm.std"] = self._mean, self._std
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path), metadata={"spec": json.dumps(spec)})

    @classmethod
    def load(cls, path: str | Path) -> TorchPolicy:
        """Load weights saved by `save`; the policy's spec is the file's metadata, so no env
        is needed. Raises FileNotFoundError naming the file and the command that makes it, or
        ValueError if the file's metadata is not a policy spec."""
        path = present_weights(Path(path), env=Path(path).stem,
                               command="python -m policies.train")
        raw, spec = weights_contract(path, "spec", "has no valid policy spec")
        tensors = load_file(str(path))
        model = ChunkMLP(state_size(spec), spec.chunk_size, len(spec.action_names),
                         hidden=raw["hidden"])
        model.load_state_dict({k[len("model."):]: v for k, v in tensors.items()
                               if k.startswith("model.")})
        return cls(spec, model, tensors["norm.mean"].numpy(), tensors["norm.std"].numpy())
