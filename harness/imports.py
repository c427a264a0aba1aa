"""Objects named in config by import path: the one resolver every registry shares.

A researcher's policy, env family, transport, fault kind or remote protocol lives in a module
of their own and is named "package.module:Name" (as vla-eval names its model servers), or
"package.module.Name" (Hydra's `_target_` spelling). Every registry resolves it here, so the
error for a path that does not resolve reads the same everywhere and names the config field.
"""

from __future__ import annotations

import importlib


def import_object(path: str, *, field: str, error: type[Exception] = ValueError,
                  expected: type | tuple[type, ...] | None = None) -> object:
    """The object `path` names ("package.module:Name", dotted attributes after the colon
    allowed; without a colon the last dot splits).

    Raises:
        `error`: the module cannot be imported, it has no such attribute, or the object is
            not an instance of `expected`; the message names `field`, the path and why.
    """
    path = str(path)
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise error(f"{field}={path!r}: expected an import path 'package.module:Name'")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as exc:
        raise error(f"{field}={path!r}: cannot import {module_name!r}: {exc}") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise error(f"{field}={path!r}: {module_name} has no {attr!r}")
        obj = getattr(obj, part)
    if expected is not None and not isinstance(obj, expected):
        names = " or ".join(t.__name__ for t in (expected if isinstance(expected, tuple)
                                                  else (expected,)))
        raise error(f"{field}={path!r}: {module_name}.{attr} is {type(obj).__name__}, not a "
                    f"{names}")
    return obj
