"""The ``keelfs.meta.v1.Namespace`` service of a master.

Routing per RPC (also in ``proto/meta.proto``)
----------------------------------------------
Every request is first decoded and checked for bad input (``keelfs.master.namespace_requests``:
paths through ``keelfs.meta.paths``, argument ranges through each command's ``validate()``),
which is refused before anything is proposed. Then the shard that must serve it is found in
this node's ShardMap:

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

Operations whose records live on more than one shard run as transactions:
``keelfs.master.cross_shard`` decides which ones and the steps each shard runs,
``keelfs.master.transactions`` coordinates them.

A *replay* (``RequestHeader.session_shard``: a write of unknown outcome whose path has moved
to another shard since, ``keelfs.client._core``) skips all of that: it is routed to its
session's shard and proposed as it is, answered from the reply cache or with ``REDIRECT``
(never applied there), see ``_replayed``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from keelfs import failpoints
from keelfs.client import trash
from keelfs.client.identity import ACTING_FOR
from keelfs.errors import (
    AlreadyExists,
    InvalidArgument,
    KeelError,
    NotADirectory,
    NotFound,
)
from keelfs.master import cross_shard
from keelfs.master import namespace_requests as requests
from keelfs.master.batch import serve_batch
from keelfs.master.batch_creates import serve_together
from keelfs.master.batch_reads import serve_reads_together
from keelfs.master.block_service import BlockServiceMixin, locate
from keelfs.master.member import Member
from keelfs.master.quota_service import QuotaServiceMixin, refuse_quota_roots
from keelfs.master.servicer import Audited, ServicerBase
from keelfs.master.snapshot_service import SnapshotServiceMixin, refuse_snapshot_roots
from keelfs.meta import paths
from keelfs.meta.commands import (
    AclChange,
    Command,
    KeepAlive,
    Mkdir,
    MkdirSelf,
    ModifyAclEntries,
    RegisterSession,
    RemoveAcl,
    RemoveAclEntries,
    RemoveDefaultAcl,
    RenewLease,
    SetAcl,
    TxnFinish,
    TxnPrepare,
)
from keelfs.meta.namespace import ShardStateMachine
from keelfs.meta.principals import DEFAULT_GROUP, DEFAULT_OWNER, Caller
from keelfs.meta.records import FileInfo
from keelfs.rpc.pb import meta_pb2 as pb
from keelfs.rpc.wire import file_info_to_pb, session_id_from_pb, session_id_to_pb, summary_to_pb

if TYPE_CHECKING:
    from keelfs.master.node import MetaNode

__all__ = ["NamespaceServicer"]

MAX_PAGE_BYTES = 4 << 20
"""A ListDir page is cut when its entries exceed this (the cursor continues after them)."""


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


_READS_THEN_CREATES = partial(serve_reads_together, then=serve_together)
"""How a batch's items are served together: its reads (``batch_reads``), then among the
rest its creates (``batch_creates``)."""


def _txn_reply(value: dict[str, Any], info: pb.ReplyInfo) -> pb.TxnReply:
    error = value.get("error")
    return pb.TxnReply(
        state=str(value.get("state", "unknown")),
        error=json.dumps(error) if error else "",
        info=info,
    )


class NamespaceServicer(BlockServiceMixin, QuotaServiceMixin, SnapshotServiceMixin, ServicerBase):
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
        audit: str,
    ) -> pb.FileInfoReply:
        """Check ``path``, route by its entry, propose ``build(path)`` for the caller, answer
        with the FileInfo the state machine returned; ``audit``: the command's name in the
        audit log."""
        caller = self.caller(context)

        async def work() -> pb.FileInfoReply:
            normal = requests.path(path)
            command = build(normal)
            command.validate()
            member = await self.node.route(header, normal, by_directory=False)
            result, index, term = await self.node.propose(
                member, command, header, self.timeout(context), caller
            )
            info = FileInfo.from_dict(result.unwrap())
            return pb.FileInfoReply(
                info=file_info_to_pb(info, session_id_from_pb(header.session_id)),
                reply=self._reply(member, index, term),
            )

        return await self.serve(context, work(), Audited(audit, path))

    async def _replayed(
        self,
        member: Member,
        command: Command,
        header: pb.RequestHeader,
        timeout: float,
        caller: Caller | None = None,
    ) -> tuple[Any, int, int]:
        """A replayed write (``header.session_shard``, ``MetaNode.route``): the value its
        shard's reply cache holds (a transaction's: its outcome, waited for), or the error it
        holds; ``REDIRECT`` if it was never applied here. Nothing is planned or checked first,
        as for a new request: the map may not place the path on this shard any more."""
        result, index, term = await self.node.propose(member, command, header, timeout, caller)
        err = result.exception()
        if err is not None:
            raise cross_shard.subtree_changed_error(err, command.op)
        value = result.value
        if isinstance(value, dict) and "txn_id" in value:
            done = await self.node.txns.outcome(member, int(value["txn_id"]), timeout)
            value = cross_shard.txn_outcome(done, f"{command.op} (a retried request)")
        return value, index, term

    # ------------------------------------------------------------------ sessions
    async def RegisterSession(  # noqa: N802
        self, request: pb.RegisterSessionRequest, context: Any
    ) -> pb.RegisterSessionReply:
        caller = self.caller(context)  # a session is used by its owner only

        async def work() -> pb.RegisterSessionReply:
            member = await self.node.shard_member(pb.RequestHeader(), request.group)
            result, index, term = await self.node.propose(
                member, RegisterSession.fresh(), None, self.timeout(context), caller
            )
            return pb.RegisterSessionReply(
                session_id=session_id_to_pb(int(result.unwrap()["session_id"])),
                ttl_ms=member.sm.session_ttl_ms,
                info=self._reply(member, index, term),
            )

        return await self.serve(context, work())

    async def KeepAlive(  # noqa: N802
        self, request: pb.KeepAliveRequest, context: Any
    ) -> pb.KeepAliveReply:
        caller = self.caller(context)  # a session is used by its owner only

        async def work() -> pb.KeepAliveReply:
            header = pb.RequestHeader(session_id=request.session_id)
            member = await self.node.shard_member(header, request.group)
            result, index, term = await self.node.propose(
                member, KeepAlive(), header, self.timeout(context), caller
            )
            result.unwrap()
            return pb.KeepAliveReply(info=self._reply(member, index, term))

        return await self.serve(context, work())

    async def RenewLease(  # noqa: N802
        self, request: pb.RenewLeaseRequest, context: Any
    ) -> pb.RenewLeaseReply:
        caller = self.caller(context)  # a session is used by its owner only

        async def work() -> pb.RenewLeaseReply:
            member = await self.node.shard_member(request.header, request.group)
            result, index, term = await self.node.propose(
                member, RenewLease(), request.header, self.timeout(context), caller
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
        audit = Audited("mkdirs", request.path)
        return await self.serve(context, self._mkdir(request, context), audit)

    async def _mkdir(self, request: pb.MkdirRequest, context: Any) -> pb.MkdirReply:
        node, header = self.node, request.header
        caller = self.caller(context)
        path = requests.path(request.path)
        mode, owner, group = requests.mkdir_attributes(request, caller)
        Mkdir(path, mode, owner, group, request.parents).validate()
        if not header.session_shard and trash.inside_home(caller.user, path):
            await self._trash_home(caller.user, self.timeout(context))
        member = await node.route(header, path, by_directory=False)
        if header.session_shard:
            return await self._mkdir_replayed(member, request, path, self.timeout(context), caller)
        sm: ShardStateMachine = member.sm
        timeout = self.timeout(context)
        created: list[str] = []
        if path == paths.ROOT:  # the state machine knows what to say
            result, index, term = await node.propose(
                member, Mkdir(path, mode, owner, group, request.parents), header, timeout, caller
            )
            created += result.unwrap()["created"]
            return pb.MkdirReply(created=created, info=self._reply(member, index, term))
        parent = paths.parent(path)
        own_shard = node.shard_map.shard_for_directory(path) == member.group_id
        if request.parents and parent != paths.ROOT and _dir_record_error(sm, parent):
            node.require_leader(member)
            await node.read(member, False, timeout)
            if _dir_record_error(sm, parent) is not None:
                # made by this master's client, acting for the caller (``ACTING_FOR``)
                acting = ACTING_FOR.set(caller.encode())
                try:
                    created += await node.internal.mkdir(
                        parent, parents=True, mode=mode, owner=owner, group=group,
                        deadline=self.timeout(context),
                    )  # fmt: skip
                finally:
                    ACTING_FOR.reset(acting)
        command = Mkdir(path, mode, owner, group, False, own_shard)
        if not own_shard:
            # the entry here, the self-record on the directory's own shard: a transaction
            try:
                created += await cross_shard.mkdir(node, member, command, header, timeout, caller)
            except AlreadyExists:
                if not (request.parents and sm.stat(path).is_dir):
                    raise
            return pb.MkdirReply(created=created, info=self._reply(member))
        async with member.structure.shared():
            result, index, term = await node.propose(
                member, command, header, self.timeout(context), caller
            )
        err = result.exception()
        if err is None:
            created += result.value["created"]
        elif not (request.parents and isinstance(err, AlreadyExists) and sm.stat(path).is_dir):
            raise err
        return pb.MkdirReply(created=created, info=self._reply(member, index, term))

    async def _trash_home(self, user: str, timeout: float) -> None:
        """Make ``/.Trash`` (the superuser's, 0711) and ``/.Trash/<user>`` (``user``'s, 0700)
        if missing, as this master itself: a user may not create them (``/`` is not theirs),
        and must not be able to make another user's (``keelfs.client.trash``). Only for a
        mkdir of a path inside the caller's own trash (never of those two themselves: the
        calls below, as this master, then cannot come back here)."""
        internal = self.node.internal
        home = trash.home(user)
        if await internal.exists(home, deadline=timeout):
            return
        wanted = (
            (trash.TRASH_ROOT, trash.TRASH_ROOT_MODE, DEFAULT_OWNER),
            (home, trash.TRASH_HOME_MODE, user),
        )
        for directory, mode, owner in wanted:
            await internal.mkdir(
                directory, parents=True, mode=mode, owner=owner, group=DEFAULT_GROUP,
                deadline=timeout,
            )  # fmt: skip

    async def _mkdir_replayed(
        self,
        member: Member,
        request: pb.MkdirRequest,
        path: str,
        timeout: float,
        caller: Caller,
    ) -> pb.MkdirReply:
        """A replayed mkdir: the first attempt's answer, as ``_mkdir`` would have given it
        (an existing directory is no error with ``parents``). The first attempt's command had
        ``self_record`` set by the map of its time (whether the directory was this shard's
        too), which the reply cache's digest holds: the other form is tried if this one is
        not it (a mismatch records nothing)."""
        mode, owner, group = requests.mkdir_attributes(request, caller)
        guess = self.node.shard_map.shard_for_directory(path) == member.group_id
        header = request.header
        try:
            try:
                command = Mkdir(path, mode, owner, group, False, guess)
                value, index, term = await self._replayed(member, command, header, timeout, caller)
            except InvalidArgument as e:
                if e.details.get("argument") != "seq":
                    raise
                command = Mkdir(path, mode, owner, group, False, not guess)
                value, index, term = await self._replayed(member, command, header, timeout, caller)
        except AlreadyExists:
            if not (request.parents and (await self.node.internal.stat(path)).is_dir):
                raise
            return pb.MkdirReply(info=self._reply(member))
        return pb.MkdirReply(created=value["created"], info=self._reply(member, index, term))

    # ------------------------------------------------------------------ files
    async def Create(self, request: pb.CreateRequest, context: Any) -> pb.FileInfoReply:  # noqa: N802
        caller = self.caller(context)
        build = partial(requests.create, request, self.node.config.default_replication, caller)
        return await self._info_write(context, request.header, request.path, build, "create")

    async def CreateInline(  # noqa: N802
        self, request: pb.CreateInlineRequest, context: Any
    ) -> pb.FileInfoReply:
        caller = self.caller(context)
        build = partial(
            requests.create_inline, request, self.node.config.default_replication, caller
        )
        return await self._info_write(context, request.header, request.path, build, "create")

    async def SetReplication(  # noqa: N802
        self, request: pb.SetReplicationRequest, context: Any
    ) -> pb.FileInfoReply:
        build = partial(requests.set_replication, request)
        return await self._info_write(
            context, request.header, request.path, build, "setReplication"
        )

    async def SetTimes(  # noqa: N802
        self, request: pb.SetTimesRequest, context: Any
    ) -> pb.FileInfoReply:
        build = partial(requests.set_times, request)
        return await self._info_write(context, request.header, request.path, build, "setTimes")

    async def SetPermission(  # noqa: N802
        self, request: pb.SetPermissionRequest, context: Any
    ) -> pb.FileInfoReply:
        build = partial(requests.set_permission, request)
        reply = await self._info_write(
            context, request.header, request.path, build, "setPermission"
        )
        await self.serve(context, self.node.guards.after_change(reply.info, self.timeout(context)))
        return reply

    async def SetOwner(  # noqa: N802
        self, request: pb.SetOwnerRequest, context: Any
    ) -> pb.FileInfoReply:
        build = partial(requests.set_owner, request)
        reply = await self._info_write(context, request.header, request.path, build, "setOwner")
        await self.serve(context, self.node.guards.after_change(reply.info, self.timeout(context)))
        return reply

    # ------------------------------------------------------------------ ACLs
    async def SetAcl(self, request: pb.AclRequest, context: Any) -> pb.FileInfoReply:  # noqa: N802
        return await self._acl_change(request, context, SetAcl, "setAcl")

    async def ModifyAclEntries(  # noqa: N802
        self, request: pb.AclRequest, context: Any
    ) -> pb.FileInfoReply:
        return await self._acl_change(request, context, ModifyAclEntries, "modifyAclEntries")

    async def RemoveAclEntries(  # noqa: N802
        self, request: pb.AclRequest, context: Any
    ) -> pb.FileInfoReply:
        return await self._acl_change(request, context, RemoveAclEntries, "removeAclEntries")

    async def RemoveDefaultAcl(  # noqa: N802
        self, request: pb.AclRequest, context: Any
    ) -> pb.FileInfoReply:
        return await self._acl_change(request, context, RemoveDefaultAcl, "removeDefaultAcl")

    async def RemoveAcl(self, request: pb.AclRequest, context: Any) -> pb.FileInfoReply:  # noqa: N802
        return await self._acl_change(request, context, RemoveAcl, "removeAcl")

    async def _acl_change(
        self, request: pb.AclRequest, context: Any, kind: type[AclChange], audit: str
    ) -> pb.FileInfoReply:
        """An ACL change, proposed on the shard of the path's entry; a directory's new ACL
        then goes to every shard, as a chmod's bits do (``keelfs.master.guards``)."""
        entries = tuple(request.entries)

        def build(normal: str) -> Command:
            return kind(normal, entries)

        reply = await self._info_write(context, request.header, request.path, build, audit)
        await self.serve(context, self.node.guards.after_change(reply.info, self.timeout(context)))
        return reply

    async def Append(self, request: pb.AppendRequest, context: Any) -> pb.FileInfoReply:  # noqa: N802
        build = partial(requests.append, request)
        return await self._info_write(context, request.header, request.path, build, "append")

    async def Truncate(  # noqa: N802
        self, request: pb.TruncateRequest, context: Any
    ) -> pb.FileInfoReply:
        build = partial(requests.truncate, request)
        return await self._info_write(context, request.header, request.path, build, "truncate")

    async def Concat(self, request: pb.ConcatRequest, context: Any) -> pb.FileInfoReply:  # noqa: N802
        """One command on the target's shard when every source's entry is there too (the
        files of one directory always are, DESIGN 2.5); else a transaction coordinated by
        the target's shard (``cross_shard.concat``)."""
        caller = self.caller(context)

        async def work() -> pb.FileInfoReply:
            node, header, timeout = self.node, request.header, self.timeout(context)
            command = requests.concat(request)
            member = await node.route(header, command.target, by_directory=False)
            if header.session_shard:
                value, index, term = await self._replayed(member, command, header, timeout, caller)
                reply = self._reply(member, index, term)
                return pb.FileInfoReply(
                    info=file_info_to_pb(FileInfo.from_dict(value)), reply=reply
                )
            shard_map = node.shard_map
            if any(shard_map.shard_for_path(s) != member.group_id for s in command.sources):
                await node.lead(member, timeout)
                value = await cross_shard.concat(node, member, command, header, timeout, caller)
                info = FileInfo.from_dict(value)
                return pb.FileInfoReply(info=file_info_to_pb(info), reply=self._reply(member))
            result, index, term = await node.propose(member, command, header, timeout, caller)
            value = result.unwrap()
            if "txn_id" in value:  # a retry; the first attempt was a transaction
                done = await node.txns.outcome(member, int(value["txn_id"]), timeout)
                value = cross_shard.txn_outcome(done, f"concat into {command.target}")
            info = FileInfo.from_dict(value)
            reply = self._reply(member, index, term)
            return pb.FileInfoReply(info=file_info_to_pb(info), reply=reply)

        audit = Audited("concat", request.target, ",".join(request.sources))
        return await self.serve(context, work(), audit)

    async def Delete(self, request: pb.DeleteRequest, context: Any) -> pb.DeleteReply:  # noqa: N802
        caller = self.caller(context)

        async def work() -> pb.DeleteReply:
            cmd = requests.delete(request)
            path, node, timeout = cmd.path, self.node, self.timeout(context)
            member = await node.route(request.header, path, by_directory=False)
            if request.header.session_shard:
                v, index, term = await self._replayed(member, cmd, request.header, timeout, caller)
                counts = {k: int(v[k]) for k in ("files", "directories", "blocks")}
                return pb.DeleteReply(info=self._reply(member, index, term), **counts)
            refuse_quota_roots(member.sm, path, "delete")
            refuse_snapshot_roots(member.sm, path, "delete")
            across = await cross_shard.delete(node, member, cmd, request.header, timeout, caller)
            if across is not None:
                return pb.DeleteReply(info=self._reply(member), **across)
            result, index, term = await node.propose(member, cmd, request.header, timeout, caller)
            err = result.exception()
            if err is not None:
                raise cross_shard.subtree_changed_error(err, "delete")
            v = result.value
            if "txn_id" in v:  # a retry of a request whose first attempt was a transaction
                done = await node.txns.outcome(member, int(v["txn_id"]), timeout)
                v = cross_shard.txn_outcome(done, f"delete {path}")
            return pb.DeleteReply(
                files=v["files"],
                directories=v["directories"],
                blocks=v["blocks"],
                info=self._reply(member, index, term),
            )

        return await self.serve(context, work(), Audited("delete", request.path))

    async def Rename(self, request: pb.RenameRequest, context: Any) -> pb.RenameReply:  # noqa: N802
        caller = self.caller(context)

        async def work() -> pb.RenameReply:
            node, header = self.node, request.header
            cmd = requests.rename(request)
            src, dst = cmd.src, cmd.dst
            member = await node.route(header, src, by_directory=False)
            shard, m = member.group_id, node.shard_map
            timeout = self.timeout(context)
            await node.lead(member, timeout)  # its checks below read the leader's state
            if header.session_shard:
                _, index, term = await self._replayed(member, cmd, header, timeout, caller)
                return pb.RenameReply(info=self._reply(member, index, term))
            refuse_quota_roots(member.sm, src, "rename")
            refuse_snapshot_roots(member.sm, src, "rename")
            if m.shard_for_path(dst) != shard:
                await cross_shard.rename(node, member, cmd, header, timeout, caller)
                return pb.RenameReply(info=self._reply(member))
            sm: ShardStateMachine = member.sm
            if not (sm.exists(src) and sm.stat(src).is_dir):
                # a file (as far as this member knows): nothing below it to place
                result, index, term = await node.propose(member, cmd, header, timeout, caller)
            else:
                async with member.structure.exclusive():
                    await node.read(member, False, timeout)
                    if sm.exists(src) and sm.stat(src).is_dir and paths.is_ancestor(src, dst):
                        raise InvalidArgument(f"cannot move {src} into itself ({dst})", "dst")
                    if (
                        sm.exists(src)
                        and sm.stat(src).is_dir
                        and cross_shard.spans(m, shard, src, dst, sm)
                    ):
                        await cross_shard.rename(node, member, cmd, header, timeout, caller)
                        return pb.RenameReply(info=self._reply(member))
                    result, index, term = await node.propose(member, cmd, header, timeout, caller)
            err = result.exception()
            if err is not None:
                raise cross_shard.subtree_changed_error(err, "rename")
            if "txn_id" in (result.value or {}):  # a retry; the first attempt was a transaction
                done = await node.txns.outcome(member, int(result.value["txn_id"]), timeout)
                cross_shard.txn_outcome(done, f"rename {src} -> {dst}")
            return pb.RenameReply(info=self._reply(member, index, term))

        return await self.serve(context, work(), Audited("rename", request.src, request.dst))

    # ------------------------------------------------------------------ reads
    async def GetFileInfo(  # noqa: N802
        self, request: pb.GetFileInfoRequest, context: Any
    ) -> pb.FileInfoReply:
        caller = self.caller(context)

        async def work() -> pb.FileInfoReply:
            path = requests.path(request.path, read=True)
            if request.record:
                self.check_metadata_node(context, "GetFileInfo with the record")
            member = await self.node.route(request.header, path, by_directory=False)
            if request.record:
                self.node.require_leader(member)
            await self.node.read(member, request.stale_ok, self.timeout(context))
            await self.node.check_moves(member, path, False, self.timeout(context))
            if not request.stale_ok:
                await self.node.wait_unlocked(member, path, self.timeout(context))
            reply = self.file_info_reply(member, path, request.read, caller)
            if request.record:
                reply.record = member.sm.entry_record(path) or ""
            return reply

        return await self.serve(context, work(), Audited("getfileinfo", request.path, change=False))

    def file_info_reply(
        self,
        member: Member,
        path: str,
        read: bool,
        caller: Caller,
        reply: pb.ReplyInfo | None = None,
    ) -> pb.FileInfoReply:
        """``GetFileInfo``'s answer from ``member``'s state once ``path`` may be read there
        (routed, past its barrier, not moving nor locked); a ``KeelError`` if the state
        refuses it. Also how a batch's reads are answered (``keelfs.master.batch_reads``),
        which pass the ``reply`` info they share (``member``'s now, copied into the answer)."""
        if read:
            # a reader: a file's READ checked, an inline file's content with it
            info, readable = member.sm.stat_for_read(path, caller=caller)
        else:
            info, readable = member.sm.stat_and_may_read(path, caller=caller)
        message = file_info_to_pb(info)
        if readable:
            # block locations carry READ tokens: only for a reader (as HDFS's
            # getBlockLocations); anyone who reaches the file may stat it
            message = locate(self.node, message)
        if reply is None:
            reply = self._reply(member)
        return pb.FileInfoReply(info=message, reply=reply)

    async def ListDir(self, request: pb.ListDirRequest, context: Any) -> pb.ListDirReply:  # noqa: N802
        caller = self.caller(context)

        async def work() -> pb.ListDirReply:
            path, start_after, limit = requests.list_dir(request)
            if request.records:
                self.check_metadata_node(context, "ListDir with records")
            member = await self.node.route(request.header, path, by_directory=True)
            await self.node.read(member, request.stale_ok, self.timeout(context))
            await self.node.check_moves(member, path, True, self.timeout(context))
            if not request.stale_ok:
                await self.node.wait_unlocked(member, path, self.timeout(context))
            sm: ShardStateMachine = member.sm
            listing = sm.list_dir(path, start_after, limit, caller=caller)
            entries: list[pb.FileInfo] = []
            records: list[str] = []
            cursor = listing.cursor
            size = 0
            for e in listing.entries:
                m = file_info_to_pb(e)
                # with the stored records, an inline file's data counts too
                record = (sm.entry_record(e.path) or "") if request.records else ""
                size += m.ByteSize() + len(record) + 8
                if entries and size > MAX_PAGE_BYTES:
                    cursor = entries[-1].path.rsplit("/", 1)[-1]
                    break
                entries.append(m)
                records.append(record)
            reply = pb.ListDirReply(entries=entries, info=self._reply(member))
            if cursor is not None:
                reply.cursor = cursor
            if request.records:
                reply.dir_record = sm.self_record(path) or ""
                reply.records.extend(records)
            return reply

        return await self.serve(context, work(), Audited("listStatus", request.path, change=False))

    async def ContentSummary(  # noqa: N802
        self, request: pb.ContentSummaryRequest, context: Any
    ) -> pb.ContentSummaryReply:
        caller = self.caller(context)

        async def work() -> pb.ContentSummaryReply:
            path = requests.path(request.path, read=True)
            member = await self.node.route(request.header, path, by_directory=False)
            await self.node.read(member, request.stale_ok, self.timeout(context))
            await self.node.check_moves(member, path, False, self.timeout(context))
            summary = member.sm.content_summary(path, caller=caller)
            return pb.ContentSummaryReply(summary=summary_to_pb(summary), info=self._reply(member))

        audit = Audited("contentSummary", request.path, change=False)
        return await self.serve(context, work(), audit)

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
            command = requests.move(request)
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

    # ------------------------------------------------------------------ settings
    async def GetServerDefaults(  # noqa: N802
        self, request: pb.ServerDefaultsRequest, context: Any
    ) -> pb.ServerDefaultsReply:
        """What clients follow (HDFS's getServerDefaults): the trash interval; and who the
        caller is here (whose trash ``rm`` uses: with TLS, the certificate's user)."""
        config = self.node.config
        return pb.ServerDefaultsReply(
            trash_interval_ms=config.trash_interval_ms,
            default_replication=config.default_replication,
            user=self.caller(context).user,
        )

    # ------------------------------------------------------------------ batches
    async def Batch(self, request: pb.BatchRequest, context: Any) -> pb.BatchReply:  # noqa: N802
        """Each item served as its own RPC would be (``keelfs.master.batch``); reads behind
        one barrier (``keelfs.master.batch_reads``), creates proposed together
        (``keelfs.master.batch_creates``)."""
        return await serve_batch(self, request, context, _READS_THEN_CREATES)
