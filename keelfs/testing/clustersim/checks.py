"""The invariants a run must keep, checked at the end once the cluster has healed.

- **linearizable**: the namespace clients' history (with a final stat of every name) is
  linearizable against ``FileNamespaceModel`` (``keelfs.testing.linearizability``);
- **no undecided transaction or move**: within ``DECIDE_BOUND_S`` of healing, no shard member
  holds an open transaction record (``sm.open_transactions()``) and the map shows no
  resharding under way;
- **the map converges**: within the same bound every running node's cached shard map has the
  config group's version;
- the clients met no error the model has no answer for.

Data invariants (acknowledged files read back; no referenced block deleted from every store)
live with the chunk servers (``keelfs.testing.clustersim.chunks``).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from keelfs.testing.linearizability import FileNamespaceModel, check

if TYPE_CHECKING:
    from keelfs.testing.clustersim.world import World

__all__ = ["Violation", "check_final"]

DECIDE_BOUND_S = 30.0


class Violation(AssertionError):
    """An invariant failed."""


async def check_final(world: World) -> None:
    c = world.cluster
    if world.violations:
        raise Violation("; ".join(world.violations[:3]))
    await _bounded(world, lambda: _open_transactions(world), "transactions stay undecided")
    await _bounded(world, lambda: _map_lag(world), "the shard map does not converge")
    ns = world.ns
    if ns.failures:
        raise Violation(f"clients met errors the model has no answer for: {ns.failures[:3]}")
    history = ns.history()
    result = check(FileNamespaceModel(), history, timeout_s=60)
    if not result.ok:
        raise Violation(f"namespace history is not linearizable:\n{result.explanation}")
    lost = await world.data.check_readable(world.admin, timeout=30.0)
    if lost:
        raise Violation(f"acknowledged files do not read back: {lost[:3]}")
    if world.violations:
        raise Violation("; ".join(world.violations[:3]))
    world.trace(
        f"final: {len(history)} namespace operations linearizable; {len(world.data.files)} "
        f"acknowledged files read back; {len(c.nodes)} nodes; data {world.data.stats}; "
        f"blocks {world.fleet.stats}"
    )


async def _bounded(world: World, problem: Any, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DECIDE_BOUND_S
    while (found := problem()) and loop.time() < deadline:
        await asyncio.sleep(0.1)
    if found:
        raise Violation(f"{what} {DECIDE_BOUND_S:.0f} s after healing: {found}")


def _open_transactions(world: World) -> list[str]:
    out = []
    for node_id, node in sorted(world.cluster.nodes.items()):
        for shard_id, member in sorted(node.shards.items()):
            for rec in member.sm.open_transactions():
                out.append(f"n{node_id}/{shard_id}: txn {rec.txn_id}")
    return out


def _map_lag(world: World) -> list[str]:
    c = world.cluster
    leader = c.leader_of("config")
    if leader is None:
        return ["no config leader"]
    member = c.nodes[leader].config_member
    assert member is not None
    current = member.sm.shard_map()
    out = [
        f"n{node_id} has map {node.shard_map.version} < {current.version}"
        for node_id, node in sorted(c.nodes.items())
        if node.shard_map.version != current.version
    ]
    if current.resharding:
        out.append(f"resharding still under way: {current.resharding}")
    return out
