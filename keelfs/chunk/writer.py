"""One replica being written (RBW): append checked packets, then finalize.

A :class:`ReplicaWriter` is made by ``BlockStore.create`` and used by one pipeline stream, from
worker threads (its methods block on disk I/O): ``write`` per packet, then ``finalize`` once, or
``abandon`` when the stream ends without the last packet. Its lock serializes those calls with
``retire``, which the store calls when a newer generation stamp or a delete takes the replica
over: after ``retire`` every method raises, so a superseded stream can neither append nor
finalize.

Appends go to the end of the ``.data`` file, and the packed CRCs to the matching place of the
``.meta`` file. A packet that ends inside a chunk must be the last one: the next append would
otherwise have to re-checksum that chunk (pipeline recovery cuts replicas at whole chunks for
the same reason).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from keelfs.chunk.layout import HEADER_SIZE, SidecarHeader
from keelfs.datapath.checksums import CRC_SIZE, first_mismatch
from keelfs.datapath.replica import ReplicaInfo, ReplicaState
from keelfs.errors import ChecksumMismatch, InvalidArgument, StaleGeneration, Unavailable
from keelfs.storage.private import PRIVATE_FILE_MODE

__all__ = ["ReplicaWriter", "check_packet", "pwrite_all"]


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def check_packet(
    block_id: int, offset: int, data: bytes | memoryview, crcs: bytes, chunk_size: int
) -> None:
    """Raise ``ChecksumMismatch`` unless ``crcs`` are the CRC32Cs of ``data``'s chunks
    (``InvalidArgument`` when there are not one per chunk)."""
    try:
        bad = first_mismatch(data, crcs, chunk_size)
    except ValueError as exc:
        raise InvalidArgument(f"block {block_id}: {exc}", "crcs") from None
    if bad >= 0:
        raise ChecksumMismatch(
            block_id, offset + bad * chunk_size, f"chunk {bad} of the packet at {offset}"
        )


class ReplicaWriter:
    """See the module docstring. ``length`` is the bytes written so far (readable by readers
    of the being-written replica: its checksums are on disk too)."""

    def __init__(
        self,
        block_id: int,
        gen: int,
        shard_id: str,
        chunk_size: int,
        data_path: Path,
        meta_path: Path,
        commit: Callable[[ReplicaWriter], ReplicaInfo],
    ) -> None:
        self.block_id = block_id
        self.gen = gen
        self.shard_id = shard_id
        self.chunk_size = chunk_size
        self.data_path = data_path
        self.meta_path = meta_path
        self.length = 0
        self.active = True
        """A stream is writing it (False once abandoned: kept for pipeline recovery)."""
        self.corrupt = False
        self.touched = time.monotonic()
        self._commit = commit
        self._lock = threading.Lock()
        self._data_fd = -1
        self._meta_fd = -1
        self._retired = False

    def info(self) -> ReplicaInfo:
        return ReplicaInfo(
            self.block_id,
            self.gen,
            self.length,
            ReplicaState.BEING_WRITTEN,
            self.shard_id,
            self.chunk_size,
            self.corrupt,
        )

    # -- set-up (by the store, before anyone else sees the files) ------------------------------
    def create_files(self) -> None:
        """Start an empty replica: a new ``.data`` and a ``.meta`` holding only the header."""
        create = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        self._data_fd = os.open(self.data_path, create, PRIVATE_FILE_MODE)
        self._meta_fd = os.open(self.meta_path, create, PRIVATE_FILE_MODE)
        pwrite_all(self._meta_fd, self._header(finalized=False), 0)

    def adopt_files(self, offset: int) -> None:
        """Continue the replica whose files were just moved to this writer's paths (pipeline
        recovery): cut it at ``offset`` (a whole number of chunks) and stamp the new header."""
        self._data_fd = os.open(self.data_path, os.O_WRONLY)
        self._meta_fd = os.open(self.meta_path, os.O_WRONLY)
        os.ftruncate(self._data_fd, offset)
        os.ftruncate(self._meta_fd, HEADER_SIZE + offset // self.chunk_size * CRC_SIZE)
        pwrite_all(self._meta_fd, self._header(finalized=False), 0)
        self.length = offset

    def _header(self, finalized: bool) -> bytes:
        return SidecarHeader(
            self.block_id, self.gen, self.chunk_size, self.shard_id, self.length, finalized
        ).encode()

    # -- the stream's calls ---------------------------------------------------------------------
    def write(
        self,
        data: bytes | memoryview,
        crcs: bytes,
        *,
        sync: bool = False,
        verified: bool = False,
    ) -> int:
        """Check ``data`` against ``crcs`` (packed, one per chunk; skipped when the caller has
        ``verified`` them) and append it; fsync both files when ``sync``. Returns the new
        length. Raises ``ChecksumMismatch`` (nothing written)."""
        with self._lock:
            self._check_usable()
            cs = self.chunk_size
            if self.length % cs:
                raise InvalidArgument(
                    f"block {self.block_id}: data after a packet that ended inside a chunk "
                    "(only the last packet may)",
                    "packet",
                )
            if not verified:
                check_packet(self.block_id, self.length, data, crcs, cs)
            try:
                pwrite_all(self._data_fd, data, self.length)
                pwrite_all(self._meta_fd, crcs, HEADER_SIZE + self.length // cs * CRC_SIZE)
                if sync:
                    os.fsync(self._data_fd)
                    os.fsync(self._meta_fd)
            except OSError as exc:
                raise Unavailable(f"disk write failed: {exc}") from exc
            self.length += len(data)
            self.touched = time.monotonic()
            return self.length

    def finalize(self, fsync: bool = True) -> ReplicaInfo:
        """Seal the header with the length, fsync (if ``fsync``), close, and let the store move
        the replica into ``finalized/`` (the commit point)."""
        with self._lock:
            self._check_usable()
            try:
                pwrite_all(self._meta_fd, self._header(finalized=True), 0)
                if fsync:
                    os.fsync(self._data_fd)
                    os.fsync(self._meta_fd)
            except OSError as exc:
                raise Unavailable(f"disk write failed: {exc}") from exc
            self._close_fds()
            self.active = False
            self._retired = True
            return self._commit(self)

    def abandon(self) -> None:
        """The stream ended without finalizing: close the files, keep the replica for recovery."""
        with self._lock:
            self._close_fds()
            self.active = False
            self.touched = time.monotonic()

    # -- the store's calls ----------------------------------------------------------------------
    def retire(self) -> None:
        """Another writer or a delete took the replica over: wait for a call in progress, close,
        and refuse every later call."""
        with self._lock:
            self._retired = True
            self.active = False
            self._close_fds()

    def _check_usable(self) -> None:
        if self._retired:
            raise StaleGeneration(
                self.block_id,
                self.gen,
                self.gen,
                message=f"replica blk_{self.block_id}_{self.gen} was taken over or deleted",
            )
        if self._data_fd < 0:
            raise InvalidArgument(
                f"replica blk_{self.block_id}_{self.gen} is not open for writing", "block_id"
            )

    def _close_fds(self) -> None:
        for fd in (self._data_fd, self._meta_fd):
            if fd >= 0:
                os.close(fd)
        self._data_fd = self._meta_fd = -1
