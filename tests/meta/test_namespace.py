"""Every namespace operation of a data shard and the errors each can give (HDFS semantics)."""

from __future__ import annotations

import pytest
from meta_helpers import T0, Driver, names, state

from keelfs.errors import InvalidArgument, InvalidPath, NotADirectory, NotFound
from keelfs.meta.commands import (
    AddBlock,
    CompleteFile,
    Create,
    Delete,
    DequeueBlockDeletes,
    Mkdir,
    MkdirSelf,
    Rename,
    SetOwner,
    SetPermission,
    SetReplication,
    SetTimes,
)
from keelfs.meta.namespace import ShardStateMachine
from keelfs.meta.records import BlockInfo, ContentSummary, FileInfo


def make_file(d: Driver, path: str, blocks: int = 0, length: int = 1000, **kw: object) -> None:
    """Create, write ``blocks`` blocks of ``length`` bytes each, and complete ``path``."""
    s = d.session()
    d.ok(Create(path, **kw), s)  # type: ignore[arg-type]
    base = abs(hash(path)) % 10**9 * 100
    for i in range(blocks):
        d.ok(AddBlock(path, base + i, 1, length if i else None), s)
    d.ok(CompleteFile(path, length if blocks else None), s)


# -- mkdir ----------------------------------------------------------------------------------------
def test_mkdir_and_stat(shard: Driver) -> None:
    assert shard.ok(Mkdir("/a", mode=0o750, owner="alice", group="staff")) == {"created": ["/a"]}
    info = shard.sm.stat("/a")
    assert (info.kind, info.mode, info.owner, info.group) == ("dir", 0o750, "alice", "staff")
    assert (info.length, info.replication, info.block_size, info.mtime) == (0, 0, 0, T0)
    assert info.is_dir and info.name == "a"
    root = shard.sm.stat("/")
    assert root.is_dir and root.path == "/"


def test_mkdir_needs_parent(shard: Driver) -> None:
    r = shard.err(Mkdir("/a/b"), "NOT_FOUND")
    assert r.error is not None and r.error["name"] == "/a"
    assert not shard.sm.exists("/a/b")


def test_mkdir_existing(shard: Driver) -> None:
    shard.ok(Mkdir("/a"))
    shard.err(Mkdir("/a"), "ALREADY_EXISTS")
    shard.err(Mkdir("/"), "ALREADY_EXISTS")
    assert shard.ok(Mkdir("/", parents=True)) == {"created": []}
    assert shard.ok(Mkdir("/a", parents=True)) == {"created": []}


def test_mkdir_parents(shard: Driver) -> None:
    shard.ok(Mkdir("/a"))
    assert shard.ok(Mkdir("/a/b/c/d", parents=True)) == {"created": ["/a/b", "/a/b/c", "/a/b/c/d"]}
    assert names(shard.sm, "/a/b/c") == ["d"]
    assert shard.ok(Mkdir("/a/b/c/d", parents=True)) == {"created": []}
    make_file(shard, "/a/f")
    r = shard.err(Mkdir("/a/f/x/y", parents=True), "NOT_A_DIRECTORY")
    assert r.error is not None and r.error["path"] == "/a/f"
    shard.err(Mkdir("/a/f", parents=True), "ALREADY_EXISTS")
    assert not shard.sm.exists("/a/f/x")


def test_mkdir_under_a_file(shard: Driver) -> None:
    make_file(shard, "/f")
    shard.err(Mkdir("/f/x"), "NOT_A_DIRECTORY")
    shard.err(Mkdir("/f"), "ALREADY_EXISTS")


def test_mkdir_updates_parent_mtime(shard: Driver) -> None:
    shard.ok(Mkdir("/a"))
    shard.advance(5000)
    shard.ok(Mkdir("/a/b"))
    assert shard.sm.stat("/a").mtime == T0 + 5000
    assert shard.sm.stat("/a/b").mtime == T0 + 5000


