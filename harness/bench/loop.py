"""Closed-loop benchmarks: what the harness itself costs, and what one server can serve.

    python -m harness.bench.loop overhead --env mujoco_pick_place --episodes 20
    python -m harness.bench.loop capacity --seconds 5

`overhead`: steps/s of episodes run through the harness (local transport, in-process policy
server, client engine, virtual clock) against a bare loop stepping the same env with the same
actions, in one run. `capacity`: a server hosting a synthetic policy that takes 20 ms per
prediction (so at most 50 chunks/s), with 1, 2, 4 and 8 clients each keeping one observation
in flight; served chunks/s and the max/min served ratio between clients.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import threading
import time
import uuid

from rich.table import Table

from envs import env_family, make_env
from harness import protocol
from harness.client.config import EngineConfig
from harness.client.engine import engine_for
from harness.console import make_console
from harness.loop.runner import run_episode
from harness.server.policy_server import PolicyServer
from policies import make_policy
from policies.slow import LatencyProfile, SlowPolicy
from transports import LocalTransportConfig, ZmqTransportConfig, make_client, make_server
from transports.loopback import free_port

log = logging.getLogger(__name__)


def measure_overhead(env_name: str, episodes: int, task_id: int = 0) -> dict[str, float]:
    env = make_env(env_name, task_id=task_id)
    config = LocalTransportConfig(name=f"overhead-{uuid.uuid4().hex[:8]}")
    server = PolicyServer(make_server(config),
                          lambda: make_policy("oracle", env=env_name, task_id=task_id))
    server.start()
    client = make_client(config)
    engine = engine_for(env.spec, client, EngineConfig(), chunk_size=8)
    init = env_family(env_name).init_state
    harness_s, bare_s, steps, actions = 0.0, 0.0, 0, []
    try:
        for i in range(episodes):
            started = time.perf_counter()
            trace = run_episode(env, engine, episode=i + 1, seed=i, init_state=init(i))
            harness_s += time.perf_counter() - started
            steps += trace.steps
            actions.append([t.action for t in trace.ticks])
        for i, episode_actions in enumerate(actions):
            started = time.perf_counter()  # resets count on both sides
            env.reset(seed=i, init_state=init(i))
            for action in episode_actions:
                env.step(action)
            bare_s += time.perf_counter() - started
    finally:
        client.close()
        server.close()
        env.close()
    return {"steps": steps, "harness_steps_per_s": steps / harness_s,
            "bare_steps_per_s": steps / bare_s, "ratio": bare_s / harness_s}


def measure_capacity(clients: int, seconds: float, infer_s: float = 0.02) -> dict[str, float]:
    env = make_env("mujoco_pick_place")
    fixed = LatencyProfile("synthetic", infer_s)
    config = ZmqTransportConfig(listen=f"tcp://127.0.0.1:{free_port()}")
    server = PolicyServer(make_server(config), lambda: SlowPolicy(
        make_policy("oracle", env="mujoco_pick_place"), fixed), max_sessions=clients)
    server.start()
    observation = env.reset(seed=0)
    body = protocol.Observation(observation.state, observation.images, observation.instruction)
    transports = [make_client(config) for _ in range(clients)]
    stop = threading.Event()

    def keep_one_in_flight(transport) -> None:
        contract = dataclasses.replace(env.spec.contract, chunk_size=8)
        reply = protocol.decode(transport.request(protocol.encode(protocol.Message(
            protocol.SessionOpen(transport.client_id, contract))), timeout_s=5.0))
        seq = 0
        while not stop.is_set():
            seq += 1
            transport.publish(protocol.encode(protocol.Message(body, seq=seq, epoch=reply.epoch)))
            transport.take_stream(timeout_s=1.0)

    try:
        for transport in transports:
            transport.wait_ready(10.0)
        threads = [threading.Thread(target=keep_one_in_flight, args=(t,)) for t in transports]
        for thread in threads:
            thread.start()
        time.sleep(1.0)  # warm-up
        before = [server.metrics.served.labels(client=t.client_id)._value.get()
                  for t in transports]
        time.sleep(seconds)
        after = [server.metrics.served.labels(client=t.client_id)._value.get()
                 for t in transports]
        stop.set()
        for thread in threads:
            thread.join()
    finally:
        for transport in transports:
            transport.close()
        server.close()
        env.close()
    served = [a - b for a, b in zip(after, before, strict=True)]
    return {"clients": clients, "served_per_s": sum(served) / seconds,
            "limit_per_s": 1 / infer_s, "max_min_ratio": max(served) / max(1, min(served)),
            "superseded": server.status()["superseded"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.bench.loop", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    overhead = sub.add_parser("overhead")
    overhead.add_argument("--env", default="mujoco_pick_place")
    overhead.add_argument("--episodes", type=int, default=20)
    capacity = sub.add_parser("capacity")
    capacity.add_argument("--seconds", type=float, default=5.0)
    capacity.add_argument("--clients", default="1,2,4,8")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    console = make_console()
    if args.what == "overhead":
        result = measure_overhead(args.env, args.episodes)
        table = Table(title=f"harness overhead, {args.env}, {result['steps']} steps")
        for column in ("harness steps/s", "bare loop steps/s", "ratio (goal >= 0.9)"):
            table.add_column(column, justify="right")
        table.add_row(f"{result['harness_steps_per_s']:.0f}", f"{result['bare_steps_per_s']:.0f}",
                      f"{result['ratio']:.2f}")
    else:
        table = Table(title="server capacity, synthetic 20 ms policy, zmq")
        for column in ("clients", "served/s", "limit/s", "max/min served", "superseded"):
            table.add_column(column, justify="right")
        for clients in (int(c) for c in args.clients.split(",")):
            r = measure_capacity(clients, args.seconds)
            table.add_row(str(clients), f"{r['served_per_s']:.1f}", f"{r['limit_per_s']:.0f}",
                          f"{r['max_min_ratio']:.2f}", str(r["superseded"]))
    console.print(table)


if __name__ == "__main__":
    main()
