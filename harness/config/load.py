"""From Hydra to a checked `HarnessConfig`: the schemas registered in the ConfigStore, the
composed config validated (unknown keys refused, every error a `ConfigError` naming the
field), and the entry points' way out (one line, exit 2) for a config that cannot run."""

from __future__ import annotations

import dataclasses
import difflib
import logging
import sys
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from envs import task_ids
from harness.client.config import EngineConfig
from harness.config.enums import ConfigError
from harness.config.schema import HarnessConfig
from harness.config.sections import EnvConfig, ServerConfig
from harness.faults.schedule import FaultsConfig
from harness.loop.ports import default_port
from harness.results.wandb_log import LoggerConfig
from policies.config import PolicyConfigError
from policies.registry import UnknownPolicy, policy_entry, policy_names
from transports.config import SecurityConfig, TransportConfigError
from transports.registry import transport_entry, transport_names


def register_configs() -> None:
    """Put every schema in the ConfigStore; YAML files extend them by name."""
    if not OmegaConf.has_resolver("port"):  # conf/transport/*.yaml: ${port:5555}
        OmegaConf.register_new_resolver("port", default_port)
    store = ConfigStore.instance()
    store.store(name="harness_schema", node=HarnessConfig)
    store.store(group="env", name="env_schema", node=EnvConfig)
    for name in policy_names():
        store.store(group="policy", name=f"{name}_schema", node=policy_entry(name).config_class)
    store.store(group="server", name="server_schema", node=ServerConfig)
    store.store(group="faults", name="faults_schema", node=FaultsConfig)
    store.store(group="client", name="client_schema", node=EngineConfig)
    store.store(group="logger", name="logger_schema", node=LoggerConfig)
    store.store(group="security", name="security_schema", node=SecurityConfig)
    for name in transport_names():
        store.store(group="transport", name=f"{name}_schema",
                    node=transport_entry(name).config_class)


def validate(cfg: DictConfig) -> HarnessConfig:
    """Turn the composed config into dataclasses, running every range check.

    Raises:
        ConfigError: a value is missing or out of range; the message names the field.
    """
    _refuse_unknown_keys(cfg)
    try:
        config = OmegaConf.to_object(cfg)
    except (ConfigError, TransportConfigError, PolicyConfigError, UnknownPolicy) as exc:
        raise ConfigError(str(exc)) from exc
    except ValueError as exc:  # range checks of dataclasses outside this module
        raise ConfigError(str(exc)) from exc
    except MissingMandatoryValue as exc:
        key = exc.full_key or "a field"
        raise ConfigError(f"{key}: no value given; set it ({key}=...)") from exc
    except OmegaConfBaseException as exc:
        cause = exc.__cause__ if isinstance(exc.__cause__, ValueError) else None
        raise ConfigError(str(cause or exc)) from exc
    assert isinstance(config, HarnessConfig)
    return config


def _refuse_unknown_keys(node: Any, path: str = "") -> None:
    """Hydra's `+key=value` adds a key even to a schema that has no such field, and the
    dataclass then carries it unread: a typo such as `+client.fallbak=hold` ran with the
    default. Every key of a schema'd node must be one of its fields.

    Raises:
        ConfigError: naming the key and the closest field.
    """
    if not isinstance(node, DictConfig):
        return
    schema = OmegaConf.get_type(node)
    if dataclasses.is_dataclass(schema):
        fields = [f.name for f in dataclasses.fields(schema)]
        for key in node.keys():
            if key not in fields:
                near = difflib.get_close_matches(str(key), fields, n=1)
                hint = f"; did you mean {path}{near[0]}?" if near else \
                    f"; its fields are {', '.join(fields)}"
                raise ConfigError(f"{path}{key}: no such setting{hint}")
    for key in node.keys():
        value = node._get_node(key)
        if isinstance(value, DictConfig) and not value._is_missing():
            _refuse_unknown_keys(value, f"{path}{key}.")


def validate_or_exit(cfg: DictConfig) -> HarnessConfig:
    """`validate` for an entry point: an invalid value is logged, naming the field, and the
    process exits with status 2 before anything starts."""
    try:
        return validate(cfg)
    except ConfigError as exc:
        logging.getLogger("harness").error("invalid config: %s", exc)
        sys.exit(2)


def schema_choice_error(choices: Any) -> str | None:
    """Group choices (Hydra's runtime choices) name a YAML of `conf/`, not a schema the
    ConfigStore registers beside them (`transport=zmq_schema` composed the bare schema as if
    it were a transport): None, or the one line naming the real choices."""
    for group, picked in dict(choices).items():
        if str(picked).endswith("_schema") and not str(group).startswith("hydra/"):
            return (f"{group}={picked}: a schema, not a choice; choose one of "
                    f"{', '.join(group_options(str(group)))}")
    return None


def check_choices_or_exit(choices: Any) -> None:
    """`schema_choice_error` for an entry point: logged, exit 2."""
    error = schema_choice_error(choices)
    if error is not None:
        logging.getLogger("harness").error("invalid config: %s", error)
        sys.exit(2)


def group_options(group: str) -> list[str]:
    """The choices of config group `group`: the YAML files of `conf/<group>/` (the schemas
    the ConfigStore registers beside them are not among them)."""
    return sorted(p.stem for p in (Path(config_dir()) / group).glob("*.yaml"))


def check_tasks_or_exit(config: HarnessConfig) -> None:
    """The selected tasks exist (a LIBERO suite is asked for its count): else one line naming
    `env.tasks`, exit 2, before anything starts."""
    try:
        task_ids(config.env.name, config.env.tasks)
    except ValueError as exc:
        logging.getLogger("harness").error("invalid config: %s", exc)
        sys.exit(2)


def config_dir() -> str:
    """Where `conf/` is: inside the package when installed from a wheel, else the checkout's."""
    here = Path(__file__).resolve().parents[1]  # the harness package
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"no conf/config.yaml next to {here} or its parent")
