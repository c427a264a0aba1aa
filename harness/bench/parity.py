"""Golden parity: the same seeded episodes must execute byte-identical actions and end in a
byte-identical sim state over every transport and in-process, without faults, under a fault
schedule applied modelled (`faults.apply=modelled`: every loss and delay decided by the
schedule and the seed), and with delay-aware execution (`client.mode=delay_aware` at a 400 ms
round trip: every observation carries a committed prefix the oracle plans from, so a prefix
or delay that arrived altered would change the actions), and the same with the learned flow
policy under real-time chunking (`policy=flow policy.rtc=guidance` at a 200 ms round trip:
its guided denoising reads every prefix, and its noise is seeded per episode).

With a deterministic policy (the oracle), a seeded env, the virtual clock and a fixed latency
model, nothing about an episode depends on the transport's speed, so any difference is a bug
(a lost, reordered or corrupted message, or a transport-dependent code path). Digests of a few
short MuJoCo episodes live in tests/golden/; regenerate them on purpose with

    python -m harness.bench.parity --write
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

from envs import make_env
from harness.client.config import ClientMode, EngineConfig
from harness.client.engine import engine_for
from harness.client.latency import LatencyModel
from harness.faults.controller import Mechanisms, episode_faults
from harness.faults.modelled import ModelledLink
from harness.faults.schedule import FaultApply, FaultsConfig, load_preset
from harness.loop.runner import run_episode
from harness.results.trace import EpisodeTrace
from harness.server.policy_server import PolicyServer
from policies import Policy, PolicyTask, build_policy, make_policy
from policies.flow.config import FlowPolicyConfig
from transports import LocalTransportConfig, TransportConfig, make_client, make_server

GOLDEN = Path(__file__).resolve().parents[2] / "tests" / "golden" / "parity.json"
ENV, POLICY, EPISODES, LATENCY_S = "mujoco_pick_place", "oracle", 3, 0.1
DELAY_AWARE_LATENCY_S = 0.4
"""8 ticks at 20 Hz: every prefix is a whole chunk of 8 actions."""
RTC_LATENCY_S, RTC_EPISODES = 0.2, 2
"""4 ticks: RTC guides with a 4-action prefix and the previous chunk's rest."""
FAULTED_PRESET = "lte"
"""Latency with jitter and burst loss: lost requests, DEGRADED and STALLED ticks, all
decided by the schedule, so the digests must still match over every transport."""
log = logging.getLogger(__name__)


def digest(trace: EpisodeTrace) -> str:
    return hashlib.sha256(trace.action_digest() + trace.final_sim_state).hexdigest()


DUE_REPLY_HOLD_S = 5.0
"""How long a parity tick waits for a reply its fixed latency says is due: the server is live
and nothing is emulated, so only a loaded machine (the test suite on both cores measured
digests differing with the one-tick default) can make it late."""


def run_parity_episodes(transport: TransportConfig, faults: FaultsConfig | None = None, *,
                        engine_config: EngineConfig | None = None,
                        latency_s: float = LATENCY_S,
                        policy: Callable[[], Policy] | None = None,
                        episodes: int = EPISODES) -> list[EpisodeTrace]:
    """The golden episodes over `transport`, with a policy server in this process serving
    `policy` (default the oracle); under `faults` (applied modelled) if given, with the
    client's `engine_config` and a fixed round trip of `latency_s`."""
    env = make_env(ENV)
    server = PolicyServer(make_server(transport),
                          policy or (lambda: make_policy(POLICY, env=ENV)))
    server.start()
    client = make_client(transport)
    try:
        client.wait_ready(10.0)
        latency = LatencyModel("fixed", value_s=latency_s)
        if faults is not None:
            latency = ModelledLink.for_contract(latency, env.spec.contract, chunk_size=8, seed=0)
        engine = engine_for(env.spec, client, engine_config or EngineConfig(), chunk_size=8,
                            latency=latency)
        traces = []
        for i in range(episodes):
            hook = None
            if faults is not None:
                controller = episode_faults(faults, seed=0, episode=i + 1,
                                            horizon_s=env.spec.max_steps * engine.dt,
                                            mechanisms=Mechanisms(modelled=True),
                                            latency=latency)
                hook = controller.on_tick if controller else None
            traces.append(run_episode(env, engine, episode=i + 1, seed=i, on_tick=hook,
                                      due_reply_hold_s=DUE_REPLY_HOLD_S))
        engine.close()
        return traces
    finally:
        client.close()
        server.close()
        env.close()


def run_delay_aware_episodes(transport: TransportConfig) -> list[EpisodeTrace]:
    """The golden episodes with delay-aware execution at `DELAY_AWARE_LATENCY_S`."""
    return run_parity_episodes(transport,
                               engine_config=EngineConfig(mode=ClientMode.delay_aware),
                               latency_s=DELAY_AWARE_LATENCY_S)


def rtc_policy() -> Policy:
    """The flow policy with real-time chunking's guidance, its shipped weights."""
    return build_policy(FlowPolicyConfig(rtc="guidance"), PolicyTask(ENV, 0, chunk_size=8))


def run_rtc_episodes(transport: TransportConfig) -> list[EpisodeTrace]:
    """The golden RTC episodes: delay-aware execution at `RTC_LATENCY_S`, served by
    `rtc_policy`."""
    return run_parity_episodes(transport,
                               engine_config=EngineConfig(mode=ClientMode.delay_aware),
                               latency_s=RTC_LATENCY_S, policy=rtc_policy,
                               episodes=RTC_EPISODES)


def faulted_preset() -> FaultsConfig:
    """The fault schedule of the faulted golden digests, applied modelled."""
    return load_preset(FAULTED_PRESET, apply=FaultApply.modelled)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.bench.parity", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="regenerate tests/golden/")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    local = LocalTransportConfig(name=f"parity-{uuid.uuid4().hex[:8]}")
    digests = {str(t.episode): digest(t) for t in run_parity_episodes(local)}
    faulted = {str(t.episode): digest(t) for t in run_parity_episodes(local, faulted_preset())}
    aware = {str(t.episode): digest(t) for t in run_delay_aware_episodes(local)}
    rtc = {str(t.episode): digest(t) for t in run_rtc_episodes(local)}
    if args.write:
        GOLDEN.write_text(json.dumps({"env": ENV, "policy": POLICY, "latency_s": LATENCY_S,
                                      "digests": digests, "faulted_preset": FAULTED_PRESET,
                                      "faulted_digests": faulted,
                                      "delay_aware_latency_s": DELAY_AWARE_LATENCY_S,
                                      "delay_aware_digests": aware,
                                      "rtc_latency_s": RTC_LATENCY_S, "rtc_digests": rtc},
                                     indent=2) + "\n")
        log.info("wrote %s", GOLDEN)
    else:
        golden = json.loads(GOLDEN.read_text())
        differ = []
        for name, got, key in (("clean", digests, "digests"),
                               (f"faults={FAULTED_PRESET}", faulted, "faulted_digests"),
                               ("delay_aware", aware, "delay_aware_digests"),
                               ("rtc", rtc, "rtc_digests")):
            same = golden.get(key) == got
            (log.info if same else log.error)("in-process %s digests %s golden", name,
                                              "match" if same else "DIFFER from")
            differ += [] if same else [name]
        if differ:  # a check that differs must not exit 0
            sys.exit(1)

if __name__ == "__main__":
    main()
