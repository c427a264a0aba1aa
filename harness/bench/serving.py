"""Supply and demand of one policy server: what batching buys, how many robots it serves, and
the same model behind vla-eval's own batched server, in one run.

    python -m harness.bench.serving --batches 1,2,4,8,16 --seconds 8 --peer

- **supply mu(B)**: our server (a supervised process, `server.scheduler=micro_batch`,
  `max_batch_size=B`) under saturation: 2B robots, each sending its next observation as soon
  as its chunk arrives, for `--seconds`; served observations/s and round-trip p50/p99.
- **demand lambda(N) = N r**: r, the observations/s one robot of the harness sends, is
  measured from real episodes (`--demand-episodes` of the env in process, the default
  asynchronous client); N robots ask N r.
- **the knee**: light robots at rate r (`harness.bench.fleet`), N = `--robots`, against the
  server at the largest B: the first N whose served rate falls below 95% of its demand or
  whose p99 passes `--budget-ms`; beside it the reference design's
  N_max = min(0.8 / (r t), (H dt / 2 - RTT) / t), with t = 1 / mu(B) the server's time per
  observation, H the chunk, dt the control period, RTT the unloaded round trip.
- **head-to-head** (`--peer`): the same weights and network served by vla-eval 0.8.0's
  `PredictModelServer(max_batch_size=B, max_wait_time=...)` (peers/vla_eval/serve_flow.py,
  in peers/.venv-vlaeval-bench: `peers/setup.sh vla_eval_bench`), loaded the same way through
  our vla-eval client. With `--repeats R` each B is measured R times on each side, ours and
  the peer's alternated, and the table gives medians and the served rate's range: this
  machine drifts by up to a third over an afternoon, so one run of each side a minute apart
  can differ by more than the servers do.

Everything shares this machine's cores with the load generator, on both sides alike.
"""

from __future__ import annotations

import argparse
import csv
import logging
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np

from harness import protocol
from harness.bench.fleet import (
    light_session,
    observation_of,
    run_fleet,
    serve_replicas,
    summarize,
)

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]
PEER_PYTHON = ROOT / "peers" / ".venv-vlaeval-bench" / "bin" / "python"


def closed_loop(robots: int, seconds: float, robot: Callable[[int, threading.Event], list[float]]
                ) -> dict[str, float]:
    """`robots` threads running `robot(index, stop)` (each returns its round trips, seconds)
    until `seconds` pass; served/s and round-trip percentiles."""
    stop = threading.Event()
    results: list[list[float]] = [[] for _ in range(robots)]

    def run(index: int) -> None:
        try:
            results[index] = robot(index, stop)
        except Exception:  # noqa: BLE001 - a robot that failed serves nothing: it shows
            log.exception("robot %d failed", index)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(robots)]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(30.0)
    trips = np.concatenate([np.asarray(r) for r in results] or [[]])
    return {"served_per_s": trips.size / seconds,
            "p50_ms": float(np.percentile(trips, 50) * 1e3) if trips.size else float("nan"),
            "p99_ms": float(np.percentile(trips, 99) * 1e3) if trips.size else float("nan"),
            "least_served": min(len(r) for r in results)}


def our_robot(transport, contract, observation):
    """A closed-loop robot of our wire: session, then observation -> chunk -> next."""
    from transports import make_client

    def robot(index: int, stop: threading.Event) -> list[float]:
        client = make_client(transport)
        trips: list[float] = []
        try:
            session, _ = light_session(client, contract)
            if session is None:
                raise RuntimeError("no session")
            while not stop.is_set():
                seq = session.next_seq()
                sent = time.monotonic_ns()
                client.publish(protocol.encode(protocol.Message(
                    observation, seq=seq, episode=1, epoch=session.epoch, client_ns=sent)))
                while not stop.is_set():
                    taken = client.take_stream_timed(0.5)
                    if taken is None:
                        continue
                    reply = protocol.decode(taken[0])
                    if (reply.msg_type is protocol.MessageType.ACTION_CHUNK
                            and reply.body.obs_seq == seq):
                        trips.append((taken[1] - sent) / 1e9)
                        break
            session.close()
        finally:
            client.close()
        return trips
    return robot


