"""Fault kinds are a registry: a new kind is one module and one YAML file, and a kind that
lacks its emulation or its modelling, or that nobody registered, fails loudly.

The proof: a `latency_spike` (a fixed extra delay both ways while its window is open) lives in
a temporary module, a one-file preset in a temporary Hydra search path names it by import
path, and a real closed-loop run applies it emulated (through the proxy's link shape) and
modelled (as added delay).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from harness.config import ConfigError, config_dir, register_configs, validate
from harness.faults.kinds import (
    FaultKindEntry,
    fault_kind,
    kind_names,
    register_kind,
    unregister_kind,
)
from harness.faults.kinds.effects import NoEffect
from harness.faults.schedule import TimedFault
from transports.loopback import free_port, loopback_address

register_configs()

SPIKE_MODULE = '''
"""A user's fault kind, in a module of their own: a fixed extra delay both ways."""

from harness.faults.kinds import FaultKindEntry


class SpikeOnProxy:
    """Emulated: the proxy's link shape, `delay_s` more each way while the window is open."""

    def apply(self, window, run):
        run.reshape_proxy(window)
        return f"proxy spike +{window.spec.delay_s * 1e3:g} ms each way"

    def undo(self, window, run):
        run.reshape_proxy(window)
        return "proxy spike off"

    def shape(self, window, shape, run):
        shape["delay_s"] += window.spec.delay_s


class SpikeModelled:
    """Modelled: `delay_s` each way added to a round trip sent in the window."""

    def added_delay(self, window, salt, t, index, link):
        return 2 * window.spec.delay_s

    def on_flight(self, window, salt, t, index, base_s, latency_s, link):
        return latency_s


LATENCY_SPIKE = FaultKindEntry("latency_spike", "network", SpikeOnProxy(), SpikeModelled(),
                               doc="delay_s more each way during the window")
HALF_DONE = FaultKindEntry("half_done", "network", SpikeOnProxy(), None)
'''

SPIKE_PRESET = '''
defaults:
  - faults_schema
  - _self_

name: spike
apply: emulated
timed:
  - kind: {kind}
    start_s: {start_s}
    duration_s: {duration_s}
    delay_s: {delay_s}
