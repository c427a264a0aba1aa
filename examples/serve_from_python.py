"""Serve a policy you hold in Python, and benchmark it with the harness, from one script.

    .venv/bin/python -m examples.serve_from_python

`harness.serve` puts our policy server (sessions, contract check, latest-only mailboxes,
metrics) around the policy and returns at once; `harness.run` then runs the closed loop
against it as an external server, with a fault schedule, and returns the summary.
"""

import logging

import harness
from examples.reach_policy import ReachPolicy


def main() -> harness.RunResult:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with harness.serve(ReachPolicy, env="mujoco_reach", transport="zmq") as server:
        return harness.run(["env=mujoco_reach", "env.episodes_per_task=5", "transport=zmq",
                            "server=external", f"transport.listen={server.address}",
                            "faults=lan", "faults.apply=modelled"])


if __name__ == "__main__":
    result = main()
    logging.getLogger("example").info("success %.0f%% over %d episodes, written to %s",
                                      100 * result.summary["success_rate"],
                                      result.summary["episodes"], result.run_dir)
