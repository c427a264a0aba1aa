"""A fleet of light robots against replicas of a policy server: many sessions, no simulator.

    python -m harness.bench.fleet --robots 128 --replicas 1,2,4 --seconds 20

A light robot is a real client of the wire (a session opened, reset, observed and closed
through `harness.client.session.Session`, over a real transport to every replica, with
failover) that replays one recorded observation of the env (state only) at the rate a robot
of the harness asks for chunks (`--rate-hz`), newest wins. It is not a simulator, so the
load is the server's alone. Robots run as threads of `--processes` worker processes (the
GIL of one process would be what is measured past a few dozen robots).

Every run accounts for every session (each robot opened one and closed it, the replicas hold
none at the end), counts breaches (a reply of another session's epoch, or answering an
observation this robot never sent: there must be none), and reports the served rate against
min(demand, supply) and the p99 round trip against the budget.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import multiprocessing
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from harness import protocol
from harness.client.session import Session
from harness.client.states import EngineStats

log = logging.getLogger(__name__)


@dataclasses.dataclass
class RobotTally:
    """What one light robot saw."""

    opened: bool = False
    closed: bool = False
    sent: int = 0
    served: int = 0
    errors: int = 0
    breaches: int = 0
    reopened: int = 0
    latencies_s: list[float] = dataclasses.field(default_factory=list)


def observation_of(env_name: str) -> tuple[protocol.Contract, protocol.Observation]:
    """The env's contract (chunk 8) and one observation of it, state only, to replay."""
    from envs import make_env

    env = make_env(env_name, cameras=(), image_size=(64, 64))
    try:
        observation = env.reset(seed=0)
        contract = dataclasses.replace(env.spec.contract, chunk_size=8, images={})
    finally:
        env.close()
    return contract, protocol.Observation(dict(observation.state), {}, observation.instruction)


def light_session(client, contract: protocol.Contract
                  ) -> tuple[Session | None, EngineStats]:
    """A robot's session in episode 1 over `client` (once its server is ready), opened and
    reset as the engine does it; None if the server would not give one."""
    client.wait_ready(30.0)
    session = Session(client, contract, control_timeout_s=10.0, reject_retry_s=30.0,
                      on_open=lambda _: None)
    stats = EngineStats()
    return (session if session.start_episode(1, stats) else None), stats


def run_robot(transports: list, index: int, contract: protocol.Contract,
              observation: protocol.Observation, rate_hz: float, seconds: float,
              tally: RobotTally) -> None:
    """One light robot for `seconds`: open, reset, observe at `rate_hz`, close."""
    from harness.server.replicas import replica_client

    client = replica_client(transports, index)
    sent_at: dict[int, int] = {}
    try:
        session, stats = light_session(client, contract)
        if session is None:
            return
        tally.opened, tally.reopened = True, stats.reopened
        period = 1.0 / rate_hz
        deadline = time.monotonic() + seconds
        next_send = time.monotonic() + period * (index % 97) / 97  # robots out of phase
        while time.monotonic() < deadline:
            now = time.monotonic()
            if now >= next_send:
                seq = session.next_seq()
                sent_at[seq] = time.monotonic_ns()
                client.publish(protocol.encode(protocol.Message(
                    observation, seq=seq, episode=1, epoch=session.epoch,
                    client_ns=sent_at[seq])))
                tally.sent += 1
                next_send += period
            taken = client.take_stream_timed(max(0.0, min(next_send, deadline)
                                                 - time.monotonic()))
            if taken is not None:
                _tally_reply(taken, session.epoch, sent_at, tally)
        session.close()
        tally.closed = True
    except Exception:  # noqa: BLE001 - counted as a robot that did not close its session
        log.exception("light robot %d failed", index)
    finally:
        client.close()


