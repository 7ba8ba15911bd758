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
- ``SetServerAdminState``: a chunk server's administrative state (decommissioning, in
  maintenance until a time; in service is no record), durable here so that every master of
  every shard learns it with the ShardMap: each change increments the map's version, and
  ``FetchShardMap`` carries the states (``keelfs.master.blocks``);
- ``IssueTxIds(count)``: cluster-wide unique transaction ids for cross-shard transactions;
- ``AddBlockKey``: a new block-token key (``keelfs.datapath.tokens``), proposed with a random
  secret by the config leader every rotation interval (``keelfs.master.block_keys``); keys
  past their ``expires_ms`` (log time) are dropped by the next one.

Reads: ``shard_map()``, ``fetch_shard_map(since_version)``, ``masters()``,
``chunk_servers()``, ``next_tx_id()``, ``block_keys()`` (secrets: served to masters only,
never in the map). Its state is small, so by default it lives in memory
(``path=None``) and a restart restores the latest snapshot and replays the log; give it a path
to keep it in RocksDB like a data shard.
"""

from __future__ import annotations

import json
import os
import struct
from bisect import bisect_right
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from keelfs.errors import AlreadyExists, InvalidArgument, NotFound, Redirect
from keelfs.meta.commands import (
    CONFIG_COMMANDS,
    AddBlockKey,
    AddShard,
    BeginMove,
    FinishMove,
    IssueTxIds,
    RegisterChunkServer,
    RegisterMaster,
    RemoveShard,
    SealRing,
    SetServerAdminState,
    SetShardMembers,
    SwitchMove,
    UnregisterChunkServer,
)
from keelfs.meta.kvstore import KVStore, MemoryStore, RocksStore, Txn, prefix_end
from keelfs.meta.machine import DEFAULT_SESSION_TTL_MS, Context, MetaStateMachine
from keelfs.meta.paths import live_path, routing_key
from keelfs.meta.reshard_plan import DONE, PENDING, SWITCHED, Move, ReshardPlan
from keelfs.meta.ring import DEFAULT_VNODES, MAX_VNODES, HashRing, key_hash

__all__ = [
    "BlockKey",
    "ChunkServerInfo",
    "ConfigStateMachine",
    "ServerAdminState",
    "ShardMap",
    "advance_tx_ids",
]

_OWNER_CACHE_KEYS = 4096
"""At most this many routing keys' owners are kept per map (``ShardMap._owner_of_key``)."""
_U64 = struct.Struct(">Q")
_MAP = b"M"
_MASTER = b"N"
_CHUNK_SERVER = b"W"
_NEXT_TX = b"I"
_SEALED = b"R"
_PLAN = b"P"
_BLOCK_KEY = b"K"
_ADMIN_STATE = b"D"


def advance_tx_ids(
    records: Iterator[tuple[bytes, bytes]], gap: int
) -> Iterator[tuple[bytes, bytes]]:
    """A config state's records (a snapshot's, in key order) with the next cluster-wide id
    (transaction and block ids, ``IssueTxIds``) moved ``gap`` ahead: a cluster restored from a
    backup must not hand out again the ids the old one issued after it (``keelfs.server.
    backup``)."""
    placed = False
    for key, value in records:
        if not placed and key >= _NEXT_TX:
            placed = True
            first = _U64.unpack(value)[0] if key == _NEXT_TX else 1
            yield _NEXT_TX, _U64.pack(first + gap)
            if key == _NEXT_TX:
                continue
        yield key, value
    if not placed:
        yield _NEXT_TX, _U64.pack(1 + gap)


