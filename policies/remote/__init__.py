"""Policies served by someone else's model server: openpi, vla-eval, OpenVLA's deploy.py or an
AutoEval-style `/act` server, SGLang. `base.py` is the seam (Adapter, Convention),
`policy.py` the policy our server hosts, one module per protocol speaks its wire, and
`conventions.py` holds what each model family expects to see."""

from __future__ import annotations

from dataclasses import dataclass

from policies.remote.policy import DEFAULT_CONVENTION, RemotePolicy, RemoteProtocol, robot_contract


@dataclass(frozen=True)
class RemoteSettings:
    """What `policy=remote` is configured with (the `policy.*` fields of the same names)."""

    protocol: RemoteProtocol
    url: str
    convention: str | None = None
    model_id: str | None = None
    reply_chunk: int | None = None
    unnorm_key: str | None = None
    dataset_statistics: str | None = None
    image_format: str = "png"
    connect_timeout_s: float = 30.0
    request_timeout_s: float = 10.0


def make_adapter(settings: RemoteSettings, *, action_dim: int):
    """The protocol's adapter (its module imported only when used)."""
    protocol = RemoteProtocol(settings.protocol)
    common = dict(url=settings.url, timeout_s=settings.request_timeout_s,
                  model_id=settings.model_id, action_dim=action_dim)
    if protocol is RemoteProtocol.openpi:
        from policies.remote.openpi import OpenpiAdapter

        return OpenpiAdapter(**common, chunk_size=settings.reply_chunk)
    if protocol is RemoteProtocol.vla_eval:
        from policies.remote.vla_eval import VlaEvalAdapter

        return VlaEvalAdapter(**common, image_format=settings.image_format,
                              chunk_size=settings.reply_chunk or 1)
    if protocol is RemoteProtocol.sglang:
        from policies.remote.sglang import SglangAdapter

        return SglangAdapter(**common, unnorm_key=settings.unnorm_key,
                             dataset_statistics=settings.dataset_statistics)
    from policies.remote.openvla_http import OpenvlaHttpAdapter

    return OpenvlaHttpAdapter(**common, flavour=protocol.value, unnorm_key=settings.unnorm_key,
                              chunk_size=settings.reply_chunk or 1)


def make_remote_policy(settings: RemoteSettings, *, env: str, task_id: int,
                       cameras: tuple[str, ...], image_size: tuple[int, int],
                       chunk_size: int) -> RemotePolicy:
    """A `RemotePolicy` connected to the external server (raises what its adapter's connect
    raises: RemoteUnavailable, SpecMismatch)."""
    from policies.remote.conventions import make_convention

    robot = robot_contract(env, task_id, cameras=cameras, image_size=image_size)
    convention = make_convention(settings.convention
                                 or DEFAULT_CONVENTION[RemoteProtocol(settings.protocol)],
                                 cameras=cameras, image_size=image_size)
    adapter = make_adapter(settings, action_dim=robot.action_dim)
    return RemotePolicy(adapter, convention, robot, chunk_size=chunk_size,
                        connect_timeout_s=settings.connect_timeout_s)


__all__ = ["RemotePolicy", "RemoteProtocol", "RemoteSettings", "make_adapter",
           "make_remote_policy"]
