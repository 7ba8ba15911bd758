"""The ``keelfs.meta.v1.Namespace`` service of a master, and the ``Node`` status service.

Routing per RPC (also in ``proto/meta.proto``)
----------------------------------------------
Every request is first checked for bad input (paths through ``keelfs.meta.paths``, argument
ranges through each command's ``validate()``), which is refused before anything is proposed.
Then the shard that must serve it is found in this node's ShardMap:

- by the path's ENTRY (the owner of its parent directory, DESIGN 2.5): every write,
  ``GetFileInfo`` and ``ContentSummary``;
- by the DIRECTORY itself (the owner of its self-record and children): ``ListDir``;
- by shard id: ``RegisterSession``, ``KeepAlive``, ``RenewLease``.

If this node holds no member of that shard, or the request was routed by an OLDER map than
ours, the answer is ``REDIRECT`` (owner shard, its members' client addresses, map version). A
request stamped with a NEWER map makes us fetch the map first.

Writes are proposed by the leader only; a follower answers ``NOT_LEADER`` naming the leader's
node id and client address. Reads are served by any member, linearizably by default (a
ReadIndex barrier on the member itself, which works on followers: no redirect needed); with
``stale_ok`` from the member's applied state at once, with no barrier.

Nothing stateful is checked before proposing a command that carries a client session: a
retried command must reach the state machine to get its recorded reply (exactly-once), so
answering "already exists" from a pre-check would turn a retried create's success into a
failure. The pre-checks below happen only where a command is coordinated across shards.

Cross-shard work: transactions (``keelfs.master.transactions``)
--------------------------------------------------------------
When the records an operation changes live on more than one shard, the leader that received
it (the shard of the path's entry, or of ``src``) coordinates a transaction; the plain
command is used whenever one shard holds everything:

- ``Rename`` of a file whose target entry is on another shard; of a directory when any
  directory of its subtree is, or will be under its new name, on another shard than the
  entries (every record of the subtree is read, checked unchanged and moved:
  ``keelfs.master.subtree``, at most ``subtree.MAX_ENTRIES`` records). Files being written
  are not moved across shards (their lease would have to move too): close them first.
- ``Mkdir`` of a directory whose own shard is not its parent's: the entry here, the
  self-record there. ``parents`` creates each missing ancestor through the shard owning it.
- ``Delete`` of a directory whose self-record is on another shard (that shard checks it is
  empty), and a recursive delete whose subtree spans shards (every record checked and
  removed, the files' blocks queued).

A retried request (same session and seq) is recognised whichever way its first attempt went:
the transaction's begin record carries the client command's digest, and a plain command that
finds a transaction's reply in the session cache waits for that transaction's outcome. So
nothing stateful is checked before proposing in a way that could turn a retried success into
a failure: a path that is gone is still proposed (its check fails with NOT_FOUND unless the
session remembers the first attempt). Ordinary commands on a path a transaction has locked
are re-proposed until it is released (``MetaNode.propose``); reads of it wait
(``MetaNode.wait_unlocked``).

A *replay* (``RequestHeader.session_shard``: a write of unknown outcome whose path has moved
to another shard since, ``keelfs.client._core``) skips all of that: it is routed to its
session's shard and proposed as it is, answered from the reply cache or with ``REDIRECT``
(never applied there), see ``_replayed``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from keelfs import failpoints
from keelfs.errors import (
    AlreadyExists,
    DirectoryNotEmpty,
    InvalidArgument,
    KeelError,
    LeaseConflict,
    NotADirectory,
    NotFound,
    Unavailable,
)
from keelfs.master import subtree
from keelfs.master.batch import serve_batch
from keelfs.master.block_service import BlockServiceMixin, locate
from keelfs.master.member import Member, now_ms
from keelfs.master.servicer import ServicerBase
from keelfs.meta import commands, paths
from keelfs.meta.commands import (
    DEFAULT_BLOCK_SIZE,
    DEFAULT_GROUP,
    DEFAULT_OWNER,
    Command,
    Create,
    Delete,
    KeepAlive,
    Mkdir,
    MkdirSelf,
    RegisterSession,
    Rename,
    RenewLease,
    SetOwner,
    SetPermission,
    SetReplication,
    SetTimes,
    TxnFinish,
    TxnPrepare,
    check_path,
)
from keelfs.meta.namespace import MAX_LIST_LIMIT, ShardStateMachine
from keelfs.meta.records import DIRECTORY, FileInfo, Inode
from keelfs.meta.transactions import Step, TxnRecord
from keelfs.rpc.pb import meta_pb2 as pb
from keelfs.rpc.wire import file_info_to_pb, summary_to_pb

if TYPE_CHECKING:
    from keelfs.master.node import MetaNode

__all__ = ["NamespaceServicer", "NodeServicer"]

DEFAULT_LIST_LIMIT = 1000
MAX_PAGE_BYTES = 4 << 20
"""A ListDir page is cut when its entries exceed this (the cursor continues after them)."""


def _seq_applied(sm: ShardStateMachine, header: pb.RequestHeader) -> bool:
    """Whether this shard applied the request's (session, seq) already: the request is a
    retry, answered from the session's reply cache (read after a barrier)."""
    if not header.session_id or not header.seq:
        return False
    session = sm.session(header.session_id)
    return session is not None and session.last_seq >= header.seq


