"""The codec's building blocks: field checks, numpy arrays and RGB images on the wire.

A decoder faces bytes from anywhere, so every value is checked before it is trusted: its
type, then its range, and for arrays that the declared dtype and shape match the bytes
exactly, before numpy allocates or libjpeg decompresses anything. An encoder applies the
same rules, so a message it accepts is one the other side accepts too: a bad value fails at
the sender, naming the field, instead of as a rejected message at the receiver.

Each check therefore takes the `error` to raise, EncodeError when packing and DecodeError
when unpacking, and the `path` of the field (e.g. "observation.state['joints']") to name.
Paths are built only on the way down (`f"{path}.shape"`), never stored.

On the wire an array is {"dtype": "<f4", "shape": [2, 3], "data": <bytes>}: raw C-order
little-endian bytes, so a decode is a bounds check and a read-only view of them, not a copy.
A JPEG image is {"jpeg": <bytes>, "shape": [height, width, 3]}; its declared shape is
compared with the JPEG header before decompressing, so a small message cannot make the
receiver allocate a huge image.
"""

from __future__ import annotations

import heapq
import math
import reprlib
from typing import Any

import numpy as np
import simplejpeg

from harness.protocol.contract import DTYPE_NAMES, ArraySpec
from harness.protocol.messages import DecodeError, EncodeError, WireError

MAX_NDIM = 8
MAX_ENTRIES = 1024
"""Most entries of any map or list on the wire (state keys, cameras, action names, status
fields; a LIBERO task's contract has under 100). The decoder's parser refuses a longer one
before building it, so an 8 MB session open of 300,000 contract entries costs microseconds,
not seconds of the server's I/O thread."""
MAX_IMAGE_SIDE = 8192
ALLOWED_DTYPES = frozenset(np.dtype(name).newbyteorder("<").str for name in DTYPE_NAMES)
"""Array dtypes as they appear on the wire ("<f4", "|u1", ...): little-endian only."""
_WIRE_DTYPES = {name: np.dtype(name) for name in ALLOWED_DTYPES}
_WIRE_NAME_OF = {**{dtype.newbyteorder(">"): name for name, dtype in _WIRE_DTYPES.items()},
                 **{dtype: name for name, dtype in _WIRE_DTYPES.items()}}
"""dtype -> its wire code, for both byte orders (big-endian arrays travel converted)."""
_ALLOWED_DTYPES_TEXT = f"one of {sorted(ALLOWED_DTYPES)}"
_MAX_COUNT = 2**63 - 1
"""Counts and durations are int64 on the receiving side; array sides too (numpy's limit)."""
_IMAGE_SIDES = f"1..{MAX_IMAGE_SIDE}"
_IMAGE = "an HxWx3 uint8 image"
_ARRAY_KEYS = frozenset({"dtype", "shape", "data"})
_JPEG_KEYS = frozenset({"jpeg", "shape"})
_SPEC_KEYS = frozenset({"dtype", "shape"})

Error = type[WireError]
"""EncodeError or DecodeError: which side of the wire a check runs on."""


# ---- field checks -------------------------------------------------------------------------

def got(value: Any) -> str:
    """The bad value for an error message: type and a truncated repr (or an array's dtype+shape)."""
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {list(value.shape)}"
    return f"{type(value).__name__} {reprlib.repr(value)}"


def is_int(value: Any) -> bool:
    """An int that is not a bool (numpy integers are not ints: they must be converted first)."""
    return type(value) is int or (isinstance(value, int) and not isinstance(value, bool))


def out_of_range(value: Any, path: str, allowed: str, error: Error) -> WireError:
    return error(f"{path}: {reprlib.repr(value)} is out of range, expected {allowed}")


def check_str(value: Any, path: str, error: Error) -> str:
    if not isinstance(value, str):
        raise error(f"{path}: expected str, got {got(value)}")
    return value


def check_bool(value: Any, path: str, error: Error) -> bool:
    """A bool on the wire (msgpack's true/false), never an int standing in for one."""
    if not isinstance(value, (bool, np.bool_)):
        raise error(f"{path}: expected a bool, got {got(value)}")
    return bool(value)


