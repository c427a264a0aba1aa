"""Fault kinds: one entry per kind, with its emulation and its modelling (`base.py` first).

The built-ins live one module per group (process, network, message, model); a user's kind is
one module of their own, named in config by import path (`kind: my_pkg.faults:SPIKE`).
"""

from harness.faults.kinds.base import (
    GROUPS,
    Emulation,
    FaultKindEntry,
    LinkShaping,
    Modelling,
    RunMechanisms,
)
from harness.faults.kinds.registry import (
    UnknownFaultKind,
    check_entry,
    fault_kind,
    kind_names,
    register_kind,
    unregister_kind,
)

__all__ = ["GROUPS", "Emulation", "FaultKindEntry", "LinkShaping", "Modelling",
           "RunMechanisms", "UnknownFaultKind", "check_entry", "fault_kind", "kind_names",
           "register_kind", "unregister_kind"]
