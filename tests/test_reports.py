"""`reports`: a sweep's run directories aggregated into one row per config, checked against
counts made by hand from the episode files the harness itself wrote (small real runs:
`transport=local`, modelled faults, 2-3 episodes a config), and the CLI around it.

The sweeps are made once per session and shared with `test_report_html.py`
(`harness_sweep`); a test that changes files works on a copy.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from statsmodels.stats.proportion import proportion_confint

from reports import NoRunsError, load_sweep
from reports import episodes as ep
from reports import overrides as ov
from reports.__main__ import main
from reports.timeline import timeline
from tests.conftest import file_lock, shared_tmp_dir

LOCAL = ["transport=local", "faults.apply=modelled", "latency.kind=fixed"]
"""No server process, no proxy: the link's faults are modelled in the client's clock."""
DELAY_SWEEP = [*LOCAL, "faults=fixed_delay", "faults.timed.0.delay_s=0,0.1",
               "client=async_newest,synchronous", "env.episodes_per_task=2"]
SHARDED = [*LOCAL, "faults=lte", "env.episodes_per_task=3"]


def harness_sweep(tmp_path_factory, name: str, *overrides: str,
                  multirun: bool = True) -> Path:
    """Run `python -m harness [-m] overrides` into `<shared>/name` once per test session,
    whichever test worker asks first (`shared_tmp_dir`): the others wait on its lock and
    reuse it. The delay sweep feeds three report test files, which run on different
    workers; each used to run it again."""
    out = shared_tmp_dir(tmp_path_factory) / name
    out.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(out.parent / f".{out.name}.lock"):
        if (out / ".complete").is_file():
            return out
        where = f"hydra.sweep.dir={out}" if multirun else f"hydra.run.dir={out}"
        result = subprocess.run([sys.executable, "-m", "harness",
                                 *(["-m"] if multirun else []), *overrides, where],
                                cwd=out.parent, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        (out / ".complete").touch()
    return out


@pytest.fixture(scope="session")
def delay_sweep(tmp_path_factory) -> Path:
    """4 configs (delay 0 and 100 ms one way x two clients), 2 episodes each."""
    return harness_sweep(tmp_path_factory, "delay-sweep", *DELAY_SWEEP)


@pytest.fixture(scope="session")
def sharded(tmp_path_factory) -> Path:
    """One config's 3 episodes over `shard=0/2,1/2` (shard-0-of-2: 1 and 3, 1-of-2: 2)."""
    return harness_sweep(tmp_path_factory, "sharded", *SHARDED,
                         "shard=0/2,1/2")


@pytest.fixture(scope="session")
def unsharded(tmp_path_factory) -> Path:
    """The same config's 3 episodes in one plain run."""
    return harness_sweep(tmp_path_factory, "unsharded", *SHARDED,
                         multirun=False)


def copy_of(sweep: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(sweep, tmp_path / sweep.name))


def episode_files(job_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((job_dir / "episodes").glob("*.json"))]


def job_of(sweep_dir: Path, **overrides: str) -> Path:
    """The one job directory of `sweep_dir` whose overrides include all of `overrides`."""
    (found,) = [p.parent for p in sweep_dir.glob("*/overrides.json")
                if all(f"{k}={v}" in json.loads(p.read_text()) for k, v in overrides.items())]
    return found


@pytest.mark.parametrize("lines, parsed", [
    (["transport=zmq"], {"transport": "zmq"}),                      # a group choice
    (["faults.timed.0.delay_s=0.05"], {"faults.timed.0.delay_s": 0.05}),  # a number
    (["env.tasks='0,3'"], {"env.tasks": "0,3"}),                    # quoted: one string
    (["+experiment=latency_sweep"], {"experiment": "latency_sweep"}),  # + is how, not which
    (["~client.fallback"], {"client.fallback": ov.DELETED}),         # a deleted key
    (["seed=1", "seed=2"], {"seed": 2}),                            # the last one wins
])
def test_overrides_parse_as_hydra_reads_them(lines, parsed):
    assert ov.parse(lines) == parsed


def test_config_id_leaves_out_shard_resume_and_the_listen_address():
    sharded = ov.parse(["transport=zmq", "shard=1/3", "resume=/runs/x", "faults=lte",
                        "transport.listen=tcp://127.0.0.1:27923"])
    assert ov.config_id(sharded) == "faults=lte,transport=zmq"
    assert ov.config_id({}) == "(no overrides)"