def peer_robot(url: str, state: np.ndarray, action_dim: int, chunk_size: int):
    """A closed-loop robot of vla-eval's wire, through our vla-eval client."""
    from policies.remote.base import ModelInput
    from policies.remote.vla_eval import VlaEvalAdapter

    def robot(index: int, stop: threading.Event) -> list[float]:
        adapter = VlaEvalAdapter(url=url, action_dim=action_dim, chunk_size=chunk_size,
                                 image_format="raw", timeout_s=30.0)
        trips: list[float] = []
        try:
            adapter.connect(30.0)
            adapter.reset(prompt="bench")
            model_input = ModelInput(images={}, state=state, prompt="bench")
            while not stop.is_set():
                sent = time.monotonic_ns()
                adapter.act(model_input)
                trips.append((time.monotonic_ns() - sent) / 1e9)
        finally:
            adapter.close()
        return trips
    return robot


def peer_state(weights: Path, observation: protocol.Observation) -> np.ndarray:
    """What our flow policy reads of `observation` (its features, unnormalized): the peer
    is sent exactly that vector, and normalizes it as ours does."""
    from envs.base import EnvObservation
    from policies.flow.policy import FlowPolicy

    flow = FlowPolicy.load(weights, rtc="none")
    return flow.features(EnvObservation(dict(observation.state), {}, observation.instruction))