'''

START_S, DURATION_S, DELAY_S = 0.5, 1.0, 0.1
"""The spike's window in control time, and its one-way delay."""
DT = 0.05
"""mujoco_reach's control period (20 Hz)."""


@pytest.fixture
def user_kind(tmp_path, monkeypatch):
    """The spike's module on sys.path (and PYTHONPATH, for the run's processes) and its
    preset in a search-path directory; yields (search path dir, module name). The kind is
    forgotten afterwards, so other tests see the built-ins only."""
    module = f"user_spike_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(SPIKE_MODULE))
    (tmp_path / "conf" / "faults").mkdir(parents=True)
    (tmp_path / "conf" / "faults" / "spike.yaml").write_text(SPIKE_PRESET.format(
        kind=f"{module}:LATENCY_SPIKE", start_s=START_S, duration_s=DURATION_S,
        delay_s=DELAY_S))
    (tmp_path / "conf" / "faults" / "meteor.yaml").write_text(SPIKE_PRESET.format(
        kind="meteor", start_s=START_S, duration_s=DURATION_S, delay_s=DELAY_S))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])]))
    yield tmp_path / "conf", module
    if "latency_spike" in kind_names():
        unregister_kind("latency_spike")


def compose_config(search_dir, *overrides: str):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="config", overrides=[
            f"hydra.searchpath=[file://{search_dir}]", *overrides])


class Emulated:
    def apply(self, window, run):
        return "on"

    def undo(self, window, run):
        return "off"


def test_an_entry_without_modelling_fails_at_registration_naming_it():
    with pytest.raises(TypeError, match="^fault kind 'half' has no modelling: every kind "
                                        "says how it is emulated and how it is modelled"):
        register_kind(FaultKindEntry("half", "network", Emulated(), None))
    assert "half" not in kind_names()


def test_an_entry_without_emulation_fails_at_registration_naming_it():
    with pytest.raises(TypeError, match="^fault kind 'half' has no emulation"):
        register_kind(FaultKindEntry("half", "model", None, NoEffect("none")))


def test_an_emulation_without_undo_fails_at_registration_naming_the_method():
    class ApplyOnly:
        def apply(self, window, run):
            return "on"

    with pytest.raises(TypeError, match=r"^fault kind 'half': its emulation ApplyOnly has "
                                        r"no undo\(\)$"):
        register_kind(FaultKindEntry("half", "process", ApplyOnly(), NoEffect("none")))


def test_an_entry_of_no_group_fails_at_registration_naming_the_groups():
    with pytest.raises(ValueError, match=r"^fault kind 'half': group='disk', expected one of "
                                         r"\['process', 'network', 'message', 'model'\]$"):
        register_kind(FaultKindEntry("half", "disk", Emulated(), NoEffect("none")))


def test_a_temporary_kind_is_registered_under_its_name_and_forgotten():
    entry = register_kind(FaultKindEntry("blip", "network", Emulated(), NoEffect("none")),
                          "my_pkg.faults:BLIP")
    assert fault_kind("blip") is entry and fault_kind("my_pkg.faults:BLIP") is entry
    assert kind_names()[-1] == "blip"
    unregister_kind("blip")
    assert "blip" not in kind_names()
    with pytest.raises(ValueError, match="^faults.timed.kind='my_pkg.faults:BLIP': "
                                         "cannot import 'my_pkg.faults'"):
        fault_kind("my_pkg.faults:BLIP")


def test_a_built_in_name_cannot_be_taken_twice():
    with pytest.raises(ValueError, match="^fault kind 'latency' is already registered"):
        register_kind(FaultKindEntry("latency", "network", Emulated(), NoEffect("none")))


def test_a_user_entry_named_by_import_path_lacking_modelling_is_refused(user_kind):
    _, module = user_kind
    with pytest.raises(ValueError, match="^faults.timed\\[\\].kind: fault kind 'half_done' "
                                         "has no modelling"):
        TimedFault(kind=f"{module}:HALF_DONE")


def test_an_unknown_kind_in_a_preset_fails_naming_the_choices(user_kind):
    search_dir, _ = user_kind
    with pytest.raises(ConfigError) as failure:
        validate(compose_config(search_dir, "faults=meteor", "transport=zmq"))
    assert str(failure.value) == (
        "faults.timed[].kind: fault kind 'meteor': expected one of " + str(kind_names())
        + ", or an import path 'package.module:ATTR' naming a "
        "harness.faults.kinds.FaultKindEntry")


def test_a_preset_names_a_user_kind_by_import_path(user_kind):
    search_dir, module = user_kind
    config = validate(compose_config(search_dir, "faults=spike", "transport=zmq"))
    [fault] = config.faults.timed
    assert fault.kind == "latency_spike"  # stored as the entry's name
    assert fault_kind("latency_spike") is fault_kind(f"{module}:LATENCY_SPIKE")
    assert config.faults.has_network_faults and not config.faults.has_message_faults


def run_spike(tmp_path, search_dir, name: str, *extra: str) -> tuple:
    """One mujoco_reach episode with the oracle over zmq under faults=spike; returns its
    run directory's events and the trace's ticks as a DataFrame."""
    run = tmp_path / name
    result = subprocess.run(
        [sys.executable, "-m", "harness", "transport=zmq",
         f"transport.listen={loopback_address('zmq', free_port())}", "env=mujoco_reach",
         "policy=oracle", "faults=spike", f"hydra.searchpath=[file://{search_dir}]",
         "env.episodes_per_task=1", f"hydra.run.dir={run}", *extra],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    with open(run / "events.jsonl") as lines:
        events = [json.loads(line) for line in lines]
    trace = pd.read_parquet(run / "traces" / "task000-ep0001.parquet")
    return events, trace


def window_ticks(trace: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Latencies of the chunks merged before the window, and of those merged inside it
    that were sent inside it (from its start plus one spiked round trip to its end)."""
    merged = trace.dropna(subset=["latency_s"])
    first, last = round(START_S / DT), round((START_S + DURATION_S) / DT)
    before = merged[merged["tick"] < first]["latency_s"]
    inside = merged[(merged["tick"] >= first + round(2 * DELAY_S / DT) + 1)
                    & (merged["tick"] < last)]["latency_s"]
    return before, inside



@pytest.mark.slow
@pytest.mark.network
def test_a_user_kind_emulated_opens_its_window_and_delays_the_real_round_trips(tmp_path,
                                                                               user_kind):
    search_dir, _ = user_kind
    events, trace = run_spike(tmp_path, search_dir, "emulated")
    spike = [e for e in events if e.get("fault") == "latency_spike"]
    assert [(e["phase"], e["tick"], e["mechanism"]) for e in spike] == [
        ("start", round(START_S / DT), f"proxy spike +{DELAY_S * 1e3:g} ms each way"),
        ("end", round((START_S + DURATION_S) / DT), "proxy spike off")]
    before, inside = window_ticks(trace)
    assert len(before) > 0 and len(inside) > 0
    # The proxy holds every byte DELAY_S each way: a round trip sent in the window is at
    # least twice that, one sent before it was not held at all.
    assert inside.min() >= 2 * DELAY_S
    assert before.median() < inside.min()


@pytest.mark.slow
@pytest.mark.network
def test_a_user_kind_modelled_adds_its_delay_to_the_round_trips_sent_in_its_window(
        tmp_path, user_kind):
    search_dir, _ = user_kind
    base_s = 0.05
    events, trace = run_spike(tmp_path, search_dir, "modelled", "faults.apply=modelled",
                              "latency.kind=fixed", f"latency.value_s={base_s}")
    spike = [e for e in events if e.get("fault") == "latency_spike"]
    assert [(e["phase"], e["tick"], e["mechanism"]) for e in spike] == [
        ("start", round(START_S / DT), "modelled"),
        ("end", round((START_S + DURATION_S) / DT), "modelled")]
    before, inside = window_ticks(trace)
    assert set(before) == {base_s}
    assert set(inside) == {base_s + 2 * DELAY_S}
