"""The config group's state: the ShardMap, masters, chunk servers, transaction ids.

``ShardMap`` is the routing table every client and master caches: shard id -> members (node
id -> client address), the consistent-hash ring over the shard ids (``vnodes`` points each),
and a ``version`` that every change increments, so a cached map can be refreshed only when it
is older than what a ``REDIRECT`` names.

``ConfigStateMachine`` is the config group's replicated state machine (same apply pipeline,
sessions and snapshots as a data shard, ``keelfs.meta.machine``):

- ``RegisterMaster(node_id, address)``: the masters a shard may name as members;
- ``AddShard``/``RemoveShard``/``SetShardMembers``: map changes (moving data is resharding's);
- ``RegisterChunkServer``/``UnregisterChunkServer``: the chunk-server registry (their
  liveness and block reports are soft state, never in the log: DESIGN §2.8);
- ``IssueTxIds(count)``: cluster-wide unique transaction ids for cross-shard transactions.

Reads: ``shard_map()``, ``fetch_shard_map(since_version)``, ``masters()``,
``chunk_servers()``, ``next_tx_id()``. Its state is small, so by default it lives in memory
(``path=None``) and a restart restores the latest snapshot and replays the log; give it a path
to keep it in RocksDB like a data shard.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from keelfs.errors import AlreadyExists, InvalidArgument, NotFound, Redirect
from keelfs.meta.commands import (
    CONFIG_COMMANDS,
    AddShard,
    IssueTxIds,
    RegisterChunkServer,
    RegisterMaster,
    RemoveShard,
    SetShardMembers,
    UnregisterChunkServer,
)
from keelfs.meta.kvstore import KVStore, MemoryStore, RocksStore, Txn, prefix_end
from keelfs.meta.machine import DEFAULT_SESSION_TTL_MS, Context, MetaStateMachine
from keelfs.meta.ring import DEFAULT_VNODES, MAX_VNODES, HashRing

__all__ = ["ChunkServerInfo", "ConfigStateMachine", "ShardMap"]

_U64 = struct.Struct(">Q")
_MAP = b"M"
_MASTER = b"N"
_CHUNK_SERVER = b"W"
_NEXT_TX = b"I"


@dataclass(frozen=True)
class ShardMap:
    """Shard id -> {node id: address}, the ring over the shard ids, and the map's version."""

    version: int = 0
    shards: Mapping[str, Mapping[int, str]] = field(default_factory=dict)
    vnodes: int = DEFAULT_VNODES

    @cached_property
    def ring(self) -> HashRing:
        return HashRing(self.shards, self.vnodes)

    def shard_for_path(self, path: str) -> str:
        """The shard holding ``path``'s entry (the owner of its parent directory)."""
        return self.ring.shard_for_path(path)

    def shard_for_directory(self, directory: str) -> str:
        """The shard holding ``directory``'s self-record and its children."""
        return self.ring.lookup(directory)

    def members(self, shard_id: str) -> dict[int, str]:
        members = self.shards.get(shard_id)
        if members is None:
            raise NotFound(shard_id, "shard")
        return dict(members)

    def redirect(self, path: str) -> Redirect:
        """The ``REDIRECT`` error for a request about ``path`` sent to the wrong shard."""
        owner = self.shard_for_path(path)
        addresses = {str(k): v for k, v in sorted(self.shards[owner].items())}
        return Redirect(path, owner, self.version, addresses)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "vnodes": self.vnodes,
            "shards": {
                sid: {str(n): a for n, a in sorted(m.items())}
                for sid, m in sorted(self.shards.items())
            },
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ShardMap:
        shards = {
            str(sid): {int(n): str(a) for n, a in members.items()}
            for sid, members in d["shards"].items()
        }
        return cls(int(d["version"]), shards, int(d["vnodes"]))

    def encode(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes) -> ShardMap:
        return cls.from_dict(json.loads(raw))


@dataclass(frozen=True, slots=True)
class ChunkServerInfo:
    server_id: str
    address: str
    rack: str
    registered_ms: int


