"""Durable Raft log storage: one RocksDB per process, shared by every Raft group it hosts.

``RocksEngine(path)`` owns the database (``path/db``) and the snapshot files
(``path/snapshots/g-<group>/``, see ``RocksEngine.snapshot_dir``); ``engine.group(group_id)``
hands out a ``RocksLogStorage``, which offers exactly the read protocol
(``keelfs.raft.storage.LogStorage``) and write side of ``MemoryStorage``: same names, same
index conventions, same errors.

Why one database for many groups: a process hosts many small Raft groups (one per metadata
shard). With a database, and so a write-ahead log, per group, every group would pay its own
``fsync`` for every ``Ready``; with one shared WAL the runtime can collect what all its groups
must persist in one loop iteration and make it durable with a single synced write
(``engine.write_batch()``). An ``fsync`` costs the same whether it covers one group's 100 bytes
or ten groups' 10 kB, so group commit is what lets the number of groups grow without the
durable write rate falling with it. RocksDB's write batch is atomic, so a batch spanning groups
is all there after a crash or not at all.

Key layout (all keys raw bytes; indices are big-endian fixed width so byte order is log order)::

    R <group id>                               registry: the group exists (empty value)
    G <u16 len> <group id> d                   (index, term) of the log's dummy entry
    G <u16 len> <group id> h                   hard state (term, vote, commit)
    G <u16 len> <group id> m                   node id -> address map (``set_membership``)
    G <u16 len> <group id> s                   the current snapshot's meta (index, term, conf)
    G <u16 len> <group id> e <u64 index>       log entry: u64 term, u8 type, payload

The length prefix makes one group's keys never a prefix of another's ("a" vs "ab").

Invariants on disk, each kept by writing the keys involved in one atomic batch: entry keys
exist exactly for ``dummy.index + 1 .. last``; the snapshot named by ``s`` has its image in the
snapshot directory (the file is written and synced *before* ``s`` points at it); the dummy
index is at most the snapshot index.

In memory each group caches its first and last index, dummy, hard state, snapshot meta,
membership and the terms of the hot tail of the log (as runs, since terms change rarely), so
``term()``/``last_index()``/``first_index()`` do not touch RocksDB; ``entries()`` reads it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import struct
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from rocksdict import BlockBasedOptions, Cache, Options, Rdict, WriteBatch, WriteOptions

from keelfs.raft.errors import CompactedError, SnapshotOutOfDateError, UnavailableError
from keelfs.raft.messages import ConfState, Entry, EntryType, HardState, SnapshotMeta
from keelfs.raft.storage import bootstrap_meta
from keelfs.storage.errors import SnapshotCorruptedError, StorageCorruptedError
from keelfs.storage.private import private_dir
from keelfs.storage.snapshots import DEFAULT_CHUNK, SnapshotSource, SnapshotStore

__all__ = ["LogBatch", "RocksEngine", "RocksLogStorage"]

_U16 = struct.Struct(">H")
_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")
_ENTRY = struct.Struct(">QB")  # term, type; the index is in the key
_HARD_STATE = struct.Struct(">QQQ")  # term, vote, commit
_DUMMY = struct.Struct(">QQ")  # index, term
_SNAP = struct.Struct(">QQII")  # index, term, #voters, #learners, then the ids
_MEMBER = struct.Struct(">QH")  # node id, address length, then the address

_REGISTRY = b"R"
_GROUP = b"G"
_K_DUMMY = b"d"
_K_HARD = b"h"
_K_MEMBERS = b"m"
_K_SNAP = b"s"
_K_ENTRY = b"e"

TERM_TAIL_ON_OPEN = 1024
"""How many of the newest entries' terms are loaded into the cache when a group is opened."""
_POINT_DELETE_MAX = 64
"""Suffixes up to this many entries are deleted key by key; longer ranges with a range delete."""


# -- encoding ----------------------------------------------------------------------------------
def encode_entry(e: Entry) -> bytes:
    return _ENTRY.pack(e.term, int(e.type)) + e.data


def decode_entry(index: int, raw: bytes) -> Entry:
    term, kind = _ENTRY.unpack_from(raw)
    return Entry(term, index, bytes(raw[_ENTRY.size :]), EntryType(kind))