@dataclass(frozen=True)
class ShardMap:
    """Shard id -> {node id: address}, the ring over the shard ids, and the map's version.

    While shards are being added or removed (online resharding, ``keelfs.master.resharding``)
    the ring is the OLD one (``ring_members``: the shards on it, set exactly while a plan is
    under way; ``None`` means every shard) and ``overrides`` name the hash ranges already
    switched to their new owner, one move at a time. When every range has moved the ring
    becomes the new one and the overrides go."""

    version: int = 0
    shards: Mapping[str, Mapping[int, str]] = field(default_factory=dict)
    vnodes: int = DEFAULT_VNODES
    ring_members: tuple[str, ...] | None = None
    overrides: tuple[tuple[int, int, str], ...] = ()

    @cached_property
    def ring(self) -> HashRing:
        members = self.shards if self.ring_members is None else self.ring_members
        return HashRing(members, self.vnodes)

    @cached_property
    def _override_firsts(self) -> list[int]:
        return [o[0] for o in self.overrides]

    @cached_property
    def _owner_of_key(self) -> dict[str, str]:
        """Routing key -> owner, as found so far (``shard_for_path``). Why: every request is
        routed by its path on both ends, client and master, and a key's hash (blake2b) and
        place on the ring cost more than the rest of routing; a directory's files share the
        key. A map never changes (a new version is a new map), so neither does an answer."""
        return {}

    @property
    def resharding(self) -> bool:
        """Whether a shard is being added or removed (some ranges may not have moved yet)."""
        return self.ring_members is not None

    def owner_of_hash(self, h: int) -> str:
        if self.overrides:
            i = bisect_right(self._override_firsts, h) - 1
            if i >= 0 and self.overrides[i][0] <= h <= self.overrides[i][1]:
                return self.overrides[i][2]
        return self.ring.owner_of_hash(h)

    def shard_for_path(self, path: str) -> str:
        """The shard holding ``path``'s entry (the owner of its parent directory)."""
        key = routing_key(live_path(path))
        known = self._owner_of_key
        owner = known.get(key)
        if owner is None:
            owner = self.owner_of_hash(key_hash(key))
            if len(known) >= _OWNER_CACHE_KEYS:
                known.clear()  # many directories: start over rather than grow without end
            known[key] = owner
        return owner

    def shard_for_directory(self, directory: str) -> str:
        """The shard holding ``directory``'s self-record and its children."""
        return self.owner_of_hash(key_hash(live_path(directory)))

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
        d: dict[str, Any] = {
            "version": self.version,
            "vnodes": self.vnodes,
            "shards": {
                sid: {str(n): a for n, a in sorted(m.items())}
                for sid, m in sorted(self.shards.items())
            },
        }
        if self.ring_members is not None:
            d["ring"] = sorted(self.ring_members)
        if self.overrides:
            d["overrides"] = [list(o) for o in self.overrides]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ShardMap:
        shards = {
            str(sid): {int(n): str(a) for n, a in members.items()}
            for sid, members in d["shards"].items()
        }
        ring = d.get("ring")
        overrides = tuple(sorted((int(f), int(la), str(o)) for f, la, o in d.get("overrides", ())))
        return cls(
            int(d["version"]),
            shards,
            int(d["vnodes"]),
            None if ring is None else tuple(sorted(str(s) for s in ring)),
            overrides,
        )

    def encode(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes) -> ShardMap:
        return cls.from_dict(json.loads(raw))


