"""The serving benchmark's analysis and outputs: the knee against the reference design's
capacity formula, the CSVs, a markdown table and the demand/supply plot."""

from __future__ import annotations

import csv
import json
from pathlib import Path


def knee_and_formula(supply: list[dict], fleet: list[dict], *, rate: float, chunk: int,
                     dt: float, budget_ms: float) -> dict[str, float | int | None]:
    """The measured knee (the first fleet size whose served rate is below 95% of its demand
    or whose p99 passes the budget; None if none did) and the reference design's
    N_max = min(0.8 / (r t), (H dt / 2 - RTT) / t), t = 1 / mu(B) at the largest B, RTT the
    smallest fleet's p50 round trip (one inference included: conservative)."""
    largest = max(supply, key=lambda row: row["batch"])
    t = 1.0 / largest["ours_served_per_s"]
    rtt = min(fleet, key=lambda row: row["robots"])["p50_ms"] / 1e3
    by_load = 0.8 / (rate * t)
    by_horizon = (chunk * dt / 2 - rtt) / t
    knee = next((row["robots"] for row in sorted(fleet, key=lambda row: row["robots"])
                 if row["served_per_s"] < 0.95 * row["demand_per_s"]
                 or row["p99_ms"] > budget_ms), None)
    return {"rate_per_robot": rate, "t_ms": t * 1e3, "rtt_ms": rtt * 1e3,
            "n_max_load": by_load, "n_max_horizon": by_horizon,
            "n_max": min(by_load, by_horizon), "knee": knee,
            "largest_fleet": max(row["robots"] for row in fleet)}


def write_outputs(out: Path, supply: list[dict], fleet: list[dict], analysis: dict, *,
                  rate: float) -> None:
    """supply.csv, fleet.csv, analysis.json, supply_table.txt (markdown) and demand_supply.png
    in `out`."""
    for name, rows in (("supply", supply), ("fleet", fleet)):
        with open(out / f"{name}.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    (out / "analysis.json").write_text(json.dumps(analysis, indent=2) + "\n")
    (out / "supply_table.txt").write_text(supply_table(supply) + "\n")  # markdown
    plot(out / "demand_supply.png", supply, fleet, rate=rate, analysis=analysis)


def supply_table(supply: list[dict]) -> str:
    """One markdown table: ours (and vla-eval's, if measured) per batch size; with repeated
    runs, medians, the served rate's range, and our median over theirs."""
    peer = "vla_eval_served_per_s" in supply[0]
    repeated = supply[0].get("ours_runs", 1) > 1

    def served(row: dict, side: str) -> str:
        median = f"{row[f'{side}_served_per_s']:.0f}"
        return (f"{median} ({row[f'{side}_served_min']:.0f}-{row[f'{side}_served_max']:.0f})"
                if repeated else median)

    head = "| B | robots | ours obs/s | ours p50 ms | ours p99 ms |"
    rule = "|--:|--:|--:|--:|--:|"
    if peer:
        head += " vla-eval obs/s | vla-eval p50 ms | vla-eval p99 ms | ours / vla-eval |"
        rule += "--:|--:|--:|--:|"
    lines = [head, rule]
    for row in supply:
        line = (f"| {row['batch']} | {row['robots']} | {served(row, 'ours')} | "
                f"{row['ours_p50_ms']:.1f} | {row['ours_p99_ms']:.1f} |")
        if peer:
            ratio = row["ours_served_per_s"] / row["vla_eval_served_per_s"]
            line += (f" {served(row, 'vla_eval')} | {row['vla_eval_p50_ms']:.1f} | "
                     f"{row['vla_eval_p99_ms']:.1f} | {ratio:.2f} |")
        lines.append(line)
    return "\n".join(lines)


def plot(path: Path, supply: list[dict], fleet: list[dict], *, rate: float,
         analysis: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    robots = [row["robots"] for row in fleet]
    figure, axis = plt.subplots(figsize=(7, 4.2))
    top = max(robots)
    axis.plot([0, top], [0, top * rate], "k--", label=f"demand lambda(N) = N x {rate:.2f}/s")
    for row in supply:
        axis.axhline(row["ours_served_per_s"], lw=0.8, alpha=0.6, color="tab:blue")
        axis.text(top * 1.01, row["ours_served_per_s"], f"mu({row['batch']})", fontsize=7,
                  va="center")
    axis.plot(robots, [row["served_per_s"] for row in fleet], "o-", color="tab:red",
              label="served, robots at rate r (B = largest)")
    if analysis.get("knee"):
        axis.axvline(analysis["knee"], color="tab:red", ls=":", label="measured knee")
    axis.axvline(analysis["n_max"], color="tab:green", ls=":", label="N_max formula")
    axis.set_xlabel("robots N")
    axis.set_ylabel("observations / s")
    axis.set_title("Demand and supply of one flow-policy server (2 CPU cores)")
    axis.legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
