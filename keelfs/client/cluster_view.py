"""The cluster as its metadata nodes describe it: the one view ``keelfs admin`` and the
dashboard show.

Every registered node is asked for ``Node.Status`` (a node that does not answer is recorded as
such; nothing here raises for a dead node) and the answers are folded (:func:`fold`) into:

- ``groups``: per Raft group (config first, then the shards by id), its leader and term (the
  answering leader with the highest term), its voters and learners as the leader (else the
  most advanced answering member) knows them, and each member's role, term, commit and applied
  index and its lag. A member's lag is the leader's ``MemberProgress.lag`` for it
  (``keelfs.runtime.status.lag``); without a leader nobody knows it (None). A member that did
  not answer has the role ``down``; a node removed from a group is not shown in it;
- ``chunk_servers``: every chunk server the masters (nodes hosting shards) know, merged: live
  or reported if any of them says so, the largest capacity and use any reports, the freshest
  heartbeat, and which nodes see it;
- ``nodes``: each node's address and its status (None: it did not answer, ``why`` says how).

:func:`gather` asks with the blocking ``Client``, :func:`gather_async` with ``AsyncClient``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field

import grpc

from keelfs.client.aio import AsyncClient
from keelfs.client.sync import Client
from keelfs.rpc.pb import meta_pb2 as pb
from keelfs.rpc.wire import CONFIG_GROUP

__all__ = [
    "ChunkServerView",
    "ClusterView",
    "GroupView",
    "MemberView",
    "NodeView",
    "fold",
    "gather",
    "gather_async",
    "group_order",
]

DOWN = "down"
"""The role of a member that did not answer."""


@dataclass
class MemberView:
    node: int
    role: str
    """``leader``, ``follower``, ``candidate``, ``pre_candidate``, ``learner``, or ``down``."""
    term: int = 0
    commit: int = 0
    applied: int = 0
    lag: int | None = None
    """The leader's ``MemberProgress.lag`` for this member; None without a leader."""
    raft_address: str = ""
    leader: int = 0
    """The leader this member knows of."""

    @property
    def up(self) -> bool:
        return self.role != DOWN


@dataclass
class GroupView:
    group: str
    leader: int = 0
    """0: no answering member leads."""
    term: int = 0
    commit: int = 0
    """The leader's commit index, else the highest an answering member reports."""
    voters: list[int] = field(default_factory=list)
    learners: list[int] = field(default_factory=list)
    members: dict[int, MemberView] = field(default_factory=dict)


@dataclass
class ChunkServerView:
    id: str
    address: str
    rack: str
    live: bool = False
    reported: bool = False
    capacity: int = 0
    used: int = 0
    last_heartbeat_s_ago: float | None = None
    seen_by: list[int] = field(default_factory=list)


@dataclass
class NodeView:
    id: int
    address: str
    status: pb.StatusReply | None
    """None: it did not answer."""
    why: str = ""
    """Why it did not answer."""

    @property
    def up(self) -> bool:
        return self.status is not None


@dataclass
class ClusterView:
    nodes: dict[int, NodeView]
    groups: dict[str, GroupView]
    chunk_servers: dict[str, ChunkServerView]

    def statuses(self) -> dict[int, pb.StatusReply]:
        """The answers, by node id."""
        return {i: n.status for i, n in sorted(self.nodes.items()) if n.status is not None}

    def unreachable(self) -> dict[int, str]:
        return {i: n.why for i, n in sorted(self.nodes.items()) if n.status is None}


def group_order(group: str) -> tuple[bool, str]:
    """Config first, then the shards by id."""
    return (group != CONFIG_GROUP, group)


