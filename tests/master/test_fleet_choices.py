"""Decommissioning, maintenance, rack-aware repair and the balancer's choices, in process: a
real ``ChunkRegistry`` and ``ReplicationMonitor`` over real shard state machines
(``keelfs.master.blocks``, ``keelfs.master.balancer``, ``keelfs.master.replication``)."""

from __future__ import annotations

import asyncio

from test_replication_monitor import (
    Commands,
    FakeNode,
    _answer_good,
    _deleted,
    _file_with_one_block,
    _member,
    _verifies,
)

from keelfs.master.balancer import choose_moves, counted_replicas
from keelfs.master.blocks import ChunkRegistry, Replica
from keelfs.master.member import Member
from keelfs.master.replication import ReplicationMonitor
from keelfs.meta.commands import AddBlock, Create, Mkdir
from keelfs.meta.records import BlockInfo
from keelfs.meta.shardmap import ServerAdminState

GB = 1 << 30


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _registry(racks: dict[str, str], used: dict[str, int] | None = None) -> ChunkRegistry:
    reg = ChunkRegistry(dead_after_s=10.0)
    reg.clock = Clock()
    reg.wall_ms = lambda: 1_000_000
    for i, (sid, rack) in enumerate(sorted(racks.items())):
        reg.heartbeat(sid, f"10.0.0.{i}:9000", rack, 100 * GB, (used or {}).get(sid, 0), 0)
        reg.full_report(sid, [])
    return reg


def _hold(reg: ChunkRegistry, block: int, servers: list[str], gen: int = 1) -> None:
    for sid in servers:
        reg.added(sid, block, Replica(gen, 10, "s"))


def _admin(reg: ChunkRegistry, **states: str | tuple[str, int]) -> None:
    reg.set_admin_states(
        ServerAdminState(sid, *(v if isinstance(v, tuple) else (v, 0))) for sid, v in states.items()
    )


def _replicated(commands: Commands, block: int) -> list[tuple[str, list[str]]]:
    """(source, targets) of every replicate command for ``block``."""
    return [
        (s, [t.server_id for t in c.targets])
        for s, cs in commands.items()
        for c in cs
        if c.kind == "replicate" and c.blocks[0].block_id == block
    ]


def _walk(monitor: ReplicationMonitor, member: Member, servers: list[str]) -> Commands:
    asyncio.run(monitor.tick(member))
    return {s: monitor.take_commands(s) for s in servers}


# -- placement ---------------------------------------------------------------------------------
def test_new_blocks_never_go_to_a_decommissioning_or_resting_server() -> None:
    reg = _registry({"a": "/r", "b": "/r", "c": "/r", "d": "/r"})
    _admin(reg, a="decommissioning", b=("maintenance", 2_000_000))
    for _ in range(20):
        assert {s.server_id for s in reg.choose(3)} == {"c", "d"}
    reg.wall_ms = lambda: 2_000_000  # the maintenance is over: b takes blocks again
    assert {s.server_id for s in reg.choose(3)} == {"b", "c", "d"}
    _admin(reg)  # recommissioned
    assert len(reg.choose(4)) == 4


def test_a_repair_puts_the_new_replica_on_another_rack_than_the_survivors() -> None:
    """The survivors are both on /r1; the server with the most free space is on /r1 too,
    yet the new replica goes to /r2 (a rack failure would otherwise lose the block)."""
    reg = _registry(
        {"a": "/r1", "b": "/r1", "c": "/r1", "d": "/r2"},
        used={"a": 50 * GB, "b": 50 * GB, "c": 0, "d": 40 * GB},
    )
    for _ in range(10):
        [target] = reg.choose(1, exclude={"a", "b"}, survivors=["a", "b"])
        assert target.server_id == "d"
    # survivors on two racks already: free space decides
    [target] = reg.choose(1, exclude={"a", "d"}, survivors=["a", "d"])
    assert target.server_id == "c"


