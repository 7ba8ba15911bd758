"""``keelfs admin`` against a real co-hosted cluster (3 processes, each a member of the config
group and of shard-1, plus one chunk server), through click's CliRunner: status, leadership
transfer and step-down, a membership round trip, online add/remove of a shard, format of a data
directory, fsck and report, and the one-line errors for a wrong group, node or address."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from keelfs.cli.main import cli
from keelfs.client._core import Op, Route
from keelfs.datapath.client import ChunkClient
from keelfs.rpc.pb import meta_pb2 as pb
from keelfs.server.metacluster import MetaCluster
from keelfs.testing.tiers import starts_processes

pytestmark = [pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
@starts_processes
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Any:
    c = MetaCluster(tmp_path_factory.mktemp("admin"), shards=("shard-1",))
    with c:
        c.start_chunk_servers(1, "--no-fsync-on-close")
        yield c


def admin(cluster: MetaCluster | None, *args: str, node: int = 2) -> Result:
    extra = ["--address", cluster.nodes[node].client_address] if cluster is not None else []
    return CliRunner().invoke(cli, ["admin", *args, *extra])


def admin_json(cluster: MetaCluster, *args: str) -> dict[str, Any]:
    r = admin(cluster, *args, "--json")
    assert r.exit_code == 0, r.output
    out: dict[str, Any] = json.loads(r.output.strip().splitlines()[-1])
    return out


def one_line_error(r: Result, code: int, *words: str) -> None:
    assert r.exit_code == code, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1, r.output
    assert lines[0].startswith("keelfs admin: ")
    for w in words:
        assert w in lines[0], lines[0]


def test_status_shows_every_group_and_its_leader(cluster: MetaCluster) -> None:
    st = admin_json(cluster, "status")
    for group in ("config", "shard-1"):
        g = st["groups"][group]
        assert g["leader"] == cluster.leader(group)
        assert g["voters"] == [1, 2, 3]
        assert g["members"][str(g["leader"])]["role"] == "leader"
        assert all(m["lag"] is not None for m in g["members"].values())
    (server,) = st["chunk_servers"].values()
    assert server["live"]
    human = admin(cluster, "status")
    assert human.exit_code == 0, human.output
    assert "shard-1" in human.output and "leader" in human.output


def test_transfer_leader_then_step_down(cluster: MetaCluster) -> None:
    old = cluster.leader("shard-1")
    target = next(i for i in (1, 2, 3) if i != old)
    r = admin_json(cluster, "transfer-leader", "shard-1", "--to", str(target))
    assert r["leader"] == target
    assert admin_json(cluster, "status")["groups"]["shard-1"]["leader"] == target
    r = admin_json(cluster, "step-down", "shard-1")
    assert r["previous"] == target and r["leader"] != target
    assert admin_json(cluster, "status")["groups"]["shard-1"]["leader"] == r["leader"]
    # the config group too, asked through another node
    old = cluster.leader("config")
    r = admin_json(cluster, "step-down", "config")
    assert r["leader"] != old == r["previous"]


def test_remove_and_add_member_round_trip(cluster: MetaCluster) -> None:
    lead = cluster.leader("shard-1")
    node = next(i for i in (3, 2, 1) if i != lead)
    raft = cluster.nodes[node].raft_address
    r = admin_json(cluster, "remove-member", "shard-1", str(node))
    assert node not in r["voters"] and len(r["voters"]) == 2
    st = admin_json(cluster, "status")["groups"]["shard-1"]
    assert node not in st["voters"]
    assert node not in cluster.admin().shard_map().shards["shard-1"]
    r = admin_json(cluster, "add-member", "shard-1", str(node), raft)
    assert r["voters"] == [1, 2, 3] and r["learners"] == []
    assert sorted(cluster.admin().shard_map().shards["shard-1"]) == [1, 2, 3]
    fs = cluster.client()
    fs.mkdir("/after-membership", parents=True)
    assert fs.exists("/after-membership")


def test_a_new_master_joins_a_shard(cluster: MetaCluster) -> None:
    """A brand-new master (empty data directory, ``--join``) becomes a voter of shard-1 with
    add-member, catches up, and leaves again with remove-member."""
    spec = cluster.add_master(4, "shard-1", "--join")
    cluster._spawn(4, [])
    cluster._await_ready(4)
    fs = cluster.client()
    fs.mkdir("/before-join", parents=True)
    r = admin_json(cluster, "add-member", "shard-1", "4", spec.raft_address)
    assert 4 in r["voters"]
    assert 4 in cluster.admin().shard_map().shards["shard-1"]
    cluster.wait_for(
        lambda: (
            cluster.status(4).groups["shard-1"].applied
            >= cluster.status(cluster.leader("shard-1")).groups["shard-1"].commit
        ),
        30,
        "the new member did not catch up",
    )
    r = admin_json(cluster, "remove-member", "shard-1", "4")
    assert r["voters"] == [1, 2, 3]
    cluster.kill9(4)


def test_wrong_group_node_or_address_is_one_clear_line(
    cluster: MetaCluster, tmp_path: Path
) -> None:
    one_line_error(admin(cluster, "transfer-leader", "shard-9"), 2, "unknown group", "shard-9")
    one_line_error(
        admin(cluster, "transfer-leader", "shard-1", "--to", "7"), 2, "node 7", "not a voter"
    )
    one_line_error(admin(cluster, "remove-member", "shard-1", "7"), 2, "node 7", "not a member")
    one_line_error(admin(cluster, "remove-shard", "shard-9"), 2, "unknown shard", "shard-9")
    one_line_error(
        admin(cluster, "add-shard", "shard-9", "--members", "7,8,9"), 2, "node 7", "registered"
    )
    one_line_error(admin(cluster, "add-member", "shard-1", "7", "nowhere"), 2, "HOST:PORT")
    r = CliRunner().invoke(cli, ["admin", "status", "--address", "127.0.0.1:1"])
    one_line_error(r, 1, "127.0.0.1:1")


def test_admin_takes_an_address_list_as_the_file_commands_do(cluster: MetaCluster) -> None:
    seeds = f"127.0.0.1:1,{cluster.nodes[2].client_address}"  # the first that answers is used
    for command in (["admin", "status", "--json"], ["ls", "/"]):
        r = CliRunner().invoke(cli, [*command, "--address", seeds])
        assert r.exit_code == 0, r.output


def test_format_refuses_existing_data_without_force(cluster: MetaCluster, tmp_path: Path) -> None:
    fresh = tmp_path / "new" / "n9"
    assert admin(None, "format", str(fresh)).exit_code == 0
    assert fresh.is_dir()
    (fresh / "raft").mkdir()
    (fresh / "raft" / "CURRENT").write_text("x")
    one_line_error(admin(None, "format", str(fresh)), 2, str(fresh), "Raft state", "--force")
    assert (fresh / "raft" / "CURRENT").exists()
    r = CliRunner().invoke(cli, ["admin", "format", str(fresh), "--force", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["erased"] == ["raft"]
    assert list(fresh.iterdir()) == []
    # a running node's directory is never erased
    live = cluster.nodes[1].data_dir
    one_line_error(admin(None, "format", str(live), "--force"), 2, "in use")
    assert (live / "raft").is_dir()
    one_line_error(admin(None, "format", __file__), 2, "not a directory")


def _write(cluster: MetaCluster, path: str, data: bytes) -> None:
    """One block through the raw RPCs (AllocateBlock, the chunk pipeline, Complete)."""
    fs = cluster.client()
    info = fs.create(path, replication=1, block_size=1 << 20)
    sid = info.lease_holder

    def op(method: str, build: Any) -> Op:
        return Op("Namespace", method, Route("entry", path), build, True, True, sid)

    reply = fs._run(
        op("AllocateBlock", lambda h: pb.AllocateBlockRequest(header=h, path=path)), None
    )
    block = reply.block
    with ChunkClient() as chunks:
        chunks.write_block(
            [loc.address for loc in block.locations],
            block.block_id,
            block.gen_stamp,
            data,
            reply.shard,
            reply.epoch,
            token=block.token,
        )
    fs._run(
        op("Complete", lambda h: pb.CompleteRequest(header=h, path=path, last_length=len(data))),
        None,
    )


def test_fsck_and_report(cluster: MetaCluster) -> None:
    fs = cluster.client()
    fs.mkdir("/data/sub", parents=True)
    _write(cluster, "/data/sub/a", b"a" * 5000)
    fs.create("/data/empty", replication=1)
    fs.complete("/data/empty")
    r = admin_json(cluster, "fsck", "/data")
    assert r["healthy"] and r["files"] == 2 and r["blocks"] == 1
    assert r["missing"] == r["under_replicated"] == 0
    human = admin(cluster, "fsck")
    assert human.exit_code == 0 and "HEALTHY" in human.output
    fs.set_replication("/data/sub/a", 2)  # one chunk server: cannot be met
    r = admin_json(cluster, "fsck", "/data")
    assert r["healthy"] and r["under_replicated"] == 1
    assert r["problems"][0]["path"] == "/data/sub/a"
    rep = admin_json(cluster, "report")
    assert len(rep["live"]) == 1 and rep["dead"] == []
    assert rep["capacity"] > 0 and rep["blocks_with_replicas"] >= 1
    # the shard leader's next walk counts the block that cannot get its second replica
    cluster.wait_for(
        lambda: admin_json(cluster, "report")["under_replicated"] >= 1, 20, "not counted"
    )
    assert admin_json(cluster, "report")["missing"] == 0
    assert admin(cluster, "report").exit_code == 0
    one_line_error(admin(cluster, "fsck", "/nope"), 1, "/nope")


def test_add_and_remove_shard_online(cluster: MetaCluster) -> None:
    fs = cluster.client()
    for i in range(20):
        fs.mkdir(f"/spread/d{i}", parents=True)
    ids = cluster.start_shard("shard-2")
    r = admin_json(cluster, "add-shard", "shard-2", "--members", ",".join(map(str, ids)))
    assert r["members"] == ids
    assert not cluster.admin().shard_map().resharding
    st = admin_json(cluster, "status")
    assert st["groups"]["shard-2"]["leader"] in ids
    one_line_error(admin(cluster, "add-shard", "shard-2", "--members", "1"), 2, "already exists")
    admin_json(cluster, "remove-shard", "shard-2")
    assert sorted(cluster.admin().shard_map().shards) == ["shard-1"]
    assert len(list(fs.ls("/spread"))) == 20
