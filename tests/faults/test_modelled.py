"""Modelled faults: each kind's effect on a request's round trip, decided by the schedule and
the seed alone (and so the same on every call, in every run)."""

from __future__ import annotations

import math

import pytest

from harness.client.latency import LatencyModel
from harness.faults.modelled import ModelledLink
from harness.faults.schedule import (
    Direction,
    FaultsConfig,
    FaultWindow,
    TimedFault,
    load_preset,
    timeline,
)

DT = 0.05
BASE_S = 0.1


def link(*faults: TimedFault, seed: int = 0, horizon_s: float = 15.0) -> ModelledLink:
    modelled = ModelledLink(LatencyModel("fixed", value_s=BASE_S), dt=DT, seed=seed,
                            request_bytes=10_000, reply_bytes=500)
    config = FaultsConfig(name="test", timed=list(faults))
    modelled.start_episode(1, timeline(config, seed=seed, episode=1, horizon_s=horizon_s))
    return modelled


def at(modelled: ModelledLink, tick: int, index: int = 0) -> float:
    return modelled.latency_for((1, index), 0.001, sent_tick=tick)


def test_no_window_leaves_the_base_latency():
    assert at(link(), 10) == BASE_S


def test_latency_adds_the_delay_each_way_it_acts_on_and_only_inside_its_window():
    both = link(TimedFault("latency", 1.0, 2.0, delay_s=0.025))
    assert at(both, 30) == pytest.approx(BASE_S + 0.050)
    assert at(both, 10) == BASE_S and at(both, 60) == BASE_S  # before 1.0 s, after 3.0 s
    one_way = link(TimedFault("latency", 1.0, 2.0, delay_s=0.025,
                              direction=Direction.to_client))
    assert at(one_way, 30) == pytest.approx(BASE_S + 0.025)


def test_jitter_is_a_draw_per_request_the_same_on_every_call():
    jittery = link(TimedFault("latency", 0.0, math.inf, delay_s=0.01, jitter_s=0.005))
    draws = [at(jittery, 5, index) for index in range(40)]
    assert draws == [at(jittery, 5, index) for index in range(40)]
    assert len(set(draws)) == 40  # normal jitter is symmetric around the delay, cut at 0
    assert abs(sum(draws) / 40 - (BASE_S + 0.02)) < 0.004 and min(draws) >= BASE_S
    other_seed = link(TimedFault("latency", 0.0, math.inf, delay_s=0.01,
                                 jitter_s=0.005), seed=1)
    assert draws != [at(other_seed, 5, index) for index in range(40)]


def test_bandwidth_charges_the_payload_bits_over_the_rate():
    slow = link(TimedFault("bandwidth", 0.0, math.inf, bandwidth_bps=1e6))
    assert at(slow, 5) == pytest.approx(BASE_S + 8 * (10_000 + 500) / 1e6)


def test_a_partition_or_stall_holds_the_reply_until_it_ends():
    for kind in ("partition", "server_stall"):
        cut = link(TimedFault(kind, 1.0, 3.0))
        assert at(cut, 30) == pytest.approx(4.0 - 1.5 + BASE_S)  # sent at 1.5 s
        assert at(cut, 19) == pytest.approx(4.0 - 0.95 + BASE_S)  # in flight when it began
        assert at(cut, 80) == BASE_S


def test_a_crash_loses_every_flight_that_overlaps_it():
    crash = link(TimedFault("server_crash", 1.0, 2.0))
    assert math.isinf(at(crash, 30)) and math.isinf(at(crash, 19))
    assert at(crash, 10) == BASE_S and at(crash, 60) == BASE_S


def test_drop_loses_its_share_of_the_requests_sent_in_its_window():
    drops = link(TimedFault("drop", 0.0, math.inf, probability=0.3))
    lost = [math.isinf(at(drops, 5, index)) for index in range(400)]
    assert 0.2 < sum(lost) / 400 < 0.4
    assert lost == [math.isinf(at(drops, 5, index)) for index in range(400)]


def test_burst_loss_comes_in_bursts_at_the_chain_s_stationary_rate():
    spec = TimedFault("loss", 0.0, math.inf, p_good_bad=0.05, p_bad_good=0.3,
                      loss_good=0.0, loss_bad=0.5)
    chain = link(spec)
    lost = [math.isinf(at(chain, 5, index)) for index in range(600)]
    bad_share = spec.p_good_bad / (spec.p_good_bad + spec.p_bad_good)
    expected = 1 - (1 - bad_share * spec.loss_bad) ** 2  # either way may lose it
    assert abs(sum(lost) / 600 - expected) < 0.08
    pairs = sum(a and b for a, b in zip(lost, lost[1:], strict=False))
    assert pairs / max(1, sum(lost)) > 2 * (sum(lost) / 600)  # losses cluster


def test_a_model_pause_delays_only_the_first_request_sent_in_it():
    pause = link(TimedFault("model_pause", 2.0, 1.5))
    assert at(pause, 41, 7) == pytest.approx(BASE_S + 1.5)
    assert at(pause, 45, 8) == BASE_S
    assert at(pause, 41, 7) == pytest.approx(BASE_S + 1.5)  # asked again: the same answer


def test_slow_model_sets_a_floor_under_every_prediction():
    slow = link(TimedFault("slow_model", 0.0, math.inf, predict_s=0.405, jitter_s=0.0))
    assert at(slow, 5) == pytest.approx(BASE_S + 0.405)


def test_windows_of_different_groups_overlap_and_of_one_group_do_not():
    config = FaultsConfig(name="test", timed=[
        TimedFault("latency", 0.0, math.inf, delay_s=0.01),
        TimedFault("loss", 0.0, math.inf),
        TimedFault("server_stall", 1.0, 2.0),
        TimedFault("server_crash", 2.0, 2.0),  # overlaps the stall: dropped
        TimedFault("latency", 5.0, 1.0)])  # overlaps the first latency: dropped
    windows = timeline(config, seed=0, episode=1, horizon_s=10.0)
    assert [(w.kind, w.start_s, w.end_s) for w in windows] == [
        ("latency", 0.0, 10.0), ("loss", 0.0, 10.0),
        ("server_stall", 1.0, 3.0)]


@pytest.mark.parametrize("name", ["lan", "wan_50ms", "lte", "wifi_lossy", "bandwidth_2mbit",
                                  "partition_3s", "flapping", "server_crash", "server_stall",
                                  "server_drain", "slow_model_openvla", "gc_pause", "corrupt",
                                  "reorder"])
def test_every_preset_the_issue_names_loads_and_has_windows(name):
    windows = timeline(load_preset(name), seed=0, episode=1, horizon_s=15.0)
    assert windows and all(isinstance(w, FaultWindow) and w.end_s <= 15.0 for w in windows)


def test_an_unknown_preset_is_refused_naming_the_known_ones():
    with pytest.raises(ValueError, match="wan_50ms"):
        load_preset("wan_5ms")
