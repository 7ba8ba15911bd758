"""Operating the chunk servers of a fleet: administrative states and the balancer, as the
admin tool drives them (``keelfs admin decommission|recommission|maintenance|servers|balance``).

**States.** A chunk server's administrative state lives in the config group's replicated state
(``Config.SetServerAdminState``, ``keelfs.meta.shardmap``): durable, and learnt by every master
of every shard with the ShardMap. What a state means for placement and repairs is the
masters' (``keelfs.master.blocks``, ``keelfs.master.balancer``). A decommissioning server
shows *decommissioned* (``server_rows``) once the leader of every shard in the map reports
(``Node.Status``' ``drain``) that a whole walk found none of its blocks on the server without
enough copies elsewhere, and nothing being written there: it can then be stopped without a
moment of reduced redundancy.

**The balancer** (``balance``) is a one-shot driver run by the admin tool, not a task of the
masters. It works in waves: it waits until no shard has a move in flight, reads every server's
use from the masters' status (``plan_balance``: the servers above the mean utilisation plus the
threshold are sources, each with the bytes it is above the mean; those below the mean are
targets, each with the bytes it may take up to it; only live servers in service take part),
then asks each shard's leader in turn for a step (``Node.BalanceStep``) within the wave's
bytes (``rate`` × 2 s) and what the shards before it left of each server's room and excess:
several shards moving at once never overshoot the mean, so the waves converge. A move is a
copy to the target, and the source's replica is deleted only once the copy is reported and
every replica kept re-verified (the excess trim of ``keelfs.master.replication``, DESIGN
§2.12); moves a leader loses with its leadership are finished by the next leader's walk as an
ordinary excess, and a move whose copy never arrives is forgotten after two minutes. It stops
when no server is above the threshold, when two waves running began no move (nothing more
would help), or at its deadline. Stopping it (Ctrl-C) leaves the moves in flight to finish
or be forgotten; nothing is left half done.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from keelfs.client._core import CONFIG_ROUTE, Op, fetch_map_op
from keelfs.client.admin_client import AdminClient, AdminClientError
from keelfs.rpc.pb import meta_pb2 as pb

__all__ = [
    "BalancePlan",
    "BalanceRound",
    "ServerRow",
    "balance",
    "plan_balance",
    "server_rows",
    "set_state",
]

IN_SERVICE = "in_service"
DECOMMISSIONING = "decommissioning"
DECOMMISSIONED = "decommissioned"
MAINTENANCE = "maintenance"


def set_state(c: AdminClient, server_id: str, state: str, until_ms: int = 0) -> int:
    """Record ``server_id``'s administrative state in the config group; the new map version."""

    def build(h: pb.RequestHeader) -> pb.SetServerAdminStateRequest:
        return pb.SetServerAdminStateRequest(
            header=h, server_id=server_id, state=state, until_ms=until_ms
        )

    op = Op("Config", "SetServerAdminState", CONFIG_ROUTE, build, True, True)
    return int(c.client._run(op, None).map_version)


def admin_states(c: AdminClient) -> dict[str, pb.ServerAdminState]:
    """The administrative states the config group holds now (linearizable read)."""
    reply: pb.FetchShardMapReply = c.client._run(fetch_map_op(None, False), None)
    return {a.server_id: a for a in reply.server_states}


@dataclass
class ServerRow:
    """One chunk server as ``keelfs admin servers`` shows it."""

    server_id: str
    address: str = ""
    rack: str = ""
    live: bool = False
    capacity: int = 0
    used: int = 0
    state: str = IN_SERVICE
    """in_service, decommissioning, decommissioned or maintenance."""
    until_ms: int = 0
    blocks_left: int | None = None
    """Decommissioning: blocks still needing copies elsewhere, summed over the shards that
    reported (None: no shard leader reported yet)."""
    shards_done: list[str] = field(default_factory=list)

    @property
    def utilisation(self) -> float:
        return 100.0 * self.used / self.capacity if self.capacity else 0.0


def _leaders_drain(c: AdminClient) -> dict[str, list[pb.DrainReport]]:
    """Shard -> the drain reports of the node that leads it (as its status says)."""
    out: dict[str, list[pb.DrainReport]] = {}
    for st in c.view.statuses().values():
        for report in st.drain:
            g = st.groups.get(report.shard)
            if g is not None and g.state == "leader":
                out.setdefault(report.shard, []).append(report)
    return out


