"""The latency sweep: success rate and episode length against an added one-way delay.

Every point is one `python -m harness` run in a run directory of its own under `--out`, so a
killed sweep resumes where it stopped (finished points are skipped, a half-finished one
resumes its episodes). `--link emulated` (default): the fault proxy adds `faults=fixed_delay
faults.timed.0.delay_s=D` each way on real traffic, measured latency, virtual clock.
`--link modelled`: real traffic without a proxy, the clock uses a fixed round trip of 2D
(`latency.kind=fixed latency.value_s=2D`; D=0 runs on the measured one). Points run
`--workers` at a time: most of a delayed episode is waiting on the wire, not computing.

    python -m harness.bench.sweep --out sweeps/mujoco --env mujoco_pick_place \\
        --transports zmq --clients synchronous,async_newest,delay_aware \\
        --chunks 8,32 --delays-ms 0,25,50,100,200,400 --episodes 50
    python -m harness.bench.sweep --out sweeps/mujoco --table   # the table of what ran

A client may name the flow policy's variant after a `+` (`policy.rtc`): the five execution
modes over one trained model are

    --extra policy=flow --clients synchronous+none,async_newest+none,\
        async_exponential+none,delay_aware+guidance,delay_aware+training
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from transports.loopback import free_port, loopback_address

log = logging.getLogger(__name__)


LINKS = ("emulated", "modelled")


def point_name(transport: str, client: str, chunk: int, delay_ms: float,
               link: str = "emulated") -> str:
    prefix = transport if link == "emulated" else f"{transport}-{link}"
    return f"{prefix}-{client}-chunk{chunk}-delay{delay_ms:g}ms"


def delay_overrides(delay_ms: float, link: str) -> list[str]:
    """How a point adds its one-way delay D: on the wire, or to the clock's round trip."""
    if link == "emulated":
        return ["faults=fixed_delay", f"faults.timed.0.delay_s={delay_ms / 1e3:g}"]
    if delay_ms == 0:
        return ["faults=none"]
    return ["faults=none", "latency.kind=fixed", f"latency.value_s={2 * delay_ms / 1e3:g}"]


def _listen_address(run_dir: Path, transport: str) -> str:
    """The address a half-finished point ran on (the run directory's config must match to
    resume it), else a fresh loopback port."""
    config = run_dir / "config.json"
    if config.is_file():
        return json.loads(config.read_text())["transport"]["listen"]
    return loopback_address(transport, free_port())


def run_harness(run_dir: Path, overrides: list[str]) -> dict:
    """`python -m harness <overrides>` into `run_dir` (finishing what a killed run left
    there); its summary. RuntimeError with the run's last output if it failed."""
    command = [sys.executable, "-m", "harness", *overrides, f"hydra.run.dir={run_dir}"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{run_dir.name}: exit {result.returncode}: "
                           f"{(result.stdout + result.stderr)[-1500:]}")
    return json.loads((run_dir / "summary.json").read_text())


def run_point(out: Path, env: str, episodes: int, extra: list[str], link: str,
              transport: str, client: str, chunk: int, delay_ms: float) -> None:
    """One point of the grid, unless its run directory already holds its summary."""
    run_dir = out / point_name(transport, client, chunk, delay_ms, link)
    client, _, rtc = client.partition("+")
    if not (run_dir / "summary.json").is_file():
        run_harness(run_dir, [f"env={env}", f"transport={transport}",
                              f"transport.listen={_listen_address(run_dir, transport)}",
                              f"client={client}", f"policy.chunk_size={chunk}",
                              *([f"policy.rtc={rtc}"] if rtc else []),
                              *delay_overrides(delay_ms, link),
                              f"env.episodes_per_task={episodes}", *extra])


def point_delay(config: dict) -> tuple[str, float]:
    """(link, one-way delay in ms) of a run, from its config.json."""
    timed = config["faults"]["timed"]
    if timed:
        return "emulated", round(timed[0]["delay_s"] * 1e3, 3)
    latency = config.get("latency", {})
    if latency.get("kind") == "fixed":
        return "modelled", round(latency["value_s"] / 2 * 1e3, 3)
    return "modelled", 0.0


