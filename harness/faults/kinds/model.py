"""Model faults: inside the server's predict, through the model-faults file.

Emulated by writing the fault in force to the server's model-faults file
(`harness.faults.model_faults`), which the predict hook the job gave the server reads: a
slow model holds every prediction to at least `predict_s`, a pause stalls the first
prediction at or after the window's start for the window's length (once per id).
Modelled: the same times added to the round trip (a pause only to the first request sent in
the window: the engine asks in the order it sends).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.faults.kinds.base import FaultKindEntry, RunMechanisms
from harness.faults.kinds.effects import AddedDelay
from harness.faults.model_faults import write_model_fault
from harness.faults.schedule import jittered

if TYPE_CHECKING:
    from harness.faults.modelled import ModelledLink
    from harness.faults.schedule import FaultWindow


class ModelFile:
    """Base of the model faults: the end of any window puts the model back to its speed."""

    def undo(self, window: FaultWindow, run: RunMechanisms) -> str:
        write_model_fault(run.mechanisms.model_faults_path, {})
        return "predict as fast as the model"


@dataclass(frozen=True)
class SlowModelFile(ModelFile):
    def apply(self, window: FaultWindow, run: RunMechanisms) -> str:
        spec = window.spec
        write_model_fault(run.need("model_faults_path", window.kind),
                          {"kind": "slow_model", "predict_s": spec.predict_s,
                           "jitter_s": spec.jitter_s, "jitter_dist": str(spec.jitter_dist)})
        return f"predict slowed to {spec.predict_s * 1e3:.0f} ms"


@dataclass(frozen=True)
class ModelPauseFile(ModelFile):
    def apply(self, window: FaultWindow, run: RunMechanisms) -> str:
        path = run.need("model_faults_path", window.kind)
        pause_s = window.end_s - window.start_s
        write_model_fault(path, {"kind": "model_pause", "pause_s": pause_s,
                                 "id": run.next_id()})
        return f"predict paused {pause_s:.2f} s"


class SlowModelModelled(AddedDelay):
    """+ predict_s + a seeded jitter draw."""

    def added_delay(self, window: FaultWindow, salt: int, t: float, index: int,
                    link: ModelledLink) -> float:
        spec = window.spec
        return jittered(link.rng(index, salt), spec.predict_s, spec.jitter_dist, spec.jitter_s)


class PauseModelled(AddedDelay):
    """+ the pause, for the first request sent in the window."""

    def added_delay(self, window: FaultWindow, salt: int, t: float, index: int,
                    link: ModelledLink) -> float:
        if link.window_state(salt, lambda: index) == index:
            return window.end_s - window.start_s
        return 0.0


KINDS = (
    FaultKindEntry("slow_model", "model", SlowModelFile(), SlowModelModelled(), lane="model",
                   doc="Every prediction takes at least `predict_s` (plus a seeded "
                       "`jitter_s` draw)."),
    FaultKindEntry("model_pause", "model", ModelPauseFile(), PauseModelled(), paced=True,
                   lane="model",
                   doc="The first prediction at or after the start stalls for `duration_s` "
                       "(a GC pause)."),
)
