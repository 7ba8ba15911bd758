"""The bounded per-peer send queue and its drop policy.

A queue fills only when its peer is down or slower than we are; Raft will retransmit whatever
matters, so the queue's job is to bound memory and to make what *does* get through as useful as
possible. It has two lanes, each bounded in message count and in bytes:

**Control lane** — every message but snapshot chunks (votes, heartbeats, appends, responses,
read-index, ...). When full it drops the **oldest** messages. A queue fills while its peer is
unreachable; by the time the link is back, its oldest contents are the stalest: heartbeats and
appends of a term that may be over, responses the leader has already given up on. The newest
messages carry the current term and commit index. Dropping the new message instead (what a
bounded channel does by default) would lose exactly the messages that matter after a failure —
the first vote request of the election that follows a leader's death would bounce off a queue
full of the dead leader's stale traffic, and failover would take an extra election timeout.

**Snapshot lane** — ``SNAP`` chunks. When full it drops the **newest** chunk. A snapshot is
installed from contiguous chunks, so keeping the oldest ones keeps a prefix the follower can use
and re-request the rest of (``SNAP_RESP`` carries the next offset it wants); evicting an old
chunk would instead leave a gap that makes every newer chunk useless. Snapshot chunks are large
and few, so they also get their own byte budget rather than crowding out control messages.

:meth:`PeerQueue.take` drains the control lane first so that a heartbeat or a vote never waits
behind megabytes of snapshot, but always takes at least one snapshot chunk when any is pending
(unless the batch already holds an oversized message), so snapshots cannot starve. Within a
lane, order is FIFO. Between lanes there is no ordering guarantee, which Raft does not need: a
snapshot is acknowledged before the leader appends after it.

A message larger than its lane's byte bound is refused outright, since keeping it would mean
evicting everything else and still exceeding the bound.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from keelfs.raft.messages import Message, MessageType

MiB = 1 << 20


@dataclass(frozen=True, slots=True)
class QueueLimits:
    """Bounds of one peer's queue. Defaults allow a few seconds of heavy traffic."""

    max_messages: int = 16384
    max_bytes: int = 32 * MiB
    max_snapshot_messages: int = 1024
    max_snapshot_bytes: int = 32 * MiB

    def __post_init__(self) -> None:
        if min(self.max_messages, self.max_bytes) < 1:
            raise ValueError("control lane bounds must be positive")
        if min(self.max_snapshot_messages, self.max_snapshot_bytes) < 1:
            raise ValueError("snapshot lane bounds must be positive")

    @property
    def largest_message(self) -> int:
        """The biggest message (by approximate size) either lane accepts."""
        return max(self.max_bytes, self.max_snapshot_bytes)


QueuedItem = tuple[str, Message, int]
"""``(group_id, message, approximate size)``."""


class PeerQueue:
    """Two bounded FIFO lanes; see the module docstring for the policy."""

    __slots__ = ("_limits", "_control", "_control_bytes", "_snap", "_snap_bytes")

    def __init__(self, limits: QueueLimits) -> None:
        self._limits = limits
        self._control: deque[QueuedItem] = deque()
        self._control_bytes = 0
        self._snap: deque[QueuedItem] = deque()
        self._snap_bytes = 0

    def __len__(self) -> int:
        return len(self._control) + len(self._snap)

    def __bool__(self) -> bool:
        return bool(self._control) or bool(self._snap)

    @property
    def bytes(self) -> int:
        return self._control_bytes + self._snap_bytes

    def push(self, group_id: str, msg: Message, size: int) -> int:
        """Enqueue; return how many messages were dropped to respect the bounds (0, 1, ...)."""
        lim = self._limits
        if msg.type is MessageType.SNAP:
            if (
                size > lim.max_snapshot_bytes
                or len(self._snap) >= lim.max_snapshot_messages
                or self._snap_bytes + size > lim.max_snapshot_bytes
            ):
                return 1  # drop the newest chunk: keep a usable prefix
            self._snap.append((group_id, msg, size))
            self._snap_bytes += size
            return 0
        if size > lim.max_bytes:
            return 1
        control = self._control
        control.append((group_id, msg, size))
        self._control_bytes += size
        dropped = 0
        while len(control) > lim.max_messages or self._control_bytes > lim.max_bytes:
            self._control_bytes -= control.popleft()[2]  # drop the oldest: the stalest
            dropped += 1
        return dropped

    def take(self, max_bytes: int) -> list[QueuedItem]:
        """Remove and return the next batch: at most ``max_bytes`` (approximately), except that
        a batch always has at least one message and, when the control part is within budget, at
        least one pending snapshot chunk. So a batch is below ``max_bytes`` plus the largest
        message a lane accepts."""
        out: list[QueuedItem] = []
        budget = max_bytes
        control = self._control
        while control and (not out or control[0][2] <= budget):
            item = control.popleft()
            out.append(item)
            budget -= item[2]
            self._control_bytes -= item[2]
        snap = self._snap
        forced = budget >= 0  # the control part fits: one chunk may overshoot
        while snap and (snap[0][2] <= budget or forced):
            forced = False
            item = snap.popleft()
            out.append(item)
            budget -= item[2]
            self._snap_bytes -= item[2]
        return out

    def clear(self) -> int:
        """Drop everything; return how many messages that was."""
        n = len(self)
        self._control.clear()
        self._snap.clear()
        self._control_bytes = self._snap_bytes = 0
        return n
