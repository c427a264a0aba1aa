"""The long fuzz: no message stops or starves the policy server (issue 21).

    python -m harness.bench.fuzz                                  # 10^5 per transport
    python -m harness.bench.fuzz --transport zmq --messages 20000 --time-limit-s 300

For each transport, a real policy server (`python -m harness.server`, its own process, the
oracle on mujoco_pick_place) receives `--messages` hostile messages from two attacking
clients: one on the stream path with a session of its own, one on the request path. They are
the named edge values and seeded mutations of real encoded messages
(`harness.bench.mutations`: header fields and sequence ids at their limits, ticks and delays
past them, type confusion, malformed arrays, bodies around `max_message_bytes`), sent one
at a time, each waited for (an answer, or `--reply-wait-s` of silence), so every one reaches
the server rather than being superseded on the latest-only stream.

Measured: the server's resident memory at rest, its peak during the fuzz and after it, and
an honest robot's round trip (publish an observation, take its chunk) before, during (at
20 Hz) and after. Passing means the same process serves the honest robot after, at its usual
round trip (`p99_x` near 1), healthy, with memory back near its resting size. Prints a table
and writes JSON (`--out`). Too long for `make test`; `tests/bench/test_fuzz.py` runs 200.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
from rich.table import Table
from tqdm import tqdm

from harness import protocol
from harness.bench.mutations import REQUEST, STREAM, Mutator, edge_cases
from harness.bench.outage import networked_transports
from harness.bench.timing import time_calls
from harness.console import make_console
from harness.protocol import sealing
from harness.server.supervisor import ServerSupervisor
from transports import TransportError, make_client
from transports.loopback import loopback_fields

log = logging.getLogger(__name__)

HONEST_PERIOD_S = 0.05
"""The honest robot's pace during the fuzz: a 20 Hz control loop."""
ROUND_TRIP_TIMEOUT_S = 2.0
"""An honest round trip slower than this counts as lost."""


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    """Resident memory of process `pid` in kB (`VmHWM`: its peak since start), from /proc."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no {field}")


class RssSampler:
    """Samples a process's resident memory every `period_s` on a thread; `peak_kb` is the
    largest seen (VmHWM would include the start-up's own peak)."""

    def __init__(self, pid: int, period_s: float = 0.1) -> None:
        self.peak_kb = rss_kb(pid)
        self._pid, self._period_s = pid, period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._period_s):
            try:
                self.peak_kb = max(self.peak_kb, rss_kb(self._pid))
            except OSError:  # the process is gone: the fuzz notices it too
                return

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak_kb


class WireClient:
    """A transport client speaking the wire protocol directly, with one session."""

    def __init__(self, transport_config, contract: protocol.Contract) -> None:
        self.transport = make_client(transport_config)
        self.transport.wait_ready(30.0)
        self.contract = contract
        self.epoch = 0
        self.stream_key: bytes | None = None
        self.open()

    def open(self) -> None:
        """(Re)open this client's session: a new epoch, at episode 0."""
        reply = protocol.decode(self.transport.request(protocol.encode(protocol.Message(
            protocol.SessionOpen(self.transport.client_id, self.contract))), timeout_s=10.0))
        if reply.msg_type is not protocol.MessageType.SESSION_OK:
            raise RuntimeError(f"the server refused the session: {reply.body}")
        self.epoch = reply.epoch
        self.stream_key = sealing.stream_key_of(reply)

    def unsealed(self, raw: bytes) -> bytes | None:
        """A stream reply without its seal (security=mtls); None if the seal is not this
        session's."""
        return raw if self.stream_key is None else sealing.unseal(raw, self.stream_key)

    def close(self) -> None:
        self.transport.close()


class HonestRobot(WireClient):
    """Publishes a valid observation and takes the chunk that answers it."""

    def __init__(self, transport_config, contract: protocol.Contract) -> None:
        super().__init__(transport_config, contract)
        state, images = contract.zero_arrays()
        self._body = protocol.Observation(state, images, "pick up the cube")
        self._seq = 0

    def round_trip(self) -> bool:
        """One observation and its chunk; False if none came within ROUND_TRIP_TIMEOUT_S."""
        self._seq += 1
        self.transport.publish(protocol.encode(protocol.Message(
            self._body, seq=self._seq, epoch=self.epoch)))
        deadline = time.monotonic() + ROUND_TRIP_TIMEOUT_S
        while (left := deadline - time.monotonic()) > 0:
            payload = self.transport.take_stream(timeout_s=left)
            if payload is None:
                break
            payload = self.unsealed(payload)
            if payload is None:
                continue
            reply = protocol.decode(payload)
            if (reply.msg_type is protocol.MessageType.ACTION_CHUNK
                    and reply.body.obs_seq == self._seq):
                return True
        return False

    def paced(self, stop: threading.Event, period_s: float = HONEST_PERIOD_S) -> list[float]:
        """Round trips every `period_s` until `stop`, in ms (NaN: lost)."""
        samples = []
        while not stop.is_set():
            started = time.perf_counter()
            answered = self.round_trip()
            elapsed = time.perf_counter() - started
            samples.append(elapsed * 1000 if answered else float("nan"))
            stop.wait(max(0.0, period_s - elapsed))
        return samples


