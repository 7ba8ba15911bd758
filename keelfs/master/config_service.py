"""The ``keelfs.meta.v1.Config`` service: the config group's API (``proto/meta.proto``).

Routing per RPC: ``FetchShardMap`` is a read served by any member (ReadIndex barrier unless
``stale_ok``); every other RPC proposes a command and is served by the leader only, a follower
answering ``NOT_LEADER`` with the leader's client address from the node registry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keelfs.errors import InvalidArgument, PermissionDenied
from keelfs.master.member import Member
from keelfs.master.servicer import ServicerBase
from keelfs.meta.commands import (
    AddShard,
    Command,
    IssueTxIds,
    KeepAlive,
    RegisterChunkServer,
    RegisterMaster,
    RegisterSession,
    RemoveShard,
    SealRing,
    SetServerAdminState,
    SetShardMembers,
)
from keelfs.meta.shardmap import ConfigStateMachine
from keelfs.rpc import grpc_errors
from keelfs.rpc.pb import meta_pb2 as pb
from keelfs.rpc.wire import CONFIG_GROUP, check_header, session_id_to_pb, shard_map_to_pb

if TYPE_CHECKING:
    from keelfs.master.node import MetaNode

__all__ = ["ConfigServicer"]


class ConfigServicer(ServicerBase):
    def __init__(self, node: MetaNode) -> None:
        super().__init__(node)
        assert node.config_member is not None
        self.member: Member = node.config_member
        self.sm: ConfigStateMachine = node.config_member.sm

    async def _write(
        self,
        context: Any,
        command: Command,
        header: pb.RequestHeader | None,
        *,
        reshards: bool = False,
    ) -> pb.ConfigWriteReply:
        async def work() -> pb.ConfigWriteReply:
            if header is not None:
                check_header(header)
            if reshards:
                await self._refuse_with_snapshottable(self.timeout(context))
            result, index, term = await self.node.propose(
                self.member, command, header, self.timeout(context), self.caller(context)
            )
            value = result.unwrap()
            self.node.poke_map_refresh()
            return pb.ConfigWriteReply(
                map_version=int(value.get("version", self.sm.shard_map().version)),
                info=self.node.reply_info(self.member, index, term),
            )

        return await self.serve(context, work())

    async def _refuse_with_snapshottable(self, timeout: float) -> None:
        """Adding or removing a shard moves directories between shards, and snapshots do not
        move with them (``keelfs.meta.snapshots``: a snapshottable directory's mark and its
        snapshots' copies are kept by path on every shard of the map when it was marked):
        refused while any directory is snapshottable. (A mark made while the resharding is
        being planned is not seen here; docs/data.md.)"""
        internal = self.node.internal
        for shard in sorted(self.sm.shard_map().shards):
            view = await internal.snapshot_view("", "", "", shard, timeout)
            if view["snapshottable"]:
                marked = ", ".join(sorted(view["snapshottable"]))
                raise InvalidArgument(
                    f"cannot add or remove a shard while directories are snapshottable "
                    f"({marked}): snapshots do not move between shards; delete their "
                    "snapshots and `keelfs admin disallow-snapshot` them first",
                    "shard_id",
                )

    async def FetchShardMap(  # noqa: N802
        self, request: pb.FetchShardMapRequest, context: Any
    ) -> pb.FetchShardMapReply:
        async def work() -> pb.FetchShardMapReply:
            await self.node.read(self.member, request.stale_ok, self.timeout(context))
            since = request.since_version if request.HasField("since_version") else None
            current = self.sm.fetch_shard_map(since)
            info = self.node.reply_info(self.member)
            if current is None:
                return pb.FetchShardMapReply(unchanged=True, info=info)
            return pb.FetchShardMapReply(
                map=shard_map_to_pb(current),
                nodes=self.sm.masters(),
                config_members=sorted(self.member.group.voters()),
                info=info,
                server_states=[
                    pb.ServerAdminState(
                        server_id=a.server_id,
                        state=a.state,
                        until_ms=a.until_ms,
                        since_ms=a.since_ms,
                    )
                    for a in self.sm.server_admin_states().values()
                ],
            )

        return await self.serve(context, work())

    async def FetchBlockKeys(  # noqa: N802
        self, request: pb.FetchBlockKeysRequest, context: Any
    ) -> pb.FetchBlockKeysReply:
        """Internal (masters only): the block-token keys, from this member's applied state
        (a key is fetched well before it signs: ``keelfs.master.block_keys``)."""

        async def work() -> pb.FetchBlockKeysReply:
            keys = [
                pb.BlockKey(
                    key_id=k.key_id,
                    secret=k.secret,
                    active_ms=k.active_ms,
                    expires_ms=k.expires_ms,
                )
                for k in self.sm.block_keys()
            ]
            return pb.FetchBlockKeysReply(keys=keys, info=self.node.reply_info(self.member))

        return await self.serve(context, work())

    async def RegisterSession(  # noqa: N802
        self, request: pb.RegisterSessionRequest, context: Any
    ) -> pb.RegisterSessionReply:
        caller = self.caller(context)  # a session is used by its owner only

        async def work() -> pb.RegisterSessionReply:
            if request.group not in ("", CONFIG_GROUP):
                raise InvalidArgument("Config sessions are in group 'config'", "group")
            result, index, term = await self.node.propose(
                self.member, RegisterSession.fresh(), None, self.timeout(context), caller
            )
            sid = int(result.unwrap()["session_id"])
            return pb.RegisterSessionReply(
                session_id=session_id_to_pb(sid),
                ttl_ms=self.sm.session_ttl_ms,
                info=self.node.reply_info(self.member, index, term),
            )

        return await self.serve(context, work())

    async def KeepAlive(  # noqa: N802
        self, request: pb.KeepAliveRequest, context: Any
    ) -> pb.KeepAliveReply:
        caller = self.caller(context)  # a session is used by its owner only

        async def work() -> pb.KeepAliveReply:
            header = pb.RequestHeader(session_id=request.session_id)
            result, index, term = await self.node.propose(
                self.member, KeepAlive(), header, self.timeout(context), caller
            )
            result.unwrap()
            return pb.KeepAliveReply(info=self.node.reply_info(self.member, index, term))

        return await self.serve(context, work())

    async def AddShard(  # noqa: N802
        self, request: pb.AddShardRequest, context: Any
    ) -> pb.ConfigWriteReply:
        cmd = AddShard(request.shard_id, tuple(request.members))
        return await self._write(context, cmd, request.header, reshards=True)

    async def RemoveShard(  # noqa: N802
        self, request: pb.RemoveShardRequest, context: Any
    ) -> pb.ConfigWriteReply:
        cmd = RemoveShard(request.shard_id)
        return await self._write(context, cmd, request.header, reshards=True)

    async def SealRing(  # noqa: N802
        self, request: pb.SealRingRequest, context: Any
    ) -> pb.ConfigWriteReply:
        return await self._write(context, SealRing(), request.header)

    async def RegisterChunkServer(  # noqa: N802
        self, request: pb.RegisterChunkServerRequest, context: Any
    ) -> pb.ConfigWriteReply:
        try:
            self.check_caller_is(context, "chunkserver", request.server_id)
        except PermissionDenied as exc:
            await grpc_errors.abort(context, exc)
        cmd = RegisterChunkServer(
            request.server_id, request.address, request.rack or "/default-rack"
        )
        return await self._write(context, cmd, request.header)

    async def ListChunkServers(  # noqa: N802
        self, request: pb.ListChunkServersRequest, context: Any
    ) -> pb.ListChunkServersReply:
        async def work() -> pb.ListChunkServersReply:
            await self.node.read(self.member, request.stale_ok, self.timeout(context))
            servers = [
                pb.ChunkLocation(server_id=s.server_id, address=s.address, rack=s.rack)
                for s in self.sm.chunk_servers().values()
            ]
            return pb.ListChunkServersReply(servers=servers, info=self.node.reply_info(self.member))

        return await self.serve(context, work())

    async def RegisterMaster(  # noqa: N802
        self, request: pb.RegisterMasterRequest, context: Any
    ) -> pb.ConfigWriteReply:
        try:
            self.check_caller_is(context, "master", request.node_id)
        except PermissionDenied:  # config servers register too: the same id, either role
            try:
                self.check_caller_is(context, "config", request.node_id)
            except PermissionDenied as exc:
                await grpc_errors.abort(context, exc)
        cmd = RegisterMaster(request.node_id, request.address)
        return await self._write(context, cmd, request.header)

    async def IssueTxnIds(  # noqa: N802
        self, request: pb.IssueTxnIdsRequest, context: Any
    ) -> pb.IssueTxnIdsReply:
        async def work() -> pb.IssueTxnIdsReply:
            check_header(request.header)
            result, index, term = await self.node.propose(
                self.member,
                IssueTxIds(request.count or 1),
                request.header,
                self.timeout(context),
                self.caller(context),
            )
            value = result.unwrap()
            return pb.IssueTxnIdsReply(
                first=int(value["first"]),
                count=int(value["count"]),
                info=self.node.reply_info(self.member, index, term),
            )

        return await self.serve(context, work())

    async def SetShardMembers(  # noqa: N802
        self, request: pb.SetShardMembersRequest, context: Any
    ) -> pb.ConfigWriteReply:
        cmd = SetShardMembers(request.shard_id, tuple(request.members))
        return await self._write(context, cmd, request.header)

    async def SetServerAdminState(  # noqa: N802
        self, request: pb.SetServerAdminStateRequest, context: Any
    ) -> pb.ConfigWriteReply:
        cmd = SetServerAdminState(request.server_id, request.state, request.until_ms)
        return await self._write(context, cmd, request.header)