def check_bytes(raw: Any, path: str) -> bytes:
    """Only the decoder meets bytes fields; the encoder produces them from arrays."""
    if not isinstance(raw, bytes):
        raise DecodeError(f"{path}: expected bytes, got {got(raw)}")
    return raw


def check_int(value: Any, path: str, error: Error, low: int, high: int, allowed: str) -> int:
    """An int in low..high (inclusive); `allowed` says so in the error message."""
    if not is_int(value):
        raise error(f"{path}: expected int, got {got(value)}")
    if not low <= value <= high:
        raise out_of_range(value, path, allowed, error)
    return value


def check_count(value: Any, path: str, error: Error) -> int:
    """A count, a sequence id or a duration: 0 <= n < 2**63."""
    return check_int(value, path, error, 0, _MAX_COUNT, "0 <= n < 2**63")


def check_list(value: Any, path: str, error: Error, low: int = 0,
               high: int = _MAX_COUNT) -> list | tuple:
    """A list on the wire, a list or a tuple in Python, with low..high items."""
    if not isinstance(value, (list, tuple)):
        raise error(f"{path}: expected a list, got {got(value)}")
    if not low <= len(value) <= high:
        raise error(f"{path}: {len(value)} items, expected {low}..{high}")
    return value


def check_str_list(value: Any, path: str, error: Error) -> list | tuple:
    items = check_list(value, path, error, 0, MAX_ENTRIES)
    for i, item in enumerate(items):
        check_str(item, f"{path}[{i}]", error)
    return items


def check_map(value: Any, path: str, error: Error) -> dict[str, Any]:
    """A map whose keys are all str (its values are the caller's to check)."""
    if not isinstance(value, dict):
        raise error(f"{path}: expected a map, got {got(value)}")
    if len(value) > MAX_ENTRIES:
        raise error(f"{path}: {len(value)} entries, at most {MAX_ENTRIES}")
    for key in value:
        if not isinstance(key, str):
            raise error(f"{path}: keys must be str, got {got(key)}")
    return value


MAX_KEYS_NAMED = 8
"""An error names at most this many unexpected keys (each cut to 40 characters): a message
of 200,000 keys must not become an error reply past the size limit, or an 11 MB log line."""


def exact_keys(raw: Any, path: str, keys: frozenset[str]) -> dict[str, Any]:
    """A decoded map with exactly `keys`: a missing field or an extra one is an error."""
    if not isinstance(raw, dict):
        raise DecodeError(f"{path}: expected a map, got {got(raw)}")
    if raw.keys() != keys:
        missing = sorted(keys - raw.keys())
        extra = raw.keys() - keys
        shown = heapq.nsmallest(MAX_KEYS_NAMED, (repr(k)[:40] for k in extra))
        more = f" and {len(extra) - len(shown)} more" if len(extra) > len(shown) else ""
        raise DecodeError(f"{path}: missing keys {missing}, unexpected keys "
                          f"[{', '.join(shown)}]{more}")
    return raw


# Shapes are checked on every array: a plain int in range passes with one test, and only an
# odd side gets the full check, which names it.

def check_shape(value: Any, path: str, error: Error) -> list[int] | tuple[int, ...]:
    """An array shape: at most MAX_NDIM sides, each a count."""
    sides = check_list(value, path, error, 0, MAX_NDIM)
    for i, side in enumerate(sides):
        if type(side) is not int or not 0 <= side <= _MAX_COUNT:
            check_count(side, f"{path}[{i}]", error)
    return sides


def check_image_size(value: Any, path: str, error: Error) -> list[int] | tuple[int, int]:
    """[height, width], each side 1..MAX_IMAGE_SIDE."""
    sides = check_list(value, path, error, 2, 2)
    for i, side in enumerate(sides):
        if type(side) is not int or not 1 <= side <= MAX_IMAGE_SIDE:
            check_int(side, f"{path}[{i}]", error, 1, MAX_IMAGE_SIDE, _IMAGE_SIDES)
    return sides


