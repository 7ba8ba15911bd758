"""Errors of the durable stores.

The Raft-facing ``StorageError`` family (``CompactedError``, ``UnavailableError``,
``SnapshotOutOfDateError``) means "the caller asked for something the store does not have" and is
part of the normal protocol. Corruption is different: the bytes on disk contradict each other (a
gap in the log, a snapshot that RocksDB names but whose file is missing or fails its checksum).
That is never the caller's fault and must stop the node, so it is *not* a ``RaftError``.
"""

from __future__ import annotations


class StorageCorruptedError(RuntimeError):
    """What is on disk is inconsistent; the node must not keep running on it."""


class SnapshotCorruptedError(StorageCorruptedError):
    """A snapshot the log depends on is missing, incomplete or fails its checksum."""
