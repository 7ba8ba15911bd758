"""Incremental block reports: what changed among a chunk server's replicas since the last
heartbeat took the changes.

The store appends a :class:`ReplicaEvent` whenever a replica starts being written, is
finalized, deleted or found corrupt; the heartbeat (to every member of every shard, DESIGN 2.8)
takes them with :meth:`EventQueue.take` and sends them. The queue is bounded: when nobody takes
events for long, the oldest are dropped and the next batch says ``overflowed``, meaning "send a
full block report" (``BlockStore.block_report``) because the increments alone no longer add up.
"""

from __future__ import annotations

import enum
import threading
from collections import deque
from dataclasses import dataclass

from keelfs.datapath.replica import ReplicaInfo

__all__ = ["EventBatch", "EventKind", "EventQueue", "ReplicaEvent"]


class EventKind(enum.Enum):
    RECEIVING = "receiving"
    """A replica started being written (or was taken over by pipeline recovery)."""
    FINALIZED = "finalized"
    DELETED = "deleted"
    CORRUPT = "corrupt"
    """A read or the scanner found a checksum that does not match: never served again."""


@dataclass(frozen=True, slots=True)
class ReplicaEvent:
    kind: EventKind
    replica: ReplicaInfo
    reason: str = ""

    def describe(self) -> str:
        why = f" ({self.reason})" if self.reason else ""
        return f"{self.kind.value} {self.replica.describe()}{why}"


@dataclass(frozen=True, slots=True)
class EventBatch:
    events: tuple[ReplicaEvent, ...]
    overflowed: bool
    """Events were dropped since the last ``take``: send a full block report."""


class EventQueue:
    """Thread-safe, bounded FIFO of replica events (the store runs in worker threads)."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._events: deque[ReplicaEvent] = deque()
        self._capacity = capacity
        self._overflowed = False
        self._lock = threading.Lock()

    def put(self, event: ReplicaEvent) -> None:
        with self._lock:
            if len(self._events) >= self._capacity:
                self._events.popleft()
                self._overflowed = True
            self._events.append(event)

    def take(self, max_events: int | None = None) -> EventBatch:
        """Remove and return up to ``max_events`` events (all by default), oldest first."""
        with self._lock:
            n = len(self._events) if max_events is None else min(max_events, len(self._events))
            events = tuple(self._events.popleft() for _ in range(n))
            overflowed, self._overflowed = self._overflowed, False
        return EventBatch(events, overflowed)

    def __len__(self) -> int:
        return len(self._events)
