"""Every shipped YAML composes and validates; bad values fail at startup naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import OmegaConfBaseException

from harness.checks import check_loop_config
from harness.config import (
    ConfigError,
    config_dir,
    register_configs,
    validate,
)
from harness.loop.ports import default_port
from transports.config import TransportConfig

register_configs()
TRANSPORT_FILES = sorted(p.stem for p in (Path(config_dir()) / "transport").glob("*.yaml"))
ENV_FILES = sorted(p.stem for p in (Path(config_dir()) / "env").glob("*.yaml"))
POLICY_FILES = sorted(p.stem for p in (Path(config_dir()) / "policy").glob("*.yaml"))


def compose_config(*overrides: str):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_every_transport_kind_has_a_yaml():
    """Each registered transport has its `transport=<name>` YAML, and each YAML a kind."""
    from transports.registry import transport_names

    assert TRANSPORT_FILES == sorted(transport_names())


@pytest.mark.parametrize("name", TRANSPORT_FILES)
def test_transport_yaml_composes_into_its_dataclass(name):
    config = validate(compose_config(f"transport={name}"))
    assert isinstance(config.transport, TransportConfig)
    assert config.transport.kind == name


@pytest.mark.parametrize("name", ENV_FILES)
def test_env_yaml_composes_and_names_its_env(name):
    config = validate(compose_config(f"env={name}"))
    assert config.env.name == name
    assert config.env.tasks == ("all" if name.startswith("libero") else "0")


@pytest.mark.parametrize("name", POLICY_FILES)
def test_policy_yaml_composes_and_names_its_policy(name):
    needs = {"remote": ["policy.protocol=openpi", "policy.url=ws://127.0.0.1:8000"],
             "custom": ["policy.target=examples.reach_policy:ReachPolicy"]}
    assert validate(compose_config(f"policy={name}", *needs.get(name, []))).policy.name == name


def test_every_env_and_policy_has_a_yaml():
    """Each registered env and policy kind has its YAML (and no YAML names another)."""
    from envs import env_names
    from policies import policy_names

    assert ENV_FILES == sorted(env_names())
    assert POLICY_FILES == sorted(policy_names())


def test_default_transport_is_zenoh_on_loopback_dialling_its_listen_address():
    config = validate(compose_config())
    assert config.transport.kind == "zenoh"
    port = default_port(7447)  # 7447 unless HARNESS_PORT_OFFSET moves it (pytest-xdist does)
    assert config.transport.listen == f"tcp/127.0.0.1:{port}"
    assert config.transport.connect is None
    assert config.transport.connect_address == f"tcp/127.0.0.1:{port}"


def test_connect_address_can_differ_from_listen():
    config = validate(compose_config("transport=zmq", "transport.listen=tcp://0.0.0.0:5555",
                                     "transport.connect=tcp://10.0.0.5:6000"))
    assert (config.transport.listen, config.transport.connect_address) == (
        "tcp://0.0.0.0:5555", "tcp://10.0.0.5:6000")


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("transport.lease_ms=-5", "transport.lease_ms"),
        ("transport.max_message_bytes=0", "transport.max_message_bytes"),
        ("transport.listen=localhost:7447", "transport.listen"),
        ("transport.connect=localhost:7447", "transport.connect"),
        ("bench.round_trips=0", "bench.round_trips"),
        ("bench.jpeg_quality=101", "bench.jpeg_quality"),
        ("env.tasks=first", "env.tasks"),
        ("env.episodes_per_task=0", "env.episodes_per_task"),
        ("policy.chunk_size=0", "policy.chunk_size"),
        ("policy.latency_profile=h100", "policy.latency_profile"),
        ("policy.replan_every=9", "policy.replan_every"),
        ("server.max_batch_size=0", "server.max_batch_size"),
        ("server.max_wait_ms=-1", "server.max_wait_ms"),
        ("server.torch_threads=-1", "server.torch_threads"),
    ],
)
def test_out_of_range_value_fails_naming_the_field(override, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        validate(compose_config(override))


def test_misspelt_key_fails_at_compose_naming_the_key():
    with pytest.raises((ConfigCompositionException, OmegaConfBaseException), match="listne"):
        compose_config("transport.listne=tcp/127.0.0.1:1")


@pytest.mark.parametrize(("override", "field", "choices"), [
    ("job=train", "job", "evaluate"),
    ("clock=wall", "clock", "virtual"),
    ("latency.kind=normal", "latency.kind", "lognormal"),
    ("server.mode=remote", "server.mode", "external"),
    ("client.fallback=brake", "client.fallback", "repeat_last"),
    ("client.ensembling=median", "client.ensembling", "exponential"),
])
def test_a_choice_outside_its_enum_fails_at_compose_naming_field_and_choices(override, field,
                                                                              choices):
    with pytest.raises((ConfigCompositionException, OmegaConfBaseException)) as failure:
        compose_config(override)
    text = str(failure.value) + str(failure.value.__cause__)
    assert field in text and choices in text


@pytest.mark.parametrize(("override", "message"), [
    ("env.name=libero_100", "env.name='libero_100': expected one of ['mujoco_reach', "),
    ("policy.name=pi0", "policy.name='pi0': expected one of ['oracle', 'torch', 'flow', "
                        "'remote', 'custom']"),
    ("transport.kind=udp", "transport.kind='udp': expected one of local, zenoh, grpc, zmq"),
    ("server.scheduler=fifo", "server.scheduler='fifo': expected one of ['round_robin', "
                              "'micro_batch']"),
])
def test_a_registry_name_outside_its_registry_fails_at_startup_naming_field_and_choices(
        override, message):
    """Names that a module of one's own may add (envs, policies, transports) are strings
    checked against their registry when the config is validated, before anything starts."""
    with pytest.raises(ConfigError) as failure:
        validate(compose_config(override))
    assert message in str(failure.value)


def test_wrong_type_fails_naming_the_key():
    with pytest.raises((ConfigCompositionException, OmegaConfBaseException),
                       match="round_trips"):
        compose_config("bench.round_trips=many")


def test_a_transport_yaml_without_a_schema_is_checked_against_its_kind():
    """A transport of one's own has no schema in the ConfigStore: its YAML's fields are
    checked against its entry's config class when the config is validated."""
    from harness.config import transport_from_fields

    with pytest.raises(ConfigError, match=r"transport.listne: not a field of "
                                          r"ZmqTransportConfig \(kind 'zmq'\)"):
        transport_from_fields({"kind": "zmq", "listne": "tcp://127.0.0.1:5555"})
    with pytest.raises(ConfigError, match="transport.kind='udp': expected one of"):
        transport_from_fields({"kind": "udp"})
    with pytest.raises(ConfigError, match="choose one with transport=<name>"):
        transport_from_fields({"listen": "tcp://127.0.0.1:5555"})
    built = transport_from_fields({"kind": "zmq", "listen": "tcp://127.0.0.1:6000"})
    assert (type(built).__name__, built.listen) == ("ZmqTransportConfig", "tcp://127.0.0.1:6000")


