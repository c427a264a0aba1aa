"""The external model servers `policy=remote` can drive: one entry per protocol.

An entry says how to build the protocol's adapter from the remote settings, which model
family's conventions it usually serves, and which of the protocol-specific settings it
reads, so a setting it would ignore (`policy.image_format` against openpi) is an error
naming it, not a silent default. A protocol of a researcher's own is one module defining a
`ProtocolEntry`, named by import path: `policy.protocol=my_pkg.my_server:PROTOCOL`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from harness.imports import import_object
from policies.remote.base import Adapter

SPECIFIC_SETTINGS = ("reply_chunk", "unnorm_key", "dataset_statistics", "image_format")
"""Settings only some protocols read; every protocol reads url, model_id, convention and
the two timeouts."""


class UnknownProtocol(ValueError):
    """A `policy.protocol` no entry provides; the message lists the choices."""


@dataclass(frozen=True)
class ProtocolEntry:
    name: str
    build: Callable[..., Adapter]
    """(settings: RemotePolicyConfig, *, action_dim) -> an unconnected Adapter."""
    default_convention: str
    """`policies.remote.conventions` name used when `policy.convention` is unset."""
    reads: frozenset[str] = frozenset()
    """Which of SPECIFIC_SETTINGS it reads."""

    def __post_init__(self) -> None:
        unknown = set(self.reads) - set(SPECIFIC_SETTINGS)
        if unknown:
            raise ValueError(f"protocol {self.name!r} reads {sorted(unknown)}: not remote "
                             f"settings (those are {list(SPECIFIC_SETTINGS)})")


def _common(settings, action_dim: int) -> dict:
    return dict(url=settings.url, timeout_s=settings.request_timeout_s,
                model_id=settings.model_id, action_dim=action_dim)


def _openpi(settings, *, action_dim: int) -> Adapter:
    from policies.remote.openpi import OpenpiAdapter

    return OpenpiAdapter(**_common(settings, action_dim), chunk_size=settings.reply_chunk)


def _vla_eval(settings, *, action_dim: int) -> Adapter:
    from policies.remote.vla_eval import VlaEvalAdapter

    return VlaEvalAdapter(**_common(settings, action_dim), image_format=settings.image_format,
                          chunk_size=settings.reply_chunk or 1)


def _sglang(settings, *, action_dim: int) -> Adapter:
    from policies.remote.sglang import SglangAdapter

    return SglangAdapter(**_common(settings, action_dim), unnorm_key=settings.unnorm_key,
                         dataset_statistics=settings.dataset_statistics)


def _openvla_http(flavour: str) -> Callable[..., Adapter]:
    def build(settings, *, action_dim: int) -> Adapter:
        from policies.remote.openvla_http import OpenvlaHttpAdapter

        return OpenvlaHttpAdapter(**_common(settings, action_dim), flavour=flavour,
                                  unnorm_key=settings.unnorm_key,
                                  chunk_size=settings.reply_chunk or 1)
    return build


_PROTOCOLS: dict[str, ProtocolEntry] = {}


def register_protocol(entry: ProtocolEntry, name: str | None = None) -> ProtocolEntry:
    """Register `entry` under `name` (default its own); ValueError if the name is taken."""
    name = name or entry.name
    if _PROTOCOLS.get(name, entry) is not entry:
        raise ValueError(f"policy.protocol {name!r} is already registered")
    _PROTOCOLS[name] = entry
    return entry


for _entry in (
        ProtocolEntry("openpi", _openpi, "openpi_libero", frozenset({"reply_chunk"})),
        ProtocolEntry("vla_eval", _vla_eval, "vla_eval_default",
                      frozenset({"reply_chunk", "image_format"})),
        ProtocolEntry("openvla", _openvla_http("openvla"), "openvla_libero",
                      frozenset({"reply_chunk", "unnorm_key"})),
        ProtocolEntry("autoeval", _openvla_http("autoeval"), "openvla_libero",
                      frozenset({"reply_chunk", "unnorm_key"})),
        ProtocolEntry("sglang", _sglang, "openvla_libero",
                      frozenset({"unnorm_key", "dataset_statistics"}))):
    register_protocol(_entry)


def protocol_names() -> list[str]:
    return list(_PROTOCOLS)


def protocol_entry(name: str) -> ProtocolEntry:
    """The entry of `name`: a registered protocol, or an import path
    "package.module:ATTR" naming a ProtocolEntry.

    Raises:
        UnknownProtocol: neither; the message lists the registered protocols.
    """
    entry = _PROTOCOLS.get(name)
    if entry is not None:
        return entry
    if isinstance(name, str) and ":" in name:
        entry = import_object(name, field="policy.protocol", error=UnknownProtocol,
                              expected=ProtocolEntry)
        return register_protocol(entry, name)
    raise UnknownProtocol(f"policy.protocol={name!r}: expected one of {protocol_names()}, or "
                          "an import path 'package.module:ENTRY' naming a ProtocolEntry")
