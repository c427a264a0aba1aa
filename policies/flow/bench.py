"""What one chunk costs in each variant of the flow policy, on this CPU, in one run.

    python -m policies.flow.bench [--calls 200] [--delay 4] [--batches 1,2,4,8,16]

Every variant loads the shipped weights and predicts along one seeded episode's observations
(a fresh env state per call, so no cache helps), with the committed prefix a delay-aware
client would send: the first `--delay` actions of the chunk before. One torch thread, as the
server runs. Prints p50 and p99 in ms per variant, and each variant's p50 over `none`'s.
With `--batches`, also the time of one batched pass (`predict_batch`) of B robots, each its
own instance with its own observation and prefix, and the observations/s it gives, mu(B),
against mu(1): the model's side of the serving benchmark, without wire or server.
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import torch

from envs import make_env
from policies.config import default_flow_weights
from policies.flow.config import VARIANTS
from policies.flow.policy import FlowPolicy

log = logging.getLogger(__name__)


def time_variant(env_name: str, rtc: str, *, calls: int, delay: int) -> np.ndarray:
    """Milliseconds of `calls` predicts by variant `rtc`, each on the next observation of
    an episode driven by the policy's own chunks (after 5 untimed warm-up calls)."""
    policy = FlowPolicy.load(default_flow_weights(env_name), rtc=rtc)
    env = make_env(env_name)
    policy.reset(seed=0)
    observation = env.reset(seed=0)
    chunk, times = None, []
    for call in range(calls + 5):
        prefix = None if chunk is None or rtc == "none" else chunk[:delay]
        started = time.perf_counter_ns()
        chunk = policy.predict(observation, prefix)
        if call >= 5:
            times.append((time.perf_counter_ns() - started) / 1e6)
        result = env.step(chunk[0])
        observation = result.observation
        if result.done:
            observation = env.reset(seed=call)
    env.close()
    return np.array(times)


def time_batch(env_name: str, rtc: str, batch: int, *, calls: int, delay: int) -> float:
    """Median milliseconds of one `predict_batch` of `batch` robots (5 untimed first)."""
    from policies.base import BatchItem

    weights = default_flow_weights(env_name)
    robots = [FlowPolicy.load(weights, rtc=rtc) for _ in range(batch)]
    env = make_env(env_name)
    observations = [env.reset(seed=seed) for seed in range(batch)]
    env.close()
    for index, robot in enumerate(robots):
        robot.reset(seed=index)
    prefix = None if rtc == "none" else np.zeros((delay, robots[0].spec.action_dim), np.float32)
    items = [BatchItem(robot, observation, prefix)
             for robot, observation in zip(robots, observations, strict=True)]
    times = []
    for call in range(calls + 5):
        started = time.perf_counter_ns()
        robots[0].predict_batch(items)
        if call >= 5:
            times.append((time.perf_counter_ns() - started) / 1e6)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m policies.flow.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="mujoco_pick_place")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--delay", type=int, default=4, help="committed actions per request")
    parser.add_argument("--batches", default="", help="e.g. 1,2,4,8,16: batched passes too")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    p50 = {}
    for rtc in VARIANTS:
        times = time_variant(args.env, rtc, calls=args.calls, delay=args.delay)
        p50[rtc] = float(np.median(times))
        log.info("rtc=%-8s p50 %.2f ms  p99 %.2f ms  (%.2fx none)", rtc, p50[rtc],
                 np.percentile(times, 99), p50[rtc] / p50["none"])
    for rtc in VARIANTS if args.batches else ():
        one = None
        for batch in (int(b) for b in args.batches.split(",")):
            ms = time_batch(args.env, rtc, batch, calls=max(20, args.calls // 4),
                            delay=args.delay)
            mu = batch / ms * 1e3
            one = one or mu
            log.info("rtc=%-8s B=%-2d pass %.2f ms  mu(B) %.0f obs/s  mu(B)/mu(1) %.2f", rtc,
                     batch, ms, mu, mu / one)


if __name__ == "__main__":
    main()
