"""Keeping freed memory in the process: glibc malloc settings for a run's many large, short-lived arrays.

A run allocates and frees arrays of megabytes in a loop: a step's new weights (a 2,500 x 1,500
kernel is 30 MB in float64), a unit's maps and their scoring forms. glibc serves such a request
from fresh pages (mmap, or a heap it trims on free) and the first touch of every page then faults.
On the 2-core microVMs this project is measured on, those faults cost up to 0.2 ms each and made
drawing one such kernel 6x slower inside a run than in a loop (390 ms against 60 ms; the loop
reuses its memory). Raising glibc's mmap threshold to its maximum (32 MiB on 64-bit) and its trim
threshold to 1 GiB keeps freed memory for the next request: the process's resident memory stays
near its peak instead. Both are documented mallopt(3) settings; MALLOC_MMAP_THRESHOLD_ and
MALLOC_TRIM_THRESHOLD_ in the environment set the same before a process starts.

A process-wide setting, so only the commands apply it (`harness`, each run or sweep job, and
`python -m harness.reproduce`), never `harness.runner.run` or the Python API (docs/api.md): a
notebook's process keeps its own allocator settings.
"""
from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1  # mallopt(3) parameter numbers (glibc's malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 1024 * 1024 * 1024


def keep_freed_memory() -> bool:
    """Apply the settings above; True when glibc took them, False elsewhere (macOS, musl, Windows:
    their allocators are left alone)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
