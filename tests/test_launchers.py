"""Launchers: the default runs a sweep's jobs side by side sized to the machine, and the
cluster ones are selected by config (`hydra/launcher=slurm`, `=submitit_local`)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir

from harness.config import config_dir, register_configs

register_configs()


def launcher(*overrides: str):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides),
                       return_hydra_config=True).hydra.launcher


def test_the_default_launcher_is_joblib_with_one_job_per_core():
    default = launcher()
    assert default._target_.endswith("JoblibLauncher")
    assert default.n_jobs == -1  # joblib: as many workers as cores


def test_the_slurm_launcher_composes_with_the_projects_defaults_and_takes_overrides():
    slurm = launcher("hydra/launcher=slurm", "hydra.launcher.partition=debug")
    assert slurm._target_.endswith("SlurmLauncher")
    assert (slurm.partition, slurm.cpus_per_task, slurm.gpus_per_node) == ("debug", 2, 0)
    assert str(slurm.submitit_folder).endswith("/.submitit/%j")


@pytest.mark.slow
def test_a_sweep_runs_through_submitit_on_this_machine(tmp_path):
    """submitit_local: the jobs run as submitit jobs (what SLURM would run), without SLURM."""
    sweep = tmp_path / "sweep"
    result = subprocess.run(
        [sys.executable, "-m", "harness", "-m", "hydra/launcher=submitit_local",
         "transport=local", "faults=lte", "faults.apply=modelled",
         "client=synchronous,async_newest", "env.episodes_per_task=2",
         f"hydra.sweep.dir={sweep}"], cwd=tmp_path, capture_output=True, text=True,
        timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Submitit 'local' sweep output dir" in result.stdout + result.stderr
    summaries = sorted(sweep.glob("*/summary.json"))
    modes = sorted(json.loads((s.parent / "config.json").read_text())["client"]["mode"]
                   for s in summaries)
    assert modes == ["asynchronous", "synchronous"]
    assert all(json.loads(s.read_text())["episodes"] == 2 for s in summaries)
    assert len([p for p in (sweep / ".submitit").iterdir() if p.name != "%j"]) == 2
