"""Transport benchmark: what one observation -> action-chunk round trip costs on each path.

The observation is realistic for a VLA on a real arm: two 224x224 RGB cameras, a 9-float
state and an instruction, sent raw (~301 KB) or with JPEG images (~26 KB); the answer is an
8x7 float32 chunk. Every network peer runs in its own process (`harness.bench.peer`). In the
same run, three references give the numbers meaning: a raw length-prefixed TCP floor, the
in-process codec floor, and a websocket + msgpack baseline (what openpi and vla-eval model
servers speak). Ratios are taken within one run because this machine is noisy. Where
their venvs exist, rows for the real openpi and vla-eval clients and servers and for our
adapter hop to openpi follow (`harness.bench.peers`).

    python -m harness.bench --round-trips 1000 --csv bench.csv
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import socket
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from harness import protocol
from harness.bench.child import READY_TIMEOUT_S, ReadyProcess
from harness.bench.payloads import action_reply, observation_payloads
from harness.bench.peer import LENGTH_PREFIX, recv_exact, start_answering
from harness.bench.timing import CALL_TIMEOUT_S, BenchResult, time_calls
from harness.console import make_console
from transports import (
    TransportConfig,
    UnknownTransport,
    make_client,
    transport_entry,
    transport_names,
)
from transports.loopback import free_port, on_free_port

log = logging.getLogger(__name__)

STREAM_LOST_AFTER_S = 0.5
"""A streamed round trip with no reply after this long counts as lost."""


def start_peer(kind: str, options: dict) -> ReadyProcess:
    """A `harness.bench.peer` child serving `kind` ("tcp", "websocket" or a transport) with
    `options` (JSON), once it is ready."""
    return ReadyProcess([sys.executable, "-m", "harness.bench.peer", kind, json.dumps(options)],
                        f"benchmark peer {kind!r}")


def bench_tcp_floor(payload: bytes, warmup: int, round_trips: int) -> np.ndarray:
    port = free_port()
    peer = start_peer("tcp", {"port": port})
    try:
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            framed = LENGTH_PREFIX.pack(len(payload)) + payload

            def round_trip() -> None:
                conn.sendall(framed)
                header = recv_exact(conn, LENGTH_PREFIX.size)
                if header is None or recv_exact(conn, LENGTH_PREFIX.unpack(header)[0]) is None:
                    raise ConnectionError("benchmark peer closed the connection")

            return time_calls(round_trip, warmup=warmup, round_trips=round_trips)
    finally:
        peer.stop()


def bench_websocket(payload: bytes, warmup: int, round_trips: int) -> np.ndarray:
    from websockets.sync.client import connect

    port = free_port()
    peer = start_peer("websocket", {"port": port})
    try:
        with connect(f"ws://127.0.0.1:{port}", compression=None, max_size=None) as ws:
            def round_trip() -> None:
                ws.send(payload)
                ws.recv(timeout=CALL_TIMEOUT_S)

            return time_calls(round_trip, warmup=warmup, round_trips=round_trips)
    finally:
        peer.stop()


def bench_codec(message_bytes: bytes, jpeg_quality: int | None, warmup: int,
                round_trips: int) -> np.ndarray:
    """Encode + decode of the observation and of the reply, in process: the codec floor."""
    observation = protocol.decode(message_bytes)
    reply = action_reply()

    def round_trip() -> None:
        protocol.decode(protocol.encode(observation, jpeg_quality=jpeg_quality))
        protocol.decode(reply)

    return time_calls(round_trip, warmup=warmup, round_trips=round_trips)


def time_paths(client, payload: bytes, warmup: int, round_trips: int) -> dict[str, np.ndarray]:
    """Round trips of `payload` on the request path and on the stream path of a ready
    `client`."""

    def stream_round_trip() -> bool:
        """False if no reply came: the stream path is best-effort (zenoh drops a large
        observation whose fragments miss its send queue's deadline under CPU load), so a
        loss is counted, not fatal."""
        client.publish(payload)
        return client.take_stream(timeout_s=STREAM_LOST_AFTER_S) is not None

    return {
        "request": time_calls(lambda: client.request(payload, timeout_s=CALL_TIMEOUT_S),
                               warmup=warmup, round_trips=round_trips),
        "stream": time_calls(stream_round_trip, warmup=warmup, round_trips=round_trips),
    }


def bench_transport(config: TransportConfig, payload: bytes, warmup: int,
                    round_trips: int) -> dict[str, np.ndarray]:
    """Round trips on the request path and on the stream path of one transport."""
    if transport_entry(config.kind).networked:
        peer = start_peer(config.kind, dataclasses.asdict(config))
    else:  # in-process by definition: its server lives in this process
        stop_local = start_answering(config, action_reply())
        peer = None
    client = make_client(config)
    try:
        client.wait_ready(READY_TIMEOUT_S)
        return time_paths(client, payload, warmup, round_trips)
    finally:
        client.close()
        if peer is not None:
            peer.stop()
        else:
            stop_local()


def run_benchmark(transports: Iterable[TransportConfig], *, round_trips: int = 1000,
                  warmup: int = 100, image_size: int = 224, jpeg_quality: int = 80,
                  floors: bool = True, peers: bool = False,
                  console: Console | None = None) -> list[BenchResult]:
    """Measure every path for both payloads; returns one result per (path, payload), then,
    with `peers`, the rows of `harness.bench.peers` (none for a peer without its venv)."""
    payloads = observation_payloads(image_size, jpeg_quality)
    transports = [on_free_port(t) for t in transports]
    jobs: list[tuple[str, str, Callable[[], dict[str, np.ndarray]]]] = []
    for name, payload in payloads.items():
        if floors:
            quality = jpeg_quality if name == "jpeg" else None
            jobs += [
                ("tcp floor", name,
                 lambda p=payload: {"": bench_tcp_floor(p, warmup, round_trips)}),
                ("codec floor", name,
                 lambda p=payload, q=quality: {"": bench_codec(p, q, warmup, round_trips)}),
                ("websocket+msgpack", name,
                 lambda p=payload: {"": bench_websocket(p, warmup, round_trips)}),
            ]
        for config in transports:
            jobs.append((config.kind, name,
                         lambda c=config, p=payload: bench_transport(c, p, warmup, round_trips)))

    peer_jobs = []
    if peers:
        from harness.bench.peers import peer_jobs as make_peer_jobs

        peer_jobs = make_peer_jobs(image_size=image_size, warmup=warmup, round_trips=round_trips)

    results: list[BenchResult] = []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("benchmarking", total=len(jobs) + len(peer_jobs))
        for path, name, job in jobs:
            progress.update(task, description=f"{path} ({name})")
            for sub_path, samples in job().items():
                label = f"{path} {sub_path}".strip()
                results.append(BenchResult(label, name, len(payloads[name]), samples))
            progress.advance(task)
        for description, peer_job in peer_jobs:
            progress.update(task, description=description)
            results += peer_job()
            progress.advance(task)
    return results


def result_rows(results: list[BenchResult]) -> list[dict[str, object]]:
    """One row per result with p50/p95/p99 in ms and p50 ratios to the TCP floor and websocket."""
    def p50_of(path: str, payload: str) -> float | None:
        for r in results:
            if r.path == path and r.payload == payload:
                return r.percentile(50)
        return None

    rows = []
    for r in results:
        floor = r.floor_payload or r.payload
        tcp, ws = p50_of("tcp floor", floor), p50_of("websocket+msgpack", floor)
        p50 = r.percentile(50)
        rows.append({
            "path": r.path, "payload": r.payload, "request_bytes": r.request_bytes,
            "round_trips": len(r.samples_ms), "lost": r.lost, "p50_ms": round(p50, 4),
            "p95_ms": round(r.percentile(95), 4), "p99_ms": round(r.percentile(99), 4),
            "x_tcp_floor": round(p50 / tcp, 2) if tcp else None,
            "x_websocket": round(p50 / ws, 2) if ws else None,
        })
    return rows


def write_csv(rows: list[dict[str, object]], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def print_table(rows: list[dict[str, object]], console: Console) -> None:
    table = Table(title="round trip, observation -> 8x7 action chunk (ms; ratios of p50)")
    columns = {"path": "path", "payload": "payload", "request_bytes": "bytes", "lost": "lost",
               "p50_ms": "p50", "p95_ms": "p95", "p99_ms": "p99", "x_tcp_floor": "x tcp",
               "x_websocket": "x ws"}
    for key, title in columns.items():
        table.add_column(title, no_wrap=True,
                         justify="left" if key in ("path", "payload") else "right")
    for row in rows:
        table.add_row(*("" if row[key] is None else
                        f"{row[key]:.3f}" if key.endswith("_ms") else str(row[key])
                        for key in columns))
    console.print(table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transports", default=",".join(transport_names()),
                        help="comma-separated backends to measure: registered names or "
                             "import paths 'package.module:ENTRY' (default: every "
                             "registered one)")
    parser.add_argument("--round-trips", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--jpeg-quality", type=int, default=80)
    parser.add_argument("--no-floors", action="store_true",
                        help="skip the TCP, codec and websocket references")
    parser.add_argument("--no-peers", action="store_true",
                        help="skip the rows of the real openpi and vla-eval peers")
    parser.add_argument("--csv", type=Path, default=Path("bench.csv"))
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.transports.split(",") if k.strip()]
    try:
        config_classes = [transport_entry(k).config_class for k in kinds]
    except UnknownTransport as exc:
        parser.error(f"--transports: {exc}")
    if args.round_trips < 1 or args.warmup < 0:
        parser.error("--round-trips must be >= 1 and --warmup >= 0")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    console = make_console()
    configs = [cls(kind=kind) for cls, kind in zip(config_classes, kinds, strict=True)]
    results = run_benchmark(configs, round_trips=args.round_trips,
                            warmup=args.warmup, image_size=args.image_size,
                            jpeg_quality=args.jpeg_quality, floors=not args.no_floors,
                            peers=not args.no_peers, console=console)
    rows = result_rows(results)
    print_table(rows, console)
    write_csv(rows, args.csv)
    log.info("wrote %s", args.csv)


if __name__ == "__main__":
    main()
