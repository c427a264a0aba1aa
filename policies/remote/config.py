"""The settings of `policy=remote`, defined once: the Hydra schema of `conf/policy/remote.yaml`
is this dataclass, and the adapters read it as it is (no copy with its own defaults)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

from omegaconf import MISSING

from policies.config import PolicyConfig, PolicyConfigError

IMAGE_FORMATS = ("png", "jpeg", "raw")


@dataclass
class RemotePolicyConfig(PolicyConfig):
    """A model on someone else's server (openpi, vla-eval, OpenVLA, AutoEval, SGLang),
    driven through the protocol's adapter (`policies.remote.protocols`)."""

    name: str = "remote"
    protocol: str = MISSING
    """A registered protocol (openpi, vla_eval, openvla, autoeval, sglang) or an import path
    'package.module:ENTRY' naming a `ProtocolEntry`."""
    url: str = MISSING
    """Where the external server is (ws://host:port, http://host:port)."""
    convention: Optional[str] = None
    """The model family's observation and action conventions (`policies.remote.conventions`);
    None: the protocol's usual one."""
    model_id: Optional[str] = None
    """The model's id where the protocol's handshake does not say it."""
    reply_chunk: Optional[int] = None
    """Actions per reply where the handshake does not say it (openpi's metadata has no
    action shape: e.g. 10 for pi0 on LIBERO; the HTTP servers answer 1). vla_eval: unset (1)
    for a server that chunks itself, vla-eval's default, whose HELLO does not say so; the
    model's chunk for one that does not (a wrong value fails the first reply, naming the
    right one). One action per reply wants client=synchronous."""
    unnorm_key: Optional[str] = None
    """OpenVLA family: the dataset statistics actions are un-normalized with (e.g.
    libero_object)."""
    dataset_statistics: Optional[str] = None
    """sglang: a dataset_statistics.json (q01/q99 per unnorm_key)."""
    image_format: str = "png"
    """vla_eval: how images travel (png, jpeg, raw)."""
    connect_timeout_s: float = 30.0
    """How long a session open waits for the external server."""
    request_timeout_s: float = 3.0
    """How long one request to the external server may take (wall time). Below
    `client.max_offline_s`: a hung request must come back as an error, counted, before the
    robot gives up (checked at startup)."""

    @property
    def robot_chunk_size(self) -> int:
        """0: the chunk is what the external server returns (cut to `chunk_size`)."""
        return 0

    @property
    def model_link(self) -> str | None:
        return self.url

    @property
    def one_action_per_reply(self) -> bool:
        """The HTTP protocols and vla-eval answer one action unless `reply_chunk` says more
        (sglang always one); openpi answers what its model chunks."""
        if self.protocol == "sglang":
            return True
        return self.protocol in ("vla_eval", "openvla", "autoeval") and (self.reply_chunk or 1) == 1

    def __post_init__(self) -> None:
        super().__post_init__()
        from policies.remote.protocols import SPECIFIC_SETTINGS, UnknownProtocol, protocol_entry

        if not self.url:
            raise PolicyConfigError("policy=remote: set policy.url (ws://host:port or "
                                    "http://host:port) and policy.protocol")
        try:
            entry = protocol_entry(self.protocol)
        except UnknownProtocol as exc:
            raise PolicyConfigError(str(exc)) from None
        defaults = {f.name: f.default for f in fields(RemotePolicyConfig)}
        for setting in SPECIFIC_SETTINGS:
            if getattr(self, setting) != defaults[setting] and setting not in entry.reads:
                raise PolicyConfigError(
                    f"policy.{setting}={getattr(self, setting)!r}: protocol {entry.name!r} "
                    f"does not read it (it reads {sorted(entry.reads) or 'none of them'})")
        if self.image_format not in IMAGE_FORMATS:
            raise PolicyConfigError(f"policy.image_format={self.image_format!r}: expected one "
                                    f"of {list(IMAGE_FORMATS)}")
        if self.reply_chunk is not None and self.reply_chunk < 1:
            raise PolicyConfigError(f"policy.reply_chunk={self.reply_chunk}: must be >= 1")
        if self.connect_timeout_s <= 0 or self.request_timeout_s <= 0:
            raise PolicyConfigError(f"policy.connect_timeout_s={self.connect_timeout_s} and "
                                    f"policy.request_timeout_s={self.request_timeout_s}: "
                                    "must be > 0")
