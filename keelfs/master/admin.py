"""What the ``Node`` service does for ``keelfs admin``: leadership transfer and single-server
membership changes of any group a metadata node hosts (config or shard), and its registry.

Each function runs on the node that received the RPC and works on ITS member of the group:
transfers and membership changes need that member to lead (else ``NOT_LEADER`` naming the
leader's client address, so the tool retries there). Membership goes one server at a time
(``docs/membership.md``): a new node enters as a learner, is promoted once caught up; each step
re-reads the configuration, so a retried request (or one repeated after an unknown outcome)
just finishes the change. The ShardMap's member list is the tool's to update afterwards
(``Config.SetShardMembers``): the Raft group is the truth for replication, the map for routing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from keelfs.errors import InvalidArgument, NotFound, NotLeader, Unavailable
from keelfs.rpc.pb import meta_pb2 as pb

if TYPE_CHECKING:
    from keelfs.master.node import MetaNode
    from keelfs.runtime.group import RaftGroup

__all__ = [
    "BACKUP_PIECE_BYTES",
    "LEARNER_CAUGHT_UP",
    "add_member",
    "admin_timeout",
    "backup",
    "balance_step",
    "registry",
    "remove_member",
    "transfer_leader",
]

BACKUP_PIECE_BYTES = 1 << 20
"""Image bytes per ``BackupChunk`` message (well under gRPC's message limit)."""

LEARNER_CAUGHT_UP = 16
"""A learner within this many entries of the commit index is promoted to voter."""


def admin_timeout(context: Any, default: float = 30.0) -> float:
    """The client's remaining deadline (minus a margin to answer in), else ``default``:
    membership changes wait for a learner to catch up, longer than a request timeout."""
    remaining = context.time_remaining()
    return default if remaining is None else max(0.05, remaining - 0.1)


def _group(node: MetaNode, group_id: str) -> RaftGroup:
    if not group_id:
        raise InvalidArgument("name a group: 'config' or a shard id", "group")
    host = node.host
    group = host.groups.get(group_id) if host is not None else None
    if group is None:
        raise NotFound(
            group_id, "group", message=f"node {node.node_id} hosts no member of group {group_id}"
        )
    return group


def _require_leader(group: RaftGroup) -> None:
    if not group.is_leader:
        raise group.not_leader_error()


def _successor(node: MetaNode, group: RaftGroup) -> int:
    """The most up-to-date voter other than this leader (the one a step-down hands to)."""
    progress = group.node.status().progress
    best: tuple[int, int] | None = None
    for voter in sorted(group.voters()):
        if voter == node.node_id:
            continue
        match = progress[voter].match if voter in progress else 0
        if best is None or match > best[0]:
            best = (match, voter)
    if best is None:
        raise InvalidArgument(
            f"{group.group_id} has no other voter to hand leadership to", "target"
        )
    return best[1]


async def transfer_leader(
    node: MetaNode, request: pb.TransferLeaderRequest, timeout: float
) -> pb.TransferLeaderReply:
    group = _group(node, request.group)
    _require_leader(group)
    target = request.target or _successor(node, group)
    if target not in group.voters():
        raise InvalidArgument(
            f"node {target} is not a voter of {group.group_id} "
            f"(voters: {', '.join(map(str, sorted(group.voters())))})",
            "target",
        )
    if target != node.node_id:
        group.transfer_leader(target)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while group.leader_id != target:
        changed = group.leader_changes
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise Unavailable(
                "timed out",
                message=f"transfer of {group.group_id} to node {target} did not complete "
                f"(leader now: {group.leader_id or 'none'})",
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), min(remaining, 0.05))
    return pb.TransferLeaderReply(leader=target, term=group.node.raft.term, previous=node.node_id)


