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

HDFS's other mode, ``COMPOSITE_CRC`` (``dfs.checksum.combine.mode``), is offered too
(:func:`composite`): the CRC32C of the whole file, combined from the chunks' CRCs (each block's
by its chunk server, the blocks' here) without the data, under ``COMPOSITE-CRC32C`` with the
CRC's 4 big-endian bytes. It depends on the bytes alone, not on the block or chunk size: a
copy anywhere (another block size, a local file) has the same. The combination is GF(2)
arithmetic modulo the CRC32C polynomial (``google_crc32c`` has no combine): ``crc(A + B) =
crc(A) * x^(8 * len(B)) + crc(B)``, as zlib's ``crc32_combine``. An empty file gets HDFS's
fixed MD5 answer in both modes, as HDFS gives it.

The MD5 mode depends on the block size and on ``bytes_per_crc`` (keelfs's chunk size, 64 KiB
unless a writer chose another): equal files written with equal block and chunk sizes have
equal checksums, and an equal file in HDFS with the same sizes has the same checksum as here.
A file whose data is inline (in its metadata record, no blocks) is checksummed over its data
as one block of the default chunk size (:func:`checksum_of_blocks`), the same value a file of
the same bytes in one block gets.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from keelfs.datapath.checksums import CHUNK_SIZE, CRC_SIZE, chunk_crcs, crc32c
from keelfs.errors import InvalidArgument