def _cross_shard(err: KeelError, what: str) -> KeelError:
    """The state machine refuses with NotFound("directory record") when a directory it must
    handle whole has its self-record on another shard: the subtree changed between the
    leader's check (which sends such requests through a transaction) and the apply."""
    if isinstance(err, NotFound) and err.kind == "directory record":
        return InvalidArgument(
            f"{what}: directory {err.name} got children on another shard while the request "
            "ran; try again",
            "path",
        )
    return err


def _dir_record_error(sm: ShardStateMachine, directory: str) -> KeelError | None:
    """None if ``directory``'s self-record is here, else the error a create in it would get."""
    try:
        listing = sm.list_dir(directory, limit=1)
    except KeelError as exc:
        return exc
    first = listing.entries[0] if listing.entries else None
    if first is not None and first.path == directory and not first.is_dir:
        return NotADirectory(directory)
    return None


def _subdirectories(sm: ShardStateMachine, top: str) -> Iterator[str]:
    """Every directory below ``top`` reachable through self-records held here."""
    stack = [top]
    while stack:
        current = stack.pop()
        cursor: str | None = None
        while True:
            try:
                page = sm.list_dir(current, start_after=cursor, limit=MAX_LIST_LIMIT)
            except KeelError:
                break  # its children are elsewhere: the state machine refuses the move
            for entry in page.entries:
                if entry.is_dir and entry.path != current:
                    yield entry.path
                    stack.append(entry.path)
            if page.cursor is None:
                break
            cursor = page.cursor


def _txn_reply(value: dict[str, Any], info: pb.ReplyInfo) -> pb.TxnReply:
    error = value.get("error")
    return pb.TxnReply(
        state=str(value.get("state", "unknown")),
        error=json.dumps(error) if error else "",
        info=info,
    )


def _spans(m: Any, shard: str, src: str, dst: str, sm: ShardStateMachine) -> bool:
    """Whether moving directory ``src`` to ``dst`` touches another shard than ``shard``: a
    directory of its subtree lives elsewhere now, or would under its new name."""
    for d in [src, *_subdirectories(sm, src)]:
        new = dst + d[len(src) :]
        if m.shard_for_directory(d) != shard or m.shard_for_directory(new) != shard:
            return True
    return False


