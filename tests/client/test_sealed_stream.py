"""A sealed session stream (security=mtls: `PolicyServer(seal_streams=True)`): the golden
episodes run unchanged, and a chunk that reaches the robot's stream without its session's
seal (here sent on the transport past the policy server, as a transport that let a forged
chunk through would deliver it) is dropped, counted, and displaces nothing."""

from __future__ import annotations

import json
import uuid

import numpy as np

from envs import make_env
from harness import protocol
from harness.bench import parity
from harness.client.config import EngineConfig
from harness.client.engine import engine_for
from harness.client.latency import LatencyModel
from harness.loop.runner import run_episode
from harness.protocol import sealing
from harness.server.policy_server import PolicyServer
from policies import make_policy
from transports import LocalTransportConfig, make_client, make_server


def chunk_message(seq: int, epoch: int, value: float) -> bytes:
    return protocol.encode(protocol.Message(
        protocol.ActionChunk(actions=np.full((8, 4), value, np.float32), obs_seq=seq,
                             queue_wait_ns=0, infer_ns=0, model_id="oracle"),
        seq=seq, episode=1, epoch=epoch, flags=protocol.Flags.RESPONSE))


def test_a_sealed_stream_runs_the_golden_episode_and_drops_a_forged_chunk():
    env = make_env(parity.ENV)
    config = LocalTransportConfig(name=f"sealed-{uuid.uuid4().hex[:8]}")
    transport = make_server(config)
    server = PolicyServer(transport, lambda: make_policy(parity.POLICY, env=parity.ENV),
                          seal_streams=True)
    server.start()
    client = make_client(config)
    try:
        client.wait_ready(10.0)
        engine = engine_for(env.spec, client, EngineConfig(), chunk_size=8,
                            latency=LatencyModel("fixed", value_s=parity.LATENCY_S))
        trace = run_episode(env, engine, episode=1, seed=0,
                            due_reply_hold_s=parity.DUE_REPLY_HOLD_S)
        golden = json.loads(parity.GOLDEN.read_text())["digests"]["1"]
        assert parity.digest(trace) == golden  # the seal changes no action
        assert trace.wire.forged == 0 and trace.success
        key = engine.session.stream_key
        assert key is not None  # the server said SEALED, the session derived the key

        forged = chunk_message(10**6, engine.epoch, 0.9)  # newer than anything real
        transport.send_stream(client.client_id, forged)  # past the policy server: no seal
        genuine = sealing.seal(chunk_message(10**5, engine.epoch, 0.1), key)
        transport.send_stream(client.client_id, genuine)
        engine.stats.forged = 0
        replies = engine.replies.take(engine.stats)
        assert [reply.seq for reply, _ in replies] == [10**5]  # the real one, not displaced
        assert engine.stats.forged == 0  # the forged one never entered the inbox ...
        transport.send_stream(client.client_id, forged)
        assert engine.replies.take(engine.stats) == []  # ... nor, arriving alone, is taken
        assert engine.stats.forged == 1
        assert any(e.startswith("forged:") for e in engine.stats.errors)
        engine.close()
    finally:
        client.close()
        server.close()
        env.close()