def fold(nodes: Mapping[int, NodeView]) -> ClusterView:
    """The view of the nodes' answers (see the module docstring)."""
    answered = {i: n.status for i, n in sorted(nodes.items()) if n.status is not None}
    seen: dict[str, dict[int, pb.GroupStatus]] = {}
    for node_id, st in answered.items():
        for gid, gs in st.groups.items():
            if not gs.removed:
                seen.setdefault(gid, {})[node_id] = gs
    groups = {gid: _group(gid, seen[gid]) for gid in sorted(seen, key=group_order)}
    return ClusterView(dict(sorted(nodes.items())), groups, _chunk_servers(answered))


def _group(gid: str, seen: dict[int, pb.GroupStatus]) -> GroupView:
    leaders = [(s.term, i) for i, s in seen.items() if s.state == "leader"]
    g = GroupView(gid)
    if leaders:
        g.term, g.leader = max(leaders)
        ref = seen[g.leader]
        g.commit = ref.commit
    else:
        ref = max(seen.values(), key=lambda s: (s.term, s.commit))
        g.term, g.commit = ref.term, max(s.commit for s in seen.values())
    g.voters, g.learners = list(ref.voters), list(ref.learners)
    for node_id in sorted({*g.voters, *g.learners}):
        s = seen.get(node_id)
        address = ref.members.get(node_id, "")
        if s is None:
            g.members[node_id] = MemberView(node_id, DOWN, raft_address=address)
            continue
        progress = ref.progress.get(node_id) if g.leader else None
        g.members[node_id] = MemberView(
            node_id,
            s.state if node_id in g.voters else "learner",
            s.term,
            s.commit,
            s.applied,
            progress.lag if progress is not None else None,
            address,
            s.leader,
        )
    return g


def _chunk_servers(answered: Mapping[int, pb.StatusReply]) -> dict[str, ChunkServerView]:
    out: dict[str, ChunkServerView] = {}
    for node_id, st in answered.items():
        if not st.shards:
            continue  # chunk servers report to the masters of shards
        for sid, cs in st.chunk_servers.items():
            row = out.get(sid)
            if row is None:
                row = out[sid] = ChunkServerView(sid, cs.address, cs.rack)
            row.live |= cs.live
            row.reported |= cs.reported
            row.capacity = max(row.capacity, cs.capacity)
            row.used = max(row.used, cs.used)
            age = cs.last_heartbeat_s_ago
            if row.last_heartbeat_s_ago is None or age < row.last_heartbeat_s_ago:
                row.last_heartbeat_s_ago = age
            row.seen_by.append(node_id)
    return dict(sorted(out.items()))


def gather(client: Client, addresses: Mapping[int, str], *, timeout: float = 2.0) -> ClusterView:
    """Ask every node in ``addresses`` (node id -> client address), one after another."""
    nodes: dict[int, NodeView] = {}
    for node_id, address in sorted(addresses.items()):
        try:
            nodes[node_id] = NodeView(node_id, address, client.status(address, timeout=timeout))
        except grpc.RpcError as err:
            nodes[node_id] = NodeView(node_id, address, None, f"{address}: {err.code().name}")
    return fold(nodes)


async def gather_async(
    client: AsyncClient,
    addresses: Mapping[int, str],
    *,
    timeout: float = 0.5,
    known: Mapping[int, pb.StatusReply] | None = None,
) -> ClusterView:
    """Ask every node in ``addresses`` at once, but those whose status is ``known`` (the
    asking node's own)."""
    known = known or {}
    ask = sorted(i for i in addresses if i not in known)
    answers = await asyncio.gather(
        *(client.status(addresses[i], timeout=timeout) for i in ask), return_exceptions=True
    )
    nodes = {i: NodeView(i, addresses.get(i, ""), st) for i, st in known.items()}
    for node_id, answer in zip(ask, answers, strict=True):
        address = addresses[node_id]
        if isinstance(answer, pb.StatusReply):
            nodes[node_id] = NodeView(node_id, address, answer)
        else:
            why = answer.code().name if isinstance(answer, grpc.RpcError) else repr(answer)
            nodes[node_id] = NodeView(node_id, address, None, f"{address}: {why}")
    return fold(nodes)
