"""Training data for one flow model over every task of a LIBERO suite.

The scripted LIBERO oracle (`policies.libero_oracle`) plans from privileged object poses and
the instruction; its demonstrations and its labels of the model's own delayed rollouts are
recorded through `LiberoScene` features, which mean the same in every task, so one network
learns the suite. Episodes start from the suite's fixed initial states 10-49; evaluation
(`python -m harness.jobs.evaluate`, the harness) uses 0-9 by default, so no initial state the
model is scored on was seen in training.
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from envs import make_env
from envs.libero import suite_instructions, task_contract
from policies.flow.dagger import drive_with_delay
from policies.flow.features import LiberoScene
from policies.flow.policy import FlowPolicy
from policies.libero_oracle import LiberoOracle
from policies.train import record_demonstration

TRAINING_INIT_STATES = range(10, 50)
"""Initial states training episodes cycle through (each LIBERO task has 50)."""


def libero_demonstrations(suite: str, *, episodes_per_task: int, horizon: int, seed: int,
                          replan_every: int = 2):
    """(states, chunks, contract, features): the oracle's chunk of `horizon` actions at
    every step of `episodes_per_task` episodes of each task, executed `replan_every` actions
    at a time as the MuJoCo demonstrations are. The contract is task 0's (each task's own
    replaces it when the model is loaded for that task)."""
    features = LiberoScene(suite_instructions(suite))
    states, chunks = [], []
    for task in range(len(features.instructions)):
        env = make_env(suite, task_id=task)
        oracle = LiberoOracle(suite, task, chunk_size=horizon)
        for episode in tqdm(range(episodes_per_task), desc=f"{suite} task {task} demos"):
            features.reset()
            oracle.reset(seed=seed + episode)
            observation = env.reset(seed=seed + episode, init_state=TRAINING_INIT_STATES[
                episode % len(TRAINING_INIT_STATES)])
            record_demonstration(env, oracle, observation, features, replan_every=replan_every,
                                 states=states, chunks=chunks)
        env.close()
    return (np.stack(states), np.stack(chunks), task_contract(suite, 0), features)


def libero_rollouts(suite: str, policy: FlowPolicy, *, episodes_per_task: int, seed: int,
                    max_delay: int, tasks: tuple[int, ...] | None = None,
                    max_steps: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`policies.flow.dagger.delayed_rollouts` over `tasks` of `suite` (None: every task),
    episodes of at most `max_steps` (None: the suite's horizon). The oracle has no pace:
    every episode at its one speed."""
    parts = []
    for task in range(len(policy.features.instructions)) if tasks is None else tasks:
        env = make_env(suite, task_id=task, max_steps=max_steps)
        try:
            parts.append(drive_with_delay(
                env, LiberoOracle(suite, task, chunk_size=policy.horizon), policy,
                episodes=episodes_per_task, seed=seed + 1000 * task, max_delay=max_delay,
                speeds=None, init_states=TRAINING_INIT_STATES))
        finally:
            env.close()
    return tuple(np.concatenate(arrays) for arrays in zip(*parts, strict=False))
