"""Config shape of the harness, registered with Hydra's ConfigStore.

YAML files under `conf/` only choose values; every field, its type and its default live here,
so a typo in YAML or on the command line fails at startup naming the key, and
`validate` turns range errors into a `ConfigError` naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from transports.config import (
    GrpcTransportConfig,
    LocalTransportConfig,
    TransportConfig,
    TransportConfigError,
    ZenohTransportConfig,
    ZmqTransportConfig,
)


class ConfigError(ValueError):
    """A config value is invalid; the message names the field and the accepted range."""


@dataclass
class BenchConfig:
    """The transport benchmark, the default job until the closed loop exists."""

    round_trips: int = 1000
    warmup: int = 100
    image_size: int = 224
    jpeg_quality: int = 80
    floors: bool = True
    """Also measure the raw TCP, codec and websocket references in the same run."""
    csv: str = "bench.csv"
    """Written inside the Hydra run directory."""

    def __post_init__(self) -> None:
        if self.round_trips < 1:
            raise ConfigError(f"bench.round_trips={self.round_trips}: must be >= 1")
        if self.warmup < 0:
            raise ConfigError(f"bench.warmup={self.warmup}: must be >= 0")
        if not 16 <= self.image_size <= 4096:
            raise ConfigError(f"bench.image_size={self.image_size}: must be in 16..4096")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"bench.jpeg_quality={self.jpeg_quality}: must be in 1..100")


@dataclass
class HarnessConfig:
    transport: TransportConfig = MISSING
    bench: BenchConfig = field(default_factory=BenchConfig)
    seed: int = 0


def register_configs() -> None:
    """Put every schema in the ConfigStore; YAML files extend them by name."""
    store = ConfigStore.instance()
    store.store(name="harness_schema", node=HarnessConfig)
    for name, node in (("local", LocalTransportConfig), ("zenoh", ZenohTransportConfig),
                       ("grpc", GrpcTransportConfig), ("zmq", ZmqTransportConfig)):
        store.store(group="transport", name=f"{name}_schema", node=node)


def validate(cfg: DictConfig) -> HarnessConfig:
    """Turn the composed config into dataclasses, running every range check.

    Raises:
        ConfigError: a value is missing or out of range; the message names the field.
    """
    try:
        config = OmegaConf.to_object(cfg)
    except (ConfigError, TransportConfigError) as exc:
        raise ConfigError(str(exc)) from exc
    except OmegaConfBaseException as exc:
        cause = exc.__cause__ if isinstance(exc.__cause__, ValueError) else None
        raise ConfigError(str(cause or exc)) from exc
    assert isinstance(config, HarnessConfig)
    return config


def config_dir() -> str:
    """Where `conf/` is: inside the package when installed from a wheel, else the checkout's."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"no conf/config.yaml next to {here} or its parent")
