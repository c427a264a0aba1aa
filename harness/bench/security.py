"""What `security=mtls` costs, per transport, in one run: the handshake (a new client until
its first answer) and the steady round trip of the ~301 KB raw observation, on the request
and the stream path, with security off and on. Ratios are taken within the run (this
machine is noisy); the goal is a steady round trip with mtls at most 1.3x the plaintext one.

    python -m harness.bench.security --round-trips 300

Keys come from `python -m harness.certs`'s own code, in a temporary directory; every server
runs in its own process (`harness.bench.peer`), as in the transport benchmark.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.progress import Progress
from rich.table import Table

from harness.bench.child import READY_TIMEOUT_S
from harness.bench.payloads import observation_payloads
from harness.bench.timing import CALL_TIMEOUT_S
from harness.bench.transport import start_peer, time_paths
from harness.certs import make_all
from harness.console import make_console
from transports import ServerUnavailable, make_client
from transports.config import SecurityConfig
from transports.loopback import loopback_config

log = logging.getLogger(__name__)

KINDS = ("zenoh", "grpc", "zmq")
GOAL_RATIO = 1.3


def handshake_ms(config, payload: bytes) -> float:
    """A new client until its first request is answered (TLS or CURVE handshake included),
    retried at once while the link is not up (not after a heartbeat period, which would
    measure the heartbeat)."""
    started = time.perf_counter_ns()
    deadline = time.monotonic() + READY_TIMEOUT_S
    client = make_client(config)
    try:
        while True:
            try:
                client.request(payload, timeout_s=CALL_TIMEOUT_S)
                return (time.perf_counter_ns() - started) / 1e6
            except ServerUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.0005)
    finally:
        client.close()


def measure(config, payload: bytes, *, handshakes: int, warmup: int,
            round_trips: int) -> dict[str, np.ndarray]:
    peer = start_peer(config.kind, dataclasses.asdict(config))
    try:
        shakes = np.array([handshake_ms(config, b"") for _ in range(handshakes)])
        client = make_client(config)
        try:
            client.wait_ready(READY_TIMEOUT_S)
            return {"handshake": shakes, **time_paths(client, payload, warmup, round_trips)}
        finally:
            client.close()
    finally:
        peer.stop()


def run(keys: Path, *, round_trips: int, warmup: int, handshakes: int,
        kinds: tuple[str, ...] = KINDS) -> list[dict[str, object]]:
    """One row per transport: p50 of each measure with security off and on, and the ratio."""
    payload = observation_payloads(224, 80)["raw"]
    rows = []
    with Progress(transient=True) as progress:
        task = progress.add_task("security cost", total=2 * len(kinds))
        for kind in kinds:
            p50 = {}
            for mode in ("none", "mtls"):
                progress.update(task, description=f"{kind} security={mode}")
                config = loopback_config(kind, security=SecurityConfig(
                    mode=mode, dir=str(keys) if mode == "mtls" else None))
                for measure_name, samples in measure(
                        config, payload, handshakes=handshakes, warmup=warmup,
                        round_trips=round_trips).items():
                    p50[(measure_name, mode)] = float(np.nanpercentile(samples, 50))
                progress.advance(task)
            row: dict[str, object] = {"transport": kind, "observation_bytes": len(payload)}
            for measure_name in ("handshake", "request", "stream"):
                plain, secured = p50[(measure_name, "none")], p50[(measure_name, "mtls")]
                row[f"{measure_name}_p50_ms_none"] = round(plain, 3)
                row[f"{measure_name}_p50_ms_mtls"] = round(secured, 3)
                row[f"{measure_name}_ratio"] = round(secured / plain, 2)
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.bench.security",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--round-trips", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--handshakes", type=int, default=20)
    parser.add_argument("--csv", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        make_all(Path(tmp) / "keys", 1)
        rows = run(Path(tmp) / "keys", round_trips=args.round_trips, warmup=args.warmup,
                   handshakes=args.handshakes)
    table = Table(title=f"security=mtls against none, p50 ms ({rows[0]['observation_bytes']} "
                        "B observation)")
    for column in ("transport", "handshake none", "handshake mtls", "request none",
                   "request mtls", "ratio", "stream none", "stream mtls", "ratio"):
        table.add_column(column)
    for row in rows:
        table.add_row(str(row["transport"]),
                      *(str(row[f"{m}_p50_ms_{s}"]) for m in ("handshake",) for s in
                        ("none", "mtls")),
                      str(row["request_p50_ms_none"]), str(row["request_p50_ms_mtls"]),
                      str(row["request_ratio"]), str(row["stream_p50_ms_none"]),
                      str(row["stream_p50_ms_mtls"]), str(row["stream_ratio"]))
    make_console().print(table)
    over = [f"{row['transport']} {m}" for row in rows for m in ("request", "stream")
            if float(row[f"{m}_ratio"]) > GOAL_RATIO]
    if over:
        log.warning("over the %.1fx goal: %s", GOAL_RATIO, ", ".join(over))
    if args.csv is not None:
        with args.csv.open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
