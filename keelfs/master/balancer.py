"""Which replicas count, and which to move: the choices behind decommissioning, maintenance
and the balancer, as pure functions of a master's ``ChunkRegistry``.

**Counting** (``counted_replicas``). A block's replicas that count towards its replication are
its good replicas on live servers in service, plus, while at least one of those exists, its
replicas on servers in maintenance, up or down (HDFS's maintenance state with
``dfs.namenode.maintenance.replication.min`` = 1): a server restarted for maintenance does not
set off a storm of copies, but a block whose only live replicas are in maintenance is still
repaired, since nothing else would keep it if that server did not come back. Replicas on a
decommissioning server never count: they are read and copied from, and every block they hold
gets its full replication elsewhere (``ReplicationMonitor``); they are not trimmed either
(``trimmable``), so a decommission never lowers a block's redundancy.

**Balancing** (``choose_moves``). The balancer (``keelfs admin balance``,
``keelfs.client.fleet``) names the servers above the mean utilisation plus the threshold
(sources) and below the mean (targets); each shard's leader picks, among the blocks of its
closed files, replicas on a source to copy to a target: the block healthy (fully replicated,
no move of it under way) and not too small to be worth a move, the target in service, live,
reported and not holding it, the move keeping the block on as many racks as before, and
narrowing the gap between the two servers' use (the source's use minus the target's exceeds
the block's length, as projected after the moves already chosen and those in flight): the
balancer converges instead of moving a block back and forth.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from keelfs.master.blocks import DECOMMISSIONING, IN_SERVICE, MAINTENANCE, ChunkRegistry
from keelfs.meta.records import BlockInfo

__all__ = [
    "Move",
    "choose_moves",
    "counted_replicas",
    "leaving_holders",
    "projected_use",
    "trimmable",
]


@dataclass(frozen=True, slots=True)
class Move:
    block_id: int
    gen_stamp: int
    length: int
    source: str
    target: str


def counted_replicas(reg: ChunkRegistry, block: BlockInfo) -> list[str]:
    """The servers whose replicas of ``block`` count towards its replication (module doc)."""
    in_service = [
        s.server_id
        for s in reg.locations(block.block_id, block.gen_stamp)
        if reg.admin_state(s.server_id) == IN_SERVICE
    ]
    if not in_service:
        return []
    resting = [
        sid
        for sid, r in reg.replicas.get(block.block_id, {}).items()
        if r.gen_stamp == block.gen_stamp
        and reg.admin_state(sid) == MAINTENANCE
        and (block.block_id, sid) not in reg.corrupt
    ]
    return in_service + sorted(resting)


def trimmable(reg: ChunkRegistry, server_id: str) -> bool:
    """Whether an excess replica on ``server_id`` may be chosen for trimming: only servers in
    service (a decommissioning one's replicas go with it; a resting one's count as kept)."""
    return reg.admin_state(server_id) == IN_SERVICE


def leaving_holders(reg: ChunkRegistry, block_id: int) -> list[str]:
    """The decommissioning servers holding a replica of ``block_id``."""
    return [
        sid for sid in reg.replicas.get(block_id, {}) if reg.admin_state(sid) == DECOMMISSIONING
    ]


def choose_moves(
    reg: ChunkRegistry,
    blocks: Iterable[tuple[BlockInfo, int]],
    sources: Sequence[str],
    targets: Sequence[str],
    max_bytes: int,
    busy: Iterable[int] = (),
    in_flight: Iterable[Move] = (),
    min_length: int = 0,
    room: Mapping[str, int] | None = None,
    excess: Mapping[str, int] | None = None,
) -> list[Move]:
    """Moves of replicas of ``blocks`` (each with its wanted replication) from ``sources`` to
    ``targets``, at most ``max_bytes`` in all (at least one move if any qualifies), by the
    rules of the module doc; ``busy``: blocks with a move under way; ``in_flight``: moves
    not finished, whose effect on the servers' use is counted as done (their copy not yet
    reported, their source not yet trimmed), so that a later step does not overshoot. Blocks
    shorter than ``min_length`` are not moved: a move of a few bytes narrows the gap by as
    little, and thousands of them would be needed (HDFS's balancer skips small blocks too).
    ``room``/``excess`` (when given): bytes each target may still take and each source may
    still shed, so that moves chosen by several shards at once never overshoot the mean."""
    used = projected_use(reg, in_flight)
    eligible = [
        t
        for t in targets
        if t in reg.servers and reg.live(t) and reg.servers[t].reported and reg.placeable(t)
    ]
    from_set = set(sources)
    skip = set(busy)
    take = None if room is None else dict(room)
    shed = None if excess is None else dict(excess)
    moves: list[Move] = []
    total = 0
    for block, want in blocks:
        if total >= max_bytes or not eligible:
            break
        if block.block_id in skip or block.length < min_length:
            continue
        counted = counted_replicas(reg, block)
        if len(counted) < want:
            continue  # repairs first; a block short of copies is not moved
        holders = set(reg.replicas.get(block.block_id, {}))
        movable = [
            s
            for s in counted
            if s in from_set
            and reg.live(s)
            and reg.placeable(s)  # a source in service and up (a resting replica stays)
            and (shed is None or shed.get(s, 0) >= block.length)
        ]
        fits = [t for t in eligible if take is None or take.get(t, 0) >= block.length]
        for source in sorted(movable, key=lambda s: (-used.get(s, 0), s)):
            target = _target_for(reg, block, source, holders, fits, used)
            if target is None:
                continue
            if take is not None:
                take[target] -= block.length
            if shed is not None:
                shed[source] -= block.length
            moves.append(Move(block.block_id, block.gen_stamp, block.length, source, target))
            used[source] = used.get(source, 0) - block.length
            used[target] = used.get(target, 0) + block.length
            total += block.length
            break
    return moves


def projected_use(reg: ChunkRegistry, in_flight: Iterable[Move]) -> dict[str, int]:
    """Each server's use as reported, plus what ``in_flight`` moves will still add to their
    targets and take from their sources."""
    used = {s.server_id: s.used for s in reg.servers.values()}
    for move in in_flight:
        holders = reg.replicas.get(move.block_id, {})
        if move.target not in holders:
            used[move.target] = used.get(move.target, 0) + move.length
        if move.source in holders:
            used[move.source] = used.get(move.source, 0) - move.length
    return used


def _target_for(
    reg: ChunkRegistry,
    block: BlockInfo,
    source: str,
    holders: set[str],
    eligible: list[str],
    used: dict[str, int],
) -> str | None:
    """The least used target that may take ``source``'s replica of ``block`` (module doc)."""
    racks_before = {reg.servers[h].rack for h in holders if h in reg.servers}
    stay = {reg.servers[h].rack for h in holders - {source} if h in reg.servers}
    for target in sorted(eligible, key=lambda t: (used.get(t, 0), t)):
        if target in holders or target == source:
            continue
        if len(stay | {reg.servers[target].rack}) < len(racks_before):
            continue  # the block would be on fewer racks
        if used.get(source, 0) - used.get(target, 0) <= block.length:
            continue  # the move would not narrow the gap
        return target
    return None