def test_unformatted_shard_has_no_root(tmp_path: object) -> None:
    d = Driver(ShardStateMachine(None))
    r = d.err(Mkdir("/a"), "NOT_FOUND")
    assert r.error is not None and r.error["kind"] == "directory"
    with pytest.raises(NotFound):
        d.sm.stat("/")  # type: ignore[attr-defined]
    d.ok(MkdirSelf("/"))
    d.ok(Mkdir("/a"))
    d.err(MkdirSelf("/"), "ALREADY_EXISTS")


def test_directory_whose_self_record_lives_elsewhere(shard: Driver) -> None:
    """The entry of /remote is here, its self-record on another shard: nothing that needs the
    self-record can happen here, and each such attempt says so and changes nothing."""
    shard.ok(Mkdir("/remote", self_record=False))
    assert shard.sm.stat("/remote").is_dir
    before = state(shard.sm)
    for cmd in (Mkdir("/remote/x"), Delete("/remote"), Rename("/remote", "/moved")):
        r = shard.err(cmd, "NOT_FOUND")
        assert r.error is not None and r.error["kind"] == "directory record"
    with pytest.raises(NotFound, match="not on this shard"):
        shard.sm.list_dir("/remote")
    assert state(shard.sm) == before
    # the owning shard's half arrives (cross-shard mkdir): now it all works here
    shard.ok(MkdirSelf("/remote"))
    shard.ok(Mkdir("/remote/x"))
    assert names(shard.sm, "/remote") == ["x"]


# -- create / stat --------------------------------------------------------------------------------
def test_create_and_stat(shard: Driver) -> None:
    s = shard.session()
    info = shard.ok(Create("/f", mode=0o600, owner="bob", group="g", replication=2), s)
    assert FileInfo.from_dict(info) == shard.sm.stat("/f")
    st = shard.sm.stat("/f")
    assert (st.kind, st.mode, st.owner, st.group, st.replication) == ("file", 0o600, "bob", "g", 2)
    assert (st.length, st.blocks, st.block_size) == (0, (), 64 * 1024 * 1024)
    assert st.under_construction and st.lease_holder == s


def test_create_is_exclusive_unless_overwrite(shard: Driver) -> None:
    make_file(shard, "/f", blocks=2)
    s = shard.session()
    shard.err(Create("/f"), "ALREADY_EXISTS", s)
    old_blocks = [b.block_id for b in shard.sm.stat("/f").blocks]
    shard.ok(Create("/f", overwrite=True), s)
    assert shard.sm.stat("/f").blocks == ()
    assert [b.block_id for b in shard.sm.pending_block_deletes()] == sorted(old_blocks)


def test_create_errors(shard: Driver) -> None:
    s = shard.session()
    shard.ok(Mkdir("/d"))
    make_file(shard, "/f")
    shard.err(Create("/d"), "ALREADY_EXISTS", s)
    shard.err(Create("/d", overwrite=True), "IS_A_DIRECTORY", s)
    shard.err(Create("/f/x"), "NOT_A_DIRECTORY", s)
    shard.err(Create("/nope/x"), "NOT_FOUND", s)
    shard.err(Create("/x"), "INVALID_ARGUMENT")  # no session: no lease holder
    shard.err(Create("/x"), "SESSION_EXPIRED", 999_999)


def test_stat_errors(shard: Driver) -> None:
    make_file(shard, "/f")
    with pytest.raises(NotFound):
        shard.sm.stat("/missing")
    with pytest.raises(NotADirectory):
        shard.sm.stat("/f/x")
    with pytest.raises(InvalidPath):
        shard.sm.stat("relative")
    assert not shard.sm.exists("/missing") and shard.sm.exists("/f")


