"""The records of a data shard's state machine and what every command on them shares.

``keelfs.meta.namespace.ShardStateMachine`` is this plus its commands: the namespace's own
(``namespace``), cross-shard transactions' (``txn_steps``) and resharding moves'
(``move_steps``).

Placement (DESIGN §2.5). A path's entry lives on the shard that owns its PARENT directory on
the ring, so one directory's entries are together and ``ls`` is one read. A directory also has
a *self-record* on the shard that owns the directory itself (where its children are): a create
checks its parent there, locally, and listing, emptiness checks and child-count changes need
nothing from another shard. When both records of a directory are on one shard they are kept
identical; keeping them in step across shards is the cross-shard transactions' work
(``keelfs.meta.transactions``, ``keelfs.master.transactions``).

This state machine does not know the ring: the proposer (the master service) checks that every
record a command touches is owned by this shard before proposing it. If a record the command
needs is not here, the command fails with ``NotFound`` (``kind`` "directory record" when it is
a directory's self-record that lives elsewhere) and changes nothing.

Keys (paths as UTF-8; the NUL separator cannot occur in a name, so ``E<dir>\\x00`` is exactly
the prefix of ``dir``'s children, sorted by name, and ``E<dir>/`` the prefix of everything
deeper)::

    D <dir path>                             self-record of a directory (an Inode)
    E <parent path> \\x00 <name>              entry: file or directory (an Inode)
    H <u64 session>                          lease holder: u64 expiry (log time, ms)
    X <u64 expiry> <u64 session>             lease expiry index (empty)
    L <u64 session> <path>                   a file the session holds the lease of (empty)
    Q <u64 block id>                         block queued for deletion: [gen stamp, length]

plus the shared keys of ``keelfs.meta.machine`` (applied index, clock, sessions). Nothing per
file is held in Python: the object holds the store handle and a few settings, and every read
and write goes to RocksDB, so a shard may hold more files than fit in memory.

Writer leases (HDFS-style, one holder per file): ``Create`` gives the envelope's session the
lease of the new file; ``AddBlock`` and ``RenewLease`` extend every lease the session holds to
``clock + lease_ttl_ms``; ``CompleteFile`` releases it. A lease past its expiry (by log time)
is released during the next apply, as is every lease of a session that expires or closes: the
file stays under construction with no holder, so a new writer may take it over with
``Create(overwrite=True)``; recovering its last block is the block layer's work.

Deleted files' blocks go to a queue (``Q``) that the block layer drains after the chunk
servers have deleted the replicas (``DequeueBlockDeletes``).
"""

from __future__ import annotations

import base64
import json
import os
import struct
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from keelfs.errors import (
    InvalidArgument,
    IsADirectory,
    KeelError,
    LeaseConflict,
    NotADirectory,
    NotFound,
    ResourceExhausted,
)
from keelfs.meta import blockrefs, moves, paths, quotas, sessions
from keelfs.meta import transactions as tx
from keelfs.meta import tree_fences as tf
from keelfs.meta.commands import (
    TxnBegin,
    TxnDecide,
    TxnFinish,
    TxnPrepare,
    check_range,
)
from keelfs.meta.kvstore import KVStore, MemoryStore, RocksStore, Txn, prefix_end
from keelfs.meta.machine import DEFAULT_SESSION_TTL_MS, MetaStateMachine
from keelfs.meta.ranges import RangeState, RangeTable
from keelfs.meta.records import Inode, decode_cached
from keelfs.meta.ring import key_hash

__all__ = [
    "DEFAULT_MAX_LEASES_PER_SESSION",
    "DEFAULT_MAX_OPEN_TXNS",
    "DEFAULT_LEASE_TTL_MS",
    "DEFAULT_TXN_RETENTION_MS",
    "MAX_LIST_LIMIT",
    "MOVE_PAGE_BYTES",
    "ShardRecords",
]

