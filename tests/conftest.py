"""Shared test helpers: polling with a deadline (never fixed sleeps); free loopback ports come
from `transports.loopback`; and, under pytest-xdist, default ports of a worker's own."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def poll_until(predicate: Callable[[], bool], timeout_s: float) -> bool:
    """Poll `predicate` until it is true; whether it came true within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll `predicate` until it is true; fail the test naming `what` after `timeout_s`."""
    if not poll_until(predicate, timeout_s):
        pytest.fail(f"timed out after {timeout_s} s waiting for {what}", pytrace=False)


def shared_tmp_dir(tmp_path_factory) -> Path:
    """A temporary directory every test worker of this run shares (under pytest-xdist each
    worker's base directory is a child of it), for results worth making once per run."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock across processes (the test workers), held for the block."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def pytest_configure(config) -> None:
    """Under pytest-xdist (`make test` runs `-n 5`), worker gwN moves every default port of
    `conf/transport/` up by 1000 * N (`HARNESS_PORT_OFFSET`, inherited by the harness and
    server processes the tests start): two tests on two workers that both run
    `python -m harness` on the shipped defaults would otherwise bind the same port."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw") and worker[2:].isdigit():
        os.environ["HARNESS_PORT_OFFSET"] = str(1000 * int(worker[2:]))


def hide_package(monkeypatch, name: str) -> None:
    """Test double for an environment without package `name`: `import name` fails (its
    modules already imported are taken out of `sys.modules` for the test)."""
    for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setitem(sys.modules, name, None)


@pytest.hookimpl(tryfirst=True)  # before xdist's, which reads xdist_group into the node ids
def pytest_collection_modifyitems(config, items) -> None:
    """Longest first: tests marked `slow(seconds)` by their measured length, then the other
    `slow` ones, then the rest; tests sharing a fixture (below) as one unit, placed by their
    summed length. With `make test`'s workers taking units in order as they free up
    (`--dist loadgroup --no-loadscope-reorder`), a minute-long test that starts last holds
    the whole run for its length while the other workers idle."""
    def expected_s(item) -> float:
        marker = item.get_closest_marker("slow")
        if marker is None:
            return 0.1
        return float(marker.args[0]) if marker.args else 10.0

    groups = {item.nodeid: _shared_fixture_group(item) for item in items}
    unit_s: dict[str, float] = {}
    for item in items:
        unit = groups[item.nodeid] or item.nodeid
        unit_s[unit] = unit_s.get(unit, 0.0) + expected_s(item)
    order = {item.nodeid: index for index, item in enumerate(items)}
    first: dict[str, int] = {}
    for item in items:
        first.setdefault(groups[item.nodeid] or item.nodeid, order[item.nodeid])

    def key(item) -> tuple:  # equal lengths keep the files' order
        unit = groups[item.nodeid] or item.nodeid
        return -unit_s[unit], first[unit], order[item.nodeid]

    items.sort(key=key)
    for item in items:
        if groups[item.nodeid] is not None:
            item.add_marker(pytest.mark.xdist_group(groups[item.nodeid]))


def _shared_fixture_group(item) -> str | None:
    """The tests that share a module- or session-scoped fixture run on one worker
    (`--dist loadgroup`): spread over three, a 30 s fixture ran three times."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return None
    for name, definitions in info.name2fixturedefs.items():
        definition = definitions[-1]
        if not getattr(definition.func, "__module__", "").startswith("tests"):
            continue  # pytest's own (tmp_path_factory is session-scoped): not ours to group
        scope = getattr(definition, "scope", "function")
        if scope == "session":
            return f"session:{name}"
        if scope == "module":
            return f"module:{item.module.__name__}"
    return None
