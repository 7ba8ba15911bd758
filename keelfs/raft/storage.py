"""The log storage the core reads, and ``MemoryStorage``, its reference implementation.

The core only *reads* storage (as in etcd-io/raft): the application writes what each ``Ready``
asks it to persist, takes snapshots, and compacts. ``LogStorage`` is that read side;
``MemoryStorage`` adds the write side used by the simulator and unit tests, and the durable
stores in ``keelfs.storage`` offer the same methods. Index conventions:

- the log holds entries ``first_index() .. last_index()``;
- ``first_index() - 1`` is the index of the latest snapshot, whose term ``term()`` still knows;
- an empty log after a snapshot at index *s* has ``first_index() == s + 1`` and
  ``last_index() == s``.
"""

from __future__ import annotations

from typing import Protocol

from keelfs.raft.errors import CompactedError, SnapshotOutOfDateError, UnavailableError
from keelfs.raft.messages import ConfState, Entry, HardState, SnapshotMeta


class LogStorage(Protocol):
    """What the core needs to read. Every method is cheap and must not block for long."""

    def initial_state(self) -> tuple[HardState, ConfState]:
        """The persisted hard state and membership, read once when a node starts."""
        ...

    def first_index(self) -> int: ...

    def last_index(self) -> int: ...

    def term(self, index: int) -> int:
        """Term of the entry at ``index``; valid for ``first_index() - 1 .. last_index()``.

        Raises ``CompactedError`` below that range and ``UnavailableError`` above it.
        """
        ...

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        """Entries ``[lo, hi)``, stopping once ``max_bytes`` is passed (always at least one)."""
        ...

    def snapshot_meta(self) -> SnapshotMeta:
        """The newest complete snapshot (index 0 when there is none)."""
        ...

    def snapshot_chunk(self, meta: SnapshotMeta, offset: int, max_bytes: int) -> tuple[bytes, bool]:
        """Up to ``max_bytes`` of the snapshot image from ``offset``, and whether it ends there.

        Raises ``SnapshotOutOfDateError`` when ``meta`` is no longer the stored snapshot.
        """
        ...


BOOTSTRAP_INDEX = 1
BOOTSTRAP_TERM = 1


def bootstrap_meta(conf: ConfState) -> SnapshotMeta:
    """The snapshot a new group starts from: index 1, term 1, the initial members, no data.

    Starting every log from a snapshot (not from conf-change entries) means a node that joins
    later, with an empty log, is caught up by InstallSnapshot like any far-behind follower, and
    learns the initial membership from it.
    """
    return SnapshotMeta(BOOTSTRAP_INDEX, BOOTSTRAP_TERM, conf)


def limit_size(entries: list[Entry], max_bytes: int) -> list[Entry]:
    """The longest prefix within ``max_bytes``, but never empty when ``entries`` is not."""
    if not entries:
        return entries
    total = entries[0].size()
    for i in range(1, len(entries)):
        total += entries[i].size()
        if total > max_bytes:
            return entries[:i]
    return entries


