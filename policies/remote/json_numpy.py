"""The json-numpy wire format, which OpenVLA's `vla-scripts/deploy.py` and AutoEval's policy
servers speak (`json_numpy.patch()` on both ends), without the package and without pickle.

An array travels as a JSON object, written exactly as json-numpy 2.1 writes it
(Crimson-Crow/json-numpy `json_numpy.py`, `default`)::

    {"__numpy__": "<base64 of the raw bytes, C order>", "dtype": "<f4", "shape": [7]}

`dtype` is `numpy.lib.format.dtype_to_descr(dtype)`, which for the plain numeric dtypes we
allow is `dtype.str` (`"|u1"` for uint8, `"<f8"` for little-endian float64). Decoding uses
`np.frombuffer` on an allow-listed dtype only: json-numpy itself would hand any descr to
`descr_to_dtype`, including object and structured dtypes; we refuse those, and check that
the byte count matches the shape before touching the buffer.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

MARKER = "__numpy__"
"""The key that marks a JSON object as an encoded array (json-numpy's own marker)."""

_DESCR = re.compile(r"^[<>|=](?:b1|[iu][1248]|f[248])$")
"""Byte order, kind (bool, signed, unsigned, float) and item size: the only descrs we
decode. Object (`|O`), string, void and structured descrs never match."""


class JsonNumpyError(ValueError):
    """A json-numpy object that cannot be decoded safely (unknown keys, a dtype outside the
    allow-list, bad base64, or a byte count that contradicts the shape), or an array we
    refuse to encode (object or structured dtype)."""


def _check_dtype(dtype: np.dtype) -> None:
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise JsonNumpyError(f"dtype {dtype!r} is not a plain numeric dtype; only bool, "
                             "int, uint and float arrays cross the wire")
    if not _DESCR.match(dtype.str):
        raise JsonNumpyError(f"dtype {dtype.str!r} is outside the allow-list "
                             "(bool, int8-64, uint8-64, float16-64)")


def encode(array: np.ndarray | np.generic) -> dict[str, Any]:
    """The json-numpy object for `array`, key for key and byte for byte as json-numpy 2.1's
    `default` writes it: raw bytes in C order, `dtype.str`, shape as a list.

    Raises:
        JsonNumpyError: `array` has an object, string or structured dtype.
    """
    array = np.asarray(array) if isinstance(array, np.generic) else array
    _check_dtype(array.dtype)
    data = array.data if array.flags["C_CONTIGUOUS"] else array.tobytes()
    return {MARKER: base64.b64encode(data).decode(), "dtype": array.dtype.str,
            "shape": list(array.shape)}


def is_encoded(value: object) -> bool:
    """Whether `value` is a JSON object that claims to be an encoded array."""
    return isinstance(value, Mapping) and MARKER in value


def decode(obj: Mapping[str, Any]) -> np.ndarray:
    """The array a json-numpy object carries, as a writable C-ordered ndarray (a 0-d array
    for a scalar, where json-numpy would return a numpy scalar).

    Raises:
        JsonNumpyError: keys other than `__numpy__`, `dtype`, `shape`; a dtype outside the
            allow-list; invalid base64; a shape that is not a list of non-negative ints; or
            len(data) != prod(shape) * itemsize.
    """
    if set(obj) != {MARKER, "dtype", "shape"}:
        raise JsonNumpyError(f"a json-numpy object has exactly the keys {MARKER!r}, 'dtype', "
                             f"'shape'; got {sorted(obj)}")
    descr, shape, text = obj["dtype"], obj["shape"], obj[MARKER]
    if not isinstance(descr, str) or not _DESCR.match(descr):
        raise JsonNumpyError(f"dtype {descr!r} is outside the allow-list "
                             "(bool, int8-64, uint8-64, float16-64; no object dtypes)")
    if not isinstance(shape, list) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
        raise JsonNumpyError(f"shape {shape!r} is not a list of non-negative ints")
    if not isinstance(text, str):
        raise JsonNumpyError(f"{MARKER!r} holds {type(text).__name__}, not base64 text")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise JsonNumpyError(f"{MARKER!r} is not valid base64: {exc}") from exc
    dtype = np.dtype(descr)
    expected = math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise JsonNumpyError(f"shape {shape} x itemsize {dtype.itemsize} = {expected} bytes, "
                             f"but the data holds {len(data)}")
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()


def _default(value: object) -> dict[str, Any]:
    if isinstance(value, np.ndarray | np.generic):
        return encode(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def dumps(value: object) -> str:
    """`value` as JSON text, arrays encoded, with json's default separators (as
    `json_numpy.dumps` writes it)."""
    return json.dumps(value, default=_default)


def _hook(obj: dict[str, Any]) -> object:
    return decode(obj) if MARKER in obj else obj


def loads(text: str | bytes) -> Any:
    """JSON text with every json-numpy object decoded (`decode`).

    Raises:
        json.JSONDecodeError: `text` is not JSON.
        JsonNumpyError: an encoded array is malformed or not allow-listed.
    """
    return json.loads(text, object_hook=_hook)
