"""Routing answers of the metadata services: NOT_LEADER hints, follower reads, REDIRECTs for
stale maps, and the config service (FetchShardMap's cheap form, the node registry)."""

from __future__ import annotations

from functools import partial

import grpc
import pytest
from helpers import RawError, call_raw, header, stub

from keelfs.errors import NotLeader, Redirect, Unavailable
from keelfs.rpc.pb import meta_pb2 as pb
from keelfs.server.metacluster import MetaCluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def test_a_follower_refuses_writes_naming_the_leader(shared_cluster: MetaCluster) -> None:
    fs = shared_cluster.client()
    fs.mkdir("/route")
    shard = fs.shard_map().shard_for_path("/route/a")
    leader = shared_cluster.leader(shard)
    follower = next(i for i in shared_cluster.members(shard) if i != leader)
    ns = stub(shared_cluster, follower)
    with pytest.raises(RawError) as err:
        call_raw(ns.Mkdir, pb.MkdirRequest(path="/route/a"))
    assert err.value.status is grpc.StatusCode.FAILED_PRECONDITION
    hint = err.value.keel
    assert isinstance(hint, NotLeader) and hint.details["group_id"] == shard
    assert hint.leader_id == leader
    assert hint.leader_address == shared_cluster.nodes[leader].client_address
    assert not fs.exists("/route/a")  # not applied
    cfg_leader = shared_cluster.leader("config")
    cfg = stub(shared_cluster, next(i for i in (1, 2, 3) if i != cfg_leader), "Config")
    with pytest.raises(RawError) as err2:
        call_raw(cfg.RemoveShard, pb.RemoveShardRequest(shard_id="shard-9"))
    hint2 = err2.value.keel
    assert isinstance(hint2, NotLeader) and hint2.leader_id == cfg_leader
    assert hint2.leader_address == shared_cluster.nodes[cfg_leader].client_address


def test_followers_serve_linearizable_and_stale_reads(shared_cluster: MetaCluster) -> None:
    fs = shared_cluster.client()
    fs.mkdir("/reads")
    shard = fs.shard_map().shard_for_path("/reads/x")
    leader = shared_cluster.leader(shard)
    for i in range(5):
        fs.create(f"/reads/f{i}")
        for node in shared_cluster.members(shard):
            if node == leader:
                continue
            ns = stub(shared_cluster, node)
            # linearizable (the default): a ReadIndex barrier on the follower itself
            got = call_raw(ns.GetFileInfo, pb.GetFileInfoRequest(path=f"/reads/f{i}"))
            assert got.info.path == f"/reads/f{i}" and not got.reply.leader
            listing = call_raw(ns.ListDir, pb.ListDirRequest(path="/reads"))
            assert len(listing.entries) == i + 1

    def stale_listing_caught_up(node: int) -> bool:
        ns = stub(shared_cluster, node)
        stale = call_raw(ns.ListDir, pb.ListDirRequest(path="/reads", stale_ok=True))
        assert len(stale.entries) <= 5  # never more than exists
        return len(stale.entries) == 5

    for node in shared_cluster.members(shard):
        shared_cluster.wait_for(
            partial(stale_listing_caught_up, node), 10, f"node {node}'s stale read lags"
        )


def test_stale_and_future_map_versions(shared_cluster: MetaCluster) -> None:
    fs = shared_cluster.client()
    version = fs.shard_map().version
    shard = fs.shard_map().shard_for_path("/x")
    ns = stub(shared_cluster, shared_cluster.leader(shard))
    ok = call_raw(
        ns.GetFileInfo, pb.GetFileInfoRequest(header=header(map_version=version), path="/")
    )
    assert ok.info.path == "/"
    with pytest.raises(RawError) as err:
        call_raw(
            ns.GetFileInfo, pb.GetFileInfoRequest(header=header(map_version=version - 1), path="/x")
        )
    redirect = err.value.keel
    assert isinstance(redirect, Redirect)
    assert redirect.map_version == version and redirect.shard_id == shard
    assert sorted(redirect.details["addresses"].values()) == sorted(
        shared_cluster.nodes[i].client_address for i in shared_cluster.members(shard)
    )
    with pytest.raises(RawError) as err2:  # a version nobody has: the master asks, then says so
        call_raw(
            ns.GetFileInfo,
            pb.GetFileInfoRequest(header=header(map_version=version + 50), path="/x"),
        )
    assert isinstance(err2.value.keel, Unavailable)


def test_config_service(shared_cluster: MetaCluster) -> None:
    fs = shared_cluster.client()
    m = fs.shard_map()
    assert fs.fetch_shard_map(since_version=m.version) is None  # the cheap poll
    fetched = fs.fetch_shard_map(since_version=m.version - 1)
    assert fetched is not None and fetched[0] == m
    nodes = fetched[1]
    assert {nodes[i] for i in (1, 2, 3)} == set(shared_cluster.config_addresses)
    for node in (1, 2, 3):  # any member answers, linearizably or from its own state
        cfg = stub(shared_cluster, node, "Config")
        for stale in (False, True):
            reply = call_raw(cfg.FetchShardMap, pb.FetchShardMapRequest(stale_ok=stale))
            assert reply.map.version == m.version and sorted(reply.config_members) == [1, 2, 3]
    fs.register_master(42, "127.0.0.1:1")  # the registry is not the map
    assert fs.shard_map().version == m.version and fs.nodes()[42] == "127.0.0.1:1"
    # adding and removing shards (which changes the map) is tests/master/test_resharding.py's


def test_node_status(shared_cluster: MetaCluster) -> None:
    st = shared_cluster.status(1)
    assert st.id == 1 and st.config_member and st.shards == ["shard-1", "shard-2"]
    assert set(st.groups) == {"config", "shard-1", "shard-2"}
    assert st.registered and st.map_version >= 2


def test_node_status_is_typed_with_each_members_progress_on_the_leader(
    shared_cluster: MetaCluster,
) -> None:
    """``Node.Status`` answers messages: a leader reports every member's progress and its lag
    (the leader's last index minus the member's match), a follower reports none."""
    leader = shared_cluster.leader("shard-1")
    g = shared_cluster.status(leader).groups["shard-1"]
    assert g.state == "leader" and g.leader == leader and g.commit <= g.last_index
    assert set(g.progress) == {*g.voters, *g.learners} and set(g.members) >= set(g.voters)
    for node_id, p in g.progress.items():
        assert p.state in ("probe", "replicate", "snapshot") and p.next > p.match
        assert p.lag == g.last_index - p.match, (node_id, p)
    assert g.progress[leader].lag == 0
    for other in (i for i in g.voters if i != leader):
        f = shared_cluster.status(other).groups["shard-1"]
        assert f.state != "leader" and not f.progress, (other, f)
