"""Conversions between ``proto/meta.proto`` messages and the metadata records, both ways.

Shared by the master services and the client library, so that one function defines each
message's meaning.
"""

from __future__ import annotations

from typing import Any

from keelfs.errors import InvalidArgument
from keelfs.meta.acls import parse_spec
from keelfs.meta.commands import MAX_INT
from keelfs.meta.records import DIRECTORY, FILE, BlockInfo, ContentSummary, FileInfo
from keelfs.meta.ring import DEFAULT_VNODES
from keelfs.meta.sessions import ID_BYTES
from keelfs.meta.shardmap import ShardMap
from keelfs.rpc.pb import meta_pb2 as pb
from keelfs.runtime.status import GroupStatus

__all__ = [
    "CONFIG_GROUP",
    "MAX_REQUEST_BYTES",
    "check_header",
    "file_info_from_pb",
    "file_info_to_pb",
    "session_id_from_pb",
    "session_id_to_pb",
    "group_status_to_pb",
    "shard_map_from_pb",
    "shard_map_to_pb",
    "summary_from_pb",
    "summary_to_pb",
]

CONFIG_GROUP = "config"
"""The Raft group id (and session group name) of the config group."""

MAX_REQUEST_BYTES = 1 << 20
"""gRPC receive limit of the metadata services: no metadata request needs more (a command is
at most ``keelfs.meta.commands.MAX_COMMAND_BYTES``); larger ones get RESOURCE_EXHAUSTED."""

_KIND_TO_PB = {FILE: pb.FILE, DIRECTORY: pb.DIRECTORY}
_KIND_FROM_PB: dict[int, Any] = {pb.FILE: FILE, pb.DIRECTORY: DIRECTORY}


def session_id_to_pb(session_id: int) -> bytes:
    """A session id on the wire: 16 bytes, big-endian; empty for none (0)."""
    return session_id.to_bytes(ID_BYTES, "big") if session_id else b""


def session_id_from_pb(raw: bytes) -> int:
    """The session id of a wire field (0: none); ``InvalidArgument`` unless empty or 16 bytes."""
    if not raw:
        return 0
    if len(raw) != ID_BYTES:
        raise InvalidArgument(f"a session id is {ID_BYTES} bytes, not {len(raw)}", "session_id")
    return int.from_bytes(raw, "big")


def file_info_to_pb(info: FileInfo, viewer: int = 0) -> pb.FileInfo:
    """``info`` on the wire. The writer's session id goes only to the session ``viewer`` that
    holds the lease itself (the reply to its own Create); everyone else sees the holder's user
    name, never an id that would let them write in its name."""
    holder = info.lease_holder if viewer and viewer == info.lease_holder else 0
    message = pb.FileInfo(
        path=info.path,
        kind=_KIND_TO_PB[info.kind],
        length=info.length,
        mode=info.mode,
        owner=info.owner,
        group=info.group,
        mtime=info.mtime,
        atime=info.atime,
        replication=info.replication,
        block_size=info.block_size,
        blocks=[pb.BlockInfo(block_id=b.block_id, gen_stamp=b.gen_stamp, length=b.length)
                for b in info.blocks],
        under_construction=info.under_construction,
        lease_holder=session_id_to_pb(holder),
        lease_user=info.lease_user,
    )  # fmt: skip
    if info.data is not None:
        message.inline_data = info.data
    if info.acl:
        message.acl.extend(e.to_text() for e in info.acl)
    return message


def file_info_from_pb(m: pb.FileInfo) -> FileInfo:
    kind = _KIND_FROM_PB.get(m.kind)
    if kind is None:
        raise ValueError(f"file info of {m.path!r} has no kind")
    return FileInfo(
        path=m.path,
        kind=kind,
        length=m.length,
        mode=m.mode,
        owner=m.owner,
        group=m.group,
        mtime=m.mtime,
        atime=m.atime,
        replication=m.replication,
        block_size=m.block_size,
        blocks=tuple(BlockInfo(b.block_id, b.gen_stamp, b.length) for b in m.blocks)
        if m.blocks
        else (),
        under_construction=m.under_construction,
        lease_holder=session_id_from_pb(m.lease_holder),
        lease_user=m.lease_user,
        data=m.inline_data if m.HasField("inline_data") else None,
        acl=parse_spec(m.acl) if m.acl else (),
    )


def summary_to_pb(s: ContentSummary) -> pb.ContentSummary:
    return pb.ContentSummary(
        length=s.length,
        file_count=s.file_count,
        directory_count=s.directory_count,
        space_consumed=s.space_consumed,
    )


def summary_from_pb(m: pb.ContentSummary) -> ContentSummary:
    return ContentSummary(m.length, m.file_count, m.directory_count, m.space_consumed)


def shard_map_to_pb(m: ShardMap) -> pb.ShardMap:
    return pb.ShardMap(
        version=m.version,
        vnodes=m.vnodes,
        shards={sid: pb.ShardMembers(members=dict(members)) for sid, members in m.shards.items()},
        ring_set=m.ring_members is not None,
        ring=sorted(m.ring_members or ()),
        overrides=[pb.HashOverride(first=f, last=la, shard_id=o) for f, la, o in m.overrides],
    )


def shard_map_from_pb(m: pb.ShardMap) -> ShardMap:
    shards = {
        sid: {int(n): str(a) for n, a in members.members.items()}
        for sid, members in m.shards.items()
    }
    return ShardMap(
        m.version,
        shards,
        m.vnodes or DEFAULT_VNODES,
        tuple(sorted(m.ring)) if m.ring_set else None,
        tuple(sorted((o.first, o.last, o.shard_id) for o in m.overrides)),
    )


def check_header(header: pb.RequestHeader) -> None:
    """Refuse a request header no client could have meant (every service checks it first)."""
    session_id_from_pb(header.session_id)
    if header.seq > MAX_INT or header.map_version > MAX_INT:
        raise InvalidArgument("header fields must be below 2^63", "header")
    if header.seq and not header.session_id:
        raise InvalidArgument("seq without a session id", "seq")
    if header.session_shard and not header.seq:
        raise InvalidArgument("session_shard without a session's seq", "session_shard")


def group_status_to_pb(st: GroupStatus) -> pb.GroupStatus:
    """One Raft group's state on this node, for ``Node.Status``."""
    return pb.GroupStatus(
        group=st.group,
        state=st.state,
        term=st.term,
        leader=st.leader,
        commit=st.commit,
        applied=st.applied,
        last_index=st.last_index,
        voters=st.voters,
        learners=st.learners,
        members=st.members,
        progress={
            i: pb.MemberProgress(state=p.state, match=p.match, next=p.next, lag=p.lag)
            for i, p in st.progress.items()
        },
        snapshot_index=st.snapshot_index,
        first_index=st.first_index,
        snapshots_installed=st.snapshots_installed,
        proposals_lost=st.proposals_lost,
        removed=st.removed,
    )
