"""Rows of the transport benchmark for the real peers: openpi's and vla-eval's own client and
server code, each run from its own venv (`peers/setup.sh` builds them), on the benchmark's
observation (`payloads.realistic_observation`: the same pixels, state and instruction).

- `openpi client`: openpi-client's `WebsocketClientPolicy.infer` in a loop, run by the openpi
  venv's interpreter, against `peers/openpi/serve.py` (openpi's `WebsocketPolicyServer`). The
  images go as openpi sends them, raw arrays (its format has no image codec: no JPEG row),
  under openpi's LIBERO keys, with `observation/state` and `prompt`.
- `vla-eval client`: vla-eval's own `Connection.act` in a loop (after HELLO and
  EPISODE_START), run by the vla-eval venv's interpreter, against `peers/vla_eval/serve.py`
  (its `run_server`), images as png (its default, Pillow's encoder) and raw (`__ndarray__`).
- `zmq stream -> server -> openpi`: the adapter hop. This process opens a session on our
  policy server, in its own process (`python -m harness.bench.peers hop`) over zmq, hosting a
  `RemotePolicy` with the `OpenpiAdapter`, and times publish -> action chunk on the stream
  path. The convention passes the observation through under openpi's keys (no mirror, no
  resize; `openpi_libero` would also need 256x256 renders), so the openpi server receives the
  frame the `openpi client` row sends, and the difference of the two rows is the hop.

Each peer client loop is timed inside the process that runs it and prints its samples as JSON;
the peers' models are the test doubles of `peers/` (a few microseconds of arithmetic, 10x7
actions). Ratios use the raw payload's floors: a png row is the same observation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgpack
import numpy as np

from harness import protocol
from harness.bench.child import READY_TIMEOUT_S, ReadyProcess
from harness.bench.payloads import realistic_observation
from harness.bench.timing import CALL_TIMEOUT_S, BenchResult, time_calls
from transports import ZmqTransportConfig, make_client
from transports.loopback import free_port

log = logging.getLogger(__name__)

PEERS = Path(__file__).resolve().parents[2] / "peers"
PER_CALL_BUDGET_S = 0.2
"""A peer client loop may take this long per round trip on average before it is killed."""
HOP_CHUNK = 8
"""Actions of each openpi reply (10) our server passes on: the transport rows' 8x7 chunk."""


@dataclasses.dataclass(frozen=True)
class Peer:
    name: str
    venv: Path
    script: Path
    health_path: str
    address_args: Callable[[int], list[str]]

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


OPENPI = Peer("openpi", PEERS / ".venv-openpi", PEERS / "openpi" / "serve.py", "/healthz",
              lambda port: ["--port", str(port)])
VLA_EVAL = Peer("vla-eval", PEERS / ".venv-vlaeval", PEERS / "vla_eval" / "serve.py", "/health",
                lambda port: ["--address", f"127.0.0.1:{port}"])

_CLIENT_PRELUDE = """
import json, sys, time
import msgpack
import numpy as np
job = msgpack.unpackb(sys.stdin.buffer.read())
arrays = {k: np.frombuffer(data, dtype).reshape(shape)
          for k, (dtype, shape, data) in job["arrays"].items()}

def check(actions):
    assert np.asarray(actions).shape == (10, 7), np.asarray(actions).shape
"""

OPENPI_CLIENT = _CLIENT_PRELUDE + """
from openpi_client import msgpack_numpy
from openpi_client.websocket_client_policy import WebsocketClientPolicy
obs = {"observation/image": arrays["agentview"], "observation/wrist_image": arrays["wrist"],
       "observation/state": arrays["robot_state"], "prompt": job["prompt"]}
policy = WebsocketClientPolicy(job["url"])
for _ in range(job["warmup"]):
    check(policy.infer(obs)["actions"])
samples = []
for _ in range(job["round_trips"]):
    started = time.perf_counter_ns()
    reply = policy.infer(obs)
    samples.append((time.perf_counter_ns() - started) / 1e6)
    check(reply["actions"])
print(json.dumps({"request_bytes": len(msgpack_numpy.packb(obs)), "samples_ms": samples}))
"""

VLA_EVAL_CLIENT = _CLIENT_PRELUDE + """
import asyncio
from vla_eval.connection import Connection
from vla_eval.protocol import numpy_codec
from vla_eval.protocol.messages import Message, MessageType, pack_message
numpy_codec.set_image_format(job["image_format"])
obs = {"images": {"agentview": arrays["agentview"], "wrist": arrays["wrist"]},
       "task_description": job["prompt"], "state": arrays["robot_state"]}

async def main():
    conn = Connection(job["url"], timeout=job["call_timeout_s"], max_retries=1)
    await conn.connect()
    await conn.start_episode({"task": {"name": "bench"}})
    for _ in range(job["warmup"]):
        check((await conn.act(obs))["actions"])
    samples = []
    for _ in range(job["round_trips"]):
        started = time.perf_counter_ns()
        reply = await conn.act(obs)
        samples.append((time.perf_counter_ns() - started) / 1e6)
        check(reply["actions"])
    await conn.close()
    return samples

samples = asyncio.run(main())
size = len(pack_message(Message(MessageType.OBSERVATION, obs, seq=1)))
print(json.dumps({"request_bytes": size, "samples_ms": samples}))
"""