def summary_ms(samples) -> dict[str, float | int]:
    samples = np.asarray(samples, dtype=float)
    answered = samples[~np.isnan(samples)]
    if answered.size == 0:
        return {"round_trips": int(samples.size), "lost": int(samples.size), "p50_ms": None,
                "p99_ms": None}
    return {"round_trips": int(samples.size), "lost": int(samples.size - answered.size),
            "p50_ms": round(float(np.percentile(answered, 50)), 3),
            "p99_ms": round(float(np.percentile(answered, 99)), 3)}


class Attack:
    """The two attacking clients and the mutator that feeds them."""

    def __init__(self, transport_config, contract: protocol.Contract, *, seed: int,
                 big_every: int) -> None:
        # Clients that allow twice the server's limit, so bodies past it are really sent.
        roomy = dataclasses.replace(transport_config,
                                    max_message_bytes=2 * transport_config.max_message_bytes)
        self.max_bytes = transport_config.max_message_bytes
        self.stream = WireClient(roomy, contract)
        self.request = WireClient(roomy, contract)
        self.replies: dict[str, int] = {}
        self.reopened = 0
        self.mutator = self._mutator(seed, big_every)

    def _mutator(self, seed: int, big_every: int) -> Mutator:
        """Valid messages of this attack's sessions (their epochs), then their mutator."""
        state, images = self.stream.contract.zero_arrays()
        observation = protocol.Observation(state, images, "pick up the cube")
        camera = {"front": np.full((32, 32, 3), 128, np.uint8)}
        delayed = dataclasses.replace(
            observation, tick=5, delay_ticks=2,
            committed=np.zeros((2, self.stream.contract.action_dim), np.float32))
        with_camera = dataclasses.replace(observation, images=camera)

        def message(body, epoch, **options) -> bytes:
            return protocol.encode(protocol.Message(body, seq=1, episode=1, epoch=epoch),
                                   **options)

        epoch = self.stream.epoch
        stream = [message(observation, epoch), message(delayed, epoch),
                  message(with_camera, epoch), message(with_camera, epoch, jpeg_quality=80)]
        own = self.request.epoch
        request = [message(protocol.SessionOpen("fuzz", self.request.contract), own),
                   message(protocol.Reset(), own), message(protocol.Status(), own),
                   message(protocol.Close(), own)]
        return Mutator(stream=stream, request=request, max_bytes=self.max_bytes,
                       edges=edge_cases(observation, self.stream.contract, epoch=epoch),
                       seed=seed, big_every=big_every)

    def send(self, path: str, payload: bytes, reply_wait_s: float) -> str:
        """Send one message and wait for what it gets; returns that, counted in `replies`."""
        outcome = self._send(path, payload, reply_wait_s)
        self.replies[outcome] = self.replies.get(outcome, 0) + 1
        if path == STREAM and outcome == "none":
            # Most often an episode header mutated: below the session's (stale, dropped
            # unanswered) or above (the session moved on, every seed is stale now). A new
            # session starts over, so silence costs one wait, not one per message.
            old = self.stream.epoch
            try:
                self.stream.open()
            except (TransportError, RuntimeError) as exc:  # the figures will show why
                log.warning("re-opening the stream attacker's session failed: %s", exc)
                return outcome
            self.reopened += 1
            self.mutator.rebase_epoch(old, self.stream.epoch)
        return outcome

    def _send(self, path: str, payload: bytes, reply_wait_s: float) -> str:
        try:
            if path == REQUEST:
                raw = self.request.transport.request(payload, timeout_s=4 * reply_wait_s)
            else:
                self.stream.transport.publish(payload)
                raw = self.stream.transport.take_stream(timeout_s=reply_wait_s)
                if raw is not None and (raw := self.stream.unsealed(raw)) is None:
                    return "reply not sealed by the session"
        except TransportError as exc:
            return f"transport: {type(exc).__name__}"
        if raw is None:
            return "none"
        try:
            reply = protocol.decode(raw)
        except protocol.DecodeError:
            return "undecodable reply"
        if reply.msg_type is protocol.MessageType.ERROR:
            return f"error: {reply.body.code}"
        return reply.msg_type.name.lower()

    def close(self) -> None:
        self.stream.close()
        self.request.close()


