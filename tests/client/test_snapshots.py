"""Snapshots on real processes (2 shards on 3 masters, 4 chunk servers): files put, a
snapshot taken of a tree spanning both shards, then deleted, overwritten, truncated, appended
and renamed across shards and deleted there; the old bytes read back from ``.snapshot`` with
the same MD5 while the deleted control file's replicas are gone from disk; the diff; writes
under ``.snapshot`` refused; the CLI; the shard leader killed (-9) in the middle of a create;
all masters restarted. (No TLS, like the quota commands' test: the CLI's identity is the
masters' OS user, a superuser.)"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from keelfs.cli.main import cli
from keelfs.client import AsyncClient
from keelfs.errors import AlreadyExists, InvalidArgument, InvalidPath, KeelError, NotFound
from keelfs.server.metacluster import MetaCluster
from keelfs.testing.tiers import starts_processes

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

BS = 64 * 1024


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.fixture(scope="module")
@starts_processes
def snap_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MetaCluster, Any]]:
    c = MetaCluster(
        tmp_path_factory.mktemp("snap"), node_args=("--chunk-dead-after", "2"), tls=False
    )
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("KEELFS_FAILPOINTS", "")  # the masters accept Node.SetFailpoint
            c.start()
        servers = c.start_chunk_servers(4, "--no-fsync-on-close")
        yield c, servers
    except BaseException:
        for node_id in sorted(c.nodes):
            print(f"----- node {node_id} log (tail) -----\n{c.log_tail(node_id, 30)}")
        raise
    finally:
        c.stop_all()


def write(fs: Any, path: str, data: bytes) -> None:
    with fs.open(path, "wb", block_size=BS) as f:
        f.write(data)


def two_shard_dirs(fs: Any, root: str) -> tuple[str, str]:
    """Two directories under ``root`` whose entries are on different shards."""
    m = fs.shard_map()
    first = f"{root}/d0"
    there = next(
        f"{root}/d{i}"
        for i in range(1, 80)
        if m.shard_for_path(f"{root}/d{i}/x") != m.shard_for_path(f"{first}/x")
    )
    return first, there


def replicas_on_disk(servers: Any, block_ids: set[int]) -> int:
    return sum(
        1
        for i in range(4)
        for b in block_ids
        for f in servers.data_dir(i).rglob(f"blk_{b}_*.data")
        if f.is_file()
    )


def test_old_bytes_read_back_from_the_snapshot(snap_cluster: Any) -> None:
    c, servers = snap_cluster
    fs = c.client()
    here, there = two_shard_dirs(fs, "/sa")
    for d in (here, there):
        fs.mkdir(d, parents=True)
    data = {
        f"{here}/deleted": os.urandom(3 * BS + 100),
        f"{here}/overwritten": os.urandom(2 * BS + 5),
        f"{there}/truncated": os.urandom(3 * BS + 7),
        f"{there}/appended": os.urandom(BS + 1),
        f"{here}/moved": os.urandom(2 * BS),
        f"{there}/small": b"inline bytes",
    }
    for path, content in data.items():
        write(fs, path, content)
    # a file outside the snapshot on each shard: its deletion shows the deletions ran there
    m = fs.shard_map()
    controls = [
        next(
            f"/ctl{i}/c"
            for i in range(200)
            if m.shard_for_path(f"/ctl{i}/c") == m.shard_for_path(f"{d}/x")
        )
        for d in (here, there)
    ]
    for path in controls:
        fs.mkdir(path.rsplit("/", 1)[0], parents=True)
        write(fs, path, os.urandom(2 * BS))
    control = {b.block_id for p in controls for b in fs.stat(p).blocks}
    fs.allow_snapshot("/sa")
    assert fs.create_snapshot("/sa", "s1") == "/sa/.snapshot/s1"
    for path in controls:
        fs.delete(path)
    moved_to = f"{there}/moved-here"
    fs.delete(f"{here}/deleted")
    fs.write_bytes(f"{here}/overwritten", b"new", overwrite=True)
    fs.truncate(f"{there}/truncated", BS + 100)  # inside a block: copy-on-truncate
    with fs.open(f"{there}/appended", "ab") as f:
        f.write(b"more")
    fs.rename(f"{here}/moved", moved_to)  # to the other shard, then deleted there
    fs.delete(moved_to)
    fs.delete(f"{there}/small")

    # the deletions run (the control file's replicas go) while the snapshot's stay
    c.wait_for(lambda: replicas_on_disk(servers, control) == 0 or None, 60, "control deleted")
    snap_blocks = {
        b.block_id for p in data for b in fs.stat(p.replace("/sa/", "/sa/.snapshot/s1/", 1)).blocks
    }
    assert replicas_on_disk(servers, snap_blocks) >= len(snap_blocks)
    for path, content in data.items():
        old = path.replace("/sa/", "/sa/.snapshot/s1/", 1)
        assert md5(fs.read_bytes(old)) == md5(content), old
        assert fs.stat(old).length == len(content)
    names = {e.name for e in fs.ls(f"/sa/.snapshot/s1/{here.rsplit('/', 1)[1]}")}
    assert names == {"deleted", "overwritten", "moved"}
    assert [s.name for s in fs.list_snapshots("/sa")] == ["s1"]
    assert fs.list_snapshots("/sa")[0].complete
    assert "/sa" in fs.snapshottable_directories()

    diff = fs.snapshot_diff("/sa", "s1", ".")
    kinds = {(e["type"], e["path"]) for e in diff}
    rel = here[len("/sa") :]
    assert ("-", f".{rel}/deleted") in kinds and ("M", f".{rel}/overwritten") in kinds
    assert ("M", f".{there[len('/sa') :]}/truncated") in kinds

    # writes under .snapshot and the reserved name are refused
    with pytest.raises(InvalidPath, match="read-only"):
        fs.write_bytes("/sa/.snapshot/s1/new", b"x")
    with pytest.raises(InvalidPath):
        fs.delete(f"/sa/.snapshot/s1{rel}/overwritten")
    with pytest.raises(InvalidPath):
        fs.mkdir("/sa/.snapshot")
    # the directory cannot go while it has snapshots
    with pytest.raises(InvalidArgument, match="has snapshots"):
        fs.rename("/sa", "/sa-elsewhere")
    with pytest.raises(InvalidArgument, match="has snapshots"):
        fs.delete("/sa", recursive=True)
    with pytest.raises(InvalidArgument):
        fs.disallow_snapshot("/sa")
    with pytest.raises(AlreadyExists):
        fs.create_snapshot("/sa", "s1")

    fs.delete_snapshot("/sa", "s1")
    assert fs.list_snapshots("/sa") == []
    with pytest.raises(NotFound):
        fs.stat(f"/sa/.snapshot/s1{rel}/deleted")
    with pytest.raises(InvalidArgument, match="is snapshottable"):
        fs.rename("/sa", "/sa-elsewhere")
    fs.disallow_snapshot("/sa")
    fs.rename("/sa", "/sa-elsewhere")


def test_the_asyncio_client_and_fsspec(snap_cluster: Any) -> None:
    c, _ = snap_cluster
    fs = c.client()
    fs.mkdir("/sb", parents=True)
    write(fs, "/sb/f", b"a" * (BS + 3))
    fs.allow_snapshot("/sb")

    async def main() -> tuple[str, bytes, list[str]]:
        async with AsyncClient(c.config_addresses, tls=c.client_tls) as afs:
            path = await afs.create_snapshot("/sb")
            await afs.delete("/sb/f")
            names = [s.name for s in await afs.list_snapshots("/sb")]
            return path, await afs.read_bytes(f"{path}/f"), names

    path, content, names = asyncio.run(main())
    assert content == b"a" * (BS + 3) and path.startswith("/sb/.snapshot/s")
    assert names == [path.rsplit("/", 1)[1]]

    from keelfs.fsspec import KeelFileSystem

    kfs = KeelFileSystem(c.config_addresses[0], skip_instance_cache=True)
    try:
        assert kfs.cat_file(f"{path}/f") == content
        assert [p.rsplit("/", 1)[1] for p in kfs.ls(path, detail=False)] == ["f"]
        assert kfs.info(f"{path}/f")["size"] == BS + 3
        with pytest.raises((InvalidPath, OSError)):
            kfs.pipe_file(f"{path}/g", b"x")
    finally:
        kfs.close()


def test_the_cli(snap_cluster: Any, tmp_path: Any) -> None:
    c, _ = snap_cluster
    fs = c.client()
    fs.mkdir("/sc", parents=True)
    fs.write_bytes("/sc/f", b"one")

    def run(*args: str) -> str:
        r = CliRunner().invoke(cli, [*args, "--address", c.nodes[1].client_address])
        assert r.exit_code == 0, r.output
        return r.output

    assert "succeeded" in run("admin", "allow-snapshot", "/sc")
    assert "/sc" in run("snapshot", "list").split()
    assert "Created snapshot /sc/.snapshot/c1" in run("snapshot", "create", "/sc", "c1")
    fs.write_bytes("/sc/f", b"two", overwrite=True)
    fs.write_bytes("/sc/g", b"new")
    out = run("snapshot", "diff", "/sc", "c1", ".")
    assert "M\t./f" in out and "+\t./g" in out
    assert run("cat", "/sc/.snapshot/c1/f") == "one"
    assert run("ls", "/sc/.snapshot/c1").split() == ["f"]
    listed = json.loads(run("snapshot", "list", "/sc", "--json"))["snapshots"]
    assert [s["name"] for s in listed] == ["c1"] and listed[0]["complete"]
    local = tmp_path / "x"
    local.write_bytes(b"x")
    address = c.nodes[1].client_address
    bad = CliRunner().invoke(cli, ["put", str(local), "/sc/.snapshot/c1/x", "--address", address])
    assert bad.exit_code == 1 and "read-only" in bad.output
    bad = CliRunner().invoke(cli, ["admin", "disallow-snapshot", "/sc", "--address", address])
    assert bad.exit_code == 1 and "snapshot" in bad.output
    assert "Renamed to /sc/.snapshot/c2" in run("snapshot", "rename", "/sc", "c1", "c2")
    assert run("cat", "/sc/.snapshot/c2/f") == "one"
    bad = CliRunner().invoke(cli, ["cat", "/sc/.snapshot/c1/f", "--address", address])
    assert bad.exit_code == 1
    run("snapshot", "create", "/sc", "c3")
    bad = CliRunner().invoke(cli, ["snapshot", "rename", "/sc", "c2", "c3", "--address", address])
    assert bad.exit_code == 1 and "already" in bad.output
    run("snapshot", "delete", "/sc", "c3")
    run("snapshot", "delete", "/sc", "c2")
    assert run("snapshot", "list", "/sc") == ""
    run("admin", "disallow-snapshot", "/sc")


def test_the_shard_leader_killed_during_create(snap_cluster: Any) -> None:
    """The master serving a create (the leader of the directory's entry's shard, which every
    process co-hosts) dies (as kill -9) right after the first shard took its part: the
    client's retry reaches another master, whose create finishes the snapshot (the shard
    that has its part keeps it); a snapshot is listed complete only when whole, and its
    files read back from every shard."""
    c, _ = snap_cluster
    fs = c.client(deadline=60.0)
    here, there = two_shard_dirs(fs, "/sk")
    contents: dict[str, bytes] = {}
    for d in (here, there):
        fs.mkdir(d, parents=True)
        for i in range(20):
            contents[f"{d}/f{i}"] = os.urandom(100 + i)
            fs.write_bytes(f"{d}/f{i}", contents[f"{d}/f{i}"])
    fs.allow_snapshot("/sk")
    victim = c.leader(fs.shard_map().shard_for_path("/sk"))
    c.set_failpoint(victim, "snapshot.part_taken", "crash")
    try:
        try:
            fs.create_snapshot("/sk", "k1")
        except KeelError as exc:  # a failed create leaves no complete snapshot: finish it
            assert all(not s.complete for s in fs.list_snapshots("/sk")), exc
            fs.create_snapshot("/sk", "k1")
        c.wait_for(lambda: victim not in c.running() or None, 30, "the serving master died")
        listed = fs.list_snapshots("/sk")
        assert [(s.name, s.complete) for s in listed] == [("k1", True)]
        for d in (here, there):
            fs.delete(d, recursive=True)
        for path, content in contents.items():
            assert fs.read_bytes(path.replace("/sk/", "/sk/.snapshot/k1/", 1)) == content
    finally:
        c.restart(victim)


def test_the_serving_master_killed_during_a_rename(snap_cluster: Any) -> None:
    """Killed (as kill -9) after the first shard renamed its part: both names are listed
    incomplete, the files read from neither name on every shard; the rename run again (by
    another master) finishes it, and every file reads back under the new name."""
    c, _ = snap_cluster
    fs = c.client(deadline=60.0)
    here, there = two_shard_dirs(fs, "/sn")
    contents = {f"{d}/f": os.urandom(200) for d in (here, there)}
    for path, content in contents.items():
        fs.mkdir(path.rsplit("/", 1)[0], parents=True)
        fs.write_bytes(path, content)
    fs.allow_snapshot("/sn")
    fs.create_snapshot("/sn", "old")
    victim = c.leader(fs.shard_map().shard_for_path("/sn"))
    c.set_failpoint(victim, "snapshot.part_renamed", "crash")
    try:
        try:
            fs.rename_snapshot("/sn", "old", "new")
        except KeelError:  # the client's retry may have finished it already
            listed = {s.name: s.complete for s in fs.list_snapshots("/sn")}
            assert listed == {"old": False, "new": False}, listed
            fs.rename_snapshot("/sn", "old", "new")
        c.wait_for(lambda: victim not in c.running() or None, 30, "the serving master died")
        assert [(s.name, s.complete) for s in fs.list_snapshots("/sn")] == [("new", True)]
        for path, content in contents.items():
            assert fs.read_bytes(path.replace("/sn/", "/sn/.snapshot/new/", 1)) == content
        with pytest.raises(AlreadyExists):
            fs.create_snapshot("/sn", "new")
    finally:
        c.restart(victim)


def test_a_directory_renamed_while_it_becomes_snapshottable(snap_cluster: Any) -> None:
    """Decided: a snapshottable directory cannot be renamed or deleted (its snapshots and
    its mark are kept by its path). Racing a rename, allow-snapshot + create either lose
    (``NOT_FOUND``, and no mark is left behind) or win (the rename is refused, the snapshot
    is whole)."""
    c, _ = snap_cluster
    renamer, snapper = c.client(), c.client()
    for i in range(6):
        src, dst = f"/rr{i}", f"/rr{i}-moved"
        renamer.mkdir(src)
        renamer.write_bytes(f"{src}/f", b"x" * (i + 1))
        results: dict[str, str] = {}

        def rename(src: str = src, dst: str = dst, results: dict[str, str] = results) -> None:
            try:
                renamer.rename(src, dst)
                results["rename"] = "done"
            except InvalidArgument as exc:
                assert "snapshottable" in str(exc) or "snapshots" in str(exc)
                results["rename"] = "refused"

        def snap(src: str = src, results: dict[str, str] = results) -> None:
            try:
                snapper.allow_snapshot(src)
                snapper.create_snapshot(src, "s")
                results["snapshot"] = "taken"
            except NotFound:
                results["snapshot"] = "gone"

        threads = [threading.Thread(target=rename), threading.Thread(target=snap)]
        for t in threads if i % 2 else reversed(threads):
            t.start()
        for t in threads:
            t.join(60)
        assert results in (
            {"rename": "done", "snapshot": "gone"},
            {"rename": "refused", "snapshot": "taken"},
        ), results
        marked = snapper.snapshottable_directories()
        if results["rename"] == "done":
            assert src not in marked and dst not in marked
            assert renamer.read_bytes(f"{dst}/f") == b"x" * (i + 1)
        else:
            assert src in marked
            assert renamer.read_bytes(f"{src}/.snapshot/s/f") == b"x" * (i + 1)


def test_snapshots_survive_a_restart_of_every_master(snap_cluster: Any) -> None:
    c, _ = snap_cluster
    fs = c.client()
    fs.mkdir("/sr", parents=True)
    fs.write_bytes("/sr/f", b"kept")
    fs.allow_snapshot("/sr")
    fs.create_snapshot("/sr", "r1")
    fs.delete("/sr/f")
    for node_id in sorted(c.nodes):
        c.kill9(node_id)
    for node_id in sorted(c.nodes):
        c.restart(node_id)
    again = c.client()
    assert [s.name for s in again.list_snapshots("/sr")] == ["r1"]
    assert again.read_bytes("/sr/.snapshot/r1/f") == b"kept"


def test_resharding_is_refused_while_a_directory_is_snapshottable(snap_cluster: Any) -> None:
    """Snapshots and snapshottable marks stay on the shards where they were made: adding or
    removing a shard (which moves directories) is refused while any directory is
    snapshottable, and the map does not change."""
    c, _ = snap_cluster
    fs = c.client()
    fs.mkdir("/rs", parents=True)
    fs.allow_snapshot("/rs")
    try:
        before = fs.shard_map()
        shard = sorted(before.shards)[-1]
        members = sorted(int(i) for i in before.shards[shard])
        for attempt in (
            lambda: fs.add_shard("shard-new", members, deadline=10.0),
            lambda: fs.remove_shard(shard, deadline=10.0),
        ):
            with pytest.raises(InvalidArgument, match="snapshottable"):
                attempt()
        after = fs.shard_map()
        assert after.version == before.version and sorted(after.shards) == sorted(before.shards)
    finally:
        fs.disallow_snapshot("/rs")