@pytest.mark.slow
def test_expected_points_are_the_sweeps_product(delay_sweep):
    points = ov.sweep_points(delay_sweep / "multirun.yaml")
    assert len(points) == 4
    assert {(p["client"], p["faults.timed.0.delay_s"]) for p in points} == {
        ("async_newest", 0), ("async_newest", 0.1), ("synchronous", 0), ("synchronous", 0.1)}
    assert all(p["transport"] == "local" and p["env.episodes_per_task"] == 2 for p in points)


@pytest.mark.slow
def test_every_config_is_one_row_with_its_overrides_as_columns(delay_sweep):
    sweep = load_sweep(delay_sweep)
    assert len(sweep.configs) == 4 and sweep.missing.empty
    assert set(sweep.swept_keys) == {"client", "faults.timed.0.delay_s"}
    assert sweep.override_keys[:2] == sweep.swept_keys
    assert {"transport", "faults", "faults.apply", "latency.kind"} <= set(sweep.override_keys)
    configs = sweep.configs
    assert configs["injected_delay_s"].tolist() == configs["faults.timed.0.delay_s"].tolist()
    assert set(configs["transport_kind"]) == {"local"}
    assert configs["latency_budget_s"].tolist() == [0.2] * 4
    assert configs["expected_episodes"].tolist() == [2] * 4
    assert len(sweep.episodes) == 8 and set(sweep.episodes["config"]) == set(configs.index)


@pytest.mark.slow
def test_success_counts_and_wilson_intervals_match_the_episode_files(delay_sweep, tmp_path):
    copy = copy_of(delay_sweep, tmp_path)
    flipped = job_of(copy, client="synchronous", **{"faults.timed.0.delay_s": 0}) \
        / "episodes" / "task000-ep0001.json"
    row = json.loads(flipped.read_text())
    assert row["success"] is True  # the synchronous client at no delay succeeds
    flipped.write_text(json.dumps({**row, "success": False}))
    sweep = load_sweep(copy)
    for config, job_dirs in sweep.job_dirs.items():
        rows = [r for job_dir in job_dirs for r in episode_files(job_dir)]
        successes = sum(r["success"] for r in rows)
        figures = sweep.configs.loc[config]
        assert (figures["episodes"], figures["successes"]) == (len(rows), successes)
        low, high = proportion_confint(successes, len(rows), method="wilson")
        assert (figures["wilson95_low"], figures["wilson95_high"]) == (low, high)
    flipped_config = sweep.episodes.set_index(["job_dir", "episode"]).loc[
        (flipped.parent.parent.name, 1), "config"]
    assert sweep.configs.loc[flipped_config, "successes"] == 1
    assert sweep.configs.loc[flipped_config, "wilson95_low"] == pytest.approx(0.0945, abs=1e-4)


@pytest.mark.slow
def test_latency_and_failsafe_figures_equal_the_jobs_own_summary(delay_sweep):
    """A config run as one job reads the same here as in its summary.json."""
    sweep = load_sweep(delay_sweep)
    same = ["latency_p50_s", "latency_p95_s", "latency_p99_s", "time_to_detect_s_p50",
            "time_to_detect_s_max", "time_to_recover_s_p50", "time_to_recover_s_max",
            "faults_undetected", "faults_unrecovered", "blind_s", "stale_actions",
            "requests_lost", "sessions_reopened", "invariant_breaches", "dead_episodes"]
    for config, (job_dir,) in sweep.job_dirs.items():
        summary = json.loads((job_dir / "summary.json").read_text())
        figures = sweep.configs.loc[config]
        for key in same:
            expected = float("nan") if summary[key] is None else summary[key]
            assert figures[key] == pytest.approx(expected, nan_ok=True), key
        round_trips = (sweep.round_trips["config"] == config).sum()
        assert figures["over_budget_share"] * round_trips == pytest.approx(
            summary["latency_over_budget"])
        assert figures["fault_mechanisms"] == ", ".join(summary["fault_mechanisms"])


@pytest.mark.slow
def test_the_round_trip_split_is_the_median_of_each_part(delay_sweep):
    sweep = load_sweep(delay_sweep)
    for config, (job_dir,) in sweep.job_dirs.items():
        ticks = pd.concat(pd.read_parquet(p) for p in sorted((job_dir / "traces").glob("*")))
        merged = ticks.dropna(subset=["latency_s"])
        network = (merged["measured_latency_s"] - merged["server_queue_s"]
                   - merged["server_infer_s"])
        figures = sweep.configs.loc[config]
        assert figures["network_p50_s"] == pytest.approx(network.median())
        assert figures["server_queue_p50_s"] == pytest.approx(merged["server_queue_s"].median())
        assert figures["server_infer_p50_s"] == pytest.approx(merged["server_infer_s"].median())