def test_counting_replicas_by_administrative_state() -> None:
    reg = _registry({"a": "/r", "b": "/r", "c": "/r", "m": "/r"})
    block = BlockInfo(7, 1, 10)
    _hold(reg, 7, ["a", "b", "c", "m"])
    _admin(reg, c="decommissioning", m=("maintenance", 2_000_000))
    assert counted_replicas(reg, block) == ["a", "b", "m"]  # the leaving one does not count
    reg.clock.t += 60  # type: ignore[attr-defined]  # every server falls silent
    for sid in ("a", "b"):
        reg.heartbeat(sid, reg.servers[sid].address, "/r", 100 * GB, 0, 0)
    # m is down but resting: its replica still counts, next to live ones in service
    assert counted_replicas(reg, block) == ["a", "b", "m"]
    reg.removed("a", 7)
    reg.removed("b", 7)
    reg.heartbeat("m", reg.servers["m"].address, "/r", 100 * GB, 0, 0)
    assert counted_replicas(reg, block) == []  # only a resting replica: it is repaired


# -- the monitor: decommission, maintenance ----------------------------------------------------
def _setup(servers: list[str], holders: list[str], block: int = 90) -> tuple[Member, FakeNode]:
    d = _file_with_one_block("s", block, 3)
    member = _member("s", d.sm)
    node = FakeNode(member)
    node.chunks.clock = Clock()
    for i, sid in enumerate(servers):
        node.chunks.heartbeat(sid, f"10.0.0.{i}:9000", "", 100 * GB, i * GB, 0)
        node.chunks.full_report(sid, [(block, Replica(1, 10, "s"))] if sid in holders else [])
    return member, node


def test_a_decommissioning_servers_blocks_are_copied_and_never_trimmed() -> None:
    servers = ["a", "b", "c", "d"]
    member, node = _setup(servers, ["a", "b", "c"])
    monitor = ReplicationMonitor(node)  # type: ignore[arg-type]
    _walk(monitor, member, servers)
    assert monitor.drain_status() == []  # nobody is leaving
    _admin(node.chunks, c="decommissioning")
    first = _walk(monitor, member, servers)
    [(source, targets)] = _replicated(first, 90)
    assert targets == ["d"]
    [report] = monitor.drain_status()
    assert (report.server_id, report.blocks_left, report.done) == ("c", 1, False)
    node.chunks.added("d", 90, Replica(1, 10, "s"))  # the copy is reported
    monitor._walks["s"].last_pass = float("-inf")
    second = _walk(monitor, member, servers)
    assert _deleted(second, 90) == [] and _verifies(second) == []  # 4 replicas, none trimmed
    [report] = monitor.drain_status()
    assert (report.blocks_left, report.done) == (0, True)
    node.chunks.servers["c"].load = 1  # something is being written there still
    assert not monitor.drain_status()[0].done


def test_a_drain_is_not_confirmed_by_a_master_without_the_servers_report() -> None:
    servers = ["a", "b", "c", "d"]
    member, node = _setup(servers, ["a", "b", "d"])
    node.chunks.servers["c"].reported = False  # back from silence, its full report not in
    _admin(node.chunks, c="decommissioning")
    monitor = ReplicationMonitor(node)  # type: ignore[arg-type]
    _walk(monitor, member, servers)
    [report] = monitor.drain_status()
    assert (report.blocks_left, report.done) == (0, False)


def test_a_resting_server_down_sets_off_no_copy_until_its_maintenance_ends() -> None:
    servers = ["a", "b", "c", "d"]
    member, node = _setup(servers, ["a", "b", "c"])
    reg = node.chunks
    wall = [1_000_000]
    reg.wall_ms = lambda: wall[0]
    _admin(reg, c=("maintenance", 1_500_000))
    reg.clock.t += 30  # type: ignore[attr-defined]  # c is down; the others heartbeat
    for sid in ("a", "b", "d"):
        reg.heartbeat(sid, reg.servers[sid].address, "", 100 * GB, 0, 0)
        reg.full_report(sid, [(90, Replica(1, 10, "s"))] if sid != "d" else [])
    monitor = ReplicationMonitor(node)  # type: ignore[arg-type]
    assert _replicated(_walk(monitor, member, servers), 90) == []
    wall[0] = 1_500_000  # the deadline passes, c is still down: a real death
    monitor._walks["s"].last_pass = float("-inf")
    [(_, targets)] = _replicated(_walk(monitor, member, servers), 90)
    assert targets == ["d"]


