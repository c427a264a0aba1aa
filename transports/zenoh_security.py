"""Zenoh with `security=mtls`: TLS links with client certificates, and an access-control list
on the server's session that gives each robot its own keys and nothing else.

Zenoh does not tell the application which certificate a sample came over, so the identity is
bound by the keys instead: the ACL, keyed on each certificate's common name, lets `robot-1`
publish only `<ns>/obs/robot-1`, query only `<ns>/req/robot-1` and receive only
`<ns>/act/robot-1`, and the server reads the robot's name from the key. Everything else is
denied (`default_permission: deny`), on the way in and on the way out: another robot can
neither read nor forge a robot's chunks (measured on loopback: a forged observation, a query
on another's key and a chunk published on another's action key all went nowhere).

The server declares its subscribers and queryables on each robot's exact key (the robots are
those with a certificate in `security.dir`), because a declaration of `<ns>/obs/*` is not
within any one robot's allowed keys. A robot added later needs a server restart, as any ACL
change does in Zenoh.
"""

from __future__ import annotations

from transports.config import SecurityError, ZenohTransportConfig
from transports.security import (
    SERVER_CN,
    TlsFiles,
    client_tls,
    robot_names,
    router_tls,
    server_tls,
)

ACL_MESSAGES = ["put", "query", "reply", "declare_subscriber", "declare_queryable",
                "liveliness_token", "declare_liveliness_subscriber", "liveliness_query"]


def tls_locator(locator: str) -> str:
    """`tcp/host:port` as `tls/host:port`; a `tls/` locator as it is."""
    if locator.startswith("tls/"):
        return locator
    if locator.startswith("tcp/"):
        return "tls/" + locator[len("tcp/"):]
    raise SecurityError(f"transport.listen={locator}: security=mtls runs Zenoh over TLS, "
                        "which needs a tcp/ or tls/ locator")


def robot_keys(namespace: str, robot: str) -> list[str]:
    """The keys one robot may use: its observations, requests and chunks, and the server's
    liveliness token."""
    return [f"{namespace}/obs/{robot}", f"{namespace}/req/{robot}",
            f"{namespace}/act/{robot}", f"{namespace}/alive"]


def access_control(namespace: str, robots: list[str], *, replicas: bool = False) -> dict:
    """The server session's ACL: each robot's certificate its own keys, all else denied.
    With `replicas`, its own keys under each replica's namespace too (`<ns>/replica<i>`):
    a router serves every replica of a run."""
    def keys(robot: str) -> list[str]:
        scoped = robot_keys(f"{namespace}/*", robot) if replicas else []
        return [*robot_keys(namespace, robot), *scoped]

    return {
        "enabled": True,
        "default_permission": "deny",
        "rules": [{"id": f"keys-of-{robot}", "messages": ACL_MESSAGES,
                   "flows": ["ingress", "egress"], "permission": "allow",
                   "key_exprs": keys(robot)} for robot in robots],
        "subjects": [{"id": f"cert-{robot}", "cert_common_names": [robot]}
                     for robot in robots],
        "policies": [{"rules": [f"keys-of-{robot}"], "subjects": [f"cert-{robot}"]}
                     for robot in robots],
    }


def _tls(files: TlsFiles, side: str) -> dict:
    return {"transport/link/tls/root_ca_certificate": str(files.ca),
            f"transport/link/tls/{side}_certificate": str(files.cert),
            f"transport/link/tls/{side}_private_key": str(files.key),
            "transport/link/tls/enable_mtls": True,
            "transport/link/tls/verify_name_on_connect": True}


def server_values(config: ZenohTransportConfig) -> tuple[dict, list[str]]:
    """Session config entries for the server, and the robots it serves. Behind a router the
    server dials it with its own certificate and the router holds the ACL."""
    robots = robot_names(config.security)
    if config.router:
        return _tls(server_tls(config.security), "connect"), robots
    return {**_tls(server_tls(config.security), "listen"),
            "access_control": access_control(config.namespace, robots)}, robots


def router_values(config: ZenohTransportConfig) -> dict:
    """The router's: its certificate, client certificates required, and the ACL with, besides
    each robot's own keys, every key of the namespace for the policy server."""
    robots = robot_names(config.security)
    acl = access_control(config.namespace, robots, replicas=True)
    acl["rules"].append({"id": "keys-of-the-server", "messages": ACL_MESSAGES,
                         "flows": ["ingress", "egress"], "permission": "allow",
                         "key_exprs": [f"{config.namespace}/**"]})
    acl["subjects"].append({"id": "cert-server", "cert_common_names": [SERVER_CN]})
    acl["policies"].append({"rules": ["keys-of-the-server"], "subjects": ["cert-server"]})
    return {**_tls(router_tls(config.security), "listen"), "access_control": acl}


def client_values(config: ZenohTransportConfig) -> dict:
    return _tls(client_tls(config.security), "connect")