# -- list -----------------------------------------------------------------------------------------
def test_list_sorted_and_paginated(shard: Driver) -> None:
    shard.ok(Mkdir("/d"))
    want = sorted(["b", "a", "Z", "é", "a.b", "a b", "10", "9", "日本", "~"], key=str.encode)
    for name in want:
        shard.ok(Mkdir(f"/d/{name}"))
    shard.ok(Mkdir("/d/a/inner"))  # a grandchild is not an entry of /d
    shard.ok(Mkdir("/d2"))  # nor is a sibling whose name extends /d
    shard.ok(Mkdir("/d2/x"))
    assert names(shard.sm, "/d") == want
    page = shard.sm.list_dir("/d", limit=3)
    assert [e.name for e in page.entries] == want[:3] and page.cursor == want[2]
    page = shard.sm.list_dir("/d", start_after=want[-2], limit=3)
    assert [e.name for e in page.entries] == want[-1:] and page.cursor is None
    page = shard.sm.list_dir("/d", limit=len(want))
    assert len(page.entries) == len(want) and page.cursor is None
    assert shard.sm.list_dir("/d", start_after=want[-1]).entries == ()
    assert [e.path for e in shard.sm.list_dir("/").entries] == ["/d", "/d2"]


def test_list_a_file_and_errors(shard: Driver) -> None:
    make_file(shard, "/f")
    page = shard.sm.list_dir("/f")
    assert [e.path for e in page.entries] == ["/f"]
    with pytest.raises(NotFound):
        shard.sm.list_dir("/missing")
    with pytest.raises(InvalidArgument):
        shard.sm.list_dir("/", limit=0)
    with pytest.raises(InvalidArgument):
        shard.sm.list_dir("/", limit=10_001)
    with pytest.raises(InvalidPath):
        shard.sm.list_dir("/", start_after="a/b")


# -- delete ---------------------------------------------------------------------------------------
def test_delete_file_queues_blocks(shard: Driver) -> None:
    make_file(shard, "/f", blocks=3, length=10)
    blocks = shard.sm.stat("/f").blocks
    assert shard.ok(Delete("/f")) == {"files": 1, "directories": 0, "blocks": 3}
    assert not shard.sm.exists("/f")
    assert shard.sm.pending_block_deletes() == sorted(blocks, key=lambda b: b.block_id)
    ids = [b.block_id for b in blocks]
    assert shard.ok(DequeueBlockDeletes((ids[0], ids[1], 12345))) == {"removed": 2}
    assert [b.block_id for b in shard.sm.pending_block_deletes()] == [ids[2]]
    assert shard.sm.pending_block_deletes(start_after=ids[2]) == []


def test_delete_directories(shard: Driver) -> None:
    shard.ok(Mkdir("/a/b/c", parents=True))
    make_file(shard, "/a/b/c/f1", blocks=1)
    make_file(shard, "/a/b/f2", blocks=2)
    shard.ok(Mkdir("/ab"))  # shares a prefix with /a: must survive
    make_file(shard, "/ab/keep")
    r = shard.err(Delete("/a"), "DIRECTORY_NOT_EMPTY")
    assert r.error is not None and r.error["path"] == "/a"
    assert shard.ok(Delete("/a", recursive=True)) == {"files": 2, "directories": 3, "blocks": 3}
    for p in ("/a", "/a/b", "/a/b/c", "/a/b/c/f1", "/a/b/f2"):
        assert not shard.sm.exists(p)
    assert names(shard.sm, "/") == ["ab"]
    assert names(shard.sm, "/ab") == ["keep"]
    assert len(shard.sm.pending_block_deletes()) == 3
    shard.ok(Mkdir("/e"))
    assert shard.ok(Delete("/e")) == {"files": 0, "directories": 1, "blocks": 0}
    # no stale self-records survive: recreating gives an empty directory
    shard.ok(Mkdir("/a"))
    assert names(shard.sm, "/a") == []


def test_delete_errors(shard: Driver) -> None:
    make_file(shard, "/f")
    shard.err(Delete("/missing"), "NOT_FOUND")
    shard.err(Delete("/f/x"), "NOT_A_DIRECTORY")
    shard.err(Delete("/"), "INVALID_ARGUMENT")
    shard.err(Delete("/", recursive=True), "INVALID_ARGUMENT")