def check_rate(value: Any, path: str, error: Error) -> float:
    """A rate in Hz: a finite float > 0 (an int is accepted, and travels as a float)."""
    if not (isinstance(value, float) or is_int(value)):
        raise error(f"{path}: expected float, got {got(value)}")
    if not (math.isfinite(value) and value > 0):
        raise out_of_range(value, path, "a finite value > 0", error)
    return float(value)


def check_dtype_name(value: Any, path: str, error: Error) -> str:
    """A contract's dtype is a name ("float32"); an array's on the wire is a code ("<f4")."""
    if check_str(value, path, error) not in DTYPE_NAMES:
        raise out_of_range(value, path, f"one of {DTYPE_NAMES}", error)
    return value


def check_status_value(value: Any, path: str, error: Error) -> int | float | str | bool:
    """An int (int64 or uint64 range, as msgpack carries), float, str or bool."""
    if not isinstance(value, (int, float, str)):
        raise error(f"{path}: expected int, float, str or bool, got {got(value)}")
    if is_int(value) and not -2**63 <= value < 2**64:
        raise out_of_range(value, path, "an int64 or uint64", error)
    return value


# ---- arrays -------------------------------------------------------------------------------

def pack_array(array: Any, path: str) -> dict[str, Any]:
    """Any allowed numpy array, as its values: big-endian and strided input are converted."""
    if not isinstance(array, np.ndarray):
        raise EncodeError(f"{path}: expected a numpy array, got {got(array)}")
    name = _WIRE_NAME_OF.get(array.dtype)
    if name is None:
        raise EncodeError(f"{path}: dtype {array.dtype} is not allowed on the wire; "
                          f"use one of {DTYPE_NAMES}")
    if array.ndim > MAX_NDIM:
        raise EncodeError(f"{path}: {array.ndim} dimensions, at most {MAX_NDIM} allowed")
    # A view of the values, not a copy: msgpack copies them once, straight into the body.
    data = memoryview(array)
    if not data.c_contiguous or array.dtype.byteorder == ">":
        data = memoryview(np.ascontiguousarray(array, dtype=_WIRE_DTYPES[name]))
    if name == "|b1" and data.tobytes().strip(b"\x00\x01"):
        raise EncodeError(f"{path}: bool array holds bytes other than 0 and 1")
    return {"dtype": name, "shape": list(array.shape), "data": data}


def unpack_array(raw: Any, path: str) -> np.ndarray:
    """A read-only array viewing the decoded `data` bytes, once they fit dtype and shape."""
    item = exact_keys(raw, path, _ARRAY_KEYS)
    name = check_str(item["dtype"], f"{path}.dtype", DecodeError)
    dtype = _WIRE_DTYPES.get(name)
    if dtype is None:
        raise out_of_range(name, f"{path}.dtype", _ALLOWED_DTYPES_TEXT, DecodeError)
    shape = check_shape(item["shape"], f"{path}.shape", DecodeError)
    data = check_bytes(item["data"], f"{path}.data")
    needed = math.prod(shape) * dtype.itemsize  # Python ints: no overflow tricks
    if needed != len(data):
        raise DecodeError(f"{path}: shape {shape} needs {needed} bytes, got {len(data)} "
                          f"(dtype {dtype.str!r})")
    # An empty array may still have huge sides; numpy refuses them past int64 bytes.
    if needed == 0 and math.prod(max(side, 1) for side in shape) * dtype.itemsize >= 2**63:
        raise DecodeError(f"{path}: shape {shape} is too large for any array")
    if dtype.kind == "b" and data.strip(b"\x00\x01"):
        raise DecodeError(f"{path}: bool array holds bytes other than 0 and 1")
    return np.ndarray(shape, dtype, buffer=data)  # read-only, as `data` is bytes


