"""Whole-file checksums: HDFS's ``MD5-of-MD5-of-CRC32C``, from the chunk servers' sidecars.

The definition (HDFS ``FileChecksumHelper`` and ``BlockChecksumHelper``, which WebHDFS's
``GETFILECHECKSUM`` answers with), for a file of blocks ``B1..Bn``:

- each block's **block MD5** is the MD5 of the CRC32Cs of its chunks (``bytes_per_crc`` bytes
  each, the last one possibly short), each CRC a 4-byte **big-endian** word, in order (HDFS
  keeps them so in its ``.meta`` files; keelfs's sidecars keep them little-endian, so they are
  turned around first);
- the **file MD5** is the MD5 of the block MD5s one after the other, **zero-padded** to the
  size of the buffer HDFS's client gathered them in: 32 bytes, doubled until they fit (a
  quirk of ``DataOutputBuffer.getData()``; without the padding no HDFS tool agrees);
- ``crc_per_block`` is the first block's CRC count when the file has more than one block,
  else 0; the algorithm is named ``MD5-of-<crc_per_block>MD5-of-<bytes_per_crc>CRC32C``, and
  its bytes are ``bytes_per_crc`` (int32), ``crc_per_block`` (int64) and the file MD5,
  big-endian: 28 bytes (WebHDFS's ``bytes`` in hex, ``length`` 28).
- A file without blocks (empty) has HDFS's fixed answer: the MD5 of 32 zero bytes under
  ``MD5-of-0MD5-of-0CRC32``. Blocks of no bytes (a writer can leave an empty last block) are
  left out, so that the checksum is a function of the bytes and the two sizes alone.

It depends on the block size and on ``bytes_per_crc`` (keelfs's chunk size, 64 KiB unless a
writer chose another): equal files written with equal block and chunk sizes have equal
checksums, and an equal file in HDFS with the same sizes has the same checksum as here.
A file whose data is inline (in its metadata record, no blocks) is checksummed over its data
as one block of the default chunk size (:func:`checksum_of_blocks`), the same value a file of
the same bytes in one block gets.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from keelfs.datapath.checksums import CHUNK_SIZE, CRC_SIZE, chunk_crcs
from keelfs.errors import InvalidArgument

__all__ = [
    "EMPTY_FILE_CHECKSUM",
    "BlockDigest",
    "FileChecksum",
    "LocalChecksummer",
    "block_digest",
    "checksum_of_blocks",
    "combine",
]

MD5_SIZE = 16
_HEADER = struct.Struct(">iq")  # bytes_per_crc, crc_per_block
_Bytes = bytes  # FileChecksum has a field named ``bytes`` (WebHDFS's name)


@dataclass(frozen=True, slots=True)
class FileChecksum:
    """A file's checksum as WebHDFS's ``GETFILECHECKSUM`` gives it."""

    algorithm: str
    """``MD5-of-<crc_per_block>MD5-of-<bytes_per_crc>CRC32C``."""
    bytes: bytes
    """``bytes_per_crc`` (int32), ``crc_per_block`` (int64), the file MD5 (16 bytes)."""

    @property
    def length(self) -> int:
        """Of :attr:`bytes` (28), WebHDFS's ``length``."""
        return len(self.bytes)

    @property
    def hex(self) -> str:
        return self.bytes.hex()

    @property
    def bytes_per_crc(self) -> int:
        return int(_HEADER.unpack_from(self.bytes)[0])

    @property
    def crc_per_block(self) -> int:
        return int(_HEADER.unpack_from(self.bytes)[1])

    @property
    def md5(self) -> _Bytes:
        """The file MD5 alone (the last 16 bytes)."""
        return self.bytes[_HEADER.size :]

    def to_json(self) -> dict[str, object]:
        """WebHDFS's ``FileChecksum`` object."""
        return {"algorithm": self.algorithm, "bytes": self.hex, "length": self.length}


@dataclass(frozen=True, slots=True)
class BlockDigest:
    """What a chunk server answers for one block (``BlockChecksum``)."""

    bytes_per_crc: int
    crc_count: int
    md5: bytes
    """MD5 of the block's chunk CRC32Cs, big-endian words."""