def collect(out: Path) -> list[dict]:
    """Every finished point under `out`, from its run directory (coordinates from its
    config.json)."""
    rows = []
    for summary_path in sorted(out.glob("*/summary.json")):
        config = json.loads((summary_path.parent / "config.json").read_text())
        summary = json.loads(summary_path.read_text())
        link, delay_ms = point_delay(config)
        rows.append({"env": config["env"]["name"], "transport": config["transport"]["kind"],
                     "link": link, "client": client_name(config["client"], config["policy"]),
                     "chunk": config["policy"]["chunk_size"], "delay_ms": delay_ms, **summary})
    return sorted(rows, key=lambda r: (r["link"], r["transport"], r["client"], r["chunk"],
                                       r["delay_ms"]))


def client_name(client: dict, policy: dict | None = None) -> str:
    """The client setting, and the flow policy's variant after a `+` where it has one."""
    name = (client["mode"] if client.get("mode") in ("synchronous", "delay_aware")
            else f"async_{client.get('ensembling', 'newest')}")
    rtc = (policy or {}).get("rtc")
    return f"{name}+{rtc}" if rtc else name


def success_grid(rows: list[dict]) -> tuple[list[float], list[tuple[str, list[str]]]]:
    """(delays, [(link / transport / client / chunk, cells)]): per delay, success with its
    Wilson 95% interval, the median episode length in steps and the join ratio (`j`, how
    much harder chunks jump where they meet than inside one: `harness.results.joins`)."""
    delays = sorted({r["delay_ms"] for r in rows})
    lines = []
    for key, group in itertools.groupby(rows, key=lambda r: (r["link"], r["transport"],
                                                             r["client"], r["chunk"])):
        by_delay = {r["delay_ms"]: r for r in group}
        cells = []
        for delay in delays:
            row = by_delay.get(delay)
            if row is None:
                cells.append("-")
                continue
            low, high = row["success_wilson95"]
            steps, joins = row.get("steps_median"), row.get("join_ratio")
            cells.append(f"{row['success_rate']:.0%} ({low:.0%}-{high:.0%})"
                         + ("" if steps is None else f" · {steps:g}")
                         + ("" if joins is None else f" · j{joins:.2f}"))
        lines.append((" / ".join(str(k) for k in key), cells))
    return delays, lines


def print_table(rows: list[dict], *, markdown: bool = False) -> None:
    """Success (Wilson 95%) per client setting and chunk size, one column per delay."""
    delays, lines = success_grid(rows)
    envs = sorted({r["env"] for r in rows})
    title = (f"success (Wilson 95%) · median steps · join ratio vs added one-way delay: "
             f"{', '.join(envs)}")
    if markdown:
        text = ["| link / transport / client / chunk | " + " | ".join(f"{d:g} ms" for d in delays)
                + " |", "|---|" + "---:|" * len(delays)]
        text += [f"| {name} | " + " | ".join(cells) + " |" for name, cells in lines]
        Console().print("\n".join(text), markup=False, highlight=False, soft_wrap=True)
        return
    table = Table(title=title)
    table.add_column("link / transport / client / chunk")
    for delay in delays:
        table.add_column(f"{delay:g} ms", justify="right")
    for name, cells in lines:
        table.add_row(name, *cells)
    Console(width=200).print(table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.bench.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--env", default="mujoco_pick_place")
    parser.add_argument("--transports", default="zmq")
    parser.add_argument("--clients", default="synchronous,async_newest,delay_aware")
    parser.add_argument("--link", choices=LINKS, default="emulated",
                        help="add the delay on the wire (emulated) or to the clock (modelled)")
    parser.add_argument("--chunks", default="8")
    parser.add_argument("--delays-ms", default="0,25,50,100,200,400")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--extra", default="", help="more overrides, space-separated")
    parser.add_argument("--table", action="store_true", help="only print what ran")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.table:
        grid = list(itertools.product(args.transports.split(","), args.clients.split(","),
                                      [int(c) for c in args.chunks.split(",")],
                                      [float(d) for d in args.delays_ms.split(",")]))
        args.out.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(args.workers) as pool, tqdm(total=len(grid),
                                                            desc="sweep points") as bar:
            futures = [pool.submit(run_point, args.out, args.env, args.episodes,
                                   args.extra.split(), args.link, *point) for point in grid]
            for future in futures:
                try:
                    future.result()
                except RuntimeError as exc:  # one bad point must not lose the others
                    log.error("%s", exc)
                bar.update()
    print_table(collect(args.out), markdown=args.markdown)


if __name__ == "__main__":
    main()
