"""One role per process, as in production: 3 config servers and 3 masters for each of 2 shards
(9 processes). Here a master really lacks the other shard, so a request sent to the wrong shard
gets REDIRECT naming the owner; a client with a wrong map still succeeds; losing a shard
leader or the config leader stops nothing."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from helpers import RawError, call_raw, stub

from keelfs.errors import Redirect
from keelfs.meta.shardmap import ShardMap
from keelfs.rpc.pb import meta_pb2 as pb
from keelfs.server.metacluster import MetaCluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]


def test_one_role_per_process(make_cluster: Callable[..., MetaCluster]) -> None:
    cluster = make_cluster(layout="separate")
    assert cluster.members("config") == [1, 2, 3]
    assert cluster.members("shard-1") == [11, 12, 13]
    assert cluster.members("shard-2") == [21, 22, 23]
    fs = cluster.client()
    m = fs.shard_map()
    for shard in ("shard-1", "shard-2"):
        assert sorted(m.shards[shard].values()) == sorted(
            cluster.nodes[i].client_address for i in cluster.members(shard)
        )
    assert fs.mkdir("/sep/a/b/c", parents=True) == ["/sep", "/sep/a", "/sep/a/b", "/sep/a/b/c"]
    for i in range(20):
        fs.create(f"/sep/a/f{i}")
    assert len(list(fs.ls("/sep/a"))) == 21

    owner = m.shard_for_path("/sep/a/f0")
    wrong = next(s for s in m.shards if s != owner)
    ns = stub(cluster, cluster.members(wrong)[0])
    with pytest.raises(RawError) as err:
        call_raw(ns.GetFileInfo, pb.GetFileInfoRequest(path="/sep/a/f0"))
    redirect = err.value.keel
    assert isinstance(redirect, Redirect) and redirect.shard_id == owner
    assert redirect.map_version == m.version
    assert sorted(redirect.details["addresses"].values()) == sorted(m.shards[owner].values())

    lost = cluster.client()
    swapped = ShardMap(m.version, {owner: m.shards[wrong], wrong: m.shards[owner]}, m.vnodes)
    with lost._core._lock:
        lost._core._map = swapped  # same version, wrong members: every request misrouted
    assert lost.stat("/sep/a/f0").path == "/sep/a/f0"
    lost.create("/sep/a/g")
    assert lost.stats["redirects"] >= 1 and lost._core.shard_map == m

    victim = cluster.leader(owner)
    cluster.kill9(victim)
    fs.create("/sep/a/after-shard-leader")
    assert len(list(fs.ls("/sep/a"))) == 23
    cfg = cluster.leader("config")
    cluster.kill9(cfg)
    fresh = cluster.client([a for i, a in enumerate(cluster.config_addresses, 1) if i != cfg])
    assert fresh.shard_map().version == m.version
    fresh.create("/sep/a/after-config-leader")
    assert {e.name for e in fresh.ls("/sep/a")} >= {f"f{i}" for i in range(20)}
    cluster.restart(victim)
    cluster.restart(cfg)
    assert cluster.leader("config") and cluster.leader(owner)
    assert cluster.terminate(victim) == 0  # SIGTERM: a clean stop