class NamespaceServicer(BlockServiceMixin, ServicerBase):
    def __init__(self, node: MetaNode) -> None:
        super().__init__(node)

    # ------------------------------------------------------------------ helpers
    def _reply(self, member: Member, index: int = 0, term: int = 0) -> pb.ReplyInfo:
        return self.node.reply_info(member, index, term)

    async def _info_write(
        self,
        context: Any,
        header: pb.RequestHeader,
        path: str,
        build: Callable[[str], Command],
    ) -> pb.FileInfoReply:
        """Check ``path``, route by its entry, propose ``build(path)``, answer with the
        FileInfo the state machine returned."""

        async def work() -> pb.FileInfoReply:
            normal = self._path(path)
            command = build(normal)
            command.validate()
            member = await self.node.route(header, normal, by_directory=False)
            result, index, term = await self.node.propose(
                member, command, header, self.timeout(context)
            )
            info = FileInfo.from_dict(result.unwrap())
            return pb.FileInfoReply(
                info=file_info_to_pb(info), reply=self._reply(member, index, term)
            )

        return await self.serve(context, work())

    async def _replayed(
        self, member: Member, command: Command, header: pb.RequestHeader, timeout: float
    ) -> tuple[Any, int, int]:
        """A replayed write (``header.session_shard``, ``MetaNode.route``): the value its
        shard's reply cache holds (a transaction's: its outcome, waited for), or the error it
        holds; ``REDIRECT`` if it was never applied here. Nothing is planned or checked first,
        as for a new request: the map may not place the path on this shard any more."""
        result, index, term = await self.node.propose(member, command, header, timeout)
        err = result.exception()
        if err is not None:
            raise _cross_shard(err, command.op)
        value = result.value
        if isinstance(value, dict) and "txn_id" in value:
            done = await self.node.txns.outcome(member, int(value["txn_id"]), timeout)
            value = self._txn_outcome(done, f"{command.op} (a retried request)")
        return value, index, term

    @staticmethod
    def _path(value: str, argument: str = "path") -> str:
        return check_path(value, argument)

    # ------------------------------------------------------------------ sessions
    async def RegisterSession(  # noqa: N802
        self, request: pb.RegisterSessionRequest, context: Any
    ) -> pb.RegisterSessionReply:
        async def work() -> pb.RegisterSessionReply:
            member = await self.node.shard_member(pb.RequestHeader(), request.group)
            result, index, term = await self.node.propose(
                member, RegisterSession(), None, self.timeout(context)
            )
            return pb.RegisterSessionReply(
                session_id=int(result.unwrap()["session_id"]),
                ttl_ms=member.sm.session_ttl_ms,
                info=self._reply(member, index, term),
            )

        return await self.serve(context, work())

    async def KeepAlive(  # noqa: N802
        self, request: pb.KeepAliveRequest, context: Any
    ) -> pb.KeepAliveReply:
        async def work() -> pb.KeepAliveReply:
            header = pb.RequestHeader(session_id=request.session_id)
            member = await self.node.shard_member(header, request.group)
            result, index, term = await self.node.propose(
                member, KeepAlive(), header, self.timeout(context)
            )
            result.unwrap()
            return pb.KeepAliveReply(info=self._reply(member, index, term))

        return await self.serve(context, work())

    async def RenewLease(  # noqa: N802
        self, request: pb.RenewLeaseRequest, context: Any
    ) -> pb.RenewLeaseReply:
        async def work() -> pb.RenewLeaseReply:
            member = await self.node.shard_member(request.header, request.group)
            result, index, term = await self.node.propose(
                member, RenewLease(), request.header, self.timeout(context)
            )
            renewed = bool(result.unwrap()["renewed"])
            return pb.RenewLeaseReply(renewed=renewed, info=self._reply(member, index, term))

        return await self.serve(context, work())

    # ------------------------------------------------------------------ the root
    async def Format(self, request: pb.FormatRequest, context: Any) -> pb.FormatReply:  # noqa: N802
        async def work() -> pb.FormatReply:
            member = await self.node.route(request.header, paths.ROOT, by_directory=False)
            self.node.require_leader(member)
            # first: from now on shards join or leave by moving directories
            await self.node.internal.seal_ring(deadline=self.timeout(context))
            result, index, term = await self.node.propose(
                member, MkdirSelf(paths.ROOT), None, self.timeout(context)
            )
            err = result.exception()
            if err is not None and not isinstance(err, AlreadyExists):
                raise err
            return pb.FormatReply(created=err is None, info=self._reply(member, index, term))

        return await self.serve(context, work())

    # ------------------------------------------------------------------ directories
    async def Mkdir(self, request: pb.MkdirRequest, context: Any) -> pb.MkdirReply:  # noqa: N802
        return await self.serve(context, self._mkdir(request, context))

    async def _mkdir(self, request: pb.MkdirRequest, context: Any) -> pb.MkdirReply:
        node, header = self.node, request.header
        path = self._path(request.path)
        mode = request.mode if request.HasField("mode") else 0o755
        owner, group = request.owner or DEFAULT_OWNER, request.group or DEFAULT_GROUP
        Mkdir(path, mode, owner, group, request.parents).validate()
        member = await node.route(header, path, by_directory=False)
        if header.session_shard:
            return await self._mkdir_replayed(member, request, path, self.timeout(context))
        sm: ShardStateMachine = member.sm
        timeout = self.timeout(context)
        created: list[str] = []
        if path == paths.ROOT:  # the state machine knows what to say
            result, index, term = await node.propose(
                member, Mkdir(path, mode, owner, group, request.parents), header, timeout
            )
            created += result.unwrap()["created"]
            return pb.MkdirReply(created=created, info=self._reply(member, index, term))
        parent = paths.parent(path)
        own_shard = node.shard_map.shard_for_directory(path) == member.group_id
        if request.parents and parent != paths.ROOT and _dir_record_error(sm, parent):
            node.require_leader(member)
            await node.read(member, False, timeout)
            if _dir_record_error(sm, parent) is not None:
                created += await node.internal.mkdir(
                    parent, parents=True, mode=mode, owner=owner, group=group,
                    deadline=self.timeout(context),
                )  # fmt: skip
        command = Mkdir(path, mode, owner, group, False, own_shard)
        if not own_shard:
            # the entry here, the self-record on the directory's own shard: a transaction
            node.require_leader(member)
            record = Inode(DIRECTORY, mode, owner, group, now_ms(), now_ms()).encode().decode()
            own = [
                Step("dir", parent),
                Step("absent", path),
                Step("put_entry", path, record),
                Step("touch", parent),
            ]
            target = node.shard_map.shard_for_directory(path)
            theirs = [Step("put_self", path, record)]
            try:
                outcome = await node.txns.run(
                    member, "mkdir", own, {target: theirs}, header, timeout, command,
                    {"created": [path]},
                )  # fmt: skip
                created += self._txn_outcome(outcome, f"mkdir {path}")["created"]
            except AlreadyExists:
                if not (request.parents and sm.stat(path).is_dir):
                    raise
            return pb.MkdirReply(created=created, info=self._reply(member))
        async with member.structure.shared():
            result, index, term = await node.propose(member, command, header, self.timeout(context))
        err = result.exception()
        if err is None:
            created += result.value["created"]
        elif not (request.parents and isinstance(err, AlreadyExists) and sm.stat(path).is_dir):
            raise err
        return pb.MkdirReply(created=created, info=self._reply(member, index, term))

    async def _mkdir_replayed(
        self, member: Member, request: pb.MkdirRequest, path: str, timeout: float
    ) -> pb.MkdirReply:
        """A replayed mkdir: the first attempt's answer, as ``_mkdir`` would have given it
        (an existing directory is no error with ``parents``). The first attempt's command had
        ``self_record`` set by the map of its time (whether the directory was this shard's
        too), which the reply cache's digest holds: the other form is tried if this one is
        not it (a mismatch records nothing)."""
        mode = request.mode if request.HasField("mode") else 0o755
        owner, group = request.owner or DEFAULT_OWNER, request.group or DEFAULT_GROUP
        guess = self.node.shard_map.shard_for_directory(path) == member.group_id
        header = request.header
        try:
            try:
                command = Mkdir(path, mode, owner, group, False, guess)
                value, index, term = await self._replayed(member, command, header, timeout)
            except InvalidArgument as e:
                if e.details.get("argument") != "seq":
                    raise
                command = Mkdir(path, mode, owner, group, False, not guess)
                value, index, term = await self._replayed(member, command, header, timeout)
        except AlreadyExists:
            if not (request.parents and (await self.node.internal.stat(path)).is_dir):
                raise
            return pb.MkdirReply(info=self._reply(member))
        return pb.MkdirReply(created=value["created"], info=self._reply(member, index, term))

    # ------------------------------------------------------------------ files
    async def Create(self, request: pb.CreateRequest, context: Any) -> pb.FileInfoReply:  # noqa: N802
        def build(path: str) -> Command:
            return Create(
                path,
                request.mode if request.HasField("mode") else 0o644,
                request.owner or DEFAULT_OWNER,
                request.group or DEFAULT_GROUP,
                request.replication or self.node.config.default_replication,
                request.block_size or DEFAULT_BLOCK_SIZE,
                request.overwrite,
            )

        return await self._info_write(context, request.header, request.path, build)

    async def SetReplication(  # noqa: N802
        self, request: pb.SetReplicationRequest, context: Any
    ) -> pb.FileInfoReply:
        def build(path: str) -> Command:
            return SetReplication(path, request.replication)

        return await self._info_write(context, request.header, request.path, build)

    async def SetTimes(  # noqa: N802
        self, request: pb.SetTimesRequest, context: Any
    ) -> pb.FileInfoReply:
        def build(path: str) -> Command:
            return SetTimes(
                path,
                request.mtime if request.HasField("mtime") else None,
                request.atime if request.HasField("atime") else None,
            )

        return await self._info_write(context, request.header, request.path, build)

    async def SetPermission(  # noqa: N802
        self, request: pb.SetPermissionRequest, context: Any
    ) -> pb.FileInfoReply:
        def build(path: str) -> Command:
            return SetPermission(path, request.mode)

        return await self._info_write(context, request.header, request.path, build)

    async def SetOwner(  # noqa: N802
        self, request: pb.SetOwnerRequest, context: Any
    ) -> pb.FileInfoReply:
        def build(path: str) -> Command:
            return SetOwner(
                path,
                request.owner if request.HasField("owner") else None,
                request.group if request.HasField("group") else None,
            )

        return await self._info_write(context, request.header, request.path, build)

    async def Delete(self, request: pb.DeleteRequest, context: Any) -> pb.DeleteReply:  # noqa: N802
        async def work() -> pb.DeleteReply:
            path = self._path(request.path)
            cmd = Delete(path, request.recursive)
            cmd.validate()
            node, timeout = self.node, self.timeout(context)
            member = await node.route(request.header, path, by_directory=False)
            m, sm = node.shard_map, member.sm
            if request.header.session_shard:
                v, index, term = await self._replayed(member, cmd, request.header, timeout)
                counts = {k: int(v[k]) for k in ("files", "directories", "blocks")}
                return pb.DeleteReply(info=self._reply(member, index, term), **counts)
            if m.shard_for_directory(path) != member.group_id or request.recursive:
                node.require_leader(member)
                await node.read(member, False, timeout)
                await node.wait_unlocked(member, path, timeout)
                record = sm.entry_record(path)
                is_dir = record is not None and sm.stat(path).is_dir
                spans = is_dir and any(
                    m.shard_for_directory(d) != member.group_id
                    for d in [path, *_subdirectories(sm, path)]
                )
                if request.recursive and spans:
                    v = await self._delete_tree_across(member, cmd, record, request.header, timeout)
                    return pb.DeleteReply(info=self._reply(member), **v)
                if m.shard_for_directory(path) != member.group_id and (record is None or is_dir):
                    v = await self._rmdir_across(member, cmd, record, request.header, timeout)
                    return pb.DeleteReply(info=self._reply(member), **v)
            result, index, term = await node.propose(member, cmd, request.header, timeout)
            err = result.exception()
            if err is not None:
                raise _cross_shard(err, "delete")
            v = result.value
            if "txn_id" in v:  # a retry of a request whose first attempt was a transaction
                done = await node.txns.outcome(member, int(v["txn_id"]), timeout)
                v = self._txn_outcome(done, f"delete {path}")
            return pb.DeleteReply(
                files=v["files"],
                directories=v["directories"],
                blocks=v["blocks"],
                info=self._reply(member, index, term),
            )

        return await self.serve(context, work())

    async def Rename(self, request: pb.RenameRequest, context: Any) -> pb.RenameReply:  # noqa: N802
        async def work() -> pb.RenameReply:
            node, header = self.node, request.header
            src, dst = self._path(request.src, "src"), self._path(request.dst, "dst")
            cmd = Rename(src, dst, request.overwrite)
            cmd.validate()
            member = await node.route(header, src, by_directory=False)
            shard, m = member.group_id, node.shard_map
            node.require_leader(member)
            timeout = self.timeout(context)
            if header.session_shard:
                _, index, term = await self._replayed(member, cmd, header, timeout)
                return pb.RenameReply(info=self._reply(member, index, term))
            if m.shard_for_path(dst) != shard:
                return await self._rename_across(
                    member, src, dst, request.overwrite, header, timeout
                )
            sm: ShardStateMachine = member.sm
            if not (sm.exists(src) and sm.stat(src).is_dir):
                # a file (as far as this member knows): nothing below it to place
                result, index, term = await node.propose(member, cmd, header, timeout)
            else:
                async with member.structure.exclusive():
                    await node.read(member, False, timeout)
                    if sm.exists(src) and sm.stat(src).is_dir and paths.is_ancestor(src, dst):
                        raise InvalidArgument(f"cannot move {src} into itself ({dst})", "dst")
                    if sm.exists(src) and sm.stat(src).is_dir and _spans(m, shard, src, dst, sm):
                        return await self._rename_across(
                            member, src, dst, request.overwrite, header, timeout
                        )
                    result, index, term = await node.propose(member, cmd, header, timeout)
            err = result.exception()
            if err is not None:
                raise _cross_shard(err, "rename")
            if "txn_id" in (result.value or {}):  # a retry; the first attempt was a transaction
                done = await node.txns.outcome(member, int(result.value["txn_id"]), timeout)
                self._txn_outcome(done, f"rename {src} -> {dst}")
            return pb.RenameReply(info=self._reply(member, index, term))

        return await self.serve(context, work())

    async def _delete_tree_across(
        self,
        member: Member,
        cmd: commands.Delete,
        record: str | None,
        header: pb.RequestHeader,
        timeout: float,
    ) -> dict[str, int]:
        """Recursive delete of a directory whose subtree spans shards: one transaction over
        every record of it (``keelfs.master.subtree``)."""
        path, node = cmd.path, self.node
        assert record is not None
        dirs = await subtree.walk(node.internal, path, moving=False)
        parts, files, subdirs = subtree.delete_parts(node.shard_map, dirs)
        own = parts.pop(member.group_id, [])
        own += [
            Step("entry", path, record),
            Step("del_entry", path),
            Step("touch", paths.parent(path)),
        ]
        blocks = sum(
            len(Inode.decode(rec.encode()).blocks)
            for d in dirs
            for _, rec, is_dir in d.children
            if not is_dir
        )
        result = {"files": files, "directories": subdirs + 1, "blocks": blocks}
        outcome = await node.txns.run(member, "delete", own, parts, header, timeout, cmd, result)
        value: dict[str, int] = self._txn_outcome(outcome, f"delete {path}")
        return {k: int(value[k]) for k in ("files", "directories", "blocks")}

    async def _rmdir_across(
        self,
        member: Member,
        cmd: commands.Delete,
        record: str | None,
        header: pb.RequestHeader,
        timeout: float,
    ) -> dict[str, int]:
        """Delete a directory whose entry is here and whose self-record (and children) are on
        its own shard: a transaction; that shard checks it is empty and drops the record."""
        path = cmd.path
        target = self.node.shard_map.shard_for_directory(path)
        if record is None:  # gone: proposed anyway, so that a retry gets its first reply
            missing = [Step("present", path)]
            outcome = await self.node.txns.run(
                member, "delete", missing, {target: missing}, header, timeout, cmd
            )
        else:
            own = [
                Step("entry", path, record),
                Step("del_entry", path),
                Step("touch", paths.parent(path)),
            ]
            theirs = [Step("empty", path), Step("del_self", path)]
            result = {"files": 0, "directories": 1, "blocks": 0}
            outcome = await self.node.txns.run(
                member, "delete", own, {target: theirs}, header, timeout, cmd, result
            )
        try:
            value: dict[str, int] = self._txn_outcome(outcome, f"delete {path}")
        except DirectoryNotEmpty:
            if cmd.recursive:
                raise InvalidArgument(
                    f"cross-shard recursive delete not supported yet: the children of {path} "
                    "live on another shard than its entry; delete them first",
                    "path",
                ) from None
            raise
        return {k: int(value[k]) for k in ("files", "directories", "blocks")}

    async def _move_tree_across(
        self,
        member: Member,
        request: commands.Rename,
        record: str,
        header: pb.RequestHeader,
        timeout: float,
    ) -> pb.RenameReply:
        """Move a directory whose subtree spans shards (or will, under its new name): one
        transaction over every record of it. The target must not exist (an empty directory
        is not replaced across shards, unlike a same-shard rename with ``overwrite``)."""
        node, src, dst = self.node, request.src, request.dst
        if paths.is_ancestor(src, dst) or src == dst:
            raise InvalidArgument(f"cannot move {src} into itself ({dst})", "dst")
        m = node.shard_map
        dirs = await subtree.walk(node.internal, src, moving=True)
        parts = subtree.move_parts(m, dirs, src, dst)
        dst_dir = paths.parent(dst)
        parts.setdefault(m.shard_for_path(src), []).extend(
            [Step("entry", src, record), Step("del_entry", src), Step("touch", paths.parent(src))]
        )
        parts.setdefault(m.shard_for_path(dst), []).extend(
            [
                Step("dir", dst_dir),
                Step("absent", dst),
                Step("put_entry", dst, record),
                Step("touch", dst_dir),
            ]
        )
        own = parts.pop(member.group_id)
        outcome = await node.txns.run(member, "rename", own, parts, header, timeout, request)
        self._txn_outcome(outcome, f"rename {src} -> {dst}")
        return pb.RenameReply(info=self._reply(member))

    async def _rename_across(
        self,
        member: Member,
        src: str,
        dst: str,
        overwrite: bool,
        header: pb.RequestHeader,
        timeout: float,
    ) -> pb.RenameReply:
        """Rename a file to a path another shard holds: a transaction coordinated here (the
        source's shard), the target's shard participating."""
        node = self.node
        await node.read(member, False, timeout)
        await node.wait_unlocked(member, src, timeout)  # a transaction may be moving it
        sm: ShardStateMachine = member.sm
        target = node.shard_map.shard_for_path(dst)
        request = Rename(src, dst, overwrite)
        record = sm.entry_record(src)
        if record is None or _seq_applied(sm, header):
            # Not here (any more): still proposed, since a retry of a rename that committed
            # must get its recorded success; anything else fails the check with NOT_FOUND.
            # Likewise a retry whose (session, seq) was applied while ``src`` is here again
            # (created anew since by someone else): only the recorded reply may answer it,
            # never a fresh look at the new file (it may be open: LEASE_CONFLICT).
            missing = [Step("present", src)]
            outcome = await node.txns.run(
                member, "rename", missing, {target: missing}, header, timeout, request
            )
            self._txn_outcome(outcome, f"rename {src} -> {dst}")
            return pb.RenameReply(info=self._reply(member))
        info = sm.stat(src)
        if info.is_dir:
            return await self._move_tree_across(
                member, Rename(src, dst, overwrite), record, header, timeout
            )
        if info.under_construction:
            raise LeaseConflict(
                src, info.lease_holder, message=f"{src} is open for writing: close it first"
            )
        dst_dir = paths.parent(dst)
        own = [Step("entry", src, record), Step("del_entry", src), Step("touch", paths.parent(src))]
        theirs = [Step("dir", dst_dir)]
        if overwrite:
            theirs += [Step("replaceable", dst), Step("replace", dst)]
        else:
            theirs.append(Step("absent", dst))
        theirs += [Step("put_entry", dst, record), Step("touch", dst_dir)]
        outcome = await node.txns.run(
            member, "rename", own, {target: theirs}, header, timeout, request
        )
        self._txn_outcome(outcome, f"rename {src} -> {dst}")
        return pb.RenameReply(info=self._reply(member))

    @staticmethod
    def _txn_outcome(outcome: TxnRecord | dict[str, Any], what: str) -> Any:
        """What a transaction's client is told: its ``result`` when it committed (or the
        reply of a first attempt that needed none), else the error it aborted with."""
        if isinstance(outcome, dict):
            return outcome
        if outcome.state != "committed":
            if outcome.error:
                raise KeelError.from_details(outcome.error)
            raise Unavailable("aborted", message=f"{what} was aborted; retry")
        return outcome.result

    # ------------------------------------------------------------------ reads
    async def GetFileInfo(  # noqa: N802
        self, request: pb.GetFileInfoRequest, context: Any
    ) -> pb.FileInfoReply:
        async def work() -> pb.FileInfoReply:
            path = self._path(request.path)
            member = await self.node.route(request.header, path, by_directory=False)
            await self.node.read(member, request.stale_ok, self.timeout(context))
            await self.node.check_moves(member, path, False, self.timeout(context))
            if not request.stale_ok:
                await self.node.wait_unlocked(member, path, self.timeout(context))
            info = member.sm.stat(path)
            return pb.FileInfoReply(
                info=locate(self.node, file_info_to_pb(info)), reply=self._reply(member)
            )

        return await self.serve(context, work())

    async def ListDir(self, request: pb.ListDirRequest, context: Any) -> pb.ListDirReply:  # noqa: N802
        async def work() -> pb.ListDirReply:
            path = self._path(request.path)
            start_after = request.start_after if request.HasField("start_after") else None
            limit = request.limit or DEFAULT_LIST_LIMIT
            if limit > MAX_LIST_LIMIT:
                raise InvalidArgument(f"limit must be in 1..{MAX_LIST_LIMIT}, not {limit}", "limit")
            if start_after is not None:
                paths.validate_name(start_after)
            member = await self.node.route(request.header, path, by_directory=True)
            await self.node.read(member, request.stale_ok, self.timeout(context))
            await self.node.check_moves(member, path, True, self.timeout(context))
            if not request.stale_ok:
                await self.node.wait_unlocked(member, path, self.timeout(context))
            listing = member.sm.list_dir(path, start_after, limit)
            entries: list[pb.FileInfo] = []
            cursor = listing.cursor
            size = 0
            for e in listing.entries:
                m = file_info_to_pb(e)
                size += m.ByteSize() + 8
                if entries and size > MAX_PAGE_BYTES:
                    cursor = entries[-1].path.rsplit("/", 1)[-1]
                    break
                entries.append(m)
            reply = pb.ListDirReply(entries=entries, info=self._reply(member))
            if cursor is not None:
                reply.cursor = cursor
            if request.records:
                sm: ShardStateMachine = member.sm
                reply.dir_record = sm.self_record(path) or ""
                reply.records.extend(sm.entry_record(e.path) or "" for e in entries)
            return reply

        return await self.serve(context, work())

    async def ContentSummary(  # noqa: N802
        self, request: pb.ContentSummaryRequest, context: Any
    ) -> pb.ContentSummaryReply:
        async def work() -> pb.ContentSummaryReply:
            path = self._path(request.path)
            member = await self.node.route(request.header, path, by_directory=False)
            await self.node.read(member, request.stale_ok, self.timeout(context))
            await self.node.check_moves(member, path, False, self.timeout(context))
            summary = member.sm.content_summary(path)
            return pb.ContentSummaryReply(summary=summary_to_pb(summary), info=self._reply(member))

        return await self.serve(context, work())

    # ------------------------------------------------------------------ transactions (internal)
    async def TxnPrepare(  # noqa: N802
        self, request: pb.TxnPrepareRequest, context: Any
    ) -> pb.TxnReply:
        async def work() -> pb.TxnReply:
            member = await self.node.shard_member(request.header, request.group)
            cmd = TxnPrepare(request.txn_id, request.coordinator, request.part)
            result, index, term = await self.node.propose(member, cmd, None, self.timeout(context))
            value = result.unwrap()
            failpoints.hit("txn.prepared_recorded")
            return _txn_reply(value, self._reply(member, index, term))

        return await self.serve(context, work())

    async def TxnFinish(  # noqa: N802
        self, request: pb.TxnFinishRequest, context: Any
    ) -> pb.TxnReply:
        async def work() -> pb.TxnReply:
            member = await self.node.shard_member(request.header, request.group)
            result, index, term = await self.node.propose(
                member, TxnFinish(request.txn_id, request.commit), None, self.timeout(context)
            )
            value = result.unwrap()
            failpoints.hit("txn.decision_applied")
            return _txn_reply(value, self._reply(member, index, term))

        return await self.serve(context, work())

    async def TxnStatus(  # noqa: N802
        self, request: pb.TxnStatusRequest, context: Any
    ) -> pb.TxnReply:
        async def work() -> pb.TxnReply:
            member = await self.node.shard_member(request.header, request.group)
            self.node.require_leader(member)
            await self.node.read(member, False, self.timeout(context))
            record = member.sm.transaction(request.txn_id)
            value = {"state": "unknown"} if record is None else record.to_dict()
            return _txn_reply(value, self._reply(member))

        return await self.serve(context, work())

    # ------------------------------------------------------------------ resharding (internal)
    async def Move(self, request: pb.MoveRequest, context: Any) -> pb.MoveReply:  # noqa: N802
        async def work() -> pb.MoveReply:
            if not request.op.startswith("move_"):
                raise InvalidArgument(f"{request.op!r} is not a move command", "op")
            command = commands.decode_command(request.op, request.args, commands.SHARD_COMMANDS)
            member = await self.node.shard_member(request.header, request.group)
            result, index, term = await self.node.propose(
                member, command, None, self.timeout(context)
            )
            return pb.MoveReply(
                result=json.dumps(result.unwrap()), info=self._reply(member, index, term)
            )

        return await self.serve(context, work())

    async def MoveRead(  # noqa: N802
        self, request: pb.MoveReadRequest, context: Any
    ) -> pb.MoveReadReply:
        async def work() -> pb.MoveReadReply:
            member = await self.node.shard_member(request.header, request.group)
            await self.node.read(member, False, self.timeout(context))
            sm: ShardStateMachine = member.sm
            if sm.move_state(request.txn_id) is None:
                raise NotFound(str(request.txn_id), "move")
            after = request.start_after if request.HasField("start_after") else None
            records = sm.move_records(request.txn_id, after, request.limit or 1000)
            return pb.MoveReadReply(
                keys=[k for k, _ in records],
                values=[v for _, v in records],
                info=self._reply(member),
            )

        return await self.serve(context, work())

    # ------------------------------------------------------------------ batches
    async def Batch(self, request: pb.BatchRequest, context: Any) -> pb.BatchReply:  # noqa: N802
        """Each item served as its own RPC would be (``keelfs.master.batch``)."""
        return await serve_batch(self, request, context)


