"""The client library against real processes: any config address is enough, wrong caches are
corrected, the async twin has the same verbs, and one client is safe to share by threads."""

from __future__ import annotations

import asyncio
import threading

import pytest

from keelfs.client import AsyncClient, Client
from keelfs.errors import AlreadyExists, InvalidArgument, NotFound
from keelfs.meta.shardmap import ShardMap
from keelfs.server.metacluster import MetaCluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def test_one_follower_config_address_is_enough(cluster: MetaCluster) -> None:
    follower = cluster.follower("config")
    with Client(cluster.nodes[follower].client_address, tls=cluster.client_tls) as fs:
        fs.mkdir("/via-follower/a", parents=True)
        fs.create("/via-follower/a/f")
        assert [e.name for e in fs.ls("/via-follower/a")] == ["f"]
        with pytest.raises(NotFound):
            fs.remove_shard("shard-9")  # a config WRITE: reached the leader through the hint
        version = fs.shard_map().version
        as_77 = cluster.master_tls(77)  # only a master registers, itself
        with Client(cluster.nodes[follower].client_address, tls=as_77) as master:
            assert master.register_master(77, "127.0.0.1:1") == version  # another write, same way
        assert fs.fetch_shard_map()[1][77] == "127.0.0.1:1"
        assert set(fs._core.config_addresses) == set(cluster.config_addresses)


def test_wrong_leader_and_old_wrong_map_are_corrected(cluster: MetaCluster) -> None:
    fs = cluster.client()
    fs.mkdir("/fix")
    m = fs.shard_map()
    shard = m.shard_for_path("/fix/f")
    leader = cluster.leader(shard)
    follower = next(i for i in cluster.members(shard) if i != leader)
    # a stale leader belief: the follower answers NOT_LEADER with the hint, followed at once
    fs._core._learn_leader(shard, cluster.nodes[follower].client_address)
    retries = fs.stats["retries"]
    fs.create("/fix/f")
    assert fs.stats["retries"] > retries
    assert fs._core.leader(shard) == cluster.nodes[leader].client_address
    # an older map that routes everything to the wrong shard: REDIRECT, refresh, retry
    (a, b) = sorted(m.shards)
    swapped = ShardMap(m.version - 1, {a: m.shards[b], b: m.shards[a]}, m.vnodes)
    with fs._core._lock:
        fs._core._map = swapped
    redirects = fs.stats["redirects"]
    assert fs.stat("/fix/f").path == "/fix/f"
    fs.create("/fix/g")
    assert fs.stats["redirects"] > redirects
    assert fs._core.shard_map == m


def test_async_client_has_every_verb(cluster: MetaCluster) -> None:
    async def main() -> None:
        async with AsyncClient(cluster.config_addresses, tls=cluster.client_tls) as fs:
            assert await fs.format() is False
            assert await fs.mkdir("/async/d", parents=True) == ["/async", "/async/d"]
            info = await fs.create("/async/d/f", replication=2)
            assert info.under_construction
            assert not (await fs.complete("/async/d/f")).under_construction
            assert (await fs.stat("/async/d/f")).replication == 2
            assert await fs.exists("/async/d/f") and not await fs.exists("/async/nope")
            names = [e.name async for e in fs.ls("/async/d", page_size=1)]
            assert names == ["f"]
            assert (await fs.set_replication("/async/d/f", 4)).replication == 4
            assert (await fs.set_times("/async/d/f", mtime=5)).mtime == 5
            assert (await fs.chmod("/async/d/f", 0o600)).mode == 0o600
            assert (await fs.chown("/async/d/f", "ann", "ops")).owner == "ann"
            await fs.rename("/async/d/f", "/async/d/g")
            assert (await fs.du("/async")).file_count == 1
            with pytest.raises(AlreadyExists):
                await fs.mkdir("/async/d")
            with pytest.raises(InvalidArgument):
                await fs.chmod("/async/d/g", 0o10000)
            assert (await fs.delete("/async/d/g")).files == 1
            assert (await fs.shard_map()).version >= 2
            assert await fs.keep_alive() >= 1
            st = await fs.status(cluster.config_addresses[0])
            assert st.id in (1, 2, 3)

    asyncio.run(main())


def test_one_client_shared_by_threads(cluster: MetaCluster) -> None:
    fs = cluster.client(max_sessions=4)
    fs.mkdir("/threads")
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(15):
                fs.create(f"/threads/t{t}-{i}")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    assert len(list(fs.ls("/threads"))) == 120
    shard = fs.shard_map().shard_for_path("/threads/x")
    assert len(fs._core.pool(shard)) <= 4  # 8 threads, at most 4 sessions, each used serially