DEFAULT_LEASE_TTL_MS = 60_000
DEFAULT_MAX_LEASES_PER_SESSION = 100_000
DEFAULT_MAX_OPEN_TXNS = 10_000
"""Transactions this shard may have open at once (coordinated or prepared here): each holds
locks and is re-driven by recovery, so a flood of cross-shard requests is refused instead."""
DEFAULT_TXN_RETENTION_MS = 3_600_000
"""How long finished transaction records are kept (the seed's hour)."""
MAX_LIST_LIMIT = 10_000
MOVE_PAGE_BYTES = 256 * 1024
"""Record bytes per page of a move (``move_records``): base64 in a ``move_ingest`` they make
about 350 KB, under the 1 MiB command limit with room for one more inline record."""
_RETRY_ANEW = frozenset({"UNAVAILABLE", "REDIRECT"})
"""Error codes of a transaction's abort after which the client's request may run again."""

_WHOLE_STORE_OPS = frozenset({"set_quota", "quota_report"})
"""Commands that see every record of the store, moving ranges' too: a quota's first count
must count what ``_derived`` counts, every entry written here (``keelfs.meta.quotas``)."""
_U64 = struct.Struct(">Q")
_SELF = b"D"
_ENTRY = b"E"
_HOLDER = b"H"
_LEASE_EXPIRY = b"X"
_LEASE = b"L"
_DELETE_QUEUE = b"Q"
_LEASE_COUNT = b"C"
_TOUCHED_KEPT = 256


class _Reader(Protocol):
    def get(self, key: bytes) -> bytes | None: ...
    def scan(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]: ...


# -- keys ---------------------------------------------------------------------------------------
def _b(text: str) -> bytes:
    return text.encode("utf-8")


def _self_key(path: str) -> bytes:
    return _SELF + _b(path)


def _entry_key(path: str) -> bytes:
    return _ENTRY + _b(paths.parent(path)) + b"\x00" + _b(paths.name(path))


def _children_prefix(directory: str) -> bytes:
    return _ENTRY + _b(directory) + b"\x00"


def _entry_path(key: bytes) -> str:
    parent, _, name = key[len(_ENTRY) :].partition(b"\x00")
    return paths.join(parent.decode(), name.decode())


def _subtree_entry_ranges(directory: str) -> list[tuple[bytes, bytes]]:
    """Key ranges holding the entries of everything below ``directory``."""
    if directory == paths.ROOT:
        return [(_ENTRY + b"/", prefix_end(_ENTRY + b"/"))]
    children = _children_prefix(directory)
    deeper = _ENTRY + _b(directory) + b"/"
    return [(children, prefix_end(children)), (deeper, prefix_end(deeper))]


def _subtree_self_range(directory: str) -> tuple[bytes, bytes]:
    """The self-records of the directories strictly below ``directory`` (not the root)."""
    start = _SELF + _b(directory) + b"/"
    return start, prefix_end(start)


def _holder_key(session_id: int) -> bytes:
    return _HOLDER + sessions.pack_id(session_id)


def _lease_expiry_key(expiry: int, session_id: int) -> bytes:
    return _LEASE_EXPIRY + _U64.pack(expiry) + sessions.pack_id(session_id)


def _lease_count_key(session_id: int) -> bytes:
    return _LEASE_COUNT + sessions.pack_id(session_id)


def _lease_key(session_id: int, path: str) -> bytes:
    return _LEASE + sessions.pack_id(session_id) + _b(path)


def _queue_key(block_id: int) -> bytes:
    return _DELETE_QUEUE + _U64.pack(block_id)


def _first(kv: _Reader, start: bytes, end: bytes) -> tuple[bytes, bytes] | None:
    return next(iter(kv.scan(start, end)), None)