def block_digest(crcs_le: bytes, bytes_per_crc: int) -> BlockDigest:
    """The digest of a block whose packed little-endian chunk CRCs (a sidecar's, or
    ``checksums.chunk_crcs``) are ``crcs_le``."""
    n = len(crcs_le) // CRC_SIZE
    if len(crcs_le) != n * CRC_SIZE:
        raise ValueError(f"{len(crcs_le)} bytes is not a whole number of CRC32Cs")
    big_endian = struct.pack(f">{n}I", *struct.unpack(f"<{n}I", crcs_le))
    return BlockDigest(bytes_per_crc, n, hashlib.md5(big_endian).digest())


def _padded(md5s: bytes) -> bytes:
    """``md5s`` in HDFS's gathering buffer: 32 bytes, doubled until they fit, zero-filled."""
    size = 32
    while size < len(md5s):
        size *= 2
    return md5s.ljust(size, b"\0")


EMPTY_FILE_CHECKSUM = FileChecksum(
    "MD5-of-0MD5-of-0CRC32", _HEADER.pack(0, 0) + hashlib.md5(bytes(32)).digest()
)
"""HDFS's answer for a file without blocks."""


def combine(blocks: Sequence[BlockDigest]) -> FileChecksum:
    """The file checksum of the blocks' digests, in file order (see the module docstring).
    ``InvalidArgument`` when the blocks' ``bytes_per_crc`` differ (as HDFS refuses)."""
    if not blocks:
        return EMPTY_FILE_CHECKSUM
    bpc = blocks[0].bytes_per_crc
    for b in blocks:
        if b.bytes_per_crc != bpc:
            raise InvalidArgument(
                f"blocks checksummed per {bpc} and per {b.bytes_per_crc} bytes: "
                "no MD5-of-MD5-of-CRC32C for such a file",
                "bytes_per_crc",
            )
    crc_per_block = blocks[0].crc_count if len(blocks) > 1 else 0
    file_md5 = hashlib.md5(_padded(b"".join(b.md5 for b in blocks))).digest()
    return FileChecksum(
        f"MD5-of-{crc_per_block}MD5-of-{bpc}CRC32C", _HEADER.pack(bpc, crc_per_block) + file_md5
    )


def checksum_of_blocks(blocks: Iterable[bytes], bytes_per_crc: int = CHUNK_SIZE) -> FileChecksum:
    """The checksum of a file whose blocks hold ``blocks`` (computed from the bytes: inline
    files, ``get --verify``). An empty block list is the empty file."""
    return combine([block_digest(chunk_crcs(b, bytes_per_crc), bytes_per_crc) for b in blocks if b])


class LocalChecksummer:
    """:func:`checksum_of_blocks` over a stream: ``update`` with the file's bytes in pieces of
    any size, cut into blocks of the given lengths; :meth:`result` at the end."""

    def __init__(self, block_lengths: Sequence[int], bytes_per_crc: int = CHUNK_SIZE) -> None:
        self._lengths = [n for n in block_lengths if n]  # empty blocks count for nothing
        self._bpc = bytes_per_crc
        self._index = 0
        self._pending = bytearray()
        self._crcs = bytearray()
        self._left = self._lengths[0] if self._lengths else 0
        self._digests: list[BlockDigest] = []

    def _end_of_block(self) -> None:
        self._crcs += chunk_crcs(bytes(self._pending), self._bpc)
        self._pending.clear()
        self._digests.append(block_digest(bytes(self._crcs), self._bpc))
        self._crcs.clear()
        self._index += 1
        self._left = self._lengths[self._index] if self._index < len(self._lengths) else 0

    def update(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            if self._index >= len(self._lengths):
                raise ValueError("more bytes than the blocks hold")
            n = min(self._left, len(view))
            self._pending += view[:n]
            view = view[n:]
            self._left -= n
            whole = len(self._pending) - len(self._pending) % self._bpc
            if whole:
                self._crcs += chunk_crcs(bytes(self._pending[:whole]), self._bpc)
                del self._pending[:whole]
            if self._left == 0:
                self._end_of_block()

    def result(self) -> FileChecksum:
        if self._index < len(self._lengths):
            raise ValueError("fewer bytes than the blocks hold")
        return combine(self._digests)
