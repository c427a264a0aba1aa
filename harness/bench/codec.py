"""Codec cost: median encode and decode time of each kind of message a session exchanges.

    python -m harness.bench.codec [--repeats N]

Every control tick encodes and decodes one observation and one action chunk on top of the
transport, so this is the part of a round trip that no transport can remove. The messages
are built from a fixed seed (noise images, like the before/after measurements of the codec
rewrite) so every run times the same bytes. Each call is timed on its own and the median is
reported, because single calls on a busy machine have long tails; run it twice and compare
before trusting a difference of a few microseconds.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from typing import NamedTuple

import numpy as np
from rich.table import Table

from harness import protocol
from harness.console import make_console

log = logging.getLogger(__name__)

JPEG_QUALITY = 80
JPEG_SHARE = 10
"""JPEG rows run repeats / JPEG_SHARE times: one JPEG round trip costs about 2 ms."""


class Sample(NamedTuple):
    name: str
    message: protocol.Message
    jpeg_quality: int | None = None


class Timing(NamedTuple):
    name: str
    bytes: int
    runs: int
    encode_us: float
    decode_us: float


def sample_messages(seed: int = 0) -> list[Sample]:
    """One message of each kind, as a LIBERO-like robot and a VLA-like model exchange them."""
    rng = np.random.default_rng(seed)
    state = {"robot0_eef_pos": rng.normal(size=3), "robot0_eef_quat": rng.normal(size=4),
             "robot0_gripper_qpos": rng.normal(size=2), "robot0_joint_pos": rng.normal(size=7),
             **{f"obj{i}_pos": rng.normal(size=3) for i in range(6)}}
    state = {key: value.astype(np.float32) for key, value in state.items()}
    images = {camera: rng.integers(0, 255, (224, 224, 3), np.uint8)
              for camera in ("agentview", "wrist")}
    instruction = "pick up the alphabet soup and place it in the basket"
    observation = protocol.Observation(state, images, instruction)
    chunk = protocol.ActionChunk(rng.normal(size=(8, 7)).astype(np.float32), obs_seq=7,
                                 queue_wait_ns=1_000, infer_ns=2_000, model_id="oracle")
    contract = protocol.Contract(
        action_names=("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"),
        state={key: protocol.ArraySpec("float32", value.shape) for key, value in state.items()},
        images={camera: (224, 224) for camera in images}, control_hz=20.0, chunk_size=8,
        model_id="oracle")

    def message(body: protocol.Body) -> protocol.Message:
        return protocol.Message(body, seq=3, episode=2, epoch=5, client_ns=123)

    return [
        Sample("observation, 2 x 224x224 raw + 10 state", message(observation)),
        Sample(f"observation, 2 x 224x224 JPEG q{JPEG_QUALITY} + 10 state",
               message(observation), JPEG_QUALITY),
        Sample("observation, 10 state only",
               message(protocol.Observation(dict(state), {}, instruction))),
        Sample("action chunk, 8x7 float32", message(chunk)),
        Sample("session open, with contract", message(protocol.SessionOpen("client-1",
                                                                           contract))),
        Sample("reset", message(protocol.Reset("new episode"))),
        Sample("error", message(protocol.Error(protocol.SESSION_UNKNOWN, "no session"))),
    ]


def time_sample(sample: Sample, runs: int) -> Timing:
    """Median of `runs` encodes and of `runs` decodes, alternated as a session would."""
    buf = protocol.encode(sample.message, jpeg_quality=sample.jpeg_quality)
    for _ in range(max(1, runs // 10)):  # warm up: caches, allocator, the previous row's wake
        protocol.decode(protocol.encode(sample.message, jpeg_quality=sample.jpeg_quality))
    encode_ns, decode_ns = [], []
    for _ in range(runs):
        started = time.perf_counter_ns()
        protocol.encode(sample.message, jpeg_quality=sample.jpeg_quality)
        encode_ns.append(time.perf_counter_ns() - started)
        started = time.perf_counter_ns()
        protocol.decode(buf)
        decode_ns.append(time.perf_counter_ns() - started)
    return Timing(sample.name, len(buf), runs, statistics.median(encode_ns) / 1e3,
                  statistics.median(decode_ns) / 1e3)


def measure(repeats: int, seed: int = 0) -> list[Timing]:
    timings = []
    for sample in sample_messages(seed):
        runs = repeats if sample.jpeg_quality is None else max(1, repeats // JPEG_SHARE)
        log.info("timing %s, %d runs", sample.name, runs)
        timings.append(time_sample(sample, runs))
    return timings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3000,
                        help="timed encodes and decodes per message (JPEG: a tenth)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    table = Table(title=f"codec cost per message, median (seed {args.seed})")
    table.add_column("message")
    for column in ("bytes", "runs", "encode us", "decode us"):
        table.add_column(column, justify="right")
    for timing in measure(args.repeats, args.seed):
        table.add_row(timing.name, f"{timing.bytes:,}", str(timing.runs),
                      f"{timing.encode_us:.1f}", f"{timing.decode_us:.1f}")
    make_console().print(table)


if __name__ == "__main__":
    main()
