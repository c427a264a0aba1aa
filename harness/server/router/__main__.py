"""`python -m harness.server.router [overrides]`: the Zenoh router of `transport.router`, in
a process of its own, until SIGTERM or its harness is gone.

Robots and the policy server then both dial the router (client mode) instead of each other:
the deployment where robots only dial out. With `security=mtls` the router requires client
certificates and holds the access-control list (`transports.zenoh_security.router_values`):
each robot only its own keys, the server all of the namespace. `transport.router=auto` has
the harness start this on a free loopback port and supervise it like the policy server; a
router on another machine is started the same way, with its locator.

There is no zenohd on PyPI; a zenoh session in router mode is one (FACTS.md).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading

import hydra
from omegaconf import DictConfig

from harness.checks import check_router_keys
from harness.config import ConfigError, config_dir, register_configs, validate_or_exit
from harness.server.serve import watch_lifeline
from transports.config import ROUTER_AUTO

log = logging.getLogger("harness")
register_configs()


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def main(cfg: DictConfig) -> None:
    import zenoh

    from transports.zenoh import session_config
    from transports.zenoh_security import router_values, tls_locator

    config = validate_or_exit(cfg)
    transport = config.transport
    if transport.kind != "zenoh" or transport.router in (None, ROUTER_AUTO):
        log.error("a router needs transport=zenoh and transport.router=<locator> to listen "
                  "on (not transport.router=%s)", transport.router)
        sys.exit(2)
    try:
        check_router_keys(config)
    except ConfigError as exc:
        log.error("%s", exc)
        sys.exit(2)
    secured = transport.security.enabled
    listen = tls_locator(transport.router) if secured else transport.router
    session = zenoh.open(session_config(transport, listen=[listen], connect=[], mode="router",
                                        secured=router_values(transport) if secured else None))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    watch_lifeline(stop)
    log.info("zenoh router on %s%s", listen, " (mTLS, ACL)" if secured else "")
    print("READY 0", flush=True)
    stop.wait()
    session.close()


if __name__ == "__main__":
    main()