def start_peer(weights: Path, batch: int, wait_s: float,
               torch_threads: int) -> tuple[subprocess.Popen, str]:
    """vla-eval's server hosting our flow network, serving; (process, ws url)."""
    from transports.loopback import free_port

    if not PEER_PYTHON.exists():
        raise FileNotFoundError(f"{PEER_PYTHON}: build it with peers/setup.sh vla_eval_bench")
    port = free_port()
    process = subprocess.Popen(
        [str(PEER_PYTHON), str(ROOT / "peers" / "vla_eval" / "serve_flow.py"),
         "--address", f"127.0.0.1:{port}", "--args.weights", str(weights),
         "--args.max_batch_size", str(batch), "--args.max_wait_time", str(wait_s),
         "--args.threads", str(torch_threads)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the vla-eval peer exited with {process.returncode}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1.0)
            return process, f"ws://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise TimeoutError("the vla-eval peer did not answer /health within 60 s")


def supply_of_ours(overrides: list[str], batch: int, seconds: float, contract,
                   observation) -> dict[str, float]:
    """One saturation run of our server at `batch` (2 x batch closed-loop robots)."""
    with tempfile.TemporaryDirectory(prefix="serving-") as run_dir:
        servers, transports = serve_replicas(overrides, 1, Path(run_dir))
        try:
            return closed_loop(2 * batch, seconds, our_robot(transports[0], contract,
                                                             observation))
        finally:
            servers[0].stop()


def supply_of_peer(weights: Path, batch: int, args, contract, observation) -> dict[str, float]:
    """One saturation run of vla-eval's server at `batch`, the same model and settings."""
    process, url = start_peer(weights, batch, args.wait_ms / 1e3, args.torch_threads)
    try:
        state = peer_state(weights, observation)
        return closed_loop(2 * batch, args.seconds, peer_robot(
            url, state, contract.action_dim, contract.chunk_size))
    finally:
        process.terminate()
        process.wait(10.0)


def medians(side: str, runs: list[dict[str, float]]) -> dict[str, float]:
    """`side`'s figures over its repeated runs: the median of each, the fewest any robot was
    served, and the served rate's range (`served_min`, `served_max`)."""
    served = [run["served_per_s"] for run in runs]
    return {f"{side}_served_per_s": float(np.median(served)),
            f"{side}_p50_ms": float(np.median([run["p50_ms"] for run in runs])),
            f"{side}_p99_ms": float(np.median([run["p99_ms"] for run in runs])),
            f"{side}_least_served": min(run["least_served"] for run in runs),
            f"{side}_served_min": min(served), f"{side}_served_max": max(served),
            f"{side}_runs": len(runs)}


def demand_rate(env: str, episodes: int) -> float:
    """Observations/s of control time one robot of the harness sends (measured)."""
    from harness.bench.sweep import run_harness

    with tempfile.TemporaryDirectory(prefix="demand-") as run_dir:
        run_harness(Path(run_dir), ["transport=local", f"env={env}", "policy=flow",
                                    f"env.episodes_per_task={episodes}"])
        with open(Path(run_dir) / "episodes.csv") as rows:
            episodes_rows = list(csv.DictReader(rows))
    sent = sum(int(row["requests_sent"]) for row in episodes_rows)
    control_s = sum(int(row["steps"]) for row in episodes_rows) / 20.0
    return sent / control_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.bench.serving",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", default="1,2,4,8,16")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--wait-ms", type=float, default=5.0,
                        help="max_wait_ms here, max_wait_time/1000 at the peer")
    parser.add_argument("--env", default="mujoco_pick_place")
    parser.add_argument("--rtc", default="none", help="our flow variant (the peer runs none)")
    parser.add_argument("--peer", action="store_true", help="the vla-eval head-to-head")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch threads of both servers (server.torch_threads here, "
                             "threads at the peer; 0: torch's default)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs per batch size and side, ours and the peer's alternated; "
                             "the table gives medians and the range")
    parser.add_argument("--robots", default="8,16,32,64,128", help="the knee's fleet sizes")
    parser.add_argument("--fleet-seconds", type=float, default=10.0)
    parser.add_argument("--demand-episodes", type=int, default=3)
    parser.add_argument("--budget-ms", type=float, default=200.0)
    parser.add_argument("--out", default="serving", help="directory of the CSVs and plot")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from harness.bench.serving_report import knee_and_formula, write_outputs
    from policies.config import default_flow_weights

    contract, observation = observation_of(args.env)
    weights = Path(default_flow_weights(args.env)).resolve()
    base = ["transport=zmq", f"env={args.env}", "policy=flow", f"policy.rtc={args.rtc}",
            "server.scheduler=micro_batch", f"server.max_wait_ms={args.wait_ms}",
            f"server.torch_threads={args.torch_threads}",
            "server.session_idle_timeout_s=30"]
    supply = []
    for batch in (int(b) for b in args.batches.split(",")):
        overrides = [*base, f"server.max_batch_size={batch}", f"server.max_sessions={2 * batch}"]
        ours, theirs = [], []
        for _ in range(args.repeats):  # alternated, so a drift of the machine hits both
            ours.append(supply_of_ours(overrides, batch, args.seconds, contract, observation))
            if args.peer:
                theirs.append(supply_of_peer(weights, batch, args, contract, observation))
        row = {"batch": batch, "robots": 2 * batch, **medians("ours", ours),
               **(medians("vla_eval", theirs) if theirs else {})}
        log.info("%s", row)
        supply.append(row)
    rate = demand_rate(args.env, args.demand_episodes)
    log.info("demand: one robot sends %.2f observations/s of control time", rate)
    largest = max(int(b) for b in args.batches.split(","))
    fleet = []
    overrides = [*base, f"server.max_batch_size={largest}",
                 f"server.max_sessions={max(int(n) for n in args.robots.split(','))}",
                 "transport.heartbeat_timeout_s=5.0"]
    with tempfile.TemporaryDirectory(prefix="serving-fleet-") as run_dir:
        servers, transports = serve_replicas(overrides, 1, Path(run_dir))
        try:
            for robots in (int(n) for n in args.robots.split(",")):
                tallies = run_fleet(transports, robots, contract=contract,
                                    observation=observation, rate_hz=rate,
                                    seconds=args.fleet_seconds, processes=2)
                row = summarize(tallies, robots=robots, replicas=1,
                                seconds=args.fleet_seconds, rate_hz=rate, supply_per_s=None,
                                budget_s=args.budget_ms / 1e3, sessions_left=None)
                fleet.append({key: row[key] for key in (
                    "robots", "demand_per_s", "served_per_s", "p50_ms", "p99_ms")})
                log.info("%s", fleet[-1])
        finally:
            servers[0].stop()
    analysis = knee_and_formula(supply, fleet, rate=rate, chunk=contract.chunk_size,
                                dt=1.0 / contract.control_hz, budget_ms=args.budget_ms)
    write_outputs(out, supply, fleet, analysis, rate=rate)
    log.info("results in %s: %s", out, analysis)
    return 0


if __name__ == "__main__":
    sys.exit(main())
