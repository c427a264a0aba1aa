"""The latency sweep's bookkeeping (harness.bench.sweep): what a point runs, and how finished
points read back as the table (client and flow variant, success, steps, join ratio). The
harness runs themselves are the closed-loop tests' business; here a point's run directory is
written as a finished run leaves it."""

from __future__ import annotations

import json
from pathlib import Path

from harness.bench import sweep


def finished_point(out: Path, name: str, *, client: dict, policy: dict, latency_s: float,
                   success_rate: float, join_ratio: float | None) -> None:
    run_dir = out / name
    run_dir.mkdir(parents=True)
    config = {"env": {"name": "mujoco_pick_place"}, "transport": {"kind": "zmq"},
              "client": client, "policy": {"chunk_size": 8, **policy}, "faults": {"timed": []},
              "latency": {"kind": "fixed", "value_s": latency_s}}
    (run_dir / "config.json").write_text(json.dumps(config))
    (run_dir / "summary.json").write_text(json.dumps({
        "success_rate": success_rate, "success_wilson95": [0.5, 0.99], "steps_median": 68.0,
        "join_ratio": join_ratio}))


def test_a_client_with_a_variant_runs_the_flow_policy_so(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(sweep, "run_harness", lambda run_dir, overrides: ran.append(
        (run_dir.name, overrides)))
    sweep.run_point(tmp_path, "mujoco_pick_place", 5, ["policy=flow"], "modelled", "zmq",
                    "delay_aware+training", 8, 150.0)
    ((name, overrides),) = ran
    assert name == "zmq-modelled-delay_aware+training-chunk8-delay150ms"
    assert "client=delay_aware" in overrides and "policy.rtc=training" in overrides
    assert "latency.value_s=0.3" in overrides and overrides[-1] == "policy=flow"


def test_finished_points_read_back_with_their_variant_and_join_ratio(tmp_path, capsys):
    finished_point(tmp_path, "a", client={"mode": "delay_aware"}, policy={"rtc": "guidance"},
                   latency_s=0.3, success_rate=0.95, join_ratio=1.334)
    finished_point(tmp_path, "b", client={"mode": "asynchronous", "ensembling": "newest"},
                   policy={}, latency_s=0.3, success_rate=0.1, join_ratio=None)
    rows = sweep.collect(tmp_path)
    assert [(r["client"], r["delay_ms"], r["link"]) for r in rows] == [
        ("async_newest", 150.0, "modelled"), ("delay_aware+guidance", 150.0, "modelled")]
    delays, lines = sweep.success_grid(rows)
    assert delays == [150.0]
    assert dict(lines) == {"modelled / zmq / async_newest / 8": ["10% (50%-99%) · 68"],
                           "modelled / zmq / delay_aware+guidance / 8":
                               ["95% (50%-99%) · 68 · j1.33"]}