async def _membership(
    node: MetaNode, group: RaftGroup, step: Callable[[], Awaitable[bool]], timeout: float
) -> pb.MembershipReply:
    """Run ``step`` until it reports done; it re-reads the configuration each time, so busy
    errors and unknown outcomes are simply retried until ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        _require_leader(group)
        try:
            if await step():
                return pb.MembershipReply(
                    voters=sorted(group.voters()), learners=sorted(group.learners())
                )
        except NotLeader:
            raise
        except Unavailable:  # an OutcomeUnknown too: the next step re-reads the configuration
            if loop.time() >= deadline:
                raise
            await asyncio.sleep(0.05)
        except ValueError as exc:
            raise InvalidArgument(f"{group.group_id}: {exc}", "node_id") from None
        else:
            if loop.time() >= deadline:
                raise Unavailable(
                    "timed out", message=f"membership change of {group.group_id} timed out"
                )
            await asyncio.sleep(0.02)


async def add_member(
    node: MetaNode, request: pb.AddMemberRequest, timeout: float
) -> pb.MembershipReply:
    group = _group(node, request.group)
    node_id, address = request.node_id, request.raft_address
    if node_id <= 0:
        raise InvalidArgument("node ids are positive", "node_id")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise InvalidArgument(f"raft address {address!r} is not HOST:PORT", "raft_address")
    _require_leader(group)

    async def step() -> bool:
        if node_id in group.voters():
            return True
        if node_id not in group.learners():
            await group.add_learner(node_id, address)
            return False
        match = group.match_index(node_id)
        if match is None:
            raise group.not_leader_error()
        if match + LEARNER_CAUGHT_UP >= group.commit_index():
            await group.promote(node_id)
        return False

    return await _membership(node, group, step, timeout)


async def remove_member(
    node: MetaNode, request: pb.RemoveMemberRequest, timeout: float
) -> pb.MembershipReply:
    group = _group(node, request.group)
    node_id = request.node_id
    _require_leader(group)
    members = group.voters() | group.learners()
    if node_id not in members:
        raise NotFound(
            str(node_id),
            "node",
            message=f"node {node_id} is not a member of {group.group_id} "
            f"(members: {', '.join(map(str, sorted(members)))})",
        )
    if members == {node_id}:
        raise InvalidArgument(f"node {node_id} is the last member of {group.group_id}", "node_id")

    async def step() -> bool:
        if node_id not in group.voters() | group.learners():
            return True
        await group.remove_member(node_id)
        return False

    return await _membership(node, group, step, timeout)


def registry(node: MetaNode) -> pb.RegistryReply:
    config = list(node.config.config_servers)
    if node.config_member is not None:
        config.insert(0, node.client_address)
        registered = node.config_member.sm.masters()
        voters = node.config_member.group.voters()
        config += [str(a) for i, a in sorted(registered.items()) if i in voters]
    nodes = dict(node.nodes)
    if node.config_member is not None:
        nodes.update({int(k): str(v) for k, v in node.config_member.sm.masters().items()})
    nodes.setdefault(node.node_id, node.client_address)
    return pb.RegistryReply(nodes=nodes, config_servers=list(dict.fromkeys(config)))


async def backup(
    node: MetaNode, request: pb.BackupRequest, timeout: float
) -> AsyncIterator[pb.BackupChunk]:
    """The messages of ``Node.Backup``: the group's state-machine image at one committed index.

    On the leader, a read barrier makes the state hold every write acknowledged before the
    call; the index, its term, the members and the image's view are then taken with no await
    in between (the image's view is fixed when ``snapshot_chunks`` is called: a RocksDB
    snapshot, or a copy of the config group's small in-memory state), so they describe one
    state. The image is read off the event loop, piece by piece, while the group goes on."""
    group = _group(node, request.group)
    _require_leader(group)
    await group.read_barrier(timeout)
    _require_leader(group)
    index = group.applied_index()
    term = group.node.raft.log.term(index)
    conf = group.node.conf_state_at(index)
    sm: Any = group.sm
    chunks = iter(sm.snapshot_chunks())
    yield pb.BackupChunk(
        group=group.group_id,
        index=index,
        term=term,
        voters=sorted(conf.voters),
        learners=sorted(conf.learners),
    )
    digest = hashlib.sha256()
    size = 0
    pending = b""
    while True:
        chunk = await asyncio.to_thread(next, chunks, None)
        if chunk is None:
            break
        pending += chunk
        while len(pending) >= BACKUP_PIECE_BYTES:
            piece, pending = pending[:BACKUP_PIECE_BYTES], pending[BACKUP_PIECE_BYTES:]
            digest.update(piece)
            size += len(piece)
            yield pb.BackupChunk(data=piece)
    if pending:
        digest.update(pending)
        size += len(pending)
        yield pb.BackupChunk(data=pending)
    yield pb.BackupChunk(last=True, size=size, sha256=digest.hexdigest())


def balance_step(node: MetaNode, request: pb.BalanceStepRequest) -> pb.BalanceStepReply:
    """One step of ``keelfs admin balance`` for shard ``request.group``, on its leader
    (``ReplicationMonitor.balance_step``)."""
    group = _group(node, request.group)
    _require_leader(group)
    member = node.shards.get(request.group)
    if member is None:
        raise InvalidArgument(f"{request.group} is not a shard", "group")

    named = (*request.sources, *request.targets, *request.room, *request.excess)
    unknown = sorted({s for s in named if s not in node.chunks.servers})
    if unknown:
        raise NotFound(
            unknown[0], "chunk server", message=f"unknown chunk server(s): {', '.join(unknown)}"
        )
    moves, in_flight = node.replication.balance_step(
        member,
        list(request.sources),
        list(request.targets),
        request.max_bytes,
        request.min_block_bytes,
        dict(request.room) if request.room else None,
        dict(request.excess) if request.excess else None,
    )
    return pb.BalanceStepReply(
        moves=[
            pb.BalanceMove(block_id=m.block_id, source=m.source, target=m.target, bytes=m.length)
            for m in moves
        ],
        in_flight=in_flight,
    )
