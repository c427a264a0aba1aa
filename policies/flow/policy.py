"""The flow-matching chunk policy the server hosts, in three variants of one trained model.

`rtc=none` ignores any prefix (it is not delay-aware: the server gives it none, and its chunk
starts at the observation), `rtc=guidance` freezes the committed prefix by real-time
chunking's guided inpainting, `rtc=training` gives the prefix to the network as clean actions
(it was trained so). The model plans `horizon` actions from the observation; a delay-aware
variant returns the `chunk_size` that follow the d committed ones, so `horizon` is
2 x `chunk_size` (the server refuses a prefix longer than the chunk).

Weights, normalization, the contract and what the network reads from an observation
(`policies.flow.features`) travel in one safetensors file (tensors plus JSON metadata): it
loads without executing code and without an env. One LIBERO model serves every task of its
suite: loaded for a task, it takes that task's contract (`load(..., task_state=)`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from envs.base import EnvObservation
from harness.protocol.contract import ArraySpec, Contract
from policies.base import BatchItem
from policies.config import flow_trained, present_weights
from policies.flow.config import checked_rtc
from policies.flow.features import FlatState, StateFeatures, features_from_metadata
from policies.flow.model import (
    VelocityNet,
    prefix_weights,
    sample,
    sample_conditioned_rows,
    sample_guided,
)
from policies.torch_policy import contract_metadata, weights_contract


class FlowPolicy:
    def __init__(self, spec: Contract, net: VelocityNet, mean: np.ndarray, std: np.ndarray, *,
                 rtc: str = "guidance", denoise_steps: int = 10, guidance_weight: float = 10.0,
                 execution_horizon: int | None = None, features: StateFeatures | None = None):
        checked_rtc(rtc)
        self.net = net.eval()
        self.rtc = rtc
        self.spec = Contract(action_names=spec.action_names, state=spec.state, images={},
                             control_hz=spec.control_hz, chunk_size=spec.chunk_size,
                             model_id=f"{spec.model_id}+{rtc}", delay_aware=rtc != "none")
        self.horizon = net.horizon
        self.denoise_steps = denoise_steps
        self.guidance_weight = guidance_weight
        self.execution_horizon = execution_horizon or spec.chunk_size
        self.features = features or FlatState.of(spec)
        if self.features.dim != net.state_dim:
            raise ValueError(f"features of {self.features.dim} numbers for a network that "
                             f"reads {net.state_dim}")
        self.mean, self.std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        self._mean = torch.as_tensor(self.mean)
        self._std = torch.as_tensor(self.std)
        self._generator = torch.Generator()
        self._no_prefix = torch.zeros((0, self.spec.action_dim))
        """The prefix of a request that has none (never written: it has no rows)."""
        self._previous: torch.Tensor | None = None
        """The last chunk planned (horizon x A, from its observation), for RTC's overlap."""
        self.warm_up = isinstance(self.features, FlatState)
        """Whether the server may warm this policy on a blank observation (zeros, no
        instruction): features that read the instruction cannot, so `_warm` does it here."""
        if rtc == "guidance" or not self.warm_up:  # torch's first backward pass costs ~0.4 s:
            self._warm()  # not on a robot's first request (its round trip sets its delay)
        self.reset(seed=0)

    def _warm(self) -> None:
        """One pass of each kind this variant makes, on zeros."""
        state = torch.zeros((1, self.net.state_dim))
        chunk = torch.zeros((1, self.horizon, self.spec.action_dim))
        with torch.inference_mode():
            sample(self.net, state, chunk, 1)
        if self.rtc == "guidance":
            sample_guided(self.net, state, chunk, 1, chunk[0], torch.ones(self.horizon), 1.0)

    def reset(self, *, seed: int) -> None:
        """Noise is drawn from a generator seeded per episode: the same episode, the same
        chunks, whatever carried the observations."""
        self._generator.manual_seed(seed)
        self._previous = None
        self.features.reset()

    def predict(self, observation: EnvObservation,
                committed: np.ndarray | None = None) -> np.ndarray:
        """One robot's chunk: a batch of one (`predict_batch`), its error raised."""
        (chunk,) = self.predict_batch([BatchItem(self, observation, committed)])
        if isinstance(chunk, Exception):
            raise chunk
        return chunk

    def predict_batch(self, items: Sequence[BatchItem]) -> list[np.ndarray | Exception]:
        """Several robots' chunks in one pass of the network per denoising step: each item
        brings its own instance (its noise generator, its previous chunk for RTC's overlap,
        its scene features) and its own prefix; rows with no prefix get zero guidance (or
        nothing known), which is the plain sample. A robot whose observation its features
        cannot read gets that error; the others are served."""
        results: list[np.ndarray | Exception | None] = [None] * len(items)
        rows: list[tuple[int, FlowPolicy, torch.Tensor, np.ndarray]] = []
        for index, item in enumerate(items):
            try:
                rows.append((index, item.policy, item.policy._prefix(item.committed),
                             item.policy.features(item.observation)))
            except Exception as exc:  # noqa: BLE001 - that robot's input, not the batch's
                results[index] = exc
        if not rows:
            return results
        # The batch's own work is done once for all its rows (a torch call per robot, each
        # releasing and retaking the interpreter lock, cost the server as much as the
        # network at 16 robots); only the noise is drawn robot by robot, from each one's
        # generator. Elementwise, so every row is what it was alone.
        state = self._normalize(np.stack([row[3] for row in rows]))
        noise = torch.cat([torch.randn((1, self.horizon, self.spec.action_dim),
                                       generator=row[1]._generator) for row in rows])
        with torch.inference_mode(self.rtc != "guidance"):
            planned = self._sample_rows(state, noise, [(row[1], row[2]) for row in rows])
        planned = planned.detach().clamp(-1.0, 1.0)
        for (index, policy, prefix, _), plan, array in zip(rows, planned, planned.numpy(),
                                                          strict=True):
            d = prefix.shape[0]
            if d:
                plan[:d] = prefix  # what the robot executes anyway
            policy._previous = plan
            results[index] = array[d:d + self.spec.chunk_size].astype(np.float32, copy=True)
        return results

    def _sample_rows(self, state: torch.Tensor, noise: torch.Tensor,
                     prefixes: list[tuple[FlowPolicy, torch.Tensor]]) -> torch.Tensor:
        """The variant's sampler over a batch whose rows have their own prefixes (B, H, A)."""
        if self.rtc == "none" or all(prefix.shape[0] == 0 for _, prefix in prefixes):
            return sample(self.net, state, noise, self.denoise_steps)
        if self.rtc == "training":
            clean = torch.zeros_like(noise)
            known = torch.zeros(noise.shape[:2], dtype=torch.bool)
            for row, (_, prefix) in enumerate(prefixes):
                clean[row, :prefix.shape[0]] = prefix
                known[row, :prefix.shape[0]] = True
            return sample_conditioned_rows(self.net, state, noise, self.denoise_steps, clean,
                                           known)
        targets, weights = torch.zeros_like(noise), torch.zeros(noise.shape[:2])
        for row, (policy, prefix) in enumerate(prefixes):
            if prefix.shape[0]:
                targets[row], weights[row] = policy._guidance_target(prefix)
        return sample_guided(self.net, state, noise, self.denoise_steps, targets, weights,
                             self.guidance_weight)

    def _prefix(self, committed: np.ndarray | None) -> torch.Tensor:
        """The committed prefix (d, A) this variant plans from (none for `rtc=none`)."""
        if committed is None or self.rtc == "none":
            return self._no_prefix
        prefix = torch.from_numpy(np.array(committed, np.float32))
        longest = self.horizon - self.spec.chunk_size
        if prefix.shape[0] > longest:
            # The model plans `horizon` actions: it cannot condition on more. It plans from
            # the last `longest` committed actions as if they began now, so its chunk still
            # follows the prefix's end; the first actions the prefix moves the robot by are
            # not planned for (a newest-wins client's staleness, over d - longest ticks).
            prefix = prefix[-longest:]
        return prefix

    def normalized(self, observation: EnvObservation) -> torch.Tensor:
        """What the network reads (`features`), normalized as in training (1, S)."""
        return self._normalize(self.features(observation)[None])

    def _normalize(self, features: np.ndarray) -> torch.Tensor:
        """Rows of features (B, S), normalized as in training."""
        return (torch.from_numpy(features) - self._mean) / self._std

    def _guidance_target(self, prefix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What guidance pulls towards: the prefix (weight 1), then the rest of the previous
        chunk when the prefix is found in it (soft weights, `prefix_weights`): the robot
        queued it from there, so the previous plan's continuation is known from index 0."""
        d, horizon = prefix.shape[0], self.horizon
        target = torch.zeros((horizon, self.spec.action_dim))
        overlap = d
        start = None if self._previous is None else _find_rows(self._previous, prefix)
        if start is not None:
            rest = self._previous[start:]
            target[:len(rest)] = rest
            overlap = len(rest)
        target[:d] = prefix  # exactly as committed (found within 1e-6)
        execution = min(self.execution_horizon, horizon - d)
        return target, prefix_weights(horizon, d, execution, overlap=overlap)

    def save(self, path: Path, *, trained: dict | None = None) -> None:
        meta = {**contract_metadata(self.spec, self.spec.model_id.rsplit("+", 1)[0]),
                "horizon": self.horizon, "hidden": self.net.hidden, "layers": self.net.layers,
                "features": self.features.metadata(), "trained": trained or {}}
        tensors = {f"net.{k}": v.contiguous() for k, v in self.net.state_dict().items()}
        tensors["norm.mean"], tensors["norm.std"] = self._mean, self._std
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path), metadata={"flow_spec": json.dumps(meta)})

    @classmethod
    def load(cls, path: str | Path, *, task_state: dict[str, ArraySpec] | None = None,
             **variant) -> FlowPolicy:
        """Load weights saved by `save`, as the variant `variant` names (`rtc`, ...), for the
        task whose contract has the state entries `task_state` where the model serves many
        tasks (features other than the flat state; ignored otherwise).
        FileNotFoundError names the command that makes the file; ValueError a file that is
        not a flow policy's."""
        path = present_weights(Path(path), env=_env_of(Path(path)),
                               command="python -m policies.flow.train", trains=flow_trained())
        refusal = "is not a flow policy's weights"
        raw, spec = weights_contract(path, "flow_spec", refusal)
        try:
            features = (features_from_metadata(raw["features"]) if "features" in raw else
                        FlatState.of(spec))  # a file from before features were named
            net = VelocityNet(features.dim, int(raw["horizon"]), len(spec.action_names),
                              hidden=int(raw["hidden"]), layers=int(raw["layers"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"policy.weights: {path} {refusal} ({exc})") from exc
        tensors = load_file(str(path))
        net.load_state_dict({k[len("net."):]: v for k, v in tensors.items()
                             if k.startswith("net.")})
        if task_state is not None and not isinstance(features, FlatState):
            spec = dataclasses.replace(spec, state=dict(task_state))
        return cls(spec, net, tensors["norm.mean"].numpy(), tensors["norm.std"].numpy(),
                   features=features, **variant)


def _find_rows(chunk: torch.Tensor, rows: torch.Tensor) -> int | None:
    """The first index at which `rows` (d, A) stand in `chunk` (float32 as sent), or None."""
    d = rows.shape[0]
    for start in range(chunk.shape[0] - d + 1):
        if torch.allclose(chunk[start:start + d], rows, atol=1e-6, rtol=0.0):
            return start
    return None


def _env_of(path: Path) -> str:
    """The env a default weights file is named after (flow_<env>.safetensors), else its stem."""
    return path.stem.removeprefix("flow_")