def healthy(port: int, path: str) -> bool:
    """The peer on loopback `port` answers 200 at its health endpoint `path`."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=0.5)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


@contextlib.contextmanager
def running_peer(peer: Peer, log_dir: Path) -> Iterator[str]:
    """Start the peer's server on a free loopback port, yield its `ws://` url once its health
    endpoint answers 200, kill it on exit.

    Raises:
        RuntimeError: not healthy within `READY_TIMEOUT_S` (or it exited); the log's tail.
    """
    port, log_path = free_port(), log_dir / f"{peer.name}-server.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen([str(peer.python), str(peer.script), *peer.address_args(port)],
                                stdout=log_file, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not healthy(port, peer.health_path):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{peer.script} did not become ready on port {port}:\n"
                                   f"{log_path.read_text()[-2000:]}")
            time.sleep(0.02)
        yield f"ws://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait(timeout=10)


def run_peer_client(peer: Peer, script: str, job: dict, *, round_trips: int) -> dict:
    """Run a client loop `script` under the peer's interpreter, `job` as msgpack on its stdin;
    returns the JSON it prints (`request_bytes`, `samples_ms`).

    Raises:
        RuntimeError: it exited non-zero (its stderr's tail).
        subprocess.TimeoutExpired: it ran past its budget (it is killed).
    """
    timeout_s = READY_TIMEOUT_S + (job["warmup"] + round_trips) * PER_CALL_BUDGET_S
    done = subprocess.run([str(peer.python), "-c", script],
                          input=msgpack.packb({**job, "round_trips": round_trips}),
                          capture_output=True, timeout=timeout_s, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{peer.name} client loop failed ({done.returncode}):\n"
                           f"{done.stderr.decode(errors='replace')[-3000:]}")
    return json.loads(done.stdout)


def _arrays(observation: protocol.Observation) -> dict[str, list]:
    named = {**observation.images, **observation.state}
    return {k: [a.dtype.str, list(a.shape), a.tobytes()] for k, a in named.items()}


class _PassThroughOpenpi:
    """Convention: the benchmark's observation under openpi's LIBERO keys, unchanged."""

    def reads(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return ("robot_state",), ("agentview", "wrist")

    def model_input(self, observation):
        from policies.remote.base import ModelInput

        return ModelInput(images={"observation/image": observation.images["agentview"],
                                  "observation/wrist_image": observation.images["wrist"]},
                          state=observation.state["robot_state"], prompt=observation.instruction)

    def env_actions(self, raw: np.ndarray) -> np.ndarray:
        return np.asarray(raw, np.float32)


def bench_contract(observation: protocol.Observation) -> protocol.Contract:
    """The robot side of the hop's session: the observation's arrays, 7 actions, any chunk."""
    return protocol.Contract(
        action_names=("x", "y", "z", "roll", "pitch", "yaw", "gripper"),
        state={k: protocol.ArraySpec(a.dtype.name, a.shape) for k, a in observation.state.items()},
        images={c: image.shape[:2] for c, image in observation.images.items()})


def serve_hop(options: dict) -> None:
    """The hop's policy server: a `RemotePolicy` over openpi at `options["url"]`, on zmq;
    prints READY once serving, drains when stdin closes. Logs (audit lines included) go to
    `options["log_path"]`, as a server run by the harness logs to its run directory."""
    from harness.server.policy_server import PolicyServer
    from policies.remote.openpi import OpenpiAdapter
    from policies.remote.policy import RemotePolicy
    from transports import make_server

    logging.basicConfig(filename=options["log_path"], level=logging.INFO)
    robot = bench_contract(realistic_observation(options["image_size"]))
    server = PolicyServer(
        make_server(ZmqTransportConfig(**options["transport"])),
        lambda: RemotePolicy(OpenpiAdapter(url=options["url"], timeout_s=CALL_TIMEOUT_S),
                             _PassThroughOpenpi(), robot, chunk_size=HOP_CHUNK,
                             connect_timeout_s=READY_TIMEOUT_S),
        max_sessions=1)
    server.start()
    print("READY", flush=True)
    sys.stdin.read()
    server.drain()


def bench_openpi_hop(observation: protocol.Observation, url: str, log_dir: Path, *,
                     image_size: int, warmup: int, round_trips: int) -> BenchResult:
    """Harness -> our policy server (own process, zmq) -> openpi at `url`, on the stream path:
    publish one observation message (encoded per call, as the client engine does), take its
    action chunk."""
    config = ZmqTransportConfig(listen=f"tcp://127.0.0.1:{free_port()}")
    options = {"transport": dataclasses.asdict(config), "url": url, "image_size": image_size,
               "log_path": str(log_dir / "hop-server.log")}
    server = ReadyProcess([sys.executable, "-m", "harness.bench.peers", "hop",
                           json.dumps(options)], f"hop policy server (log: {options['log_path']})")
    client = None
    try:
        client = make_client(config)
        client.wait_ready(READY_TIMEOUT_S)
        opened = protocol.decode(client.request(protocol.encode(protocol.Message(
            protocol.SessionOpen(client.client_id, bench_contract(observation)))),
            timeout_s=CALL_TIMEOUT_S))
        if opened.msg_type is not protocol.MessageType.SESSION_OK:
            raise RuntimeError(f"hop policy server refused the session: {opened.body}")
        seq = 0

        def round_trip() -> None:
            nonlocal seq
            seq += 1
            client.publish(protocol.encode(protocol.Message(observation, seq=seq,
                                                            epoch=opened.epoch)))
            reply = client.take_stream(timeout_s=CALL_TIMEOUT_S)
            if reply is None:
                raise TimeoutError(f"hop: no action chunk within {CALL_TIMEOUT_S} s")
            message = protocol.decode(reply)
            if message.msg_type is not protocol.MessageType.ACTION_CHUNK:
                raise RuntimeError(f"hop: {message.body} in reply to an observation")

        samples = time_calls(round_trip, warmup=warmup, round_trips=round_trips)
        size = len(protocol.encode(protocol.Message(observation, seq=1)))
        return BenchResult("zmq stream -> server -> openpi", "raw", size, samples, "raw")
    finally:
        if client is not None:
            client.close()
        server.stop()


def bench_openpi(observation: protocol.Observation, *, image_size: int, warmup: int,
                 round_trips: int) -> list[BenchResult]:
    """openpi's own client straight to openpi's server, then the adapter hop to the same one."""
    with tempfile.TemporaryDirectory(prefix="bench-openpi-") as tmp, \
            running_peer(OPENPI, Path(tmp)) as url:
        job = {"url": url, "arrays": _arrays(observation), "prompt": observation.instruction,
               "warmup": warmup}
        direct = run_peer_client(OPENPI, OPENPI_CLIENT, job, round_trips=round_trips)
        hop = bench_openpi_hop(observation, url, Path(tmp), image_size=image_size,
                               warmup=warmup, round_trips=round_trips)
    return [BenchResult("openpi client", "raw", direct["request_bytes"],
                        np.array(direct["samples_ms"]), "raw"), hop]


def bench_vla_eval(observation: protocol.Observation, *, warmup: int,
                   round_trips: int) -> list[BenchResult]:
    """vla-eval's own client to its own server, images as png, then raw."""
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-vla-eval-") as tmp, \
            running_peer(VLA_EVAL, Path(tmp)) as url:
        for image_format in ("png", "raw"):
            job = {"url": url, "arrays": _arrays(observation), "image_format": image_format,
                   "prompt": observation.instruction, "warmup": warmup,
                   "call_timeout_s": CALL_TIMEOUT_S}
            out = run_peer_client(VLA_EVAL, VLA_EVAL_CLIENT, job, round_trips=round_trips)
            results.append(BenchResult("vla-eval client", image_format, out["request_bytes"],
                                       np.array(out["samples_ms"]), "raw"))
    return results


def peer_jobs(*, image_size: int, warmup: int,
              round_trips: int) -> list[tuple[str, Callable[[], list[BenchResult]]]]:
    """(description, job) for each peer whose venv exists; logs one line naming
    `peers/setup.sh` when any is absent."""
    missing = [p for p in (OPENPI, VLA_EVAL) if not p.python.exists()]
    if missing:
        log.warning("peer rows skipped: %s absent (build with peers/setup.sh)",
                    ", ".join(os.path.relpath(p.venv, PEERS.parent) for p in missing))
    observation = realistic_observation(image_size)
    jobs: list[tuple[str, Callable[[], list[BenchResult]]]] = []
    if OPENPI not in missing:
        jobs.append(("openpi client, adapter hop", lambda: bench_openpi(
            observation, image_size=image_size, warmup=warmup, round_trips=round_trips)))
    if VLA_EVAL not in missing:
        jobs.append(("vla-eval client", lambda: bench_vla_eval(
            observation, warmup=warmup, round_trips=round_trips)))
    return jobs


if __name__ == "__main__":
    if sys.argv[1:2] != ["hop"] or len(sys.argv) != 3:
        sys.exit("usage: python -m harness.bench.peers hop <options-json>")
    serve_hop(json.loads(sys.argv[2]))
