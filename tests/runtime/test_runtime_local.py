"""The runtime on three hosts in one process (RocksDB on disk, in-process network)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from keelfs.errors import NotLeader, Unavailable
from keelfs.runtime import HostConfig, RaftGroup, RaftHost, kv
from keelfs.runtime.group import ApplyFailed
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
    acknowledged in between are still seen by every barrier asked for after them."""

    async def main() -> None:
        net = LocalNetwork()
        async with cluster(tmp_path, net) as hosts:
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
