"""The Raft log as the core sees it: durable entries in ``LogStorage`` plus an unstable tail.

Entries the core has appended but the application has not yet persisted live in ``Unstable``.
They are handed out in ``Ready.entries`` and dropped from ``Unstable`` by ``stable_to`` once the
application reports them durable. A snapshot installed from the leader waits in
``Unstable.snapshot`` the same way.

Rules this module keeps (a violation raises ``InvariantViolation``):
- ``committed`` never decreases and never passes ``last_index()``;
- an append never truncates a committed entry;
- ``applied <= committed``.
"""

from __future__ import annotations

from keelfs.raft.errors import CompactedError, InvariantViolation, UnavailableError
from keelfs.raft.messages import Entry, SnapshotMeta
from keelfs.raft.storage import LogStorage, limit_size


class Unstable:
    __slots__ = ("snapshot", "entries", "offset")

    def __init__(self, offset: int) -> None:
        self.snapshot: SnapshotMeta | None = None
        self.entries: list[Entry] = []
        self.offset = offset  # index of entries[0]

    def maybe_first_index(self) -> int | None:
        return self.snapshot.index + 1 if self.snapshot is not None else None

    def maybe_last_index(self) -> int | None:
        if self.entries:
            return self.offset + len(self.entries) - 1
        if self.snapshot is not None:
            return self.snapshot.index
        return None

    def maybe_term(self, index: int) -> int | None:
        if index < self.offset:
            if self.snapshot is not None and self.snapshot.index == index:
                return self.snapshot.term
            return None
        i = index - self.offset
        if i >= len(self.entries):
            return None
        return self.entries[i].term

    def stable_to(self, index: int, term: int) -> None:
        t = self.maybe_term(index)
        if t is None or t != term or index < self.offset:
            return  # the entries were replaced after the Ready was taken; keep them
        del self.entries[: index + 1 - self.offset]
        self.offset = index + 1

    def stable_snap_to(self, index: int) -> None:
        if self.snapshot is not None and self.snapshot.index == index:
            self.snapshot = None

    def restore(self, snap: SnapshotMeta) -> None:
        self.offset = snap.index + 1
        self.entries = []
        self.snapshot = snap

    def truncate_and_append(self, ents: list[Entry]) -> None:
        after = ents[0].index
        if after == self.offset + len(self.entries):
            self.entries.extend(ents)
        elif after <= self.offset:
            # Replaces everything unstable and a stored suffix; persisting these entries
            # truncates the stored log at ``after``.
            self.offset = after
            self.entries = list(ents)
        else:
            del self.entries[after - self.offset :]
            self.entries.extend(ents)


class RaftLog:
    def __init__(self, storage: LogStorage, max_applying_bytes: int) -> None:
        self.storage = storage
        first = storage.first_index()
        last = storage.last_index()
        self.unstable = Unstable(last + 1)
        self.committed = first - 1
        self.applied = first - 1
        self.applying = first - 1
        """Highest index handed to the application in a Ready and not yet advanced past."""
        self.max_applying_bytes = max_applying_bytes

    # -- indices and terms -----------------------------------------------------------------
    def first_index(self) -> int:
        i = self.unstable.maybe_first_index()
        return i if i is not None else self.storage.first_index()

    def last_index(self) -> int:
        i = self.unstable.maybe_last_index()
        return i if i is not None else self.storage.last_index()

    def term(self, index: int) -> int:
        """Term at ``index``; raises CompactedError/UnavailableError outside the known range."""
        t = self.unstable.maybe_term(index)
        if t is not None:
            return t
        if index < self.first_index() - 1:
            raise CompactedError(index)
        if index > self.last_index():
            raise UnavailableError(index)
        return self.storage.term(index)

    def term_or_zero(self, index: int) -> int:
        try:
            return self.term(index)
        except (CompactedError, UnavailableError):
            return 0

    def last_term(self) -> int:
        return self.term(self.last_index())

    def match_term(self, index: int, term: int) -> bool:
        try:
            return self.term(index) == term
        except (CompactedError, UnavailableError):
            return False

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Election restriction (§5.4.1): is a candidate's log at least as new as ours?"""
        my_term = self.last_term()
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index())

    # -- reading entries -------------------------------------------------------------------
    def slice(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        """Entries ``[lo, hi)`` within ``max_bytes`` (at least one); may raise CompactedError."""
        if lo >= hi:
            return []
        if lo < self.first_index():
            raise CompactedError(lo)
        if hi > self.last_index() + 1:
            raise InvariantViolation(f"slice [{lo},{hi}) beyond last index {self.last_index()}")
        out: list[Entry] = []
        u = self.unstable
        if lo < u.offset:
            out = self.storage.entries(lo, min(hi, u.offset), max_bytes)
            if len(out) < min(hi, u.offset) - lo:
                return out  # stopped by the size limit
        if hi > u.offset:
            start = max(lo, u.offset) - u.offset
            out = out + u.entries[start : hi - u.offset]
        return limit_size(out, max_bytes)

    def entries_from(self, lo: int, max_bytes: int) -> list[Entry]:
        return self.slice(lo, self.last_index() + 1, max_bytes)

    def unstable_entries(self) -> list[Entry]:
        return list(self.unstable.entries)

    def has_next_committed(self) -> bool:
        if self.unstable.snapshot is not None:
            return False  # apply the snapshot first
        return self.committed > max(self.applying, self.first_index() - 1)

    def next_committed(self) -> list[Entry]:
        if self.unstable.snapshot is not None:
            return []
        lo = max(self.applying + 1, self.first_index())
        if self.committed < lo:
            return []
        return self.slice(lo, self.committed + 1, self.max_applying_bytes)

    # -- changing the log ------------------------------------------------------------------
    def find_conflict(self, ents: tuple[Entry, ...] | list[Entry]) -> int:
        """Index of the first entry whose term differs from ours, or 0 if all match."""
        for e in ents:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """Largest ``(i, t)`` with ``i <= index`` and our term ``t <= term`` (fast back-off)."""
        while index > 0:
            try:
                t = self.term(index)
            except CompactedError:
                return index, 0
            except UnavailableError:
                index = self.last_index()
                continue
            if t <= term:
                return index, t
            index -= 1
        return 0, 0

    def append(self, ents: list[Entry]) -> int:
        if not ents:
            return self.last_index()
        if ents[0].index - 1 < self.committed:
            raise InvariantViolation(f"append at {ents[0].index} below commit {self.committed}")
        self.unstable.truncate_and_append(ents)
        return self.last_index()

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            if index > self.last_index():
                raise InvariantViolation(f"commit {index} beyond last index {self.last_index()}")
            self.committed = index

    def applied_to(self, index: int) -> None:
        if index == 0:
            return
        if index > self.committed or index < self.applied:
            raise InvariantViolation(f"applied {index} outside [{self.applied},{self.committed}]")
        self.applied = index
        self.applying = max(self.applying, index)

    def accept_applying(self, index: int) -> None:
        self.applying = max(self.applying, index)

    def restore(self, snap: SnapshotMeta) -> None:
        self.committed = snap.index
        self.unstable.restore(snap)

    def stable_to(self, index: int, term: int) -> None:
        self.unstable.stable_to(index, term)

    def stable_snap_to(self, index: int) -> None:
        self.unstable.stable_snap_to(index)
        self.applied = max(self.applied, index)
        self.applying = max(self.applying, index)
