"""Every namespace operation and every class of bad input, against real processes.

One co-hosted cluster (3 processes; each hosts a config member and members of shard-1 and
shard-2) serves the whole module. Bad input is sent both through the client (which checks
paths before sending) and raw, past the client, so the servers' own checks are exercised;
after all of it the namespace is exactly what it was.
"""

from __future__ import annotations

import os
from typing import Any

import grpc
import pytest
from helpers import RawError, call_raw, caller, child, dirs_on_two_shards, header, stub, tree

from keelfs.client import Client
from keelfs.errors import (
    AlreadyExists,
    DirectoryNotEmpty,
    InvalidArgument,
    InvalidPath,
    IsADirectory,
    LeaseConflict,
    NotADirectory,
    NotFound,
    SessionExpired,
)
from keelfs.meta.records import MAX_INLINE_BYTES
from keelfs.rpc.pb import meta_pb2 as pb
from keelfs.rpc.wire import session_id_to_pb
from keelfs.server.metacluster import MetaCluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def test_every_operation(shared_cluster: MetaCluster) -> None:
    fs = shared_cluster.client()
    m = fs.shard_map()
    assert sorted(m.shards) == ["shard-1", "shard-2"]
    assert fs.format() is False  # the fixture formatted it; formatting again changes nothing
    assert fs.stat("/").is_dir

    base = "/ops"
    assert fs.mkdir(base) == [base]
    local = child(m, base, "local", same_shard=True)
    remote = child(m, base, "remote", same_shard=False)
    assert fs.mkdir(local) == [local]
    assert fs.mkdir(remote) == [remote]  # its children live on the other shard
    assert fs.create(remote + "/f").path == remote + "/f"
    deep = f"{base}/p/q/r/s"
    assert fs.mkdir(deep, parents=True) == [f"{base}/p", f"{base}/p/q", f"{base}/p/q/r", deep]
    assert fs.mkdir(deep, parents=True) == []
    assert fs.stat(deep).is_dir and [e.path for e in fs.ls(f"{base}/p/q/r")] == [deep]

    f1 = local + "/f1"
    info = fs.create(
        f1, replication=2, block_size=1 << 20, mode=0o600, owner="alice", group="staff"
    )
    assert info.under_construction and info.lease_holder > 0 and info.replication == 2
    assert (info.mode, info.owner, info.group, info.block_size) == (
        0o600,
        "alice",
        "staff",
        1 << 20,
    )
    # anyone's stat (a listing too) names the writer's user, never its session id
    seen = shared_cluster.client().stat(f1)
    writer = caller(shared_cluster)  # the client's user, who owns its session
    assert seen.under_construction and seen.lease_holder == 0 and seen.lease_user == writer
    assert [e.lease_holder for e in fs.ls(local) if e.path == f1] == [0]
    done = fs.complete(f1)
    assert not done.under_construction and done.lease_holder == 0
    assert fs.stat(f1) == done
    again = fs.create(f1, overwrite=True)
    # no owner asked for: the caller, this process's OS user (a superuser: it runs the masters)
    assert again.under_construction and again.owner == caller(shared_cluster)
    fs.complete(f1)

    for i in range(12):
        fs.create(f"{local}/g{i:02d}")
    names = [e.name for e in fs.ls(local, page_size=5)]
    assert names == ["f1", *(f"g{i:02d}" for i in range(12))]
    assert [e.path for e in fs.ls(f1)] == [f1]  # a file lists as itself
    assert [e.path for e in fs.ls(remote + "/f")] == [remote + "/f"]

    assert fs.set_replication(f1, 5).replication == 5
    times = fs.set_times(f1, mtime=1_000, atime=2_000)
    assert (times.mtime, times.atime) == (1_000, 2_000)
    assert fs.set_times(f1, atime=3_000).mtime == 1_000
    assert fs.chmod(f1, 0o640).mode == 0o640
    owned = fs.chown(f1, owner="bob")
    assert (owned.owner, owned.group) == ("bob", "keelfs")
    assert fs.chown(f1, group="wheel").owner == "bob"
    assert fs.chmod(local, 0o700).mode == 0o700 and fs.stat(local).mode == 0o700
    assert fs.chmod("/", 0o755).is_dir

    fs.rename(f"{local}/g00", f"{local}/h00")
    assert not fs.exists(f"{local}/g00") and fs.exists(f"{local}/h00")
    fs.rename(f"{local}/g01", f"{local}/h00", overwrite=True)
    assert [e.name for e in fs.ls(local)][:3] == ["f1", "g02", "g03"]

    moved = child(m, base, "moved", same_shard=True)  # same shard as `local`, children too
    fs.rename(local, moved)
    assert fs.stat(moved + "/f1").owner == "bob" and not fs.exists(local)

    summary = fs.du(base)
    listed = [e for e in _walk(fs, base)]
    files = [e for e in listed if not e.is_dir]
    assert summary.file_count == len(files) == 13
    assert summary.directory_count == 1 + len(listed) - len(files)

    result = fs.delete(moved, recursive=True)
    assert (result.files, result.directories) == (12, 1)
    fs.create(remote + "/g")
    with pytest.raises(DirectoryNotEmpty):  # its children are on its own shard: still seen
        fs.delete(remote)
    # its entry and its self-record on two shards, its files open: one transaction
    result = fs.delete(remote, recursive=True)
    assert (result.files, result.directories) == (2, 1)
    with pytest.raises(NotFound):
        fs.stat(remote)
    fs.mkdir(remote)  # and back, through a transaction again, with nothing left over
    assert fs.stat(remote).is_dir and list(fs.ls(remote)) == []
    fs.create(remote + "/f")
    assert [e.name for e in fs.ls(remote)] == ["f"]
    fs.delete(remote + "/f")
    result = fs.delete(remote)  # empty: its own shard checks that, then drops its record
    assert (result.files, result.directories) == (0, 1)


