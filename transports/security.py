"""Who may talk to a policy server: `security=none` (plaintext, anyone who reaches the port,
fine on loopback) or `security=mtls` (every connection authenticated both ways).

With `mtls` each backend uses its own mechanism (TLS for gRPC and Zenoh, CURVE for ZeroMQ),
all fed from the one directory `python -m harness.certs` writes. The point is the identity:
the server takes each robot's name from what the transport authenticated (a certificate's
common name, a CURVE public key on the allow-list), never from what the robot says, so one
robot cannot open, reset, read or close another's session.

Key material is checked when it is loaded, before any socket opens: a missing, unreadable,
expired or foreign file is one `SecurityError` naming the file and the command that fixes it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from transports.config import CERTS_COMMAND, SecurityConfig, SecurityError

SERVER_NAME = "server"
ROUTER_NAME = "router"
SERVER_CN = "policy-server"
"""The common name `python -m harness.certs` gives the server's certificate."""


@dataclass(frozen=True)
class TlsFiles:
    """A checked certificate, its key and the CA, as paths (Zenoh reads files) and bytes
    (gRPC takes PEM)."""

    ca: Path
    cert: Path
    key: Path
    name: str
    """The certificate's common name: the identity it proves."""

    @property
    def ca_pem(self) -> bytes:
        return self.ca.read_bytes()

    @property
    def cert_pem(self) -> bytes:
        return self.cert.read_bytes()

    @property
    def key_pem(self) -> bytes:
        return self.key.read_bytes()


@dataclass(frozen=True)
class CurveKeys:
    """ZeroMQ CURVE keys (Z85): one's own pair, and the peer's public key or allow-list."""

    public: bytes
    secret: bytes
    server_public: bytes = b""
    """A client's: the server it will talk to."""
    allowed: dict[bytes, str] = field(default_factory=dict)
    """A server's: each robot's public key and its name."""


def _root(config: SecurityConfig) -> Path:
    root = Path(config.dir)
    if not root.is_dir():
        raise SecurityError(f"security.dir={config.dir}: no such directory; make one with "
                            f"{CERTS_COMMAND}")
    return root


def _where(config: SecurityConfig, path: Path) -> str:
    return f"security.dir={config.dir}: {path.relative_to(config.dir)}"


