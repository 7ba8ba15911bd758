"""The ordered byte store under the metadata state machines, and their snapshot stream.

``KVStore`` is the narrow interface the state machines need: point reads, ordered range scans,
one atomic write of many changes, and a consistent scan for snapshots. ``RocksStore`` keeps it
in one RocksDB per shard member (so a namespace can exceed RAM and a restart replays only the
log tail); ``MemoryStore`` keeps it in a dict (small state such as the config group's, and
fast tests). ``Txn`` stages a command's reads and writes over either, so a command that fails
half-way leaves nothing behind: the state machine writes a command's effects, its session reply
and the new applied index as ONE ``write``.

Key space. Keys starting with ``LOCAL_PREFIX`` (``\\x00``) belong to this replica only (the
applied index, the restore marker) and are never in a snapshot; everything from
``REPLICATED_START`` (``\\x01``) up to ``KEY_END`` (``\\xff``, which no key starts with) is
replicated state; ``prefix_end`` bounds the range of one prefix.

Durability. ``RocksStore`` writes with the WAL on but ``sync=False``. That is safe only because
the Raft log, which IS synced before anything is acknowledged, is the source of durability: a
crash may lose the newest writes of this store, but RocksDB recovers a prefix of its writes, and
every write carries the applied index together with the effects it covers, so after a crash the
store is exactly "the state after entry ``applied_index()``" for some earlier index, and the
runtime replays the log from there (or restores a snapshot if the log was compacted past it).

Snapshot stream (``encode_snapshot``/``SnapshotReader``), version 1::

    header   b"KFSM" u8 version u64 applied-index
    record*  u32 key length, u32 value length, key, value     (keys ascending)
    trailer  u32 0xFFFFFFFF, u64 record count, 32-byte BLAKE2b of every record's bytes

Chunks hold whole records (except that the reader accepts any re-chunking, since a transport
may cut the stream by size); the trailer lets a receiver detect a truncated or damaged stream
before it reports the restore done.
"""

from __future__ import annotations

import bisect
import hashlib
import os
import struct
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from rocksdict import Rdict, ReadOptions, WriteBatch, WriteOptions

from keelfs.storage.errors import SnapshotCorruptedError
from keelfs.storage.rocks import bounded_options

__all__ = [
    "KEY_END",
    "LOCAL_PREFIX",
    "REPLICATED_START",
    "KVStore",
    "MemoryStore",
    "RocksStore",
    "SnapshotReader",
    "Txn",
    "encode_snapshot",
    "prefix_end",
]

LOCAL_PREFIX = b"\x00"
REPLICATED_START = b"\x01"
KEY_END = b"\xff"

SNAPSHOT_MAGIC = b"KFSM"
SNAPSHOT_VERSION = 1
DEFAULT_CHUNK_BYTES = 1 << 20
_HEADER = struct.Struct(">4sBQ")
_RECORD = struct.Struct(">II")
_TRAILER_MARK = 0xFFFFFFFF
_MARK = struct.Struct(">I")
_TRAILER = struct.Struct(">Q32s")
_MAX_RECORD = 64 << 20
"""A record bigger than this in a stream means the stream is damaged."""


def prefix_end(prefix: bytes) -> bytes:
    """The exclusive upper bound of the keys starting with ``prefix``: the prefix with its last
    byte counted up (trailing 0xFF bytes dropped first). Not ``prefix + b"\\xff"``: a key part
    after a prefix may be binary and start with 0xFF (a session id is 128 random bits), and
    such keys are above that bound."""
    kept = prefix.rstrip(b"\xff")
    if not kept:
        raise ValueError(f"no key range ends after {prefix!r}")
    return kept[:-1] + bytes([kept[-1] + 1])