@dataclass(frozen=True, slots=True)
class BlockKey:
    """A block-token key (``keelfs.datapath.tokens``): tokens are signed with it from
    ``active_ms`` on and accepted until ``expires_ms`` (wall-clock ms; 0: never expires, for
    a key an operator provisions)."""

    key_id: int
    secret: bytes = field(repr=False)
    active_ms: int = 0
    expires_ms: int = 0

    def expired(self, now_ms: int) -> bool:
        return bool(self.expires_ms) and self.expires_ms < now_ms

    def to_dict(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "secret": self.secret.hex(),
            "active_ms": self.active_ms,
            "expires_ms": self.expires_ms,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BlockKey:
        return cls(
            int(d["key_id"]),
            bytes.fromhex(str(d["secret"])),
            int(d.get("active_ms", 0)),
            int(d.get("expires_ms", 0)),
        )


@dataclass(frozen=True, slots=True)
class ChunkServerInfo:
    server_id: str
    address: str
    rack: str
    registered_ms: int


@dataclass(frozen=True, slots=True)
class ServerAdminState:
    """A chunk server's administrative state as the config group records it: ``state`` is
    ``decommissioning`` or ``maintenance`` (``until_ms``: its end, wall-clock ms); ``since_ms``
    is when it was set (log time)."""

    server_id: str
    state: str
    until_ms: int = 0
    since_ms: int = 0


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

    def server_admin_states(self) -> dict[str, ServerAdminState]:
        """Every chunk server not simply in service: server id -> its state."""
        out: dict[str, ServerAdminState] = {}
        for key, raw in self._store.scan(_ADMIN_STATE, prefix_end(_ADMIN_STATE)):
            d = json.loads(raw)
            sid = key[1:].decode()
            out[sid] = ServerAdminState(sid, d["state"], d["until"], d["since"])
        return out

    def reshard_plan(self) -> ReshardPlan | None:
        """The resharding under way, if any."""
        raw = self._store.get(_PLAN)
        return None if raw is None else ReshardPlan.decode(raw)

    def next_tx_id(self) -> int:
        """The first transaction id ``IssueTxIds`` will hand out next."""
        raw = self._store.get(_NEXT_TX)
        return 1 if raw is None else _U64.unpack(raw)[0]

    def block_keys(self) -> list[BlockKey]:
        """The block-token keys, oldest first (those expired by log time included until the
        next ``AddBlockKey`` drops them: a reader checks ``expired`` by its own clock)."""
        return [
            BlockKey.from_dict(json.loads(raw))
            for _, raw in self._store.scan(_BLOCK_KEY, prefix_end(_BLOCK_KEY))
        ]

    # -- helpers --------------------------------------------------------------------------------
    def _changed(self) -> None:
        self._map_cache = None

    def _load_map(self, kv: KVStore | Txn) -> ShardMap:
        raw = kv.get(_MAP)
        return ShardMap(0, {}, self.vnodes) if raw is None else ShardMap.decode(raw)

    def _save_map(
        self,
        txn: Txn,
        old: ShardMap,
        shards: Mapping[str, Mapping[int, str]],
        *,
        ring: tuple[str, ...] | None | bool = True,
        overrides: tuple[tuple[int, int, str], ...] | None = None,
    ) -> int:
        """Write the next version: ``ring``/``overrides`` as given, or (``True``/``None``)
        kept as they are."""
        new = ShardMap(
            old.version + 1,
            shards,
            old.vnodes,
            old.ring_members if ring is True else ring,  # type: ignore[arg-type]
            old.overrides if overrides is None else overrides,
        )
        txn.put(_MAP, new.encode())
        return new.version

    def _load_plan(self, txn: Txn) -> ReshardPlan | None:
        raw = txn.get(_PLAN)
        return None if raw is None else ReshardPlan.decode(raw)

    def _start_plan(
        self, txn: Txn, current: ShardMap, kind: str, shard: str, target: tuple[str, ...]
    ) -> tuple[ReshardPlan, tuple[str, ...]]:
        if txn.get(_PLAN) is not None:
            raise InvalidArgument(
                "a shard is being added or removed already; wait until it finishes", "shard_id"
            )
        old = current.ring.shards
        plan = ReshardPlan.build(kind, shard, old, target, current.vnodes)
        txn.put(_PLAN, plan.encode())
        return plan, old

    def _plan_move(self, txn: Txn, index: int) -> tuple[ReshardPlan, Move]:
        plan = self._load_plan(txn)
        if plan is None or index >= len(plan.moves):
            raise NotFound(str(index), "move", message=f"no resharding move {index}")
        return plan, plan.moves[index]

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
        if txn.get(_SEALED) is None or not current.shards:
            return {"version": self._save_map(txn, current, shards)}
        target = (*current.ring.shards, cmd.shard_id)
        plan, old = self._start_plan(txn, current, "add", cmd.shard_id, target)
        version = self._save_map(txn, current, shards, ring=old)
        return {"version": version, "moves": len(plan.moves)}

    def _op_remove_shard(self, txn: Txn, cmd: RemoveShard, ctx: Context) -> Any:
        current = self._load_map(txn)
        if cmd.shard_id not in current.shards:
            raise NotFound(cmd.shard_id, "shard")
        if len(current.shards) == 1:
            raise InvalidArgument("cannot remove the last shard", "shard_id")
        if txn.get(_SEALED) is None:
            shards = {k: v for k, v in current.shards.items() if k != cmd.shard_id}
            return {"version": self._save_map(txn, current, shards)}
        if cmd.shard_id not in current.ring.shards:
            raise InvalidArgument(f"shard {cmd.shard_id} is not on the ring", "shard_id")
        target = tuple(s for s in current.ring.shards if s != cmd.shard_id)
        plan, old = self._start_plan(txn, current, "remove", cmd.shard_id, target)
        version = self._save_map(txn, current, current.shards, ring=old)
        return {"version": version, "moves": len(plan.moves)}

    def _op_seal_ring(self, txn: Txn, cmd: SealRing, ctx: Context) -> Any:
        txn.put(_SEALED, b"1")
        return {"version": self._load_map(txn).version}

    def _op_begin_move(self, txn: Txn, cmd: BeginMove, ctx: Context) -> Any:
        plan, move = self._plan_move(txn, cmd.index)
        if move.state != PENDING:
            raise InvalidArgument(f"move {cmd.index} is {move.state}, not pending", "index")
        if move.txn_id != cmd.txn_id:
            txn.put(_PLAN, plan.with_move(cmd.index, _evolve(move, txn_id=cmd.txn_id)).encode())
        return {"previous": move.txn_id, "version": self._load_map(txn).version}

    def _op_switch_move(self, txn: Txn, cmd: SwitchMove, ctx: Context) -> Any:
        plan, move = self._plan_move(txn, cmd.index)
        if move.txn_id != cmd.txn_id:
            raise InvalidArgument(
                f"move {cmd.index} is attempted as {move.txn_id}, not {cmd.txn_id}", "txn_id"
            )
        if move.state != PENDING:
            return {"version": move.version}
        current = self._load_map(txn)
        overrides = tuple(
            sorted([*current.overrides, *((f, la, move.target) for f, la in move.ranges)])
        )
        version = self._save_map(txn, current, current.shards, overrides=overrides)
        moved = _evolve(move, state=SWITCHED, version=version)
        txn.put(_PLAN, plan.with_move(cmd.index, moved).encode())
        return {"version": version}

    def _op_finish_move(self, txn: Txn, cmd: FinishMove, ctx: Context) -> Any:
        plan, move = self._plan_move(txn, cmd.index)
        if move.txn_id != cmd.txn_id or move.state == PENDING:
            raise InvalidArgument(f"move {cmd.index} attempt {cmd.txn_id} did not switch", "index")
        plan = plan.with_move(cmd.index, _evolve(move, state=DONE))
        current = self._load_map(txn)
        if not plan.finished:
            txn.put(_PLAN, plan.encode())
            return {"version": current.version, "finished": False}
        # every range has moved: the new ring says what the overrides said
        shards = {k: v for k, v in current.shards.items() if k in plan.target}
        txn.delete(_PLAN)
        version = self._save_map(txn, current, shards, ring=None, overrides=())
        return {"version": version, "finished": True}

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
        txn.delete(_ADMIN_STATE + cmd.server_id.encode())
        return {}

    def _op_set_server_admin_state(self, txn: Txn, cmd: SetServerAdminState, ctx: Context) -> Any:
        """Record the state (none for ``in_service``) and increment the map version, so that
        every master's cheap map poll brings it. An unregistered server is NOT_FOUND; setting
        the state it already has changes nothing (a retried command)."""
        if txn.get(_CHUNK_SERVER + cmd.server_id.encode()) is None:
            raise NotFound(cmd.server_id, "chunk server")
        key = _ADMIN_STATE + cmd.server_id.encode()
        old = txn.get(key)
        current = self._load_map(txn)
        if cmd.state == "in_service":
            if old is None:
                return {"version": current.version}
            txn.delete(key)
        else:
            before = None if old is None else json.loads(old)
            if before is not None and (before["state"], before["until"]) == (
                cmd.state,
                cmd.until_ms,
            ):
                return {"version": current.version}
            since = before["since"] if before and before["state"] == cmd.state else ctx.now
            record = {"state": cmd.state, "until": cmd.until_ms, "since": since}
            txn.put(key, json.dumps(record, separators=(",", ":"), sort_keys=True).encode())
        return {"version": self._save_map(txn, current, current.shards)}

    def _op_issue_tx_ids(self, txn: Txn, cmd: IssueTxIds, ctx: Context) -> Any:
        raw = txn.get(_NEXT_TX)
        first = 1 if raw is None else _U64.unpack(raw)[0]
        txn.put(_NEXT_TX, _U64.pack(first + cmd.count))
        return {"first": first, "count": cmd.count}

    def _op_add_block_key(self, txn: Txn, cmd: AddBlockKey, ctx: Context) -> Any:
        """A new key with the next id; keys expired by the log's clock go. The secret is not
        in the result (results are cached in session replies)."""
        key_id = 1
        for key, raw in list(txn.scan(_BLOCK_KEY, prefix_end(_BLOCK_KEY))):
            key_id = max(key_id, struct.unpack_from(">I", key, 1)[0] + 1)
            if BlockKey.from_dict(json.loads(raw)).expired(ctx.now):
                txn.delete(key)
        record = BlockKey(key_id, bytes.fromhex(cmd.secret), cmd.active_ms, cmd.expires_ms)
        txn.put(_BLOCK_KEY + struct.pack(">I", key_id), json.dumps(record.to_dict()).encode())
        return {"key_id": key_id}


def _evolve(move: Move, **changes: Any) -> Move:
    from dataclasses import replace

    return replace(move, **changes)
