"""The Python API: serve a policy object with our server, drive it from a robot's own loop
with the client engine, and run the benchmark from a script (examples/)."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest

import harness
from envs import make_env
from examples.reach_policy import ReachPolicy
from harness import protocol
from harness.protocol.contract import ContractMismatch
from policies import PolicyConfigError, PolicyTask

pytestmark = pytest.mark.network


def robot_loop(engine, env, *, episodes: int) -> list[bool]:
    """What a real robot runs: reset, then one `engine.tick` per control period, paced by the
    wall clock, the action applied at once."""
    successes = []
    for episode in range(1, episodes + 1):
        observation = env.reset(seed=episode)
        engine.reset(episode)
        next_tick = time.monotonic()
        for tick in range(env.spec.max_steps):
            result = engine.tick(tick, protocol.Observation(
                observation.state, observation.images, observation.instruction))
            step = env.step(result.action)
            observation = step.observation
            if step.done:
                break
            next_tick += engine.dt
            time.sleep(max(0.0, next_tick - time.monotonic()))
        successes.append(step.success)
    return successes


def test_a_served_policy_class_drives_a_robot_loop_over_zmq():
    with harness.serve(ReachPolicy, env="mujoco_reach", transport="zmq") as server:
        assert server.address.startswith("tcp://127.0.0.1:")
        engine = harness.client_engine("mujoco_reach", transport_config=server.transport)
        env = make_env("mujoco_reach")
        try:
            engine.transport.wait_ready(10)
            successes = robot_loop(engine, env, episodes=3)
        finally:
            engine.close()
            engine.transport.close()
            env.close()
        assert successes == [True, True, True]
        assert engine.model_id == "reach-p0.5"


def test_a_policy_instance_is_served_to_one_robot_at_a_time():
    instance = ReachPolicy(PolicyTask("mujoco_reach", chunk_size=8), gain=0.8)
    with harness.serve(instance, env="mujoco_reach", transport="zmq") as server:
        assert server.metrics is not None
        engine = harness.client_engine("mujoco_reach", transport_config=server.transport)
        env = make_env("mujoco_reach")
        try:
            engine.transport.wait_ready(10)
            assert robot_loop(engine, env, episodes=1) == [True]
        finally:
            engine.close()
            engine.transport.close()
            env.close()


def test_serving_what_does_not_fit_the_robot_fails_before_serving():
    class WrongWidth:
        spec = ReachPolicy(PolicyTask("mujoco_pick_place")).spec  # 4 actions, reach takes 3

        def reset(self, *, seed):
            pass

        def predict(self, observation, committed=None):
            return np.zeros((8, 4), np.float32)

    with pytest.raises(ContractMismatch, match="action_names"):
        harness.serve(WrongWidth(), env="mujoco_reach", transport="zmq")
    with pytest.raises(PolicyConfigError, match="not a policies.base.Policy"):
        harness.serve(lambda: object(), env="mujoco_reach", transport="zmq")


@pytest.mark.slow
def test_the_script_example_serves_and_benchmarks_a_policy_object(tmp_path, monkeypatch):
    """examples/serve_from_python.py: harness.serve, then harness.run against it as an
    external server under a modelled LAN schedule."""
    from examples import serve_from_python

    monkeypatch.chdir(tmp_path)
    result = serve_from_python.main()
    assert result.status == 0
    assert (tmp_path / result.run_dir / "summary.json").is_file()
    assert (result.summary["episodes"], result.summary["success_rate"]) == (5, 1.0)
    assert result.summary["chunks_received"] > 0


def test_run_evaluates_in_process_and_refuses_what_it_cannot_run(tmp_path):
    from harness.config import ConfigError

    result = harness.run(["job=evaluate", "env=mujoco_reach", "env.episodes_per_task=3"],
                         run_dir=tmp_path / "eval")
    assert (result.status, result.summary["episodes"], result.summary["successes"]) == (0, 3, 3)
    assert (tmp_path / "eval" / "episodes.csv").is_file()
    with pytest.raises(ConfigError, match="job=bench: run it from the command line"):
        harness.run(["job=bench"])
    with pytest.raises(ConfigError, match="env.tasks='4': mujoco_reach has only task 0"):
        harness.run(["env=mujoco_reach", "env.tasks=4"])
    with pytest.raises(ConfigError, match="policy.chunk_size=0: must be >= 1"):
        harness.run(["policy.chunk_size=0"])


def test_a_run_refused_at_start_up_returns_its_status_and_an_empty_summary(tmp_path):
    """A run that wrote no episode (here: its port is taken) has nothing to summarize; the
    status says why, and `run` does not raise from an empty results store."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = harness.run(["transport=zmq", f"transport.listen=tcp://127.0.0.1:{port}",
                              "env.episodes_per_task=1"], run_dir=tmp_path / "run")
    assert result.status == 2 and result.summary == {}
    assert not list((tmp_path / "run").glob("episodes/*.json"))
