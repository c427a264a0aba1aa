"""States a delayed flow policy visits, labelled by the oracle (DAgger, Ross et al. 2011).

Trained on the oracle's own trajectories only, the flow policy run with a delay drifts into
states the oracle never showed it: the hand a few centimetres off the box with the fingers
half closed, where it closes on nothing, re-opens and closes again until the episode ends
(seen in the traces of the 300 ms sweep). Here the policy itself drives the robot with a
simulated round trip of d ticks (the first d actions of every chunk are committed before the
next chunk lands, as the delay-aware client does), and at every state it reaches the oracle
says what it would do from there given the same committed actions. Those samples join the
demonstrations for the next round of training.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

from envs import Env, make_env
from policies.base import Policy
from policies.flow.policy import FlowPolicy
from policies.oracle import MujocoOracle


def oracle_label(oracle: Policy, observation, prefix: np.ndarray, horizon: int,
                 speed: float | None) -> np.ndarray:
    """The chunk the oracle plans from `observation` (horizon x A): the committed `prefix`,
    then its own plan from where the prefix leaves the robot, at pace `speed` (None: an
    oracle without a pace, LIBERO's)."""
    if speed is not None:
        oracle.max_speed = speed
    rest = oracle.predict(observation, prefix if len(prefix) else None)
    return np.concatenate([prefix, rest[:horizon - len(prefix)]]).astype(np.float32)


def prefix_pace(prefix: np.ndarray, fallback: float | None, low: float) -> float | None:
    """The pace a prefix moves at (its largest hand command, within [low, 1]): a plan's
    continuation keeps the prefix's pace, as the demonstrations do."""
    if len(prefix) == 0 or fallback is None:
        return fallback
    return float(np.clip(np.abs(prefix[:, :3]).max(), low, 1.0))


def delayed_rollouts(env_name: str, policy: FlowPolicy, *, episodes: int, seed: int,
                     max_delay: int, speeds: tuple[float, float],
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(states, chunks, delays): one sample per tick of `episodes` episodes that `policy`
    drives with a round trip of d ticks (d drawn per episode from 0..max_delay, seeded),
    each chunk the oracle's for that state and the d actions committed at it."""
    env = make_env(env_name)
    try:
        return drive_with_delay(env, MujocoOracle(env_name, chunk_size=policy.horizon), policy,
                                episodes=episodes, seed=seed, max_delay=max_delay,
                                speeds=speeds)
    finally:
        env.close()


def drive_with_delay(env: Env, oracle: Policy, policy: FlowPolicy, *, episodes: int, seed: int,
                     max_delay: int, speeds: tuple[float, float] | None,
                     init_states: Sequence[int] | None = None,
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`delayed_rollouts` on a built `env` with its `oracle` (planning `policy.horizon`
    actions); `speeds` None for an oracle without a pace; `init_states` the LIBERO initial
    states episodes cycle through (None: the env's choice by seed)."""
    if not 0 <= max_delay <= policy.spec.chunk_size:
        raise ValueError(f"max_delay={max_delay}: must be in 0..{policy.spec.chunk_size} "
                         "(the chunk the policy returns)")
    horizon = policy.horizon
    states, chunks, delays = [], [], []
    low = speeds[0] if speeds else 1.0
    for episode in tqdm(range(episodes), desc="delayed rollouts"):
        rng = np.random.default_rng(seed + episode)
        delay = int(rng.integers(0, max_delay + 1))
        pace = None if speeds is None else low + (speeds[1] - low) * rng.random()
        policy.reset(seed=seed + episode)
        oracle.reset(seed=seed + episode)
        observation = (env.reset(seed=seed + episode) if init_states is None else env.reset(
            seed=seed + episode, init_state=init_states[episode % len(init_states)]))
        queue = list(policy.predict(observation))  # the first chunk is waited for
        pending: tuple[int, np.ndarray] | None = None
        for tick in range(env.spec.max_steps):
            if delay == 0 and not queue:
                queue = list(policy.predict(observation))
            elif delay and pending is None and len(queue) <= delay:
                pending = (tick + delay, policy.predict(observation, committed(queue, delay)))
            prefix = committed(queue, delay)
            states.append(policy.features(observation))
            chunks.append(oracle_label(oracle, observation, prefix, horizon,
                                       prefix_pace(prefix, pace, low)))
            delays.append(len(prefix))
            result = env.step(np.asarray(queue.pop(0), np.float32))
            observation = result.observation
            if pending is not None and tick + 1 >= pending[0]:
                queue, pending = list(pending[1]), None
            if result.done:
                break
    return np.stack(states), np.stack(chunks), np.array(delays, np.int64)


def committed(queue: list[np.ndarray], delay: int) -> np.ndarray:
    """The actions the robot executes before a chunk asked for now lands (delay x A; the
    queue is never empty here, so A is read from it)."""
    return np.array(queue[:delay], np.float32).reshape(-1, len(queue[0]))