def test_a_policy_name_that_is_not_its_yamls_kind_fails_naming_both():
    with pytest.raises(ConfigError, match="policy.name='torch' with the schema of OracleConfig"):
        validate(compose_config("policy=oracle", "policy.name=torch"))


@pytest.mark.parametrize("overrides, message", [
    (("transport=zmq", "transport.heartbeat_timeout_s=5"),
     "transport.heartbeat_timeout_s=5 must be below client.max_offline_s=5"),
    (("client.request_timeout_s=6",),
     "client.request_timeout_s=6 must be below client.max_offline_s=5"),
    (("policy=remote", "policy.protocol=openpi", "policy.url=ws://127.0.0.1:8000",
      "policy.request_timeout_s=10"),
     "policy.request_timeout_s=10 must be below client.max_offline_s=5"),
    (("client.max_offline_s=12",),
     "client.max_offline_s=12 must be below server.session_idle_timeout_s=10"),
])
def test_timeouts_out_of_order_fail_at_startup_naming_the_pair(overrides, message):
    """Each pair the robot's, the server's and the model link's timeouts must keep (a robot
    notices an outage and a hung model request errors out before the robot gives up; the
    server keeps a silent session longer than the robot keeps trying) is refused when
    crossed, in one line naming both fields."""
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")) as caught:
        check_loop_config(validate(compose_config(*overrides)))
    assert "\n" not in str(caught.value)


def test_the_shipped_timeouts_are_in_order_for_every_policy_kind():
    """The defaults pass the order check, remote model link included."""
    for overrides in ((), ("policy=remote", "policy.protocol=openpi",
                           "policy.url=ws://127.0.0.1:8000")):
        config = validate(compose_config(*overrides))
        check_loop_config(config)
        assert config.client.max_offline_s < config.server.session_idle_timeout_s
