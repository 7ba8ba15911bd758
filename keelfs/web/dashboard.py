"""The cluster view behind the dashboard (``/api/cluster``): every metadata node's status.

The serving node knows its own status and, from the config group's node registry (refreshed
with the ShardMap), every registered node's client address; it asks each of them for
``Node.Status`` concurrently, with a short timeout, and folds the answers into one JSON-able
dict:

- ``groups``: per Raft group (config first, then shards by name) the leader and its term
  (the leader with the highest term among the answers), and every voter with its state,
  term, commit and applied index and its lag (the leader's commit minus what it applied;
  None when it did not answer);
- ``nodes``: each node's address, whether it answered, and its groups;
- ``chunk_servers``: every chunk server some master knows of, in the freshest view (the one
  with the most recent heartbeat), with capacity, used bytes and heartbeat age;
- ``blocks``: per answering master, the blocks it knows replicas of, its repair counters and,
  where the master reports it (``block_health``: shards it leads, as of their last walk),
  the under-replicated and missing blocks per shard.

A node that does not answer is shown as such; nothing here raises for a dead node.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keelfs.master.node import MetaNode

__all__ = ["cluster_view", "fold"]

STATUS_TIMEOUT_S = 0.5


async def _status(node: MetaNode, address: str) -> dict[str, Any] | None:
    try:
        st: dict[str, Any] = await node.internal.status(address, timeout=STATUS_TIMEOUT_S)
    except Exception:
        return None
    return st


async def cluster_view(node: MetaNode) -> dict[str, Any]:
    """Ask every registered node for its status (see the module docstring)."""
    addresses = dict(node.nodes)
    addresses[node.node_id] = node.client_address
    if node.config_member is not None:
        for nid, address in node.config_member.sm.masters().items():
            addresses.setdefault(int(nid), str(address))
    others = sorted(i for i in addresses if i != node.node_id)
    answers = await asyncio.gather(*(_status(node, addresses[i]) for i in others))
    statuses: dict[int, dict[str, Any] | None] = dict(zip(others, answers, strict=True))
    statuses[node.node_id] = node.status()
    view = fold(statuses, addresses)
    view["served_by"] = node.node_id
    view["map_version"] = node.shard_map.version
    view["time"] = time.time()
    return view


def _group_order(gid: str) -> tuple[int, str]:
    return (0 if gid == "config" else 1, gid)


def fold(statuses: dict[int, dict[str, Any] | None], addresses: dict[int, str]) -> dict[str, Any]:
    """Fold node statuses (None: did not answer) into the dashboard's view."""
    answered = {i: s for i, s in statuses.items() if s is not None}
    nodes = [
        {
            "id": i,
            "address": addresses.get(i, ""),
            "up": statuses.get(i) is not None,
            "groups": sorted(answered[i]["groups"], key=_group_order) if i in answered else [],
        }
        for i in sorted(set(statuses) | set(addresses))
    ]
    members: dict[str, dict[int, dict[str, Any]]] = {}
    for i, st in answered.items():
        for gid, g in st.get("groups", {}).items():
            members.setdefault(gid, {})[i] = g
    groups = []
    for gid in sorted(members, key=_group_order):
        by_node = members[gid]
        leaders = [(g["term"], i) for i, g in by_node.items() if g["state"] == "leader"]
        leader = max(leaders)[1] if leaders else None
        ref = by_node[leader] if leader is not None else max(by_node.values(), key=_term)
        voters = sorted(set(ref.get("voters", [])) | set(by_node))
        commit = ref["commit"] if leader is not None else max(g["commit"] for g in by_node.values())
        rows = []
        for i in voters:
            g = by_node.get(i)
            rows.append(
                {
                    "id": i,
                    "up": g is not None,
                    "state": g["state"] if g else "unreachable",
                    "term": g["term"] if g else None,
                    "commit": g["commit"] if g else None,
                    "applied": g["applied"] if g else None,
                    "lag": max(0, commit - g["applied"]) if g else None,
                }
            )
        groups.append(
            {
                "id": gid,
                "leader": leader,
                "term": ref["term"],
                "commit": commit,
                "members": rows,
            }
        )
    chunk_servers: dict[str, dict[str, Any]] = {}
    for st in answered.values():
        for sid, cs in st.get("chunk_servers", {}).items():
            seen = chunk_servers.get(sid)
            age = cs.get("last_heartbeat_s_ago")
            if seen is None or _fresher(age, seen.get("last_heartbeat_s_ago")):
                chunk_servers[sid] = {"id": sid, **cs}
    blocks = [
        {
            "node": i,
            "shards": st.get("shards", []),
            "blocks": st.get("blocks", 0),
            "replication": st.get("replication", {}),
            "health": st.get("block_health", {}),
        }
        for i, st in sorted(answered.items())
        if st.get("shards")
    ]
    return {
        "nodes": nodes,
        "groups": groups,
        "chunk_servers": [chunk_servers[k] for k in sorted(chunk_servers)],
        "blocks": blocks,
    }


def _term(g: dict[str, Any]) -> int:
    return int(g["term"])


def _fresher(age: float | None, than: float | None) -> bool:
    if age is None:
        return False
    return than is None or age < than
