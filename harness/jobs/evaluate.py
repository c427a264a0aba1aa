"""In-process policy evaluation: success rate and step cost, with no transport in the way.

This is the reference the closed loop is compared with: the same env and policy, the policy
asked for a new chunk every `replan_every` steps and its chunk executed in order, nothing late.
It is also how the per-env tables of docs/measurements.md are made:

    python -m harness.jobs.evaluate --env mujoco_pick_place --policy oracle --episodes 50
    python -m harness.jobs.evaluate --env libero_object --tasks all --episodes 5   # 5 per task
    python -m harness.jobs.evaluate --env mujoco_pick_place --step-cost --cameras front
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import logging
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from envs import Env, env_family, make_env, task_ids
from harness.protocol.contract import check_contract
from harness.results.stats import wilson_interval
from policies import Policy, PolicyConfig, PolicyTask, build_policy, policy_entry

log = logging.getLogger(__name__)


@dataclass
class EpisodeOutcome:
    seed: int
    init_state: int | None
    success: bool
    steps: int
    predict_ms: list[float]


def run_episode(env: Env, policy: Policy, *, seed: int, init_state: int | None,
                replan_every: int) -> EpisodeOutcome:
    """Run one episode to success or the step limit, replanning every `replan_every` steps."""
    observation = env.reset(seed=seed, init_state=init_state)
    policy.reset(seed=seed)
    chunk: np.ndarray = np.empty((0, env.spec.contract.action_dim), np.float32)
    used, predict_ms, steps = 0, [], 0
    while True:
        if used >= min(replan_every, len(chunk)):
            started = time.perf_counter()
            chunk, used = policy.predict(observation), 0
            predict_ms.append((time.perf_counter() - started) * 1e3)
        result = env.step(chunk[used])
        used += 1
        steps += 1
        observation = result.observation
        if result.done:
            return EpisodeOutcome(seed, init_state, result.success, steps, predict_ms)


def evaluate(env: Env, policy: Policy, *, episodes: int, seed: int = 0,
             replan_every: int | None = None, init_states: list[int | None] | None = None,
             progress: bool = True) -> list[EpisodeOutcome]:
    """Run `episodes` episodes with seeds seed, seed+1, ...; init states cycle if given."""
    check_contract(policy.spec, env.spec.contract)
    replan_every = replan_every or policy.spec.chunk_size
    outcomes = []
    for i in tqdm(range(episodes), desc=env.spec.name, disable=not progress):
        init_state = init_states[i % len(init_states)] if init_states else None
        outcomes.append(run_episode(env, policy, seed=seed + i, init_state=init_state,
                                    replan_every=replan_every))
    return outcomes


def step_cost_ms(env: Env, *, steps: int, seed: int = 0) -> float:
    """Median wall time of one `env.step` with small random actions, in milliseconds."""
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    samples = []
    for _ in range(steps):
        action = rng.uniform(-0.3, 0.3, env.spec.contract.action_dim)
        started = time.perf_counter()
        result = env.step(action)
        samples.append((time.perf_counter() - started) * 1e3)
        if result.done:
            env.reset(seed=seed)
    return float(np.median(samples))


def evaluate_tasks(name: str, policy: PolicyConfig, *, tasks: str = "0",
                   episodes_per_task: int, seed: int = 0, cameras: tuple[str, ...] = (),
                   image_size: tuple[int, int] = (128, 128), max_steps: int | None = None,
                   ) -> list[tuple[int, EpisodeOutcome]]:
    """Evaluate the policy `policy` configures on each selected task (one env built per task,
    any policy kind: a remote model too); (task, outcome)s."""
    results, family = [], env_family(name)
    for task_id in task_ids(name, tasks):
        env = make_env(name, cameras=cameras, image_size=image_size, max_steps=max_steps,
                       task_id=task_id)
        try:
            instance = build_policy(policy, PolicyTask(name, task_id, cameras, image_size,
                                                       policy.chunk_size, seed))
            try:
                outcomes = evaluate(env, instance, episodes=episodes_per_task, seed=seed,
                                    replan_every=policy.replan_every,
                                    init_states=[family.init_state(i)
                                                 for i in range(episodes_per_task)])
            finally:
                if hasattr(instance, "close"):  # a remote policy holds a connection
                    instance.close()
        finally:
            env.close()
        log.info("%s task %d: %d of %d succeeded", name, task_id,
                 sum(o.success for o in outcomes), len(outcomes))
        results += [(task_id, outcome) for outcome in outcomes]
    return results


def run_evaluate(config, output_dir: Path) -> dict:
    """`job=evaluate`: every selected task's episodes in-process, written to
    `output_dir/episodes.csv`, a table printed; returns the summary (episodes, successes,
    success_rate, success_wilson95)."""
    from rich.table import Table

    from harness.console import make_console

    env_config, policy_config = config.env, config.policy
    results = evaluate_tasks(
        env_config.name, policy_config, tasks=env_config.tasks,
        episodes_per_task=env_config.episodes_per_task, seed=config.seed,
        cameras=tuple(env_config.cameras),
        image_size=(env_config.image_size, env_config.image_size),
        max_steps=env_config.max_steps)
    rows = []
    for task_id, outcome in results:
        row = dataclasses.asdict(outcome)
        row["predict_ms_p50"] = statistics.median(row.pop("predict_ms"))
        rows.append({"env": env_config.name, "task": task_id, **row})
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(output_dir / "episodes.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    successes = sum(r["success"] for r in rows)
    low, high = wilson_interval(successes, len(rows))
    table = Table(title=f"{env_config.name} / {policy_config.name} (in-process, no transport)")
    for column in ("episodes", "success", "Wilson 95%", "mean steps", "predict p50 ms"):
        table.add_column(column, justify="right")
    table.add_row(str(len(rows)), f"{successes / len(rows):.0%}", f"{low:.0%}-{high:.0%}",
                  f"{sum(r['steps'] for r in rows) / len(rows):.1f}",
                  f"{statistics.median(r['predict_ms_p50'] for r in rows):.3f}")
    make_console().print(table)
    log.info("wrote %s", output_dir / "episodes.csv")
    return {"episodes": len(rows), "successes": successes,
            "success_rate": successes / len(rows), "success_wilson95": (low, high)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.jobs.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", required=True)
    parser.add_argument("--policy", default="oracle")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk-size", type=int, default=8)
    parser.add_argument("--replan-every", type=int, default=None,
                        help="steps executed from each chunk (default: the whole chunk)")
    parser.add_argument("--tasks", default="0",
                        help="LIBERO task ids: '0', '0,3,7' or 'all'; episodes run per task, "
                             "over init states 0, 1, ... (MuJoCo tasks have only task 0)")
    parser.add_argument("--cameras", default="", help="comma-separated cameras to render")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--step-cost", action="store_true",
                        help="measure the median step time instead of the success rate")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cameras = tuple(c for c in args.cameras.split(",") if c)
    image_size = (args.image_size, args.image_size)
    if args.step_cost:
        env = make_env(args.env, cameras=cameras, image_size=image_size)
        try:
            cost = step_cost_ms(env, steps=200, seed=args.seed)
        finally:
            env.close()
        log.info("%s cameras=%s: %.3f ms per step (median of 200)", args.env, list(cameras),
                 cost)
        return
    policy = policy_entry(args.policy).config_class(chunk_size=args.chunk_size,
                                                    replan_every=args.replan_every)
    outcomes = [outcome for _, outcome in evaluate_tasks(
        args.env, policy, tasks=args.tasks, episodes_per_task=args.episodes,
        seed=args.seed, cameras=cameras, image_size=image_size)]
    successes = sum(o.success for o in outcomes)
    low, high = wilson_interval(successes, len(outcomes))
    predict = np.concatenate([o.predict_ms for o in outcomes])
    log.info("%s / %s: %d of %d episodes succeeded (%.0f%%, Wilson 95%% %.0f-%.0f%%); "
             "mean %.1f steps; predict p50 %.3f ms", args.env, args.policy, successes,
             len(outcomes), 100 * successes / len(outcomes), 100 * low, 100 * high,
             np.mean([o.steps for o in outcomes]), np.median(predict))


if __name__ == "__main__":
    main()
