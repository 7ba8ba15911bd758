"""Keep glibc from handing megabyte buffers back to the kernel after every message.

The data path allocates and frees a ~1 MiB buffer several times per packet (gRPC's receive
buffer, the ``bytes`` of the message, its copy to the next hop). glibc serves such sizes with
``mmap`` and returns them with ``munmap`` (or trims the heap), so every packet pays page faults
and page zeroing in the kernel: measured on the chunk server, about half of the CPU time per
MiB was system time, and throughput doubled once the buffers were kept. :func:`tune_malloc`
raises the mmap and trim thresholds so that the buffers are reused from the heap; a process that
moves a lot of data (a chunk server, a benchmark, a bulk client) calls it once at start. The
cost is memory kept by the allocator after a burst (bounded by ``trim_threshold`` per arena).

A reading client pays the same, and more: a large ``read`` joins its pieces into a new buffer of
several MiB, and each first touch of fresh pages is a page fault (measured in a Firecracker VM:
256 MiB read with glibc's defaults cost the client process 320 ms of CPU, with the thresholds
raised 190 ms). :class:`~keelfs.datapath.client.AsyncChunkClient` therefore calls
:func:`tune_malloc_for_client` when it is made, with a smaller trim threshold than a server's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any

__all__ = ["CLIENT_TRIM_THRESHOLD", "tune_malloc", "tune_malloc_for_client"]

_tuned = False
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def _mallopt() -> Any:
    """glibc's ``mallopt``: from the symbols already loaded (no ``find_library``, which runs
    ``ldconfig``), else from the C library found by name; None where there is none."""
    try:
        return ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        pass
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).mallopt if name is not None else None
    except (OSError, AttributeError):
        return None


def tune_malloc(mmap_threshold: int = 32 << 20, trim_threshold: int = 256 << 20) -> bool:
    """Set glibc's ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` (``mallopt``); False where the C
    library is not glibc (nothing changed). 32 MiB is glibc's largest mmap threshold."""
    mallopt = _mallopt()
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    global _tuned
    _tuned = bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        mallopt(_M_TRIM_THRESHOLD, trim_threshold)
    )
    return _tuned


CLIENT_TRIM_THRESHOLD = 64 << 20
"""What a client process keeps of freed heap at most (a chunk server keeps 256 MiB)."""

_client_tried = False


def tune_malloc_for_client() -> None:
    """:func:`tune_malloc` once per process, with :data:`CLIENT_TRIM_THRESHOLD` (a process
    that already tuned its allocator, a chunk server, is left as it is)."""
    global _client_tried
    if not (_tuned or _client_tried):
        _client_tried = True
        tune_malloc(trim_threshold=CLIENT_TRIM_THRESHOLD)