def pack_array_spec(spec: Any, path: str) -> dict[str, Any]:
    """A contract's declared state array: {"dtype": "float32", "shape": [7]}."""
    if not isinstance(spec, ArraySpec):
        raise EncodeError(f"{path}: expected ArraySpec, got {got(spec)}")
    return {"dtype": check_dtype_name(spec.dtype, f"{path}.dtype", EncodeError),
            "shape": check_shape(spec.shape, f"{path}.shape", EncodeError)}


def unpack_array_spec(raw: Any, path: str) -> ArraySpec:
    item = exact_keys(raw, path, _SPEC_KEYS)
    return ArraySpec(dtype=check_dtype_name(item["dtype"], f"{path}.dtype", DecodeError),
                     shape=tuple(check_shape(item["shape"], f"{path}.shape", DecodeError)))


def is_image(value: Any) -> bool:
    return (isinstance(value, np.ndarray) and value.dtype == np.uint8 and value.ndim == 3
            and value.shape[2] == 3)


def pack_raw_image(image: Any, path: str) -> dict[str, Any]:
    """An image as a plain uint8 array (any size, even empty: only JPEG needs real sides)."""
    if isinstance(image, np.ndarray) and not is_image(image):
        raise EncodeError(f"{path}: expected {_IMAGE}, got {got(image)}")
    return pack_array(image, path)


def unpack_raw_image(raw: Any, path: str) -> np.ndarray:
    image = unpack_array(raw, path)
    if not is_image(image):
        raise DecodeError(f"{path}: expected {_IMAGE}, got {got(image)}")
    return image


# ---- JPEG images --------------------------------------------------------------------------

def pack_jpeg(image: Any, path: str, quality: int) -> dict[str, Any]:
    if not is_image(image):
        raise EncodeError(f"{path}: expected {_IMAGE}, got {got(image)}")
    check_image_size(image.shape[:2], f"{path}.shape", EncodeError)  # what the decoder accepts
    try:
        jpeg = simplejpeg.encode_jpeg(np.ascontiguousarray(image), quality=quality,
                                      colorspace="RGB")
    except Exception as exc:  # e.g. a side too large for libjpeg-turbo
        raise EncodeError(f"{path}: JPEG encoding of {list(image.shape)} failed ({exc})") from exc
    return {"jpeg": jpeg, "shape": list(image.shape)}


def unpack_jpeg(raw: Any, path: str) -> np.ndarray:
    item = exact_keys(raw, path, _JPEG_KEYS)
    jpeg = check_bytes(item["jpeg"], f"{path}.jpeg")
    shape = check_shape(item["shape"], f"{path}.shape", DecodeError)
    if len(shape) != 3 or shape[2] != 3:
        raise DecodeError(f"{path}.shape: {shape} is not [height, width, 3]")
    height, width = check_image_size(shape[:2], f"{path}.shape", DecodeError)
    try:  # compare the header's size before decoding: no decompression bombs
        jpeg_height, jpeg_width, _, _ = simplejpeg.decode_jpeg_header(jpeg)
    except Exception as exc:
        raise DecodeError(f"{path}: invalid JPEG ({exc})") from exc
    if (jpeg_height, jpeg_width) != (height, width):
        raise DecodeError(f"{path}: JPEG is {jpeg_height}x{jpeg_width}, declared {shape}")
    try:
        image = simplejpeg.decode_jpeg(jpeg, colorspace="RGB")
    except Exception as exc:
        raise DecodeError(f"{path}: invalid JPEG ({exc})") from exc
    if list(image.shape) != shape:
        raise DecodeError(f"{path}: JPEG decoded to {list(image.shape)}, declared {shape}")
    return image


def pack_image(image: Any, path: str, jpeg_quality: int | None) -> dict[str, Any]:
    """Raw, or JPEG when `jpeg_quality` is given (then `encode` sets the JPEG flag)."""
    if jpeg_quality is None:
        return pack_raw_image(image, path)
    return pack_jpeg(image, path, jpeg_quality)


def unpack_image(raw: Any, path: str, jpeg: bool) -> np.ndarray:
    """`jpeg` is the header's JPEG flag: every image of the message is JPEG, or none is."""
    return unpack_jpeg(raw, path) if jpeg else unpack_raw_image(raw, path)
