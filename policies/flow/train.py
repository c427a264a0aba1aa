"""Train the flow-matching chunk policy from scripted-oracle demonstrations.

    python -m policies.flow.train --env mujoco_pick_place
    python -m policies.flow.train --env libero_object

On a LIBERO suite `--episodes` (default 40: each training initial state once) and
`--dagger-episodes` (default 10) count per task, and one model learns every task of the
suite (`policies.flow.libero`).

Collects (state, oracle chunk of `2 x chunk_size` actions) at every step of oracle episodes,
each at a pace of its own (so one state has many chunks, and a prefix tells which), then
fits `VelocityNet` by flow matching. Half the samples are given a prefix of 1..chunk_size
actions as clean (time 1, left out of the loss): that trains the network for training-time
conditioning, and the other half keep it a plain flow model for `rtc=none` and `guidance`.
One model file serves the three variants.

Then `--dagger-rounds` rounds of DAgger (`policies.flow.dagger`): the model drives the robot
with simulated round trips of 0..chunk_size ticks, the oracle labels every state it reached
after the actions committed at it, and training goes on over all samples so far. Without
them the model only knows the oracle's own trajectories, and a delay takes it elsewhere.
Seeded end to end, on one CPU thread (about 10 minutes with the defaults here).
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
import torch

from harness.protocol.contract import Contract
from policies.config import LIBERO_TRAINED, default_flow_weights, flow_trained
from policies.flow.dagger import delayed_rollouts
from policies.flow.features import StateFeatures
from policies.flow.libero import libero_demonstrations, libero_rollouts
from policies.flow.model import VelocityNet
from policies.flow.policy import FlowPolicy
from policies.train import (
    collect_demonstrations,
    fit,
    normalized_samples,
    start_training,
    training_parser,
)

log = logging.getLogger(__name__)

LIBERO_EPISODES = 40
"""Oracle demonstrations per task of a LIBERO suite, by default."""


def flow_matching_loss(net: VelocityNet, state: torch.Tensor, chunk: torch.Tensor,
                       committed: torch.Tensor, generator: torch.Generator,
                       conditioned_share: float) -> torch.Tensor:
    """Flow-matching loss of one batch: noise mixed in at a uniform time per sample; for
    `conditioned_share` of the samples a prefix is given clean: the `committed` actions
    the sample's chunk was labelled after (a delayed rollout's), else 1..H/2 at random."""
    batch, horizon, _ = chunk.shape
    noise = torch.randn(chunk.shape, generator=generator)
    t = torch.rand((batch, 1), generator=generator).expand(batch, horizon)
    drawn = torch.randint(1, horizon // 2 + 1, (batch, 1), generator=generator)
    delay = torch.where(committed.view(-1, 1) > 0, committed.view(-1, 1), drawn)
    conditioned = torch.rand((batch, 1), generator=generator) < conditioned_share
    known = conditioned & (torch.arange(horizon).unsqueeze(0) < delay)
    t = torch.where(known, 1.0, t)
    mixed = t.unsqueeze(-1) * chunk + (1.0 - t.unsqueeze(-1)) * noise
    error = (net(state, mixed, t) - (chunk - noise)) ** 2
    weight = (~known).unsqueeze(-1).float()
    return (error * weight).sum() / (weight.sum() * chunk.shape[-1])


def train(states: np.ndarray, chunks: np.ndarray, spec: Contract, *, model_id: str,
          epochs: int, seed: int, committed: np.ndarray | None = None,
          start: FlowPolicy | None = None, features: StateFeatures | None = None,
          min_std: float = 0.0, batch_size: int = 256, lr: float = 1e-3, hidden: int = 512,
          layers: int = 4, conditioned_share: float = 0.5) -> FlowPolicy:
    """Fit by flow matching, from scratch or on from `start` (its network, normalization and
    features: a DAgger round refines the model its rollouts came from). `features` made
    `states` (None: the contract's state entries, flattened)."""
    mean, std, x, y = normalized_samples(states, chunks, seed,
                                         None if start is None else (start.mean, start.std),
                                         min_std=min_std)
    net = (VelocityNet(x.shape[1], y.shape[1], y.shape[2], hidden=hidden, layers=layers)
           if start is None else start.net.train())
    delays = torch.from_numpy(np.zeros(len(x), np.int64) if committed is None else committed)
    generator = torch.Generator().manual_seed(seed)  # batches and noise alike
    loss = fit(lambda batch: flow_matching_loss(net, x[batch], y[batch], delays[batch],
                                                generator, conditioned_share),
               torch.optim.AdamW(net.parameters(), lr=lr), samples=len(x), epochs=epochs,
               generator=generator, batch_size=batch_size)
    log.info("final flow-matching loss %.5f after %d epochs", loss, epochs)
    half = dataclasses.replace(spec, model_id=model_id, images={},
                               chunk_size=y.shape[1] // 2)
    return FlowPolicy(half, net, mean, std, rtc="none",
                      features=start.features if start is not None else features)


def train_with_rollouts(args, states, chunks, spec, features=None) -> tuple[FlowPolicy, dict]:
    """Train on the demonstrations, then `args.dagger_rounds` times: drive the robot with
    the model under simulated delays (the training-conditioned and the guided variant, half
    the episodes each), label what it visited by the oracle, and train on from there on
    everything so far. Returns the model and what it was trained on."""
    model_id = f"flow-{args.env}"
    committed = np.zeros(len(states), np.int64)
    # LIBERO's features hold poses no demonstration moves (the basket's) that a rollout can
    # push: floored, a pushed basket does not read as 10^4 standard deviations. The MuJoCo
    # model's one constant entry never moves (trained without the floor).
    policy = train(states, chunks, spec, model_id=model_id, epochs=args.epochs, seed=args.seed,
                   features=features, min_std=0.0 if features is None else 0.01)
    seed = args.seed + args.episodes
    for _ in range(args.dagger_rounds):
        for rtc in ("training", "guidance"):
            variant = FlowPolicy(policy.spec, policy.net, policy.mean, policy.std, rtc=rtc,
                                 features=policy.features)
            more = rollouts(args, variant, episodes=args.dagger_episodes // 2, seed=seed)
            seed += args.dagger_episodes // 2
            states, chunks = np.concatenate([states, more[0]]), np.concatenate([chunks, more[1]])
            committed = np.concatenate([committed, more[2]])
        log.info("%d samples after a round of delayed rollouts", len(states))
        policy = train(states, chunks, spec, model_id=model_id, epochs=args.epochs // 2,
                       seed=seed, committed=committed, start=policy)
    return policy, {"samples": len(states), "dagger_rounds": args.dagger_rounds,
                    "dagger_episodes": args.dagger_episodes}


def rollouts(args, policy: FlowPolicy, *, episodes: int, seed: int):
    """A DAgger round's delayed rollouts on `args.env`: `episodes` in all on a MuJoCo task,
    `episodes` per task on a LIBERO suite."""
    if args.env in LIBERO_TRAINED:
        return libero_rollouts(args.env, policy, episodes_per_task=episodes, seed=seed,
                               max_delay=args.chunk_size)
    return delayed_rollouts(args.env, policy, episodes=episodes, seed=seed,
                            max_delay=args.chunk_size, speeds=(args.min_speed, 1.0))


def demonstrations(args):
    """(states, chunks, contract, features) from the oracle of `args.env`: `args.episodes`
    in all on a MuJoCo task, per task on a LIBERO suite (features None: the contract's)."""
    if args.env in LIBERO_TRAINED:
        return libero_demonstrations(args.env, episodes_per_task=args.episodes,
                                     horizon=2 * args.chunk_size, seed=args.seed)
    return (*collect_demonstrations(args.env, episodes=args.episodes,
                                    chunk_size=2 * args.chunk_size, seed=args.seed,
                                    speeds=(args.min_speed, 1.0)), None)


def main(argv: list[str] | None = None) -> None:
    parser = training_parser("python -m policies.flow.train", __doc__, epochs=100,
                             seed=20_000, envs=flow_trained())
    parser.add_argument("--min-speed", type=float, default=0.4,
                        help="each demonstration's pace is drawn from [min-speed, 1]")
    parser.add_argument("--dagger-rounds", type=int, default=2,
                        help="rounds of delayed rollouts labelled by the oracle (DAgger)")
    parser.add_argument("--dagger-episodes", type=int, default=None,
                        help="episodes of delayed rollouts per round (default 200; on a "
                             "LIBERO suite 10 per task)")
    parser.set_defaults(episodes=None)
    args = parser.parse_args(argv)
    libero = args.env in LIBERO_TRAINED
    args.episodes = args.episodes or (LIBERO_EPISODES if libero else 300)
    args.dagger_episodes = args.dagger_episodes or (10 if libero else 200)
    start_training()
    started = time.monotonic()
    states, chunks, spec, features = demonstrations(args)
    log.info("%d samples from %d oracle episodes%s", len(states), args.episodes,
             " per task" if features is not None else "")
    policy, trained = train_with_rollouts(args, states, chunks, spec, features)
    out = args.out or default_flow_weights(args.env)
    policy.save(out, trained={"episodes": args.episodes, "epochs": args.epochs,
                              "seed": args.seed, **trained})
    log.info("wrote %s (%.1f KB) in %.0f s", out, out.stat().st_size / 1024,
             time.monotonic() - started)


if __name__ == "__main__":
    main()
