"""The choices of a run's config that are not a section's own (what runs, where its server
and its robots run, what it records), and the one error every config check raises."""

from __future__ import annotations

import enum


class ConfigError(ValueError):
    """A config value is invalid; the message names the field and the accepted range."""


class Job(enum.StrEnum):
    """What `python -m harness` runs (lower-case members: Hydra matches values by name)."""

    loop = "loop"
    """The closed loop through a policy server over the transport."""
    evaluate = "evaluate"
    """The policy on the env in-process, no transport: the reference."""
    bench = "bench"
    """Transport round trips against raw-TCP, codec and websocket floors."""


class Record(enum.StrEnum):
    """Which episodes leave a video in the run directory's `videos/` (the `video` extra)."""

    none = "none"
    failures = "failures"
    all = "all"


class ClientsAs(enum.StrEnum):
    """What each robot of `clients` runs in: a thread of the harness, or a process of its own."""

    threads = "threads"
    processes = "processes"


class ServerMode(enum.StrEnum):
    """Where the loop job finds its policy server."""

    process = "process"
    """The harness starts `python -m harness.server` and supervises it."""
    inprocess = "inprocess"
    """A thread of the harness (the only choice for transport=local)."""
    external = "external"
    """Already running elsewhere, at the transport's `connect` address."""
