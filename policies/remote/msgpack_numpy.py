"""NumPy arrays and images inside msgpack, as the two websocket peers put them on the wire.

openpi (`packages/openpi-client/src/openpi_client/msgpack_numpy.py`) writes an array as a map
with BYTES keys, `{b"__ndarray__": True, b"data": ..., b"dtype": ..., b"shape": ...}`, and a
numpy scalar as `{b"__npgeneric__": True, b"data": ..., b"dtype": ...}`. vla-eval 0.8.0
(`vla_eval/protocol/numpy_codec.py`, `image_codec.py`) writes the same array fields with STR
keys (shape as a list), numpy scalars as plain numbers, and an HWC uint8 image as
`{"__image__": True, "format": "png" | "jpeg", ...}` (a raw image as a plain array map).
The encoders here give the same bytes as theirs, map key order included, so a peer cannot
tell us from its own client (the tests compare against the peers' own packers). The
decoders accept only bool, int, uint and float dtypes and check the buffer's length against
the shape: nothing from the network becomes an object array, and nothing is unpickled.
"""

from __future__ import annotations

import enum
import math

import msgpack
import numpy as np
import simplejpeg

from policies.remote.png import png_bytes

ALLOWED_DTYPE_KINDS = frozenset("biuf")
"""bool, signed and unsigned int, float: the dtypes a decoded array may have."""

JPEG_QUALITY = 95
"""vla-eval's own JPEG quality (`image_codec.encode_image`)."""

PNG_ZLIB_LEVEL = 1
"""zlib level of our PNG encoder: every level decodes to the same pixels; 1 costs about half
of Pillow's default (level 6) on a 224x224 image, for somewhat larger frames."""


class ImageFormat(enum.StrEnum):
    """How vla-eval images travel (`image_codec.ImageFormat`)."""

    raw = "raw"
    """The pixel bytes as they are: largest, cheapest to encode."""
    png = "png"
    """Lossless; vla-eval's default."""
    jpeg = "jpeg"
    """Lossy (quality 95), RGB only; the smallest."""


def checked_dtype(dtype: object) -> np.dtype:
    """The numpy dtype named by a decoded map's `dtype` field.

    Raises:
        ValueError: it names no dtype, or one other than bool/int/uint/float.
    """
    try:
        dt = np.dtype(dtype.decode() if isinstance(dtype, bytes) else dtype)
    except (TypeError, ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"array dtype {dtype!r} is not a numpy dtype") from exc
    if dt.kind not in ALLOWED_DTYPE_KINDS or dt.fields is not None:
        raise ValueError(f"array dtype {dt} refused: only bool/int/uint/float are decoded")
    return dt


def decode_array(data: object, dtype: object, shape: object) -> np.ndarray:
    """A writable array from a decoded map's fields.

    Raises:
        ValueError: the dtype is refused (`checked_dtype`), the shape is not a list of
            non-negative ints, or the buffer's length does not match them.
    """
    dt = checked_dtype(dtype)
    if not isinstance(shape, list | tuple) or not all(
            isinstance(n, int) and n >= 0 for n in shape):
        raise ValueError(f"array shape {shape!r} is not a list of non-negative ints")
    if not isinstance(data, bytes) or len(data) != math.prod(shape) * dt.itemsize:
        size = len(data) if isinstance(data, bytes) else type(data).__name__
        raise ValueError(f"array buffer of {size} bytes does not hold {dt} x {list(shape)}")
    return np.frombuffer(data, dtype=dt).reshape(shape).copy()


def _openpi_default(obj: object) -> object:
    """msgpack `default` hook: openpi_client's `pack_array`, field for field."""
    if isinstance(obj, np.ndarray | np.generic) and obj.dtype.kind in ("V", "O", "c"):
        raise ValueError(f"Unsupported dtype: {obj.dtype}")
    if isinstance(obj, np.ndarray):
        return {b"__ndarray__": True, b"data": obj.tobytes(), b"dtype": obj.dtype.str,
                b"shape": obj.shape}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"cannot send a {type(obj).__name__} to an openpi server")


