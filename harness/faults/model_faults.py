"""Model faults inside the server's predict: a slow model or a long pause, as a slow GPU or
a garbage-collection pause would cause them.

Here, in the faults package, not in the server's: the server knows nothing of faults. It
takes a predict hook from whoever starts it (`PolicyServer(predict_hook=...)`); the entry
points that compose a run (`python -m harness.server`, the loop job's in-process server)
pass `predict_hook(path, seed=...)` when `server.model_faults_path` is set.

They act where the model runs, after the mailbox and inside the session's lock, so the
inference queue, the transport and the client see them exactly as they would see a real slow
model: later chunks, observations superseded while waiting, a server that is up but silent.

The harness (its fault controller) says which fault is in force by writing a small JSON file
(`server.model_faults_path`) atomically; the server reads it again whenever its mtime
changes, at most once per prediction (a stat, ~2 us). A file, not a signal or a wire message:
it works the same for a server in a child process and one on a thread, and the wire protocol
stays free of fault plumbing. No pickle: JSON of plain numbers.

    {"kind": "slow_model", "predict_s": 0.405, "jitter_s": 0.02, "jitter_dist": "normal"}
    {"kind": "model_pause", "pause_s": 1.5, "id": 3}     # once per id
    {}                                                     # none
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from harness.faults.schedule import JitterDist, jittered

log = logging.getLogger(__name__)


def write_model_fault(path: Path, fault: dict) -> None:
    """Put `fault` in force (`{}`: none), atomically: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(fault, sort_keys=True))
    os.replace(tmp, path)


class ModelFaults:
    """The server's side: `stretch(started)` after each prediction sleeps as long as the
    fault in force says (to at least `predict_s` since `started`, or one pause)."""

    def __init__(self, path: str | Path, *, seed: int = 0) -> None:
        self.path = Path(path)
        self._mtime_ns: int | None = None
        self._fault: dict = {}
        self._paused_ids: set[int] = set()
        self._rng = np.random.default_rng([seed, 0x30DE1])
        self.stretched_s = 0.0
        """Total time predictions were held back (for the server's log and tests)."""

    def _current(self) -> dict:
        try:
            mtime_ns = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            self._mtime_ns, self._fault = None, {}
            return self._fault
        if mtime_ns != self._mtime_ns:
            self._mtime_ns = mtime_ns
            try:
                fault = json.loads(self.path.read_text())
            except (OSError, ValueError) as exc:  # a bad file must not take the server down
                log.error("model faults file %s unreadable (%s): no model fault", self.path, exc)
                fault = {}
            self._fault = fault if isinstance(fault, dict) else {}
            log.debug("model fault now %s", self._fault or "none")
        return self._fault

    def stretch(self, started_s: float) -> float:
        """Sleep as the fault in force says; returns how long it slept."""
        fault = self._current()
        kind = fault.get("kind")
        wait_s = 0.0
        if kind == "slow_model":
            target = jittered(self._rng, float(fault.get("predict_s", 0.0)),
                              JitterDist(fault.get("jitter_dist", "normal")),
                              float(fault.get("jitter_s", 0.0)))
            wait_s = max(0.0, started_s + target - time.monotonic())
        elif kind == "model_pause" and fault.get("id") not in self._paused_ids:
            self._paused_ids.add(fault.get("id"))
            wait_s = float(fault.get("pause_s", 0.0))
        if wait_s > 0:
            time.sleep(wait_s)
            self.stretched_s += wait_s
        return wait_s


def predict_hook(path: str | Path, *, seed: int = 0) -> Callable[[float], float]:
    """The hook a policy server calls after each prediction (`PolicyServer(predict_hook=)`):
    it holds the prediction back as the fault in `path` says (`ModelFaults.stretch`)."""
    return ModelFaults(path, seed=seed).stretch