def encode_snapshot_meta(m: SnapshotMeta) -> bytes:
    voters, learners = sorted(m.conf.voters), sorted(m.conf.learners)
    ids = voters + learners
    return _SNAP.pack(m.index, m.term, len(voters), len(learners)) + struct.pack(
        f">{len(ids)}Q", *ids
    )


def decode_snapshot_meta(raw: bytes) -> SnapshotMeta:
    index, term, nv, nl = _SNAP.unpack_from(raw)
    ids = struct.unpack_from(f">{nv + nl}Q", raw, _SNAP.size)
    return SnapshotMeta(index, term, ConfState(frozenset(ids[:nv]), frozenset(ids[nv:])))


def encode_membership(addresses: Mapping[int, str]) -> bytes:
    out = [_U32.pack(len(addresses))]
    for node_id in sorted(addresses):
        addr = addresses[node_id].encode()
        out.append(_MEMBER.pack(node_id, len(addr)) + addr)
    return b"".join(out)


def decode_membership(raw: bytes) -> dict[int, str]:
    (n,) = _U32.unpack_from(raw)
    pos = _U32.size
    result: dict[int, str] = {}
    for _ in range(n):
        node_id, length = _MEMBER.unpack_from(raw, pos)
        pos += _MEMBER.size
        result[node_id] = raw[pos : pos + length].decode()
        pos += length
    return result


def _group_prefix(group_id: str) -> bytes:
    raw = group_id.encode()
    if not raw:
        raise ValueError("group id must not be empty")
    return _GROUP + _U16.pack(len(raw)) + raw


# -- term cache --------------------------------------------------------------------------------
class _TermRuns:
    """Terms of the contiguous indices ``lo .. hi`` as runs: ``terms[k]`` from ``starts[k]``.

    Terms change only at elections, so a long tail of the log costs a handful of list items.
    ``hi`` always equals the log's last index; ``lo > hi`` means nothing is cached.
    """

    __slots__ = ("hi", "lo", "starts", "terms")

    def __init__(self, lo: int) -> None:
        self.lo = lo
        self.hi = lo - 1
        self.starts: list[int] = []
        self.terms: list[int] = []

    def get(self, index: int) -> int | None:
        if index < self.lo or index > self.hi:
            return None
        return self.terms[bisect_right(self.starts, index) - 1]

    def reset(self, lo: int) -> None:
        self.lo = lo
        self.hi = lo - 1
        self.starts = []
        self.terms = []

    def splice(self, lo: int, entries: Sequence[Entry]) -> None:
        """Drop indices ``>= lo`` and append ``entries`` (which start at ``lo <= hi + 1``)."""
        if lo <= self.lo:
            self.reset(lo)
        else:
            k = bisect_left(self.starts, lo)
            del self.starts[k:], self.terms[k:]
            self.hi = lo - 1
        for e in entries:
            if not self.terms or self.terms[-1] != e.term:
                self.starts.append(e.index)
                self.terms.append(e.term)
        self.hi = lo + len(entries) - 1

    def trim_front(self, lo: int) -> None:
        """Forget indices below ``lo``."""
        if lo <= self.lo:
            return
        if lo > self.hi:
            hi = self.hi
            self.reset(lo)
            self.hi = max(hi, lo - 1)
            return
        k = bisect_right(self.starts, lo) - 1
        del self.starts[:k], self.terms[:k]
        self.starts[0] = lo
        self.lo = lo


# -- group commit ------------------------------------------------------------------------------
class _Staged:
    __slots__ = ("entries", "hard_state", "lo", "membership", "store", "version")

    def __init__(self, store: RocksLogStorage) -> None:
        self.store = store
        self.version = store._version
        self.lo: int | None = None
        self.entries: list[Entry] = []
        self.hard_state: HardState | None = None
        self.membership: dict[int, str] | None = None

    def last_index(self) -> int:
        return self.store._last if self.lo is None else self.lo + len(self.entries) - 1


