"""Policies served by someone else's model server: openpi, vla-eval, OpenVLA's deploy.py or an
AutoEval-style `/act` server, SGLang. `base.py` is the seam (Adapter, Convention),
`protocols.py` the registry of protocols, `config.py` the settings, `policy.py` the policy our
server hosts, one module per protocol speaks its wire, and `conventions.py` holds what each
model family expects to see."""

from __future__ import annotations

from envs import robot_contract
from policies.remote.config import RemotePolicyConfig
from policies.remote.policy import RemotePolicy
from policies.remote.protocols import (
    ProtocolEntry,
    UnknownProtocol,
    protocol_entry,
    protocol_names,
    register_protocol,
)


def make_adapter(settings: RemotePolicyConfig, *, action_dim: int):
    """The protocol's adapter (its module imported only when used)."""
    return protocol_entry(settings.protocol).build(settings, action_dim=action_dim)


def make_remote_policy(settings: RemotePolicyConfig, *, env: str, task_id: int,
                       cameras: tuple[str, ...], image_size: tuple[int, int]) -> RemotePolicy:
    """A `RemotePolicy` connected to the external server (raises what its adapter's connect
    raises: RemoteUnavailable, SpecMismatch)."""
    from policies.remote.conventions import make_convention

    robot = robot_contract(env, task_id, cameras=cameras, image_size=image_size)
    convention = make_convention(settings.convention
                                 or protocol_entry(settings.protocol).default_convention,
                                 cameras=cameras, image_size=image_size)
    adapter = make_adapter(settings, action_dim=robot.action_dim)
    return RemotePolicy(adapter, convention, robot, chunk_size=settings.chunk_size,
                        connect_timeout_s=settings.connect_timeout_s)


__all__ = ["ProtocolEntry", "RemotePolicy", "RemotePolicyConfig", "UnknownProtocol",
           "make_adapter", "make_remote_policy", "protocol_entry", "protocol_names",
           "register_protocol"]
