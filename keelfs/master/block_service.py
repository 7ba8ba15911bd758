"""The block layer's RPCs on a master (``keelfs.meta.v1.Namespace``, ``proto/meta.proto``).

- ``AllocateBlock`` (leader, lease holder): a cluster-wide unique block id (from the config
  group, in blocks), generation stamp 1, ``AddBlock`` through the log, and a pipeline chosen
  from the live, reported chunk servers (``keelfs.master.blocks``); the reply carries the
  shard's epoch (its Raft term) that the chunk servers fence on.
- ``RecoverPipeline`` (leader, lease holder): ``UpdateBlock`` with the next generation stamp
  and a pipeline of the survivors plus fresh servers.

  Both are exactly-once like every session command, although each attempt builds its command
  afresh (a new block id; the stamp after the *current* one): the block id and the stamp are
  the proposer's choice, not the request's, so they are left out of the command's digest
  (``Command.chosen_by_proposer``). A retry after a lost reply (same session and seq) is then
  answered from the session's reply cache with the first attempt's block and stamp, and the
  new command is not applied: the file never gets a second block, the stamp never moves twice.
  This holds too when the retry reaches a new leader, or arrives while the first attempt is
  still in the log (checking the cache here, before proposing, could not see that one). The
  pipeline in the reply is chosen again for the retry: the writer never saw the first one and
  wrote nothing through it.
- ``Complete``: answered only once every block has its minimum replicas reported at its
  generation stamp (``UNAVAILABLE`` "replicas" until then: the client retries).
- ``ChunkHeartbeat`` (any member): updates the soft state, passes the server's verified notes
  (answers to ``verify`` commands) to the trims waiting for them; the reply carries the
  commands the shards led here have queued for that server (``keelfs.master.replication``)
  and the block-token keys (``keelfs.master.block_keys``).

Block access tokens (``keelfs.datapath.tokens``): every block located for a reader carries a
READ token, the block of a new pipeline a WRITE token naming the shard and epoch the chunk
servers fence on; the chunk servers refuse anything else.
- ``ReportBadReplica`` (any member), ``BlocksKnown`` (internal: the leader's linearizable
  answer from the shard's block index, for ``keelfs.master.orphans``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from keelfs.datapath.tokens import Access
from keelfs.errors import InvalidArgument, Unavailable
from keelfs.master.blocks import Replica
from keelfs.meta.commands import (
    AddBlock,
    Command,
    CompleteFile,
    CompleteInline,
    UpdateBlock,
    check_path,
)
from keelfs.meta.principals import Caller
from keelfs.meta.records import FileInfo
from keelfs.rpc.pb import meta_pb2 as pb
from keelfs.rpc.wire import file_info_to_pb

if TYPE_CHECKING:
    from keelfs.master.member import Member
    from keelfs.master.node import MetaNode

__all__ = ["BlockServiceMixin", "locate"]

DEFAULT_MIN_REPLICAS = 1
_REPORT_WAIT_S = 2.0
"""How long Complete waits for replica reports before answering UNAVAILABLE ("replicas")."""


def locate(node: MetaNode, info: pb.FileInfo) -> pb.FileInfo:
    """``info`` with each block's live, good replica locations filled in, and a READ token
    for each (none while this master has no key yet: the reader, refused, asks again)."""
    for block in info.blocks:
        del block.locations[:]
        block.token = node.block_keys.try_sign(block.block_id, block.gen_stamp, Access.READ)
        for st in node.chunks.locations(block.block_id, block.gen_stamp):
            block.locations.add(server_id=st.server_id, address=st.address, rack=st.rack)
    return info


class BlockServiceMixin:
    """Mixed into ``NamespaceServicer`` (which provides ``node``, ``serve``, ``timeout``)."""

    node: MetaNode

    if TYPE_CHECKING:

        async def serve(self, context: Any, work: Any, audit: Any = None) -> Any: ...
        def caller(self, context: Any) -> Caller: ...
        def timeout(self, context: Any) -> float: ...
        def check_caller_is(self, context: Any, role: str, node_id: str | int) -> None: ...

    def _pipeline_reply(
        self, member: Member, info: FileInfo, targets: list[Any], index: int, term: int
    ) -> pb.AllocateBlockReply:
        last = info.blocks[-1]
        epoch = term or member.group.node.raft.term
        token = self.node.block_keys.sign(
            last.block_id, last.gen_stamp, Access.WRITE, member.group_id, epoch
        )
        block = pb.BlockInfo(
            block_id=last.block_id, gen_stamp=last.gen_stamp, length=last.length, token=token
        )
        for st in targets:
            block.locations.add(server_id=st.server_id, address=st.address, rack=st.rack)
        return pb.AllocateBlockReply(
            block=block,
            shard=member.group_id,
            epoch=epoch,
            info=self.node.reply_info(member, index, term),
        )

    def _targets(
        self, replication: int, exclude: list[str], keep: tuple[str, ...] | list[str] = ()
    ) -> list[Any]:
        reg = self.node.chunks
        targets = reg.choose(replication, exclude, keep)
        if not targets:
            ready = [s for s in reg.live_servers() if s.reported]
            if ready and not any(reg.placeable(s.server_id) for s in ready):
                raise Unavailable(
                    "no chunk servers",
                    message="every live chunk server is decommissioning or in maintenance "
                    "(keelfs admin servers; recommission one)",
                )
            raise Unavailable(
                "no chunk servers",
                message="no live chunk server has reported to this master yet; retry",
            )
        return targets

    async def _new_pipeline(
        self,
        request: Any,
        context: Any,
        command_for: Any,
        keep: list[str],
    ) -> pb.AllocateBlockReply:
        """Route to the leader of ``request.path``'s shard, choose targets (``keep`` first,
        never ``request.exclude``), propose ``command_for(path, current FileInfo)`` with the
        writer's session, and answer with the last block and its pipeline. A retried request
        is answered with its first outcome (see the module doc): the last block is then the
        one that attempt added or re-stamped."""

        caller = self.caller(context)

        async def work() -> pb.AllocateBlockReply:
            path = check_path(request.path)
            member = await self.node.route(request.header, path, by_directory=False)
            await self.node.lead(member, self.timeout(context))
            current = member.sm.stat(path, caller=caller)
            targets = self._targets(current.replication, list(request.exclude), keep)
            if not self.node.block_keys.signer.ready():  # before the command is applied
                self.node.block_keys.sign(0, 0, Access.WRITE)  # raises Unavailable
            command = await command_for(path, current)
            # the state machine checks the caller may write the file before the block (and
            # the WRITE token of the reply) exists
            result, index, term = await self.node.propose(
                member, command, request.header, self.timeout(context), caller
            )
            info = FileInfo.from_dict(result.unwrap())
            return self._pipeline_reply(member, info, targets, index, term)

        return await self.serve(context, work())

    async def AllocateBlock(  # noqa: N802
        self, request: pb.AllocateBlockRequest, context: Any
    ) -> pb.AllocateBlockReply:
        async def add_block(path: str, current: FileInfo) -> AddBlock:
            block_id = await self.node.txns.next_id()  # cluster-wide unique ids
            previous = request.previous_length if request.HasField("previous_length") else None
            return AddBlock(path, block_id, 1, previous)

        return await self._new_pipeline(request, context, add_block, [])

    async def RecoverPipeline(  # noqa: N802
        self, request: pb.RecoverPipelineRequest, context: Any
    ) -> pb.AllocateBlockReply:
        async def update_block(path: str, current: FileInfo) -> UpdateBlock:
            if not current.blocks or current.blocks[-1].block_id != request.block_id:
                raise InvalidArgument(
                    f"block {request.block_id} is not the last block of {path}", "block_id"
                )
            return UpdateBlock(path, request.block_id, current.blocks[-1].gen_stamp + 1)

        return await self._new_pipeline(request, context, update_block, list(request.keep))

    async def Complete(  # noqa: N802
        self, request: pb.CompleteRequest, context: Any
    ) -> pb.FileInfoReply:
        caller = self.caller(context)

        async def work() -> pb.FileInfoReply:
            path = check_path(request.path)
            last = request.last_length if request.HasField("last_length") else None
            command: Command = CompleteFile(path, last)
            if request.HasField("inline_data"):
                if last is not None:
                    raise InvalidArgument(
                        "a file closed with inline data has no block to set the length of",
                        "last_length",
                    )
                command = CompleteInline.of(path, request.inline_data)
            command.validate()
            member = await self.node.route(request.header, path, by_directory=False)
            # a follower (or a leader just elected) may not have applied the Create yet
            await self.node.lead(member, self.timeout(context))
            # a replay (MetaNode.route) is answered from the reply cache: nothing to wait for
            current = None if request.header.session_shard else member.sm.stat(path, caller=caller)
            if current is not None and current.under_construction:
                # (a retry of a done Complete goes straight on) the pipeline's servers
                # report the finalized replicas at once: wait for them here rather than
                # make the client come back
                deadline = time.monotonic() + min(self.timeout(context), _REPORT_WAIT_S)
                while (missing := self._missing_replicas(current)) is not None:
                    if time.monotonic() >= deadline:
                        raise missing
                    await self.node.chunks.wait_reports(deadline - time.monotonic())
            result, index, term = await self.node.propose(
                member, command, request.header, self.timeout(context), caller
            )
            info = FileInfo.from_dict(result.unwrap())
            return pb.FileInfoReply(
                info=locate(self.node, file_info_to_pb(info)),
                reply=self.node.reply_info(member, index, term),
            )

        return await self.serve(context, work())

    def _missing_replicas(self, info: FileInfo) -> Unavailable | None:
        """None if every block has its minimum replicas reported, else the error saying not."""
        need = min(self.node.config.min_replicas, info.replication)
        for block in info.blocks:
            have = len(self.node.chunks.locations(block.block_id, block.gen_stamp))
            if have < need:
                return Unavailable(
                    "replicas",
                    message=f"block {block.block_id} of {info.path} has {have} of the "
                    f"{need} replicas it needs reported yet; retry",
                )
        return None

    async def ChunkHeartbeat(  # noqa: N802
        self, request: pb.ChunkHeartbeatRequest, context: Any
    ) -> pb.ChunkHeartbeatReply:
        async def work() -> pb.ChunkHeartbeatReply:
            reg = self.node.chunks
            sid = request.server_id
            if not sid or not request.address:
                raise InvalidArgument("a heartbeat needs server_id and address", "server_id")
            self.check_caller_is(context, "chunkserver", sid)
            st = reg.heartbeat(
                sid, request.address, request.rack, request.capacity, request.used, request.load
            )
            first = not st.reported
            replicas = [
                (r.block_id, Replica(r.gen_stamp, r.length, r.shard)) for r in request.replicas
            ]
            if request.full_report:
                reg.full_report(sid, replicas)
            elif not first:
                for block_id, replica in replicas:
                    reg.added(sid, block_id, replica)
            for r in request.removed:
                reg.removed(sid, r.block_id, r.gen_stamp)
            for r in request.corrupt:
                reg.mark_corrupt(sid, r.block_id)
            for v in request.verified:
                self.node.replication.verified(sid, v.block_id, v.gen_stamp, v.token)
            commands = self.node.replication.take_commands(sid)
            return pb.ChunkHeartbeatReply(
                commands=commands,
                want_full_report=not st.reported,
                node_id=self.node.node_id,
                block_keys=self.node.block_keys.to_pb(),
            )

        return await self.serve(context, work())

    async def ReportBadReplica(  # noqa: N802
        self, request: pb.ReportBadReplicaRequest, context: Any
    ) -> pb.ReportBadReplicaReply:
        async def work() -> pb.ReportBadReplicaReply:
            self.node.chunks.mark_corrupt(request.server_id, request.block_id)
            return pb.ReportBadReplicaReply()

        return await self.serve(context, work())

    async def BlocksKnown(  # noqa: N802
        self, request: pb.BlocksKnownRequest, context: Any
    ) -> pb.BlocksKnownReply:
        """Which of the blocks a record of this shard references, from its block index after
        a ReadIndex barrier: the authoritative answer orphan deletion rests on
        (``keelfs.master.orphans``)."""

        async def work() -> pb.BlocksKnownReply:
            member = await self.node.shard_member(request.header, request.group)
            self.node.require_leader(member)
            await self.node.read(member, False, self.timeout(context))
            sm = member.sm
            return pb.BlocksKnownReply(
                known=sorted(sm.referenced_blocks(request.block_ids)),
                gained=sm.blocks_gained(),
                info=self.node.reply_info(member),
            )

        return await self.serve(context, work())
