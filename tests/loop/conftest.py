"""Shared by the closed-loop tests: the env, and a rig of a policy server, a client and its
engine over the local transport, which a test can restart as a restarted process would be."""

from __future__ import annotations

import uuid

import pytest

from envs import make_env
from harness import protocol
from harness.client.config import EngineConfig
from harness.client.engine import ClientEngine, engine_for
from harness.client.latency import LatencyModel
from harness.server.policy_server import PolicyServer
from policies import make_policy
from transports import LocalTransportConfig, make_client, make_server

ENV = "mujoco_pick_place"


def oracle():
    return make_policy("oracle", env=ENV)


@pytest.fixture
def env():
    env = make_env(ENV)
    yield env
    env.close()


class Rig:
    """A policy server under a fresh local-transport name, a client and its engine.
    `restart` replaces the server under the same name, as a restarted process would."""

    def __init__(self, env, *, latency: LatencyModel | None, **config) -> None:
        self.env, self.name = env, f"loop-{uuid.uuid4().hex[:8]}"
        self._others: list = []
        self.server = self._serve(oracle)
        self.client = make_client(LocalTransportConfig(name=self.name))
        self.engine = engine_for(env.spec, self.client, EngineConfig(**config), chunk_size=8,
                                 latency=latency)

    def _serve(self, factory, max_sessions: int = 4) -> PolicyServer:
        server = PolicyServer(make_server(LocalTransportConfig(name=self.name)), factory,
                              max_sessions=max_sessions)
        server.start()
        return server

    def restart(self, policy: str = "oracle", factory=None, max_sessions: int = 4) -> None:
        self.server.close()
        self.server = self._serve(factory or (lambda: make_policy(policy, env=ENV)),
                                  max_sessions)

    def second_engine(self, **config) -> ClientEngine:
        """Another client's engine on the same server (closed with the rig)."""
        client = make_client(LocalTransportConfig(name=self.name))
        self._others.append(client)
        return engine_for(self.env.spec, client, EngineConfig(**config), chunk_size=8)

    def close(self) -> None:
        for client in [self.client, *self._others]:
            client.close()
        self.server.close()


@pytest.fixture
def rig(env):
    """rig(**engine_config) -> Rig with a fixed 100 ms latency (measured with measured=True);
    every rig made is closed after the test."""
    rigs = []

    def make(*, measured: bool = False, **config) -> Rig:
        latency = None if measured else LatencyModel("fixed", value_s=0.1)
        rigs.append(Rig(env, latency=latency, **config))
        return rigs[-1]

    yield make
    for made in rigs:
        made.close()


def observation_of(env) -> protocol.Observation:
    observation = env.reset(seed=0)
    return protocol.Observation(observation.state, observation.images, "")