class MemoryStorage:
    """In-memory ``LogStorage`` with the write side the application drives.

    ``_ents[0]`` is a dummy entry holding the snapshot's index and term, so ``term()`` answers for
    ``first_index() - 1`` without a special case.
    """

    def __init__(self, conf: ConfState | None = None) -> None:
        """An empty log; with ``conf``, bootstrapped as a new group's founding member."""
        self.hard_state = HardState()
        self._snapshot = SnapshotMeta()
        self._snapshot_data = b""
        self._ents: list[Entry] = [Entry(0, 0)]
        self._receiving: tuple[SnapshotMeta, bytearray] | None = None
        if conf is not None:
            meta = bootstrap_meta(conf)
            self.write_snapshot_chunk(meta, 0, b"")
            self.install_snapshot(meta)
            self.hard_state = HardState(meta.term, 0, meta.index)

    # -- read side -------------------------------------------------------------------------
    def initial_state(self) -> tuple[HardState, ConfState]:
        return self.hard_state, self._snapshot.conf

    def first_index(self) -> int:
        return self._ents[0].index + 1

    def last_index(self) -> int:
        return self._ents[0].index + len(self._ents) - 1

    def term(self, index: int) -> int:
        offset = self._ents[0].index
        if index < offset:
            raise CompactedError(index)
        if index - offset >= len(self._ents):
            raise UnavailableError(index)
        return self._ents[index - offset].term

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        offset = self._ents[0].index
        if lo <= offset:
            raise CompactedError(lo)
        if hi > self.last_index() + 1:
            raise UnavailableError(hi)
        return limit_size(self._ents[lo - offset : hi - offset], max_bytes)

    def snapshot_meta(self) -> SnapshotMeta:
        return self._snapshot

    def snapshot_chunk(self, meta: SnapshotMeta, offset: int, max_bytes: int) -> tuple[bytes, bool]:
        if meta != self._snapshot:
            raise SnapshotOutOfDateError(meta.index)
        chunk = self._snapshot_data[offset : offset + max_bytes]
        return chunk, offset + len(chunk) >= len(self._snapshot_data)

    # -- write side ------------------------------------------------------------------------
    def snapshot_data(self) -> bytes:
        return self._snapshot_data

    def set_hard_state(self, hs: HardState) -> None:
        self.hard_state = hs

    def append(self, entries: list[Entry] | tuple[Entry, ...]) -> None:
        """Append ``entries``, first cutting off any stored suffix from their first index on."""
        if not entries:
            return
        first = self.first_index()
        if entries[-1].index < first:
            return  # wholly covered by the snapshot
        if entries[0].index < first:
            entries = entries[first - entries[0].index :]
        at = entries[0].index - self._ents[0].index
        if at > len(self._ents):
            raise ValueError(f"gap in log: append at {entries[0].index} after {self.last_index()}")
        del self._ents[at:]
        self._ents.extend(entries)

    def create_snapshot(self, index: int, conf: ConfState, data: bytes) -> SnapshotMeta:
        """Record a snapshot of the state machine as of ``index`` (already applied)."""
        if index <= self._snapshot.index:
            raise SnapshotOutOfDateError(index)
        if index > self.last_index():
            raise UnavailableError(index)
        self._snapshot = SnapshotMeta(index, self.term(index), conf)
        self._snapshot_data = data
        return self._snapshot

    def compact(self, index: int) -> None:
        """Drop entries up to ``index``, which a snapshot must already cover."""
        if index <= self._ents[0].index:
            return
        if index > self._snapshot.index:
            raise ValueError(f"compact({index}) beyond snapshot {self._snapshot.index}")
        at = index - self._ents[0].index
        self._ents = [Entry(self._ents[at].term, index)] + self._ents[at + 1 :]

    def write_snapshot_chunk(self, meta: SnapshotMeta, offset: int, data: bytes) -> None:
        """Stage a received chunk; ``offset == 0`` starts a new staging area."""
        if offset == 0 or self._receiving is None or self._receiving[0] != meta:
            self._receiving = (meta, bytearray())
        buf = self._receiving[1]
        if offset != len(buf):
            raise ValueError(f"snapshot chunk at {offset}, staged {len(buf)} bytes")
        buf.extend(data)

    def install_snapshot(self, meta: SnapshotMeta) -> bytes:
        """Make the staged snapshot current, discarding the log it covers; return its image."""
        if self._receiving is None or self._receiving[0] != meta:
            raise SnapshotOutOfDateError(meta.index)
        data = bytes(self._receiving[1])
        self._receiving = None
        keep: list[Entry] = []
        try:
            if self.term(meta.index) == meta.term:
                keep = self._ents[meta.index - self._ents[0].index + 1 :]
        except (CompactedError, UnavailableError):
            pass
        self._ents = [Entry(meta.term, meta.index), *keep]
        self._snapshot = meta
        self._snapshot_data = data
        return data