def _walk(fs: Client, top: str) -> list[Any]:
    out = []
    stack = [top]
    while stack:
        for e in fs.ls(stack.pop()):
            out.append(e)
            if e.is_dir:
                stack.append(e.path)
    return out


def _ns_leader_stub(cluster: MetaCluster, fs: Client, path: str) -> Any:
    shard = fs.shard_map().shard_for_path(path)
    return stub(cluster, cluster.leader(shard))


def test_bad_input_gets_a_clear_error_and_changes_nothing(shared_cluster: MetaCluster) -> None:
    fs = shared_cluster.client()
    other = shared_cluster.client()
    m = fs.shard_map()
    base = "/bad"
    fs.mkdir(base)
    d = child(m, base, "d", same_shard=True)
    remote = child(m, base, "r", same_shard=False)
    fs.mkdir(d)
    fs.mkdir(remote)
    fs.create(d + "/file")
    fs.complete(d + "/file")
    fs.create(remote + "/taken")
    fs.complete(remote + "/taken")
    fs.create(d + "/busy")  # under construction: fs's session holds the lease
    fs.mkdir(d + "/sub")
    fs.create(d + "/sub/x")
    before = tree(fs)

    # -- through the client: the state machine's refusals
    with pytest.raises(NotFound):
        fs.mkdir(base + "/missing/child")
    with pytest.raises(NotFound):
        fs.create(base + "/missing/f")
    with pytest.raises(NotADirectory):
        fs.create(d + "/file/f")
    with pytest.raises(NotADirectory):
        fs.stat(d + "/file/f")
    with pytest.raises(AlreadyExists):
        fs.mkdir(d)
    with pytest.raises(AlreadyExists):
        fs.mkdir(d + "/file", parents=True)
    with pytest.raises(AlreadyExists):
        fs.create(d + "/file")
    with pytest.raises(AlreadyExists):
        fs.create(d + "/sub")
    with pytest.raises(IsADirectory):
        fs.create(d + "/sub", overwrite=True)
    with pytest.raises(IsADirectory):
        fs.set_replication(d, 2)
    with pytest.raises(DirectoryNotEmpty):
        fs.delete(d + "/sub")
    with pytest.raises(NotFound):
        fs.delete(d + "/nothing")
    with pytest.raises(NotFound):
        fs.rename(d + "/nothing", d + "/x")
    with pytest.raises(AlreadyExists):
        fs.rename(d + "/file", d + "/busy")
    with pytest.raises(InvalidArgument, match="into itself"):
        fs.rename(d, d + "/sub/inside")
    with pytest.raises(InvalidArgument):
        fs.delete("/")
    with pytest.raises(LeaseConflict):
        other.create(d + "/busy", overwrite=True)
    with pytest.raises(LeaseConflict):
        other.complete(d + "/busy")
    with pytest.raises(LeaseConflict, match="open for writing"):  # not moved across shards
        fs.rename(d + "/sub", remote + "/sub")
    with pytest.raises(AlreadyExists):  # across shards too: the target's shard refuses
        fs.rename(d + "/file", remote + "/taken")
    assert fs.stat(d + "/file").path == d + "/file"
    with pytest.raises(InvalidArgument):
        fs.chown(d + "/file", owner="a:b")
    with pytest.raises(InvalidPath):
        fs.stat("relative")

    # -- raw, past the client's own checks
    ns = _ns_leader_stub(shared_cluster, fs, d + "/x")
    session = call_raw(
        ns.RegisterSession, pb.RegisterSessionRequest(group=m.shard_for_path(d + "/x"))
    )
    sid = session.session_id
    bad_paths = ["", "relative", "/a/../b", "/a/./b", "/a\x00b", "/a//b", "/a\x7fb",
                 "/" + "n" * 256, "/" + "/".join(["x" * 200] * 25)]  # fmt: skip
    for i, bad in enumerate(bad_paths):
        for method, req in [
            (ns.Mkdir, pb.MkdirRequest(path=bad)),
            (ns.Create, pb.CreateRequest(header=header(sid, 100 + i), path=bad)),
            (ns.GetFileInfo, pb.GetFileInfoRequest(path=bad)),
            (ns.ListDir, pb.ListDirRequest(path=bad)),
            (ns.Delete, pb.DeleteRequest(path=bad)),
            (ns.Rename, pb.RenameRequest(src=d + "/file", dst=bad)),
        ]:
            with pytest.raises(RawError) as err:
                call_raw(method, req)
            assert err.value.status is grpc.StatusCode.INVALID_ARGUMENT, (bad, err.value)
            assert isinstance(err.value.keel, InvalidPath), (bad, err.value)

    def refused(method: Any, req: Any, code: str, argument: str | None = None) -> None:
        with pytest.raises(RawError) as err:
            call_raw(method, req)
        assert err.value.keel is not None and err.value.keel.code == code, err.value
        if argument is not None:
            assert err.value.keel.details.get("argument") == argument, err.value

    f = d + "/new"
    refused(ns.Create, pb.CreateRequest(header=header(sid, 200), path=f, replication=1000),
            "INVALID_ARGUMENT", "replication")  # fmt: skip
    refused(ns.Create, pb.CreateRequest(header=header(sid, 201), path=f, block_size=12345),
            "INVALID_ARGUMENT", "block_size")  # fmt: skip
    refused(ns.Create, pb.CreateRequest(header=header(sid, 202), path=f, mode=0o170000),
            "INVALID_ARGUMENT", "mode")  # fmt: skip
    refused(ns.Create, pb.CreateRequest(header=header(sid, 203), path=f, owner="a/b"),
            "INVALID_ARGUMENT", "owner")  # fmt: skip
    refused(ns.Create, pb.CreateRequest(path=f), "INVALID_ARGUMENT", "session_id")
    refused(ns.Create, pb.CreateRequest(header=header(0, 5), path=f), "INVALID_ARGUMENT", "seq")
    # a session id is 16 bytes; an unknown one (any of the 2^128) is SESSION_EXPIRED
    refused(ns.Create, pb.CreateRequest(header=header(b"\x80" * 8, 1), path=f), "INVALID_ARGUMENT")
    refused(ns.Create, pb.CreateRequest(header=header(2**127, 1), path=f), "SESSION_EXPIRED")
    refused(ns.Create, pb.CreateRequest(header=header(987654321, 1), path=f), "SESSION_EXPIRED")
    refused(ns.ListDir, pb.ListDirRequest(path=d, limit=20_000), "INVALID_ARGUMENT", "limit")
    refused(ns.ListDir, pb.ListDirRequest(path=d, start_after="a/b"), "INVALID_PATH")
    refused(ns.SetTimes, pb.SetTimesRequest(path=f), "INVALID_ARGUMENT", "mtime")
    refused(ns.SetOwner, pb.SetOwnerRequest(path=f), "INVALID_ARGUMENT", "owner")
    refused(ns.SetPermission, pb.SetPermissionRequest(path=f, mode=0o77777), "INVALID_ARGUMENT")
    refused(ns.SetReplication, pb.SetReplicationRequest(path=f), "INVALID_ARGUMENT")
    refused(ns.RegisterSession, pb.RegisterSessionRequest(group="shard-9"), "NOT_FOUND")
    refused(ns.RegisterSession, pb.RegisterSessionRequest(group="no such!"), "NOT_FOUND")
    refused(ns.Delete, pb.DeleteRequest(path="/"), "INVALID_ARGUMENT")
    refused(ns.Mkdir, pb.MkdirRequest(path=f, mode=0o10000), "INVALID_ARGUMENT", "mode")
    # the same seq for a different command
    call_raw(ns.Mkdir, pb.MkdirRequest(header=header(sid, 300), path=d + "/sub", parents=True))
    refused(ns.Mkdir, pb.MkdirRequest(header=header(sid, 300), path=d + "/other"),
            "INVALID_ARGUMENT", "seq")  # fmt: skip
    # oversized: gRPC's own limit (1 MiB), before any handler
    with pytest.raises(RawError) as big:
        call_raw(
            ns.Create, pb.CreateRequest(header=header(sid, 400), path=f, owner="o" * (2 << 20))
        )
    assert big.value.status is grpc.StatusCode.RESOURCE_EXHAUSTED and big.value.keel is None
    with pytest.raises(InvalidArgument, match="owner longer than"):
        fs.create(f, owner="o" * (2 << 20))  # the client refuses it before sending

    # -- the config service
    cfg = stub(shared_cluster, shared_cluster.leader("config"), "Config")
    refused(cfg.AddShard, pb.AddShardRequest(shard_id="shard-9", members=[99]), "NOT_FOUND")
    refused(cfg.AddShard, pb.AddShardRequest(shard_id="bad id!", members=[1]), "INVALID_ARGUMENT")
    refused(cfg.AddShard, pb.AddShardRequest(shard_id="shard-9", members=[]), "INVALID_ARGUMENT")
    refused(
        cfg.AddShard, pb.AddShardRequest(shard_id="shard-9", members=[1, 1]), "INVALID_ARGUMENT"
    )
    refused(cfg.AddShard, pb.AddShardRequest(shard_id="shard-1", members=[1]), "ALREADY_EXISTS")
    refused(cfg.RemoveShard, pb.RemoveShardRequest(shard_id="shard-9"), "NOT_FOUND")
    # only a master may register, itself (with TLS its certificate names it, checked first)
    as_7 = stub(shared_cluster, shared_cluster.leader("config"), "Config", as_master=7)
    zero = "PERMISSION_DENIED" if shared_cluster.tls_dir else "INVALID_ARGUMENT"
    refused(as_7.RegisterMaster, pb.RegisterMasterRequest(node_id=0, address="h:1"), zero)
    refused(
        as_7.RegisterMaster,
        pb.RegisterMasterRequest(node_id=7, address="no way!"),
        "INVALID_ARGUMENT",
    )
    with pytest.raises(NotFound) as nf:
        fs.add_shard("shard-9", [1, 99])
    assert nf.value.kind == "node"
    assert fs.shard_map().version == m.version
    with pytest.raises(SessionExpired):
        call_raw_keel(
            ns.KeepAlive,
            pb.KeepAliveRequest(group=m.shard_for_path(f), session_id=session_id_to_pb(987654321)),
        )

    assert tree(fs) == before


