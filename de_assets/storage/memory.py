"""Giving freed memory back to the operating system between large pieces of work.

Freed buffers do not leave the process by themselves: Arrow's memory pool keeps them for reuse, and
glibc's malloc keeps freed chunks in fragmented arenas. After a batch of a day's clickstream has been
processed and dropped, that memory would still count towards the peak of everything that follows.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable

import pyarrow as pa


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None)
    except OSError:
        return None


def release_freed_memory() -> None:
    """Return memory freed so far to the operating system (Arrow's pool, then malloc's free chunks)."""
    pa.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
