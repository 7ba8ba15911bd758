"""Log time: what leaders stamp on entries, and so when leases and sessions expire.

Two ``MetaNode`` objects (not started: no sockets) hold replicas of one shard; their Raft
groups are replaced by one in-memory log that applies each proposal to both state machines,
with a leader and a term the test sets. Proposals go through ``MetaNode.propose``, as every
write does.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from keelfs.master import node as node_module
from keelfs.master.member import Member
from keelfs.master.node import MetaNode, NodeConfig
from keelfs.meta.commands import Command, Create, MkdirSelf, RegisterSession, Tick
from keelfs.meta.namespace import ShardStateMachine
from keelfs.rpc.pb import meta_pb2 as pb
from keelfs.rpc.wire import session_id_to_pb

HOUR_MS = 3_600_000
LEASE_TTL_MS = 60_000


class SharedLog:
    """One group's committed log, applied at once to every member's state machine."""

    def __init__(self) -> None:
        self.index = 0
        self.term = 1
        self.leader = 1
        self.members: dict[int, Member] = {}

    def elect(self, node_id: int) -> None:
        self.leader, self.term = node_id, self.term + 1


@dataclass
class LogGroup:
    log: SharedLog
    node_id: int

    @property
    def is_leader(self) -> bool:
        return self.log.leader == self.node_id

    @property
    def node(self) -> Any:
        return SimpleNamespace(raft=SimpleNamespace(term=self.log.term))

    def applied_index(self) -> int:
        return self.log.index

    def commit_index(self) -> int:
        return self.log.index

    async def propose_entry(
        self, data: bytes, timeout: float, *, packable: bool = False
    ) -> tuple[Any, int, int]:
        assert self.is_leader
        self.log.index += 1
        results = {i: m.sm.apply(self.log.index, data) for i, m in self.log.members.items()}
        return results[self.node_id], self.log.index, self.log.term


class Shard:
    """Replicas 1 and 2 of ``shard-1``; ``clocks`` (node id -> LogClock kwargs) replace a
    node's clocks (default: the real ones)."""

    def __init__(self, tmp: Path, clocks: dict[int, dict[str, Any]] | None = None) -> None:
        self.log = SharedLog()
        self.nodes: dict[int, MetaNode] = {}
        for i in (1, 2):
            cfg = NodeConfig(node_id=i, listen="127.0.0.1:0", data_dir=tmp / f"n{i}")
            self.nodes[i] = MetaNode(NodeConfig(**{**cfg.__dict__, "shards": ("shard-1",)}))
            sm = ShardStateMachine(None, shard_id="shard-1", lease_ttl_ms=LEASE_TTL_MS)
            extra: dict[str, Any] = {}
            if clocks and i in clocks:
                extra["clock"] = node_module.LogClock(**clocks[i])
            member = Member("shard-1", LogGroup(self.log, i), sm, **extra)  # type: ignore[arg-type]
            self.nodes[i].shards["shard-1"] = member
            self.log.members[i] = member

    def sm(self, node_id: int = 1) -> ShardStateMachine:
        return self.log.members[node_id].sm  # type: ignore[no-any-return]

    async def propose(self, command: Command, session: int = 0, seq: int = 0) -> Any:
        leader = self.log.leader
        header = (
            pb.RequestHeader(session_id=session_id_to_pb(session), seq=seq) if session else None
        )
        result, _, _ = await self.nodes[leader].propose(
            self.log.members[leader], command, header, 5.0
        )
        assert result.ok, result.error
        return result.value

    async def writer(self) -> int:
        """A formatted namespace and a session writing ``/f`` (holding its lease)."""
        await self.propose(MkdirSelf("/"))
        sid = int((await self.propose(RegisterSession.fresh()))["session_id"])
        await self.propose(Create("/f"), sid, 1)
        assert self.sm().lease_expiry(sid) is not None
        return sid


