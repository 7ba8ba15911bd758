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

What a caller keeps, no allocator setting can recycle: a large ``read`` returns a new buffer
whose pages are all fresh, and in a VM a first touch is dear (measured here: 0.6 ms of system
time per MiB, more than the rest of the read costs the client). :func:`join_fresh` builds such
a result on transparent huge pages instead: one fault per 2 MiB instead of 512 (0.6 → 0.3 ms
per MiB, measured).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "CLIENT_TRIM_THRESHOLD",
    "HUGE_JOIN_MIN",
    "fresh_bytes",
    "join_fresh",
    "tune_malloc",
    "tune_malloc_for_client",
]

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


_HUGE_PAGE = 2 << 20
_MADV_HUGEPAGE = 14
HUGE_JOIN_MIN = 4 << 20
"""Below this size :func:`join_fresh` is ``b"".join`` (too few whole huge pages to gain)."""


def _bytes_maker() -> tuple[Callable[[None, int], bytes], Callable[..., int], int] | None:
    """CPython's ``PyBytes_FromStringAndSize``, libc's ``madvise`` and the offset of a bytes
    object's data from its address; None where any is missing (another interpreter, no libc)
    or off Linux (``MADV_HUGEPAGE``'s number means nothing, or something else, elsewhere)."""
    pythonapi = getattr(ctypes, "pythonapi", None)
    if pythonapi is None or sys.implementation.name != "cpython" or sys.platform != "linux":
        return None
    try:
        make = pythonapi.PyBytes_FromStringAndSize
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    make.restype = ctypes.py_object
    make.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t]
    madvise.restype = ctypes.c_int
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    data_offset = sys.getsizeof(b"") - 1  # the header before ob_sval (the 1: its NUL)
    return make, madvise, data_offset


_maker = _bytes_maker()


def fresh_bytes(size: int) -> tuple[bytes, memoryview] | None:
    """A new ``bytes`` of ``size`` bytes, not yet filled, and a writable view of its memory:
    for a producer that writes a message in place (a chunk server ``pread``s a read reply's
    data straight into the reply) instead of joining it from parts, one copy fewer. None where
    there is no such way (another interpreter, off Linux: see :func:`_bytes_maker`).

    The contract is the C API's for ``PyBytes_FromStringAndSize(NULL, size)``: fill it, and
    release the view, before anything else sees the bytes; keep the bytes alive while the view
    is used (the view does not hold it)."""
    if _maker is None:
        return None
    make, _, data_offset = _maker
    out = make(None, size)
    view = memoryview((ctypes.c_char * size).from_address(id(out) + data_offset)).cast("B")
    return out, view


def join_fresh(parts: Sequence[bytes | memoryview], size: int) -> bytes:
    """``b"".join(parts)`` (``size``: their total length) for a result the caller will keep:
    its pages are advised as transparent huge pages (``MADV_HUGEPAGE``) before anything is
    written to them (see the module docstring).

    How: an uninitialized ``bytes`` of ``size`` from CPython's ``PyBytes_FromStringAndSize(NULL,
    size)`` (the C API's way to build a bytes object: filled before anyone else sees it, as
    ``bytes.join`` itself does), the whole 2 MiB pages inside it advised, then the parts
    copied in through a writable view of its memory. Where THP is off (``never``) the advice
    does nothing and this is a plain copy; on another interpreter, or for a small result, it
    is ``b"".join``."""
    made = fresh_bytes(size) if size >= HUGE_JOIN_MIN else None
    if made is None or _maker is None:
        return b"".join(parts)
    out, into = made
    _, madvise, data_offset = _maker
    base = id(out) + data_offset
    lo = -(-base // _HUGE_PAGE) * _HUGE_PAGE
    hi = (base + size) // _HUGE_PAGE * _HUGE_PAGE
    if hi > lo:
        madvise(lo, hi - lo, _MADV_HUGEPAGE)  # advice: a refusal (THP off) changes nothing
    at = 0
    with into:
        for part in parts:
            into[at : at + len(part)] = part
            at += len(part)
    if at != size:
        raise ValueError(f"parts of {at} bytes, not {size}")
    return out