# -- rename ---------------------------------------------------------------------------------------
def test_rename_file(shard: Driver) -> None:
    shard.ok(Mkdir("/a"))
    shard.ok(Mkdir("/b"))
    make_file(shard, "/a/f", blocks=1)
    before = shard.sm.stat("/a/f")
    shard.advance(1000)
    assert shard.ok(Rename("/a/f", "/b/g")) == {}
    assert not shard.sm.exists("/a/f")
    after = shard.sm.stat("/b/g")
    assert after.blocks == before.blocks and after.mtime == before.mtime
    assert shard.sm.stat("/a").mtime == shard.sm.stat("/b").mtime == T0 + 1000


def test_rename_directory_moves_its_subtree(shard: Driver) -> None:
    shard.ok(Mkdir("/src/x/y", parents=True))
    make_file(shard, "/src/x/y/f", blocks=1)
    make_file(shard, "/src/top")
    shard.ok(Mkdir("/srcs"))  # prefix sibling, untouched
    shard.ok(Mkdir("/dst"))
    summary = shard.sm.content_summary("/src")
    shard.ok(Rename("/src", "/dst/moved"))
    assert not shard.sm.exists("/src") and not shard.sm.exists("/src/x/y/f")
    assert names(shard.sm, "/dst/moved") == ["top", "x"]
    assert names(shard.sm, "/dst/moved/x/y") == ["f"]
    assert shard.sm.stat("/dst/moved/x/y/f").blocks != ()
    assert shard.sm.content_summary("/dst/moved") == summary
    assert names(shard.sm, "/") == ["dst", "srcs"]
    # the moved directories' self-records moved too: creating inside them works
    shard.ok(Mkdir("/dst/moved/x/y/new"))
    shard.err(Mkdir("/src/x"), "NOT_FOUND")


def test_rename_overwrite_rules(shard: Driver) -> None:
    make_file(shard, "/f1", blocks=1)
    make_file(shard, "/f2", blocks=1)
    shard.ok(Mkdir("/d1"))
    shard.ok(Mkdir("/d2"))
    shard.ok(Mkdir("/full/x", parents=True))
    shard.err(Rename("/f1", "/f2"), "ALREADY_EXISTS")
    shard.err(Rename("/f1", "/d1", overwrite=True), "IS_A_DIRECTORY")
    shard.err(Rename("/d1", "/f1", overwrite=True), "NOT_A_DIRECTORY")
    shard.err(Rename("/d1", "/full", overwrite=True), "DIRECTORY_NOT_EMPTY")
    f2_block = shard.sm.stat("/f2").blocks[0]
    shard.ok(Rename("/f1", "/f2", overwrite=True))
    assert not shard.sm.exists("/f1")
    assert f2_block in shard.sm.pending_block_deletes()
    shard.ok(Rename("/d1", "/d2", overwrite=True))
    assert not shard.sm.exists("/d1") and shard.sm.stat("/d2").is_dir
    shard.ok(Mkdir("/d2/again"))


def test_rename_errors(shard: Driver) -> None:
    shard.ok(Mkdir("/a/b", parents=True))
    make_file(shard, "/f")
    shard.err(Rename("/a", "/a/b/c"), "INVALID_ARGUMENT")  # into itself
    shard.err(Rename("/a", "/a"), "ALREADY_EXISTS")
    shard.err(Rename("/f", "/f", overwrite=True), "ALREADY_EXISTS")
    shard.err(Rename("/a", "/"), "ALREADY_EXISTS")
    shard.err(Rename("/", "/x"), "INVALID_ARGUMENT")
    shard.err(Rename("/missing", "/x"), "NOT_FOUND")
    shard.err(Rename("/f", "/nope/x"), "NOT_FOUND")
    shard.err(Rename("/f", "/f/x"), "NOT_A_DIRECTORY")
    shard.err(Rename("/a/b", "/a", overwrite=True), "DIRECTORY_NOT_EMPTY")