def get(port: int, path: str) -> tuple[int, bytes]:
    """(status, body) of GET `path` on the server's health port; status 0 if unreachable."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5.0) as response:
            return response.status, response.read()
    except OSError as exc:
        return getattr(exc, "code", 0) or 0, b""


def run_fuzz(kind: str, *, messages: int, time_limit_s: float, work_dir: Path, seed: int = 0,
             round_trips: int = 300, reply_wait_s: float = 0.1, settle_s: float = 3.0,
             big_every: int = 500, progress: bool = True,
             security_dir: Path | None = None) -> dict:
    """Fuzz a policy server over `kind` with up to `messages` hostile messages, stopping
    early at `time_limit_s`; returns the figures (see the module's docstring). With
    `security_dir` (keys of `python -m harness.certs --robots 2`) the server runs
    `security=mtls`, the honest robot is robot-1 and the attacker robot-2, authenticated:
    the hostile messages then come through an authenticated connection."""
    from hydra import compose, initialize_config_dir

    from harness.config import config_dir, register_configs, validate
    from harness.server.serve import policy_factory

    overrides = [f"transport={kind}", "env=mujoco_pick_place",
                 *(f"transport.{k}={v}" for k, v in loopback_fields(kind).items()),
                 *(["security=mtls", f"security.dir={security_dir}"] if security_dir else [])]
    register_configs()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        config = validate(compose("config", overrides=overrides))
    contract = policy_factory(config)().spec
    server = ServerSupervisor(overrides, work_dir / f"server-{kind}", startup_timeout_s=60.0)
    server.start()
    pid, honest, attack = server.pid, None, None
    try:
        honest = HonestRobot(config.transport, contract)
        before = time_calls(honest.round_trip, warmup=20, round_trips=round_trips)
        time.sleep(settle_s)
        rest_kb = rss_kb(pid)
        metrics_before = len(get(server.health_port, "/metrics")[1])
        attacker = config.transport
        if config.security.enabled:
            attacker = dataclasses.replace(attacker, security=dataclasses.replace(
                config.security, identity="robot-2"))
        attack = Attack(attacker, contract, seed=seed, big_every=big_every)
        sampler, stop = RssSampler(pid), threading.Event()
        during: list[float] = []
        pacer = threading.Thread(target=lambda: during.extend(honest.paced(stop)),
                                 name="honest-robot", daemon=True)
        pacer.start()
        started, sent = time.monotonic(), 0
        with tqdm(total=messages, desc=f"fuzz {kind}", disable=not progress,
                  unit="msg") as bar:
            while sent < messages and time.monotonic() - started < time_limit_s:
                if sent % 1000 == 0 and not server.alive():
                    break  # what the fuzz is for: the row says so (same_process False)
                path, payload = attack.mutator()
                attack.send(path, payload, reply_wait_s)
                sent += 1
                bar.update()
        fuzz_s = time.monotonic() - started
        stop.set()
        pacer.join()
        peak_kb = sampler.stop()
        replies, reopened = attack.replies, attack.reopened
        attack.close()
        attack = None
        time.sleep(settle_s)
        same_process = server.alive() and server.pid == pid
        after_kb = rss_kb(pid) if same_process else 0
        after = (time_calls(honest.round_trip, warmup=5, round_trips=round_trips)
                 if same_process else np.full(round_trips, np.nan))
        health, _ = get(server.health_port, "/healthz")
        metrics_after = len(get(server.health_port, "/metrics")[1])
    finally:
        for client in (attack, honest):
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()
        exit_status = server.drain()
    return {
        "transport": kind, "security": str(config.security.mode), "messages": sent,
        "messages_wanted": messages,
        "fuzz_s": round(fuzz_s, 1), "messages_per_s": round(sent / fuzz_s, 1), "seed": seed,
        "big_every": big_every,
        "replies": dict(sorted(replies.items())), "stream_sessions_reopened": reopened,
        "rss_mb": {"rest": round(rest_kb / 1024, 1), "peak": round(peak_kb / 1024, 1),
                   "after": round(after_kb / 1024, 1),
                   "after_minus_rest": round((after_kb - rest_kb) / 1024, 1)},
        "honest": {"before": summary_ms(before), "during": summary_ms(during),
                   "after": summary_ms(after)},
        "metrics_bytes": {"before": metrics_before, "after": metrics_after},
        "healthz_after": health, "same_process": same_process,
        "server_exit_status": exit_status,
    }


def verdict(result: dict) -> str:
    """"ok" when the same, healthy process served the honest robot after the fuzz with no
    loss, its p99 within 2x (+1 ms) of before, and memory within 25% (+20 MB) of rest;
    otherwise what failed."""
    before, after = result["honest"]["before"], result["honest"]["after"]
    rss = result["rss_mb"]
    problems = [what for what, bad in (
        ("other process", not result["same_process"]),
        ("unhealthy", result["healthz_after"] != 200),
        ("honest robot lost round trips", after["lost"] > 0 or after["p99_ms"] is None),
        ("slower after", after["p99_ms"] is not None and before["p99_ms"] is not None
         and after["p99_ms"] > 2 * before["p99_ms"] + 1.0),
        ("memory not back", rss["after"] > 1.25 * rss["rest"] + 20),
    ) if bad]
    return ", ".join(problems) or "ok"


def _ms(row: dict) -> str:
    """p50/p99 of one honest row, in ms; "-" where nothing was answered."""
    if row["p50_ms"] is None:
        return "-"
    return f"{row['p50_ms']:.1f}/{row['p99_ms']:.1f}"


def print_table(results: list[dict]) -> None:
    table = Table(title="long fuzz: hostile messages per transport, then an honest robot")
    for column in ("transport", "messages", "msg/s", "RSS MB rest/peak/after",
                   "honest p50/p99 ms before", "during (20 Hz)", "after", "lost b/d/a",
                   "verdict"):
        table.add_column(column, justify="right")
    for r in results:
        h, rss = r["honest"], r["rss_mb"]
        sent = str(r["messages"]) + ("" if r["messages"] == r["messages_wanted"] else
                                     f" of {r['messages_wanted']}")
        table.add_row(
            r["transport"], sent, f"{r['messages_per_s']:.0f}",
            f"{rss['rest']:.0f}/{rss['peak']:.0f}/{rss['after']:.0f}",
            *(_ms(h[k]) for k in ("before", "during", "after")),
            "/".join(str(h[k]["lost"]) for k in ("before", "during", "after")), r["verdict"])
    make_console().print(table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.bench.fuzz", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transport", default=",".join(networked_transports()),
                        help="comma-separated transports (default: every networked one)")
    parser.add_argument("--messages", type=int, default=100_000, help="per transport")
    parser.add_argument("--time-limit-s", type=float, default=900.0,
                        help="per transport: the fuzz stops there, however many were sent")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--round-trips", type=int, default=300,
                        help="honest round trips before and after")
    parser.add_argument("--reply-wait-s", type=float, default=0.1,
                        help="how long a stream message waits for its answer")
    parser.add_argument("--settle-s", type=float, default=3.0,
                        help="idle time before memory is read at rest and after the fuzz")
    parser.add_argument("--big-every", type=int, default=500,
                        help="one message in this many is a body around max_message_bytes")
    parser.add_argument("--out", type=Path, default=Path("bench-fuzz.json"))
    parser.add_argument("--security-dir", type=Path, default=None,
                        help="keys of python -m harness.certs --robots 2: the server runs "
                             "security=mtls and the attacker is robot-2, authenticated")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="keep the servers' logs (audit lines) here; default: a temp dir")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    log.setLevel(logging.INFO)
    # The server's warnings (a reject per hostile session open) are its log's, not ours.
    logging.getLogger("harness.server.supervisor").setLevel(logging.ERROR)
    if args.messages < 1 or args.time_limit_s <= 0 or args.big_every < 1:
        parser.error("--messages and --big-every must be >= 1, --time-limit-s > 0")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-fuzz-") as tmp:
        for kind in args.transport.split(","):
            result = run_fuzz(kind, messages=args.messages, time_limit_s=args.time_limit_s,
                              work_dir=args.work_dir or Path(tmp), seed=args.seed,
                              round_trips=args.round_trips, settle_s=args.settle_s,
                              big_every=args.big_every,
                              reply_wait_s=args.reply_wait_s,
                              security_dir=args.security_dir)
            result["verdict"] = verdict(result)
            results.append(result)
            args.out.write_text(json.dumps(results, indent=2) + "\n")  # kept if a later one fails
    print_table(results)
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
