"""What a leader knows about each follower's log (etcd-io/raft's tracker, reduced).

A follower's progress is in one of three states:

==========  ==============================================================================
PROBE       the leader does not know where the follower's log matches; it sends one append
            at a time and waits for the answer (``probe_sent`` pauses it)
REPLICATE   the logs match up to ``match``; the leader streams appends optimistically,
            advancing ``next`` before the answer, bounded by ``Inflights``
SNAPSHOT    the follower needs entries the leader has compacted; the leader streams the
            snapshot in chunks (``snap_*``) and sends no appends until it is installed
==========  ==============================================================================
"""

from __future__ import annotations

import enum
from collections import deque

from keelfs.raft.messages import SnapshotMeta


class ProgressState(enum.IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


class Inflights:
    """Appends sent but not yet acknowledged, bounded in count and in bytes."""

    __slots__ = ("max_count", "max_bytes", "_q", "bytes")

    def __init__(self, max_count: int, max_bytes: int) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self._q: deque[tuple[int, int]] = deque()
        self.bytes = 0

    def add(self, last_index: int, nbytes: int) -> None:
        self._q.append((last_index, nbytes))
        self.bytes += nbytes

    def free_le(self, index: int) -> None:
        q = self._q
        while q and q[0][0] <= index:
            self.bytes -= q.popleft()[1]

    def free_first(self) -> None:
        if self._q:
            self.bytes -= self._q.popleft()[1]

    def full(self) -> bool:
        return len(self._q) >= self.max_count or (
            self.max_bytes > 0 and self.bytes >= self.max_bytes
        )

    def count(self) -> int:
        return len(self._q)

    def reset(self) -> None:
        self._q.clear()
        self.bytes = 0


class Progress:
    __slots__ = (
        "match",
        "next",
        "state",
        "probe_sent",
        "recent_active",
        "inflights",
        "snapshot",
        "snap_sent",
        "snap_acked",
        "snap_done_sent",
        "snap_acked_at_last_beat",
    )

    def __init__(self, next_index: int, inflights: Inflights) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.recent_active = False
        self.inflights = inflights
        self.snapshot: SnapshotMeta | None = None
        self.snap_sent = 0  # next byte offset to send
        self.snap_acked = 0  # bytes the follower has staged
        self.snap_done_sent = False
        self.snap_acked_at_last_beat = -1

    def _reset_state(self, state: ProgressState) -> None:
        self.probe_sent = False
        self.state = state
        self.inflights.reset()
        self.snapshot = None
        self.snap_sent = self.snap_acked = 0
        self.snap_done_sent = False
        self.snap_acked_at_last_beat = -1

    def become_probe(self) -> None:
        if self.state is ProgressState.SNAPSHOT and self.snapshot is not None:
            snap_index = self.snapshot.index
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, snap_index + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snap: SnapshotMeta) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.snapshot = snap

    def maybe_update(self, n: int) -> bool:
        """The follower acknowledged ``n``; return whether ``match`` moved."""
        updated = False
        if self.match < n:
            self.match = n
            updated = True
            self.probe_sent = False
        self.next = max(self.next, n + 1)
        return updated

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """The follower rejected an append after ``rejected``; back off to its hint.

        Returns False for a stale rejection (one answering an append we no longer care about).
        """
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return self.inflights.full()
        return True

    def describe(self) -> str:
        s = f"{self.state.name} match={self.match} next={self.next}"
        if self.state is ProgressState.SNAPSHOT and self.snapshot is not None:
            s += f" snap={self.snapshot.index} acked={self.snap_acked}"
        if self.probe_sent:
            s += " paused"
        return s
