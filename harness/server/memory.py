"""The server process's memory comes back after large messages.

A hostile or merely large message costs the server a few MiB while it is decoded; what
matters is that the memory goes back once it is freed, or a long-running server grows with
every burst (measured by `python -m harness.bench.fuzz`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

MMAP_THRESHOLD_BYTES = 1 << 20
"""Allocations this large get their own mapping, returned to the system when freed.

glibc's default threshold follows the largest block freed (up to 32 MiB), after which blocks
that large come from heaps it keeps: after 10^5 hostile messages, some near the 8 MiB limit,
the server's resident memory stayed 42 (zmq), 67 (zenoh) and 99 MB (grpc) above its resting
76-88 MB, and malloc_trim gave nothing back. Fixed at 1 MiB it came back to rest (+1.6 MB
after 10^4 on zmq); an honest observation (two 224x224 images, 300 kB) stays below it."""
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number, <malloc.h>


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Set glibc's mmap threshold for this process (see MMAP_THRESHOLD_BYTES); whether it
    was set. Not where there is no glibc, nor over an operator's own MALLOC_MMAP_THRESHOLD_."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return mallopt(_M_MMAP_THRESHOLD, threshold) == 1
