"""Durable storage for the Raft runtime.

- ``RocksEngine`` / ``RocksLogStorage`` (``keelfs.storage.rocks``): one RocksDB per process,
  shared by all its Raft groups, with group commit across groups (``engine.write_batch()``).
- ``SnapshotStore`` (``keelfs.storage.snapshots``): each group's snapshot images as files.
"""

from keelfs.storage.errors import SnapshotCorruptedError, StorageCorruptedError
from keelfs.storage.rocks import LogBatch, RocksEngine, RocksLogStorage
from keelfs.storage.snapshots import SnapshotInfo, SnapshotStore

__all__ = [
    "LogBatch",
    "RocksEngine",
    "RocksLogStorage",
    "SnapshotCorruptedError",
    "SnapshotInfo",
    "SnapshotStore",
    "StorageCorruptedError",
]