class NodeServicer(ServicerBase):
    """``keelfs.meta.v1.Node``: status of this process."""

    async def Status(self, request: pb.StatusRequest, context: Any) -> pb.StatusReply:  # noqa: N802
        return pb.StatusReply(json=json.dumps(self.node.status(), sort_keys=True))

    async def SetFailpoint(  # noqa: N802
        self, request: pb.SetFailpointRequest, context: Any
    ) -> pb.SetFailpointReply:
        async def work() -> pb.SetFailpointReply:
            try:
                failpoints.arm(request.name, request.action)
            except ValueError as exc:
                raise InvalidArgument(str(exc), "name") from None
            return pb.SetFailpointReply()

        return await self.serve(context, work())

    # -- administration (keelfs admin; keelfs.master.admin) ---------------------------------
    async def TransferLeader(  # noqa: N802
        self, request: pb.TransferLeaderRequest, context: Any
    ) -> pb.TransferLeaderReply:
        from keelfs.master import admin

        work = admin.transfer_leader(self.node, request, self.timeout(context))
        return await self.serve(context, work)

    async def AddMember(  # noqa: N802
        self, request: pb.AddMemberRequest, context: Any
    ) -> pb.MembershipReply:
        from keelfs.master import admin

        work = admin.add_member(self.node, request, admin.admin_timeout(context))
        return await self.serve(context, work)

    async def RemoveMember(  # noqa: N802
        self, request: pb.RemoveMemberRequest, context: Any
    ) -> pb.MembershipReply:
        from keelfs.master import admin

        work = admin.remove_member(self.node, request, admin.admin_timeout(context))
        return await self.serve(context, work)

    async def Registry(  # noqa: N802
        self, request: pb.RegistryRequest, context: Any
    ) -> pb.RegistryReply:
        from keelfs.master import admin

        async def work() -> pb.RegistryReply:
            return admin.registry(self.node)

        return await self.serve(context, work())