def call_raw_keel(method: Any, req: Any) -> Any:
    try:
        return call_raw(method, req)
    except RawError as err:
        assert err.keel is not None
        raise err.keel from None


def test_a_retried_request_returns_its_first_reply(shared_cluster: MetaCluster) -> None:
    """Exactly-once: the same (session, seq) again gets the recorded reply, not a new apply."""
    fs = shared_cluster.client()
    fs.mkdir("/once")
    shard = fs.shard_map().shard_for_path("/once/f")
    ns = stub(shared_cluster, shared_cluster.leader(shard))
    sid = call_raw(ns.RegisterSession, pb.RegisterSessionRequest(group=shard)).session_id
    req = pb.CreateRequest(header=header(sid, 1), path="/once/f")
    first = call_raw(ns.Create, req)
    second = call_raw(ns.Create, req)
    # the retry is a new log entry whose apply returned the first reply (same times)
    assert first.info == second.info and second.reply.index > first.reply.index
    with pytest.raises(RawError) as err:  # a NEW command on the session: the file exists
        call_raw(ns.Create, pb.CreateRequest(header=header(sid, 2), path="/once/f"))
    assert isinstance(err.value.keel, AlreadyExists)
    delete = pb.DeleteRequest(header=header(sid, 3), path="/once/f")
    assert call_raw(ns.Delete, delete).files == 1
    assert call_raw(ns.Delete, delete).files == 1  # not NOT_FOUND: the first reply
    assert list(fs.ls("/once")) == []
    # a mkdir coordinated across two shards is exactly-once too
    m = fs.shard_map()
    remote = child(m, "/once", "r", same_shard=False)
    owner = m.shard_for_path(remote)
    ns2 = stub(shared_cluster, shared_cluster.leader(owner))
    sid2 = call_raw(ns2.RegisterSession, pb.RegisterSessionRequest(group=owner)).session_id
    mkdir = pb.MkdirRequest(header=header(sid2, 1), path=remote)
    assert list(call_raw(ns2.Mkdir, mkdir).created) == [remote]
    assert list(call_raw(ns2.Mkdir, mkdir).created) == [remote]  # not ALREADY_EXISTS
    fs.create(remote + "/f")  # its self-record is on the other shard
    assert [e.name for e in fs.ls(remote)] == ["f"]