class LogBatch:
    """Writes for any number of groups, made durable together by ONE synced RocksDB write.

    Stage with ``append``/``set_hard_state``/``set_membership`` (same validation and
    semantics as the per-group methods; several calls for one group compose as if applied in
    order), then ``commit()``; or use it as a context manager, which commits on normal exit and
    discards on an exception. The groups' in-memory caches change only after the write has
    returned, so a failed write leaves every group exactly as it was.

    Why one synced write: the cost of a durable write is dominated by the ``fsync`` of the WAL,
    not by its size; staging the hard states and entries of every group that has a ``Ready`` and
    syncing once amortises that cost over all of them (and the batch is atomic across groups).

    A group must not be written through other paths between its first staging in a batch and
    the commit; that is detected and the commit refused (``RuntimeError``).
    """

    def __init__(self, engine: RocksEngine) -> None:
        self._engine = engine
        self._staged: dict[str, _Staged] = {}
        self._done = False

    def _stage(self, group: RocksLogStorage | str) -> _Staged:
        if self._done:
            raise RuntimeError("batch already committed or discarded")
        store = self._engine.group(group) if isinstance(group, str) else group
        if store._engine is not self._engine:
            raise ValueError(f"group {store.group_id!r} belongs to another engine")
        st = self._staged.get(store.group_id)
        if st is None:
            st = self._staged[store.group_id] = _Staged(store)
        return st

    def append(self, group: RocksLogStorage | str, entries: Sequence[Entry]) -> None:
        """Stage ``MemoryStorage.append`` semantics: cut any conflicting suffix, then append."""
        st = self._stage(group)
        if not entries:
            return
        ents = list(entries)
        for a, b in zip(ents, ents[1:], strict=False):
            if b.index != a.index + 1:
                raise ValueError(f"entries not contiguous: {a.index} then {b.index}")
        first = st.store.first_index()
        if ents[-1].index < first:
            return  # wholly covered by the snapshot
        if ents[0].index < first:
            ents = ents[first - ents[0].index :]
        lo = ents[0].index
        last = st.last_index()
        if lo > last + 1:
            raise ValueError(f"gap in log: append at {lo} after {last}")
        if st.lo is None or lo <= st.lo:
            st.lo, st.entries = lo, ents
        else:
            del st.entries[lo - st.lo :]
            st.entries.extend(ents)

    def set_hard_state(self, group: RocksLogStorage | str, hs: HardState) -> None:
        self._stage(group).hard_state = hs

    def set_membership(self, group: RocksLogStorage | str, addresses: Mapping[int, str]) -> None:
        self._stage(group).membership = dict(addresses)

    def groups(self) -> list[str]:
        return list(self._staged)

    def __len__(self) -> int:
        return len(self._staged)

    def discard(self) -> None:
        self._staged.clear()
        self._done = True

    def commit(self, sync: bool = True) -> None:
        """Make everything staged durable with one synced write, then update the caches."""
        wb = self.prepare()
        if wb is not None:
            self.write(wb, sync)
        self.finish()

    # The three steps of ``commit``, for a runtime that syncs off its event loop: ``prepare``
    # and ``finish`` must run on the thread that owns the groups; ``write`` may run on another
    # (the engine lock serialises it with every other write). Until ``finish``, the groups'
    # caches still describe the old state, which stays readable: a batch only adds entries
    # beyond the cached last index or replaces ones the Raft core no longer reads from storage.
    def prepare(self) -> WriteBatch | None:
        """Validate and encode what is staged; None when there is nothing to write."""
        if self._done:
            raise RuntimeError("batch already committed or discarded")
        self._done = True
        staged = list(self._staged.values())
        wb = WriteBatch(raw_mode=True)
        for st in staged:
            s = st.store
            if s._version != st.version:
                raise RuntimeError(f"group {s.group_id!r} was written after being staged")
            if st.lo is not None:
                for e in st.entries:
                    wb.put(s._ekey(e.index), encode_entry(e))
                new_last = st.last_index()
                if new_last < s._last:
                    s._delete_entries(wb, new_last + 1, s._last + 1)
            if st.hard_state is not None:
                hs = st.hard_state
                wb.put(s._key(_K_HARD), _HARD_STATE.pack(hs.term, hs.vote, hs.commit))
            if st.membership is not None:
                wb.put(s._key(_K_MEMBERS), encode_membership(st.membership))
        return wb if len(wb) else None

    def write(self, wb: WriteBatch, sync: bool = True) -> None:
        """The durable write itself (thread-safe). ``sync=False`` only for writes whose loss
        is harmless, such as a hard state that moved nothing but the commit index."""
        with self._engine._lock:
            self._engine._write(wb, sync)

    def finish(self) -> None:
        """Update the groups' caches once ``write`` has returned."""
        for st in self._staged.values():
            if st.store._version != st.version:
                raise RuntimeError(f"group {st.store.group_id!r} was written during the batch")
            st.store._apply(st)

    def __enter__(self) -> LogBatch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            if not self._done:
                self.commit()
        else:
            self.discard()


