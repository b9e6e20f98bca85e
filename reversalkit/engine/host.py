"""Host allocator tuning for CPU sampling.

A decode step on a CPU allocates dozens of short-lived tensors of 128 KB - 1 MB. glibc serves
allocations of that size with fresh mmap()s, so every step page-faults its temporaries back in:
measured ~540 minor faults and ~35% of the step time per layer of the tiny model at 256 sequences.
`keep_freed_memory()` raises glibc's mmap and trim thresholds so freed blocks are reused instead.
It changes the whole process's malloc behaviour (memory is returned to the OS less eagerly), which
is why it is a separate, explicit call: Engine makes it only when asked (`tune_malloc=True`, off by
default); the `reversalkit` CLI asks for it in main(), as a program that owns its process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


_MMAP_THRESHOLD_MAX = 32 << 20  # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit


@functools.cache
def keep_freed_memory(trim_bytes: int = 1 << 30) -> bool:
    """Serve allocations below 32 MiB from the heap and keep up to trim_bytes of freed heap;
    True when applied (Linux/glibc only). Idempotent."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) == 1
    return ok and mallopt(_M_TRIM_THRESHOLD, int(trim_bytes)) == 1
