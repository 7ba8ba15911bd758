"""The block store: every replica of one chunk server, on one data directory.

Rules it keeps (the file layout and the commit point are in ``keelfs.chunk.layout``):

- At most one FINALIZED and one BEING_WRITTEN replica per block id; the being-written one, if
  both exist, has the newer generation stamp (a rewrite in progress; readers of the old stamp
  are served until the new one is finalized, which then replaces it).
- A write with a stamp older than a replica here is refused (``StaleGeneration``), the same
  stamp twice too (``AlreadyExists``). A newer stamp takes over a being-written replica at once
  (its stream is cut off: ``ReplicaWriter.retire``).
- A read names the stamp it wants; a replica with another stamp is never served.
- A corrupt replica (a checksum failed on read or scan) is never served; it stays, reported as
  corrupt, until a delete removes it (the master decides, having other replicas).
- Crash safety: see ``keelfs.chunk.layout``. :meth:`BlockStore.open` removes the leftovers of a
  crash before anything is reported.

Threads: every method may be called from any thread; those that touch the disk block, so
asyncio code calls them through ``asyncio.to_thread``. The index is guarded by one lock that is
never held across anything slower than a rename; a writer's lock is never taken while holding
it (writers call back into the store with theirs held: :meth:`_commit`).

Reporting (for the heartbeat, DESIGN 2.8): :meth:`block_report` (a full report),
:attr:`events` (incremental: ``keelfs.chunk.events``) and :meth:`usage`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from keelfs.chunk.events import EventKind, EventQueue, ReplicaEvent
from keelfs.chunk.layout import HEADER_SIZE, Layout, SidecarHeader, fsync_dir, parse_name
from keelfs.chunk.reader import DEFAULT_PIECE_SIZE, ReplicaReader, pread_all
from keelfs.chunk.writer import ReplicaWriter
from keelfs.datapath.checksums import CHUNK_SIZE, CRC_SIZE, MAX_CHUNK_SIZE, chunk_count, chunk_crcs
from keelfs.datapath.replica import (
    DeleteOutcome,
    DeleteResult,
    ReplicaInfo,
    ReplicaState,
    check_block_id,
    check_gen,
    check_shard_id,
)
from keelfs.errors import (
    AlreadyExists,
    CorruptReplica,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    StaleGeneration,
)
from keelfs.storage.private import PRIVATE_DIR_MODE

__all__ = ["BlockStore", "StoreUsage"]

log = logging.getLogger("keelfs.chunk.store")


@dataclass(frozen=True, slots=True)
class StoreUsage:
    capacity_bytes: int
    available_bytes: int
    used_bytes: int
    """Data and checksum files of every replica."""
    finalized: int
    being_written: int
    corrupt: int


@dataclass(slots=True)
class _Stored:
    """A finalized replica in the index."""

    info: ReplicaInfo
    data_path: Path
    meta_path: Path


def _disk_bytes(length: int, chunk_size: int) -> int:
    return length + HEADER_SIZE + chunk_count(length, chunk_size or CHUNK_SIZE) * CRC_SIZE


def check_chunk_size(chunk_size: int) -> int:
    if not (512 <= chunk_size <= MAX_CHUNK_SIZE and chunk_size % 512 == 0):
        raise InvalidArgument(
            f"chunk size {chunk_size} must be a multiple of 512 in 512..{MAX_CHUNK_SIZE}",
            "chunk_size",
        )
    return chunk_size


class BlockStore:
    """See the module docstring. Make one with :meth:`open`."""

    def __init__(
        self, layout: Layout, *, fsync: bool = True, events: EventQueue, reserved_bytes: int = 0
    ) -> None:
        if reserved_bytes < 0:
            raise ValueError("reserved_bytes must not be negative")
        self.layout = layout
        self.fsync = fsync
        """fsync replicas when they are finalized (off only for tests and benchmarks)."""
        self.reserved_bytes = reserved_bytes
        """Disk space kept free for everything else on the volume (logs, the OS, other
        tenants): no new replica starts once free space is down to it, and the capacity the
        masters are told leaves it out, so placement sends writes elsewhere first."""
        self.events = events
        self._lock = threading.Lock()
        self._finalized: dict[int, _Stored] = {}
        self._rbw: dict[int, ReplicaWriter] = {}
        self._finalized_bytes = 0

    @classmethod
    def open(
        cls,
        root: Path,
        *,
        fsync: bool = True,
        events: EventQueue | None = None,
        reserved_bytes: int = 0,
    ) -> BlockStore:
        """Open (creating if needed) the store in ``root``: remove crash leftovers, then index
        every finalized replica (reading each sidecar header)."""
        layout = Layout(Path(root))
        layout.create_dirs()
        store = cls(
            layout, fsync=fsync, events=events or EventQueue(), reserved_bytes=reserved_bytes
        )
        store._recover()
        return store

    # -- start-up -------------------------------------------------------------------------------
    def _recover(self) -> None:
        removed = 0
        for scratch in (self.layout.rbw, self.layout.tmp):
            for entry in scratch.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
                removed += 1
        for sub in sorted(self.layout.finalized.iterdir()):
            if sub.is_dir():
                removed += self._load_dir(sub)
        if removed:
            log.warning("removed %d leftover files of interrupted writes", removed)
        log.info(
            "%d finalized replicas (%d corrupt), %d bytes",
            len(self._finalized),
            sum(1 for s in self._finalized.values() if s.info.corrupt),
            self._finalized_bytes,
        )

    def _load_dir(self, directory: Path) -> int:
        kinds: dict[tuple[int, int], set[str]] = {}
        for entry in directory.iterdir():
            parsed = parse_name(entry.name)
            if parsed is None:
                log.warning("ignoring unexpected file %s", entry)
                continue
            block_id, gen, kind = parsed
            kinds.setdefault((block_id, gen), set()).add(kind)
        removed = 0
        newest: dict[int, int] = {}
        for (block_id, gen), found in kinds.items():
            if found == {"data", "meta"}:
                newest[block_id] = max(gen, newest.get(block_id, 0))
        for (block_id, gen), found in sorted(kinds.items()):
            data, meta = Layout.files(directory, block_id, gen)
            if found == {"data", "meta"} and newest[block_id] == gen:
                self._index_finalized(block_id, gen, data, meta)
                continue
            # an orphan sidecar (a finalize or delete interrupted), or an older stamp that a
            # newer finalized replica replaced before the crash
            for kind in ("data", "meta"):
                if kind in found:
                    (data if kind == "data" else meta).unlink()
                    removed += 1
        return removed

    def _index_finalized(self, block_id: int, gen: int, data: Path, meta: Path) -> None:
        reason = ""
        header: SidecarHeader | None = None
        try:
            with open(meta, "rb") as f:
                header = SidecarHeader.decode(f.read(HEADER_SIZE))
            data_size = data.stat().st_size
            meta_size = meta.stat().st_size
        except (OSError, ValueError) as exc:
            reason = f"unreadable sidecar: {exc}"
            data_size = meta_size = 0
        if header is not None:
            if (header.block_id, header.gen) != (block_id, gen) or not header.finalized:
                reason = "sidecar header does not match its file name"
            elif data_size != header.length:
                reason = f"data file has {data_size} bytes, sidecar says {header.length}"
            elif meta_size != _disk_bytes(header.length, header.chunk_size) - header.length:
                reason = "checksum file size does not match the length"
        if header is None:
            info = ReplicaInfo(block_id, gen, data_size, ReplicaState.FINALIZED, "", 0, True)
        else:
            info = ReplicaInfo(
                block_id,
                gen,
                header.length,
                ReplicaState.FINALIZED,
                header.shard_id,
                header.chunk_size,
                bool(reason),
            )
        if reason:
            log.error("replica %s is corrupt: %s", info.name, reason)
        self._finalized[block_id] = _Stored(info, data, meta)
        self._finalized_bytes += _disk_bytes(info.length, info.chunk_size)

    # -- writing --------------------------------------------------------------------------------
    def create(
        self,
        block_id: int,
        gen: int,
        shard_id: str,
        chunk_size: int = CHUNK_SIZE,
        offset: int = 0,
    ) -> ReplicaWriter:
        """A writer for replica ``blk_<block_id>_<gen>``: a new, empty one (``offset`` 0), or
        this server's replica of the block with an older stamp, cut at ``offset`` and re-stamped
        (pipeline recovery: ``offset`` a whole number of chunks, at most its length)."""
        check_block_id(block_id)
        check_gen(gen)
        check_shard_id(shard_id)
        check_chunk_size(chunk_size)
        if offset == 0:  # a new block; a recovery re-stamps what this server wrote already
            self._check_room(block_id)
        with self._lock:
            stored = self._finalized.get(block_id)
            old = self._rbw.get(block_id)
            for existing in (stored.info if stored else None, old):
                if existing is None:
                    continue
                if gen < existing.gen:
                    raise StaleGeneration(
                        block_id,
                        gen,
                        existing.gen,
                        message=f"block {block_id}: replica with newer stamp "
                        f"{existing.gen} exists (write stamped {gen})",
                    )
                if gen == existing.gen:
                    raise AlreadyExists(f"blk_{block_id}_{gen}", "replica")
            source: ReplicaInfo | None = None
            if offset:
                source = old.info() if old is not None else stored.info if stored else None
                self._check_resume(block_id, source, chunk_size, offset)
            data, meta = Layout.files(self.layout.rbw, block_id, gen)
            writer = ReplicaWriter(block_id, gen, shard_id, chunk_size, data, meta, self._commit)
            self._rbw[block_id] = writer
            moved: _Stored | None = None
            if source is not None and old is None and stored is not None:
                moved = self._finalized.pop(block_id)  # recovery from a finalized replica
                self._finalized_bytes -= _disk_bytes(moved.info.length, moved.info.chunk_size)
        try:
            if old is not None:
                old.retire()
            if source is None:
                if old is not None:
                    self._unlink(old.data_path, old.meta_path)
                writer.create_files()
            else:
                src_data, src_meta = (
                    (old.data_path, old.meta_path)
                    if old is not None
                    else (moved.data_path, moved.meta_path)  # type: ignore[union-attr]
                )
                os.rename(src_meta, meta)
                os.rename(src_data, data)
                writer.adopt_files(offset)
        except BaseException:
            writer.retire()
            with self._lock:
                if self._rbw.get(block_id) is writer:
                    del self._rbw[block_id]
            self._unlink(data, meta)
            raise
        if moved is not None:
            self._emit(EventKind.DELETED, moved.info, f"taken over by stamp {gen}")
        self._emit(EventKind.RECEIVING, writer.info())
        return writer

    @staticmethod
    def _check_resume(
        block_id: int, source: ReplicaInfo | None, chunk_size: int, offset: int
    ) -> None:
        if source is None:
            raise NotFound(
                f"blk_{block_id}",
                "replica",
                message=f"no replica of block {block_id} to continue from offset {offset}",
            )
        if source.corrupt:
            raise CorruptReplica(block_id, source.gen, 0, "marked corrupt: cannot continue it")
        if source.chunk_size != chunk_size:
            raise InvalidArgument(
                f"block {block_id}: chunk size {chunk_size} differs from the replica's "
                f"{source.chunk_size}",
                "chunk_size",
            )
        if offset % chunk_size or offset > source.length:
            raise InvalidArgument(
                f"block {block_id}: cannot continue at offset {offset} (replica has "
                f"{source.length} bytes; the offset must be a whole number of chunks)",
                "offset",
            )

    def _commit(self, writer: ReplicaWriter) -> ReplicaInfo:
        """Called by ``writer.finalize`` (its files synced and closed): move it into place."""
        block_id = writer.block_id
        directory = self.layout.finalized_dir(block_id)
        directory.mkdir(mode=PRIVATE_DIR_MODE, exist_ok=True)
        data, meta = Layout.files(directory, block_id, writer.gen)
        info = replace(writer.info(), state=ReplicaState.FINALIZED)
        with self._lock:
            if self._rbw.get(block_id) is not writer:
                raise StaleGeneration(
                    block_id,
                    writer.gen,
                    writer.gen,
                    message=f"replica {info.name} was taken over or deleted before finalizing",
                )
            os.rename(writer.meta_path, meta)
            os.rename(writer.data_path, data)  # the commit point
            del self._rbw[block_id]
            old = self._finalized.get(block_id)
            self._finalized[block_id] = _Stored(info, data, meta)
            self._finalized_bytes += _disk_bytes(info.length, info.chunk_size)
            if old is not None:
                self._finalized_bytes -= _disk_bytes(old.info.length, old.info.chunk_size)
        if self.fsync:
            fsync_dir(directory)
        if old is not None:
            self._unlink(old.data_path, old.meta_path)
            self._emit(EventKind.DELETED, old.info, f"replaced by stamp {writer.gen}")
        self._emit(EventKind.FINALIZED, info)
        return info

    def write_replica(
        self, block_id: int, gen: int, shard_id: str, data: bytes, chunk_size: int = CHUNK_SIZE
    ) -> ReplicaInfo:
        """Write and finalize a whole replica from memory (tests, tools)."""
        writer = self.create(block_id, gen, shard_id, chunk_size)
        try:
            writer.write(data, chunk_crcs(data, chunk_size))
            return writer.finalize(self.fsync)
        except BaseException:
            writer.abandon()
            raise

    # -- reading --------------------------------------------------------------------------------
    def block_crcs(self, block_id: int, gen: int, length: int) -> tuple[int, bytes]:
        """``(chunk size, packed CRC32Cs)`` of bytes ``[0, length)`` of ``blk_<id>_<gen>``, as a
        file checksum needs them (``keelfs.datapath.file_checksum``): the stored CRCs of the
        chunks, the data left unread, except when ``length`` ends inside a chunk the replica
        has more of (a replica longer than the file's block): that chunk is read, checked
        against its stored CRC, and the CRC of its first bytes taken. Refuses as
        :meth:`open_reader` does (a corrupt, missing or other-stamp replica; the sidecar's
        header and sizes checked), and ``length`` past the replica's end (``InvalidArgument``)."""
        with self.open_reader(block_id, gen) as reader:
            info = reader.info
            if length > info.length:
                raise InvalidArgument(
                    f"{info.name} has {info.length} bytes, fewer than the {length} asked",
                    "length",
                )
            cs = info.chunk_size
            stored = chunk_count(length, cs) if length == info.length else length // cs
            crcs = pread_all(reader.meta_fd, stored * CRC_SIZE, HEADER_SIZE)
            if len(crcs) != stored * CRC_SIZE:
                reason = "checksum file shorter than the replica"
                self.mark_corrupt(info, 0, reason)
                raise CorruptReplica(block_id, gen, 0, reason)
            if stored * cs < length:  # a cut inside a chunk: its first bytes, verified
                reader.position, reader.end = stored * cs, length
                piece = reader.read_piece()
                assert piece is not None
                crcs += chunk_crcs(piece[1], cs)
            return cs, crcs

    def open_reader(
        self,
        block_id: int,
        gen: int,
        offset: int = 0,
        length: int | None = None,
        piece_size: int = DEFAULT_PIECE_SIZE,
        *,
        framed: bool = False,
    ) -> ReplicaReader:
        """A verified reader of bytes ``[offset, offset + length)`` of ``blk_<id>_<gen>`` (cut
        at the replica's end; ``length`` None: to the end). Raises ``NotFound``,
        ``StaleGeneration`` (only another stamp is here), ``CorruptReplica``, or
        ``InvalidArgument`` (offset past the end). A being-written replica is readable up to
        the bytes written when the reader is opened."""
        with self._lock:
            stored = self._finalized.get(block_id)
            writer = self._rbw.get(block_id)
            if stored is not None and stored.info.gen == gen:
                info, data, meta = stored.info, stored.data_path, stored.meta_path
            elif writer is not None and writer.gen == gen:
                info, data, meta = writer.info(), writer.data_path, writer.meta_path
            else:
                other = writer.gen if writer else stored.info.gen if stored else 0
                if other:
                    raise StaleGeneration(block_id, gen, other)
                raise NotFound(f"blk_{block_id}", "replica")
            if info.corrupt:
                raise CorruptReplica(block_id, gen, 0, "marked corrupt")
            try:
                data_fd = os.open(data, os.O_RDONLY)
            except FileNotFoundError:
                raise NotFound(f"blk_{block_id}_{gen}", "replica") from None
            try:
                meta_fd = os.open(meta, os.O_RDONLY)
            except BaseException:
                os.close(data_fd)
                raise
        reader = ReplicaReader(
            info, data_fd, meta_fd, 0, 0, self.mark_corrupt, piece_size, framed=framed
        )
        try:
            if offset > info.length:
                raise InvalidArgument(
                    f"offset {offset} is past the end of {info.name} ({info.length} bytes)",
                    "offset",
                )
            if info.state is ReplicaState.FINALIZED:
                self._check_sizes(info, data_fd, meta_fd)
        except BaseException:
            reader.close()
            raise
        reader.position = offset
        reader.end = info.length if length is None else min(info.length, offset + length)
        return reader

    def _check_sizes(self, info: ReplicaInfo, data_fd: int, meta_fd: int) -> None:
        """A finalized replica's files must agree with its length (a truncated or extended
        file, or a rewritten header, is corruption the checksums alone could miss)."""
        data_size = os.fstat(data_fd).st_size
        meta_size = os.fstat(meta_fd).st_size
        reason = ""
        if data_size != info.length:
            reason = f"data file has {data_size} bytes, the replica {info.length}"
        elif meta_size != _disk_bytes(info.length, info.chunk_size) - info.length:
            reason = f"checksum file has {meta_size} bytes"
        else:
            try:
                header = SidecarHeader.decode(pread_all(meta_fd, HEADER_SIZE, 0))
                if (header.block_id, header.gen, header.length) != (
                    info.block_id,
                    info.gen,
                    info.length,
                ):
                    reason = "sidecar header does not match the replica"
            except ValueError as exc:
                reason = str(exc)
        if reason:
            self.mark_corrupt(info, 0, reason)
            raise CorruptReplica(info.block_id, info.gen, 0, reason)

    def mark_corrupt(self, info: ReplicaInfo, offset: int, reason: str) -> None:
        """Stop serving replica ``info`` (if it is still the one here) and report it."""
        with self._lock:
            stored = self._finalized.get(info.block_id)
            writer = self._rbw.get(info.block_id)
            marked: ReplicaInfo | None = None
            if stored is not None and stored.info.gen == info.gen and not stored.info.corrupt:
                stored.info = marked = replace(stored.info, corrupt=True)
            elif writer is not None and writer.gen == info.gen and not writer.corrupt:
                writer.corrupt = True
                marked = writer.info()
        if marked is not None:
            log.error("replica %s is corrupt at offset %d: %s", info.name, offset, reason)
            self._emit(EventKind.CORRUPT, marked, f"offset {offset}: {reason}")

    # -- deleting -------------------------------------------------------------------------------
    def delete(self, block_id: int, gen: int = 0) -> DeleteResult:
        """Remove the replicas of ``block_id`` whose stamp is at most ``gen`` (0: any stamp); a
        being-written one is cut off first. Newer replicas are kept."""
        with self._lock:
            stored = self._finalized.get(block_id)
            writer = self._rbw.get(block_id)
            doomed: list[tuple[ReplicaInfo, Path, Path]] = []
            kept = 0
            if stored is not None:
                if gen == 0 or stored.info.gen <= gen:
                    del self._finalized[block_id]
                    self._finalized_bytes -= _disk_bytes(stored.info.length, stored.info.chunk_size)
                    doomed.append((stored.info, stored.data_path, stored.meta_path))
                else:
                    kept = stored.info.gen
            if writer is not None:
                if gen == 0 or writer.gen <= gen:
                    del self._rbw[block_id]
                    doomed.append((writer.info(), writer.data_path, writer.meta_path))
                else:
                    kept = max(kept, writer.gen)
                    writer = None
        if writer is not None:
            writer.retire()
        for info, data, meta in doomed:
            self._unlink(data, meta)
            self._emit(EventKind.DELETED, info, "deleted by command")
        if doomed:
            return DeleteResult(block_id, DeleteOutcome.DELETED, max(i.gen for i, _, _ in doomed))
        if kept:
            return DeleteResult(block_id, DeleteOutcome.KEPT_NEWER, kept)
        return DeleteResult(block_id, DeleteOutcome.NOT_FOUND)

    def discard(self, writer: ReplicaWriter) -> None:
        """Remove the replica ``writer`` writes, if it is still the one here (a stream that broke
        before writing anything leaves nothing worth recovering)."""
        with self._lock:
            if self._rbw.get(writer.block_id) is not writer:
                return
            del self._rbw[writer.block_id]
        writer.retire()
        self._unlink(writer.data_path, writer.meta_path)
        self._emit(EventKind.DELETED, writer.info(), "write abandoned before any data")

    def expire_abandoned(self, idle_s: float) -> list[ReplicaInfo]:
        """Remove being-written replicas that no stream has used for ``idle_s`` seconds."""
        now = time.monotonic()
        with self._lock:
            stale = [w for w in self._rbw.values() if not w.active and now - w.touched >= idle_s]
            for w in stale:
                del self._rbw[w.block_id]
        for w in stale:
            w.retire()
            self._unlink(w.data_path, w.meta_path)
            self._emit(EventKind.DELETED, w.info(), f"abandoned for {idle_s:.0f} s")
        return [w.info() for w in stale]

    @staticmethod
    def _unlink(data: Path, meta: Path) -> None:
        for path in (data, meta):  # data first: a sidecar alone is a leftover open() removes
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    # -- reports --------------------------------------------------------------------------------
    def replicas(self, block_id: int) -> list[ReplicaInfo]:
        """This server's replicas of one block (finalized first)."""
        with self._lock:
            stored = self._finalized.get(block_id)
            writer = self._rbw.get(block_id)
            out = [stored.info] if stored is not None else []
            if writer is not None:
                out.append(writer.info())
        return out

    def block_report(self) -> list[ReplicaInfo]:
        """Every replica, finalized (corrupt ones flagged) and being written."""
        with self._lock:
            out = [s.info for s in self._finalized.values()]
            out.extend(w.info() for w in self._rbw.values())
        return out

    def finalized_replicas(self) -> list[ReplicaInfo]:
        with self._lock:
            return [s.info for s in self._finalized.values() if not s.info.corrupt]

    def _free_bytes(self) -> int:
        st = os.statvfs(self.layout.root)
        return st.f_bavail * st.f_frsize

    def _check_room(self, block_id: int) -> None:
        """``ResourceExhausted`` when the volume's free space is down to ``reserved_bytes``:
        the writer's pipeline recovery (or the client) goes to another server."""
        free = self._free_bytes()
        if free <= self.reserved_bytes:
            raise ResourceExhausted(
                "disk",
                self.reserved_bytes,
                message=f"no room for block {block_id} on {self.layout.root}: {free} bytes free, "
                f"{self.reserved_bytes} reserved",
            )

    def usage(self) -> StoreUsage:
        """Capacity and free space as the masters should see them: less the reservation."""
        st = os.statvfs(self.layout.root)
        with self._lock:
            used = self._finalized_bytes + sum(
                _disk_bytes(w.length, w.chunk_size) for w in self._rbw.values()
            )
            corrupt = sum(1 for s in self._finalized.values() if s.info.corrupt)
            counts = (len(self._finalized), len(self._rbw))
        return StoreUsage(
            capacity_bytes=max(0, st.f_blocks * st.f_frsize - self.reserved_bytes),
            available_bytes=max(0, st.f_bavail * st.f_frsize - self.reserved_bytes),
            used_bytes=used,
            finalized=counts[0],
            being_written=counts[1],
            corrupt=corrupt,
        )

    def close(self) -> None:
        """Close the files of every replica being written (they stay for a restart to remove)."""
        with self._lock:
            writers = list(self._rbw.values())
        for w in writers:
            w.abandon()

    def _emit(self, kind: EventKind, info: ReplicaInfo, reason: str = "") -> None:
        self.events.put(ReplicaEvent(kind, info, reason))
