"""Metadata: the deterministic state machines of the data shards and the config group.

- ``paths``: validation and canonical form of paths;
- ``ring``: consistent hashing with virtual nodes (which shard owns a directory);
- ``commands``: the commands, their versioned wire form (``Envelope``) and ``Result``;
- ``namespace.ShardStateMachine``: one data shard's namespace, in RocksDB;
- ``shardmap.ShardMap`` / ``ConfigStateMachine``: the config group's state;
- ``machine.MetaStateMachine``: the apply pipeline both share (clock, sessions, snapshots);
- ``records``: stored inodes and the read views (``FileInfo``, ``Listing``, ``ContentSummary``).

Services (RPC handlers, proposing, ReadIndex) are built on top of these elsewhere.
"""

from keelfs.meta.commands import Envelope, Result
from keelfs.meta.namespace import ShardStateMachine
from keelfs.meta.records import BlockInfo, ContentSummary, FileInfo, Listing
from keelfs.meta.ring import HashRing
from keelfs.meta.shardmap import ConfigStateMachine, ShardMap

__all__ = [
    "BlockInfo",
    "ConfigStateMachine",
    "ContentSummary",
    "Envelope",
    "FileInfo",
    "HashRing",
    "Listing",
    "Result",
    "ShardMap",
    "ShardStateMachine",
]
