"""Keep freed memory in the process for reuse, instead of returning it to the OS after each tensor.

A training step frees and reallocates the weight gradients (4 MB per 1000×1000 layer), and a
snapshot allocates and frees a few hundred temporaries of up to a megabyte or so (one per pass of the
instruments over a layer's activations or gradients). glibc serves blocks this large with ``mmap``
and returns them with ``munmap`` (or trims the heap), so a new block can start as untouched pages:
the kernel takes a page fault and zeroes 4 KB for every page. Its threshold adapts upwards after such
frees, but how well depends on the heap's layout: 45 training steps of a 3×1000 network took from 37
to 80,000 faults under the defaults, ≈2,000 every time with this setting; when snapshots still
formed each layer's weight gradient (4 MB) that was ≈9,500 faults per snapshot. Raising glibc's mmap and trim thresholds
(``mallopt``; the ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` environment variables do
the same from outside) makes such blocks come from the heap and stay there once freed, so they are
reused without faults. The cost is that up to ``TRIM_THRESHOLD`` bytes of freed heap stay with the
process; a job runs in its own process, which gives them back when it ends.

``keep_freed_memory()`` is called by ``run_experiment``; it does nothing off glibc, when already
done, or when ``GLOROT_MALLOC_DEFAULTS=1`` is set (to compare, or for an embedding process that
prefers glibc's defaults).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 64 * 2**20
"""Blocks below 64 MB come from the heap (glibc's default: 128 KB, adapting up to 32 MB)."""
TRIM_THRESHOLD = 512 * 2**20
"""Up to 512 MB of freed heap stays with the process for reuse."""


@functools.cache
def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; True when they were set here."""
    if os.environ.get("GLOROT_MALLOC_DEFAULTS") == "1" or not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
