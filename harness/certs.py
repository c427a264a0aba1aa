"""`python -m harness.certs --out DIR --robots N`: the key material `security=mtls` reads.

One private CA signs a certificate for the policy server, one for a Zenoh router and one per
robot (its common name is the robot's identity: `robot-1`, `robot-2`, ...); next to them,
ZeroMQ CURVE key pairs for the server and each robot (ZeroMQ authenticates keys, not
certificates). Certificates are short-lived by default (7 days): a lost robot's access ends
on its own, and making new ones is this one command. The CA's key stays in DIR so that more
robots can be added later with `--add`; keep DIR off the robots (each robot needs only
`ca.pem`, its own certificate and key, and its CURVE pair; see docs/security.md).

Layout (all PEM; keys are written 0600):

    DIR/ca.pem  ca.key
    DIR/server.pem  server.key          CN policy-server
    DIR/router.pem  router.key          CN router
    DIR/robots/robot-N.pem  .key        CN robot-N
    DIR/curve/server.key  server.key_secret
    DIR/curve/robot-N.key  robot-N.key_secret

Elliptic-curve keys (P-256) throughout: what gRPC, rustls (Zenoh) and OpenSSL all accept.
An existing DIR is never overwritten (a run's keys are not silently replaced).
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from transports.security import ROUTER_NAME, SERVER_CN, SERVER_NAME

log = logging.getLogger(__name__)

ROUTER_CN = "router"
ROBOT_PREFIX = "robot-"
DEFAULT_DAYS = 7
DEFAULT_HOSTS = ("localhost", "127.0.0.1")
"""Names the server's and router's certificates are valid for, besides those given."""


@dataclass(frozen=True)
class Issued:
    """One certificate and its key, as PEM bytes."""

    cert_pem: bytes
    key_pem: bytes


def robot_name(index: int) -> str:
    return f"{ROBOT_PREFIX}{index}"


def _name(common_name: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "robot-policy-harness"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def make_ca(*, days: int, now: dt.datetime | None = None) -> Issued:
    """A self-signed CA that may sign end-entity certificates only (path length 0)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    now = now or dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("robot-policy-harness CA")
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return Issued(_cert_pem(cert), _key_pem(key))


def issue(ca: Issued, common_name: str, *, days: int, hosts: tuple[str, ...] = (),
          now: dt.datetime | None = None) -> Issued:
    """A certificate for `common_name` signed by `ca`, valid from now for `days` (negative
    days give an expired one, which the tests need). With `hosts` it is a server's (and a
    router's: it also dials out) and carries them as subject alternative names; without, a
    robot's, for client authentication only."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    now = now or dt.datetime.now(dt.UTC)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = sorted((now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)))
    if days < 0:
        start = end - dt.timedelta(days=1)
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    builder = (x509.CertificateBuilder().subject_name(_name(common_name))
               .issuer_name(ca_cert.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(end)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca_key.public_key()), critical=False))
    if hosts:
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    else:  # rustls wants a subject alternative name on client certificates too
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
    cert = (builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return Issued(_cert_pem(cert), _key_pem(key))


def _write(path: Path, data: bytes, *, secret: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                         0o600 if secret else 0o644)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)


def write_issued(issued: Issued, directory: Path, name: str) -> None:
    _write(directory / f"{name}.pem", issued.cert_pem, secret=False)
    _write(directory / f"{name}.key", issued.key_pem, secret=True)


def write_curve_pair(directory: Path, name: str) -> None:
    """`name.key` (public) and `name.key_secret`, in ZeroMQ's own certificate format."""
    import zmq.auth

    directory.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(directory, name)
    os.chmod(secret, 0o600)


def load_ca(out: Path) -> Issued:
    return Issued((out / "ca.pem").read_bytes(), (out / "ca.key").read_bytes())


def add_robots(out: Path, first: int, count: int, *, days: int) -> list[str]:
    """Certificates and CURVE pairs for robots `first` .. `first + count - 1`."""
    ca = load_ca(out)
    names = [robot_name(index) for index in range(first, first + count)]
    for name in names:
        write_issued(issue(ca, name, days=days), out / "robots", name)
        write_curve_pair(out / "curve", name)
    return names


def make_all(out: Path, robots: int, *, days: int = DEFAULT_DAYS,
             hosts: tuple[str, ...] = ()) -> list[str]:
    """The whole layout of the module docstring in `out`, which must not hold one yet."""
    if (out / "ca.pem").exists():
        raise FileExistsError(f"{out} already holds a CA (ca.pem): keys are never "
                              f"overwritten; choose another --out, or --add robots to it")
    hosts = tuple(dict.fromkeys((*DEFAULT_HOSTS, *hosts)))
    ca = make_ca(days=days)
    write_issued(ca, out, "ca")
    write_issued(issue(ca, SERVER_CN, days=days, hosts=hosts), out, SERVER_NAME)
    write_issued(issue(ca, ROUTER_CN, days=days, hosts=hosts), out, ROUTER_NAME)
    write_curve_pair(out / "curve", SERVER_NAME)
    return add_robots(out, 1, robots, days=days)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.certs",
        description="Make a CA, server, router and robot certificates and ZeroMQ CURVE keys "
                    "for security=mtls security.dir=OUT.")
    parser.add_argument("--out", required=True, type=Path, help="directory to create")
    parser.add_argument("--robots", type=int, default=1,
                        help="robots to make identities for (robot-1 ... robot-N)")
    parser.add_argument("--days", type=int, default=DEFAULT_DAYS,
                        help=f"validity of every certificate (default {DEFAULT_DAYS})")
    parser.add_argument("--host", action="append", default=[],
                        help="another name or address the server and router are reached at "
                             "(repeatable; localhost and 127.0.0.1 are always included)")
    parser.add_argument("--add", action="store_true",
                        help="add --robots more robots to an existing OUT, signed by its CA")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.robots < 1 or args.days < 1:
        parser.error("--robots and --days must be at least 1")
    try:
        if args.add:
            first = 1 + len(list((args.out / "robots").glob(f"{ROBOT_PREFIX}*.pem")))
            names = add_robots(args.out, first, args.robots, days=args.days)
        else:
            names = make_all(args.out, args.robots, days=args.days, hosts=tuple(args.host))
    except (FileExistsError, FileNotFoundError, PermissionError) as exc:
        log.error("%s", exc)
        return 2
    log.info("%s: CA, server, router and %s, valid %d days", args.out, ", ".join(names),
             args.days)
    log.info("run: python -m harness security=mtls security.dir=%s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
