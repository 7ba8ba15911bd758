"""The data shard's state machine: its part of the namespace, kept in RocksDB.

``ShardStateMachine`` is the shard's records (``keelfs.meta.shard_records``, whose docstring
has the placement rules, the keys and the writer leases) with three sets of commands: the
namespace's own (here: mkdir, create, blocks, complete, delete, rename, attributes, lease
recovery) and the reads a master serves, cross-shard transactions'
(``keelfs.meta.txn_steps``), resharding moves' (``keelfs.meta.move_steps``) and quotas'
(``keelfs.meta.quota_steps``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Literal, overload

from keelfs.errors import (
    AlreadyExists,
    DirectoryNotEmpty,
    InvalidArgument,
    IsADirectory,
    KeelError,
    LeaseConflict,
    NotADirectory,
    PermissionDenied,
)
from keelfs.meta import acls, paths
from keelfs.meta.commands import (
    MAX_INT,
    SHARD_COMMANDS,
    AclChange,
    AddBlock,
    CompleteFile,
    CompleteInline,
    Create,
    CreateInline,
    Delete,
    DequeueBlockDeletes,
    Mkdir,
    MkdirSelf,
    ModifyAclEntries,
    RecoverLease,
    RemoveAcl,
    RemoveAclEntries,
    RemoveDefaultAcl,
    Rename,
    RenewLease,
    SetAcl,
    SetOwner,
    SetPermission,
    SetReplication,
    SetTimes,
    SetTraverseGuard,
    UpdateBlock,
    check_range,
)
from keelfs.meta.file_edits import FileEditSteps
from keelfs.meta.kvstore import Txn, prefix_end
from keelfs.meta.machine import Context
from keelfs.meta.move_steps import MoveSteps
from keelfs.meta.principals import (
    EXECUTE,
    READ,
    SUPERUSER,
    WRITE,
    Caller,
    Guard,
    allows,
    denied,
    depth,
    guard_of,
    rebase,
)
from keelfs.meta.quota_steps import QuotaSteps
from keelfs.meta.records import (
    DIRECTORY,
    FILE,
    BlockInfo,
    ContentSummary,
    FileHead,
    FileInfo,
    Inode,
    Listing,
    check_version,
    file_head,
)
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
from keelfs.meta.snapshots import SnapshotSteps
from keelfs.meta.tree_move_steps import TreeMoveSteps
from keelfs.meta.txn_steps import TransactionSteps

__all__ = [
    "DEFAULT_LEASE_TTL_MS",
    "DEFAULT_TXN_RETENTION_MS",
    "MAX_LIST_LIMIT",
    "ShardStateMachine",
]


class ShardStateMachine(
    TransactionSteps, MoveSteps, TreeMoveSteps, FileEditSteps, QuotaSteps, SnapshotSteps
):
    """One data shard member's namespace state (``keelfs.runtime.StateMachine``).

    ``path``: the RocksDB directory of this member (``None``: in memory, for tests).
    ``session_ttl_ms`` and ``lease_ttl_ms`` are replicated semantics: every member of the
    shard must use the same values. Commands: ``keelfs.meta.commands.SHARD_COMMANDS``. Reads
    (``stat``, ``list_dir``, ``content_summary``, ``pending_block_deletes``, ``lease_expiry``,
    ``session``, ``clock_ms``) are not commands: call them after a ReadIndex barrier.
    The reads a client asks for take its ``caller`` and check its permissions as the
    commands do (``keelfs.meta.permission_checks``); left out, it is the superuser.
    """

    commands = SHARD_COMMANDS
    packable_ops = frozenset(
        {
            "register_session",
            "keep_alive",
            "close_session",
            "tick",
            "mkdir",
            "create",
            "create_inline",
            "add_block",
            "complete",
            "complete_inline",
            "update_block",
            "renew_lease",
            "delete",
            "rename",
            "set_replication",
            "set_times",
            "set_permission",
            "set_owner",
            "set_acl",
            "modify_acl_entries",
            "remove_acl_entries",
            "remove_default_acl",
            "remove_acl",
            "append",
            "truncate",
            "concat",
        }
    )
    """The commands clients send (what a ``Namespace.Batch`` carries) and the sessions':
    not the transactions', the moves' and the quotas' (they change the range table and the
    quota limits this object caches between entries), nor the masters' own rarer ones."""

    def stat(self, path: str, *, caller: Caller = SUPERUSER, with_data: bool = False) -> FileInfo:
        """GetFileInfo: the attributes of ``path`` (``NotFound``/``NotADirectory`` if none).
        The caller must be able to reach it (``x`` on every ancestor). ``with_data``: an
        inline file's content too (check the caller's ``READ`` first: ``check_access``)."""
        path = paths.normalize(path)
        snap = paths.snapshot_path(path)
        if snap is not None:  # through a snapshot (keelfs.meta.snapshots)
            return self.snapshot_stat(snap, caller=caller, with_data=with_data)
        return self._live_stat(path, caller=caller, with_data=with_data)

    def _live_stat(self, path: str, **kwargs: Any) -> FileInfo:
        caller: Caller = kwargs.get("caller") or SUPERUSER
        self._check_reach(self._store, caller, path)
        inode = self._lookup(self._store, path)
        if inode is None:
            raise self._missing(self._store, path)
        return inode.info(path, with_data=bool(kwargs.get("with_data")))

    def exists(self, path: str) -> bool:
        path = paths.normalize(path)
        if paths.snapshot_path(path) is not None:
            try:
                self.stat(path)
            except KeelError:
                return False
            return True
        return self._lookup(self._store, path) is not None

    def check_access(
        self, path: str, access: int, *, caller: Caller = SUPERUSER, with_data: bool = False
    ) -> FileInfo:
        """What stat shows of ``path``, after checking that ``caller`` reaches it and has
        ``access`` (``principals.READ``...) on it: e.g. ``READ`` before the block layer
        gives the locations of a file's blocks, or (``with_data``) an inline file's content."""
        path = paths.normalize(path)
        snap = paths.snapshot_path(path)
        if snap is not None:
            return self.snapshot_access(snap, access, caller=caller, with_data=with_data)
        return self._live_access(path, access, caller=caller, with_data=with_data)

    def _live_access(self, path: str, access: int, **kwargs: Any) -> FileInfo:
        caller: Caller = kwargs.get("caller") or SUPERUSER
        with_data = bool(kwargs.get("with_data"))
        self._live_stat(path, caller=caller)
        inode = self._lookup(self._store, path)
        assert inode is not None  # stat found it
        if not caller.superuser:
            self._check_inode(caller, path, inode, access)
        return inode.info(path, with_data=with_data)

    def stat_for_read(self, path: str, *, caller: Caller = SUPERUSER) -> tuple[FileInfo, bool]:
        """GetFileInfo for a reader: ``(info, True)`` for a file, after ``caller``'s ``READ``
        on it is checked, its inline content with it; ``(info, False)`` for a directory. The
        same checks, errors and answer as ``stat`` followed by ``check_access(path, READ,
        with_data=True)`` for a file, but one lookup of the live record instead of three
        (the small-file read's path)."""
        path = paths.normalize(path)
        if paths.snapshot_path(path) is not None:
            info = self.stat(path, caller=caller)
            if info.is_dir:
                return info, False
            return self.check_access(path, READ, caller=caller, with_data=True), True
        self._check_reach(self._store, caller, path)
        inode = self._lookup(self._store, path)
        if inode is None:
            raise self._missing(self._store, path)
        if inode.is_dir:
            return inode.info(path), False
        if not caller.superuser:
            self._check_inode(caller, path, inode, READ)
        return inode.info(path, with_data=True), True

    def stat_and_may_read(self, path: str, *, caller: Caller = SUPERUSER) -> tuple[FileInfo, bool]:
        """GetFileInfo for anyone who reaches ``path``: ``(info, may_read)``, ``may_read``
        whether ``caller`` has ``READ`` on it (whether its block locations go with the
        answer). The same answer and errors as ``stat`` followed by ``check_access(path,
        READ)`` with its ``PermissionDenied`` taken as ``False``, but one lookup of the live
        record instead of three (the plain stat's path, a batch of which is most of a
        metadata benchmark's reads)."""
        path = paths.normalize(path)
        if paths.snapshot_path(path) is not None:
            info = self.stat(path, caller=caller)
            try:
                self.check_access(path, READ, caller=caller)
            except PermissionDenied:
                return info, False
            return info, True
        self._check_reach(self._store, caller, path)
        inode = self._lookup(self._store, path)
        if inode is None:
            raise self._missing(self._store, path)
        may_read = caller.superuser or allows(
            caller, inode.owner, inode.group, inode.mode, READ, inode.acl
        )
        return inode.info(path), may_read

    def list_dir(
        self,
        path: str,
        start_after: str | None = None,
        limit: int = 1000,
        *,
        caller: Caller = SUPERUSER,
    ) -> Listing:
        """ListDir: up to ``limit`` entries of directory ``path`` with names after
        ``start_after``, sorted by name. A file lists as itself (as in HDFS). The caller
        needs ``r`` and ``x`` on the directory (a file: to reach it)."""
        path = paths.normalize(path)
        check_range(limit, 1, MAX_LIST_LIMIT, "limit")
        if start_after is not None:
            paths.validate_name(start_after)
        snap = paths.snapshot_path(path)
        if snap is not None:
            return self.snapshot_list(snap, start_after, limit, caller=caller)
        return self._live_list(path, start_after, limit, caller=caller)

    def _live_list(self, path: str, start_after: str | None, limit: int, **kw: Any) -> Listing:
        caller: Caller = kw.get("caller") or SUPERUSER
        store = self._store
        record = self._self_record_here(store, path)
        if record is None:
            inode = self._entry(store, path)
            if inode is not None and not inode.is_dir:
                self._check_reach(store, caller, path)
                return Listing((inode.info(path),), None)
            self._require_dir(store, path)  # raises the right error
        else:
            self._check_record(caller, path, record, READ | EXECUTE)
        prefix = _children_prefix(path)
        start = prefix if start_after is None else prefix + _b(start_after) + b"\x00"
        entries: list[FileInfo] = []
        for key, raw in store.scan(start, prefix_end(prefix)):
            if len(entries) == limit:
                return Listing(tuple(entries), entries[-1].name)
            entries.append(Inode.decode(raw).info(_entry_path(key)))
        return Listing(tuple(entries), None)

    def content_summary(self, path: str, *, caller: Caller = SUPERUSER) -> ContentSummary:
        """du over what this shard holds at and under ``path``; the caller needs ``r`` and
        ``x`` on every directory of it (HDFS)."""
        path = paths.normalize(path)
        snap = paths.snapshot_path(path)
        if snap is not None and snap.name is not None:
            return self._view(snap).content_summary(snap.live, caller=caller)
        self._check_reach(self._store, caller, path)
        inode = self._lookup(self._store, path)
        if inode is None:
            raise self._missing(self._store, path)
        if inode.is_dir and not caller.superuser:
            self._check_inode(caller, path, inode, READ | EXECUTE)
        if not inode.is_dir:
            return ContentSummary(inode.length, 1, 0, inode.length * inode.replication)
        length = files = space = 0
        dirs = 1
        for start, end in _subtree_entry_ranges(path):
            for key, raw in self._store.scan(start, end):
                child = Inode.decode(raw)
                if child.is_dir:
                    if not caller.superuser:
                        self._check_inode(caller, _entry_path(key), child, READ | EXECUTE)
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

    @overload
    def maintained_files_page(
        self, start_after: str | None, limit: int, scan_limit: int, *, heads: Literal[False] = ...
    ) -> tuple[list[tuple[str, Inode]], str | None]: ...

    @overload
    def maintained_files_page(
        self, start_after: str | None, limit: int, scan_limit: int, *, heads: bool
    ) -> tuple[list[tuple[str, Inode | FileHead]], str | None]: ...

    def maintained_files_page(
        self, start_after: str | None, limit: int, scan_limit: int, *, heads: bool = False
    ) -> (
        tuple[list[tuple[str, Inode]], str | None]
        | tuple[list[tuple[str, Inode | FileHead]], str | None]
    ):
        """Up to ``limit`` files (path, inode) that block maintenance looks at — those with
        blocks or being written — in key order after ``start_after``, among at most
        ``scan_limit`` records; and the path to go on after (None: the shard's end).
        ``heads``: a file without blocks (one being written) comes as its record's
        ``FileHead`` rather than its whole ``Inode``.

        Files with neither (inline ones, empty ones) are passed over on their record's head
        (``records.file_head``), without decoding them: on a shard of small files they are
        nearly all, and the walk reads every file every few seconds. The walk asks for heads:
        of a file being written without blocks yet it needs only the lease holder and the
        head has it, while a whole decode cost more than the rest of the file's check (a
        shard being filled holds thousands of such files: ``keelfs bench meta``)."""
        start = _ENTRY if start_after is None else _entry_key(start_after) + b"\x00"
        out: list[tuple[str, Inode | FileHead]] = []
        for scanned, (key, raw) in enumerate(self._store.scan(start, prefix_end(_ENTRY)), 1):
            head = file_head(raw)
            if head is None or head.maintained:
                if heads and head is not None and not head.blocks:
                    out.append((_entry_path(key), head))
                else:
                    out.append((_entry_path(key), Inode.decode(raw)))
            if len(out) == limit or scanned == scan_limit:
                return out, _entry_path(key)
        return out, None

    def lease_expiry(self, session_id: int) -> int | None:
        """When the writer leases of ``session_id`` expire (log time, ms); None: it holds none."""
        raw = self._store.get(_holder_key(session_id))
        return None if raw is None else _U64.unpack(raw)[0]

    def _op_mkdir(self, txn: Txn, cmd: Mkdir, ctx: Context) -> Any:
        path = paths.normalize(cmd.path)
        caller = ctx.caller
        if path == paths.ROOT:
            self._require_dir(txn, path)
            if cmd.parents:
                return {"created": []}
            raise AlreadyExists(path)
        if not cmd.parents:
            self._check_unlocked(txn, path)
            parent = paths.parent(path)
            record = self._require_dir(txn, parent)
            self._check_record(caller, parent, record, WRITE | EXECUTE)
            if self._entry(txn, path) is not None:
                raise AlreadyExists(path)
            attrs = self._new_dir(cmd, caller, parent, record, ctx.now)
            self._make_dir(txn, path, attrs, cmd.self_record, ctx.now)
            return {"created": [path]}
        record = self._require_dir(txn, paths.ROOT)
        created: list[str] = []
        for p in [*paths.ancestors(path)[1:], path]:
            last = p == path
            parent = paths.parent(p)
            inode = self._entry(txn, p)
            if inode is None:
                if not created:  # under the deepest existing directory: the caller's right
                    self._check_record(caller, parent, record, WRITE | EXECUTE)
                self._check_unlocked(txn, p)
                attrs = self._new_dir(cmd, caller, parent, record, ctx.now)
                self._make_dir(txn, p, attrs, cmd.self_record or not last, ctx.now)
                created.append(p)
                record = attrs
            elif not inode.is_dir:
                self._check_record(caller, parent, record, EXECUTE)
                raise AlreadyExists(p) if last else NotADirectory(p)
            elif not last:
                record = self._require_dir(txn, p)
            else:
                self._check_record(caller, parent, record, EXECUTE)
        return {"created": created}

    def _new_dir(self, cmd: Mkdir, caller: Caller, parent: str, record: Inode, now: int) -> Inode:
        """A new directory in ``parent`` (whose self-record is ``record``) for ``caller``."""
        owner, group = self._ownership(caller, cmd.owner, cmd.group, record)
        guards = self._child_guards(parent, record)
        mode, acl = acls.inherit(record.acl, cmd.mode, is_dir=True)
        return Inode(DIRECTORY, mode, owner, group, now, now, guards=guards, acl=acl)

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
        guards = tuple(Guard.from_text(text) for text in cmd.guards)
        attrs = Inode(DIRECTORY, cmd.mode, cmd.owner, cmd.group, ctx.now, ctx.now, guards=guards)
        txn.put(_self_key(path), attrs.encode())
        return {}

    def _make_room(self, txn: Txn, cmd: Create | CreateInline, ctx: Context) -> Inode:
        """The checks of a create at ``cmd.path`` (the caller may write the parent directory;
        an existing file is replaced only with ``overwrite``, by whoever may write it, and
        never while another live session writes it), and the replaced file's blocks queued
        for deletion. Returns the parent directory's self-record."""
        path = paths.normalize(cmd.path)
        parent = paths.parent(path)
        self._check_unlocked(txn, path)
        record = self._require_dir(txn, parent)
        caller = ctx.caller
        self._check_record(caller, parent, record, WRITE | EXECUTE)
        existing = self._entry(txn, path)
        if existing is not None:
            if existing.is_dir:
                raise IsADirectory(path) if cmd.overwrite else AlreadyExists(path)
            if cmd.overwrite and not caller.superuser:
                self._check_inode(caller, path, existing, WRITE)
            holder = existing.lease_holder
            if holder != ctx.session_id and self._holds_lease(txn, holder):
                raise LeaseConflict(path, existing.lease_user)
            if not cmd.overwrite:
                raise AlreadyExists(path)
            self._queue_blocks(txn, existing)
            if holder:
                self._drop_lease(txn, holder, path)
        return record

    def _op_create(self, txn: Txn, cmd: Create, ctx: Context) -> Any:
        path = paths.normalize(cmd.path)
        parent = paths.parent(path)
        record = self._make_room(txn, cmd, ctx)
        caller = ctx.caller
        sid = ctx.session_id
        owner, group = self._ownership(caller, cmd.owner, cmd.group, record)
        mode, acl = acls.inherit(record.acl, cmd.mode, is_dir=False)
        inode = Inode(
            FILE,
            mode,
            owner,
            group,
            ctx.now,
            ctx.now,
            replication=cmd.replication,
            block_size=cmd.block_size,
            under_construction=True,
            lease_holder=sid,
            lease_user=caller.user,
            acl=acl,
        )
        self._check_lease_room(txn, sid)
        txn.put(_entry_key(path), inode.encode())
        txn.put(_lease_key(sid, path), b"")
        self._renew(txn, sid, ctx.now)
        self._touch_dir(txn, parent, ctx.now)
        return inode.info_dict(path)

    def _op_create_inline(self, txn: Txn, cmd: CreateInline, ctx: Context) -> Any:
        """A complete file holding its data in its record (``keelfs.meta.records``): no
        blocks, no lease, in one entry."""
        path = paths.normalize(cmd.path)
        parent = paths.parent(path)
        record = self._make_room(txn, cmd, ctx)
        owner, group = self._ownership(ctx.caller, cmd.owner, cmd.group, record)
        mode, acl = acls.inherit(record.acl, cmd.mode, is_dir=False)
        inode = Inode(
            FILE,
            mode,
            owner,
            group,
            ctx.now,
            ctx.now,
            replication=cmd.replication,
            block_size=cmd.block_size,
            data=cmd.content,
            acl=acl,
        )
        txn.put(_entry_key(path), inode.encode(data_text=cmd.data))
        self._touch_dir(txn, parent, ctx.now)
        return inode.info_dict(path)

    def _written_file(self, txn: Txn, path: str, ctx: Context) -> Inode:
        """The file at ``path`` that the envelope's session writes, for a caller who reaches
        it and owns it or may write it. Its creator owns it, so this ties the lease to the
        identity as well as to the session (a session id is no secret: stat shows it)."""
        self._check_unlocked(txn, path, parent=False)
        self._check_reach(txn, ctx.caller, path)
        inode = self._writer_file(txn, path, ctx.session_id)
        if not ctx.caller.superuser and ctx.caller.user != inode.owner:
            self._check_inode(ctx.caller, path, inode, WRITE)
        return inode

    def _op_add_block(self, txn: Txn, cmd: AddBlock, ctx: Context) -> Any:
        path = paths.normalize(cmd.path)
        inode = self._written_file(txn, path, ctx)
        blocks = list(inode.blocks)
        if any(b.block_id == cmd.block_id for b in blocks):
            raise AlreadyExists(str(cmd.block_id), "block")
        if inode.truncating is not None and len(blocks) != inode.truncating[1]:
            raise InvalidArgument(
                f"{path} is being truncated: its kept bytes go into one new block", "path"
            )
        self._check_unsealed(path, inode, cmd.previous_length, "previous_length")
        data = inode.data
        if cmd.previous_length is not None:
            data = None  # an appended inline file's bytes are in the finished first block
            if not blocks:
                raise InvalidArgument(
                    f"{path} has no block to set the length of", "previous_length"
                )
            check_range(cmd.previous_length, 0, inode.block_size, "previous_length")
            last = blocks[-1]
            blocks[-1] = BlockInfo(last.block_id, last.gen_stamp, cmd.previous_length)
        blocks.append(BlockInfo(cmd.block_id, cmd.gen_stamp, 0))
        self._fresh_blocks.append(cmd.block_id)
        inode = inode.evolve(blocks=tuple(blocks), mtime=ctx.now, data=data)
        txn.put(_entry_key(path), inode.encode())
        self._renew(txn, ctx.session_id, ctx.now)
        return inode.info_dict(path)

    def _op_complete(self, txn: Txn, cmd: CompleteFile, ctx: Context) -> Any:
        path = paths.normalize(cmd.path)
        inode = self._written_file(txn, path, ctx)
        blocks = list(inode.blocks)
        if inode.truncating is not None:
            blocks = self._finish_truncate(path, inode, cmd.last_length)
            self._queue_list(txn, self._truncate_dropped(inode))
        elif cmd.last_length is not None:
            self._check_unsealed(path, inode, cmd.last_length, "last_length")
            if blocks:
                check_range(cmd.last_length, 0, inode.block_size, "last_length")
                last = blocks[-1]
                blocks[-1] = BlockInfo(last.block_id, last.gen_stamp, cmd.last_length)
            elif cmd.last_length:
                raise InvalidArgument(f"{path} has no block to set the length of", "last_length")
        inode = inode.evolve(
            blocks=tuple(blocks),
            under_construction=False,
            lease_holder=0,
            mtime=ctx.now,
            data=None if blocks else inode.data,  # (an appended inline file's: now in blocks)
            truncating=None,
            sealed_blocks=0,
        )
        txn.put(_entry_key(path), inode.encode())
        self._drop_lease(txn, ctx.session_id, path)
        return inode.info_dict(path)

    def _op_complete_inline(self, txn: Txn, cmd: CompleteInline, ctx: Context) -> Any:
        """``Complete`` of a file with no block, its content kept in its record."""
        path = paths.normalize(cmd.path)
        inode = self._written_file(txn, path, ctx)
        if inode.blocks or inode.truncating is not None:
            raise InvalidArgument(f"{path} has blocks: its data cannot be inline", "data")
        inode = inode.evolve(
            under_construction=False, lease_holder=0, mtime=ctx.now, data=cmd.content
        )
        txn.put(_entry_key(path), inode.encode(data_text=cmd.data))
        self._drop_lease(txn, ctx.session_id, path)
        return inode.info_dict(path)

    def _op_update_block(self, txn: Txn, cmd: UpdateBlock, ctx: Context) -> Any:
        path = paths.normalize(cmd.path)
        inode = self._written_file(txn, path, ctx)
        blocks = list(inode.blocks)
        if not blocks or blocks[-1].block_id != cmd.block_id:
            raise InvalidArgument(
                f"block {cmd.block_id} is not the last block of {path}", "block_id"
            )
        if len(blocks) <= inode.sealed_blocks:
            raise InvalidArgument(
                f"block {cmd.block_id} of {path} was written before it was reopened: its "
                "stamp does not change",
                "block_id",
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
        return inode.info_dict(path)

    def _op_recover_lease(self, txn: Txn, cmd: RecoverLease, ctx: Context) -> Any:
        path = paths.normalize(cmd.path)
        self._check_unlocked(txn, path, parent=False)
        inode = self._lookup(txn, path)
        if inode is None:
            raise self._missing(txn, path)
        if inode.is_dir or not inode.under_construction:
            return inode.info_dict(path)  # closed meanwhile: nothing to recover
        if inode.lease_holder and self._holds_lease(txn, inode.lease_holder):
            raise LeaseConflict(path, inode.lease_user, message=f"{path} has a live writer")
        rolled_back = self._rolled_back(txn, inode)
        if rolled_back is not None:  # an unfinished truncate, or append of an inline file
            inode = rolled_back.evolve(
                under_construction=False, lease_holder=0, mtime=ctx.now, sealed_blocks=0
            )
            txn.put(_entry_key(path), inode.encode())
            return inode.info_dict(path)
        blocks = list(inode.blocks)
        if blocks and cmd.drop_last:
            blocks.pop()
        elif blocks:
            check_range(cmd.last_length, 0, inode.block_size, "last_length")
            last = blocks[-1]
            blocks[-1] = BlockInfo(last.block_id, last.gen_stamp, cmd.last_length)
        inode = inode.evolve(
            blocks=tuple(blocks),
            under_construction=False,
            lease_holder=0,
            mtime=ctx.now,
            sealed_blocks=0,
        )
        txn.put(_entry_key(path), inode.encode())
        return inode.info_dict(path)

    def _op_renew_lease(self, txn: Txn, cmd: RenewLease, ctx: Context) -> Any:
        if not self._holds_lease(txn, ctx.session_id):
            return {"renewed": False}
        self._renew(txn, ctx.session_id, ctx.now)
        return {"renewed": True, "expiry": ctx.now + self.lease_ttl_ms}

    def _op_delete(self, txn: Txn, cmd: Delete, ctx: Context) -> Any:
        path = paths.normalize(cmd.path)
        self._check_unlocked(txn, path)  # first: a transaction may be bringing it here
        caller = ctx.caller
        self._check_reach(txn, caller, path, WRITE)
        inode = self._entry(txn, path)
        if inode is None:
            raise self._missing(txn, path)
        self._check_sticky(txn, caller, path, inode)
        if inode.is_dir:
            self._check_subtree_unlocked(txn, path)
            self.refuse_snapshottable(txn, path, "delete")
        files = dirs = blocks = 0
        if inode.is_dir:
            self._require_dir(txn, path)
            prefix = _children_prefix(path)
            if not cmd.recursive and _first(txn, prefix, prefix_end(prefix)) is not None:
                raise DirectoryNotEmpty(path)
            self._check_subtree_access(txn, caller, path)
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
        caller = ctx.caller
        self._check_reach(txn, caller, src, WRITE)
        inode = self._entry(txn, src)
        if inode is None:
            raise self._missing(txn, src)
        self._check_sticky(txn, caller, src, inode)
        if inode.is_dir:
            self._check_subtree_unlocked(txn, src)
            self.refuse_snapshottable(txn, src, "rename")
        if inode.is_dir and paths.is_ancestor(src, dst):
            raise InvalidArgument(f"cannot move {src} into itself ({dst})", "dst")
        if src == dst or dst == paths.ROOT:
            raise AlreadyExists(dst)
        dst_parent = paths.parent(dst)
        dst_record = self._require_dir(txn, dst_parent)
        self._check_record(caller, dst_parent, dst_record, WRITE | EXECUTE)
        if inode.is_dir:
            self._require_dir(txn, src)
        target = self._entry(txn, dst)
        if cmd.expect:
            check_version(dst, target, cmd.expect)
        if target is not None:
            if not cmd.overwrite:
                raise AlreadyExists(dst)
            self._check_sticky(txn, caller, dst, target)
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
        top_guards = self._child_guards(dst_parent, dst_record)

        def regarded(directory: Inode) -> Inode:
            """A moved directory with its traverse guards of the new place."""
            guards = rebase(directory.guards, depth(src), depth(dst), top_guards)
            return directory if guards == directory.guards else directory.evolve(guards=guards)

        txn.delete(_entry_key(src))
        txn.put(_entry_key(dst), (regarded(inode) if inode.is_dir else inode).encode())
        if inode.lease_holder:
            txn.delete(_lease_key(inode.lease_holder, src))
            txn.put(_lease_key(inode.lease_holder, dst), b"")
        if inode.is_dir:
            self._move_self_record(txn, src, dst, regarded)
            for old, child in moved:
                new = dst + old[len(src) :]
                txn.delete(_entry_key(old))
                txn.put(_entry_key(new), (regarded(child) if child.is_dir else child).encode())
                if child.is_dir:
                    self._move_self_record(txn, old, new, regarded)
                elif child.lease_holder:
                    txn.delete(_lease_key(child.lease_holder, old))
                    txn.put(_lease_key(child.lease_holder, new), b"")
        self._touch_dir(txn, paths.parent(src), ctx.now)
        self._touch_dir(txn, dst_parent, ctx.now)
        return {}

    @staticmethod
    def _move_self_record(txn: Txn, old: str, new: str, regarded: Callable[[Inode], Inode]) -> None:
        """Move directory ``old``'s self-record (here: checked before) to ``new``, with its
        guards of the new place; its bytes unchanged if they stay the same."""
        raw = txn.get(_self_key(old))
        assert raw is not None  # checked by _require_dir / _subtree
        record = Inode.decode(raw)
        moved = regarded(record)
        txn.delete(_self_key(old))
        txn.put(_self_key(new), raw if moved is record else moved.encode())

    def _modify(
        self,
        txn: Txn,
        path: str,
        ctx: Context,
        allowed: Callable[[Inode], None],
        *,
        derive: Callable[[Inode], dict[str, Any]] | None = None,
        **changes: Any,
    ) -> Inode:
        """Change attributes of ``path`` for ``ctx.caller``, who must reach it and pass
        ``allowed(inode)``: ``changes``, and those ``derive(inode)`` gives. A directory whose
        guard changes (chmod, chown, an ACL) rewrites it in the directories below it here;
        the master tells the other shards (``SetTraverseGuard``)."""
        self._check_unlocked(txn, path, parent=False)
        self._check_reach(txn, ctx.caller, path)
        inode = self._lookup(txn, path)
        if inode is None:
            raise self._missing(txn, path)
        if not ctx.caller.superuser:
            allowed(inode)
        if derive is not None:
            changes.update(derive(inode))
        changed = inode.evolve(**changes)
        self._put(txn, path, changed)
        if changed.is_dir:
            self._respread(txn, path, inode, changed)
        return changed

    def _op_set_replication(self, txn: Txn, cmd: SetReplication, ctx: Context) -> Any:
        path = paths.normalize(cmd.path)
        inode = self._lookup(txn, path)
        if inode is not None and inode.is_dir:
            raise IsADirectory(path)

        def allowed(inode: Inode) -> None:
            self._check_inode(ctx.caller, path, inode, WRITE)

        changed = self._modify(txn, path, ctx, allowed, replication=cmd.replication)
        return changed.info_dict(path)

    def _op_set_times(self, txn: Txn, cmd: SetTimes, ctx: Context) -> Any:
        path = paths.normalize(cmd.path)
        changes: dict[str, Any] = {
            k: v for k, v in (("mtime", cmd.mtime), ("atime", cmd.atime)) if v is not None
        }

        def allowed(inode: Inode) -> None:  # the owner, or whoever may write it
            if ctx.caller.user != inode.owner:
                self._check_inode(ctx.caller, path, inode, WRITE)

        return self._modify(txn, path, ctx, allowed, **changes).info_dict(path)

    def _op_set_permission(self, txn: Txn, cmd: SetPermission, ctx: Context) -> Any:
        path = paths.normalize(cmd.path)

        def allowed(inode: Inode) -> None:
            self._check_owner(ctx.caller, path, inode, "OWNER (chmod)")

        return self._modify(txn, path, ctx, allowed, mode=cmd.mode).info_dict(path)

    def _op_set_owner(self, txn: Txn, cmd: SetOwner, ctx: Context) -> Any:
        """chown is the superuser's; chgrp the owner's too, to a group the owner is in."""
        path = paths.normalize(cmd.path)
        changes: dict[str, Any] = {
            k: v for k, v in (("owner", cmd.owner), ("group", cmd.group)) if v is not None
        }
        caller = ctx.caller

        def allowed(inode: Inode) -> None:
            attrs = (inode.owner, inode.group, inode.mode)
            if cmd.owner is not None and cmd.owner != caller.user:
                raise denied(caller, path, *attrs, "SUPERUSER (chown)")
            self._check_owner(caller, path, inode, "OWNER (chgrp)")
            if cmd.group is not None and not caller.in_group(cmd.group):
                raise denied(caller, path, *attrs, f"MEMBER OF {cmd.group} (chgrp)")

        return self._modify(txn, path, ctx, allowed, **changes).info_dict(path)

    def _op_set_acl(self, txn: Txn, cmd: SetAcl, ctx: Context) -> Any:
        spec = cmd.spec()
        return self._change_acl(txn, cmd, ctx, lambda existing: acls.replace(existing, spec))

    def _op_modify_acl_entries(self, txn: Txn, cmd: ModifyAclEntries, ctx: Context) -> Any:
        spec = cmd.spec()
        return self._change_acl(txn, cmd, ctx, lambda existing: acls.merge(existing, spec))

    def _op_remove_acl_entries(self, txn: Txn, cmd: RemoveAclEntries, ctx: Context) -> Any:
        spec = cmd.spec()
        return self._change_acl(txn, cmd, ctx, lambda existing: acls.filter_by_spec(existing, spec))

    def _op_remove_default_acl(self, txn: Txn, cmd: RemoveDefaultAcl, ctx: Context) -> Any:
        return self._change_acl(txn, cmd, ctx, acls.filter_default)

    def _op_remove_acl(self, txn: Txn, cmd: RemoveAcl, ctx: Context) -> Any:
        return self._change_acl(txn, cmd, ctx, None)

    def _change_acl(
        self,
        txn: Txn,
        cmd: AclChange,
        ctx: Context,
        transform: Callable[[list[acls.AclEntry]], list[acls.AclEntry]] | None,
    ) -> Any:
        """An ACL change by the owner or a superuser (HDFS checks the owner, then the spec):
        the transformation of the inode's whole ACL, stored back into mode and entries
        (``keelfs.meta.acls``); ``None``: the ACL removed."""
        path = paths.normalize(cmd.path)

        def allowed(inode: Inode) -> None:
            self._check_owner(ctx.caller, path, inode, f"OWNER ({cmd.op})")

        def derive(inode: Inode) -> dict[str, Any]:
            if transform is None:
                mode, acl = acls.remove_all(inode.mode, inode.acl)
            else:
                entries = transform(acls.logical(inode.mode, inode.acl))
                mode, acl = acls.store(inode.is_dir, inode.mode, entries)
            return {"mode": mode, "acl": acl}

        return self._modify(txn, path, ctx, allowed, derive=derive).info_dict(path)

    def _op_set_traverse_guard(self, txn: Txn, cmd: SetTraverseGuard, ctx: Context) -> Any:
        path = paths.normalize(cmd.path)
        self._check_unlocked(txn, path, parent=False)
        acl = acls.parse_spec(cmd.acl)
        attrs = {"owner": cmd.owner, "group": cmd.group, "mode": cmd.mode, "acl": acl}
        record = self._self_record_here(txn, path)
        if record is not None:
            updated = record.evolve(**attrs)
            if updated != record:
                txn.put(_self_key(path), updated.encode())
        guard = guard_of(path, cmd.owner, cmd.group, cmd.mode, acl)
        return {"records": self._spread_guard(txn, path, guard)}

    def _op_dequeue_block_deletes(self, txn: Txn, cmd: DequeueBlockDeletes, ctx: Context) -> Any:
        removed = 0
        for block_id in sorted(set(cmd.block_ids)):
            if txn.get(_queue_key(block_id)) is not None:
                txn.delete(_queue_key(block_id))
                removed += 1
        return {"removed": removed}
