"""Train the torch policy from scripted-oracle demonstrations (behaviour cloning).

    python -m policies.train --env mujoco_pick_place --episodes 300

Runs the oracle in-process, records (state, oracle chunk) at every step, fits `ChunkMLP` with
an MSE loss, and writes policies/weights/<env>.safetensors. Seeded end to end: the same
command makes the same demonstrations (training itself is deterministic on one CPU thread).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from envs import MUJOCO_TASKS, Env, EnvObservation, make_env
from harness.protocol.contract import Contract
from policies.base import Policy
from policies.config import default_weights
from policies.oracle import MujocoOracle
from policies.torch_policy import ChunkMLP, TorchPolicy, flatten_state

log = logging.getLogger(__name__)


def collect_demonstrations(env_name: str, *, episodes: int, chunk_size: int, seed: int,
                           replan_every: int = 2, speeds: tuple[float, float] = (1.0, 1.0),
                           ) -> tuple[np.ndarray, np.ndarray, Contract]:
    """(states, chunks) from oracle episodes: one sample per step, the oracle's chunk for it.
    Each episode's oracle moves at a pace drawn from `speeds` (its `max_speed`; seeded by the
    episode): a pace the state does not show makes chunks vary for one state, as human
    demonstrations do."""
    env = make_env(env_name)
    oracle = MujocoOracle(env_name, chunk_size=chunk_size)
    keys = tuple(oracle.spec.state)
    states, chunks = [], []
    low, high = speeds
    for episode in tqdm(range(episodes), desc="demonstrations"):
        oracle.max_speed = low + (high - low) * np.random.default_rng(seed + episode).random()
        observation = env.reset(seed=seed + episode)
        record_demonstration(env, oracle, observation,
                             lambda o: flatten_state(o.state, keys), replan_every=replan_every,
                             states=states, chunks=chunks)
    env.close()
    return np.stack(states), np.stack(chunks), oracle.spec


def record_demonstration(env: Env, oracle: Policy, observation: EnvObservation,
                         featurize: Callable[[EnvObservation], np.ndarray], *,
                         replan_every: int, states: list, chunks: list) -> None:
    """One oracle episode from `observation` to success or the step limit: appends what the
    model reads (`featurize`) and the oracle's chunk at every step to `states` and `chunks`,
    executing each chunk `replan_every` actions at a time."""
    chunk, used = None, replan_every
    for _ in range(env.spec.max_steps):
        label = oracle.predict(observation)
        states.append(featurize(observation))
        chunks.append(label)
        if used >= replan_every:
            chunk, used = label, 0
        result = env.step(chunk[used])
        used += 1
        observation = result.observation
        if result.done:
            break


def normalized_samples(states: np.ndarray, chunks: np.ndarray, seed: int,
                       norm: tuple[np.ndarray, np.ndarray] | None = None, min_std: float = 0.0):
    """Seed torch, and return the states' mean and std (at least `min_std`; `norm` if given:
    a model trained on keeps its own), the normalized states and the chunks as float32
    tensors: how every training command starts."""
    torch.manual_seed(seed)
    mean, std = norm if norm is not None else (states.mean(0),
                                               np.maximum(states.std(0), min_std) + 1e-6)
    return (mean, std, torch.from_numpy((states - mean) / std).float(),
            torch.from_numpy(chunks).float())


def fit(batch_loss: Callable[[torch.Tensor], torch.Tensor], optimizer: torch.optim.Optimizer, *,
        samples: int, epochs: int, generator: torch.Generator, batch_size: int) -> float:
    """Minimize `batch_loss(indices)` over shuffled batches of `samples` for `epochs`, the
    learning rate on a cosine schedule, with a progress bar; the last epoch's mean loss."""
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    for _ in (bar := tqdm(range(epochs), desc="training")):
        order = torch.randperm(samples, generator=generator)
        total = 0.0
        for start in range(0, samples, batch_size):
            batch = order[start:start + batch_size]
            loss = batch_loss(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        schedule.step()
        bar.set_postfix(loss=f"{total / samples:.4f}")
    return total / samples


def train(states: np.ndarray, chunks: np.ndarray, spec: Contract, *, model_id: str,
          epochs: int, seed: int, batch_size: int = 256, lr: float = 1e-3) -> TorchPolicy:
    mean, std, x, y = normalized_samples(states, chunks, seed)
    model = ChunkMLP(x.shape[1], spec.chunk_size, len(spec.action_names))
    loss = fit(lambda batch: torch.nn.functional.mse_loss(model(x[batch]), y[batch]),
               torch.optim.Adam(model.parameters(), lr=lr), samples=len(x), epochs=epochs,
               generator=torch.Generator().manual_seed(seed), batch_size=batch_size)
    log.info("final training loss %.5f after %d epochs", loss, epochs)
    return TorchPolicy(dataclasses.replace(spec, model_id=model_id, images={}), model, mean, std)


def training_parser(prog: str, description: str, *, epochs: int, seed: int,
                    envs: tuple[str, ...] = tuple(MUJOCO_TASKS)) -> argparse.ArgumentParser:
    """The arguments every training command from oracle demonstrations takes (env of
    `envs`, episodes, epochs, chunk size, first seed, output file); a command adds its own."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="mujoco_pick_place", choices=[str(e) for e in envs])
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--chunk-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=seed,
                        help="first demonstration seed (evaluation uses seeds from 0)")
    parser.add_argument("--out", type=Path, default=None)
    return parser


def start_training() -> None:
    """Logging to the console, and one CPU thread: training is deterministic only so."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)


def main(argv: list[str] | None = None) -> None:
    args = training_parser("python -m policies.train", __doc__, epochs=60,
                           seed=10_000).parse_args(argv)
    start_training()
    states, chunks, spec = collect_demonstrations(args.env, episodes=args.episodes,
                                                  chunk_size=args.chunk_size, seed=args.seed)
    log.info("%d samples from %d oracle episodes", len(states), args.episodes)
    policy = train(states, chunks, spec, model_id=f"torch-mlp-{args.env}", epochs=args.epochs,
                   seed=args.seed)
    out = args.out or default_weights(args.env)
    policy.save(out)
    log.info("wrote %s (%.1f KB)", out, out.stat().st_size / 1024)


if __name__ == "__main__":
    main()
