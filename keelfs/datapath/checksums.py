"""CRC32C per chunk: the unit of integrity on the wire, on disk and in the scanner.

A block is cut into chunks of ``chunk_size`` bytes (64 KiB by default; the last one may be
short). Each chunk has a CRC32C; a run of chunks has its CRCs packed as 4-byte little-endian
words, one per chunk, in order: the layout of ``Packet.crcs`` and of the sidecar file alike, so
that the checksums a client computed are the ones stored (end to end).

All CRC work is done by ``google_crc32c``'s C implementation. Its functions accept ``bytes``
only (not memoryview), so a chunk of a memoryview is copied to ``bytes`` first: one memcpy of
64 KiB that stays in the CPU cache, cheap next to everything else a packet costs.
"""

from __future__ import annotations

import struct
from functools import lru_cache

import google_crc32c

__all__ = [
    "CHUNK_SIZE",
    "CRC_SIZE",
    "MAX_CHUNK_SIZE",
    "chunk_count",
    "chunk_crcs",
    "crc32c",
    "crc32c_tail",
    "first_mismatch",
]

CHUNK_SIZE = 64 * 1024
"""Default bytes per checksum."""
MAX_CHUNK_SIZE = 4 * 1024 * 1024
CRC_SIZE = 4

crc32c = google_crc32c.value
"""CRC32C of one ``bytes`` object."""

_MASK = 0xFFFFFFFF
TAIL_MIN = 128 << 10
"""Below this many bytes :func:`crc32c_tail` copies the tail (cheaper than a new shift)."""

Shift = tuple[int, ...]
"""A linear map of the 32-bit CRC register over GF(2): the image of each of its 32 bits."""


def _apply(shift: Shift, x: int) -> int:
    out = i = 0
    while x:
        if x & 1:
            out ^= shift[i]
        x >>= 1
        i += 1
    return out


def _compose(outer: Shift, inner: Shift) -> Shift:
    return tuple(_apply(outer, column) for column in inner)


@lru_cache(maxsize=64)
def _zeros_shift(n: int) -> Shift:
    """What ``n`` zero bytes do to the raw CRC register (``A_n``: linear, as the register's
    update over zero bytes adds nothing), built from powers of two by composition."""
    if n == 1:
        return tuple(~google_crc32c.extend(~(1 << i) & _MASK, b"\0") & _MASK for i in range(32))
    half = _zeros_shift(n // 2)
    both = _compose(half, half)
    return _compose(_zeros_shift(1), both) if n % 2 else both


def crc32c_tail(raw: bytes, start: int) -> int:
    """CRC32C of ``raw[start:]`` without copying it: ``google_crc32c`` reads ``bytes`` only,
    and a read reply's data is the tail of the received message. With ``P = raw[:start]`` and
    ``D`` the tail of ``n`` bytes, ``crc(P + D) = crc(D) ^ A_n(crc(P))`` (CRC's linearity;
    ``A_n`` the register's shift over ``n`` zero bytes, cached per ``n``), so one pass over
    the whole message and one over the few bytes of its prefix give the tail's CRC."""
    n = len(raw) - start
    if n < TAIL_MIN:
        return crc32c(raw[start:])
    return crc32c(raw) ^ _apply(_zeros_shift(n), crc32c(raw[:start]))


def chunk_count(length: int, chunk_size: int) -> int:
    """How many chunks ``length`` bytes make (the last one possibly short)."""
    return -(-length // chunk_size)


Data = bytes | memoryview


def _crc_list(data: Data, chunk_size: int) -> list[int]:
    if len(data) <= chunk_size:
        return [crc32c(bytes(data))] if len(data) else []
    return [crc32c(bytes(data[i : i + chunk_size])) for i in range(0, len(data), chunk_size)]


def chunk_crcs(data: Data, chunk_size: int = CHUNK_SIZE) -> bytes:
    """The packed CRC32Cs of ``data``'s chunks (``data`` starts at a chunk boundary)."""
    crcs = _crc_list(data, chunk_size)
    return struct.pack(f"<{len(crcs)}I", *crcs)


def first_mismatch(data: Data, crcs: bytes, chunk_size: int) -> int:
    """Index of the first chunk of ``data`` whose CRC32C differs from the packed ``crcs``, or
    -1 when all match. ``crcs`` must hold exactly one word per chunk (ValueError otherwise)."""
    n = chunk_count(len(data), chunk_size)
    if len(crcs) != n * CRC_SIZE:
        raise ValueError(f"{len(crcs)} bytes of checksums for {n} chunks")
    actual = _crc_list(data, chunk_size)
    if struct.pack(f"<{n}I", *actual) == crcs:
        return -1
    expected = struct.unpack(f"<{n}I", crcs)
    return next(i for i, (a, e) in enumerate(zip(actual, expected, strict=True)) if a != e)
