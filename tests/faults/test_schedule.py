"""Fault schedules: every preset composes, a bad schedule fails at startup naming the field,
and the same seed gives the same timeline byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from harness.config import ConfigError, config_dir, register_configs, validate
from harness.faults.schedule import (
    FaultsConfig,
    FaultWindow,
    RandomOutages,
    TimedFault,
    timeline,
    timeline_digest,
)

register_configs()
PRESETS = sorted(p.stem for p in (Path(config_dir()) / "faults").glob("*.yaml"))


def compose_config(*overrides: str):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.mark.parametrize("name", PRESETS)
def test_every_fault_preset_composes_and_names_itself(name):
    config = validate(compose_config(f"faults={name}", "transport=zmq"))
    assert config.faults.name == name
    assert config.faults.empty == (name == "none")


def test_the_default_is_no_faults():
    assert validate(compose_config()).faults.empty


def test_process_faults_need_a_server_the_harness_supervises():
    with pytest.raises(ConfigError, match="faults=server_crash: process faults act on a "
                                          "server the harness supervises"):
        validate(compose_config("faults=server_crash", "transport=zmq", "server=external"))


def test_an_unknown_fault_kind_fails_at_validation_naming_the_choices():
    with pytest.raises(ConfigError) as failure:
        validate(compose_config("faults=server_crash", "transport=zmq",
                                "faults.timed.0.kind=meteor"))
    assert str(failure.value) == (
        "faults.timed[].kind: fault kind 'meteor': expected one of ['server_crash', "
        "'server_stall', 'server_drain', 'router_crash', 'router_stall', 'latency', "
        "'bandwidth', 'partition', 'reset', "
        "'slow_close', 'drop', 'corrupt', 'duplicate', 'delay', 'reorder', 'loss', "
        "'slow_model', 'model_pause'], or an import path 'package.module:ATTR' naming a "
        "harness.faults.kinds.FaultKindEntry")


@pytest.mark.parametrize(("fault", "match"), [
    ({"start_s": -1.0}, "start_s=-1.0 must be >= 0"),
    ({"duration_s": 0.0}, "duration_s=0.0 > 0"),
    ({"target": "model"}, "only 'client-server'"),
])
def test_a_bad_timed_fault_is_refused_naming_the_field(fault, match):
    with pytest.raises(ValueError, match=match):
        TimedFault(**fault)


SCHEDULE = FaultsConfig(name="mixed", timed=[TimedFault("server_stall", 1.0, 2.0)],
                        random=RandomOutages("server_crash", rate_per_min=6.0,
                                             median_s=0.5))


def test_the_same_seed_and_episode_give_the_same_timeline_byte_for_byte():
    first = timeline(SCHEDULE, seed=7, episode=3, horizon_s=60.0)
    again = timeline(SCHEDULE, seed=7, episode=3, horizon_s=60.0)
    assert first == again and timeline_digest(first) == timeline_digest(again)
    assert len(first) > 2  # the random outages are really there
    other_seed = timeline(SCHEDULE, seed=8, episode=3, horizon_s=60.0)
    other_episode = timeline(SCHEDULE, seed=7, episode=4, horizon_s=60.0)
    assert timeline_digest(other_seed) != timeline_digest(first)
    assert timeline_digest(other_episode) != timeline_digest(first)


def test_a_timeline_is_sorted_and_never_overlaps_and_stays_within_the_horizon():
    windows = timeline(SCHEDULE, seed=1, episode=1, horizon_s=30.0)
    assert windows[0] == FaultWindow("server_stall", 1.0, 3.0, "timed") or \
        windows[0].start_s < 1.0
    for before, after in zip(windows, windows[1:], strict=False):
        assert before.end_s <= after.start_s
    assert all(w.start_s < 30.0 for w in windows)
    assert timeline(FaultsConfig(), seed=1, episode=1, horizon_s=30.0) == []