def _read(config: SecurityConfig, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise SecurityError(f"{_where(config, path)} is missing; make the files with "
                            f"{CERTS_COMMAND}") from None
    except (PermissionError, IsADirectoryError) as exc:
        raise SecurityError(f"{_where(config, path)} cannot be read ({exc.strerror}); "
                            "give this user read access") from None


def _certificate(config: SecurityConfig, path: Path, now: dt.datetime):
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(_read(config, path))
    except ValueError as exc:
        raise SecurityError(f"{_where(config, path)} is not a PEM certificate ({exc})") from None
    if now > cert.not_valid_after_utc:
        raise SecurityError(
            f"{_where(config, path)} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; "
            f"make new ones with {CERTS_COMMAND} and point security.dir at DIR")
    if now < cert.not_valid_before_utc:
        raise SecurityError(
            f"{_where(config, path)} is not valid before "
            f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC; check this machine's clock")
    return cert


def _common_name(cert) -> str:
    from cryptography.x509.oid import NameOID

    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def check_tls(config: SecurityConfig, cert_name: str, *, subdir: str = "",
              now: dt.datetime | None = None) -> TlsFiles:
    """The certificate `[subdir/]cert_name.pem` and its key, checked against ca.pem: present,
    readable, in date, signed by that CA, and the key the certificate's."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization

    now = now or dt.datetime.now(dt.UTC)
    root = _root(config)
    ca_path, cert_path = root / "ca.pem", root / subdir / f"{cert_name}.pem"
    key_path = cert_path.with_suffix(".key")
    ca = _certificate(config, ca_path, now)
    cert = _certificate(config, cert_path, now)
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise SecurityError(f"{_where(config, cert_path)} was not signed by ca.pem (a "
                            "certificate of another CA?); use the files of one "
                            f"{CERTS_COMMAND} run") from None
    key_bytes = _read(config, key_path)
    try:
        key = serialization.load_pem_private_key(key_bytes, password=None)
    except (ValueError, TypeError) as exc:
        raise SecurityError(f"{_where(config, key_path)} is not an unencrypted PEM private "
                            f"key ({exc})") from None
    raw = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.DER
    if key.public_key().public_bytes(encoding, raw) != cert.public_key().public_bytes(
            encoding, raw):
        raise SecurityError(f"{_where(config, key_path)} is not the key of "
                            f"{cert_path.name}; use the pair {CERTS_COMMAND} wrote together")
    return TlsFiles(ca_path, cert_path, key_path, _common_name(cert))


def server_tls(config: SecurityConfig) -> TlsFiles:
    return check_tls(config, SERVER_NAME)


def router_tls(config: SecurityConfig) -> TlsFiles:
    return check_tls(config, ROUTER_NAME)


def client_tls(config: SecurityConfig) -> TlsFiles:
    files = check_tls(config, config.identity, subdir="robots")
    if files.name != config.identity:
        raise SecurityError(f"{_where(config, files.cert)} names {files.name!r}, not "
                            f"security.identity={config.identity!r}")
    return files


def robot_names(config: SecurityConfig) -> list[str]:
    """Every robot with a certificate in the directory (the server's and router's view):
    SecurityError if there is none (Zenoh's ACL would then let no robot in)."""
    names = sorted(path.stem for path in (Path(config.dir) / "robots").glob("*.pem"))
    if not names:
        raise SecurityError(f"security.dir={config.dir}: no robot certificates in robots/; "
                            f"make them with {CERTS_COMMAND}")
    return names


def _curve_pair(config: SecurityConfig, name: str, *, secret: bool) -> tuple[bytes, bytes]:
    import zmq.auth

    path = _root(config) / "curve" / (f"{name}.key_secret" if secret else f"{name}.key")
    _read(config, path)  # missing or unreadable: the one-line error
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except (ValueError, OSError) as exc:
        raise SecurityError(f"{_where(config, path)} is not a ZeroMQ CURVE key file ({exc})"
                            ) from None
    return public, secret_key or b""


def server_curve(config: SecurityConfig) -> CurveKeys:
    """The server's pair and the allow-list: every robot public key in curve/."""
    public, secret = _curve_pair(config, SERVER_NAME, secret=True)
    allowed = {}
    for path in sorted((Path(config.dir) / "curve").glob("*.key")):
        if path.stem not in (SERVER_NAME, ROUTER_NAME):
            allowed[_curve_pair(config, path.stem, secret=False)[0]] = path.stem
    return CurveKeys(public, secret, allowed=allowed)


def client_curve(config: SecurityConfig) -> CurveKeys:
    public, secret = _curve_pair(config, config.identity, secret=True)
    server_public, _ = _curve_pair(config, SERVER_NAME, secret=False)
    return CurveKeys(public, secret, server_public=server_public)


def client_transport_id(config) -> str:
    """The id a client of transport config `config` goes by: with security its identity (the
    server would refuse any other), else `config.client_id` ("" lets the backend pick)."""
    security = config.security
    if not security.enabled:
        return config.client_id
    if config.client_id and config.client_id != security.identity:
        raise SecurityError(f"transport.client_id={config.client_id!r} with security=mtls: a "
                            f"robot goes by its certificate's name (security.identity="
                            f"{security.identity})")
    return security.identity


def check_key_material(config: SecurityConfig, mechanism: str, *, server: bool,
                       client: bool) -> None:
    """Load every file the given sides of a transport authenticating by `mechanism` ("tls"
    or "curve", its registry entry's `security`) will read: SecurityError before anything
    starts, naming the file, instead of a failure once a server is half up."""
    if mechanism == "curve":
        if server:
            server_curve(config)
        if client:
            client_curve(config)
        return
    if server:
        server_tls(config)
        robot_names(config)
    if client:
        client_tls(config)
