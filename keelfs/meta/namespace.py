"""The data shard's state machine: its part of the namespace, kept in RocksDB.

``ShardStateMachine`` is the shard's records (``keelfs.meta.shard_records``, whose docstring
has the placement rules, the keys and the writer leases) with three sets of commands: the
namespace's own (here: mkdir, create, blocks, complete, delete, rename, attributes, lease
recovery) and the reads a master serves, cross-shard transactions'
(``keelfs.meta.txn_steps``) and resharding moves' (``keelfs.meta.move_steps``).
"""

from __future__ import annotations

import json
from typing import Any

from keelfs.errors import (
    AlreadyExists,
    DirectoryNotEmpty,
    InvalidArgument,
    IsADirectory,
    LeaseConflict,
    NotADirectory,
)
from keelfs.meta import paths
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
    RecoverLease,
    Rename,
    RenewLease,
    SetOwner,
    SetPermission,
    SetReplication,
    SetTimes,
    UpdateBlock,
    check_range,
)
from keelfs.meta.kvstore import Txn, prefix_end
from keelfs.meta.machine import Context
from keelfs.meta.move_steps import MoveSteps
from keelfs.meta.records import DIRECTORY, FILE, BlockInfo, ContentSummary, FileInfo, Inode, Listing
from keelfs.meta.shard_records import (
    _DELETE_QUEUE,
    _ENTRY,
    _U64,
    DEFAULT_LEASE_TTL_MS,
    DEFAULT_TXN_RETENTION_MS,
    MAX_LIST_LIMIT,
    _b,
    _children_prefix,
    _entry_key,
    _entry_path,
    _first,
    _holder_key,
    _lease_key,
    _queue_key,
    _self_key,
    _subtree_entry_ranges,
    _subtree_self_range,
)
from keelfs.meta.txn_steps import TransactionSteps

__all__ = [
    "DEFAULT_LEASE_TTL_MS",
    "DEFAULT_TXN_RETENTION_MS",
    "MAX_LIST_LIMIT",
    "ShardStateMachine",
]


class ShardStateMachine(TransactionSteps, MoveSteps):
    """One data shard member's namespace state (``keelfs.runtime.StateMachine``).

    ``path``: the RocksDB directory of this member (``None``: in memory, for tests).
    ``session_ttl_ms`` and ``lease_ttl_ms`` are replicated semantics: every member of the
    shard must use the same values. Commands: ``keelfs.meta.commands.SHARD_COMMANDS``. Reads
    (``stat``, ``list_dir``, ``content_summary``, ``pending_block_deletes``, ``lease_expiry``,
    ``session``, ``clock_ms``) are not commands: call them after a ReadIndex barrier.
    """

    commands = SHARD_COMMANDS

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