def test_inline_files_move_between_shards_with_their_data(shared_cluster: MetaCluster) -> None:
    """A small file's data lives in its record (CreateInline): a rename to another shard, of
    the file or of a directory holding it, carries the data, also a subtree whose records are
    too large for one transaction (moved in steps)."""
    fs = shared_cluster.client()
    a, b, _, _ = dirs_on_two_shards(fs, "/inl")
    data = os.urandom(MAX_INLINE_BYTES)
    assert fs.write_bytes(f"{a}/f", data) == len(data)
    info = fs.stat(f"{a}/f")
    assert info.length == len(data) and info.blocks == () and not info.under_construction
    fs.rename(f"{a}/f", f"{b}/f")  # a file to the other shard: a transaction
    assert fs.read_bytes(f"{b}/f") == data
    assert [e.length for e in fs.ls(b)] == [len(data)]
    # a directory whose children go to the other shard with it
    m = fs.shard_map()
    sub = child(m, a, "s", same_shard=True)
    fs.mkdir(sub)
    fs.write_bytes(f"{sub}/g", b"small")
    moved = child(m, b, "s", same_shard=True)
    assert m.shard_for_directory(moved) != m.shard_for_directory(sub)
    fs.rename(sub, moved)
    assert fs.read_bytes(f"{moved}/g") == b"small"
    # records past what one transaction may carry: moved in steps (keelfs.master.tree_move)
    big = child(m, a, "big", same_shard=True)
    fs.mkdir(big)
    for i in range(7):
        fs.write_bytes(f"{big}/f{i}", data)
    target = child(m, b, "big", same_shard=True)
    fs.rename(big, target)
    assert not fs.exists(big)
    assert len(list(fs.ls(target))) == 7 and fs.read_bytes(f"{target}/f6") == data
    fs.rename(target, big)
    # a delete across shards checks digests of the records, not the records: no size limit
    spread = child(m, a, "spread", same_shard=False)
    fs.mkdir(spread)
    for i in range(7):
        fs.write_bytes(f"{spread}/f{i}", data)
    fs.delete(spread, recursive=True)
    assert not fs.exists(spread)
    fs.delete(big, recursive=True)
    assert not fs.exists(big)