def _tally_reply(taken: tuple[bytes, int], epoch: int, sent_at: dict[int, int],
                 tally: RobotTally) -> None:
    payload, arrived_ns = taken
    try:
        reply = protocol.decode(payload)
    except protocol.DecodeError:
        tally.errors += 1
        return
    if reply.msg_type is protocol.MessageType.ERROR:
        tally.errors += 1
        return
    if reply.msg_type is not protocol.MessageType.ACTION_CHUNK:
        return
    sent_ns = sent_at.pop(reply.body.obs_seq, None)
    if reply.epoch != epoch or sent_ns is None:
        tally.breaches += 1  # another session's chunk, or one answering nothing we sent
        return
    tally.served += 1
    tally.latencies_s.append((arrived_ns - sent_ns) / 1e9)


def run_threads(transports: list, indexes: list[int], contract, observation, rate_hz: float,
                seconds: float) -> dict[int, RobotTally]:
    """The robots `indexes` as threads of this process; their tallies."""
    tallies = {index: RobotTally() for index in indexes}
    threads = [threading.Thread(target=run_robot, args=(transports, index, contract,
                                                        observation, rate_hz, seconds,
                                                        tallies[index]), daemon=True)
               for index in indexes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 60.0)
    return tallies


def _worker(transports: list, indexes: list[int], contract, observation, rate_hz: float,
            seconds: float, results) -> None:
    """A worker process: `run_threads`, the tallies sent back through `results`."""
    tallies = run_threads(transports, indexes, contract, observation, rate_hz, seconds)
    results.put({index: dataclasses.asdict(tally) for index, tally in tallies.items()})


def run_fleet(transports: list, robots: int, *, contract, observation, rate_hz: float,
              seconds: float, processes: int) -> dict[int, RobotTally]:
    """`robots` light robots over `processes` worker processes (0: threads of this one)."""
    if processes == 0:
        return run_threads(transports, list(range(robots)), contract, observation, rate_hz,
                           seconds)
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    workers = [context.Process(target=_worker, args=(
        transports, list(range(p, robots, processes)), contract, observation, rate_hz,
        seconds, results), daemon=True) for p in range(processes)]
    for worker in workers:
        worker.start()
    merged = {}
    for _ in workers:
        merged.update(results.get(timeout=seconds + 180.0))
    for worker in workers:
        worker.join(30.0)
    return {index: RobotTally(**tally) for index, tally in merged.items()}


def summarize(tallies: dict[int, RobotTally], *, robots: int, replicas: int, seconds: float,
              rate_hz: float, supply_per_s: float | None, budget_s: float,
              sessions_left: int | None) -> dict[str, float | int | None]:
    """One row of the fleet table (`sessions_left`: what the replicas still hold after, if
    it was asked)."""
    latencies = np.concatenate([np.asarray(t.latencies_s) for t in tallies.values()] or [[]])
    served = sum(t.served for t in tallies.values())
    demand = robots * rate_hz
    return {
        "robots": robots, "replicas": replicas,
        "opened": sum(t.opened for t in tallies.values()),
        "closed": sum(t.closed for t in tallies.values()),
        "sessions_left": sessions_left,
        "breaches": sum(t.breaches for t in tallies.values()),
        "errors": sum(t.errors for t in tallies.values()),
        "sent": sum(t.sent for t in tallies.values()),
        "served": served,
        "served_per_s": served / seconds,
        "demand_per_s": demand,
        "supply_per_s": supply_per_s,
        "expected_per_s": demand if supply_per_s is None else min(demand, supply_per_s),
        "p50_ms": float(np.percentile(latencies, 50) * 1e3) if latencies.size else None,
        "p99_ms": float(np.percentile(latencies, 99) * 1e3) if latencies.size else None,
        "budget_ms": budget_s * 1e3,
        "least_served_robot": min((t.served for t in tallies.values()), default=0),
    }