@pytest.mark.slow
def test_steps_and_chunk_joins_per_config_come_from_its_episode_rows(delay_sweep):
    """The join ratio is a ratio of means (one jerky episode weighs by its jumps, not by
    one vote), and a config's median length is its summary's."""
    sweep = load_sweep(delay_sweep)
    for config, (job_dir,) in sweep.job_dirs.items():
        rows = pd.DataFrame(episode_files(job_dir))
        figures = sweep.configs.loc[config]
        assert rows["joins"].gt(0).all()  # 2 episodes with several chunks each
        assert figures["join_jump"] == pytest.approx(rows["join_jump"].mean())
        assert figures["inside_jump"] == pytest.approx(rows["inside_jump"].mean())
        assert figures["join_ratio"] == pytest.approx(
            rows["join_jump"].mean() / rows["inside_jump"].mean())
        summary = json.loads((job_dir / "summary.json").read_text())
        for key in ("steps_median", "join_jump", "inside_jump", "join_ratio"):
            assert figures[key] == pytest.approx(summary[key]), key


@pytest.mark.slow
def test_traces_without_the_server_columns_split_as_nan(delay_sweep, tmp_path):
    copy = copy_of(delay_sweep, tmp_path)
    old = job_of(copy, client="async_newest", **{"faults.timed.0.delay_s": 0})
    for trace in (old / "traces").glob("*.parquet"):
        pd.read_parquet(trace).drop(columns=["server_queue_s", "server_infer_s"]).to_parquet(
            trace, index=False)
    sweep = load_sweep(copy)
    config = sweep.episodes.loc[sweep.episodes["job_dir"] == old.name, "config"].iloc[0]
    figures = sweep.configs.loc[config]
    assert figures[["network_p50_s", "server_queue_p50_s", "server_infer_p50_s"]].isna().all()
    assert figures["latency_p50_s"] == pytest.approx(0.1)  # latency.kind=fixed, no delay
    assert sweep.configs.drop(index=config)["network_p50_s"].notna().all()


@pytest.mark.slow
def test_a_deleted_episode_file_is_reported_missing(delay_sweep, tmp_path, caplog):
    copy = copy_of(delay_sweep, tmp_path)
    job = job_of(copy, client="synchronous", **{"faults.timed.0.delay_s": 0.1})
    (job / "episodes" / "task000-ep0002.json").unlink()
    with caplog.at_level(logging.WARNING):
        sweep = load_sweep(copy)
    (config,) = [c for c, dirs in sweep.job_dirs.items() if dirs == [job]]
    assert sweep.missing.episodes.to_dict("records") == [
        {"config": config, "task": 0, "episode": 2}]
    assert sweep.missing.configs == [] and sweep.missing.shards == []
    figures = sweep.configs.loc[config]
    assert (figures["episodes"], figures["expected_episodes"], figures["missing_episodes"]) \
        == (1, 2, 1)
    assert f"config {config}: 1 episode(s) missing: task 0 episode 2" in caplog.text


@pytest.mark.slow
def test_a_config_without_a_job_directory_is_named(delay_sweep, tmp_path, capsys):
    copy = copy_of(delay_sweep, tmp_path)
    gone = job_of(copy, client="async_newest", **{"faults.timed.0.delay_s": 0.1})
    shutil.rmtree(gone)
    sweep = load_sweep(copy)
    (config,) = sweep.missing.configs
    assert "client=async_newest" in config and "faults.timed.0.delay_s=0.1" in config
    assert len(sweep.configs) == 3 and sweep.missing.episodes.empty
    assert main([str(copy)]) == 0  # a partial sweep is not a failure
    assert (copy / "report.html").is_file() and (copy / "configs.csv").is_file()


@pytest.mark.slow
def test_shards_merge_into_the_unsharded_episode_set(sharded, unsharded):
    merged, whole = load_sweep(sharded), load_sweep(unsharded)
    assert len(merged.configs) == 1 and merged.missing.empty and merged.duplicates.empty
    (config,) = merged.configs.index
    assert merged.configs.loc[config, "jobs"] == 2
    assert sorted(merged.episodes["shard"]) == ["0/2", "0/2", "1/2"]
    key = ["task", "episode", "seed", "success", "steps"]
    assert merged.episodes[key].to_dict("records") == whole.episodes[key].to_dict("records")
    assert merged.configs.loc[config, "episodes"] == whole.configs.iloc[0]["episodes"] == 3