def _openpi_hook(obj: dict) -> object:
    if b"__ndarray__" in obj:
        return decode_array(obj.get(b"data"), obj.get(b"dtype"), obj.get(b"shape"))
    if b"__npgeneric__" in obj:
        value = obj.get(b"data")
        if not isinstance(value, bool | int | float):
            raise ValueError(f"numpy scalar data {value!r} is not a number")
        return checked_dtype(obj.get(b"dtype")).type(value)
    return obj


def packb_openpi(obj: object) -> bytes:
    """`openpi_client.msgpack_numpy.packb(obj)`, byte for byte."""
    return msgpack.packb(obj, default=_openpi_default)


def unpackb_openpi(data: bytes) -> object:
    """Decode an openpi frame; arrays and numpy scalars come back as numpy values.

    Raises:
        ValueError: not msgpack, or an array map this module refuses (`decode_array`).
    """
    try:
        return msgpack.unpackb(data, object_hook=_openpi_hook)
    except (msgpack.UnpackException, ValueError, TypeError) as exc:
        raise ValueError(f"undecodable openpi frame ({len(data)} bytes): {exc}") from exc


def encode_image(image: np.ndarray, fmt: ImageFormat) -> dict[str, object]:
    """An HxWx3 uint8 image as vla-eval's `encode_ndarray` sends it: an `__image__` map
    (`image_codec.encode_image`) for png and jpeg, a plain `__ndarray__` map for raw (its
    encoder never sends the `__image__` raw map its decoder also reads).

    Raises:
        ValueError: the image is not HxWx3 uint8.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image of shape {list(image.shape)} and dtype {image.dtype}: "
                         "expected HxWx3 uint8")
    fmt = ImageFormat(fmt)
    if fmt is ImageFormat.raw:  # vla-eval's encoder sends raw images as plain arrays
        return {"__ndarray__": True, "data": image.tobytes(), "dtype": image.dtype.str,
                "shape": list(image.shape)}
    pixels = np.ascontiguousarray(image)
    data = (png_bytes(pixels, level=PNG_ZLIB_LEVEL) if fmt is ImageFormat.png
            else simplejpeg.encode_jpeg(pixels, quality=JPEG_QUALITY, colorspace="RGB"))
    return {"__image__": True, "format": fmt.value, "data": data, "shape": list(image.shape)}


def _vla_eval_default(obj: object) -> object:
    """msgpack `default` hook: vla-eval's `encode_ndarray` for non-image values."""
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": True, "data": obj.tobytes(), "dtype": obj.dtype.str,
                "shape": list(obj.shape)}
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    raise TypeError(f"cannot send a {type(obj).__name__} to a vla-eval server")


def _vla_eval_hook(obj: dict) -> object:
    if "__image__" in obj:
        if obj.get("format") != "raw":
            raise ValueError(f"a {obj.get('format')!r} image in a reply: only raw is decoded")
        return decode_array(obj.get("data"), obj.get("dtype"), obj.get("shape"))
    if "__ndarray__" in obj:
        return decode_array(obj.get("data"), obj.get("dtype"), obj.get("shape"))
    return obj


def packb_vla_eval(obj: object) -> bytes:
    """vla-eval's `msgpack.packb(raw, default=encode_ndarray, use_bin_type=True)`; images
    must already be maps (`encode_image`): arrays left in `obj` go as `__ndarray__` maps."""
    return msgpack.packb(obj, default=_vla_eval_default, use_bin_type=True)


def unpackb_vla_eval(data: bytes) -> object:
    """Decode a vla-eval frame; arrays (and raw images) come back as numpy arrays.

    Raises:
        ValueError: not msgpack, or an array map this module refuses (`decode_array`).
    """
    try:
        return msgpack.unpackb(data, object_hook=_vla_eval_hook, raw=False)
    except (msgpack.UnpackException, ValueError, TypeError) as exc:
        raise ValueError(f"undecodable vla-eval frame ({len(data)} bytes): {exc}") from exc
