"""Keep glibc from handing megabyte buffers back to the kernel after every message.

The data path allocates and frees a ~1 MiB buffer several times per packet (gRPC's receive
buffer, the ``bytes`` of the message, its copy to the next hop). glibc serves such sizes with
``mmap`` and returns them with ``munmap`` (or trims the heap), so every packet pays page faults
and page zeroing in the kernel: measured on the chunk server, about half of the CPU time per
MiB was system time, and throughput doubled once the buffers were kept. :func:`tune_malloc`
raises the mmap and trim thresholds so that the buffers are reused from the heap; a process that
moves a lot of data (a chunk server, a benchmark, a bulk client) calls it once at start. The
cost is memory kept by the allocator after a burst (bounded by ``trim_threshold`` per arena).
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["tune_malloc"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_malloc(mmap_threshold: int = 32 << 20, trim_threshold: int = 256 << 20) -> bool:
    """Set glibc's ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` (``mallopt``); False where the C
    library is not glibc (nothing changed). 32 MiB is glibc's largest mmap threshold."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        mallopt(_M_TRIM_THRESHOLD, trim_threshold)
    )