# -- one group ---------------------------------------------------------------------------------
class RocksLogStorage:
    """One Raft group's log, hard state, membership and snapshots. Get it from ``RocksEngine``.

    Implements ``LogStorage`` and the write side of ``MemoryStorage`` with the same semantics;
    every write method is one synced RocksDB write (snapshot images are files, written and
    synced before RocksDB refers to them). Reads of a group must not race with writes of the
    same group (as with ``MemoryStorage``); writes from several threads are serialised by the
    engine.
    """

    def __init__(
        self,
        engine: RocksEngine,
        group_id: str,
        conf: ConfState | None,
        addresses: Mapping[int, str] | None = None,
    ) -> None:
        self._engine = engine
        self._db = engine._db
        self.group_id = group_id
        self._prefix = _group_prefix(group_id)
        self._eprefix = self._prefix + _K_ENTRY
        self._version = 0
        self._closed = False
        self.snapshots = SnapshotStore(engine.snapshot_dir(group_id), verify=engine.verify)
        if self._db.get(_REGISTRY + group_id.encode()) is None:
            self._create(conf, addresses)
        self._load()
        self._check_snapshot()

    def _create(self, conf: ConfState | None, addresses: Mapping[int, str] | None) -> None:
        """Register a new group; with ``conf``, bootstrapped exactly as ``MemoryStorage(conf)``:
        from the (empty) snapshot ``bootstrap_meta(conf)``, with its term and index committed.
        The empty image file is written before RocksDB names it, as for any snapshot. The
        registry key, the bootstrap state and ``addresses`` go in one write, so a crash never
        leaves a group that exists but lacks its peers' addresses."""
        wb = WriteBatch(raw_mode=True)
        wb.put(_REGISTRY + self.group_id.encode(), b"")
        if addresses is not None:
            wb.put(self._key(_K_MEMBERS), encode_membership(addresses))
        if conf is not None:
            meta = bootstrap_meta(conf)
            self.snapshots.create(meta, b"")
            wb.put(self._key(_K_SNAP), encode_snapshot_meta(meta))
            wb.put(self._key(_K_DUMMY), _DUMMY.pack(meta.index, meta.term))
            wb.put(self._key(_K_HARD), _HARD_STATE.pack(meta.term, 0, meta.index))
        self._engine._write(wb)

    # -- opening ---------------------------------------------------------------------------
    def _key(self, kind: bytes) -> bytes:
        return self._prefix + kind

    def _ekey(self, index: int) -> bytes:
        return self._eprefix + _U64.pack(index)

    def _get(self, kind: bytes) -> bytes | None:
        raw = self._db.get(self._key(kind))
        return None if raw is None else bytes(raw)

    def _load(self) -> None:
        raw = self._get(_K_DUMMY)
        index, term = (0, 0) if raw is None else _DUMMY.unpack(raw)
        self._dummy_index: int = index
        self._dummy_term: int = term
        raw = self._get(_K_HARD)
        self._hard_state = HardState() if raw is None else HardState(*_HARD_STATE.unpack(raw))
        raw = self._get(_K_SNAP)
        self._snapshot = SnapshotMeta() if raw is None else decode_snapshot_meta(raw)
        raw = self._get(_K_MEMBERS)
        self._membership = {} if raw is None else decode_membership(raw)
        # find the stored entry range from both ends and check it fits the dummy
        it = self._db.iter()
        it.seek(self._eprefix)
        lowest = self._index_of(it.key()) if it.valid() else None
        it.seek_for_prev(self._eprefix + b"\xff" * _U64.size)
        highest = self._index_of(it.key()) if it.valid() else None
        if (lowest is None) != (highest is None):
            raise StorageCorruptedError(f"group {self.group_id!r}: inconsistent entry range")
        if lowest is not None and highest is not None:
            if lowest != self._dummy_index + 1:
                raise StorageCorruptedError(
                    f"group {self.group_id!r}: first stored entry {lowest}, "
                    f"expected {self._dummy_index + 1}"
                )
            self._last: int = highest
        else:
            self._last = self._dummy_index
        # the hot tail of terms, newest first
        lo = max(self._dummy_index + 1, self._last - TERM_TAIL_ON_OPEN + 1)
        tail: list[Entry] = []
        if self._last >= lo:
            it.seek_for_prev(self._ekey(self._last))
            for index in range(self._last, lo - 1, -1):
                if not it.valid() or it.key() != self._ekey(index):
                    raise StorageCorruptedError(f"group {self.group_id!r}: entry {index} missing")
                tail.append(Entry(_U64.unpack_from(it.value())[0], index))
                it.prev()
        del it
        tail.reverse()
        self._terms = _TermRuns(lo)
        self._terms.splice(lo, tail)
        for a, b in zip(
            [self._dummy_term, *(e.term for e in tail)], (e.term for e in tail), strict=False
        ):
            if b < a:
                raise StorageCorruptedError(f"group {self.group_id!r}: log terms decrease")

    def _index_of(self, key: bytes) -> int | None:
        if len(key) != len(self._eprefix) + _U64.size or not key.startswith(self._eprefix):
            return None
        return int(_U64.unpack_from(key, len(self._eprefix))[0])

    def _check_snapshot(self) -> None:
        """RocksDB names the current snapshot; its file must be there and intact."""
        snap = self._snapshot
        if snap.index > 0 and self.snapshots.get(snap) is None:
            name = self.snapshots.image_path(snap).name
            why = [r for n, r in self.snapshots.discarded if n in (name, name + ".meta")]
            detail = why[0] if why else "file missing"
            raise SnapshotCorruptedError(
                f"group {self.group_id!r}: the log depends on snapshot {snap.describe()} "
                f"({self.snapshots.directory / name}) but it is unusable: {detail}"
            )
        # anything else is an older snapshot not yet deleted or an orphan of a crash between
        # writing a snapshot file and recording it in RocksDB
        self.snapshots.delete_all_except(snap if snap.index > 0 else None)

    # -- read side (LogStorage) ------------------------------------------------------------
    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard_state, self._snapshot.conf

    def first_index(self) -> int:
        return self._dummy_index + 1

    def last_index(self) -> int:
        return self._last

    def term(self, index: int) -> int:
        if index < self._dummy_index:
            raise CompactedError(index)
        if index > self._last:
            raise UnavailableError(index)
        if index == self._dummy_index:
            return self._dummy_term
        term = self._terms.get(index)
        if term is not None:
            return term
        raw = self._db.get(self._ekey(index))
        if raw is None:
            raise StorageCorruptedError(f"group {self.group_id!r}: entry {index} missing")
        return int(_U64.unpack_from(raw)[0])

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        if lo <= self._dummy_index:
            raise CompactedError(lo)
        if hi > self._last + 1:
            raise UnavailableError(hi)
        out: list[Entry] = []
        if lo >= hi:
            return out
        it = self._db.iter()
        it.seek(self._ekey(lo))
        total = 0
        for index in range(lo, hi):
            if not it.valid() or it.key() != self._ekey(index):
                raise StorageCorruptedError(f"group {self.group_id!r}: entry {index} missing")
            e = decode_entry(index, it.value())
            total += e.size()
            if out and total > max_bytes:
                break
            out.append(e)
            it.next()
        return out

    def snapshot_meta(self) -> SnapshotMeta:
        return self._snapshot

    def snapshot_chunk(self, meta: SnapshotMeta, offset: int, max_bytes: int) -> tuple[bytes, bool]:
        if meta != self._snapshot:
            raise SnapshotOutOfDateError(meta.index)
        if meta.index == 0:
            return b"", True
        return self.snapshots.read_chunk(meta, offset, max_bytes)

    # -- extra reads -----------------------------------------------------------------------
    @property
    def hard_state(self) -> HardState:
        return self._hard_state

    def membership(self) -> dict[int, str]:
        """The node id -> address map last given to ``set_membership`` (empty if never)."""
        return dict(self._membership)

    def snapshot_path(self) -> Path | None:
        """The current snapshot's image file (None while there is no snapshot)."""
        info = self.snapshots.get(self._snapshot) if self._snapshot.index > 0 else None
        return None if info is None else info.path

    def open_snapshot_chunks(
        self, meta: SnapshotMeta, offset: int = 0, max_bytes: int = DEFAULT_CHUNK
    ) -> Iterator[bytes]:
        """Stream the current snapshot's image from disk without loading it whole."""
        if meta != self._snapshot:
            raise SnapshotOutOfDateError(meta.index)
        if meta.index == 0:
            return iter(())
        return self.snapshots.open_chunks(meta, offset, max_bytes)

    # -- write side (as MemoryStorage) -----------------------------------------------------
    def snapshot_data(self) -> bytes:
        if self._snapshot.index == 0:
            return b""
        return self.snapshots.read_all(self._snapshot)

    def set_hard_state(self, hs: HardState) -> None:
        with self._engine.write_batch() as b:
            b.set_hard_state(self, hs)

    def append(self, entries: list[Entry] | tuple[Entry, ...]) -> None:
        """Append ``entries``, first cutting off any stored suffix from their first index on."""
        with self._engine.write_batch() as b:
            b.append(self, entries)

    def set_membership(self, addresses: Mapping[int, str]) -> None:
        """Persist node id -> address, so a restarted node can reach its peers unaided."""
        with self._engine.write_batch() as b:
            b.set_membership(self, addresses)

    def create_snapshot(self, index: int, conf: ConfState, data: bytes) -> SnapshotMeta:
        """Record a snapshot of the state machine as of ``index`` (already applied)."""
        return self.create_snapshot_from_chunks(index, conf, data)

    def create_snapshot_from_chunks(
        self, index: int, conf: ConfState, chunks: SnapshotSource
    ) -> SnapshotMeta:
        """``create_snapshot`` for images too big for memory.

        ``chunks`` is an iterable of byte chunks, bytes, or a callable writing into a sink. The
        image file is written and synced first, then RocksDB is pointed at it (one synced
        write), then older snapshot files are deleted: a crash at any point leaves RocksDB
        naming a complete snapshot, and an unreferenced file that the next open removes.
        The same in three steps, for a caller that writes the image in another thread:
        :meth:`plan_snapshot`, ``snapshots.create(meta, chunks)``, :meth:`adopt_snapshot`.
        """
        meta, version = self.plan_snapshot(index, conf)
        self.snapshots.create(meta, chunks)
        return self.adopt_snapshot(meta, version)

    def plan_snapshot(self, index: int, conf: ConfState) -> tuple[SnapshotMeta, int]:
        """The metadata of a snapshot at ``index`` and the storage version it was planned at
        (raises if ``index`` is not newer than the snapshot, or not in the log)."""
        with self._engine._lock:
            if index <= self._snapshot.index:
                raise SnapshotOutOfDateError(index)
            if index > self._last:
                raise UnavailableError(index)
            return SnapshotMeta(index, self.term(index), conf), self._version

    def adopt_snapshot(self, meta: SnapshotMeta, version: int) -> SnapshotMeta:
        """Point RocksDB at the written image of ``meta`` (planned at ``version``) and delete
        older images. Must not run while a ``LogBatch`` of this engine is in flight (the
        runtime calls it between rounds); raises ``SnapshotOutOfDateError`` (and deletes the
        image) when the log moved past it meanwhile."""
        with self._engine._lock:
            if self._version != version and not self._still_fits(meta):
                self.snapshots.delete(meta)
                raise SnapshotOutOfDateError(meta.index)
            wb = WriteBatch(raw_mode=True)
            wb.put(self._key(_K_SNAP), encode_snapshot_meta(meta))
            self._engine._write(wb)
            self._snapshot = meta
            self._version += 1
        self.snapshots.delete_all_except(meta)
        return meta

    def _still_fits(self, meta: SnapshotMeta) -> bool:
        """After a concurrent write: is ``meta`` still newer than the snapshot and in the log?"""
        if meta.index <= self._snapshot.index:
            return False
        try:
            return self.term(meta.index) == meta.term
        except (CompactedError, UnavailableError):
            return False

    def compact(self, index: int) -> None:
        """Drop entries up to ``index``, which a snapshot must already cover."""
        with self._engine._lock:
            if index <= self._dummy_index:
                return
            if index > self._snapshot.index:
                raise ValueError(f"compact({index}) beyond snapshot {self._snapshot.index}")
            term = self.term(index)
            wb = WriteBatch(raw_mode=True)
            self._delete_entries(wb, self._dummy_index + 1, index + 1)
            wb.put(self._key(_K_DUMMY), _DUMMY.pack(index, term))
            self._engine._write(wb)
            self._dummy_index, self._dummy_term = index, term
            self._terms.trim_front(index + 1)
            self._version += 1

    def write_snapshot_chunk(self, meta: SnapshotMeta, offset: int, data: bytes) -> None:
        """Stage a received chunk on disk; ``offset == 0`` starts a new staging area."""
        receiving = self.snapshots.receiving()
        if offset == 0 or receiving is None or receiving[0] != meta:
            self.snapshots.begin_receive(meta)
        self.snapshots.write_chunk(meta, offset, data)

    def install_snapshot(self, meta: SnapshotMeta) -> bytes:
        """Make the staged snapshot current, discarding the log it covers; return its image."""
        return self.install_snapshot_path(meta).read_bytes()

    def install_snapshot_path(self, meta: SnapshotMeta) -> Path:
        """``install_snapshot`` returning the image's path instead of its bytes.

        The staged file is synced and renamed into place first; then one synced RocksDB write
        replaces the snapshot meta and the dummy entry and deletes the covered log (all of it
        if the entry at ``meta.index`` is missing or has another term, as in MemoryStorage).
        """
        if meta.index <= 0:
            raise ValueError("a snapshot to install must have a positive index")
        path = self.snapshots.finish_receive(meta)  # fsync outside the engine lock
        with self._engine._lock:
            keep = False
            with contextlib.suppress(CompactedError, UnavailableError):
                keep = self.term(meta.index) == meta.term
            wb = WriteBatch(raw_mode=True)
            if keep:
                self._delete_entries(wb, self._dummy_index + 1, meta.index + 1)
                last = self._last
            else:
                self._delete_entries(wb, self._dummy_index + 1, self._last + 1)
                last = meta.index
            wb.put(self._key(_K_DUMMY), _DUMMY.pack(meta.index, meta.term))
            wb.put(self._key(_K_SNAP), encode_snapshot_meta(meta))
            self._engine._write(wb)
            self._dummy_index, self._dummy_term = meta.index, meta.term
            self._last = last
            if keep:
                self._terms.trim_front(meta.index + 1)
            else:
                self._terms.reset(meta.index + 1)
            self._snapshot = meta
            self._version += 1
        self.snapshots.delete_all_except(meta)
        return path

    # -- internals -------------------------------------------------------------------------
    def _delete_entries(self, wb: WriteBatch, lo: int, hi: int) -> None:
        """Stage deletion of entries ``[lo, hi)``."""
        if hi - lo <= 0:
            return
        if hi - lo <= _POINT_DELETE_MAX:
            for index in range(lo, hi):
                wb.delete(self._ekey(index))
        else:
            wb.delete_range(self._ekey(lo), self._ekey(hi))

    def _apply(self, st: _Staged) -> None:
        """Update the caches after a batch including ``st`` was written."""
        if st.lo is not None:
            self._terms.splice(st.lo, st.entries)
            self._last = st.last_index()
        if st.hard_state is not None:
            self._hard_state = st.hard_state
        if st.membership is not None:
            self._membership = st.membership
        self._version += 1

    def _close(self) -> None:
        self._closed = True
        self._version += 1  # a batch staged against this object must not commit any more
        self.snapshots.close()