@pytest.mark.slow
def test_a_missing_shard_and_its_episodes_are_named(sharded, tmp_path):
    copy = copy_of(sharded, tmp_path)
    (shard_1,) = copy.glob("*/shard-1-of-2")
    shutil.rmtree(shard_1)
    sweep = load_sweep(copy)
    (config,) = sweep.configs.index
    assert sweep.missing.shards == [(config, "1/2")]
    assert sweep.missing.episodes["episode"].tolist() == [2]


@pytest.mark.slow
def test_an_episode_in_two_shards_is_counted_once_and_both_dirs_named(sharded, tmp_path,
                                                                      caplog):
    copy = copy_of(sharded, tmp_path)
    (shard_0,), (shard_1,) = copy.glob("*/shard-0-of-2"), copy.glob("*/shard-1-of-2")
    for folder in ("episodes", "traces"):
        (twin,) = (shard_0 / folder).glob("task000-ep0001.*")
        shutil.copy(twin, shard_1 / folder)
    with caplog.at_level(logging.WARNING):
        sweep = load_sweep(copy)
    assert sweep.configs.iloc[0]["episodes"] == 3 and len(sweep.episodes) == 3
    (duplicate,) = sweep.duplicates.to_dict("records")
    assert (duplicate["task"], duplicate["episode"]) == (0, 1)
    kept, dropped = str(shard_0.relative_to(copy)), str(shard_1.relative_to(copy))
    assert (duplicate["kept_dir"], duplicate["dropped_dir"]) == (kept, dropped)
    assert f"task 0 episode 1 is in both {kept} and {dropped}" in caplog.text


@pytest.mark.slow
def test_sibling_shard_dirs_of_one_config_merge(unsharded, tmp_path):
    """The other layout: each shard its own job directory with its own .hydra record."""
    for i, keep in ((0, {"task000-ep0001", "task000-ep0003"}), (1, {"task000-ep0002"})):
        shard = Path(shutil.copytree(unsharded, tmp_path / "sweep" / str(i)))
        for path in [*shard.glob("episodes/*"), *shard.glob("traces/*")]:
            if path.stem not in keep:
                path.unlink()
        config = json.loads((shard / "config.json").read_text())
        (shard / "config.json").write_text(json.dumps({**config, "shard": f"{i}/2"}))
        with open(shard / ".hydra" / "overrides.yaml", "a") as f:
            f.write(f"- shard={i}/2\n")
    merged, whole = load_sweep(tmp_path / "sweep"), load_sweep(unsharded)
    assert len(merged.configs) == 1 and merged.configs.iloc[0]["jobs"] == 2
    assert merged.missing.empty and merged.duplicates.empty
    assert merged.episodes["episode"].tolist() == whole.episodes["episode"].tolist() == [1, 2, 3]


def test_a_directory_without_runs_is_an_error(tmp_path):
    (tmp_path / "empty" / "nothing-here").mkdir(parents=True)
    with pytest.raises(NoRunsError, match="no runs found"):
        load_sweep(tmp_path / "empty")
    with pytest.raises(NoRunsError, match="not a directory"):
        load_sweep(tmp_path / "absent")


