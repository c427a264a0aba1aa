"""Overrides handed to a child process (the policy server) as Hydra command-line strings."""

from __future__ import annotations

import re


def quoted_override(key: str, value: object) -> str:
    """`key='value'` in Hydra's override grammar, quoted so that a path holding `=`, `,` or
    brackets (a sweep's run directory is named by its overrides: `faults=lte,transport=zmq`)
    reaches the child process as one string, not a list or a second override. Inside quotes
    Hydra reads a backslash literally unless it precedes a quote or the closing quote."""
    text = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, str(value)).replace("'", "\\'")
    return f"{key}='{text}'"