def test_a_block_whose_only_live_replica_is_resting_is_repaired() -> None:
    servers = ["a", "b", "c"]
    member, node = _setup(servers, ["a"])
    _admin(node.chunks, a=("maintenance", 2**62))
    monitor = ReplicationMonitor(node)  # type: ignore[arg-type]
    [(source, targets)] = _replicated(_walk(monitor, member, servers), 90)
    assert source == "a" and sorted(targets) == ["b", "c"]


# -- the balancer ------------------------------------------------------------------------------
def _blocks(n: int, want: int = 2) -> list[tuple[BlockInfo, int]]:
    return [(BlockInfo(i, 1, 10 * (1 << 20)), want) for i in range(1, n + 1)]


def test_moves_go_from_full_servers_to_empty_ones_within_the_byte_budget() -> None:
    reg = _registry({"a": "/r", "b": "/r", "e": "/r"}, used={"a": 10 * GB, "b": 10 * GB})
    for i in range(1, 11):
        _hold(reg, i, ["a", "b"])
    moves = choose_moves(reg, _blocks(10), ["a", "b"], ["e"], max_bytes=25 << 20)
    assert len(moves) == 3  # 30 MiB: the budget is reached with the third
    assert {m.target for m in moves} == {"e"}
    assert {m.source for m in moves} <= {"a", "b"}
    assert len({m.block_id for m in moves}) == 3  # one move per block at most


def test_moves_keep_racks_skip_short_and_busy_blocks_and_narrow_the_gap() -> None:
    reg = _registry(
        {"a": "/r1", "b": "/r2", "e": "/r1", "f": "/r2"}, used={"a": 10 * GB, "b": 10 * GB}
    )
    _hold(reg, 1, ["a", "b"])  # on two racks
    _hold(reg, 2, ["a"])  # short of a replica: repairs first
    _hold(reg, 3, ["a", "b"])  # a move of it is under way
    blocks = _blocks(3)
    moves = choose_moves(reg, blocks, ["a"], ["f"], max_bytes=1 << 40, busy=[3])
    assert moves == []  # a's replica of 1 to f would leave block 1 on /r2 alone
    [move] = choose_moves(reg, blocks, ["a"], ["e", "f"], max_bytes=1 << 40, busy=[3])
    assert (move.block_id, move.source, move.target) == (1, "a", "e")
    # two servers nearly even: moving a block would only swap which is fuller
    even = _registry({"a": "/r", "e": "/r", "x": "/r"}, used={"a": (5 << 20), "e": 0})
    _hold(even, 1, ["a", "x"])
    assert choose_moves(even, _blocks(1), ["a"], ["e"], max_bytes=1 << 40) == []


def test_a_balancer_move_copies_then_trims_the_source_once_the_rest_is_verified() -> None:
    servers = ["a", "b", "c", "e"]
    member, node = _setup(servers, ["a", "b", "c"])
    node.chunks.servers["c"].used = 50 * GB
    monitor = ReplicationMonitor(node)  # type: ignore[arg-type]
    moves, in_flight = monitor.balance_step(member, ["c"], ["e"], 1 << 30)
    assert [(m.block_id, m.source, m.target) for m in moves] == [(90, "c", "e")]
    assert in_flight == 1
    copies = {s: monitor.take_commands(s) for s in servers}
    assert _replicated(copies, 90) == [("c", ["e"])]
    again, in_flight = monitor.balance_step(member, ["c"], ["e"], 1 << 30)
    assert again == [] and in_flight == 1  # not moved twice
    node.chunks.added("e", 90, Replica(1, 10, "s"))  # the copy is recorded
    walked = _walk(monitor, member, servers)
    assert _deleted(walked, 90) == []  # not before the kept replicas are verified
    assert sorted(s for s, _ in _verifies(walked)) == ["a", "b", "e"]
    _answer_good(monitor, walked)
    monitor._walks["s"].last_pass = float("-inf")
    assert _deleted(_walk(monitor, member, servers), 90) == ["c"]
    node.chunks.removed("c", 90)
    monitor._walks["s"].last_pass = float("-inf")
    _walk(monitor, member, servers)
    assert monitor.balance_step(member, ["c"], ["e"], 1 << 30) == ([], 0)


