"""The dashboard's JSON (``/api/cluster``): ``keelfs.client.cluster_view`` as the page reads it.

The serving node knows its own status and, from the config group's node registry (refreshed
with the ShardMap), every registered node's client address; it asks each of them for
``Node.Status`` concurrently, with a short timeout (``gather_async``), and renders the one
cluster view that ``keelfs admin status`` shows too:

- ``groups``: per Raft group (config first, then shards by name) the leader (None: no leader)
  and its term and commit index, and every voter and learner with its state, term, commit and
  applied index and its lag (``MemberProgress.lag`` as the leader reports it; None without a
  leader or for a member that did not answer, whose state is ``unreachable``);
- ``nodes``: each node's address, whether it answered, and its groups;
- ``chunk_servers``: every chunk server the masters know, merged over them (live if any of
  them heard from it lately, the freshest heartbeat), with capacity and used bytes;
- ``blocks``: per answering master, the blocks it knows replicas of, its repair counters and,
  where the master reports it (``block_health``: shards it leads, as of their last walk),
  the under-replicated and missing blocks per shard.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from keelfs.client.cluster_view import ClusterView, gather_async, group_order

if TYPE_CHECKING:
    from keelfs.master.node import MetaNode

__all__ = ["cluster_json", "dashboard_json"]

STATUS_TIMEOUT_S = 0.5


async def cluster_json(node: MetaNode) -> dict[str, Any]:
    """Ask every registered node for its status (see the module docstring)."""
    addresses = dict(node.nodes)
    addresses[node.node_id] = node.client_address
    if node.config_member is not None:
        for nid, address in node.config_member.sm.masters().items():
            addresses.setdefault(int(nid), str(address))
    view = await gather_async(
        node.internal, addresses, timeout=STATUS_TIMEOUT_S, known={node.node_id: node.status()}
    )
    out = dashboard_json(view)
    out["served_by"] = node.node_id
    out["map_version"] = node.shard_map.version
    out["time"] = time.time()
    return out


def dashboard_json(view: ClusterView) -> dict[str, Any]:
    """``view`` as the dashboard page reads it."""
    statuses = view.statuses()
    return {
        "nodes": [
            {
                "id": n.id,
                "address": n.address,
                "up": n.up,
                "groups": sorted(n.status.groups, key=group_order) if n.status else [],
            }
            for n in view.nodes.values()
        ],
        "groups": [
            {
                "id": g.group,
                "leader": g.leader or None,
                "term": g.term,
                "commit": g.commit,
                "members": [
                    {
                        "id": m.node,
                        "up": m.up,
                        "state": m.role if m.up else "unreachable",
                        "term": m.term if m.up else None,
                        "commit": m.commit if m.up else None,
                        "applied": m.applied if m.up else None,
                        "lag": m.lag,
                    }
                    for m in g.members.values()
                ],
            }
            for g in view.groups.values()
        ],
        "chunk_servers": [
            {
                "id": c.id,
                "address": c.address,
                "rack": c.rack,
                "live": c.live,
                "reported": c.reported,
                "capacity": c.capacity,
                "used": c.used,
                "last_heartbeat_s_ago": c.last_heartbeat_s_ago,
            }
            for c in view.chunk_servers.values()
        ],
        "blocks": [
            {
                "node": i,
                "shards": list(st.shards),
                "blocks": st.blocks,
                "replication": dict(st.replication),
                "health": {
                    shard: {
                        "under_replicated": h.under_replicated,
                        "missing": h.missing,
                        "corrupt_replicas": h.corrupt_replicas,
                    }
                    for shard, h in sorted(st.block_health.items())
                },
            }
            for i, st in statuses.items()
            if st.shards
        ],
    }
