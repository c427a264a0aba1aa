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
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from envs import MUJOCO_TASKS, make_env
from harness.protocol.contract import Contract
from policies.oracle import MujocoOracle
from policies.torch_policy import ChunkMLP, TorchPolicy, default_weights, flatten_state

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
        chunk, used = None, replan_every
        for _ in range(env.spec.max_steps):
            label = oracle.predict(observation)
            states.append(flatten_state(observation.state, keys))
            chunks.append(label)
            if used >= replan_every:
                chunk, used = label, 0
            result = env.step(chunk[used])
            used += 1
            observation = result.observation
            if result.done:
                break
    env.close()
    return np.stack(states), np.stack(chunks), oracle.spec


def train(states: np.ndarray, chunks: np.ndarray, spec: Contract, *, model_id: str,
          epochs: int, seed: int, batch_size: int = 256, lr: float = 1e-3) -> TorchPolicy:
    torch.manual_seed(seed)
    mean, std = states.mean(0), states.std(0) + 1e-6
    x = torch.from_numpy((states - mean) / std).float()
    y = torch.from_numpy(chunks).float()
    model = ChunkMLP(x.shape[1], spec.chunk_size, len(spec.action_names))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    generator = torch.Generator().manual_seed(seed)
    for _ in (bar := tqdm(range(epochs), desc="training")):
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for start in range(0, len(x), batch_size):
            batch = order[start:start + batch_size]
            loss = torch.nn.functional.mse_loss(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        schedule.step()
        bar.set_postfix(loss=f"{total / len(x):.4f}")
    log.info("final training loss %.5f after %d epochs", total / len(x), epochs)
    return TorchPolicy(dataclasses.replace(spec, model_id=model_id, images={}), model, mean, std)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m policies.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="mujoco_pick_place",
                        choices=[str(name) for name in MUJOCO_TASKS])
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--chunk-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=10_000,
                        help="first demonstration seed (evaluation uses seeds from 0)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
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