# -- the engine --------------------------------------------------------------------------------
def bounded_options(write_buffer_mb: int = 16, block_cache_mb: int = 32) -> Options:
    """RocksDB options with a fixed memory budget: at most two memtables of
    ``write_buffer_mb`` and a block cache of ``block_cache_mb`` (the defaults would let a
    process grow by 64 MiB memtables and an unbounded table cache as a shard fills; a master
    holds one Raft-log engine and one database per shard it serves)."""
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.set_keep_log_file_num(4)
    opts.set_write_buffer_size(write_buffer_mb << 20)
    opts.set_max_write_buffer_number(2)
    table = BlockBasedOptions()
    table.set_block_cache(Cache(block_cache_mb << 20))
    table.set_cache_index_and_filter_blocks(True)
    opts.set_block_based_table_factory(table)
    opts.set_max_open_files(256)
    return opts


class RocksEngine:
    """The process's RocksDB (WAL on, every write synced) and snapshot directories.

    ``path/db`` is the database; ``path/snapshots/g-<quoted group id>/`` each group's snapshot
    files. Only one engine may have a path open at a time (RocksDB's lock file enforces it).
    """

    def __init__(self, path: str | os.PathLike[str], *, verify_snapshots: bool = True) -> None:
        self.path = Path(path)
        self.verify = verify_snapshots
        self.path = private_dir(path)
        self._db = Rdict(str(self.path / "db"), bounded_options())
        self._sync = WriteOptions()
        self._sync.sync = True
        self._nosync = WriteOptions()
        self._lock = threading.RLock()
        self._groups: dict[str, RocksLogStorage] = {}
        self._closed = False

    def snapshot_dir(self, group_id: str) -> Path:
        """``g-<percent-encoded id>``, or ``h-<sha256>`` when that would be too long a name."""
        name = "g-" + quote(group_id, safe="")
        if len(name) > 200:
            name = "h-" + hashlib.sha256(group_id.encode()).hexdigest()
        return self.path / "snapshots" / name

    def group(
        self,
        group_id: str,
        conf: ConfState | None = None,
        addresses: Mapping[int, str] | None = None,
    ) -> RocksLogStorage:
        """The storage of ``group_id``; a new group is created as ``MemoryStorage(conf)`` is.

        ``conf`` and ``addresses`` (the ``set_membership`` map) are only used when the group does
        not exist yet, and are then written atomically with its creation; an existing group's
        membership comes from its snapshot meta and stored addresses. The same object is
        returned on every call.
        """
        if self._closed:
            raise RuntimeError("engine is closed")
        with self._lock:
            store = self._groups.get(group_id)
            if store is None:
                store = self._groups[group_id] = RocksLogStorage(self, group_id, conf, addresses)
            return store

    def restore_group(
        self,
        group_id: str,
        meta: SnapshotMeta,
        image: SnapshotSource,
        addresses: Mapping[int, str],
    ) -> RocksLogStorage:
        """Create ``group_id`` from a snapshot (a restored backup): ``image`` becomes its
        snapshot ``meta`` (index, term, membership), with an empty log after it, the hard
        state at that term with ``meta.index`` committed, and ``addresses`` its members'
        Raft addresses. As any snapshot: the image is written durably first, then one
        RocksDB write names it. The state machine is rebuilt from it when the group is opened
        (``RaftGroup``: a snapshot newer than the machine's applied index). A group that
        exists already is a ``ValueError``."""
        if self._closed:
            raise RuntimeError("engine is closed")
        with self._lock:
            if group_id in self._groups or group_id in self.group_ids():
                raise ValueError(f"group {group_id!r} exists already")
            snapshots = SnapshotStore(self.snapshot_dir(group_id), verify=self.verify)
            try:
                snapshots.create(meta, image)
            finally:
                snapshots.close()
            prefix = _group_prefix(group_id)
            wb = WriteBatch(raw_mode=True)
            wb.put(_REGISTRY + group_id.encode(), b"")
            wb.put(prefix + _K_MEMBERS, encode_membership(addresses))
            wb.put(prefix + _K_SNAP, encode_snapshot_meta(meta))
            wb.put(prefix + _K_DUMMY, _DUMMY.pack(meta.index, meta.term))
            wb.put(prefix + _K_HARD, _HARD_STATE.pack(meta.term, 0, meta.index))
            self._write(wb)
        return self.group(group_id)

    def group_ids(self) -> list[str]:
        """Every group stored in this database (created and not destroyed)."""
        out: list[str] = []
        for key in self._db.keys(from_key=_REGISTRY):
            raw = bytes(key)  # type: ignore[arg-type]  # raw mode: keys are bytes
            if not raw.startswith(_REGISTRY):
                break
            out.append(raw[len(_REGISTRY) :].decode())
        return out

    def destroy_group(self, group_id: str) -> None:
        """Delete a group's log, state and snapshots (e.g. after its replica moved away)."""
        with self._lock:
            store = self._groups.pop(group_id, None)
            if store is not None:
                store._close()
            prefix = _group_prefix(group_id)
            wb = WriteBatch(raw_mode=True)
            wb.delete_range(prefix, prefix + b"\xff")
            wb.delete(_REGISTRY + group_id.encode())
            self._write(wb)
            shutil.rmtree(self.snapshot_dir(group_id), ignore_errors=True)

    def write_batch(self) -> LogBatch:
        """A group-commit batch (see ``LogBatch``)."""
        return LogBatch(self)

    def _write(self, wb: WriteBatch, sync: bool = True) -> None:
        if self._closed:
            raise RuntimeError("engine is closed")
        self._db.write(wb, self._sync if sync else self._nosync)

    def close(self) -> None:
        if self._closed:
            return
        with self._lock:
            for store in self._groups.values():
                store._close()
            self._groups.clear()
            self._closed = True
            self._db.close()

    def __enter__(self) -> RocksEngine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
