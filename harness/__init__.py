"""Closed-loop benchmark harness for remote robot-policy inference.

The command line is `python -m harness [overrides]`; the same things from Python (imported
lazily, so `import harness` costs nothing):

    harness.run(overrides) -> RunResult        a job, as the command line runs it
    harness.serve(policy, env=...) -> handle   our policy server around a model you hold
    harness.client_engine(env, connect=...)    the robot side, for a real robot's loop
    harness.compose(overrides)                 the validated config, nothing run

See `harness.api` for their contracts.
"""

from __future__ import annotations

_API = ("RunResult", "ServingHandle", "client_engine", "compose", "run", "serve")


def __getattr__(name: str):
    if name in _API:
        from harness import api

        return getattr(api, name)
    raise AttributeError(f"module 'harness' has no attribute {name!r}")


__all__ = list(_API)
