"""The runtime on three hosts in one process (RocksDB on disk, in-process network)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from keelfs.errors import NotLeader, Unavailable
from keelfs.raft.messages import Message, MessageType
from keelfs.runtime import HostConfig, RaftGroup, RaftHost, kv
from keelfs.runtime.group import ApplyFailed
from keelfs.runtime.host import CATCH_UP_TICKS
from keelfs.runtime.kv import KVStateMachine
from keelfs.transport.local import LocalNetwork

PEERS = {1: "local:1", 2: "local:2", 3: "local:3"}


@asynccontextmanager
async def cluster(
    tmp: Path, net: LocalNetwork, config: HostConfig | None = None
) -> AsyncIterator[dict[int, RaftHost]]:
    hosts: dict[int, RaftHost] = {}
    try:
        for i in PEERS:
            hosts[i] = RaftHost(i, tmp / f"n{i}", lambda cb, i=i: net.add(i, cb), config)
            await hosts[i].start()
            hosts[i].open_group("g", KVStateMachine(), PEERS)
        yield hosts
    finally:
        for h in hosts.values():
            await h.stop()


async def wait_leader(
    hosts: dict[int, RaftHost], group: str = "g", timeout: float = 5.0
) -> RaftGroup:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        for h in hosts.values():
            g = h.groups.get(group)
            if g is not None and g.is_leader:
                return g
        await asyncio.sleep(0.01)
    raise AssertionError("no leader")


def test_propose_read_and_follower_redirect(tmp_path: Path) -> None:
    async def main() -> None:
        net = LocalNetwork()
        async with cluster(tmp_path, net) as hosts:
            leader = await wait_leader(hosts)
            assert await leader.propose(kv.put("a", "1")) is None
            assert await leader.propose(kv.put("a", "2")) == "1"
            follower = next(h.groups["g"] for h in hosts.values() if h.groups["g"] is not leader)
            with pytest.raises(NotLeader) as e:
                await follower.propose(kv.put("a", "3"))
            assert e.value.leader_id == leader.host.node_id
            # the runtime knows Raft addresses only: it never names one as a client's
            assert e.value.leader_address is None
            assert e.value.raft_address == follower.addresses[leader.host.node_id]
            await follower.read_barrier()  # ReadIndex forwarded to the leader
            assert follower.sm.get("a") == "2"  # type: ignore[attr-defined]
            results = await asyncio.gather(
                *(leader.propose(kv.put(f"k{i}", "v")) for i in range(500))
            )
            assert results == [None] * 500
            assert leader.host.rounds < 400  # proposals were batched into few synced writes

    asyncio.run(main())


def test_restart_keeps_everything(tmp_path: Path) -> None:
    async def main() -> None:
        net = LocalNetwork()
        async with cluster(tmp_path, net) as hosts:
            leader = await wait_leader(hosts)
            for i in range(50):
                await leader.propose(kv.put(f"k{i}", str(i)))
        net2 = LocalNetwork()
        hosts2: dict[int, RaftHost] = {}
        try:
            for i in PEERS:  # no peers given: membership comes from disk
                hosts2[i] = RaftHost(i, tmp_path / f"n{i}", lambda cb, i=i: net2.add(i, cb))
                await hosts2[i].start()
                hosts2[i].open_group("g", KVStateMachine())
            leader = await wait_leader(hosts2)
            await leader.read_barrier()
            assert leader.sm.get("k49") == "49"  # type: ignore[attr-defined]
        finally:
            for h in hosts2.values():
                await h.stop()

    asyncio.run(main())


def test_concurrent_read_barriers_share_readindex_requests_and_stay_linearizable(
    tmp_path: Path,
) -> None:
    """Barriers asked for together share one ReadIndex request; one asked for after a write
    was acknowledged never shares a request made before it, so it always sees the write."""

    async def main() -> None:
        net = LocalNetwork()
        async with cluster(tmp_path, net) as hosts:
            leader = await wait_leader(hosts)
            follower = next(h.groups["g"] for h in hosts.values() if h.groups["g"] is not leader)
            for g in (leader, follower):
                before = next(g._read_ids)
                await asyncio.gather(*(g.read_barrier() for _ in range(50)))
                asked = next(g._read_ids) - before - 1
                assert 1 <= asked < 10, f"{asked} ReadIndex requests for 50 barriers"
                assert g._reads == {} and g._read_waiters == {}
            for i in range(30):  # interleaved: a write acknowledged, then reads from both
                reads = [asyncio.ensure_future(follower.read_barrier()) for _ in range(3)]
                await leader.propose(kv.put("x", str(i)))
                await asyncio.gather(*reads)
                await asyncio.gather(follower.read_barrier(), follower.read_barrier())
                assert follower.sm.get("x") == str(i)  # type: ignore[attr-defined]

    asyncio.run(main())


def test_barriers_arriving_one_by_one_wait_for_the_request_in_flight_and_share_the_next(
    tmp_path: Path,
) -> None:
    """A steady stream of barriers (each asked for after the previous one's heartbeats left)
    makes one ReadIndex request per heartbeat round trip, not one per barrier; writes
    acknowledged in between are still seen by every barrier asked for after them. (Without
    lease reads: with them a request needs no round trip, see test_runtime_lease_reads.)"""

    async def main() -> None:
        net = LocalNetwork()
        async with cluster(tmp_path, net, HostConfig(lease_reads=False)) as hosts:
            leader = await wait_leader(hosts)
            follower = next(h.groups["g"] for h in hosts.values() if h.groups["g"] is not leader)
            for g in (leader, follower):
                before = next(g._read_ids)
                reads: list[asyncio.Future[None]] = []
                for i in range(200):
                    reads.append(asyncio.ensure_future(g.read_barrier()))
                    await asyncio.sleep(0)
                    if i % 10 == 0:
                        await leader.propose(kv.put("x", str(i)))
                        await g.read_barrier()
                        assert g.sm.get("x") == str(i)  # type: ignore[attr-defined]
                await asyncio.gather(*reads)
                asked = next(g._read_ids) - before - 1
                assert asked < 150, f"{asked} ReadIndex requests for 220 barriers"
                assert g._reads == {} and g._read_waiters == {}

    asyncio.run(main())


class FlakyKV(KVStateMachine):
    """A KV state machine whose ``apply`` raises on key ``fail_on`` (a full disk, a bug that
    strikes one replica): what the runtime does then is under test."""

    fail_on: str | None = None

    def apply(self, index: int, data: bytes) -> Any:
        if self.fail_on is not None and self.fail_on.encode() in data:
            raise OSError(f"no space left on device (entry {index})")
        return super().apply(index, data)


def test_an_apply_that_raises_stops_the_node_instead_of_skipping_the_entry(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A replica whose ``apply`` raises must not move its applied index past that entry
    (the others applied it: it would diverge); it stops, as etcd panics, with one clear
    line, and the rest of the group goes on."""

    async def main() -> None:
        net = LocalNetwork()
        hosts: dict[int, RaftHost] = {}
        try:
            for i in PEERS:
                hosts[i] = RaftHost(i, tmp_path / f"n{i}", lambda cb, i=i: net.add(i, cb))
                await hosts[i].start()
                hosts[i].open_group("g", FlakyKV(), PEERS)
            leader = await wait_leader(hosts)
            flaky = next(h for h in hosts.values() if h.groups["g"] is not leader)
            group = flaky.groups["g"]
            sm = group.sm
            assert isinstance(sm, FlakyKV)
            sm.fail_on = "boom"
            _, boom, _ = await leader.propose_entry(kv.put("boom", "1"))
            _, after, _ = await leader.propose_entry(kv.put("after", "2"))
            ready = flaky.tasks[1]
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5.0
            while not ready.done() and group.applied_index() < after and loop.time() < deadline:
                await asyncio.sleep(0.01)
            assert group.applied_index() < boom, "the failed entry counts as applied"
            assert sm.get("after") is None, "an entry after the failed one was applied"
            assert ready.done() and isinstance(ready.exception(), ApplyFailed)
            with pytest.raises(Unavailable, match="stopped"):
                await group.propose(kv.put("x", "y"), timeout=1.0)
            fatal = [r for r in caplog.records if r.levelno == logging.CRITICAL]
            assert len(fatal) == 1 and f"entry {boom}" in fatal[0].getMessage()
            assert "no space left" in fatal[0].getMessage()
            # the others go on: a majority is left
            assert await leader.propose(kv.put("later", "3")) is None
        finally:
            for h in hosts.values():
                await h.stop()

    asyncio.run(main())


# ---- lease reads (HostConfig.lease_reads, Raft dissertation §6.4.1): a leader holding its lease
# answers ReadIndex requests, its own and its followers', without a heartbeat round; it keeps
# its ticks current before judging the lease, and forgets the lease when its loop fell behind
# the clock (a stall, a freeze), so that it never counts time it did not see.


async def _until_lease(leader: RaftGroup, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not leader.node.raft._lease_valid():
        assert asyncio.get_running_loop().time() < deadline, "the leader never held its lease"
        await asyncio.sleep(0.005)


def test_lease_reads_make_no_heartbeat_round_and_see_every_acknowledged_write(
    tmp_path: Path,
) -> None:
    """Barriers one after another, on the leader and on a follower, each after a write was
    acknowledged: every one sees its write, and the leader's heartbeat rounds are only its
    periodic ones (one per ``heartbeat_tick``), not one per ReadIndex request."""

    async def main() -> None:
        net = LocalNetwork()
        config = HostConfig(lease_reads=True)
        async with cluster(tmp_path, net, config) as hosts:
            leader = await wait_leader(hosts)
            follower = next(h.groups["g"] for h in hosts.values() if h.groups["g"] is not leader)
            await leader.propose(kv.put("x", "start"))
            await _until_lease(leader)
            raft = leader.node.raft
            rounds, ticks, asked = raft.read_only.last_round(), raft.ticks_in_term, 0
            for i in range(40):
                for g in (leader, follower):
                    before = next(g._read_ids)
                    await leader.propose(kv.put("x", str(i)))
                    await g.read_barrier()
                    assert g.sm.get("x") == str(i)  # type: ignore[attr-defined]
                    asked += next(g._read_ids) - before - 1
            assert raft.term == leader.node.raft.term and leader.is_leader
            periodic = (raft.ticks_in_term - ticks) // config.heartbeat_tick
            made = raft.read_only.last_round() - rounds
            assert asked >= 80, asked
            assert made <= periodic + 2, f"{made} rounds for {asked} reads in {periodic} beats"

    asyncio.run(main())


def test_a_leader_whose_loop_fell_behind_forgets_its_lease(tmp_path: Path) -> None:
    """Ticks overdue by at most ``CATCH_UP_TICKS`` are delivered before the lease is judged;
    further behind (here the loop is blocked for 6 ticks, as a stalled or frozen process is),
    the lease is forgotten: ticks counted late would stretch it past what the followers
    promised. A read then waits for a heartbeat round, and the lease comes back after it."""

    async def main() -> None:
        net = LocalNetwork()
        config = HostConfig(lease_reads=True)
        period = config.tick_ms / 1000
        async with cluster(tmp_path, net, config) as hosts:
            leader = await wait_leader(hosts)
            await leader.propose(kv.put("x", "1"))
            await _until_lease(leader)
            raft = leader.node.raft

            ticks = raft.ticks_in_term
            time.sleep(1.5 * period)  # a short stall: the overdue ticks are caught up
            leader.host.keep_ticks_current()
            assert raft.ticks_in_term - ticks in range(1, CATCH_UP_TICKS + 1)
            assert raft._lease_valid()

            await _until_lease(leader)
            time.sleep(6 * period)  # blocks the loop: no tick, no message handled
            leader.host.keep_ticks_current()
            assert not raft._lease_valid()
            rounds = raft.read_only.last_round()
            await leader.read_barrier()
            assert raft.read_only.last_round() > rounds
            await _until_lease(leader)

    asyncio.run(main())


def test_under_leases_a_barrier_never_shares_a_request_judged_before_it_arrived(
    tmp_path: Path,
) -> None:
    """Under leases the leader judges a ReadIndex request when it is made (from its lease),
    not by a heartbeat round leaving later. Barriers of the same turn of the event loop (the
    items of one ``Batch`` call, which all arrived before it) share it; a barrier arriving
    later -- here after the loop was blocked between the lease's answer and its delivery, as
    a process frozen there is -- must not (though no round has been sent since: what lets
    barriers share a request without leases): it makes a request of its own, judged after
    the freeze, when the lease is forgotten. Sharing the first would return the index the
    lease gave before the freeze, which a leader elected meanwhile may have passed: the stale
    read a full run with leases on once caught (a cross-shard rename's target not found)."""

    async def main() -> None:
        net = LocalNetwork()
        config = HostConfig(lease_reads=True)
        period = config.tick_ms / 1000
        async with cluster(tmp_path, net, config) as hosts:
            leader = await wait_leader(hosts)
            await leader.propose(kv.put("x", "1"))
            await _until_lease(leader)
            raft = leader.node.raft
            loop = asyncio.get_running_loop()

            # the ready loop is busy elsewhere (a log write in flight, say): not woken now,
            # so the lease's answer waits in Raft for the next round to collect it
            wake, leader.host.wake = leader.host.wake, lambda group: None  # type: ignore[method-assign]
            try:
                first = leader._join_read()  # a barrier's request: answered by the lease at once
                assert [rs.context for rs in raft.read_states] == [first]
                assert leader._join_read() == first  # a barrier of the same turn shares it
                time.sleep(6 * period)  # frozen before the answer was delivered
                later: list[bytes] = []
                loop.call_soon(lambda: later.append(leader._join_read()))  # arriving after it
                await asyncio.sleep(0)
            finally:
                leader.host.wake = wake  # type: ignore[method-assign]
            assert later and later[0] != first, "a later barrier shared a request judged before"
            wake(leader)
            await leader.read_barrier()  # joins the later request (or one after it)

    asyncio.run(main())


def test_a_new_leader_answers_lead_only_once_its_state_holds_every_acknowledged_write(
    tmp_path: Path,
) -> None:
    """Right after an election the new leader may not have applied what its predecessor
    committed (it learns the commit only when an entry of its own term commits): a check on
    its state then (``AllocateBlock`` looking for the writer's file) found an acknowledged
    ``Create`` missing in a full run under heavy load. ``lead`` returns only once an entry of
    the leader's term is applied, with every write acknowledged before visible. The window
    in which a member is leader but has not applied an entry of its term is seen here on
    the handovers (``is_leader`` alone, what the handlers checked, is true in it)."""

    async def main() -> None:
        net = LocalNetwork()
        async with cluster(tmp_path, net, HostConfig()) as hosts:
            leader = await wait_leader(hosts)
            behind = 0
            for i in range(6):
                target = next(h.groups["g"] for h in hosts.values() if h.groups["g"] is not leader)
                write = asyncio.ensure_future(leader.propose(kv.put("x", str(i))))
                await write  # acknowledged by the old leader
                leader.transfer_leader(target.host.node_id)
                deadline = asyncio.get_running_loop().time() + 5
                while not target.is_leader:
                    assert asyncio.get_running_loop().time() < deadline, "no handover"
                    await asyncio.sleep(0)
                behind += not target.leader_caught_up()
                await target.lead()
                assert target.leader_caught_up()
                assert target.sm.get("x") == str(i)  # type: ignore[attr-defined]
                leader = target
            assert behind >= 1, "never saw a leader before it caught up: the test shows nothing"
            follower = next(h.groups["g"] for h in hosts.values() if h.groups["g"] is not leader)
            with pytest.raises(NotLeader):
                await follower.lead()

    asyncio.run(main())


def test_barriers_sharing_a_request_time_out_and_cancel_one_by_one(tmp_path: Path) -> None:
    """The barriers of one ReadIndex request wait as one batch with one timer, yet each keeps
    its own deadline: on a follower cut off from its leader, the barrier with the shortest
    timeout fails first, a cancelled one leaves the others waiting, and the last fails at its
    own deadline, not before; nothing of the batch is left behind. (Only the follower's
    requests are lost: no election fails the reads first.)"""

    async def main() -> None:
        net = LocalNetwork()
        async with cluster(tmp_path, net, HostConfig(quiesce_after_ticks=0)) as hosts:
            leader = await wait_leader(hosts)
            follower = next(h.groups["g"] for h in hosts.values() if h.groups["g"] is not leader)
            await leader.propose(kv.put("x", "1"))
            async with asyncio.timeout(5):
                while follower.leader_id != leader.host.node_id:
                    await asyncio.sleep(0.005)
            await follower.read_barrier()
            transport = follower.host.transport
            send = transport.send

            def lose_read_requests(group_id: str, m: Message) -> None:
                if m.type is not MessageType.READ_INDEX:
                    send(group_id, m)

            transport.send = lose_read_requests  # type: ignore[method-assign]
            loop = asyncio.get_running_loop()
            started = loop.time()
            short = asyncio.ensure_future(follower.read_barrier(0.1))
            cancelled = asyncio.ensure_future(follower.read_barrier(2.0))
            long = asyncio.ensure_future(follower.read_barrier(0.5))
            with pytest.raises(Unavailable):
                await short
            assert not long.done() and not cancelled.done()
            cancelled.cancel()
            await asyncio.sleep(0)
            assert not long.done()
            with pytest.raises(Unavailable):
                await long
            assert loop.time() - started >= 0.5
            assert follower._reads == {} and follower._read_batches == {}

    asyncio.run(main())
