"""A lossless 8-bit RGB PNG from the standard library: the adapters that send images as PNG
(vla-eval's default, SGLang's `image_data`) need no imaging library on the robot's side."""

from __future__ import annotations

import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def png_bytes(image: np.ndarray, *, level: int = 6) -> bytes:
    """`image` (HxWx3 uint8, H and W >= 1) as a PNG: IHDR, one zlib IDAT (at `level`; every
    level decodes to the same pixels) of rows each prefixed by filter type 0 (None), IEND.

    Raises:
        ValueError: not HxWx3 uint8, or empty.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise ValueError(f"PNG needs a non-empty HxWx3 uint8 image, got {image.shape} "
                         f"{image.dtype}")
    height, width, _ = image.shape
    rows = np.concatenate([np.zeros((height, 1), np.uint8),
                           np.ascontiguousarray(image).reshape(height, width * 3)], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit, RGB, no interlace
    return (SIGNATURE + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(rows.tobytes(), level)) + _chunk(b"IEND", b""))
