"""Ranged, verified reads of one replica.

A :class:`ReplicaReader` (made by ``BlockStore.open_reader``, which opens the files) returns the
range in pieces of about ``piece_size`` bytes. Each piece is read from disk aligned to whole
chunks, every chunk it touches is checked against the stored CRC32C, and only then is the
requested part of it returned. A mismatch (or a file shorter than the replica's length) calls
``on_corrupt`` (the store marks the replica corrupt and reports it) and raises
``CorruptReplica``: a corrupt byte is never returned.

One CRC32C pass per piece: the piece's CRC is taken whole and compared with the combination of
its chunks' stored CRCs (``file_checksum.crc32c_of_packed``: table lookups, no pass over the
data); only when they differ is each chunk checked, to name the bad one. The whole CRC is then
the one a read reply carries (:attr:`ReplicaReader.piece_crc`), so the server no longer takes a
second pass for the wire. The check is as strong as one per chunk for an error inside one chunk
(the piece's error is that chunk's error times a power of ``x``, which the polynomial does not
divide); errors in several chunks could cancel out, with the 2^-32 chance of any CRC32C miss.

A reader made ``framed`` (ReadBlock's) reads each whole piece straight into its serialized
read reply (``keelfs.datapath.framing.new_read_response``; :attr:`ReplicaReader.piece_reply`)
instead of into ``bytes`` that the server would then join with the reply's few header bytes:
one copy of every piece fewer. The checks are the same; a piece cut inside a chunk (the ends of
an unaligned range) is returned as before, for the server to frame.

Blocking: use from a worker thread, one piece at a time. :meth:`ReplicaReader.close` waits for
a read in progress (so that a stream cancelled mid-read never has its descriptors closed, and
their numbers reused, under a running ``pread``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from types import TracebackType

from keelfs.chunk.layout import HEADER_SIZE
from keelfs.datapath.checksums import CRC_SIZE, chunk_count, crc32c, first_mismatch
from keelfs.datapath.file_checksum import crc32c_of_packed, crc32c_tail
from keelfs.datapath.framing import new_read_response, seal_read_response
from keelfs.datapath.replica import ReplicaInfo
from keelfs.errors import CorruptReplica

__all__ = ["DEFAULT_PIECE_SIZE", "ReplicaReader", "pread_all"]

DEFAULT_PIECE_SIZE = 1 << 20


def pread_all(fd: int, n: int, offset: int) -> bytes:
    """Up to ``n`` bytes at ``offset`` (fewer only at the end of the file)."""
    data = os.pread(fd, n, offset)
    if len(data) == n or not data:
        return data
    parts = [data]
    got = len(data)
    while got < n:
        more = os.pread(fd, n - got, offset + got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


class ReplicaReader:
    """Bytes ``[offset, end)`` of the replica ``info`` (see the module docstring)."""

    def __init__(
        self,
        info: ReplicaInfo,
        data_fd: int,
        meta_fd: int,
        offset: int,
        end: int,
        on_corrupt: Callable[[ReplicaInfo, int, str], None],
        piece_size: int = DEFAULT_PIECE_SIZE,
        *,
        framed: bool = False,
    ) -> None:
        self.info = info
        self.position = offset
        self.end = end
        self._data_fd = data_fd
        self._meta_fd = meta_fd
        self._on_corrupt = on_corrupt
        cs = info.chunk_size
        self._piece = max(cs, piece_size // cs * cs)
        self._lock = threading.Lock()
        self.piece_crc = 0
        """The CRC32C of the data :meth:`read_piece` returned last (verified with it)."""
        self._framed = framed
        self.piece_reply: bytes | None = None
        """With ``framed``: the serialized ``ReadResponse`` (CRC included) whose data is the
        piece :meth:`read_piece` returned last, when the piece was read straight into it (a
        whole piece; None for a piece cut inside a chunk, or where bytes cannot be filled in
        place: ``keelfs.datapath.framing.new_read_response``)."""

    def read_piece(self) -> tuple[int, bytes | memoryview] | None:
        """The next verified piece as ``(offset, data)``, or None when the range is done."""
        with self._lock:
            if self._data_fd < 0:
                raise ValueError("read from a closed replica reader")
            return self._read_piece()

    def _read_piece(self) -> tuple[int, bytes | memoryview] | None:
        pos, end = self.position, self.end
        self.piece_reply = None
        if pos >= end:
            return None
        cs = self.info.chunk_size
        start = pos - pos % cs
        stop = min(start + self._piece, -(-end // cs) * cs, self.info.length)
        if self._framed and pos == start and stop <= end:
            made = new_read_response(pos, stop - start)
            if made is not None:
                reply, view, at = made
                with view:
                    whole = self._read_into(reply, view, at, start)
                    seal_read_response(view, whole)
                self.position, self.piece_crc, self.piece_reply = stop, whole, reply
                return pos, memoryview(reply)[at:]
        data = pread_all(self._data_fd, stop - start, start)
        if len(data) != stop - start:
            self._corrupt(start + len(data), "data file shorter than the replica")
        whole = int(crc32c(data))
        self._verify(data, whole, start)
        stop_at = min(end, stop)
        self.position = stop_at
        if pos == start and stop_at == stop:
            self.piece_crc = whole
            return pos, data
        part = data[pos - start : stop_at - start]  # a range cut inside a chunk: its own CRC
        self.piece_crc = int(crc32c(part))
        return pos, part

    def _read_into(self, reply: bytes, view: memoryview, at: int, start: int) -> int:
        """Bytes of the data file from ``start`` into ``view[at:]`` (the tail of ``reply``, to
        its end), verified; their CRC32C (taken over ``reply`` in place)."""
        into, got = view[at:], 0
        with into:
            while got < len(into):
                n = os.preadv(self._data_fd, [into[got:]], start + got)
                if n == 0:
                    self._corrupt(start + got, "data file shorter than the replica")
                got += n
            whole = crc32c_tail(reply, at)
            self._verify(into, whole, start)
        return whole

    def _verify(self, data: bytes | memoryview, whole: int, start: int) -> None:
        """Check ``data``, read from ``start`` (a whole number of chunks, or up to the end of
        the replica), whose CRC32C is ``whole``, against the stored chunk CRCs."""
        cs = self.info.chunk_size
        first = start // cs
        n = chunk_count(len(data), cs)
        crcs = pread_all(self._meta_fd, n * CRC_SIZE, HEADER_SIZE + first * CRC_SIZE)
        if len(crcs) != n * CRC_SIZE:
            self._corrupt(start, "checksum file shorter than the replica")
        if whole != crc32c_of_packed(crcs, cs, len(data)):
            bad = first_mismatch(data, crcs, cs)  # which chunk (each one is the authority)
            if bad >= 0:
                self._corrupt(start + bad * cs, f"CRC32C mismatch in chunk {first + bad}")

    def _corrupt(self, offset: int, reason: str) -> None:
        self._on_corrupt(self.info, offset, reason)
        raise CorruptReplica(self.info.block_id, self.info.gen, offset, reason)

    @property
    def meta_fd(self) -> int:
        """The sidecar's descriptor (``BlockStore.block_crcs`` reads the stored CRCs from it)."""
        return self._meta_fd

    def close(self) -> None:
        with self._lock:
            for fd in (self._data_fd, self._meta_fd):
                if fd >= 0:
                    os.close(fd)
            self._data_fd = self._meta_fd = -1

    def __enter__(self) -> ReplicaReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