def test_a_block_being_written_is_never_moved() -> None:
    from meta_helpers import formatted

    from keelfs.meta.namespace import ShardStateMachine

    d = formatted(ShardStateMachine(shard_id="s"))
    d.ok(Mkdir("/d"))
    sid = d.session()
    d.ok(Create("/d/open", replication=2), sid, 1)
    d.ok(AddBlock("/d/open", 91, 1), sid, 2)
    member = _member("s", d.sm)
    node = FakeNode(member)
    for i, server in enumerate(["a", "b", "e"]):
        node.chunks.heartbeat(server, f"10.0.0.{i}:9000", "", 100 * GB, (2 - i) * GB, 0)
        node.chunks.full_report(server, [(91, Replica(1, 10, "s"))] if i < 2 else [])
    monitor = ReplicationMonitor(node)  # type: ignore[arg-type]
    assert monitor.balance_step(member, ["a", "b"], ["e"], 1 << 30) == ([], 0)


def test_moves_in_flight_count_as_done_so_a_later_step_does_not_overshoot() -> None:
    reg = _registry({"a": "/r", "b": "/r", "e": "/r"}, used={"a": 40 << 20, "b": 40 << 20})
    for i in range(1, 9):
        _hold(reg, i, ["a", "b"])
    first = choose_moves(reg, _blocks(8), ["a", "b"], ["e"], max_bytes=1 << 40)
    assert first  # e fills up to about the others' use, then no move narrows the gap
    again = choose_moves(
        reg,
        _blocks(8),
        ["a", "b"],
        ["e"],
        1 << 40,
        busy=[m.block_id for m in first],
        in_flight=first,
    )
    assert again == []  # without the moves in flight counted, e would be filled twice
    assert choose_moves(
        reg, _blocks(8), ["a", "b"], ["e"], 1 << 40, busy=[m.block_id for m in first]
    )


def test_blocks_too_small_to_be_worth_a_move_stay() -> None:
    reg = _registry({"a": "/r", "b": "/r", "e": "/r"}, used={"a": 10 * GB, "b": 10 * GB})
    _hold(reg, 1, ["a", "b"])
    _hold(reg, 2, ["a", "b"])
    blocks = [(BlockInfo(1, 1, 7), 2), (BlockInfo(2, 1, 1 << 20), 2)]
    moves = choose_moves(reg, blocks, ["a", "b"], ["e"], 1 << 40, min_length=1 << 20)
    assert [m.block_id for m in moves] == [2]


def test_room_and_excess_bound_what_moves_to_and_from_each_server() -> None:
    """Several shards choose moves in one wave: each within what the others left, so that
    together they never fill a target past the mean nor empty a source below it."""
    mib = 1 << 20
    reg = _registry({"a": "/r", "b": "/r", "e": "/r"}, used={"a": 100 * mib, "b": 100 * mib})
    for i in range(1, 21):
        _hold(reg, i, ["a", "b"])
    blocks = [(BlockInfo(i, 1, mib), 2) for i in range(1, 21)]
    moves = choose_moves(
        reg,
        blocks,
        ["a", "b"],
        ["e"],
        1 << 40,
        room={"e": 5 * mib},
        excess={"a": 2 * mib, "b": 10 * mib},
    )
    assert len(moves) == 5  # e's room
    assert sum(1 for m in moves if m.source == "a") <= 2  # a's excess
    assert choose_moves(reg, blocks, ["a"], ["e"], 1 << 40, room={"e": mib - 1}) == []


def test_the_plan_names_sources_targets_and_how_far_each_is_from_the_mean() -> None:
    from keelfs.client.fleet import ServerRow, plan_balance

    cap = 1000 * GB
    rows = {
        "full": ServerRow("full", live=True, capacity=cap, used=300 * GB),
        "mid": ServerRow("mid", live=True, capacity=cap, used=200 * GB),
        "empty": ServerRow("empty", live=True, capacity=cap, used=100 * GB),
        "gone": ServerRow("gone", live=False, capacity=cap, used=900 * GB),
        "leaving": ServerRow("leaving", live=True, capacity=cap, used=0, state="decommissioning"),
    }
    plan = plan_balance(rows, threshold=5.0)
    assert plan.mean == 20.0
    assert (plan.sources, plan.targets) == (["full"], ["empty"])
    assert plan.excess == {"full": 100 * GB} and plan.room == {"empty": 100 * GB}
    assert plan_balance(rows, threshold=15.0).sources == []  # within the threshold
