"""Env families: an unknown env names the choices, and a family of one's own (one module,
one YAML file, no edit of the project) runs a closed-loop episode through a policy server
process over zmq, with its own scripted oracle."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from envs import env_family, env_names, task_ids
from envs.registry import EnvFamily, UnknownEnv, register_family

SLIDER_MODULE = textwrap.dedent('''
    """A cart on a rail (MuJoCo): slide it to the goal. The whole env family, in one module."""
    import dataclasses

    import mujoco
    import numpy as np

    from envs.base import EnvObservation, EnvSpec, StepResult
    from envs.registry import EnvFamily
    from harness.protocol.contract import ArraySpec, Contract

    XML = """<mujoco><option timestep="0.002"/><worldbody><body name="cart">
      <joint name="x" type="slide" axis="1 0 0" damping="5"/>
      <geom type="box" size=".02 .02 .02" mass="0.1"/></body></worldbody>
      <actuator><position joint="x" kp="50"/></actuator></mujoco>"""
    STEP_M = 0.01
    CONTRACT = Contract(action_names=("dx",), state={k: ArraySpec("float32", (1,))
                                                    for k in ("cmd", "goal", "x")})


    class SliderEnv:
        def __init__(self, max_steps):
            self.model = mujoco.MjModel.from_xml_string(XML)
            self.data = mujoco.MjData(self.model)
            self.spec = EnvSpec("slider", CONTRACT, action_low=(-1.0,), action_high=(1.0,),
                                max_steps=max_steps or 80)

        def _observation(self):
            values = {"cmd": self.cmd, "goal": self.goal, "x": float(self.data.qpos[0])}
            return EnvObservation({k: np.array([v], np.float32) for k, v in values.items()},
                                  {}, "slide the cart to the goal")

        def reset(self, *, seed, init_state=None):
            mujoco.mj_resetData(self.model, self.data)
            self.goal = float(np.random.default_rng(seed).uniform(0.05, 0.15))
            self.cmd, self.steps = 0.0, 0
            return self._observation()

        def step(self, action):
            self.cmd += STEP_M * float(np.clip(action[0], -1.0, 1.0))
            self.data.ctrl[0] = self.cmd
            for _ in range(25):
                mujoco.mj_step(self.model, self.data)
            self.steps += 1
            success = abs(float(self.data.qpos[0]) - self.goal) < 0.003
            return StepResult(self._observation(), success,
                              success or self.steps >= self.spec.max_steps)

        def ee_pos(self):
            return np.array([self.data.qpos[0], 0.0, 0.0])

        def close(self):
            pass


    class SliderOracle:
        def __init__(self, env, task_id, *, chunk_size):
            self.spec = dataclasses.replace(CONTRACT, chunk_size=chunk_size,
                                            model_id="slider-oracle")

        def reset(self, *, seed):
            pass

        def predict(self, observation, committed=None):
            cmd, goal = float(observation.state["cmd"][0]), float(observation.state["goal"][0])
            chunk = []
            for _ in range(self.spec.chunk_size):
                step = float(np.clip((goal - cmd) / STEP_M, -1.0, 1.0))
                cmd += STEP_M * step
                chunk.append([step])
            return np.asarray(chunk, np.float32)


    class Slider(EnvFamily):
        oracle = "slider_env:SliderOracle"

        def make(self, name, *, task_id, cameras, image_size, max_steps):
            return SliderEnv(max_steps)

        def contract(self, name, task_id, *, cameras, image_size):
            return CONTRACT


    FAMILY = Slider()
''')


def test_unknown_env_lists_the_choices():
    with pytest.raises(UnknownEnv, match=r"env.name='mujoco_rech': expected one of "
                                         r"\['mujoco_reach', 'mujoco_pick_place', "
                                         r"'libero_spatial'"):
        env_family("mujoco_rech")


def test_an_import_path_that_is_not_a_family_is_refused():
    with pytest.raises(UnknownEnv, match="is not an envs.registry.EnvFamily"):
        env_family("envs.base:EnvSpec")
    with pytest.raises(UnknownEnv, match="cannot import 'no_such_module_here'"):
        env_family("no_such_module_here:FAMILY")


def test_families_answer_what_the_prefix_tests_did():
    assert env_family("libero_object").init_state(3) == 3
    assert env_family("mujoco_reach").init_state(3) is None
    assert task_ids("mujoco_pick_place", "all") == [0]
    assert env_names()[:2] == ["mujoco_reach", "mujoco_pick_place"]


def test_a_name_cannot_be_taken_twice():
    class Other(EnvFamily):
        def make(self, name, **kwargs):
            raise AssertionError

        def contract(self, name, task_id, **kwargs):
            raise AssertionError

    with pytest.raises(ValueError, match="'mujoco_reach' is already provided by MujocoTasks"):
        register_family(Other(), "mujoco_reach")


@pytest.mark.slow
@pytest.mark.network
def test_an_env_of_ones_own_runs_a_closed_loop_episode(tmp_path):
    """One module (slider_env.py) and one YAML (conf/env/slider.yaml) in directories of the
    test's own: the harness composes it, starts a server process hosting the family's
    oracle over zmq, and the cart reaches its goal in every episode."""
    plugins, conf = tmp_path / "plugins", tmp_path / "conf" / "env"
    plugins.mkdir()
    conf.mkdir(parents=True)
    (plugins / "slider_env.py").write_text(SLIDER_MODULE)
    (conf / "slider.yaml").write_text("defaults:\n  - env_schema\n  - _self_\n\n"
                                      "name: slider_env:FAMILY\nepisodes_per_task: 3\n")
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "harness", "env=slider", "transport=zmq", "policy=oracle",
         f"hydra.searchpath=[file://{tmp_path / 'conf'}]", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=240,
        env={**_environ(), "PYTHONPATH": str(plugins)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["episodes"] == 3
    assert summary["success_rate"] == 1.0
    assert summary["chunks_received"] > 0
    rows = [json.loads(p.read_text()) for p in sorted((run_dir / "episodes").glob("*.json"))]
    assert {r["transport"] for r in rows} == {"zmq"}


def _environ() -> dict[str, str]:
    import os

    return dict(os.environ)
