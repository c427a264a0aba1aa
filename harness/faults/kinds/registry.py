"""The fault kinds the harness knows, by name: the built-ins and those a user registers.

A schedule names a kind (`faults.timed[].kind`) by a registered name or by an import path
"package.module:ATTR" naming a `FaultKindEntry` in the user's own module (as vla-eval names
its model servers): the module is imported and the entry registered, with no edit of ours.
An unknown name is an error listing the choices; an entry that lacks its emulation or its
modelling is refused when it is registered, not when its first window opens.
"""

from __future__ import annotations

import importlib
import threading

from harness.faults.kinds.base import GROUPS, FaultKindEntry
from harness.imports import import_object

_KINDS: dict[str, FaultKindEntry] = {}
"""Name (and import path, for a user's kind) -> entry."""
_BUILT_IN = ("harness.faults.kinds.process", "harness.faults.kinds.network",
             "harness.faults.kinds.message", "harness.faults.kinds.model")
"""Modules whose `KINDS` are registered on the first lookup: they import the mechanisms
(proxy, client wrapper), which import the schedule, which looks kinds up here."""
_LOCK = threading.RLock()


class UnknownFaultKind(ValueError):
    """A kind no entry provides; the message lists the choices."""


def _missing(obj: object, methods: tuple[str, ...]) -> list[str]:
    return [m for m in methods if not callable(getattr(obj, m, None))]


def check_entry(entry: object) -> FaultKindEntry:
    """`entry` if it is a complete `FaultKindEntry`.

    Raises:
        TypeError: not an entry, or its emulation or modelling is missing or lacks a method
            (the message names the kind and the missing part).
        ValueError: its group is not one of `GROUPS`, or its name is empty.
    """
    if not isinstance(entry, FaultKindEntry):
        raise TypeError(f"{entry!r} is not a harness.faults.kinds.FaultKindEntry")
    name = entry.name
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"fault kind name={name!r}: must be a non-empty str without ':'")
    if entry.group not in GROUPS:
        raise ValueError(f"fault kind {name!r}: group={entry.group!r}, expected one of "
                         f"{list(GROUPS)}")
    for part, methods in (("emulation", ("apply", "undo")),
                          ("modelling", ("added_delay", "on_flight"))):
        value = getattr(entry, part)
        if value is None:
            raise TypeError(f"fault kind {name!r} has no {part}: every kind says how it is "
                            "emulated and how it is modelled (effects.NoEffect if it has none)")
        lacking = _missing(value, methods)
        if lacking:
            raise TypeError(f"fault kind {name!r}: its {part} {type(value).__name__} has no "
                            f"{' or '.join(lacking)}()")
    return entry


def register_kind(entry: FaultKindEntry, *aliases: str) -> FaultKindEntry:
    """Register `entry` under its name (and `aliases`, e.g. the import path it came from).

    Raises:
        TypeError, ValueError: see `check_entry`; ValueError too if the name is already
            another entry's.
    """
    check_entry(entry)
    with _LOCK:
        for name in (entry.name, *aliases):
            other = _KINDS.get(name)
            if other is not None and other is not entry:
                raise ValueError(f"fault kind {name!r} is already registered "
                                 f"({other.group}, {other.doc or 'no description'})")
        for name in (entry.name, *aliases):
            _KINDS[name] = entry
    return entry


def unregister_kind(name: str) -> None:
    """Forget the kind `name` and its aliases (a test's or a notebook's temporary kind).

    Raises:
        UnknownFaultKind: no kind has that name.
    """
    with _LOCK:
        entry = _KINDS.get(name)
        if entry is None:
            raise UnknownFaultKind(f"fault kind {name!r}: not registered")
        for alias in [a for a, e in _KINDS.items() if e is entry]:
            del _KINDS[alias]


def _load_built_ins() -> None:
    if _KINDS:
        return
    with _LOCK:
        if _KINDS:
            return
        for module in _BUILT_IN:
            for entry in importlib.import_module(module).KINDS:
                register_kind(entry)


def _import(path: str) -> FaultKindEntry:
    return check_entry(import_object(path, field="faults.timed.kind", error=UnknownFaultKind))


def fault_kind(name: str) -> FaultKindEntry:
    """The entry of kind `name`: a registered name, or an import path "package.module:ATTR"
    naming a `FaultKindEntry` (imported and registered on first use).

    Raises:
        UnknownFaultKind: no entry has that name; the message lists every registered one.
        TypeError: the import path names something that is not a complete entry.
    """
    _load_built_ins()
    entry = _KINDS.get(str(name))
    if entry is not None:
        return entry
    if ":" in str(name):
        entry = _import(str(name))
        existing = _KINDS.get(entry.name)
        if existing is not None and existing is not entry:
            raise ValueError(f"fault kind {name!r} is named {entry.name!r}, which is already "
                             "another kind's")
        return register_kind(entry, str(name))
    raise UnknownFaultKind(f"fault kind {name!r}: expected one of {kind_names()}, or an import "
                           "path 'package.module:ATTR' naming a "
                           "harness.faults.kinds.FaultKindEntry")


def kind_names() -> list[str]:
    """Every registered kind's name (not its aliases), built-ins first, in order."""
    _load_built_ins()
    names: list[str] = []
    for alias, entry in _KINDS.items():
        if alias == entry.name:
            names.append(alias)
    return names