__all__ = [
    "EMPTY_FILE_CHECKSUM",
    "BlockDigest",
    "composite",
    "crc32c_combine",
    "crc32c_of_chunks",
    "crc32c_of_packed",
    "crc32c_tail",
    "FileChecksum",
    "LocalChecksummer",
    "MODES",
    "block_digest",
    "by_mode",
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
    def composite(self) -> bool:
        """``COMPOSITE-CRC32C`` (else ``MD5-of-...``)."""
        return self.algorithm.startswith("COMPOSITE-")

    @property
    def bytes_per_crc(self) -> int:
        """Of the MD5 mode (0 for a composite CRC)."""
        return 0 if self.composite else int(_HEADER.unpack_from(self.bytes)[0])

    @property
    def crc_per_block(self) -> int:
        """Of the MD5 mode (0 for a composite CRC)."""
        return 0 if self.composite else int(_HEADER.unpack_from(self.bytes)[1])

    @property
    def md5(self) -> _Bytes:
        """The file MD5 alone (the last 16 bytes; empty for a composite CRC)."""
        return b"" if self.composite else self.bytes[_HEADER.size :]

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
    crc32c: int = 0
    """CRC32C of the block's bytes (combined from the chunks' CRCs)."""
    length: int = 0
    """The bytes covered."""


def block_digest(crcs_le: bytes, bytes_per_crc: int, length: int | None = None) -> BlockDigest:
    """The digest of a block of ``length`` bytes whose packed little-endian chunk CRCs (a
    sidecar's, or ``checksums.chunk_crcs``) are ``crcs_le`` (``length`` None: whole chunks,
    the composite CRC left 0)."""
    n = len(crcs_le) // CRC_SIZE
    if len(crcs_le) != n * CRC_SIZE:
        raise ValueError(f"{len(crcs_le)} bytes is not a whole number of CRC32Cs")
    words = struct.unpack(f"<{n}I", crcs_le)
    big_endian = struct.pack(f">{n}I", *words)
    crc = 0 if length is None else crc32c_of_chunks(words, bytes_per_crc, length)
    return BlockDigest(bytes_per_crc, n, hashlib.md5(big_endian).digest(), crc, length or 0)


# -- CRC32C combination (GF(2) modulo the reflected Castagnoli polynomial) ---------------------
_POLY = 0x82F63B78
_ONE = 1 << 31  # x^0 in the reflected representation


def _multiply(a: int, b: int) -> int:
    """``a * b`` modulo the polynomial (zlib's ``multmodp``)."""
    product, m = 0, _ONE
    while True:
        if a & m:
            product ^= b
            if a & (m - 1) == 0:
                return product
        m >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1


def _powers() -> list[int]:
    table, p = [], _ONE >> 1  # x^1
    for _ in range(64):
        table.append(p)  # x^(2^k)
        p = _multiply(p, p)
    return table


_X2N = _powers()


def _shift_by(nbytes: int) -> int:
    """``x^(8 * nbytes)`` modulo the polynomial (zlib's ``x2nmodp(n, 3)``)."""
    p, k = _ONE, 3
    while nbytes:
        if nbytes & 1:
            p = _multiply(_X2N[k % 64], p)
        nbytes >>= 1
        k += 1
    return p


def crc32c_combine(crc1: int, crc2: int, len2: int) -> int:
    """The CRC32C of ``A + B`` from ``crc1 = crc32c(A)``, ``crc2 = crc32c(B)``, ``len(B)``."""
    return _multiply(_shift_by(len2), crc1) ^ crc2


TAIL_MIN = 128 << 10
"""Below this many bytes :func:`crc32c_tail` copies the tail (cheaper than a new shift)."""


@lru_cache(maxsize=64)
def _shift_cached(nbytes: int) -> int:
    return _shift_by(nbytes)


def crc32c_tail(raw: bytes, start: int) -> int:
    """CRC32C of ``raw[start:]`` without copying it: ``google_crc32c`` reads ``bytes`` only,
    and a read reply's data is the tail of the received message. With ``P = raw[:start]`` and
    ``D`` the tail, ``crc(P + D) = crc32c_combine(crc(P), crc(D), len(D))``, so one pass over
    the whole message and one over its few-byte prefix give the tail's CRC (the shift for
    ``len(D)``, the same for every full piece, is kept)."""
    n = len(raw) - start
    if n < TAIL_MIN:
        return int(crc32c(raw[start:]))
    return int(crc32c(raw)) ^ _multiply(_shift_cached(n), int(crc32c(raw[:start])))


def crc32c_of_chunks(crcs: Sequence[int], chunk_size: int, length: int) -> int:
    """The CRC32C of ``length`` bytes whose chunks of ``chunk_size`` (the last one possibly
    short) have the CRC32Cs ``crcs``."""
    if not crcs:
        return 0
    t0, t1, t2, t3 = _shift_tables(chunk_size)  # one operator for every whole chunk
    crc = crcs[0]
    for c in crcs[1:-1]:
        crc = t0[crc & 0xFF] ^ t1[crc >> 8 & 0xFF] ^ t2[crc >> 16 & 0xFF] ^ t3[crc >> 24] ^ c
    if len(crcs) > 1:
        last = length - (len(crcs) - 1) * chunk_size
        if last == chunk_size:
            crc = t0[crc & 0xFF] ^ t1[crc >> 8 & 0xFF] ^ t2[crc >> 16 & 0xFF] ^ t3[crc >> 24]
        else:
            crc = _multiply(_shift_cached(last), crc)
        crc ^= crcs[-1]
    return crc


def crc32c_of_packed(crcs_le: bytes, chunk_size: int, length: int) -> int:
    """:func:`crc32c_of_chunks` of packed little-endian CRCs (a sidecar's, or
    ``checksums.chunk_crcs``): one per chunk of the ``length`` bytes."""
    n = len(crcs_le) // CRC_SIZE
    return crc32c_of_chunks(struct.unpack(f"<{n}I", crcs_le), chunk_size, length)


@lru_cache(maxsize=8)
def _shift_tables(nbytes: int) -> tuple[tuple[int, ...], ...]:
    """Multiplying by ``x^(8 * nbytes)`` as four tables of 256 words, one per byte of the CRC
    it multiplies: the product is linear in that CRC's bits, so it is the XOR of the products
    of its four bytes, each looked up (~1 µs in Python, against ~10 µs for :func:`_multiply`;
    building them costs 1,024 multiplications, once per size)."""
    op = _shift_by(nbytes)
    return tuple(tuple(_multiply(op, v << (8 * k)) for v in range(256)) for k in range(4))


def composite(blocks: Sequence[BlockDigest]) -> FileChecksum:
    """HDFS's ``COMPOSITE_CRC`` of a file with these blocks: ``COMPOSITE-CRC32C``, the
    whole file's CRC32C in 4 big-endian bytes (empty file: :data:`EMPTY_FILE_CHECKSUM`)."""
    if not blocks:
        return EMPTY_FILE_CHECKSUM
    crc = blocks[0].crc32c
    for b in blocks[1:]:
        crc = crc32c_combine(crc, b.crc32c, b.length)
    return FileChecksum("COMPOSITE-CRC32C", struct.pack(">I", crc))


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


def checksum_of_blocks(
    blocks: Iterable[bytes], bytes_per_crc: int = CHUNK_SIZE, *, mode: str = "MD5MD5CRC"
) -> FileChecksum:
    """The checksum of a file whose blocks hold ``blocks`` (computed from the bytes: inline
    files, ``get --verify``). An empty block list is the empty file. ``mode``:
    ``MD5MD5CRC`` or ``COMPOSITE_CRC``."""
    digests = [
        block_digest(chunk_crcs(b, bytes_per_crc), bytes_per_crc, len(b)) for b in blocks if b
    ]
    return by_mode(mode)(digests)


MODES = ("MD5MD5CRC", "COMPOSITE_CRC")
"""HDFS's names (``dfs.checksum.combine.mode``)."""


def by_mode(mode: str) -> Callable[[Sequence[BlockDigest]], FileChecksum]:
    """:func:`combine` or :func:`composite`; ``InvalidArgument`` for another name."""
    if mode == "MD5MD5CRC":
        return combine
    if mode == "COMPOSITE_CRC":
        return composite
    raise InvalidArgument(f"checksum mode {mode!r}: MD5MD5CRC or COMPOSITE_CRC", "mode")


class LocalChecksummer:
    """:func:`checksum_of_blocks` over a stream: ``update`` with the file's bytes in pieces of
    any size, cut into blocks of the given lengths; :meth:`result` at the end."""

    def __init__(
        self, block_lengths: Sequence[int], bytes_per_crc: int = CHUNK_SIZE, mode: str = "MD5MD5CRC"
    ) -> None:
        self._combine = by_mode(mode)
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
        length = self._lengths[self._index]
        self._digests.append(block_digest(bytes(self._crcs), self._bpc, length))
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
        return self._combine(self._digests)