def server_rows(c: AdminClient, now_ms: int | None = None) -> dict[str, ServerRow]:
    """Every chunk server some master knows or the config group has a state for (``load()``
    the client first)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if not c.view.statuses():  # e.g. a user who may not ask Node.Status (an admin method)
        why = "; ".join(f"node {i}: {w}" for i, w in c.view.unreachable().items())
        raise AdminClientError(f"no metadata node answered Node.Status ({why or 'none known'})")
    rows: dict[str, ServerRow] = {}
    for sid, cs in c.view.chunk_servers.items():
        rows[sid] = ServerRow(sid, cs.address, cs.rack, cs.live, cs.capacity, cs.used)
    drains = _leaders_drain(c)
    shards = set(c.shard_map.shards)
    for sid, a in admin_states(c).items():
        row = rows.setdefault(sid, ServerRow(sid))
        row.state, row.until_ms = a.state, a.until_ms
        if a.state == MAINTENANCE and a.until_ms <= now_ms:
            row.state = IN_SERVICE  # its maintenance is over
        if a.state != DECOMMISSIONING:
            continue
        reports = [r for rs in drains.values() for r in rs if r.server_id == sid]
        row.blocks_left = sum(r.blocks_left for r in reports) if reports else None
        row.shards_done = sorted(r.shard for r in reports if r.done)
        if shards and shards <= set(row.shards_done):
            row.state = DECOMMISSIONED
    return dict(sorted(rows.items()))


# -- the balancer ------------------------------------------------------------------------------
@dataclass(frozen=True)
class BalancePlan:
    mean: float
    """Mean utilisation (percent of capacity) of the servers taking part."""
    sources: list[str]
    targets: list[str]
    excess: dict[str, int] = field(default_factory=dict)
    """Source -> bytes it is above the mean."""
    room: dict[str, int] = field(default_factory=dict)
    """Target -> bytes it is below the mean."""


def plan_balance(rows: Mapping[str, ServerRow], threshold: float) -> BalancePlan:
    """Sources: servers above the mean utilisation + ``threshold`` (percentage points),
    fullest first, each with the bytes it is above the mean; targets: servers below the
    mean, emptiest first, each with the bytes it may take up to the mean. Only live servers
    in service with a known capacity take part."""
    taking = [r for r in rows.values() if r.live and r.state == IN_SERVICE and r.capacity > 0]
    if not taking:
        return BalancePlan(0.0, [], [])
    mean = sum(r.utilisation for r in taking) / len(taking)
    over = sorted(
        (r for r in taking if r.utilisation > mean + threshold), key=lambda r: -r.utilisation
    )
    under = sorted((r for r in taking if r.utilisation < mean), key=lambda r: r.utilisation)

    def bytes_off(r: ServerRow) -> int:
        return int(abs(r.utilisation - mean) / 100.0 * r.capacity)

    return BalancePlan(
        mean,
        [r.server_id for r in over],
        [r.server_id for r in under],
        {r.server_id: bytes_off(r) for r in over},
        {r.server_id: bytes_off(r) for r in under},
    )


@dataclass
class BalanceRound:
    plan: BalancePlan
    moves: list[pb.BalanceMove]
    in_flight: int


def _step(
    c: AdminClient, shard: str, plan: BalancePlan, max_bytes: int, min_block_bytes: int
) -> pb.BalanceStepReply:
    request = pb.BalanceStepRequest(
        group=shard,
        sources=plan.sources,
        targets=plan.targets,
        max_bytes=max_bytes,
        min_block_bytes=min_block_bytes,
        room=plan.room,
        excess=plan.excess,
    )
    reply: pb.BalanceStepReply = c.call_leader(shard, "BalanceStep", request, 10.0)
    return reply


def _wait_wave(c: AdminClient, shards: list[str], deadline: float, round_s: float) -> None:
    """Until no shard has a move in flight (or ``deadline``): each wave is planned from use
    that the last wave's moves are already part of."""
    idle = BalancePlan(0.0, [], [])
    while time.monotonic() < deadline:
        if all(_step(c, shard, idle, 0, 0).in_flight == 0 for shard in shards):
            return
        time.sleep(round_s / 4)


def balance(
    c: AdminClient,
    *,
    threshold: float = 10.0,
    rate_bytes: int = 10 << 20,
    round_s: float = 2.0,
    timeout: float = 3600.0,
    min_block_bytes: int = 1 << 20,
    on_round: Callable[[BalanceRound], None] = lambda _: None,
) -> str:
    """Drive the balancer until done (module doc); why it stopped."""
    deadline = time.monotonic() + timeout
    idle = 0
    while True:
        c.load()
        shards = sorted(c.shard_map.shards)
        _wait_wave(c, shards, deadline, round_s)
        time.sleep(round_s / 2)  # the servers' last heartbeats carry the wave's effect
        plan = plan_balance(server_rows(c.load()), threshold)
        if not plan.sources or not plan.targets:
            return "balanced: no server is above the mean utilisation + threshold"
        budget = max(1, int(rate_bytes * round_s))
        moves: list[pb.BalanceMove] = []
        in_flight = 0
        for shard in shards:  # one after another, each within what the others left
            reply = _step(c, shard, plan, budget, min_block_bytes)
            for m in reply.moves:
                plan.room[m.target] = max(0, plan.room.get(m.target, 0) - m.bytes)
                plan.excess[m.source] = max(0, plan.excess.get(m.source, 0) - m.bytes)
                budget -= m.bytes
            moves.extend(reply.moves)
            in_flight += reply.in_flight
            if budget <= 0:
                break
        on_round(BalanceRound(plan, moves, in_flight))
        idle = idle + 1 if not moves else 0
        if idle >= 2:
            return "done: no move would narrow the gap any more"
        if time.monotonic() >= deadline:
            return f"stopped after {timeout:g} s (moves in flight finish on their own)"
        moved = sum(m.bytes for m in moves)
        time.sleep(max(round_s, moved / rate_bytes))  # at most rate_bytes a second