class KVStore(ABC):
    """Ordered bytes -> bytes, written only through ``write`` (atomic)."""

    @abstractmethod
    def get(self, key: bytes) -> bytes | None: ...

    @abstractmethod
    def scan(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        """The items with ``start <= key < end``, ascending."""

    @abstractmethod
    def write(
        self, changes: Mapping[bytes, bytes | None], *, clear_replicated: bool = False
    ) -> None:
        """Apply ``changes`` (``None`` deletes) atomically; with ``clear_replicated``, every
        replicated key is deleted first, in the same atomic write."""

    @abstractmethod
    def frozen_scan(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Like ``scan``, but of the state as of this call, however long the caller takes to
        consume it and whatever is written meanwhile."""

    @abstractmethod
    def close(self) -> None:
        """Release the store; no other method may be called afterwards."""

    def holds_any(self, prefix: bytes) -> bool:
        """Whether any key starts with ``prefix``."""
        return next(iter(self.scan(prefix, prefix_end(prefix))), None) is not None


class MemoryStore(KVStore):
    """A dict plus a sorted key list. For small state (the config group) and tests."""

    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}
        self._keys: list[bytes] = []

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def scan(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        lo = bisect.bisect_left(self._keys, start)
        hi = bisect.bisect_left(self._keys, end)
        for key in self._keys[lo:hi]:  # a copy: the caller may write while iterating
            yield key, self._data[key]

    def write(
        self, changes: Mapping[bytes, bytes | None], *, clear_replicated: bool = False
    ) -> None:
        if clear_replicated:
            self._data = {k: v for k, v in self._data.items() if k < REPLICATED_START}
            self._keys = sorted(self._data)
        for key, value in changes.items():
            if value is None:
                if self._data.pop(key, None) is not None:
                    del self._keys[bisect.bisect_left(self._keys, key)]
            else:
                if key not in self._data:
                    bisect.insort(self._keys, key)
                self._data[key] = bytes(value)

    def frozen_scan(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        lo = bisect.bisect_left(self._keys, start)
        hi = bisect.bisect_left(self._keys, end)
        items = [(k, self._data[k]) for k in self._keys[lo:hi]]
        return iter(items)

    def close(self) -> None:
        pass


READ_CACHE_ENTRIES = 4096
"""Keys whose values (or absence) ``RocksStore`` keeps in Python; the cache is emptied when it
reaches this size (cheaper than evicting one by one, and the hot keys come back at once)."""
READ_CACHE_VALUE_BYTES = 2048
"""Values longer than this are not kept: the hot keys are small (clocks, sessions, directory
records), and an inline file's record (up to ~88 KB) would make 4,096 of them ~360 MB."""


class RocksStore(KVStore):
    """One RocksDB (raw byte keys) at ``path``: WAL on, writes not synced (see module doc).

    Point reads go through a small write-through cache: an apply reads the same few keys
    again and again (the clock, the session, the parent directory's records, the locks), and
    a read from RocksDB through ``rocksdict`` costs several times a dict lookup. Every change
    goes through ``write``, which updates the cache after the store, so the cache never holds
    what the store does not (absent keys are cached as ``None``).

    ``holds_any`` of a one-byte prefix remembers a prefix it found empty until a write puts
    a key under it: every create asks whether anything is locked or fenced (``K``, ``F``),
    which is almost never so, and each asking was a RocksDB iterator (several µs)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._db = Rdict(str(self.path), bounded_options())
        self._write_opts = WriteOptions()
        self._write_opts.sync = False
        self._closed = False
        self._cache: dict[bytes, bytes | None] = {}
        self._empty: set[bytes] = set()
        """One-byte prefixes no key starts with (``holds_any``); a write of a key under one
        drops it. Read and written only by the thread that writes (the apply's)."""

    def get(self, key: bytes) -> bytes | None:
        cache = self._cache
        try:
            return cache[key]
        except KeyError:
            pass
        raw = self._db.get(key)
        value = None if raw is None else bytes(raw)
        if value is None or len(value) <= READ_CACHE_VALUE_BYTES:
            if len(cache) >= READ_CACHE_ENTRIES:
                cache.clear()
            cache[key] = value
        return value

    def scan(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        return self._iterate(start, end)

    def holds_any(self, prefix: bytes) -> bool:
        if prefix in self._empty:
            return False
        found = next(self._iterate(prefix, prefix_end(prefix)), None) is not None
        if not found and len(prefix) == 1:
            self._empty.add(prefix)
        return found

    def _iterate(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        # A RocksDB iterator reads the implicit snapshot taken when it is created, so creating
        # it here (not lazily inside the generator) is what makes ``frozen_scan`` consistent.
        # (rocksdict's own ``Snapshot.iter()`` does not honour the snapshot in 0.3.29.)
        # The upper bound matters for speed: without it a seek past the last live key of a
        # range steps over every tombstone beyond it (the expiry indexes churn constantly).
        opts = ReadOptions()
        opts.set_iterate_upper_bound(end)
        it = self._db.iter(opts)
        it.seek(start)

        def gen() -> Iterator[tuple[bytes, bytes]]:
            while it.valid():
                key = bytes(it.key())
                if key >= end:
                    return
                yield key, bytes(it.value())
                it.next()

        return gen()

    def write(
        self, changes: Mapping[bytes, bytes | None], *, clear_replicated: bool = False
    ) -> None:
        if self._closed:
            raise RuntimeError("store is closed")
        wb = WriteBatch(raw_mode=True)
        if clear_replicated:
            wb.delete_range(REPLICATED_START, KEY_END)
        for key, value in changes.items():
            if value is None:
                wb.delete(key)
            else:
                wb.put(key, value)
        try:
            self._db.write(wb, self._write_opts)
        except BaseException:  # it may or may not have reached the store: forget, not guess
            self._cache.clear()
            self._empty.clear()
            raise
        self._remember(changes, clear_replicated)

    def _remember(self, changes: Mapping[bytes, bytes | None], clear_replicated: bool) -> None:
        cache = self._cache
        if clear_replicated or len(cache) + len(changes) > READ_CACHE_ENTRIES:
            cache.clear()
        empty = self._empty
        for key, value in changes.items():
            if value is None:
                cache[key] = None
                continue
            if empty and key[:1] in empty:
                empty.discard(key[:1])
            if len(value) > READ_CACHE_VALUE_BYTES:
                cache.pop(key, None)  # not kept, and what was kept of it is stale
            else:
                cache[key] = bytes(value)

    def frozen_scan(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        return self._iterate(start, end)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._db.close()


class Txn:
    """Staged writes over a store (or over another ``Txn``): reads see the staged writes.

    ``child()`` opens a nested stage that ``commit()`` folds into its parent, or that is simply
    dropped: how a failed command leaves the session bookkeeping of its own apply in place but
    none of its own effects.

    The staged keys are also kept sorted (``_keys``), so that a scan of a narrow range finds
    the staged keys in it by bisection: a pack of creates stages hundreds of keys, and each
    create scans the (empty) range of tree fences once, which used to walk every staged key.
    Staged writes change through ``put``, ``delete``, ``update`` and ``commit``; a change made
    to ``writes`` directly is noticed by its count (keys are never removed from ``writes``)
    and the order is rebuilt at the next scan.
    """

    __slots__ = ("_base", "_keys", "writes")

    def __init__(self, base: KVStore | Txn) -> None:
        self._base = base
        self.writes: dict[bytes, bytes | None] = {}
        self._keys: list[bytes] = []

    def get(self, key: bytes) -> bytes | None:
        if key in self.writes:
            return self.writes[key]
        return self._base.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        self._stage(key, value)

    def delete(self, key: bytes) -> None:
        self._stage(key, None)

    def update(self, changes: Mapping[bytes, bytes | None]) -> None:
        """Stage every change of ``changes`` (None: a delete)."""
        for key, value in changes.items():
            self._stage(key, value)

    def _stage(self, key: bytes, value: bytes | None) -> None:
        writes = self.writes
        if key not in writes and len(self._keys) == len(writes):
            bisect.insort(self._keys, key)
        writes[key] = value

    def _sorted_keys(self) -> list[bytes]:
        if len(self._keys) != len(self.writes):
            self._keys = sorted(self.writes)
        return self._keys

    def scan(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        """The merged view of ``start <= key < end``; staged writes win. Writes made while
        iterating are not reflected in the iteration."""
        keys = self._sorted_keys()
        writes = self.writes
        lo = bisect.bisect_left(keys, start)
        hi = bisect.bisect_left(keys, end, lo)
        mine = [(k, writes[k]) for k in keys[lo:hi]]
        base = self._base.scan(start, end)
        if not mine:
            yield from base
            return
        i = 0
        for key, value in base:
            while i < len(mine) and mine[i][0] < key:
                staged = mine[i][1]
                if staged is not None:
                    yield mine[i][0], staged
                i += 1
            if i < len(mine) and mine[i][0] == key:
                staged = mine[i][1]
                if staged is not None:
                    yield key, staged
                i += 1
                continue
            yield key, value
        for key, staged in mine[i:]:
            if staged is not None:
                yield key, staged

    def first(self, start: bytes, end: bytes) -> tuple[bytes, bytes] | None:
        return next(iter(self.scan(start, end)), None)

    def holds_any(self, prefix: bytes) -> bool:
        """Whether a key starting with ``prefix`` may be here: True when one is staged or
        in the base (``KVStore.holds_any``, ``Txn.holds_any``), False only when none is in
        either. (A staged delete does not hide the base's key from this: a conservative
        True, for a caller that then looks closer.)"""
        keys = self._sorted_keys()
        if keys:
            writes = self.writes
            lo = bisect.bisect_left(keys, prefix)
            hi = bisect.bisect_left(keys, prefix_end(prefix), lo)
            if any(writes[k] is not None for k in keys[lo:hi]):
                return True
        return self._base.holds_any(prefix)

    def child(self) -> Txn:
        return Txn(self)

    def commit(self) -> None:
        """Fold this stage into the parent ``Txn`` (a top-level ``Txn`` is written by its
        owner with ``KVStore.write(txn.writes)``)."""
        if not isinstance(self._base, Txn):
            raise TypeError("a top-level Txn is written with KVStore.write")
        self._base.update(self.writes)
        self.writes = {}
        self._keys = []


# -- snapshot stream ----------------------------------------------------------------------------
def encode_snapshot(
    items: Iterable[tuple[bytes, bytes]], index: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> Iterator[bytes]:
    """The stream of ``items`` (ascending keys) taken at ``index``, in chunks of about
    ``chunk_bytes``."""
    digest = hashlib.blake2b(digest_size=32)
    count = 0
    buf = bytearray(_HEADER.pack(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, index))
    for key, value in items:
        record = _RECORD.pack(len(key), len(value)) + key + value
        digest.update(record)
        count += 1
        buf += record
        if len(buf) >= chunk_bytes:
            yield bytes(buf)
            buf = bytearray()
    buf += _MARK.pack(_TRAILER_MARK) + _TRAILER.pack(count, digest.digest())
    yield bytes(buf)


class SnapshotReader:
    """Parses a snapshot stream cut into any chunks; iterate it for the (key, value) records.

    Raises ``SnapshotCorruptedError`` on a bad header, a damaged record, a missing trailer, a
    count or digest mismatch, or bytes after the trailer. ``index`` is the header's applied
    index (known once iteration has started)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self.index: int | None = None

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        buf = bytearray()
        pos = 0
        chunks = self._chunks

        def need(n: int) -> bool:
            nonlocal buf, pos
            while len(buf) - pos < n:
                chunk = next(chunks, None)
                if chunk is None:
                    return False
                if pos:
                    del buf[:pos]
                    pos = 0
                buf += chunk
            return True

        if not need(_HEADER.size):
            raise SnapshotCorruptedError("snapshot stream: truncated header")
        magic, version, index = _HEADER.unpack_from(buf, pos)
        if magic != SNAPSHOT_MAGIC or version != SNAPSHOT_VERSION:
            raise SnapshotCorruptedError(f"snapshot stream: bad header {bytes(buf[:5])!r}")
        self.index = index
        pos += _HEADER.size
        digest = hashlib.blake2b(digest_size=32)
        count = 0
        while True:
            if not need(4):
                raise SnapshotCorruptedError("snapshot stream: truncated (no trailer)")
            (klen,) = _MARK.unpack_from(buf, pos)
            if klen == _TRAILER_MARK:
                pos += 4
                if not need(_TRAILER.size):
                    raise SnapshotCorruptedError("snapshot stream: truncated trailer")
                n, want = _TRAILER.unpack_from(buf, pos)
                pos += _TRAILER.size
                if n != count or want != digest.digest():
                    raise SnapshotCorruptedError("snapshot stream: count or digest mismatch")
                if len(buf) > pos or next(chunks, None):
                    raise SnapshotCorruptedError("snapshot stream: data after the trailer")
                return
            if not need(_RECORD.size):
                raise SnapshotCorruptedError("snapshot stream: truncated record")
            klen, vlen = _RECORD.unpack_from(buf, pos)
            if klen + vlen > _MAX_RECORD:
                raise SnapshotCorruptedError("snapshot stream: implausible record size")
            if not need(_RECORD.size + klen + vlen):
                raise SnapshotCorruptedError("snapshot stream: truncated record")
            end = pos + _RECORD.size + klen + vlen
            digest.update(buf[pos:end])
            key = bytes(buf[pos + _RECORD.size : pos + _RECORD.size + klen])
            value = bytes(buf[pos + _RECORD.size + klen : end])
            pos = end
            count += 1
            yield key, value
