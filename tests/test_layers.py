"""The layer contract: imports point one way, from the jobs down to the wire.

Each layer may import the layers below it, never one above it, not even inside a function
(grimp sees those too). Packages listed in the same layer are independent of each other.
Entry points (`__main__` modules) compose everything and sit on top. A test adds a module
that breaks the contract and checks that the checker names it.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("harness", "transports", "envs", "policies", "reports")

LAYERS: tuple[tuple[str, ...], ...] = (
    ("harness.choices", "harness.overrides", "harness.console", "harness.imports",
     "harness.extras"),  # utilities
    ("harness.protocol",),                  # wire schema, codec, the contract
    ("transports", "envs"),                 # bytes between processes; simulated robots
    ("harness.certs",),                     # keys for security=mtls, in transports' layout
    ("policies",),                          # what a server hosts
    ("harness.client", "harness.server"),   # the robot side; the model side
    ("harness.results",),                   # traces, rows, summaries, stats
    ("harness.loop",),                      # the episode runner and its clock
    ("harness.faults",),                    # fault schedules and their mechanisms
    ("reports",),                           # tables and HTML from result directories
    ("harness.config",),                    # the Hydra schema of a whole run
    ("harness.checks",),                    # what a closed-loop run needs of it, together
    ("harness.jobs",),                      # what `python -m harness job=...` runs
    ("harness.bench",),                     # benchmarks over everything
    ("harness.api",),                       # run, serve, client_engine for scripts
    ("harness",),                           # the package's __init__: the lazy public API
)
"""Lowest first."""


def layer_of(module: str) -> tuple[int, str] | None:
    """(layer index, the container it belongs to); None for an entry point (`__main__`),
    which may import anything."""
    if module.endswith(".__main__"):
        return None
    best = None
    for index, layer in enumerate(LAYERS):
        for container in layer:
            if (module == container or module.startswith(container + ".")) and (
                    best is None or len(container) > len(best[1])):
                best = (index, container)
    if best is None:
        raise AssertionError(f"{module}: in no layer; add its package to LAYERS")
    return best


def violations(graph) -> list[str]:
    """Every import that goes up a layer or across to a sibling, as 'a -> b'."""
    found = []
    for importer in sorted(graph.modules):
        mine = layer_of(importer)
        if mine is None:
            continue
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            theirs = layer_of(imported)
            if theirs is None or theirs[1] == mine[1]:
                continue
            if theirs[0] > mine[0] or (theirs[0] == mine[0] and theirs[1] != mine[1]):
                found.append(f"{importer} ({mine[1]}) -> {imported} ({theirs[1]})")
    return found


def test_imports_point_down_the_layers():
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    assert violations(graph) == []


def test_every_module_is_in_a_layer():
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    for module in graph.modules:
        layer_of(module)  # raises naming a module no layer holds


def test_an_upward_import_is_named(tmp_path, monkeypatch):
    """The checker fires: a copy of `harness` in which the wire imports the loop job."""
    copy = tmp_path / "harness"
    shutil.copytree(ROOT / "harness", copy, ignore=shutil.ignore_patterns("__pycache__"))
    for package in PACKAGES[1:]:
        shutil.copytree(ROOT / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    bad = copy / "protocol" / "shortcut.py"
    bad.write_text("def later():\n    from harness.jobs.loop import run_loop\n"
                   "    return run_loop\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m.split(".")[0] in PACKAGES]:
        monkeypatch.delitem(sys.modules, name)
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    assert violations(graph) == [
        "harness.protocol.shortcut (harness.protocol) -> harness.jobs.loop (harness.jobs)"]


@pytest.mark.parametrize("module,layer", [
    ("harness.protocol.codec", "harness.protocol"), ("harness.__main__", None),
    ("harness", "harness"), ("harness.jobs.loop", "harness.jobs")])
def test_modules_fall_in_their_layers(module, layer):
    found = layer_of(module)
    assert (found and found[1]) == layer
