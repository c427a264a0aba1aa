"""`log_run` copies a real harness job to an offline wandb run: read back from the run's
`.wandb` transaction log, it holds the resolved config, one history row per episode, the run
summary and the report; no network, no service process or environment change outlives it;
a wandb error or a missing package is said clearly, and the run's files stay as they were."""

from __future__ import annotations

import json
import logging
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from harness.results.wandb_log import (
    LoggerConfig,
    LoggerKind,
    LoggerMode,
    WandbUnavailable,
    check_available,
    episode_metrics,
    flatten_summary,
    log_run,
)
from tests.conftest import hide_package

REPO = Path(__file__).resolve().parents[1]
try:
    import wandb  # noqa: F401  (only to know whether it imports)

    WANDB_IMPORTS = True
except ImportError:
    WANDB_IMPORTS = False
needs_wandb = pytest.mark.skipif(not WANDB_IMPORTS, reason="wandb is not importable: "
                                 "pip install -e '.[wandb]'")
OFFLINE = LoggerConfig(kind=LoggerKind.wandb, group="test-sweep")
REPORT_HTML = "<html><body>report of the test run</body></html>"


def read_wandb_records(path: Path) -> list:
    """Every record of a `.wandb` file, parsed with wandb's own protobuf `Record`.

    wandb 0.31 ships no Python reader (its leveldb-log DataStore went with the legacy
    internal process), so this follows the format its core writes: a 7-byte header
    (":W&B", 0xBEE1, version 0), then 32 KiB blocks of chunks, each `crc32 (IEEE, seeded
    with the type byte), length, type` and data, a record split FIRST/MIDDLE/LAST across
    blocks. A bad checksum fails the test rather than parse garbage.
    """
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert struct.unpack("<4sHB", data[:7]) == (b":W&B", 0xBEE1, 0), data[:7]
    records, pending, pos, block = [], b"", 7, 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # trailer too short for a chunk header: zero padding
            pos += block - pos % block
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if (crc, length, kind) == (0, 0, 0):  # preallocated rest of the block
            pos += block - pos % block
            continue
        chunk = data[pos + 7:pos + 7 + length]
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) == crc, f"bad crc at {pos}"
        pending += chunk
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    assert pending == b"", "the file ends inside a record"
    return records


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def _of_type(records: list, kind: str) -> list:
    return [getattr(r, kind) for r in records if r.WhichOneof("record_type") == kind]


def _final_summary(records: list) -> dict:
    summary: dict = {}
    for record in _of_type(records, "summary"):
        summary |= {_key(item): json.loads(item.value_json) for item in record.update}
        for item in record.remove:
            summary.pop(_key(item), None)
    return summary


