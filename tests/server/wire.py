"""Helpers of the policy-server tests: a client that speaks the wire protocol directly (the
client engine is not what is under test), servers on loopback, and policy doubles."""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np

from envs.base import EnvObservation
from harness import protocol
from harness.server.policy_server import PolicyServer
from policies import make_policy
from transports import make_client, make_server
from transports.loopback import loopback_config


def oracle():
    return make_policy("oracle", env="mujoco_pick_place")


def contract(env, **changes) -> protocol.Contract:
    """What a client driving `env` declares, with `changes` applied."""
    return dataclasses.replace(env.spec.contract, **{"chunk_size": 8, **changes})


class RawClient:
    """Speaks the wire protocol directly over a real transport client."""

    def __init__(self, config) -> None:
        self.transport = make_client(config)
        self.transport.wait_ready(10.0)
        self.epoch = 0

    def call(self, body: protocol.Body, **header) -> protocol.Message:
        header.setdefault("epoch", self.epoch)
        payload = protocol.encode(protocol.Message(body, **header))
        return protocol.decode(self.transport.request(payload, timeout_s=5.0))

    def open(self, contract: protocol.Contract) -> protocol.Message:
        reply = self.call(protocol.SessionOpen(self.transport.client_id, contract))
        self.epoch = reply.epoch
        return reply

    def publish(self, body: protocol.Body, *, seq: int, episode: int) -> None:
        """Put any message on the stream path, with this client's epoch."""
        self.transport.publish(protocol.encode(protocol.Message(
            body, seq=seq, episode=episode, epoch=self.epoch, client_ns=seq * 1000)))

    def observe(self, observation, *, seq: int, episode: int) -> None:
        self.publish(protocol.Observation(observation.state, observation.images,
                                          observation.instruction), seq=seq, episode=episode)

    def next_reply(self, timeout_s: float = 5.0) -> protocol.Message | None:
        payload = self.transport.take_stream(timeout_s=timeout_s)
        return None if payload is None else protocol.decode(payload)

    def close(self) -> None:
        self.transport.close()


def start_server(env, *, kind: str = "local", max_sessions: int = 4, policy_factory=None,
                 **server_options) -> tuple[PolicyServer, object]:
    """A started PolicyServer over a fresh loopback transport of `kind`, and that config."""
    config = loopback_config(kind)
    factory = policy_factory or oracle
    server = PolicyServer(make_server(config), factory, max_sessions=max_sessions,
                          **server_options)
    server.start()
    return server, config


class RecordingPolicy:
    """The oracle's contract, a chunk filled with this instance's `index`, and a record of
    every call (shared by all instances a factory built), so a test can tell which instance
    served which session, and whether the policy ever saw an observation."""

    def __init__(self, index: int, calls: list, *, predict_s: float = 0.0,
                 spec: protocol.Contract | None = None) -> None:
        self.spec = spec or oracle().spec
        self.index = index
        self._calls = calls
        self._predict_s = predict_s
        self._inside_predict = threading.Event()
        self.overlaps = 0
        """Resets that ran while this instance was inside `predict`."""

    def reset(self, *, seed: int) -> None:
        if self._inside_predict.is_set():
            self.overlaps += 1
        self._calls.append(("reset", self.index, seed))

    def predict(self, observation: EnvObservation) -> np.ndarray:
        self._inside_predict.set()
        try:
            if self._predict_s:
                time.sleep(self._predict_s)
            self._calls.append(("predict", self.index, observation.instruction))
            return np.full((self.spec.chunk_size, self.spec.action_dim), self.index, np.float32)
        finally:
            self._inside_predict.clear()


class RecordingFactory:
    """Builds RecordingPolicy instances numbered from 0 and counts the calls."""

    def __init__(self, *, predict_s: float = 0.0, spec: protocol.Contract | None = None) -> None:
        self.calls: list = []
        self.built: list[RecordingPolicy] = []
        self._predict_s = predict_s
        self._spec = spec

    def __call__(self) -> RecordingPolicy:
        policy = RecordingPolicy(len(self.built), self.calls, predict_s=self._predict_s,
                                 spec=self._spec)
        self.built.append(policy)
        return policy

    def predictions(self, instruction: str | None = None) -> list[int]:
        """Indexes of the instances that predicted (for `instruction` only, if given)."""
        return [index for kind, index, text in self.calls
                if kind == "predict" and (instruction is None or text == instruction)]

    def resets(self) -> list[tuple[int, int]]:
        """(instance index, seed) of every reset, in order."""
        return [(index, seed) for kind, index, seed in self.calls if kind == "reset"]


def counter(server: PolicyServer, name: str, **labels: str) -> float:
    """Current value of the server's Prometheus counter `name` (0 if never incremented)."""
    return server.metrics.registry.get_sample_value(f"{name}_total", labels) or 0.0


def tagged(observation: EnvObservation, instruction: str) -> EnvObservation:
    """`observation` with its instruction replaced, so a RecordingPolicy can tell a test's
    observations from the server's warm-up one (instruction "")."""
    return EnvObservation(dict(observation.state), dict(observation.images), instruction)