# -- attributes -----------------------------------------------------------------------------------
def test_set_attributes(shard: Driver) -> None:
    make_file(shard, "/f")
    shard.ok(Mkdir("/d"))
    assert shard.ok(SetReplication("/f", 5))["replication"] == 5
    shard.err(SetReplication("/d", 2), "IS_A_DIRECTORY")
    shard.ok(SetTimes("/f", mtime=111))
    shard.ok(SetTimes("/f", atime=222))
    st = shard.sm.stat("/f")
    assert (st.mtime, st.atime) == (111, 222)
    shard.ok(SetPermission("/d", 0o700))
    shard.ok(SetOwner("/d", owner="carol"))
    shard.ok(SetOwner("/d", group="ops"))
    st = shard.sm.stat("/d")
    assert (st.mode, st.owner, st.group) == (0o700, "carol", "ops")
    shard.ok(SetPermission("/", 0o777))
    assert shard.sm.stat("/").mode == 0o777
    # a directory's self-record follows its entry: still consistent after creating inside it
    shard.ok(Mkdir("/d/sub"))
    assert shard.sm.stat("/d").owner == "carol"
    for cmd in (
        SetReplication("/missing", 1),
        SetTimes("/missing", mtime=1),
        SetPermission("/missing", 0o644),
        SetOwner("/missing", owner="x"),
    ):
        shard.err(cmd, "NOT_FOUND")
    shard.err(SetPermission("/f/x", 0o644), "NOT_A_DIRECTORY")


# -- blocks and du --------------------------------------------------------------------------------
def test_blocks_and_lengths(shard: Driver) -> None:
    s = shard.session()
    shard.ok(Create("/f", replication=2, block_size=1024 * 1024), s)
    shard.ok(AddBlock("/f", 10, 1), s)
    shard.err(AddBlock("/f", 10, 1, 5), "ALREADY_EXISTS", s)
    shard.err(AddBlock("/f", 11, 1, 2 * 1024 * 1024), "INVALID_ARGUMENT", s)
    shard.ok(AddBlock("/f", 11, 1, 1024 * 1024), s)
    info = shard.ok(CompleteFile("/f", 500), s)
    assert FileInfo.from_dict(info).blocks == (BlockInfo(10, 1, 1024 * 1024), BlockInfo(11, 1, 500))
    st = shard.sm.stat("/f")
    assert st.length == 1024 * 1024 + 500 and not st.under_construction and st.lease_holder == 0
    assert shard.sm.content_summary("/f") == ContentSummary(st.length, 1, 0, 2 * st.length)
    shard.err(AddBlock("/f", 12, 1), "LEASE_CONFLICT", s)  # completed: no lease any more
    shard.err(AddBlock("/nope", 12, 1), "NOT_FOUND", s)
    shard.ok(Mkdir("/d"))
    shard.err(AddBlock("/d", 12, 1), "IS_A_DIRECTORY", s)
    shard.ok(Create("/empty"), s)
    shard.err(CompleteFile("/empty", 7), "INVALID_ARGUMENT", s)
    shard.err(AddBlock("/empty", 13, 1, 7), "INVALID_ARGUMENT", s)
    shard.ok(CompleteFile("/empty", 0), s)


def test_content_summary(shard: Driver) -> None:
    shard.ok(Mkdir("/a/b", parents=True))
    make_file(shard, "/a/f1", blocks=2, length=100, replication=3)
    make_file(shard, "/a/b/f2", blocks=1, length=50, replication=1)
    make_file(shard, "/other", blocks=1, length=7)
    assert shard.sm.content_summary("/a") == ContentSummary(250, 2, 2, 650)
    assert shard.sm.content_summary("/a/b") == ContentSummary(50, 1, 1, 50)
    assert shard.sm.content_summary("/") == ContentSummary(257, 3, 3, 671)
    with pytest.raises(NotFound):
        shard.sm.content_summary("/missing")