def serve_replicas(overrides: list[str], replicas: int, run_dir: Path):
    """Start `replicas` supervised servers composed from `overrides`; (servers, transports)."""
    from hydra import compose, initialize_config_dir

    from harness.config import config_dir, register_configs, validate
    from harness.server.replicas import replica_transports, start_replicas

    register_configs()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        config = validate(compose("config", overrides=[*overrides,
                                                       f"server.replicas={replicas}"]))
    transports = replica_transports(config.transport, replicas,
                                    config.server.replica_port_stride)
    servers = start_replicas(config, 0, [*overrides, f"server.replicas={replicas}"], run_dir,
                             transports)
    return servers, transports


def sessions_open(transports: list) -> int:
    """Sessions the replicas hold now (a STATUS request to each)."""
    from transports import make_client

    total = 0
    for transport in transports:
        client = make_client(transport)
        try:
            client.wait_ready(10.0)
            reply = protocol.decode(client.request(protocol.encode(protocol.Message(
                protocol.Status())), timeout_s=10.0))
            total += int(reply.body.fields["sessions"])
        finally:
            client.close()
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.bench.fleet",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--robots", type=int, default=128)
    parser.add_argument("--replicas", default="1,2,4", help="comma-separated counts")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate-hz", type=float, default=4.0,
                        help="observations/s per robot (an asynchronous robot at 20 Hz with "
                             "chunks of 8 asks every ~5 ticks)")
    parser.add_argument("--processes", type=int, default=2,
                        help="worker processes the robots run in (0: threads of this one)")
    parser.add_argument("--env", default="mujoco_pick_place")
    parser.add_argument("--policy", default="flow")
    parser.add_argument("--transport", default="zmq")
    parser.add_argument("--budget-ms", type=float, default=200.0)
    parser.add_argument("--supply", type=float, default=None,
                        help="measured supply mu(B) of one replica, obs/s (harness.bench."
                             "serving); scaled by the replicas for min(demand, supply)")
    parser.add_argument("--extra", default="", help="more server overrides, space-separated")
    parser.add_argument("--out", default="fleet", help="directory of fleet.csv and report.html")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    rows = fleet_rows(args)
    import pandas as pd

    from reports.fleet import write_fleet_report

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows)
    frame.to_csv(out / "fleet.csv", index=False)
    write_fleet_report(frame, out / "report.html", title=(
        f"{args.robots} light robots at {args.rate_hz:g} observations/s for {args.seconds:g} s, "
        f"policy={args.policy} over {args.transport}, micro_batch up to 16"))
    log.info("fleet results in %s (fleet.csv, report.html)\n%s", out,
             frame.to_string(index=False))
    return 0 if all(r["breaches"] == 0 and r["opened"] == r["closed"] == args.robots
                    and r["sessions_left"] == 0 for r in rows) else 1


def fleet_rows(args) -> list[dict]:
    contract, observation = observation_of(args.env)
    rows = []
    for replicas in (int(r) for r in args.replicas.split(",")):
        overrides = [f"transport={args.transport}", f"env={args.env}",
                     f"policy={args.policy}", "server.scheduler=micro_batch",
                     "server.max_batch_size=16", f"server.max_sessions={args.robots}",
                     "transport.heartbeat_timeout_s=5.0", "server.session_idle_timeout_s=30",
                     *args.extra.split()]
        with tempfile.TemporaryDirectory(prefix="fleet-") as run_dir:
            servers, transports = serve_replicas(overrides, replicas, Path(run_dir))
            try:
                tallies = run_fleet(transports, args.robots, contract=contract,
                                    observation=observation, rate_hz=args.rate_hz,
                                    seconds=args.seconds, processes=args.processes)
                left = sessions_open(transports)
            finally:
                for server in servers:
                    server.stop()
        rows.append(summarize(tallies, robots=args.robots, replicas=replicas,
                              seconds=args.seconds, rate_hz=args.rate_hz,
                              supply_per_s=args.supply and args.supply * replicas,
                              budget_s=args.budget_ms / 1e3, sessions_left=left))
        log.info("%s", rows[-1])
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