class ConfigStateMachine(MetaStateMachine):
    """The config group's state machine (see the module doc). ``vnodes`` and
    ``session_ttl_ms`` are replicated semantics: every member must use the same values."""

    commands = CONFIG_COMMANDS

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        vnodes: int = DEFAULT_VNODES,
        session_ttl_ms: int = DEFAULT_SESSION_TTL_MS,
    ) -> None:
        if not 1 <= vnodes <= MAX_VNODES:
            raise ValueError(f"vnodes must be 1..{MAX_VNODES}")
        self.vnodes = vnodes
        self._map_cache: ShardMap | None = None
        store: KVStore = MemoryStore() if path is None else RocksStore(path)
        super().__init__(store, session_ttl_ms=session_ttl_ms)

    # -- reads ----------------------------------------------------------------------------------
    def shard_map(self) -> ShardMap:
        if self._map_cache is None:
            self._map_cache = self._load_map(self._store)
        return self._map_cache

    def fetch_shard_map(self, since_version: int | None = None) -> ShardMap | None:
        """FetchShardMap: the map, or ``None`` if the caller's ``since_version`` is current."""
        current = self.shard_map()
        return None if since_version == current.version else current

    def masters(self) -> dict[int, str]:
        return {
            _U64.unpack_from(k, 1)[0]: v.decode()
            for k, v in self._store.scan(_MASTER, prefix_end(_MASTER))
        }

    def chunk_servers(self) -> dict[str, ChunkServerInfo]:
        out: dict[str, ChunkServerInfo] = {}
        for key, raw in self._store.scan(_CHUNK_SERVER, prefix_end(_CHUNK_SERVER)):
            d = json.loads(raw)
            sid = key[1:].decode()
            out[sid] = ChunkServerInfo(sid, d["address"], d["rack"], d["registered"])
        return out

    def next_tx_id(self) -> int:
        """The first transaction id ``IssueTxIds`` will hand out next."""
        raw = self._store.get(_NEXT_TX)
        return 1 if raw is None else _U64.unpack(raw)[0]

    # -- helpers --------------------------------------------------------------------------------
    def _changed(self) -> None:
        self._map_cache = None

    def _load_map(self, kv: KVStore | Txn) -> ShardMap:
        raw = kv.get(_MAP)
        return ShardMap(0, {}, self.vnodes) if raw is None else ShardMap.decode(raw)

    def _save_map(self, txn: Txn, old: ShardMap, shards: Mapping[str, Mapping[int, str]]) -> int:
        new = ShardMap(old.version + 1, shards, old.vnodes)
        txn.put(_MAP, new.encode())
        return new.version

    def _member_addresses(self, txn: Txn, members: tuple[int, ...]) -> dict[int, str]:
        out: dict[int, str] = {}
        for node_id in members:
            raw = txn.get(_MASTER + _U64.pack(node_id))
            if raw is None:
                raise NotFound(str(node_id), "node", message=f"master {node_id} is not registered")
            out[node_id] = raw.decode()
        return out

    # -- commands -------------------------------------------------------------------------------
    def _op_register_master(self, txn: Txn, cmd: RegisterMaster, ctx: Context) -> Any:
        txn.put(_MASTER + _U64.pack(cmd.node_id), cmd.address.encode())
        current = self._load_map(txn)
        shards = {
            sid: {n: (cmd.address if n == cmd.node_id else a) for n, a in m.items()}
            for sid, m in current.shards.items()
        }
        if shards != current.shards:
            return {"version": self._save_map(txn, current, shards)}
        return {"version": current.version}

    def _op_add_shard(self, txn: Txn, cmd: AddShard, ctx: Context) -> Any:
        current = self._load_map(txn)
        if cmd.shard_id in current.shards:
            raise AlreadyExists(cmd.shard_id, "shard")
        shards = dict(current.shards)
        shards[cmd.shard_id] = self._member_addresses(txn, cmd.members)
        return {"version": self._save_map(txn, current, shards)}

    def _op_remove_shard(self, txn: Txn, cmd: RemoveShard, ctx: Context) -> Any:
        current = self._load_map(txn)
        if cmd.shard_id not in current.shards:
            raise NotFound(cmd.shard_id, "shard")
        if len(current.shards) == 1:
            raise InvalidArgument("cannot remove the last shard", "shard_id")
        shards = {k: v for k, v in current.shards.items() if k != cmd.shard_id}
        return {"version": self._save_map(txn, current, shards)}

    def _op_set_shard_members(self, txn: Txn, cmd: SetShardMembers, ctx: Context) -> Any:
        current = self._load_map(txn)
        if cmd.shard_id not in current.shards:
            raise NotFound(cmd.shard_id, "shard")
        members = self._member_addresses(txn, cmd.members)
        if members == current.shards[cmd.shard_id]:
            return {"version": current.version}
        shards = dict(current.shards)
        shards[cmd.shard_id] = members
        return {"version": self._save_map(txn, current, shards)}

    def _op_register_chunk_server(self, txn: Txn, cmd: RegisterChunkServer, ctx: Context) -> Any:
        key = _CHUNK_SERVER + cmd.server_id.encode()
        old = txn.get(key)
        registered = ctx.now if old is None else json.loads(old)["registered"]
        record = {"address": cmd.address, "rack": cmd.rack, "registered": registered}
        txn.put(key, json.dumps(record, separators=(",", ":"), sort_keys=True).encode())
        return {"server_id": cmd.server_id, "new": old is None}

    def _op_unregister_chunk_server(
        self, txn: Txn, cmd: UnregisterChunkServer, ctx: Context
    ) -> Any:
        key = _CHUNK_SERVER + cmd.server_id.encode()
        if txn.get(key) is None:
            raise NotFound(cmd.server_id, "chunk server")
        txn.delete(key)
        return {}

    def _op_issue_tx_ids(self, txn: Txn, cmd: IssueTxIds, ctx: Context) -> Any:
        raw = txn.get(_NEXT_TX)
        first = 1 if raw is None else _U64.unpack(raw)[0]
        txn.put(_NEXT_TX, _U64.pack(first + cmd.count))
        return {"first": first, "count": cmd.count}
