"""`python -m harness.server [overrides]`: one policy server, alone, until SIGTERM (drain).

Takes the harness's own config (`transport=`, `policy=`, `env=` for the task whose contract
the oracles read, `server.*`), and prints `READY <health port>` once it serves. An entry
point composes what the server package must not know: with `server.model_faults_path` set
(the harness's fault controller writes that file) the server's predict hook is the model
faults' (`harness.faults.model_faults`).
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from harness.checks import check_keys
from harness.config import (
    ConfigError,
    check_tasks_or_exit,
    config_dir,
    group_options,
    register_configs,
    validate_or_exit,
)
from harness.extras import missing_extra_message
from harness.faults.model_faults import predict_hook
from harness.server.serve import serve_forever

register_configs()


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def main(cfg: DictConfig) -> None:
    config = validate_or_exit(cfg)
    check_tasks_or_exit(config)
    try:
        check_keys(config, server=True, client=False)
    except ConfigError as exc:
        logging.getLogger("harness").error("%s", exc)
        sys.exit(2)
    path = config.server.model_faults_path
    try:
        serve_forever(config, ready=lambda port: print(f"READY {port}", flush=True),
                      predict_hook=predict_hook(path, seed=config.seed) if path else None)
    except ModuleNotFoundError as exc:  # an extra not installed: one line with the command
        message = missing_extra_message(exc)
        if message is None:
            raise
        logging.getLogger("harness").error("%s", message)
        sys.exit(2)


HELP_HEADER = """harness.server: one policy server, alone, until SIGTERM (which drains it).

Serves the policy of the harness's config (policy=, env= for the task whose contract it
serves) over its transport (transport=, transport.listen=), with its server.* settings;
prints READY <health port> once it serves, /healthz and /metrics on that port. Robots reach
it with python -m harness server=external transport.connect=<its address>.

Examples:
  python -m harness.server transport=zmq transport.listen=tcp://0.0.0.0:5555
  python -m harness.server transport=grpc policy=torch env=mujoco_pick_place
"""


def server_help() -> str:
    """`HELP_HEADER` and the choices of the groups a server reads, from `conf/`'s YAMLs."""
    lines = []
    for group in ("transport", "policy", "env", "server"):
        lines.append(f"  {group}: {', '.join(group_options(group))}")
    return (f"{HELP_HEADER}\nGroups (group=option):\n" + "\n".join(lines)
            + "\n\nEvery setting and its value: python -m harness --cfg job")


if __name__ == "__main__":
    # Hydra names the log after the module (`__main__.log`); the server's is `server.log`.
    if not any(arg.startswith("hydra.job.name=") for arg in sys.argv[1:]):
        sys.argv.append("hydra.job.name=server")
    if "--help" in sys.argv[1:] or "-h" in sys.argv[1:]:  # its own, not the harness's
        print(server_help())
        sys.exit(0)
    main()
