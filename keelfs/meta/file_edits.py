"""Append, truncate and concat: the data shard's commands that change an existing file's
content (``keelfs.meta.namespace.ShardStateMachine`` mixes them in).

Append (``Append``; HDFS ``append`` with its ``NEW_BLOCK`` flag). A closed file is put under
construction again, its writer lease held by the envelope's session exactly as ``Create``
gives it; its blocks are left as they are and the appended bytes go into new blocks
(``AddBlock``, ``CompleteFile``: the writer's path of a new file from there on). A partly
filled last block is *not* reopened: re-stamping a finalized replica moves it back to being
written on its chunk server, and a writer that died then would leave no finalized replica of
bytes that were committed before (lease recovery settles from finalized replicas only, and
would drop the block). A file appended often therefore has short blocks in its middle,
which readers and the block layer handle (every block carries its length).

An inline file (its bytes in its record) being appended stays inline if the result fits
(``CompleteInline`` with the whole new content); otherwise its bytes go, with the appended
ones, into its first block. Its record keeps the old bytes until that block is recorded
finalized (the next ``AddBlock`` or the ``CompleteFile``), so a writer that dies before
leaves the file as it was: lease recovery drops the blocks and keeps the data.

Truncate (``Truncate``). At a block boundary (or for an inline file) it is one entry: the
blocks past the cut leave the record and go to the delete queue. Inside a block the kept
bytes of the cut block are rewritten as a new block (copy-on-truncate): the file goes under
construction with the lease held by the session and ``Inode.truncating`` recording the
length and the block count; readers still see the old content (the new block has length 0
until the close). The writer copies the kept bytes into one new block, and ``CompleteFile``
splices it in place of the cut block and those after it, which are queued for deletion, all
in one entry. A writer that dies leaves the file as it was: lease recovery rolls the truncate
back (the copy is queued for deletion). No finalized replica is ever rewritten in place.

Both record how many blocks the file had when reopened (``Inode.sealed_blocks``): until the
close those keep their stamps and lengths (``UpdateBlock`` of one, or a length given for one,
is refused), and lease recovery never drops or cuts one (an appender that died before its
first block leaves the file as it was, whatever its replicas' reports say).

Concat (``Concat``). The sources' blocks are appended to the target's block list and the
sources' entries removed, in one entry: the blocks are the same, only the record referencing
them changes (the block index follows in the same write, ``keelfs.meta.blockrefs``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keelfs.errors import InvalidArgument, IsADirectory, LeaseConflict
from keelfs.meta import paths
from keelfs.meta.commands import Append, Concat, Truncate
from keelfs.meta.kvstore import Txn
from keelfs.meta.machine import Context
from keelfs.meta.permission_checks import PermissionChecks
from keelfs.meta.principals import READ, WRITE, Caller
from keelfs.meta.records import MAX_INLINE_BYTES, BlockInfo, Inode
from keelfs.meta.shard_records import _entry_key, _lease_key

__all__ = ["FileEditSteps", "block_at", "join_files"]


def block_at(blocks: tuple[BlockInfo, ...] | list[BlockInfo], length: int) -> tuple[int, int]:
    """``(index, start)`` of the block that byte ``length - 1`` ends inside (the cut point
    ``length`` falls strictly inside it), or ``(index, start)`` of the first block starting
    at ``length`` (a boundary: ``start == length``), ``(len(blocks), total)`` past them all."""
    start = 0
    for index, block in enumerate(blocks):
        if start == length or start + block.length > length:
            return index, start
        start += block.length
    return len(blocks), start


def join_files(target: Inode, sources: Sequence[tuple[str, Inode]], now: int) -> Inode:
    """The target of a concat once joined with ``sources`` (path, record; closed files):
    their blocks after its own, or (every one inline) their bytes after its own. Raises
    ``InvalidArgument`` for another block size or an inline file among files in blocks."""
    for src, file in sources:
        if file.block_size != target.block_size:
            raise InvalidArgument(
                f"{src} has block size {file.block_size}, the target {target.block_size}: "
                "concat needs the same block size",
                "sources",
            )
    files = [target, *(file for _, file in sources)]
    if any(f.blocks for f in files):
        if any(f.data for f in files):
            raise InvalidArgument(
                "concat of files in blocks with files kept inline (at most "
                f"{MAX_INLINE_BYTES} bytes, written whole): append the inline ones instead",
                "sources",
            )
        blocks = tuple(b for f in files for b in f.blocks)
        return target.evolve(blocks=blocks, data=None, mtime=now)
    data = b"".join(f.data or b"" for f in files)
    if len(data) > MAX_INLINE_BYTES:
        raise InvalidArgument(
            f"concat of inline files makes {len(data)} bytes, more than an inline file holds "
            f"({MAX_INLINE_BYTES}): append them instead",
            "sources",
        )
    return target.evolve(data=data if data or target.data is not None else None, mtime=now)


class FileEditSteps(PermissionChecks):
    """The ``append``, ``truncate`` and ``concat`` commands (see the module docstring)."""

    def _closed_file(
        self, txn: Txn, caller: Caller, path: str, access: int, *, remove: bool = False
    ) -> Inode:
        """The closed file at ``path`` for ``caller``, who must reach it (and may remove it
        from its directory, ``remove``) and has ``access`` on it; ``LeaseConflict`` while it
        is being written or awaits lease recovery."""
        self._check_unlocked(txn, path, parent=remove)
        self._check_reach(txn, caller, path, WRITE if remove else 0)
        inode = self._entry(txn, path)
        if inode is None:
            raise self._missing(txn, path)
        if inode.is_dir:
            raise IsADirectory(path)
        if not caller.superuser:
            self._check_inode(caller, path, inode, access)
            if remove:
                self._check_sticky(txn, caller, path, inode)
        if inode.under_construction:
            live = self._holds_lease(txn, inode.lease_holder)
            raise LeaseConflict(
                path,
                inode.lease_user if live else "",
                message=f"{path} is being written"
                if live
                else f"{path} is in lease recovery (its last writer is gone): retry later",
            )
        return inode

    def _take_lease(self, txn: Txn, path: str, inode: Inode, ctx: Context, **changes: Any) -> Inode:
        sid = ctx.session_id
        self._check_lease_room(txn, sid)
        changes.setdefault("mtime", ctx.now)
        opened = inode.evolve(
            under_construction=True, lease_holder=sid, lease_user=ctx.caller.user, **changes
        )
        txn.put(_entry_key(path), opened.encode())
        txn.put(_lease_key(sid, path), b"")
        self._renew(txn, sid, ctx.now)
        return opened

    def _queue_list(self, txn: Txn, blocks: tuple[BlockInfo, ...] | list[BlockInfo]) -> None:
        """Queue ``blocks`` (no longer referenced by the file) for deletion."""
        self._queue_blocks(txn, Inode("file", 0, "", "", 0, 0, blocks=tuple(blocks)))

    def _op_append(self, txn: Txn, cmd: Append, ctx: Context) -> Any:
        path = paths.normalize(cmd.path)
        inode = self._entry(txn, path)
        inline = inode is not None and not inode.is_dir and inode.data is not None
        access = WRITE | READ if inline else WRITE
        inode = self._closed_file(txn, ctx.caller, path, access)
        opened = self._take_lease(txn, path, inode, ctx, sealed_blocks=len(inode.blocks))
        return opened.info_dict(path)

    def _op_truncate(self, txn: Txn, cmd: Truncate, ctx: Context) -> Any:
        path = paths.normalize(cmd.path)
        inode = self._closed_file(txn, ctx.caller, path, WRITE)
        if cmd.length > inode.length:
            raise InvalidArgument(
                f"cannot truncate {path} to {cmd.length} bytes: it has {inode.length} "
                "(truncate only shortens a file)",
                "length",
            )
        if inode.data is not None:
            cut = inode.evolve(data=inode.data[: cmd.length], mtime=ctx.now)
            txn.put(_entry_key(path), cut.encode())
            return cut.info_dict(path)
        blocks = inode.blocks
        index, start = block_at(blocks, cmd.length)
        if start == cmd.length:  # a boundary: drop the blocks from there on
            self._queue_list(txn, blocks[index:])
            cut = inode.evolve(blocks=blocks[:index], mtime=ctx.now)
            txn.put(_entry_key(path), cut.encode())
            return cut.info_dict(path)
        if not ctx.caller.superuser:  # the writer copies the kept bytes of the cut block
            self._check_inode(ctx.caller, path, inode, READ)
        opened = self._take_lease(
            txn,
            path,
            inode,
            ctx,
            truncating=(cmd.length, len(blocks)),
            sealed_blocks=len(blocks),
            mtime=inode.mtime,
        )
        return opened.info_dict(path)

    def _finish_truncate(self, path: str, inode: Inode, last_length: int | None) -> list[BlockInfo]:
        """The block list of ``inode`` (being truncated) once its copy block, ``last_length``
        long, replaces the cut block and those after it; raises if the copy is not that."""
        assert inode.truncating is not None
        length, count = inode.truncating
        blocks = list(inode.blocks)
        index, start = block_at(blocks[:count], length)
        if len(blocks) != count + 1 or last_length is None or start + last_length != length:
            raise InvalidArgument(
                f"{path} is being truncated to {length} bytes: close it with one new block "
                f"of {length - start} bytes",
                "last_length",
            )
        copy = blocks[-1]
        return [*blocks[:index], BlockInfo(copy.block_id, copy.gen_stamp, last_length)]

    def _truncate_dropped(self, inode: Inode) -> list[BlockInfo]:
        """The blocks a finished truncate of ``inode`` leaves behind."""
        assert inode.truncating is not None
        length, count = inode.truncating
        index, _ = block_at(inode.blocks[:count], length)
        return list(inode.blocks[index:count])

    @staticmethod
    def _check_unsealed(path: str, inode: Inode, length: int | None, argument: str) -> None:
        """A reopened file's committed blocks keep their lengths: ``length``, given for its
        last block, must be that block's length when the block is one of them."""
        blocks = inode.blocks
        if length is None or not blocks or len(blocks) > inode.sealed_blocks:
            return
        if length != blocks[-1].length:
            raise InvalidArgument(
                f"the last block of {path} was written before it was reopened: its length "
                f"stays {blocks[-1].length}",
                argument,
            )

    def _rolled_back(self, txn: Txn, inode: Inode) -> Inode | None:
        """Lease recovery of a file whose append of an inline file or whose truncate did not
        finish: the file as it was (the blocks written since queued for deletion), or None
        for any other file."""
        if inode.truncating is not None:
            count = inode.truncating[1]
            self._queue_list(txn, inode.blocks[count:])
            return inode.evolve(blocks=inode.blocks[:count], truncating=None)
        if inode.data is not None:
            self._queue_list(txn, inode.blocks)
            return inode.evolve(blocks=())
        if inode.blocks and len(inode.blocks) <= inode.sealed_blocks:
            return inode  # reopened, nothing added: its blocks stay as they were
        return None

    def _op_concat(self, txn: Txn, cmd: Concat, ctx: Context) -> Any:
        target = paths.normalize(cmd.target)
        caller = ctx.caller
        inode = self._closed_file(txn, caller, target, WRITE)
        sources: list[tuple[str, Inode]] = []
        for source in cmd.sources:
            src = paths.normalize(source)
            if src == target:
                raise InvalidArgument(f"{src} is the target of the concat", "sources")
            if any(src == seen for seen, _ in sources):
                raise InvalidArgument(f"{src} is named twice in sources", "sources")
            file = self._closed_file(txn, caller, src, READ, remove=True)
            sources.append((src, file))
        joined = join_files(inode, sources, ctx.now)
        txn.put(_entry_key(target), joined.encode())
        for src, _ in sources:
            txn.delete(_entry_key(src))
            self._touch_dir(txn, paths.parent(src), ctx.now)
        return joined.info_dict(target)
