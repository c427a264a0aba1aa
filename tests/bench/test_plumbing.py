"""The shared pieces of the benchmarks: how a call is timed, how a far-end child process is
started and stopped, and which transports each benchmark runs by default (from the
registry, never a list of its own)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from harness.bench import link, outage, peer
from harness.bench.child import ReadyProcess
from harness.bench.timing import time_calls
from transports import UnknownTransport


def test_time_calls_runs_warmup_untimed_and_marks_a_lost_call_nan():
    calls = []
    answers = iter([True, True, True, False, True])  # two warm-ups, then three timed calls

    def call():
        calls.append(1)
        return next(answers)

    samples = time_calls(call, warmup=2, round_trips=3)
    assert len(calls) == 5
    assert samples.shape == (3,)
    assert np.isnan(samples).tolist() == [False, True, False]
    assert (samples[~np.isnan(samples)] >= 0).all()


def test_a_ready_child_is_stopped_by_closing_its_stdin():
    child = ReadyProcess([sys.executable, "-c",
                          "import sys; print('READY', flush=True); sys.stdin.read()"], "echo")
    child.stop()
    assert child.process.returncode == 0
    child.stop()  # idempotent


def test_a_child_that_never_says_ready_fails_naming_it_and_is_stopped():
    with pytest.raises(RuntimeError) as failure:
        ReadyProcess([sys.executable, "-c", "print('booting', flush=True)"], "mute peer",
                     ready_timeout_s=10.0)
    assert str(failure.value) == "mute peer did not become ready within 10.0 s"


def test_benchmark_defaults_come_from_the_registry():
    assert outage.networked_transports() == ["zenoh", "grpc", "zmq"]
    assert link.tcp_transports() == ["zenoh", "grpc", "zmq"]


def test_the_peer_process_refuses_an_unknown_kind_before_serving():
    with pytest.raises(UnknownTransport, match="transport.kind='udp': expected one of"):
        peer.main(["udp", "{}"])


def test_an_outage_needs_a_server_in_its_own_process(tmp_path):
    with pytest.raises(ValueError) as failure:
        outage.run_outage("local", "kill", run_dir=tmp_path)
    assert str(failure.value) == ("transport='local' is in-process only: an outage needs a "
                                  "server in its own process; choose one of zenoh, grpc, zmq")
