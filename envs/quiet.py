"""LIBERO's and robosuite's start-up chatter, moved to DEBUG.

Every LIBERO run printed three robosuite warnings about a private macro file nobody needs and
an `[info] Applying task order ...` line per benchmark lookup, straight to the console, in the
middle of the harness's own lines. robosuite warns only when `robosuite.macros_private` cannot
be imported, so an empty one (its defaults) is registered before robosuite's first import;
LIBERO's prints during a call are caught and logged at DEBUG.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import sys
import types
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("envs.libero")


def quiet_robosuite_import() -> None:
    """An empty `robosuite.macros_private` (robosuite's defaults) unless one exists: robosuite
    then has nothing to warn about on import. A real macro file on the path still wins."""
    if "robosuite" in sys.modules or "robosuite.macros_private" in sys.modules:
        return
    spec = importlib.util.find_spec("robosuite")  # a top-level spec: nothing is imported
    if spec is None or not spec.submodule_search_locations:
        return
    if any((Path(where) / "macros_private.py").is_file()
           for where in spec.submodule_search_locations):
        return  # a macro file the user made takes precedence
    sys.modules["robosuite.macros_private"] = types.ModuleType("robosuite.macros_private")


@contextlib.contextmanager
def prints_at_debug(what: str) -> Iterator[None]:
    """Inside: what is printed to stdout goes to the log at DEBUG, one record per line."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            yield
    finally:
        for line in captured.getvalue().splitlines():
            if line.strip():
                log.debug("%s: %s", what, line.rstrip())
