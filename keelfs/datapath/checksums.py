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

import google_crc32c

__all__ = [
    "CHUNK_SIZE",
    "CRC_SIZE",
    "MAX_CHUNK_SIZE",
    "chunk_count",
    "chunk_crcs",
    "crc32c",
    "first_mismatch",
]

CHUNK_SIZE = 64 * 1024
"""Default bytes per checksum."""
MAX_CHUNK_SIZE = 4 * 1024 * 1024
CRC_SIZE = 4

crc32c = google_crc32c.value
"""CRC32C of one ``bytes`` object."""


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