def test_a_new_leader_whose_wall_clock_is_an_hour_ahead_expires_no_lease(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        shard = Shard(tmp_path)
        sid = await shard.writer()
        before = shard.sm().clock_ms()
        shard.log.elect(2)
        real = node_module.now_ms
        monkeypatch.setattr(node_module, "now_ms", lambda: real() + HOUR_MS)  # node 2's clock
        await shard.propose(Tick())
        for node_id in (1, 2):
            assert shard.sm(node_id).lease_expiry(sid) is not None, "the lease expired"
            assert shard.sm(node_id).session(sid) is not None, "the session expired"
        assert shard.sm().clock_ms() - before < 10_000

    asyncio.run(main())


class FakeTime:
    def __init__(self) -> None:
        self.mono = 5_000  # each node's monotonic clock (its own origin: never compared)
        self.wall = 1_700_000_000_000

    def advance(self, ms: int) -> None:
        self.mono += ms
        self.wall += ms


def _clocks(t: FakeTime, skew: dict[int, int] | None = None) -> dict[int, dict[str, Any]]:
    skew = skew or {}
    return {
        i: {
            "wall_ms": lambda i=i: t.wall + skew.get(i, 0),
            "monotonic_ms": lambda i=i: t.mono + 1_000_000 * i,
        }
        for i in (1, 2)
    }


def test_leases_expire_in_real_time_across_an_idle_leader_change(tmp_path: Path) -> None:
    async def main() -> None:
        t = FakeTime()
        shard = Shard(tmp_path, _clocks(t))
        sid = await shard.writer()
        assert shard.sm().clock_ms() == t.wall  # a new log starts at the wall clock
        t.advance(30_000)
        await shard.propose(Tick())
        assert shard.sm().lease_expiry(sid) is not None
        t.advance(31_000)  # the group is silent past the lease's TTL; its leader dies
        shard.log.elect(2)
        await shard.propose(Tick())
        assert shard.sm().lease_expiry(sid) is None  # node 2 carried the silence forward
        assert shard.sm().clock_ms() == t.wall

    asyncio.run(main())


def test_a_skewed_leader_makes_log_time_run_at_most_ten_percent_fast(tmp_path: Path) -> None:
    async def main() -> None:
        t = FakeTime()
        shard = Shard(tmp_path, _clocks(t, skew={2: HOUR_MS}))
        sid = await shard.writer()
        shard.log.elect(2)
        start = shard.sm().clock_ms()
        for _ in range(50):  # node 2 leads 50 s, renewing nothing
            t.advance(1_000)
            await shard.propose(Tick())
            assert shard.sm().lease_expiry(sid) is not None  # 50 s (+10 %) < the TTL
        assert 50_000 <= shard.sm().clock_ms() - start <= 55_000
        for _ in range(20):
            t.advance(1_000)
            await shard.propose(Tick())
        assert shard.sm().lease_expiry(sid) is None  # and leases do expire
        # a sane leader again: log time (now ahead of its wall clock) never goes back
        shard.log.elect(1)
        ahead = shard.sm().clock_ms()
        t.advance(1_000)
        await shard.propose(Tick())
        assert ahead < shard.sm().clock_ms() <= ahead + 1_100

    asyncio.run(main())


def test_after_the_whole_cluster_was_down_log_time_catches_up_gently(tmp_path: Path) -> None:
    """Nothing observed can tell how long a full stop lasted: log time resumes where it was
    and the wall clock pulls it forward at 10 % (file times converge, no lease expires
    early)."""

    async def main() -> None:
        t = FakeTime()
        shard = Shard(tmp_path, _clocks(t))
        await shard.writer()
        stopped_at = shard.sm().clock_ms()
        t.advance(HOUR_MS)  # everything down for an hour; the nodes restart
        for i in (1, 2):
            member = shard.log.members[i]
            member.clock = node_module.LogClock(**_clocks(t)[i])
            member.clock.observe(member.sm.clock_ms())
        shard.log.elect(1)
        t.advance(10_000)
        await shard.propose(Tick())
        assert shard.sm().clock_ms() == stopped_at + 10_000  # the real time since restart
        t.advance(10_000)
        await shard.propose(Tick())
        assert shard.sm().clock_ms() == stopped_at + 21_000  # 10 s, +10 % towards the wall
        for _ in range(359):
            t.advance(100_000)
            await shard.propose(Tick())
        assert shard.sm().clock_ms() < t.wall
        t.advance(100_000)
        await shard.propose(Tick())
        assert shard.sm().clock_ms() == t.wall  # the hour caught up in ten

    asyncio.run(main())


def test_the_lease_tick_follows_log_time_not_the_leaders_wall_clock(tmp_path: Path) -> None:
    """The block layer proposes a ``Tick`` when a lease has expired by the time the leader
    would propose; judged by an hour-fast wall clock it would propose one every round for
    nothing (log time is not there yet), and a slow one would never release the lease."""
    from keelfs.master.replication import ReplicationMonitor

    async def main() -> None:
        t = FakeTime()
        shard = Shard(tmp_path, _clocks(t, skew={2: HOUR_MS}))
        sid = await shard.writer()
        shard.log.elect(2)
        node, member = shard.nodes[2], shard.log.members[2]
        monitor = ReplicationMonitor(node)
        t.advance(1_000)
        entries = shard.log.index
        await monitor.tick(member)
        assert shard.log.index == entries  # nothing has expired: no Tick
        t.advance(LEASE_TTL_MS)
        await monitor.tick(member)  # expired by log time now: one Tick releases it
        assert shard.log.index == entries + 1
        assert shard.sm().lease_expiry(sid) is None
        await monitor.tick(member)
        assert shard.log.index == entries + 1

    asyncio.run(main())


def test_log_clock_slews_under_frequent_proposals_and_saves_nothing_for_a_jump() -> None:
    t = FakeTime()
    clock = node_module.LogClock(lambda: t.wall, lambda: t.mono)
    clock.observe(t.wall - HOUR_MS)  # log time an hour behind this node's wall clock
    start = clock.now(1)
    for _ in range(1000):  # a proposal every 3 ms: 0.3 ms of slew each
        t.advance(3)
        last = clock.now(1)
    assert last - start == 3000 + 300
    t.wall = last  # the wall clock agrees with log time for a while
    for _ in range(10):
        t.advance(60_000)
        last = clock.now(1)
    t.wall += HOUR_MS  # then jumps an hour ahead
    t.advance(1_000)
    assert clock.now(1) - last <= 1_100


def test_a_member_that_has_not_applied_the_log_yet_does_not_start_it_at_its_wall_clock() -> None:
    t = FakeTime()
    clock = node_module.LogClock(lambda: t.wall + HOUR_MS, lambda: t.mono)
    assert clock.now(3, caught_up=False) == 0  # apply keeps the log's clock for this entry
    clock.observe(t.wall)  # the backlog applied
    assert clock.now(3) == t.wall