DRIVER = r"""
import atexit, json, logging, os, socket, sys, threading
from pathlib import Path

out, run_dir, report = (Path(arg) for arg in sys.argv[1:])
attempts = []
# Registered before wandb is imported, so it runs after wandb's own exit hooks (LIFO):
# a probe at exit (telemetry, error reports) is recorded too.
atexit.register(lambda: (out / "network.json").write_text(json.dumps(attempts)))
real_connect = socket.socket.connect

def getaddrinfo(host, port, *args, **kwargs):  # test double: no DNS
    attempts.append(f"getaddrinfo {host}:{port}")
    raise socket.gaierror(f"test: no network for {host}")

def connect(sock, address):  # test double: Unix sockets only (wandb's service is one)
    if sock.family != socket.AF_UNIX:
        attempts.append(f"connect {address}")
        raise OSError(f"test: no network for {address}")
    return real_connect(sock, address)

socket.getaddrinfo, socket.socket.connect = getaddrinfo, connect
logging.basicConfig(level=logging.INFO)
from harness.results.store import ResultsStore
from harness.results.wandb_log import LoggerConfig, log_run

local_dir = log_run(
    run_dir, LoggerConfig(kind="wandb", group="test-sweep"),
    resolved_config=json.loads((run_dir / "config.json").read_text()),
    name="transport=local,env.episodes_per_task=3", episodes=ResultsStore(run_dir).rows(),
    summary=json.loads((run_dir / "summary.json").read_text()), report_html=report)
children = []
for listed in Path(f"/proc/{os.getpid()}/task").glob("*/children"):
    for pid in listed.read_text().split():
        with_nul = Path(f"/proc/{pid}/cmdline")
        if with_nul.exists():
            children.append(with_nul.read_bytes().replace(b"\0", b" ").decode())
(out / "result.json").write_text(json.dumps({
    "dir": local_dir and str(local_dir), "children": children,
    "threads": [thread.name for thread in threading.enumerate()],
    "env_after": {key: os.environ.get(key) for key in ("WANDB_MODE", "WANDB_DATA_DIR")}}))
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A real 3-episode job of the harness (local transport, a few seconds), filmed."""
    root = tmp_path_factory.mktemp("job")
    result = subprocess.run([sys.executable, "-m", "harness", "transport=local",
                             "env.episodes_per_task=3", "record=all",
                             f"hydra.run.dir={root / 'run'}"],
                            cwd=root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return root / "run"


@pytest.fixture(scope="module")
def logged(run_dir, tmp_path_factory) -> dict:
    """`log_run` offline on the job, in a process of its own (`DRIVER`) whose DNS and
    non-Unix connects are refused and recorded until it has exited; WANDB_MODE unset
    before the call, wandb's cache and config in a temporary home."""
    out = tmp_path_factory.mktemp("logged")
    (out / "report.html").write_text(REPORT_HTML)
    env = {key: value for key, value in os.environ.items()
           if key not in ("WANDB_MODE", "WANDB_DATA_DIR")}
    env |= {"WANDB_CACHE_DIR": str(out / "home" / "cache"),
            "WANDB_CONFIG_DIR": str(out / "home" / "config")}
    result = subprocess.run([sys.executable, "-c", DRIVER, str(out), str(run_dir),
                             str(out / "report.html")], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    logged = json.loads((out / "result.json").read_text())
    assert logged["dir"] is not None, f"log_run returned None: {result.stderr[-3000:]}"
    logged["dir"] = Path(logged["dir"])
    wandb_files = list(logged["dir"].glob("run-*.wandb"))
    assert len(wandb_files) == 1, wandb_files
    logged["records"] = read_wandb_records(wandb_files[0])
    logged["network"] = json.loads((out / "network.json").read_text())
    return logged


@needs_wandb
@pytest.mark.slow  # a harness job, then wandb in a process of its own
def test_offline_run_is_written_under_the_run_dir(run_dir, logged):
    assert logged["dir"].parent == run_dir / "wandb"
    assert logged["dir"].name.startswith("offline-run-")
    assert [p.name for p in (run_dir / "wandb").glob("run-*")] == []  # no online run


@needs_wandb
@pytest.mark.slow
def test_config_holds_the_resolved_config(run_dir, logged):
    (run,) = _of_type(logged["records"], "run")
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    resolved = json.loads((run_dir / "config.json").read_text())
    assert set(resolved) <= set(config)
    assert config["transport"]["kind"] == "local"
    assert config["env"]["episodes_per_task"] == 3
    assert run.run_group == "test-sweep"
    assert run.display_name == "transport=local,env.episodes_per_task=3"


@needs_wandb
@pytest.mark.slow
def test_history_has_one_row_per_episode_with_its_success(run_dir, logged):
    rows = [{_key(item): json.loads(item.value_json) for item in history.item}
            for history in _of_type(logged["records"], "history")]
    episodes = [json.loads(p.read_text()) for p in sorted((run_dir / "episodes").glob("*.json"))]
    assert len(rows) == 3
    assert [row["_step"] for row in rows] == [0, 1, 2]
    assert [row["episode/success"] for row in rows] == [e["success"] for e in episodes]
    assert [row["episode/steps"] for row in rows] == [e["steps"] for e in episodes]
    assert not any("episode/events" in row or "episode/termination" in row for row in rows)


@needs_wandb
@pytest.mark.slow
def test_summary_holds_the_run_summary_with_intervals_split(run_dir, logged):
    summary = _final_summary(logged["records"])
    written = json.loads((run_dir / "summary.json").read_text())
    assert summary["success_rate"] == written["success_rate"]
    assert [summary["success_wilson95_low"], summary["success_wilson95_high"]] == \
        written["success_wilson95"]
    assert summary["fallback_ticks"] == written["fallback_ticks"]  # the total, not an episode's
    assert not [key for key in summary if key.startswith("episode/")]


@needs_wandb
@pytest.mark.slow
def test_report_and_episodes_are_logged_as_artifacts(run_dir, logged):
    artifacts = {a.type: a for a in _of_type(logged["records"], "artifact")}
    assert set(artifacts) == {"report", "episodes"}
    (report,) = artifacts["report"].manifest.contents
    assert report.path == "report.html"
    assert Path(report.local_path).read_text() == REPORT_HTML
    assert Path(report.local_path).is_relative_to(run_dir / "wandb")  # staged with the run
    (table,) = artifacts["episodes"].manifest.contents
    assert table.path == "episodes.table.json"
    logged_table = json.loads(Path(table.local_path).read_text())
    csv_columns = (run_dir / "episodes.csv").read_text().splitlines()[0].split(",")
    assert sorted(logged_table["columns"]) == sorted(csv_columns)  # no `events`
    assert len(logged_table["data"]) == 3


@needs_wandb
@pytest.mark.slow
def test_each_episodes_video_is_logged_with_its_step_as_a_copy_of_the_file(run_dir, logged):
    rows = [{_key(item): json.loads(item.value_json) for item in history.item}
            for history in _of_type(logged["records"], "history")]
    episodes = [json.loads(p.read_text()) for p in sorted((run_dir / "episodes").glob("*.json"))]
    assert [e["video"] for e in episodes] == [f"videos/task000-ep000{i}.mp4" for i in (1, 2, 3)]
    for row, episode in zip(rows, episodes, strict=True):
        media = {key.removeprefix("episode/video/"): value for key, value in row.items()
                 if key.startswith("episode/video/")}  # a media value's fields, one per key
        assert media["_type"] == "video-file" and media["caption"] == Path(episode["video"]).stem
        copied = logged["dir"] / "files" / media["path"]
        assert copied.read_bytes() == (run_dir / episode["video"]).read_bytes()


@needs_wandb
@pytest.mark.slow
def test_nothing_outlives_the_call(logged):
    assert logged["env_after"] == {"WANDB_MODE": None, "WANDB_DATA_DIR": None}
    assert logged["network"] == []
    assert [c for c in logged["children"] if "wandb-core" in c] == []
    assert [t for t in logged["threads"] if t.startswith("wandb")] == []


@needs_wandb
@pytest.mark.slow
def test_wandb_error_is_logged_and_results_are_kept(run_dir, monkeypatch, caplog):
    import wandb

    def init_that_fails(**kwargs):  # test double: wandb's service cannot start
        raise wandb.errors.Error("test: service did not start")

    monkeypatch.setattr(wandb, "init", init_that_fails)
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    summary_before = (run_dir / "summary.json").read_bytes()
    with caplog.at_level(logging.ERROR, logger="harness.results.wandb_log"):
        result = log_run(run_dir, OFFLINE, resolved_config={}, name="failing", episodes=[],
                         summary={}, report_html=None)
    assert result is None
    assert "could not log" in caplog.text and "service did not start" in caplog.text
    assert os.environ["WANDB_MODE"] == "dryrun"
    assert (run_dir / "summary.json").read_bytes() == summary_before


@pytest.fixture
def wandb_not_installed(monkeypatch):
    """Test double for an environment without the package: `import wandb` fails."""
    hide_package(monkeypatch, "wandb")


def test_missing_wandb_is_a_clear_error_before_anything_is_written(wandb_not_installed,
                                                                    tmp_path):
    with pytest.raises(WandbUnavailable, match=r"needs the wandb package: pip install -e "
                                               r"'\.\[wandb\]'"):
        check_available()
    with pytest.raises(WandbUnavailable, match="logger=wandb"):
        log_run(tmp_path, OFFLINE, resolved_config={}, name="x", episodes=[], summary={},
                report_html=None)
    assert list(tmp_path.iterdir()) == []


def test_logger_none_and_disabled_need_no_wandb(wandb_not_installed, tmp_path):
    for config in (LoggerConfig(), LoggerConfig(kind="wandb", mode="disabled")):
        check_available(config)
        assert log_run(tmp_path, config, resolved_config={}, name="x", episodes=[],
                       summary={}, report_html=None) is None
    assert list(tmp_path.iterdir()) == []


def test_logger_config_defaults():
    config = LoggerConfig()
    assert (config.kind, config.project, config.entity, config.group, config.mode,
            config.dir) == (LoggerKind.none, "robot-policy-harness", None, None,
                            LoggerMode.offline, None)


@pytest.mark.parametrize("field, value, message", [
    ("mode", "upload", r"logger\.mode='upload': expected one of \['offline', 'online', "
                       r"'disabled'\]"),
    ("kind", "mlflow", r"logger\.kind='mlflow': expected one of \['none', 'wandb'\]"),
    ("project", "team/project", r"logger\.project='team/project'"),  # wandb refuses '/'
    ("project", "", r"logger\.project=''"),
    ("group", "", r"logger\.group=''"),
    ("entity", "x" * 129, r"logger\.entity='x+'"),
    ("dir", " ", r"logger\.dir=' '"),
])
def test_logger_config_rejects_a_bad_value_naming_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        LoggerConfig(**{field: value})


def test_flatten_summary_splits_intervals_only():
    assert flatten_summary({"success_wilson95": [0.25, 1.0], "execution": ["asynchronous"],
                            "fault_mechanisms": [], "success_rate": 0.5, "pair": [True, False],
                            "first_dead_reason": None}) == {
        "success_wilson95_low": 0.25, "success_wilson95_high": 1.0,
        "execution": ["asynchronous"], "fault_mechanisms": [], "success_rate": 0.5,
        "pair": [True, False],  # flags, not an interval
        "first_dead_reason": None}


def test_episode_metrics_keep_numbers_and_flags_only():
    import numpy as np

    assert episode_metrics({"success": np.bool_(True), "steps": np.int64(42), "p50": 0.5,
                            "missing": float("nan"), "none": None, "termination": "success",
                            "events": [{"dead": "x"}]}) == {
        "episode/success": True, "episode/steps": 42, "episode/p50": 0.5}


@needs_wandb
@pytest.mark.slow
def test_logger_wandb_on_the_command_line_copies_the_job_with_its_own_report(tmp_path):
    """`python -m harness logger=wandb`: the job's run is copied offline with the job's HTML
    report (rendered by `reports`), and config.json records no logger (a resume with
    another logger is the same run)."""
    run = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "harness", "transport=local",
                             "env.episodes_per_task=2", "logger=wandb", f"hydra.run.dir={run}"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "WANDB_MODE": "dryrun"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "logger" not in json.loads((run / "config.json").read_text())
    (offline,) = (run / "wandb").glob("offline-run-*")
    (records_file,) = offline.glob("*.wandb")
    records = read_wandb_records(records_file)
    assert len(_of_type(records, "history")) == 2
    artifacts = {a.type: a for a in _of_type(records, "artifact")}
    (report,) = artifacts["report"].manifest.contents
    html = Path(report.local_path).read_text()
    assert html == (run / "report.html").read_text() and 'id="plot-latency-cdf"' in html
    assert os.environ.get("WANDB_MODE") != "offline"  # the parent's environment is its own