def test_rename_expect_replaces_only_the_version_seen(shared_cluster: MetaCluster) -> None:
    """``rename(expect=...)`` through the masters, on one shard (one command) and across two
    (the target's shard checks the version at prepare): a writer whose version is stale
    changes nothing."""
    fs = shared_cluster.client()
    a, b, _, _ = dirs_on_two_shards(fs, "/expect")
    for temp_dir in (b, a):  # the target in b: first on its own shard, then from the other
        target = f"{b}/obj-{temp_dir == a}"
        fs.write_bytes(target, b"v1")
        seen = fs.stat(target, read=True)
        fs.write_bytes(f"{temp_dir}/new", b"v2")
        fs.rename(f"{temp_dir}/new", target, overwrite=True, expect=seen.version)
        assert fs.read_bytes(target) == b"v2"
        fs.write_bytes(f"{temp_dir}/late", b"v3")
        with pytest.raises(AlreadyExists):  # v1 is gone: the stale writer loses
            fs.rename(f"{temp_dir}/late", target, overwrite=True, expect=seen.version)
        assert fs.read_bytes(target) == b"v2" and fs.exists(f"{temp_dir}/late")
        with pytest.raises(NotFound):
            fs.rename(f"{temp_dir}/late", f"{b}/none", overwrite=True, expect=seen.version)
        with pytest.raises(InvalidArgument):
            fs.rename(f"{temp_dir}/late", target, expect=seen.version)  # needs overwrite
        fs.delete(f"{temp_dir}/late")
