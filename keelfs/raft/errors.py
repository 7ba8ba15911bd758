"""Errors raised by the Raft core.

    RaftError
    ├── StorageError              the storage cannot answer (caller's state, not a bug)
    │   ├── CompactedError        index is below the first stored entry
    │   ├── UnavailableError      index is beyond the last stored entry
    │   └── SnapshotOutOfDateError the snapshot asked for has been replaced
    ├── ProposalDropped           retryable: no leader, leadership transfer, pending conf change
    │   └── NotLeaderError        this node is not the leader; ``leader_hint`` may know better
    └── InvariantViolation        a broken internal invariant: the node must stop

Malformed or stale messages from peers are *not* errors: the core ignores or rejects them and
counts them (``Raft.ignored``), because a peer's bug must not take this node down.
"""

from __future__ import annotations


class RaftError(Exception):
    pass


class StorageError(RaftError):
    pass


class CompactedError(StorageError):
    def __init__(self, index: int) -> None:
        super().__init__(f"index {index} is compacted")
        self.index = index


class UnavailableError(StorageError):
    def __init__(self, index: int) -> None:
        super().__init__(f"index {index} is not yet in the log")
        self.index = index


class SnapshotOutOfDateError(StorageError):
    def __init__(self, index: int) -> None:
        super().__init__(f"snapshot at {index} is out of date")
        self.index = index


class ProposalDropped(RaftError):
    """The proposal was not accepted; retrying later (possibly elsewhere) may succeed."""


class NotLeaderError(ProposalDropped):
    def __init__(self, leader_hint: int, message: str = "not the leader") -> None:
        super().__init__(f"{message} (leader hint: {leader_hint or 'unknown'})")
        self.leader_hint = leader_hint


class InvariantViolation(RaftError):
    """Raised when the core finds its own state inconsistent. Never caught inside the core."""
