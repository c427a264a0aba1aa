"""`policy=remote` and `faults.link`: a config that cannot run fails at startup naming the
field."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from harness.checks import check_loop_config
from harness.config import (
    ConfigError,
    config_dir,
    register_configs,
    validate,
)

register_configs()


def config(*overrides: str):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return validate(compose(config_name="config", overrides=list(overrides)))


REMOTE = ("policy=remote", "policy.protocol=openpi", "policy.url=ws://127.0.0.1:8000")


def test_a_remote_policy_composes_with_its_protocol_and_url():
    policy = config(*REMOTE).policy
    assert (policy.protocol, policy.url, policy.name) == ("openpi", "ws://127.0.0.1:8000",
                                                          "remote")


@pytest.mark.parametrize(("overrides", "message"), [
    (("policy=remote",), r"policy.protocol: no value given; set it \(policy.protocol=...\)"),
    (("policy=remote", "policy.protocol=grpc", "policy.url=x"), "policy.protocol"),
    ((*REMOTE, "policy.image_format=gif"), "policy.image_format='gif'"),
    ((*REMOTE, "policy.request_timeout_s=0"), "must be > 0"),
    (("transport=zmq", "faults=lte", "faults.link=model"),
     "faults.link=model: the model link is our server's link to an external model server"),
    ((*REMOTE, "transport=zmq", "faults=lte", "faults.link=both", "server=external"),
     "faults.link=both: the model link's proxy needs a server the harness starts"),
    ((*REMOTE, "transport=zmq", "faults=lte", "faults.link=model", "faults.network=kernel"),
     "faults.network=proxy"),
])
def test_a_remote_config_that_cannot_run_names_the_field(overrides, message):
    with pytest.raises(ConfigError, match=message):
        config(*overrides)


def test_the_model_link_alone_needs_no_networked_transport():
    """faults.link=model puts the proxy on our server's link to the model: the robot's link
    may be the in-process one."""
    faults = config(*REMOTE, "transport=local", "faults=wan_50ms", "faults.link=model").faults
    assert (faults.link, faults.has_network_faults) == ("model", True)


@pytest.mark.parametrize("overrides", [
    ("policy.protocol=vla_eval",), ("policy.protocol=openvla", "policy.unnorm_key=x"),
    ("policy.protocol=sglang", "policy.unnorm_key=x"),
])
def test_one_action_per_reply_with_an_asynchronous_client_fails_at_startup(overrides):
    """Every action would arrive after its tick and be trimmed: the run would hold the robot
    all episode and exit 0. Refused, naming the fix; synchronous or chunked replies pass."""
    base = ("policy=remote", "policy.url=ws://127.0.0.1:8000", *overrides)
    with pytest.raises(ConfigError, match="answers one action per observation.*"
                                          "client=synchronous"):
        check_loop_config(config(*base))
    check_loop_config(config(*base, "client=synchronous"))
    if "policy.protocol=vla_eval" in overrides:
        check_loop_config(config(*base, "policy.reply_chunk=10"))
