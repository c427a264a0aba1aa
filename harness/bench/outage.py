"""One server outage in the middle of a closed-loop run: what it costs in episodes.

    python -m harness.bench.outage --transport zmq --fault kill --down-s 2
    python -m harness.bench.outage --transport zenoh --fault stop --down-s 3

Starts a policy server under a `ServerSupervisor`, runs `python -m harness server=external`
against it, and once `after_episodes` episodes are written kills it with SIGKILL and starts
it again `down_s` seconds later (`kill`), or stops it with SIGSTOP and continues it `down_s`
seconds later (`stop`). Reports the run's summary: a benchmark that turns one short outage
into many DEAD episodes measures nothing, so the pacing rule of the virtual clock
(`harness.loop.clock.Pacer`) has to make the outage cost what it would on a robot: ticks in
fallback, no DEAD episode.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

from rich.table import Table

from harness.console import make_console
from harness.server.supervisor import ServerSupervisor
from transports import transport_entry, transport_names
from transports.loopback import loopback_fields

log = logging.getLogger(__name__)
FAULTS = ("kill", "stop")


def networked_transports() -> list[str]:
    """Registered backends whose server can run in its own process (all but local)."""
    return [name for name in transport_names() if transport_entry(name).networked]


def run_outage(kind: str, fault: str, *, run_dir: Path, episodes: int = 100,
               after_episodes: int = 20, down_s: float = 2.0,
               timeout_s: float = 300.0, overrides: tuple[str, ...] = ()) -> dict:
    """One run of `episodes` mujoco_pick_place episodes over `kind`, with one `fault` once
    `after_episodes` are written; returns its summary.json plus the harness's exit status and
    the rows written. `overrides` go to the server and the harness alike. `outage_s` in it
    is how long the server was really away: for `kill`, `down_s` plus the new process's
    start-up, which a busy machine stretches."""
    if fault not in FAULTS:
        raise ValueError(f"fault={fault!r}: expected one of {FAULTS}")
    if not transport_entry(kind).networked:
        raise ValueError(f"transport={kind!r} is in-process only: an outage needs a server in "
                         f"its own process; choose one of {', '.join(networked_transports())}")
    overrides = [f"transport={kind}",
                 *(f"transport.{k}={v}" for k, v in loopback_fields(kind).items()),
                 "env=mujoco_pick_place", *overrides]
    server = ServerSupervisor(overrides, run_dir / "server", startup_timeout_s=60.0)
    server.start()
    harness = subprocess.Popen(
        [sys.executable, "-m", "harness", *overrides, "server=external",
         f"env.episodes_per_task={episodes}", f"hydra.run.dir={run_dir / 'run'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    rows = run_dir / "run" / "episodes"
    try:
        deadline = time.monotonic() + timeout_s
        while len(list(rows.glob("*.json"))) < after_episodes:
            if harness.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the run ended or stalled before {after_episodes} "
                                   f"episodes: {harness.stderr.read()[-2000:]}")
            time.sleep(0.05)
        began = time.monotonic()
        if fault == "kill":
            server.kill()
            time.sleep(down_s)
            server.start()  # returns once the new process reports ready
        else:
            server.pause()
            time.sleep(down_s)
            server.resume()
        outage_s = time.monotonic() - began
        _, stderr = harness.communicate(timeout=timeout_s)
    finally:
        if harness.poll() is None:
            harness.kill()
            harness.wait()
        server.stop()
    summary_path = run_dir / "run" / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    summary["exit_status"] = harness.returncode
    summary["outage_s"] = round(outage_s, 2)  # a restart adds its start-up to `down_s`
    summary["rows_written"] = len(list(rows.glob("*.json")))
    if harness.returncode != 0:
        summary["stderr_tail"] = stderr[-2000:]
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.bench.outage", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transport", default=",".join(networked_transports()),
                        help="comma-separated transports (default: every networked one)")
    parser.add_argument("--fault", default="kill,stop", help="comma-separated: kill, stop")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--after-episodes", type=int, default=20)
    parser.add_argument("--down-s", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=Path("outage-runs"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    table = Table(title=f"one server outage ({args.down_s} s) after {args.after_episodes} of "
                        f"{args.episodes} mujoco_pick_place episodes")
    for column in ("transport", "fault", "exit", "rows", "success", "DEAD", "breaches",
                   "paced ticks", "fallback ticks", "re-opens", "lost"):
        table.add_column(column, justify="right")
    for kind in args.transport.split(","):
        for fault in args.fault.split(","):
            run_dir = args.out / f"{kind}-{fault}-{time.strftime('%H%M%S')}"
            s = run_outage(kind, fault, run_dir=run_dir, episodes=args.episodes,
                           after_episodes=args.after_episodes, down_s=args.down_s)
            table.add_row(kind, fault, str(s["exit_status"]), str(s["rows_written"]),
                          f"{s.get('successes', 0)}/{s.get('episodes', 0)}",
                          str(s.get("dead_episodes")), str(s.get("invariant_breaches")),
                          str(s.get("paced_ticks")), str(s.get("fallback_ticks")),
                          str(s.get("sessions_reopened")), str(s.get("requests_lost")))
    make_console().print(table)


if __name__ == "__main__":
    main()