class ShardRecords(MetaStateMachine):
    """A shard member's records in its store, and the lookups, writes, lease keeping and
    lock checks that the namespace, transaction and move commands share (the commands
    themselves: ``keelfs.meta.namespace.ShardStateMachine``)."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        shard_id: str = "",
        session_ttl_ms: int = DEFAULT_SESSION_TTL_MS,
        lease_ttl_ms: int = DEFAULT_LEASE_TTL_MS,
        txn_retention_ms: int = DEFAULT_TXN_RETENTION_MS,
        max_sessions_per_user: int = sessions.DEFAULT_MAX_SESSIONS_PER_USER,
        max_leases_per_session: int = DEFAULT_MAX_LEASES_PER_SESSION,
        max_open_txns: int = DEFAULT_MAX_OPEN_TXNS,
    ) -> None:
        if max_open_txns <= 0:
            raise ValueError("max_open_txns must be positive")
        if max_leases_per_session <= 0:
            raise ValueError("max_leases_per_session must be positive")
        if lease_ttl_ms <= 0:
            raise ValueError("lease_ttl_ms must be positive")
        if txn_retention_ms < 0:
            raise ValueError("txn_retention_ms must not be negative")
        store: KVStore = MemoryStore() if path is None else RocksStore(path)
        self.shard_id = shard_id
        self.lease_ttl_ms = lease_ttl_ms
        self.txn_retention_ms = txn_retention_ms
        self.max_leases_per_session = max_leases_per_session
        self.max_open_txns = max_open_txns
        """Replicated semantics: the same on every member."""
        self._table: RangeTable | None = None
        self._fresh_blocks: list[int] = []
        self._touched: dict[bytes, tuple[int, bytes]] = {}
        """Directory records ``_touch_dir`` wrote: key -> (mtime, the bytes written)."""
        self._unlocked_at = -1
        """An applied index at which nothing here was locked or fenced (``lock_holder``)."""
        self._quota_limits: dict[str, quotas.Limits] | None = None
        self._quotas_changed = False
        """A quota command applied: reload the limits once its write is in the store."""
        """Block ids this apply's ``AddBlock`` brought into the cluster (``blockrefs``)."""
        super().__init__(
            store, session_ttl_ms=session_ttl_ms, max_sessions_per_user=max_sessions_per_user
        )
        blockrefs.ensure(store)

    @property
    def ranges(self) -> RangeTable:
        """The hash ranges this shard is moving or has moved (cached; reloaded after a move
        command or a restore)."""
        if self._table is None:
            self._table = moves.load_table(self._store)
        return self._table

    def range_of(self, directory: str) -> RangeState | None:
        """The move state of ``directory``'s records here (None: plainly owned or not)."""
        table = self.ranges
        return table.lookup(key_hash(directory)) if table else None

    def move_state(self, txn_id: int) -> dict[str, object] | None:
        return moves.load_move(self._store, txn_id)

    def move_records(
        self,
        txn_id: int,
        start_after: bytes | None = None,
        limit: int = 1000,
        max_bytes: int = MOVE_PAGE_BYTES,
    ) -> list[tuple[bytes, bytes]]:
        """Up to ``limit`` namespace records (key, value) in the ranges of move ``txn_id``
        here, in key order after ``start_after``: what the move copies, or drops after. A
        page ends once its keys and values pass ``max_bytes`` (always at least one record),
        so that the ``move_ingest`` carrying it stays a command of sane size (inline files'
        records are up to ~88 KB each)."""
        check_range(limit, 1, MAX_LIST_LIMIT, "limit")
        spans = [(r.first, r.last) for r in self.ranges.of_txn(txn_id)]
        out: list[tuple[bytes, bytes]] = []
        size = 0
        if not spans:
            return out
        for prefix in moves.RECORD_PREFIXES:
            start = prefix
            if start_after is not None:
                if start_after[:1] > prefix:
                    continue
                if start_after[:1] == prefix:
                    start = start_after + b"\x00"
            for key, value in self._store.scan(start, prefix_end(prefix)):
                directory = moves.routing_dir(key)
                assert directory is not None
                h = key_hash(directory)
                if any(first <= h <= last for first, last in spans):
                    out.append((bytes(key), bytes(value)))
                    size += len(key) + len(value)
                    if len(out) == limit or size >= max_bytes:
                        return out
        return out

    def _stage(self, txn: Txn, command: Any) -> Txn:
        table = self.ranges
        if not table or command.op.startswith("move_") or command.op in _WHOLE_STORE_OPS:
            return txn.child()
        if isinstance(command, TxnBegin | TxnPrepare | TxnDecide | TxnFinish):
            return moves.GuardedTxn(txn, table, tx.home_dirs(self._part_of(txn, command)))
        homes: set[str] = set()
        for attr in ("path", "src", "dst"):
            value = getattr(command, attr, None)
            if isinstance(value, str) and value:
                try:
                    normal = paths.normalize(value)
                except KeelError:
                    continue  # the handler refuses it
                homes.add(normal)
                if normal != paths.ROOT:
                    homes.add(paths.parent(normal))
        return moves.GuardedTxn(txn, table, frozenset(homes) if homes else None)

    @staticmethod
    def _part_of(
        kv: _Reader, command: TxnBegin | TxnPrepare | TxnDecide | TxnFinish
    ) -> tuple[tx.Step, ...]:
        """This shard's steps of the transaction ``command`` is about (none if unknown or
        malformed: the handler says why)."""
        if isinstance(command, TxnBegin | TxnPrepare):
            text: str | None = command.part
        else:
            record = tx.load(kv, command.txn_id)
            text = None if record is None else record.part
        try:
            return () if text is None else tx.decode_part(text)
        except KeelError:
            return ()

    @property
    def quota_limits(self) -> dict[str, quotas.Limits]:
        """The active quotas (directory -> limits), as of the store (cached)."""
        if self._quota_limits is None:
            self._quota_limits = quotas.limits(self._store)
        return self._quota_limits

    def _changed(self) -> None:
        super()._changed()
        if self._quotas_changed:
            self._quotas_changed = False
            self._quota_limits = None

    def _admit(self, before: Txn, stage: Txn, command: Any) -> None:
        """Quotas: a command that adds names or space under a quota directory past its limit
        is refused (``keelfs.meta.quotas``). Not a resharding move (it carries records that
        exist already) nor a transaction's steps (checked when its part is locked here:
        ``_check_steps``, and then applied whatever comes)."""
        roots = self.quota_limits
        if not roots or command.op.startswith(("move_", "txn_")):
            return
        quotas.check(before, quotas.deltas(before, stage.writes, roots), roots)

    def restore_chunks(self, chunks: Any, index: int) -> None:
        self._table = None
        self._quota_limits = None
        try:
            super().restore_chunks(chunks, index)
            blockrefs.ensure(self._store, restored=True)
        finally:
            self._table = None

    def _derived(
        self, before: KVStore | Txn, writes: Mapping[bytes, bytes | None]
    ) -> dict[bytes, bytes | None]:
        fresh, self._fresh_blocks = self._fresh_blocks, []
        out = blockrefs.index_writes(before, writes, fresh)
        self._keep_snapshot_blocks(before, writes, out)
        if self.quota_limits:
            out.update(quotas.usage_writes(before, writes, self.quota_limits))
        return out

    @staticmethod
    def _keep_snapshot_blocks(
        before: _Reader, writes: Mapping[bytes, bytes | None], out: dict[bytes, bytes | None]
    ) -> None:
        """Unqueue the deletion of every block a snapshot's copy here still references
        (``keelfs.meta.snapshots``): a delete, overwrite or truncate of the live file gives
        up its own reference only. A queueing in ``writes`` is undone in ``out`` (the key
        written back as it was ``before``); the copies' index is ``before`` with ``out``'s
        changes (``index_writes``)."""
        queued = {
            _U64.unpack_from(key, 1)[0]: key
            for key, value in writes.items()
            if key[:1] == _DELETE_QUEUE and value is not None
        }
        if not queued:  # nothing queued for deletion (a create, most commands)
            return
        for block_id in blockrefs.held_by_snapshots_after(before, out, queued):
            out[queued[block_id]] = before.get(queued[block_id])

    def referenced_blocks(self, block_ids: Any) -> set[int]:
        """Those of ``block_ids`` that a record here references (an entry, an undecided
        transaction record, a moved-in copy). Linearizable after a ReadIndex barrier."""
        return blockrefs.referenced(self._store, block_ids)

    def blocks_gained(self) -> int:
        """How many times a block reference arrived here from elsewhere (a rename, a move):
        the orphan collector's check that nothing travelled between its reads."""
        return blockrefs.gained(self._store)

    @staticmethod
    def _inode(kv: _Reader, key: bytes) -> Inode | None:
        raw = kv.get(key)
        return None if raw is None else decode_cached(raw)

    def _entry(self, kv: _Reader, path: str) -> Inode | None:
        return None if path == paths.ROOT else self._inode(kv, _entry_key(path))

    def _lookup(self, kv: _Reader, path: str) -> Inode | None:
        """The record stat shows: the entry, or for the root its self-record."""
        if path == paths.ROOT:
            return self._inode(kv, _self_key(path))
        return self._entry(kv, path)

    def _missing(self, kv: _Reader, path: str) -> KeelError:
        """The error for a path that is not here: ``NotADirectory`` if an ancestor is a file,
        else ``NotFound``."""
        for ancestor in paths.ancestors(path)[1:]:
            inode = self._entry(kv, ancestor)
            if inode is None:
                break
            if not inode.is_dir:
                return NotADirectory(ancestor)
        return NotFound(path, "directory" if path == paths.ROOT else "path")

    def _require_dir(self, kv: _Reader, directory: str) -> Inode:
        """The self-record of ``directory``, or the error saying why there is none here."""
        record = self._inode(kv, _self_key(directory))
        if record is not None:
            return record
        inode = self._entry(kv, directory)
        if inode is None:
            raise self._missing(kv, directory)
        if not inode.is_dir:
            raise NotADirectory(directory)
        raise _not_local(directory)

    def _put(self, txn: Txn, path: str, inode: Inode) -> None:
        """Write ``path``'s record(s) (its entry exists): the entry, and the self-record of a
        directory when that is here too (the two are kept identical)."""
        if path != paths.ROOT:
            txn.put(_entry_key(path), inode.encode())
        if inode.is_dir and (path == paths.ROOT or txn.get(_self_key(path)) is not None):
            txn.put(_self_key(path), inode.encode())

    def _touch_dir(self, txn: Txn, directory: str, now: int) -> None:
        """A child of ``directory`` was added, removed or renamed: its mtime is now.

        A record that holds exactly the bytes an earlier touch at ``now`` wrote is left as it
        is: rewriting it would write those same bytes. So the creates of one pack (one clock)
        rewrite their directory's records once, not once each."""
        keys = [_self_key(directory)]
        if directory != paths.ROOT:
            keys.append(_entry_key(directory))
        touched = self._touched
        rewritten: dict[bytes, bytes] = {}  # the two records are usually the same bytes
        for key in keys:  # only the records that are here
            raw = txn.get(key)
            if raw is None or touched.get(key) == (now, raw):
                continue
            new = rewritten.get(raw)
            if new is None:
                record = decode_cached(raw)
                if not record.is_dir:
                    continue
                new = rewritten[raw] = record.evolve(mtime=now).encode()
            txn.put(key, new)
            if len(touched) >= _TOUCHED_KEPT:
                touched.clear()
            touched[key] = (now, new)

    def _queue_blocks(self, txn: Txn, inode: Inode) -> int:
        for block in inode.blocks:
            txn.put(
                _queue_key(block.block_id), json.dumps([block.gen_stamp, block.length]).encode()
            )
        return len(inode.blocks)

    def _renew(self, txn: Txn, session_id: int, now: int) -> None:
        old = txn.get(_holder_key(session_id))
        if old is not None:
            txn.delete(_lease_expiry_key(_U64.unpack(old)[0], session_id))
        expiry = now + self.lease_ttl_ms
        txn.put(_holder_key(session_id), _U64.pack(expiry))
        txn.put(_lease_expiry_key(expiry, session_id), b"")

    def _drop_lease(self, txn: Txn, session_id: int, path: str) -> None:
        """``session_id`` no longer holds ``path``; with nothing left, it is no holder at all."""
        txn.delete(_lease_key(session_id, path))
        self._drop_lease_if_idle(txn, session_id)

    def _drop_lease_if_idle(self, txn: Txn, session_id: int) -> None:
        prefix = _LEASE + sessions.pack_id(session_id)
        if _first(txn, prefix, prefix_end(prefix)) is None:
            self._forget_holder(txn, session_id)

    def _forget_holder(self, txn: Txn, session_id: int) -> None:
        old = txn.get(_holder_key(session_id))
        if old is not None:
            txn.delete(_lease_expiry_key(_U64.unpack(old)[0], session_id))
            txn.delete(_holder_key(session_id))
        txn.delete(_lease_count_key(session_id))  # it holds nothing here any more

    def _release_holder(self, txn: Txn, session_id: int) -> None:
        """Release every lease of ``session_id``: its files stay under construction, unheld."""
        prefix = _LEASE + sessions.pack_id(session_id)
        for key, _ in list(txn.scan(prefix, prefix_end(prefix))):
            path = key[len(prefix) :].decode()
            inode = self._entry(txn, path)
            if inode is not None and inode.lease_holder == session_id:
                self._put(txn, path, inode.evolve(lease_holder=0))
            txn.delete(key)
        self._forget_holder(txn, session_id)

    def _check_lease_room(self, txn: Txn, session_id: int) -> None:
        """``ResourceExhausted`` if ``session_id`` already writes ``max_leases_per_session``
        files here (each open file costs the shard records and the lease scan); else count the
        lease about to be taken.

        Why not simply count the session's leases: that scan on every create made a session
        writing N files cost O(N^2). The count kept here is an upper bound instead: each lease
        taken adds one, leases given up are not subtracted (they leave in many places), and
        only when the bound reaches the limit is it set to the true count by one scan. So the
        scan runs only for a session at or near its limit, and the limit is never passed.
        (Leases a resharding move brings in are not counted until that scan.)"""
        key = _lease_count_key(session_id)
        raw = txn.get(key)
        bound = 0 if raw is None else _U64.unpack(raw)[0]
        if bound >= self.max_leases_per_session:
            prefix = _LEASE + sessions.pack_id(session_id)
            bound = sum(1 for _ in txn.scan(prefix, prefix_end(prefix)))
            if bound >= self.max_leases_per_session:
                raise ResourceExhausted(
                    "leases",
                    self.max_leases_per_session,
                    message=f"this session already writes {bound} files (the most one "
                    "session may hold open): complete some first",
                )
        txn.put(key, _U64.pack(bound + 1))

    def _holds_lease(self, kv: _Reader, session_id: int) -> bool:
        # housekeeping at the start of every apply removes expired holders, so a holder
        # record that exists is a live lease
        return session_id != 0 and kv.get(_holder_key(session_id)) is not None

    def _housekeeping(self, txn: Txn, clock: int) -> None:
        floor = self.expiry_floors.get(_LEASE_EXPIRY, 0)
        if clock <= floor:
            return
        start, end = _LEASE_EXPIRY + _U64.pack(floor), _LEASE_EXPIRY + _U64.pack(clock)
        for key, _ in list(txn.scan(start, end)):
            # releasing the holder deletes its expiry key: nothing stays below ``clock``
            self._release_holder(txn, sessions.unpack_id(key, len(_LEASE_EXPIRY) + 8))
        self.raise_floor(_LEASE_EXPIRY, clock)
        for key, txn_id in tx.due_for_forgetting(txn, self.expiry_floors.get(tx.GC, 0), clock):
            txn.delete(key)
            txn.delete(tx.txn_key(txn_id))
        self.raise_floor(tx.GC, clock)

    def _session_ended(self, txn: Txn, session_id: int) -> None:
        self._release_holder(txn, session_id)

    def _writer_file(self, txn: Txn, path: str, session_id: int) -> Inode:
        """The file at ``path``, which ``session_id`` must be writing."""
        self._check_unlocked(txn, path, parent=False)
        inode = self._lookup(txn, path)
        if inode is None:
            raise self._missing(txn, path)
        if inode.is_dir:
            raise IsADirectory(path)
        if not inode.under_construction or inode.lease_holder != session_id:
            raise LeaseConflict(
                path,
                inode.lease_user if inode.lease_holder else "",
                message=f"this session holds no writer lease on {path}",
            )
        return inode

    def _subtree(self, txn: Txn, directory: str) -> list[tuple[str, Inode]]:
        """Every entry below ``directory`` (on this shard), after checking that each directory
        among them has its self-record here too (else the subtree is not all local)."""
        out: list[tuple[str, Inode]] = []
        for start, end in _subtree_entry_ranges(directory):
            for key, raw in txn.scan(start, end):
                path, inode = _entry_path(key), Inode.decode(raw)
                if inode.is_dir and txn.get(_self_key(path)) is None:
                    raise _not_local(path)
                out.append((path, inode))
        return out

    def _remove_file_state(self, txn: Txn, path: str, inode: Inode) -> int:
        """Queue a deleted file's blocks and drop its lease; the number of blocks queued."""
        if inode.lease_holder:
            self._drop_lease(txn, inode.lease_holder, path)
        return self._queue_blocks(txn, inode)

    def entry_record(self, path: str) -> str | None:
        """The encoded entry of ``path`` (what a transaction step checks against)."""
        raw = self._store.get(_entry_key(paths.normalize(path)))
        return None if raw is None else bytes(raw).decode()

    def self_record(self, path: str) -> str | None:
        raw = self._store.get(_self_key(paths.normalize(path)))
        return None if raw is None else bytes(raw).decode()

    def lock_holder(self, path: str) -> int:
        """The transaction locking ``path`` here (0: none), or the tree move hiding it
        (``keelfs.meta.tree_fences``): reads of it wait.

        Every linearizable read asks, and almost always nothing at all is locked or fenced:
        that is checked once per applied index (two scans of usually empty key ranges), and
        until the next entry applies each read is answered 0 without touching the store."""
        if self._unlocked_at == self._applied:
            return 0
        if self._nothing_locked():
            self._unlocked_at = self._applied
            return 0
        normal = paths.normalize(path)
        return tx.locked_by(self._store, normal) or tf.hidden_by(self._store, normal, tx.locked_by)

    def _nothing_locked(self) -> bool:
        """No transaction lock and no tree-move fence is stored here."""
        locks = self._store.scan(tx.LOCK, prefix_end(tx.LOCK))
        return next(iter(locks), None) is None and not tf.active(self._store)

    def _check_unlocked(self, kv: Txn, path: str, *, parent: bool = True) -> None:
        """Refuse (``Unavailable`` "locked") a change of ``path`` while a transaction locks it,
        or while one moves or removes its parent directory. Nothing to look at, almost always:
        no lock and no fence at all (``Txn.holds_any``, remembered by the store)."""
        if not kv.holds_any(tx.LOCK) and not kv.holds_any(tf.ACTIVE):
            return
        holder = tx.locked_by(kv, path)
        if holder:
            raise tx.locked_error(path, holder)
        fenced = tf.write_error(kv, path)
        if fenced is not None:
            raise fenced
        if parent and path != paths.ROOT:
            up = paths.parent(path)
            holder = tx.locked_by(kv, up, shared_too=False)
            if holder:
                raise tx.locked_error(up, holder)

    def _check_subtree_unlocked(self, kv: _Reader, directory: str) -> None:
        holder = tx.locked_below(kv, directory)
        if holder:
            raise tx.locked_error(directory, holder)
        fenced = tf.fence_below(kv, directory)
        if fenced is not None:
            raise fenced


def _unb64(text: str, argument: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise InvalidArgument(f"{argument} must be base64", argument) from None


def _not_local(directory: str) -> NotFound:
    return NotFound(
        directory,
        "directory record",
        message=(
            f"the self-record of directory {directory} is not on this shard (it lives on the "
            "shard owning the directory; cross-shard operations go through the coordinator)"
        ),
    )
