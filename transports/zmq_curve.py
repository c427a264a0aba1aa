"""ZeroMQ with `security=mtls`: CURVE encryption, and a ZAP handler that lets in only the robot
public keys of the allow-list (`transports.security.server_curve`).

The ZAP handler names each connection by the robot its key belongs to, and ZeroMQ stamps
that name on every message as its `User-Id`: the server takes a robot's identity from there.
A client's routing id (which names its sockets to the server's ROUTER) also carries a random
suffix under CURVE, because the ROUTER hands an id over to whichever connection claimed it
last: without the suffix a second robot that claimed `robot-1`'s id would receive its
replies, encrypted to the thief.
"""

from __future__ import annotations

import logging
import secrets
import threading

import zmq
import zmq.utils.z85
from zmq.auth.thread import ThreadAuthenticator

from transports.base import StreamStats
from transports.config import ZmqTransportConfig
from transports.security import CurveKeys, client_curve, server_curve

log = logging.getLogger(__name__)

ROUTE_SUFFIX = b"#"
"""Separates a client id from the random part of its routing id (CURVE only)."""


class _RobotAuthenticator(ThreadAuthenticator):
    """pyzmq's ZAP thread, naming an allowed key by its robot and counting refusals."""

    def __init__(self, context: zmq.Context, keys: CurveKeys, stats: StreamStats) -> None:
        super().__init__(context)
        self.names = dict(keys.allowed)
        self.refused = 0
        self._stats = stats
        self._lock = threading.Lock()

    def callback(self, domain: str, key: bytes) -> bool:
        """The credentials provider pyzmq asks for each handshake (`key` in Z85)."""
        if key in self.names:
            return True
        with self._lock:
            self.refused += 1
        log.warning("zmq: refused a CURVE handshake from a key not on the allow-list")
        self._stats.refuse("handshake_refused", "", key=key.decode("ascii", "replace")[:8])
        return False

    def curve_user_id(self, client_public_key: bytes) -> str:
        return self.names[zmq.utils.z85.encode(client_public_key)]


class CurveServer:
    """A ROUTER's CURVE side: its own context (a ZAP handler serves one context), the
    authenticator thread, and the socket options."""

    def __init__(self, config: ZmqTransportConfig, stats: StreamStats) -> None:
        self.keys = server_curve(config.security)  # SecurityError before anything starts
        self.context = zmq.Context()
        self._auth = _RobotAuthenticator(self.context, self.keys, stats)
        self._auth.start()
        self._auth.configure_curve_callback(domain="*", credentials_provider=self._auth)

    @property
    def refused(self) -> int:
        """Handshakes refused: a key not on the allow-list (or a plaintext peer)."""
        return self._auth.refused

    def secure(self, socket: zmq.Socket) -> None:
        socket.curve_secretkey = self.keys.secret
        socket.curve_publickey = self.keys.public
        socket.curve_server = True

    def close(self) -> None:
        self._auth.stop()
        self.context.term()


def client_route_suffix(config: ZmqTransportConfig) -> bytes:
    """What follows the client id in the client's routing ids: a random part under CURVE."""
    if not config.security.enabled:
        return b""
    return ROUTE_SUFFIX + secrets.token_hex(8).encode()


def secure_client(socket: zmq.Socket, config: ZmqTransportConfig) -> None:
    """A DEALER's CURVE side: its own pair and the server's public key."""
    keys = client_curve(config.security)
    socket.curve_secretkey = keys.secret
    socket.curve_publickey = keys.public
    socket.curve_serverkey = keys.server_public


def routed_client_id(identity: bytes, prefix_length: int, *, curve: bool) -> str:
    """The client id a ROUTER routing id names (prefix, id, and under CURVE the suffix)."""
    routed = identity[prefix_length:]
    if curve:
        routed = routed.rsplit(ROUTE_SUFFIX, 1)[0]
    return routed.decode("utf-8", "replace")
