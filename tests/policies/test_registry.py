"""Policy kinds: unknown names list the choices, a custom policy is built from its import
path and arguments, and what is not a Policy is refused naming what is missing."""

from __future__ import annotations

import pytest

from envs import make_env
from harness.api import compose
from harness.jobs.evaluate import evaluate
from policies import PolicyConfigError, PolicyTask, UnknownPolicy, build_policy, make_policy
from policies.config import CustomPolicyConfig
from policies.remote.config import RemotePolicyConfig

REACH = "examples.reach_policy:ReachPolicy"


def test_unknown_kind_lists_the_kinds():
    with pytest.raises(UnknownPolicy, match=r"policy.name='oracel': expected one of "
                                            r"\['oracle', 'torch', 'flow', 'remote', 'custom'\]"):
        make_policy("oracel", env="mujoco_reach")


def test_custom_policy_from_its_import_path_and_args_succeeds_in_process():
    config = CustomPolicyConfig(target=REACH, args={"gain": 0.7}, chunk_size=4)
    policy = build_policy(config, PolicyTask("mujoco_reach", chunk_size=4))
    assert (policy.spec.model_id, policy.spec.chunk_size) == ("reach-p0.7", 4)
    env = make_env("mujoco_reach")
    try:
        outcomes = evaluate(env, policy, episodes=5, progress=False)
    finally:
        env.close()
    assert [o.success for o in outcomes] == [True] * 5


def test_hydra_spelling_of_the_target_works_too():
    config = CustomPolicyConfig(target="examples.reach_policy.ReachPolicy")
    assert build_policy(config, PolicyTask("mujoco_reach")).spec.model_id == "reach-p0.5"


@pytest.mark.parametrize(("target", "args", "message"), [
    ("examples.no_such_module:Policy", {}, "cannot import 'examples.no_such_module': No module"),
    ("examples.reach_policy:NoSuchClass", {}, "examples.reach_policy has no 'NoSuchClass'"),
    ("collections:OrderedDict", {}, "built a OrderedDict, which is not a policies.base.Policy"),
    (REACH, {"gian": 1.0}, "unexpected keyword argument 'gian'"),
])
def test_what_is_not_a_policy_is_refused_naming_it(target, args, message):
    with pytest.raises(PolicyConfigError, match=message):
        build_policy(CustomPolicyConfig(target=target, args=args), PolicyTask("mujoco_reach"))


def test_custom_without_target_fails_at_startup_naming_the_field():
    with pytest.raises(Exception, match="policy.target"):
        compose(["policy=custom"])


def test_custom_policy_composes_with_its_args():
    _, config = compose(["policy=custom", f"policy.target={REACH}", "+policy.args.gain=0.9",
                         "env=mujoco_reach"])
    assert isinstance(config.policy, CustomPolicyConfig)
    assert (config.policy.target, config.policy.args) == (REACH, {"gain": 0.9})


def test_a_field_of_another_kind_is_a_typo_at_compose_time():
    with pytest.raises(Exception, match="weights"):
        compose(["policy=oracle", "policy.weights=x.safetensors"])


def test_remote_unknown_protocol_lists_the_choices():
    """The built-in protocols first (one another test registers by import path may follow,
    in a process that ran it)."""
    with pytest.raises(PolicyConfigError, match=r"policy.protocol='opnepi': expected one of "
                                                r"\['openpi', 'vla_eval', 'openvla', "
                                                r"'autoeval', 'sglang'[,\]]"):
        RemotePolicyConfig(protocol="opnepi", url="ws://127.0.0.1:1")


def test_remote_setting_the_protocol_ignores_is_an_error():
    with pytest.raises(PolicyConfigError, match="policy.image_format='jpeg': protocol 'openpi' "
                                                "does not read it"):
        RemotePolicyConfig(protocol="openpi", url="ws://127.0.0.1:1", image_format="jpeg")
    assert RemotePolicyConfig(protocol="vla_eval", url="ws://127.0.0.1:1",
                              image_format="jpeg").image_format == "jpeg"


def test_a_protocol_of_ones_own_is_one_module_named_by_import_path(tmp_path, monkeypatch):
    (tmp_path / "echo_protocol.py").write_text(
        "from policies.remote.protocols import ProtocolEntry\n"
        "class EchoAdapter:\n"
        "    def __init__(self, settings, action_dim):\n"
        "        self.url, self.action_dim = settings.url, action_dim\n"
        "PROTOCOL = ProtocolEntry('echo', lambda s, *, action_dim: EchoAdapter(s, action_dim),\n"
        "                         'openvla_libero', frozenset({'reply_chunk'}))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from policies.remote import make_adapter

    config = RemotePolicyConfig(protocol="echo_protocol:PROTOCOL", url="http://127.0.0.1:9",
                                reply_chunk=2)
    adapter = make_adapter(config, action_dim=7)
    assert (type(adapter).__name__, adapter.url, adapter.action_dim) == (
        "EchoAdapter", "http://127.0.0.1:9", 7)
    with pytest.raises(PolicyConfigError, match="echo_protocol.EchoAdapter is type, not a "
                                                "ProtocolEntry"):
        RemotePolicyConfig(protocol="echo_protocol:EchoAdapter", url="http://127.0.0.1:9")
