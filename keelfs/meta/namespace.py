"""The data shard's state machine: its part of the namespace, kept in RocksDB.

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
from collections.abc import Iterator
from typing import Any, Protocol

from keelfs.errors import (
    AlreadyExists,
    DirectoryNotEmpty,
    InvalidArgument,
    IsADirectory,
    KeelError,
    LeaseConflict,
    NotADirectory,
    NotFound,
    Unavailable,
)
from keelfs.meta import blockrefs, moves, paths, sessions
from keelfs.meta import transactions as tx
from keelfs.meta.commands import (
    MAX_INT,
    SHARD_COMMANDS,
    AddBlock,
    CompleteFile,
    Create,
    Delete,
    DequeueBlockDeletes,
    Mkdir,
    MkdirSelf,
    MoveDrop,
    MoveFreeze,
    MoveIngest,
    MoveSettle,
    RecoverLease,
    Rename,
    RenewLease,
    SetOwner,
    SetPermission,
    SetReplication,
    SetTimes,
    TxnAcked,
    TxnBegin,
    TxnDecide,
    TxnFinish,
    TxnPrepare,
    UpdateBlock,
    check_range,
)
from keelfs.meta.kvstore import KVStore, MemoryStore, RocksStore, Txn, prefix_end
from keelfs.meta.machine import DEFAULT_SESSION_TTL_MS, Context, MetaStateMachine
from keelfs.meta.ranges import FROZEN, INCOMING, MOVED, RangeState, RangeTable, pairs
from keelfs.meta.records import DIRECTORY, FILE, BlockInfo, ContentSummary, FileInfo, Inode, Listing
from keelfs.meta.ring import key_hash

__all__ = [
    "DEFAULT_LEASE_TTL_MS",
    "DEFAULT_TXN_RETENTION_MS",
    "MAX_LIST_LIMIT",
    "ShardStateMachine",
]

DEFAULT_LEASE_TTL_MS = 60_000
DEFAULT_TXN_RETENTION_MS = 3_600_000
"""How long finished transaction records are kept (the seed's hour)."""
MAX_LIST_LIMIT = 10_000
_RETRY_ANEW = frozenset({"UNAVAILABLE", "REDIRECT"})
"""Error codes of a transaction's abort after which the client's request may run again."""

_U64 = struct.Struct(">Q")
_SELF = b"D"
_ENTRY = b"E"
_HOLDER = b"H"
_LEASE_EXPIRY = b"X"
_LEASE = b"L"
_DELETE_QUEUE = b"Q"


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
    return _HOLDER + _U64.pack(session_id)


def _lease_expiry_key(expiry: int, session_id: int) -> bytes:
    return _LEASE_EXPIRY + _U64.pack(expiry) + _U64.pack(session_id)


def _lease_key(session_id: int, path: str) -> bytes:
    return _LEASE + _U64.pack(session_id) + _b(path)


def _queue_key(block_id: int) -> bytes:
    return _DELETE_QUEUE + _U64.pack(block_id)


def _first(kv: _Reader, start: bytes, end: bytes) -> tuple[bytes, bytes] | None:
    return next(iter(kv.scan(start, end)), None)


class ShardStateMachine(MetaStateMachine):
    """One data shard member's namespace state (``keelfs.runtime.StateMachine``).

    ``path``: the RocksDB directory of this member (``None``: in memory, for tests).
    ``session_ttl_ms`` and ``lease_ttl_ms`` are replicated semantics: every member of the
    shard must use the same values. Commands: ``keelfs.meta.commands.SHARD_COMMANDS``. Reads
    (``stat``, ``list_dir``, ``content_summary``, ``pending_block_deletes``, ``lease_expiry``,
    ``session``, ``clock_ms``) are not commands: call them after a ReadIndex barrier.
    """

    commands = SHARD_COMMANDS

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        shard_id: str = "",
        session_ttl_ms: int = DEFAULT_SESSION_TTL_MS,
        lease_ttl_ms: int = DEFAULT_LEASE_TTL_MS,
        txn_retention_ms: int = DEFAULT_TXN_RETENTION_MS,
    ) -> None:
        if lease_ttl_ms <= 0:
            raise ValueError("lease_ttl_ms must be positive")
        if txn_retention_ms < 0:
            raise ValueError("txn_retention_ms must not be negative")
        store: KVStore = MemoryStore() if path is None else RocksStore(path)
        self.shard_id = shard_id
        self.lease_ttl_ms = lease_ttl_ms
        self.txn_retention_ms = txn_retention_ms
        self._table: RangeTable | None = None
        self._fresh_blocks: list[int] = []
        """Block ids this apply's ``AddBlock`` brought into the cluster (``blockrefs``)."""
        super().__init__(store, session_ttl_ms=session_ttl_ms)
        blockrefs.ensure(store)

    # -- resharding (keelfs.meta.moves) ----------------------------------------------------------
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
        self, txn_id: int, start_after: bytes | None = None, limit: int = 1000
    ) -> list[tuple[bytes, bytes]]:
        """Up to ``limit`` namespace records (key, value) in the ranges of move ``txn_id``
        here, in key order after ``start_after``: what the move copies, or drops after."""
        check_range(limit, 1, MAX_LIST_LIMIT, "limit")
        spans = [(r.first, r.last) for r in self.ranges.of_txn(txn_id)]
        out: list[tuple[bytes, bytes]] = []
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
                    if len(out) == limit:
                        return out
        return out

    def _stage(self, txn: Txn, command: Any) -> Txn:
        table = self.ranges
        if not table or command.op.startswith("move_"):
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

    def restore_chunks(self, chunks: Any, index: int) -> None:
        self._table = None
        try:
            super().restore_chunks(chunks, index)
            blockrefs.ensure(self._store, restored=True)
        finally:
            self._table = None

    def _derive(self, txn: Txn) -> None:
        fresh, self._fresh_blocks = self._fresh_blocks, []
        txn.writes.update(blockrefs.index_writes(self._store, txn.writes, fresh))

    # -- block references (keelfs.meta.blockrefs) ------------------------------------------------
    def referenced_blocks(self, block_ids: Any) -> set[int]:
        """Those of ``block_ids`` that a record here references (an entry, an undecided
        transaction record, a moved-in copy). Linearizable after a ReadIndex barrier."""
        return blockrefs.referenced(self._store, block_ids)

    def blocks_gained(self) -> int:
        """How many times a block reference arrived here from elsewhere (a rename, a move):
        the orphan collector's check that nothing travelled between its reads."""
        return blockrefs.gained(self._store)

    # -- reads ----------------------------------------------------------------------------------
    def stat(self, path: str) -> FileInfo:
        """GetFileInfo: the attributes of ``path`` (``NotFound``/``NotADirectory`` if none)."""
        path = paths.normalize(path)
        inode = self._lookup(self._store, path)
        if inode is None:
            raise self._missing(self._store, path)
        return inode.info(path)

    def exists(self, path: str) -> bool:
        return self._lookup(self._store, paths.normalize(path)) is not None

    def list_dir(self, path: str, start_after: str | None = None, limit: int = 1000) -> Listing:
        """ListDir: up to ``limit`` entries of directory ``path`` with names after
        ``start_after``, sorted by name. A file lists as itself (as in HDFS)."""
        path = paths.normalize(path)
        check_range(limit, 1, MAX_LIST_LIMIT, "limit")
        if start_after is not None:
            paths.validate_name(start_after)
        store = self._store
        if store.get(_self_key(path)) is None:
            inode = self._entry(store, path)
            if inode is not None and not inode.is_dir:
                return Listing((inode.info(path),), None)
            self._require_dir(store, path)  # raises the right error
        prefix = _children_prefix(path)
        start = prefix if start_after is None else prefix + _b(start_after) + b"\x00"
        entries: list[FileInfo] = []
        for key, raw in store.scan(start, prefix_end(prefix)):
            if len(entries) == limit:
                return Listing(tuple(entries), entries[-1].name)
            entries.append(Inode.decode(raw).info(_entry_path(key)))
        return Listing(tuple(entries), None)

    def content_summary(self, path: str) -> ContentSummary:
        """du over what this shard holds at and under ``path``."""
        path = paths.normalize(path)
        inode = self._lookup(self._store, path)
        if inode is None:
            raise self._missing(self._store, path)
        if not inode.is_dir:
            return ContentSummary(inode.length, 1, 0, inode.length * inode.replication)
        length = files = space = 0
        dirs = 1
        for start, end in _subtree_entry_ranges(path):
            for _, raw in self._store.scan(start, end):
                child = Inode.decode(raw)
                if child.is_dir:
                    dirs += 1
                else:
                    files += 1
                    length += child.length
                    space += child.length * child.replication
        return ContentSummary(length, files, dirs, space)

    def pending_block_deletes(self, limit: int = 1000, start_after: int = 0) -> list[BlockInfo]:
        """Blocks of deleted files whose replicas are still to be deleted, by block id."""
        check_range(limit, 1, MAX_LIST_LIMIT, "limit")
        check_range(start_after, 0, MAX_INT - 1, "start_after")
        out: list[BlockInfo] = []
        start = _queue_key(start_after + 1) if start_after else _DELETE_QUEUE
        for key, raw in self._store.scan(start, prefix_end(_DELETE_QUEUE)):
            gen, length = json.loads(raw)
            out.append(BlockInfo(_U64.unpack_from(key, 1)[0], gen, length))
            if len(out) == limit:
                break
        return out

    def files_page(
        self, start_after: str | None = None, limit: int = 1000
    ) -> list[tuple[str, Inode]]:
        """Up to ``limit`` files (path, inode) in key order after ``start_after`` (a path from
        an earlier page): how the block layer walks every block this shard references."""
        start = _ENTRY if start_after is None else _entry_key(start_after) + b"\x00"
        out: list[tuple[str, Inode]] = []
        for key, raw in self._store.scan(start, prefix_end(_ENTRY)):
            inode = Inode.decode(raw)
            if inode.is_dir:
                continue
            out.append((_entry_path(key), inode))
            if len(out) == limit:
                break
        return out

    def lease_expiry(self, session_id: int) -> int | None:
        """When the writer leases of ``session_id`` expire (log time, ms); None: it holds none."""
        raw = self._store.get(_holder_key(session_id))
        return None if raw is None else _U64.unpack(raw)[0]

    # -- lookups ----------------------------------------------------------------------------------
    @staticmethod
    def _inode(kv: _Reader, key: bytes) -> Inode | None:
        raw = kv.get(key)
        return None if raw is None else Inode.decode(raw)

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

    # -- writes -------------------------------------------------------------------------------
    def _put(self, txn: Txn, path: str, inode: Inode) -> None:
        """Write ``path``'s record(s) (its entry exists): the entry, and the self-record of a
        directory when that is here too (the two are kept identical)."""
        if path != paths.ROOT:
            txn.put(_entry_key(path), inode.encode())
        if inode.is_dir and (path == paths.ROOT or txn.get(_self_key(path)) is not None):
            txn.put(_self_key(path), inode.encode())

    def _touch_dir(self, txn: Txn, directory: str, now: int) -> None:
        """A child of ``directory`` was added, removed or renamed: its mtime is now."""
        keys = [_self_key(directory)]
        if directory != paths.ROOT:
            keys.append(_entry_key(directory))
        for key in keys:  # only the records that are here
            record = self._inode(txn, key)
            if record is not None and record.is_dir:
                txn.put(key, record.evolve(mtime=now).encode())

    def _queue_blocks(self, txn: Txn, inode: Inode) -> int:
        for block in inode.blocks:
            txn.put(
                _queue_key(block.block_id), json.dumps([block.gen_stamp, block.length]).encode()
            )
        return len(inode.blocks)

    # -- leases -------------------------------------------------------------------------------
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
        prefix = _LEASE + _U64.pack(session_id)
        if _first(txn, prefix, prefix_end(prefix)) is None:
            self._forget_holder(txn, session_id)

    def _forget_holder(self, txn: Txn, session_id: int) -> None:
        old = txn.get(_holder_key(session_id))
        if old is not None:
            txn.delete(_lease_expiry_key(_U64.unpack(old)[0], session_id))
            txn.delete(_holder_key(session_id))

    def _release_holder(self, txn: Txn, session_id: int) -> None:
        """Release every lease of ``session_id``: its files stay under construction, unheld."""
        prefix = _LEASE + _U64.pack(session_id)
        for key, _ in list(txn.scan(prefix, prefix_end(prefix))):
            path = key[len(prefix) :].decode()
            inode = self._entry(txn, path)
            if inode is not None and inode.lease_holder == session_id:
                self._put(txn, path, inode.evolve(lease_holder=0))
            txn.delete(key)
        self._forget_holder(txn, session_id)

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
            self._release_holder(txn, _U64.unpack_from(key, len(_LEASE_EXPIRY) + 8)[0])
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
                inode.lease_holder,
                message=f"session {session_id} holds no writer lease on {path}",
            )
        return inode

    # -- subtrees -----------------------------------------------------------------------------
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

    # -- commands -------------------------------------------------------------------------------
    def _op_mkdir(self, txn: Txn, cmd: Mkdir, ctx: Context) -> Any:
        path = paths.normalize(cmd.path)
        attrs = Inode(DIRECTORY, cmd.mode, cmd.owner, cmd.group, ctx.now, ctx.now)
        if path == paths.ROOT:
            self._require_dir(txn, path)
            if cmd.parents:
                return {"created": []}
            raise AlreadyExists(path)
        if not cmd.parents:
            self._check_unlocked(txn, path)
            self._require_dir(txn, paths.parent(path))
            if self._entry(txn, path) is not None:
                raise AlreadyExists(path)
            self._make_dir(txn, path, attrs, cmd.self_record, ctx.now)
            return {"created": [path]}
        self._require_dir(txn, paths.ROOT)
        created: list[str] = []
        for p in [*paths.ancestors(path)[1:], path]:
            last = p == path
            inode = self._entry(txn, p)
            if inode is None:
                self._check_unlocked(txn, p)
                self._make_dir(txn, p, attrs, cmd.self_record or not last, ctx.now)
                created.append(p)
            elif not inode.is_dir:
                raise AlreadyExists(p) if last else NotADirectory(p)
            elif not last:
                self._require_dir(txn, p)
        return {"created": created}

    def _make_dir(self, txn: Txn, path: str, attrs: Inode, self_record: bool, now: int) -> None:
        if self_record:
            if txn.get(_self_key(path)) is not None:
                raise AlreadyExists(path, "directory record")
            txn.put(_self_key(path), attrs.encode())
        txn.put(_entry_key(path), attrs.encode())
        self._touch_dir(txn, paths.parent(path), now)

    def _op_mkdir_self(self, txn: Txn, cmd: MkdirSelf, ctx: Context) -> Any:
        path = paths.normalize(cmd.path)
        self._check_unlocked(txn, path, parent=False)
        if txn.get(_self_key(path)) is not None:
            raise AlreadyExists(path, "directory record")
        entry = self._entry(txn, path)
        if entry is not None and not entry.is_dir:
            raise AlreadyExists(path, message=f"{path} is a file here")
        attrs = Inode(DIRECTORY, cmd.mode, cmd.owner, cmd.group, ctx.now, ctx.now)
        txn.put(_self_key(path), attrs.encode())
        return {}

    def _op_create(self, txn: Txn, cmd: Create, ctx: Context) -> Any:
        path = paths.normalize(cmd.path)
        parent = paths.parent(path)
        self._check_unlocked(txn, path)
        self._require_dir(txn, parent)
        sid = ctx.session_id
        existing = self._entry(txn, path)
        if existing is not None:
            if existing.is_dir:
                raise IsADirectory(path) if cmd.overwrite else AlreadyExists(path)
            holder = existing.lease_holder
            if holder != sid and self._holds_lease(txn, holder):
                raise LeaseConflict(path, holder)
            if not cmd.overwrite:
                raise AlreadyExists(path)
            self._queue_blocks(txn, existing)
            if holder:
                self._drop_lease(txn, holder, path)
        inode = Inode(
            FILE,
            cmd.mode,
            cmd.owner,
            cmd.group,
            ctx.now,
            ctx.now,
            replication=cmd.replication,
            block_size=cmd.block_size,
            under_construction=True,
            lease_holder=sid,
        )
        txn.put(_entry_key(path), inode.encode())
        txn.put(_lease_key(sid, path), b"")
        self._renew(txn, sid, ctx.now)
        self._touch_dir(txn, parent, ctx.now)
        return inode.info(path).to_dict()

    def _op_add_block(self, txn: Txn, cmd: AddBlock, ctx: Context) -> Any:
        path = paths.normalize(cmd.path)
        inode = self._writer_file(txn, path, ctx.session_id)
        blocks = list(inode.blocks)
        if any(b.block_id == cmd.block_id for b in blocks):
            raise AlreadyExists(str(cmd.block_id), "block")
        if cmd.previous_length is not None:
            if not blocks:
                raise InvalidArgument(
                    f"{path} has no block to set the length of", "previous_length"
                )
            check_range(cmd.previous_length, 0, inode.block_size, "previous_length")
            last = blocks[-1]
            blocks[-1] = BlockInfo(last.block_id, last.gen_stamp, cmd.previous_length)
        blocks.append(BlockInfo(cmd.block_id, cmd.gen_stamp, 0))
        self._fresh_blocks.append(cmd.block_id)
        inode = inode.evolve(blocks=tuple(blocks), mtime=ctx.now)
        txn.put(_entry_key(path), inode.encode())
        self._renew(txn, ctx.session_id, ctx.now)
        return inode.info(path).to_dict()

    def _op_complete(self, txn: Txn, cmd: CompleteFile, ctx: Context) -> Any:
        path = paths.normalize(cmd.path)
        inode = self._writer_file(txn, path, ctx.session_id)
        blocks = list(inode.blocks)
        if cmd.last_length is not None:
            if blocks:
                check_range(cmd.last_length, 0, inode.block_size, "last_length")
                last = blocks[-1]
                blocks[-1] = BlockInfo(last.block_id, last.gen_stamp, cmd.last_length)
            elif cmd.last_length:
                raise InvalidArgument(f"{path} has no block to set the length of", "last_length")
        inode = inode.evolve(
            blocks=tuple(blocks), under_construction=False, lease_holder=0, mtime=ctx.now
        )
        txn.put(_entry_key(path), inode.encode())
        self._drop_lease(txn, ctx.session_id, path)
        return inode.info(path).to_dict()

    def _op_update_block(self, txn: Txn, cmd: UpdateBlock, ctx: Context) -> Any:
        path = paths.normalize(cmd.path)
        inode = self._writer_file(txn, path, ctx.session_id)
        blocks = list(inode.blocks)
        if not blocks or blocks[-1].block_id != cmd.block_id:
            raise InvalidArgument(
                f"block {cmd.block_id} is not the last block of {path}", "block_id"
            )
        last = blocks[-1]
        if cmd.gen_stamp <= last.gen_stamp:
            raise InvalidArgument(
                f"generation stamp {cmd.gen_stamp} is not above {last.gen_stamp}", "gen_stamp"
            )
        blocks[-1] = BlockInfo(last.block_id, cmd.gen_stamp, last.length)
        inode = inode.evolve(blocks=tuple(blocks), mtime=ctx.now)
        txn.put(_entry_key(path), inode.encode())
        self._renew(txn, ctx.session_id, ctx.now)
        return inode.info(path).to_dict()

    def _op_recover_lease(self, txn: Txn, cmd: RecoverLease, ctx: Context) -> Any:
        path = paths.normalize(cmd.path)
        self._check_unlocked(txn, path, parent=False)
        inode = self._lookup(txn, path)
        if inode is None:
            raise self._missing(txn, path)
        if inode.is_dir or not inode.under_construction:
            return inode.info(path).to_dict()  # closed meanwhile: nothing to recover
        if inode.lease_holder and self._holds_lease(txn, inode.lease_holder):
            raise LeaseConflict(path, inode.lease_holder, message=f"{path} has a live writer")
        blocks = list(inode.blocks)
        if blocks and cmd.drop_last:
            blocks.pop()
        elif blocks:
            check_range(cmd.last_length, 0, inode.block_size, "last_length")
            last = blocks[-1]
            blocks[-1] = BlockInfo(last.block_id, last.gen_stamp, cmd.last_length)
        inode = inode.evolve(
            blocks=tuple(blocks), under_construction=False, lease_holder=0, mtime=ctx.now
        )
        txn.put(_entry_key(path), inode.encode())
        return inode.info(path).to_dict()

    def _op_renew_lease(self, txn: Txn, cmd: RenewLease, ctx: Context) -> Any:
        if not self._holds_lease(txn, ctx.session_id):
            return {"renewed": False}
        self._renew(txn, ctx.session_id, ctx.now)
        return {"renewed": True, "expiry": ctx.now + self.lease_ttl_ms}

    def _op_delete(self, txn: Txn, cmd: Delete, ctx: Context) -> Any:
        path = paths.normalize(cmd.path)
        self._check_unlocked(txn, path)  # first: a transaction may be bringing it here
        inode = self._entry(txn, path)
        if inode is None:
            raise self._missing(txn, path)
        if inode.is_dir:
            self._check_subtree_unlocked(txn, path)
        files = dirs = blocks = 0
        if inode.is_dir:
            self._require_dir(txn, path)
            prefix = _children_prefix(path)
            if not cmd.recursive and _first(txn, prefix, prefix_end(prefix)) is not None:
                raise DirectoryNotEmpty(path)
            holders: set[int] = set()
            for child_path, child in self._subtree(txn, path):
                if child.is_dir:
                    dirs += 1
                else:
                    files += 1
                    blocks += self._queue_blocks(txn, child)
                    if child.lease_holder:
                        # per holder below, not per file: each check scans the staged writes
                        holders.add(child.lease_holder)
                        txn.delete(_lease_key(child.lease_holder, child_path))
                txn.delete(_entry_key(child_path))
            for holder in sorted(holders):
                self._drop_lease_if_idle(txn, holder)
            start, end = _subtree_self_range(path)
            for key, _ in list(txn.scan(start, end)):
                txn.delete(key)
            txn.delete(_self_key(path))
            dirs += 1
        else:
            blocks += self._remove_file_state(txn, path, inode)
            files += 1
        txn.delete(_entry_key(path))
        self._touch_dir(txn, paths.parent(path), ctx.now)
        return {"files": files, "directories": dirs, "blocks": blocks}

    def _remove_file_state(self, txn: Txn, path: str, inode: Inode) -> int:
        """Queue a deleted file's blocks and drop its lease; the number of blocks queued."""
        if inode.lease_holder:
            self._drop_lease(txn, inode.lease_holder, path)
        return self._queue_blocks(txn, inode)

    def _op_rename(self, txn: Txn, cmd: Rename, ctx: Context) -> Any:
        src, dst = paths.normalize(cmd.src), paths.normalize(cmd.dst)
        self._check_unlocked(txn, src)  # first: a transaction may be bringing it here
        self._check_unlocked(txn, dst)
        inode = self._entry(txn, src)
        if inode is None:
            raise self._missing(txn, src)
        if inode.is_dir:
            self._check_subtree_unlocked(txn, src)
        if inode.is_dir and paths.is_ancestor(src, dst):
            raise InvalidArgument(f"cannot move {src} into itself ({dst})", "dst")
        if src == dst or dst == paths.ROOT:
            raise AlreadyExists(dst)
        dst_parent = paths.parent(dst)
        self._require_dir(txn, dst_parent)
        if inode.is_dir:
            self._require_dir(txn, src)
        target = self._entry(txn, dst)
        if target is not None:
            if not cmd.overwrite:
                raise AlreadyExists(dst)
            if inode.is_dir and not target.is_dir:
                raise NotADirectory(dst)
            if not inode.is_dir and target.is_dir:
                raise IsADirectory(dst)
            if target.is_dir:
                self._require_dir(txn, dst)
                prefix = _children_prefix(dst)
                if _first(txn, prefix, prefix_end(prefix)) is not None:
                    raise DirectoryNotEmpty(dst)
                txn.delete(_self_key(dst))
            else:
                self._remove_file_state(txn, dst, target)
        moved = self._subtree(txn, src) if inode.is_dir else []
        txn.delete(_entry_key(src))
        txn.put(_entry_key(dst), inode.encode())
        if inode.lease_holder:
            txn.delete(_lease_key(inode.lease_holder, src))
            txn.put(_lease_key(inode.lease_holder, dst), b"")
        if inode.is_dir:
            record = txn.get(_self_key(src))
            assert record is not None  # checked by _require_dir above
            txn.delete(_self_key(src))
            txn.put(_self_key(dst), record)
            for old, child in moved:
                new = dst + old[len(src) :]
                txn.delete(_entry_key(old))
                txn.put(_entry_key(new), child.encode())
                if child.is_dir:
                    child_record = txn.get(_self_key(old))
                    assert child_record is not None  # checked by _subtree
                    txn.delete(_self_key(old))
                    txn.put(_self_key(new), child_record)
                elif child.lease_holder:
                    txn.delete(_lease_key(child.lease_holder, old))
                    txn.put(_lease_key(child.lease_holder, new), b"")
        self._touch_dir(txn, paths.parent(src), ctx.now)
        self._touch_dir(txn, dst_parent, ctx.now)
        return {}

    def _modify(self, txn: Txn, path: str, **changes: Any) -> Inode:
        self._check_unlocked(txn, path, parent=False)
        inode = self._lookup(txn, path)
        if inode is None:
            raise self._missing(txn, path)
        inode = inode.evolve(**changes)
        self._put(txn, path, inode)
        return inode

    def _op_set_replication(self, txn: Txn, cmd: SetReplication, ctx: Context) -> Any:
        path = paths.normalize(cmd.path)
        inode = self._lookup(txn, path)
        if inode is not None and inode.is_dir:
            raise IsADirectory(path)
        return self._modify(txn, path, replication=cmd.replication).info(path).to_dict()

    def _op_set_times(self, txn: Txn, cmd: SetTimes, ctx: Context) -> Any:
        path = paths.normalize(cmd.path)
        changes = {k: v for k, v in (("mtime", cmd.mtime), ("atime", cmd.atime)) if v is not None}
        return self._modify(txn, path, **changes).info(path).to_dict()

    def _op_set_permission(self, txn: Txn, cmd: SetPermission, ctx: Context) -> Any:
        path = paths.normalize(cmd.path)
        return self._modify(txn, path, mode=cmd.mode).info(path).to_dict()

    def _op_set_owner(self, txn: Txn, cmd: SetOwner, ctx: Context) -> Any:
        path = paths.normalize(cmd.path)
        changes = {k: v for k, v in (("owner", cmd.owner), ("group", cmd.group)) if v is not None}
        return self._modify(txn, path, **changes).info(path).to_dict()

    def _op_dequeue_block_deletes(self, txn: Txn, cmd: DequeueBlockDeletes, ctx: Context) -> Any:
        removed = 0
        for block_id in sorted(set(cmd.block_ids)):
            if txn.get(_queue_key(block_id)) is not None:
                txn.delete(_queue_key(block_id))
                removed += 1
        return {"removed": removed}

    # -- cross-shard transactions (keelfs.meta.transactions) ------------------------------------
    def transaction(self, txn_id: int) -> tx.TxnRecord | None:
        """The record of transaction ``txn_id`` here (None: none, or forgotten)."""
        return tx.load(self._store, txn_id)

    def transactions(self) -> list[tx.TxnRecord]:
        """Every transaction record this shard holds."""
        return tx.records(self._store)

    def open_transactions(self) -> list[tx.TxnRecord]:
        """The records that still need work here (what recovery drives)."""
        return tx.open_records(self._store)

    def entry_record(self, path: str) -> str | None:
        """The encoded entry of ``path`` (what a transaction step checks against)."""
        raw = self._store.get(_entry_key(paths.normalize(path)))
        return None if raw is None else bytes(raw).decode()

    def self_record(self, path: str) -> str | None:
        raw = self._store.get(_self_key(paths.normalize(path)))
        return None if raw is None else bytes(raw).decode()

    def lock_holder(self, path: str) -> int:
        """The transaction locking ``path`` here (0: none): reads of it wait."""
        return tx.locked_by(self._store, paths.normalize(path))

    def _check_unlocked(self, kv: _Reader, path: str, *, parent: bool = True) -> None:
        """Refuse (``Unavailable`` "locked") a change of ``path`` while a transaction locks it,
        or while one moves or removes its parent directory."""
        holder = tx.locked_by(kv, path)
        if holder:
            raise tx.locked_error(path, holder)
        if parent and path != paths.ROOT:
            up = paths.parent(path)
            holder = tx.locked_by(kv, up, shared_too=False)
            if holder:
                raise tx.locked_error(up, holder)

    def _check_subtree_unlocked(self, kv: _Reader, directory: str) -> None:
        holder = tx.locked_below(kv, directory)
        if holder:
            raise tx.locked_error(directory, holder)

    def _part_range_error(self, steps: tuple[tx.Step, ...]) -> KeelError | None:
        """Why ``steps`` may not be locked here now, because of a move (None: they may).

        A part locked here is applied here when the decision comes, so every range it
        reaches must stay here until then: none of them may be moving (frozen: the copy
        would miss the change; incoming: not ours yet), which is "locked" (retry when the
        move is over), and a record it needs may not have moved away (``REDIRECT``: it
        never will be here). ``_op_move_freeze`` is the other half: no range an undecided
        part reaches starts to move."""
        table = self.ranges
        if not table:
            return None
        for directory in sorted(tx.home_dirs(steps)):
            state = table.lookup(key_hash(directory))
            if state is not None and state.state == MOVED:
                return moves.range_error(state, directory, write=True)
        for directory in sorted(tx.reach_dirs(steps)):
            state = table.lookup(key_hash(directory))
            if state is not None and state.state in (FROZEN, INCOMING):
                return moves.range_error(state, directory, write=True)
        return None

    def _check_steps(self, txn: Txn, steps: tuple[tx.Step, ...], txn_id: int) -> None:
        conflict = tx.lock_conflict(txn, steps, txn_id)
        if conflict is not None:
            raise conflict
        for step in steps:
            path, kind = step.path, step.kind
            if kind == "absent" and self._entry(txn, path) is not None:
                raise AlreadyExists(path)
            if kind == "present" and self._entry(txn, path) is None:
                raise self._missing(txn, path)
            if kind in ("entry", "self"):
                key = _entry_key(path) if kind == "entry" else _self_key(path)
                if txn.get(key) != step.record.encode():
                    raise Unavailable(
                        "changed", message=f"{path} changed while the transaction was built"
                    )
            if kind == "dir":
                self._require_dir(txn, path)
            if kind == "empty":
                prefix = _children_prefix(path)
                if _first(txn, prefix, prefix_end(prefix)) is not None:
                    raise DirectoryNotEmpty(path)
            if kind == "replaceable":
                existing = self._entry(txn, path)
                if existing is not None:
                    if existing.is_dir:
                        raise IsADirectory(path)
                    if self._holds_lease(txn, existing.lease_holder):
                        raise LeaseConflict(path, existing.lease_holder)

    def _apply_steps(self, txn: Txn, steps: tuple[tx.Step, ...], now: int) -> None:
        for step in steps:
            path, kind = step.path, step.kind
            if kind == "put_entry":
                txn.put(_entry_key(path), step.record.encode())
            elif kind == "del_entry":
                txn.delete(_entry_key(path))
            elif kind == "put_self":
                txn.put(_self_key(path), step.record.encode())
            elif kind == "del_self":
                txn.delete(_self_key(path))
            elif kind == "touch":
                self._touch_dir(txn, path, now)
            elif kind == "replace":
                existing = self._entry(txn, path)
                if existing is not None and not existing.is_dir:
                    self._remove_file_state(txn, path, existing)
                    txn.delete(_entry_key(path))

    def _forget_later(self, txn: Txn, record: tx.TxnRecord, now: int) -> None:
        tx.schedule_forget(txn, record, now + self.txn_retention_ms)

    def _op_txn_begin(self, txn: Txn, cmd: TxnBegin, ctx: Context) -> Any:
        record = tx.load(txn, cmd.txn_id)
        if record is not None:
            return record.to_dict()
        steps = tx.decode_part(cmd.part)
        moving = self._part_range_error(steps)
        if moving is not None:  # not recorded: the client's request waits and comes again
            raise moving
        self._check_steps(txn, steps, cmd.txn_id)
        tx.lock(txn, steps, cmd.txn_id)
        tx.set_open(txn, cmd.txn_id, True)
        record = tx.TxnRecord(
            cmd.txn_id,
            "coordinator",
            "pending",
            self.shard_id,
            cmd.part,
            ctx.now,
            participants=json.loads(cmd.participants),
            result=json.loads(cmd.result),
            kind=cmd.kind,
            session=ctx.session_id,
            seq=ctx.seq,
        )
        tx.save(txn, record)
        return record.to_dict()

    def _release_request(self, txn: Txn, record: tx.TxnRecord) -> None:
        """An abort worth retrying (a lock, a timeout, a participant whose range moved away):
        nothing was applied, so the client's request may run again with the same seq as a new
        transaction (routed by the client's newer map after a ``REDIRECT``), instead of being
        answered this abort from the session's reply cache forever."""
        if not record.session or not record.seq:
            return
        current = sessions.load(txn, record.session)
        reply = current.reply if current is not None else None
        if (
            current is not None
            and current.seq == record.seq
            and reply is not None
            and isinstance(reply.value, dict)
            and reply.value.get("txn_id") == record.txn_id
        ):
            released = sessions.SessionRecord(current.last_active, record.seq - 1)
            sessions.save(txn, record.session, released, current)

    def _op_txn_prepare(self, txn: Txn, cmd: TxnPrepare, ctx: Context) -> Any:
        record = tx.load(txn, cmd.txn_id)
        if record is not None:
            return record.to_dict()
        steps = tx.decode_part(cmd.part)
        record = tx.TxnRecord(
            cmd.txn_id, "participant", "prepared", cmd.coordinator, cmd.part, ctx.now
        )
        moving = self._part_range_error(steps)
        if isinstance(moving, Unavailable):
            raise moving  # not recorded: the coordinator prepares again until its timeout
        stage = txn.child()
        try:
            if moving is not None:
                raise moving
            self._check_steps(stage, steps, cmd.txn_id)
        except KeelError as refused:  # recorded, so that a repeated prepare gets this answer
            record.state, record.error = "aborted", refused.to_details()
            self._forget_later(txn, record, ctx.now)
        else:
            tx.lock(txn, steps, cmd.txn_id)
            tx.set_open(txn, cmd.txn_id, True)
        tx.save(txn, record)
        return record.to_dict()

    def _op_txn_decide(self, txn: Txn, cmd: TxnDecide, ctx: Context) -> Any:
        record = tx.load(txn, cmd.txn_id)
        if record is None or record.role != "coordinator":
            raise NotFound(str(cmd.txn_id), "transaction")
        if record.decided:
            return record.to_dict()
        steps = tx.decode_part(record.part)
        if cmd.commit:
            self._apply_steps(txn, steps, ctx.now)
            record.state = "committed"
        else:
            record.state = "aborted"
            record.error = json.loads(cmd.error) if cmd.error else None
            if record.error is not None and record.error.get("code") in _RETRY_ANEW:
                self._release_request(txn, record)
        tx.unlock(txn, steps, cmd.txn_id)
        if not record.unacked:
            tx.set_open(txn, cmd.txn_id, False)
            self._forget_later(txn, record, ctx.now)
        tx.save(txn, record)
        return record.to_dict()

    def _op_txn_finish(self, txn: Txn, cmd: TxnFinish, ctx: Context) -> Any:
        record = tx.load(txn, cmd.txn_id)
        if record is None:  # never prepared here, or finished and forgotten long ago
            return {"txn_id": cmd.txn_id, "state": "unknown"}
        if record.role != "participant":
            raise InvalidArgument(f"transaction {cmd.txn_id} is coordinated here", "txn_id")
        if record.decided:
            return record.to_dict()
        steps = tx.decode_part(record.part)
        if cmd.commit:
            self._apply_steps(txn, steps, ctx.now)
        record.state = "committed" if cmd.commit else "aborted"
        tx.unlock(txn, steps, cmd.txn_id)
        tx.set_open(txn, cmd.txn_id, False)
        self._forget_later(txn, record, ctx.now)
        tx.save(txn, record)
        return record.to_dict()

    def _op_txn_acked(self, txn: Txn, cmd: TxnAcked, ctx: Context) -> Any:
        record = tx.load(txn, cmd.txn_id)
        if record is None or record.role != "coordinator" or not record.decided:
            return {"txn_id": cmd.txn_id, "state": "unknown" if record is None else record.state}
        if cmd.shard in record.participants and cmd.shard not in record.acked:
            record.acked.append(cmd.shard)
            if not record.unacked:
                tx.set_open(txn, cmd.txn_id, False)
                self._forget_later(txn, record, ctx.now)
            tx.save(txn, record)
        return record.to_dict()

    # -- resharding commands (keelfs.meta.moves) --------------------------------------------------
    def _set_table(self, txn: Txn, table: RangeTable) -> None:
        moves.save_table(txn, table)
        self._table = None  # reloaded from the store once this apply is written

    def _undecided_move(self, txn: Txn, txn_id: int, state: str) -> bool:
        """True if move ``txn_id`` is already ``state`` here; refuses a decided move."""
        record = moves.load_move(txn, txn_id)
        if record is None:
            return False
        if record["state"] in (moves.COMMITTED, moves.ABORTED):
            raise InvalidArgument(f"move {txn_id} is {record['state']} here", "txn_id")
        return record["state"] == state

    def _op_move_freeze(self, txn: Txn, cmd: MoveFreeze, ctx: Context) -> Any:
        if self._undecided_move(txn, cmd.txn_id, FROZEN):
            return {"state": FROZEN}
        spans = pairs(cmd.ranges)
        self._check_no_undecided_part_in(txn, spans)
        table = moves.load_table(txn)
        for first, last in spans:
            for r in table:
                if r.first <= last and first <= r.last:
                    raise InvalidArgument(
                        f"hash range {first}..{last} is {r.state} (move {r.txn_id}) here",
                        "ranges",
                    )
            table = table.with_state(first, last, FROZEN, cmd.txn_id, cmd.peer)
        self._set_table(txn, table)
        moves.save_move(txn, cmd.txn_id, FROZEN, True)
        return {"state": FROZEN}

    @staticmethod
    def _check_no_undecided_part_in(txn: Txn, spans: list[tuple[int, int]]) -> None:
        """Refuse ("locked": the driver retries) to freeze ranges that a transaction not yet
        decided here reaches (``tx.reach_dirs``: its locks, the records it changes, and the
        entry of a directory it touches, in the grandparent's range): its decision must be
        applied here, and the copy must see it."""
        for record in tx.open_records(txn):
            if record.decided:  # a coordinator still delivering: its part is applied
                continue
            for directory in sorted(tx.reach_dirs(tx.decode_part(record.part))):
                h = key_hash(directory)
                if any(first <= h <= last for first, last in spans):
                    raise tx.locked_error(directory, record.txn_id)

    def _op_move_ingest(self, txn: Txn, cmd: MoveIngest, ctx: Context) -> Any:
        spans = pairs(cmd.ranges)
        if not self._undecided_move(txn, cmd.txn_id, INCOMING):
            table = moves.load_table(txn)
            for first, last in spans:  # whatever this shard knew of them is superseded
                table = table.with_state(first, last, INCOMING, cmd.txn_id, cmd.peer)
            self._set_table(txn, table)
            moves.save_move(txn, cmd.txn_id, INCOMING, False)
        for key_text, value_text in zip(cmd.keys, cmd.values, strict=True):
            key, value = _unb64(key_text, "keys"), _unb64(value_text, "values")
            moves.check_in(spans, key)
            inode = Inode.decode(value)
            if inode.lease_holder:  # the writer's session is the source's, not ours
                value = inode.evolve(lease_holder=0).encode()
            txn.put(key, value)
        return {"state": INCOMING, "records": len(cmd.keys)}

    def _op_move_settle(self, txn: Txn, cmd: MoveSettle, ctx: Context) -> Any:
        outcome = moves.COMMITTED if cmd.commit else moves.ABORTED
        record = moves.load_move(txn, cmd.txn_id)
        if record is not None and record["state"] in (moves.COMMITTED, moves.ABORTED):
            if record["state"] != outcome:
                raise InvalidArgument(f"move {cmd.txn_id} is {record['state']} here", "commit")
            return {"state": outcome}
        spans = pairs(cmd.ranges)
        table = moves.load_table(txn)
        if cmd.source and cmd.commit:
            for first, last in spans:
                table = table.with_state(first, last, MOVED, cmd.txn_id, cmd.peer, cmd.version)
            self._release_leases_in(txn, spans)
        elif cmd.source or cmd.commit:  # source aborted; target committed: simply owned
            for r in table.of_txn(cmd.txn_id):
                table = table.without(r.first, r.last)
            if cmd.commit:
                for first, last in spans:  # older marks (it once moved them out) are void
                    table = table.without(first, last)
        # target aborted: the ranges stay incoming (invisible) until MoveDrop(final) has
        # removed what was copied here
        self._set_table(txn, table)
        moves.save_move(txn, cmd.txn_id, outcome, cmd.source)
        return {"state": outcome}

    def _release_leases_in(self, txn: Txn, spans: list[tuple[int, int]]) -> None:
        """Files moving away lose their writer's lease here (the target has no such session)."""
        for key, _ in list(txn.scan(_LEASE, prefix_end(_LEASE))):
            session_id = _U64.unpack_from(key, len(_LEASE))[0]
            path = key[len(_LEASE) + 8 :].decode()
            h = key_hash(paths.parent(path))
            if any(first <= h <= last for first, last in spans):
                self._drop_lease(txn, session_id, path)

    def _op_move_drop(self, txn: Txn, cmd: MoveDrop, ctx: Context) -> Any:
        record = moves.load_move(txn, cmd.txn_id)
        committed_source = record == {"state": moves.COMMITTED, "source": True}
        aborted_target = record == {"state": moves.ABORTED, "source": False}
        if not (committed_source or aborted_target):
            raise InvalidArgument(f"move {cmd.txn_id} has nothing to drop here", "txn_id")
        table = moves.load_table(txn)
        spans = [(r.first, r.last) for r in table.of_txn(cmd.txn_id)]
        dropped = 0
        for key_text in cmd.keys:
            key = _unb64(key_text, "keys")
            if spans:
                moves.check_in(spans, key)
                txn.delete(key)
                dropped += 1
        if cmd.final and aborted_target:
            for first, last in spans:
                table = table.without(first, last)
            self._set_table(txn, table)
        return {"dropped": dropped}


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
