"""Execution modes (`harness.client.modes`): chosen once by name, each answering the engine's
few questions; the delay_aware downgrade against a model that is not delay-aware."""

from __future__ import annotations

import dataclasses

import pytest

from envs import make_env
from harness.client.commitment import DelayEstimate
from harness.client.config import ClientMode
from harness.client.modes import (
    MODES,
    AsynchronousMode,
    DelayAwareMode,
    SynchronousMode,
    make_mode,
)
from harness.client.states import ClientState
from tests.loop.conftest import ENV

DT = 0.05


@pytest.fixture(scope="module")
def contract():
    env = make_env(ENV)
    yield env.spec.contract
    env.close()


def test_every_client_mode_has_its_execution_mode():
    assert sorted(MODES) == sorted(ClientMode)
    for name in ClientMode:
        mode = make_mode(str(name))
        assert mode.name is name and mode.execution == str(name)


def test_an_unknown_mode_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match=r"client\.mode='eager': expected one of "
                                         r"\['asynchronous', 'synchronous', 'delay_aware'\]"):
        make_mode("eager")


def test_only_delay_aware_announces_a_delay():
    delay = DelayEstimate(window=4)
    delay.record(0.12)  # 3 ticks at 20 Hz
    assert DelayAwareMode().delay_ticks(delay, DT, None) == 3
    assert AsynchronousMode().delay_ticks(delay, DT, None) == 0
    assert SynchronousMode().delay_ticks(delay, DT, None) == 0


@pytest.mark.parametrize(("mode", "delay_ticks", "threshold"), [
    (AsynchronousMode(), 0, 4),  # client.send_threshold
    (DelayAwareMode(), 6, 7),    # enough queued to cover the delay, and one more
    (DelayAwareMode(), 2, 4),
    (SynchronousMode(), 0, 1),   # only when the queue is empty
])
def test_when_to_send(mode, delay_ticks, threshold):
    assert mode.send_threshold(4, delay_ticks) == threshold


def test_only_the_synchronous_robot_holds_still_and_waits():
    sync, other = SynchronousMode(), AsynchronousMode()
    assert sync.holds_still and not other.holds_still and not DelayAwareMode().holds_still
    healthy = dict(pending=True, last_loss_tick=None, last_chunk_tick=None)
    assert sync.waits(ClientState.STREAMING, **healthy)
    assert not other.waits(ClientState.STREAMING, **healthy)
    assert not sync.waits(ClientState.DEGRADED, **healthy)
    assert not sync.waits(ClientState.STREAMING, **{**healthy, "pending": False})
    # a loss since the last chunk: fall back; a chunk since the loss: wait again
    assert not sync.waits(ClientState.STREAMING, pending=True, last_loss_tick=5,
                          last_chunk_tick=4)
    assert sync.waits(ClientState.STREAMING, pending=True, last_loss_tick=5, last_chunk_tick=5)
    assert sync.waits_again(ClientState.STALLED, tick=9, last_chunk_tick=9)
    assert not sync.waits_again(ClientState.STALLED, tick=9, last_chunk_tick=8)
    assert not other.waits_again(ClientState.STALLED, tick=9, last_chunk_tick=9)


def test_delay_aware_runs_asynchronously_against_a_model_that_is_not(contract):
    mode = DelayAwareMode()
    planning = dataclasses.replace(contract, model_id="rtc", delay_aware=True)
    assert mode.executing(planning) is mode
    plain = dataclasses.replace(contract, model_id="oracle", delay_aware=False)
    downgraded = mode.executing(plain)
    assert type(downgraded) is AsynchronousMode
    assert downgraded.execution == ("asynchronous (delay_aware asked; model 'oracle' is not "
                                    "delay-aware)")


def test_the_other_modes_run_as_they_are_against_any_model(contract):
    for mode in (AsynchronousMode(), SynchronousMode()):
        assert mode.executing(contract) is mode