@pytest.mark.slow
def test_the_cli_fails_in_one_line_on_a_directory_without_runs(tmp_path):
    result = subprocess.run([sys.executable, "-m", "reports", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "no runs found" in result.stderr
    assert not (tmp_path / "configs.csv").exists()


@pytest.mark.slow
def test_the_cli_help_names_its_options():
    result = subprocess.run([sys.executable, "-m", "reports", "--help"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0
    for option in ("--out", "--html", "--no-html", "--timeline-episodes", "multirun"):
        assert option in result.stdout


@pytest.mark.slow
def test_csv_and_parquet_hold_the_same_rows(delay_sweep, tmp_path, capsys):
    assert main([str(delay_sweep), "--out", str(tmp_path), "--no-html"]) == 0
    assert "faults.timed.0.delay_s=0.1 client=synchronous" in capsys.readouterr().out
    assert not (tmp_path / "report.html").exists()
    for name, rows in (("configs", 4), ("episodes", 8)):
        from_csv = pd.read_csv(tmp_path / f"{name}.csv")
        from_parquet = pd.read_parquet(tmp_path / f"{name}.parquet")
        assert len(from_csv) == len(from_parquet) == rows
        assert list(from_csv.columns) == list(from_parquet.columns)
        numbers = from_parquet.select_dtypes("number").columns
        pd.testing.assert_frame_equal(from_csv[numbers], from_parquet[numbers],
                                      check_dtype=False)
        assert from_csv["config"].tolist() == from_parquet["config"].tolist()


@pytest.mark.parametrize("env, seen, episodes", [
    ({"tasks": "0", "episodes_per_task": 2}, [], [(0, 1), (0, 2)]),
    ({"tasks": "0,3", "episodes_per_task": 1}, [], [(0, 1), (3, 30001)]),  # task*10000+i+1
    ({"tasks": "all", "episodes_per_task": 1}, [2, 0, 2], [(0, 1), (2, 20001)]),  # seen ones
    ({"tasks": "0", "episodes_per_task": 0}, [], []),
])
def test_expected_episodes_follow_env_tasks(env, seen, episodes):
    expected = ep.expected("c", {"env": env}, seen)
    assert list(zip(expected["task"], expected["episode"], strict=True)) == episodes
    assert ep.expected("c", {}, seen) is None  # a config that does not say


@pytest.mark.slow
def test_a_job_that_never_started_is_a_config_without_episodes(delay_sweep, tmp_path):
    """Hydra's record only (the job died before writing config.json): its config is
    expected, with every episode missing."""
    (job, *_) = sorted(delay_sweep.glob("*/config.json"))
    shutil.copytree(job.parent / ".hydra", tmp_path / "sweep" / "job" / ".hydra")
    sweep = load_sweep(tmp_path / "sweep")
    (config,) = sweep.configs.index
    figures = sweep.configs.loc[config]
    assert (figures["episodes"], figures["expected_episodes"]) == (0, 2)
    assert sweep.missing.episodes["episode"].tolist() == [1, 2]
    assert figures[["success_rate", "wilson95_low", "latency_p50_s"]].isna().all()
    assert figures["transport_kind"] == "local"  # from .hydra/config.yaml


@pytest.mark.slow
def test_a_row_without_its_trace_counts_but_adds_no_round_trips(delay_sweep, tmp_path,
                                                                 caplog):
    copy = copy_of(delay_sweep, tmp_path)
    job = job_of(copy, client="synchronous", **{"faults.timed.0.delay_s": 0})
    (job / "traces" / "task000-ep0001.parquet").unlink()
    with caplog.at_level(logging.WARNING):
        sweep = load_sweep(copy)
    config = sweep.episodes.loc[sweep.episodes["job_dir"] == job.name, "config"].iloc[0]
    assert sweep.configs.loc[config, "episodes"] == 2 and sweep.missing.empty
    assert set(sweep.round_trips.loc[sweep.round_trips["config"] == config, "episode"]) == {2}
    assert "task 0 episode 1 has a row but no trace" in caplog.text
    drawn = timeline(sweep).layout.updatemenus[0].buttons
    (view,) = [b for b in drawn if b.label == sweep.configs.loc[config, "label"]]
    assert view.args[1]["yaxis.ticktext"] == ["task 0 ep 2 ✓"]


def test_a_report_on_one_job_directory_never_overwrites_the_jobs_own_files(delay_sweep,
                                                                            tmp_path):
    """A job writes its own episodes.csv; the report's has another layout. Pointed at the
    job's directory (or told to write there), the report goes to its `report/` folder."""
    job = job_of(copy_of(delay_sweep, tmp_path), client="synchronous",
                 **{"faults.timed.0.delay_s": "0.1"})
    own = {p.name: p.read_bytes() for p in job.iterdir() if p.is_file()}
    assert "episodes.csv" in own
    assert main([str(job), "--no-html"]) == 0
    assert main([str(job.parent), "--out", str(job), "--no-html"]) == 0
    assert {p.name: p.read_bytes() for p in job.iterdir() if p.is_file()} == own
    assert len(pd.read_csv(job / "report" / "configs.csv")) == 4  # the last one: the sweep



def test_a_missing_reports_extra_is_one_line_naming_the_install(delay_sweep, tmp_path,
                                                                monkeypatch, caplog):
    """statsmodels made missing the way Python reports it (None in sys.modules: a test
    double of the extra not being installed)."""
    for name in ("statsmodels", "statsmodels.stats", "statsmodels.stats.proportion"):
        monkeypatch.setitem(sys.modules, name, None)
    assert main([str(delay_sweep), "--out", str(tmp_path), "--no-html"]) == 2
    assert ("missing package 'statsmodels': install the 'reports' extra, "
            "pip install -e '.[reports]'") in caplog.text
    assert not (tmp_path / "configs.csv").exists()
