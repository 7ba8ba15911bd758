"""Snapshots in the shard state machine (``keelfs.meta.snapshots``): taking, reading through
``.snapshot`` paths, dropping, the diff, the block-retention rule (a block a snapshot holds is
never queued for deletion; dropping the snapshot releases what nothing else references), bad
input, and durability through a Raft snapshot of the state."""

from __future__ import annotations

import pytest
from meta_helpers import Driver, state
from test_file_edits import write_file

from keelfs.errors import InvalidPath, NotFound
from keelfs.meta import snapshots
from keelfs.meta.commands import (
    AddBlock,
    Append,
    CompleteFile,
    Create,
    CreateInline,
    Delete,
    Mkdir,
    Rename,
    SnapshotAllow,
    SnapshotDrop,
    SnapshotRename,
    SnapshotTake,
    Truncate,
)
from keelfs.meta.namespace import ShardStateMachine
from keelfs.meta.principals import Caller

BOB = Caller("bob", ("users",))


def sm(d: Driver) -> ShardStateMachine:
    assert isinstance(d.sm, ShardStateMachine)
    return d.sm


def queued(d: Driver) -> set[int]:
    return {b.block_id for b in sm(d).pending_block_deletes()}


def held(d: Driver, *ids: int) -> set[int]:
    return sm(d).referenced_blocks(ids)


@pytest.fixture
def d(mem_shard: Driver) -> Driver:
    mem_shard.ok(Mkdir("/d", mode=0o755))
    mem_shard.ok(Mkdir("/d/sub"))
    write_file(mem_shard, "/d/f", [100, 50], 1)
    write_file(mem_shard, "/d/sub/g", [70], 10)
    mem_shard.ok(SnapshotAllow("/d"))
    return mem_shard


def inline(d: Driver, path: str, data: bytes) -> None:
    d.ok(CreateInline.of(path, data), d.session(), 1)


def take(d: Driver, name: str = "s1") -> dict[str, object]:
    result: dict[str, object] = d.ok(SnapshotTake("/d", name, 1234))
    return result


def test_a_snapshot_reads_the_tree_as_it_was(d: Driver) -> None:
    assert take(d)["records"] == 6  # the entries and self-records of /d and sub, f, g
    d.ok(Delete("/d/sub", recursive=True))
    inline(d, "/d/new", b"fresh")
    s = sm(d)
    assert [e.name for e in s.list_dir("/d/.snapshot/s1").entries] == ["f", "sub"]
    assert [e.path for e in s.list_dir("/d/.snapshot/s1/sub").entries] == ["/d/.snapshot/s1/sub/g"]
    info = s.stat("/d/.snapshot/s1/sub/g")
    assert info.path == "/d/.snapshot/s1/sub/g" and info.length == 70
    assert [b.block_id for b in info.blocks] == [10]
    assert s.stat("/d/.snapshot/s1").is_dir
    assert s.check_access("/d/.snapshot/s1/f", 4).length == 150
    assert s.content_summary("/d/.snapshot/s1").file_count == 2
    with pytest.raises(NotFound):
        s.stat("/d/.snapshot/s1/new")
    # the .snapshot directory lists the snapshots
    assert s.stat("/d/.snapshot").is_dir
    assert [e.path for e in s.list_dir("/d/.snapshot").entries] == ["/d/.snapshot/s1"]
    assert s.snapshots("/d") == [{"name": "s1", "created": 1234}]
    assert s.exists("/d/.snapshot/s1/f") and not s.exists("/d/.snapshot/s2")


def test_inline_files_read_from_their_copy(d: Driver) -> None:
    inline(d, "/d/small", b"old bytes")
    take(d)
    d.ok(Delete("/d/small"))
    inline(d, "/d/small", b"new")
    assert sm(d).check_access("/d/.snapshot/s1/small", 4, with_data=True).data == b"old bytes"


def test_blocks_a_snapshot_holds_are_never_queued_and_are_released_with_it(d: Driver) -> None:
    take(d)
    d.ok(Delete("/d/f"))  # delete
    s = d.session()
    d.ok(Create("/d/sub/g", overwrite=True), s, 1)  # overwrite
    d.ok(CompleteFile("/d/sub/g", 0), s, 2)
    assert queued(d) == set()
    assert held(d, 1, 2, 10) == {1, 2, 10}
    d.ok(SnapshotDrop("/d", "s1"))
    assert held(d, 1, 2, 10) == set()  # no record references them: the orphans' now
    assert queued(d) == set()
    assert sm(d).snapshots("/d") == []
    assert not any(k.startswith(snapshots.COPY) for k, _ in state(sm(d)))


def test_truncate_and_append_keep_the_snapshot_blocks(d: Driver) -> None:
    take(d)
    s = d.session()
    d.ok(Truncate("/d/f", 100), s, 1)  # at a block boundary: block 2 goes
    assert queued(d) == set() and held(d, 2) == {2}
    d.ok(Append("/d/f"), s, 2)
    d.ok(CompleteFile("/d/f", 100), s, 3)
    assert [b.block_id for b in sm(d).stat("/d/.snapshot/s1/f").blocks] == [1, 2]
    # a block no snapshot holds is still queued as before
    write_file(d, "/d/h", [5], 20)
    d.ok(Delete("/d/h"))
    assert queued(d) == {20}


def test_a_truncate_inside_a_block_keeps_the_cut_block_for_the_snapshot(d: Driver) -> None:
    take(d)
    s = d.session()
    d.ok(Truncate("/d/f", 30), s, 1)  # inside block 1: its kept bytes copied to block 5
    d.ok(AddBlock("/d/f", 5, 1, None), s, 2)
    d.ok(CompleteFile("/d/f", 30), s, 3)
    assert [b.block_id for b in sm(d).stat("/d/f").blocks] == [5]
    assert [b.block_id for b in sm(d).stat("/d/.snapshot/s1/f").blocks] == [1, 2]
    assert queued(d) == set() and held(d, 1, 2) == {1, 2}


def test_two_snapshots_hold_blocks_until_both_are_gone(d: Driver) -> None:
    take(d, "a")
    take(d, "b")
    d.ok(Delete("/d/f"))
    d.ok(SnapshotDrop("/d", "a"))
    assert held(d, 1, 2) == {1, 2}
    d.ok(SnapshotDrop("/d", "b"))
    assert held(d, 1, 2) == set()


def test_diff(d: Driver) -> None:
    take(d, "s0")
    d.advance(1000)
    d.ok(Rename("/d/f", "/d/f2"))
    d.ok(Delete("/d/sub/g"))
    inline(d, "/d/sub/n", b"n")
    take(d, "s1")
    s = sm(d)
    before, after = s.snapshot_records("/d", "s0"), s.snapshot_records("/d", "s1")
    report = snapshots.diff("/d", before, after)
    assert {"type": "R", "path": "./f", "to": "./f2"} in report
    assert {"type": "-", "path": "./sub/g"} in report
    assert {"type": "+", "path": "./sub/n"} in report
    assert {"type": "M", "path": "./sub"} in report
    assert {"type": "M", "path": "."} in report
    assert len(report) == 5
    assert snapshots.diff("/d", after, s.snapshot_records("/d", None)) == []


def test_diff_of_a_renamed_directory() -> None:
    file = '[1,"f",420,"u","g",1,1,3,64,[[5,1,9]],0,0]'
    folder = '[1,"d",493,"u","g",1,1,0,0,[],0,0]'
    before = {"/d/a": folder, "/d/a/x": file}
    after = {"/d/b": folder, "/d/b/x": file}
    assert snapshots.diff("/d", before, after) == [{"type": "R", "path": "./a", "to": "./b"}]


def test_bad_input(d: Driver) -> None:
    take(d)
    d.err(SnapshotTake("/nowhere", "x"), "INVALID_ARGUMENT")  # not snapshottable
    d.ok(Mkdir("/e"))
    d.err(SnapshotTake("/e", "x"), "INVALID_ARGUMENT")
    assert take(d)["taken"] is False  # the same name again: kept as it was
    d.err(SnapshotAllow("/d", allow=False), "INVALID_ARGUMENT")  # it has snapshots
    d.err(SnapshotAllow("/d/sub"), "INVALID_ARGUMENT")  # nested
    d.err(SnapshotTake("/d", ".snapshot"), "INVALID_ARGUMENT")
    d.err(SnapshotTake("/d", "a/b"), "INVALID_PATH")
    # writes under .snapshot and the reserved name are refused
    for cmd in (
        Mkdir("/d/.snapshot/s1/x"),
        CreateInline.of("/d/.snapshot/s1/x", b""),
        Delete("/d/.snapshot/s1/f"),
        Rename("/d/f", "/d/.snapshot/s1/f"),
        Rename("/d/.snapshot/s1/f", "/d/f3"),
        Mkdir("/e/.snapshot"),
        Truncate("/d/.snapshot/s1/f", 0),
    ):
        result = d.apply(cmd)
        assert result.code == "INVALID_PATH", cmd
        assert "read-only" in str(result.error)
    with pytest.raises(NotFound):
        sm(d).stat("/d/.snapshot/nope/f")
    with pytest.raises(NotFound):
        sm(d).list_dir("/e/.snapshot")
    assert sm(d).stat("/d/.snapshot/s1/f").length == 150
    d.ok(SnapshotDrop("/d", "s1"))
    assert d.ok(SnapshotDrop("/d", "s1"))["dropped"] is False
    d.ok(SnapshotAllow("/d", allow=False))
    assert sm(d).snapshottable() == []


def test_permissions_are_the_snapshot_records(d: Driver) -> None:
    d.ok(Mkdir("/d/private", mode=0o700))
    write_file(d, "/d/private/p", [3], 30)
    take(d)
    with pytest.raises(Exception) as caught:
        sm(d).stat("/d/.snapshot/s1/private/p", caller=BOB)
    assert "PERMISSION" in type(caught.value).__name__.upper() or "denied" in str(caught.value)
    assert sm(d).stat("/d/.snapshot/s1/f", caller=BOB).length == 150


def test_snapshots_survive_a_raft_snapshot_and_a_replay(d: Driver) -> None:
    take(d)
    d.ok(Delete("/d/f"))
    fresh = ShardStateMachine(None, shard_id="shard-1")
    fresh.restore(sm(d).snapshot(), sm(d).applied_index())
    assert fresh.stat("/d/.snapshot/s1/f").length == 150
    assert fresh.referenced_blocks([1, 2]) == {1, 2}
    replayed = ShardStateMachine(None, shard_id="shard-1")
    d.replay_into(replayed)
    assert state(replayed) == state(sm(d))


def test_snapshot_paths() -> None:
    from keelfs.meta.paths import SnapshotPath, live_path, snapshot_path

    assert snapshot_path("/d/f") is None
    assert snapshot_path("/d/.snapshot") == SnapshotPath("/d", None, "/d")
    assert snapshot_path("/d/.snapshot/s/a/b") == SnapshotPath("/d", "s", "/d/a/b")
    assert snapshot_path("/.snapshot/s") == SnapshotPath("/", "s", "/")
    assert live_path("/.snapshot/s/x") == "/x"
    with pytest.raises(InvalidPath):
        from keelfs.meta.commands import check_path

        check_path("/a/.snapshot")


def test_a_snapshottable_directory_cannot_move_or_go(d: Driver) -> None:
    """Checked by the apply too (a rename that passed the master's check before the mark
    reached this shard is refused here): with snapshots, and without while snapshottable;
    an ancestor of one neither."""
    d.ok(Mkdir("/top"))
    d.ok(Mkdir("/top/in"))
    d.ok(SnapshotAllow("/top/in"))
    for cmd in (Rename("/d", "/top/d"), Delete("/d", recursive=True), Rename("/top", "/t2")):
        assert "is snapshottable" in str(d.err(cmd, "INVALID_ARGUMENT").error)
    take(d)
    for cmd in (Rename("/d", "/top/d"), Delete("/d", recursive=True)):
        assert "has snapshots" in str(d.err(cmd, "INVALID_ARGUMENT").error)
    d.ok(Rename("/d/sub", "/d/sub2"))  # inside it: as usual
    d.ok(SnapshotDrop("/d", "s1"))
    d.ok(SnapshotAllow("/d", allow=False))
    d.ok(Rename("/d", "/top/d"))


def test_a_part_too_large_is_refused_whole(d: Driver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapshots, "MAX_RECORDS_PER_SHARD", 3)
    before = state(sm(d))
    result = d.apply(SnapshotTake("/d", "big", 1))
    assert result.code == "RESOURCE_EXHAUSTED" and "more than 3 records" in str(result.error)
    after = [kv for kv in state(sm(d)) if not kv[0].startswith(b"\x01")]
    assert after == [kv for kv in before if not kv[0].startswith(b"\x01")]
    assert sm(d).snapshots("/d") == []


def test_a_rename_moves_the_part_with_its_blocks_and_a_retry_changes_nothing(d: Driver) -> None:
    take(d)
    d.ok(Delete("/d/f"))
    before = {k for k, _ in state(sm(d)) if k.startswith(snapshots.COPY)}
    assert d.ok(SnapshotRename("/d", "s1", "s2")) == {"renamed": True, "records": 6}
    s = sm(d)
    assert s.snapshots("/d") == [{"name": "s2", "created": 1234}]
    assert s.stat("/d/.snapshot/s2/f").length == 150 and not s.exists("/d/.snapshot/s1")
    after = {k for k, _ in state(s) if k.startswith(snapshots.COPY)}
    assert len(after) == len(before) and not after & before
    assert held(d, 1, 2, 10) == {1, 2, 10} and queued(d) == set()  # the copies still hold them
    snap = state(s)
    assert d.ok(SnapshotRename("/d", "s1", "s2")) == {"renamed": False}  # finished already
    assert state(s) == snap
    d.ok(SnapshotDrop("/d", "s2"))
    assert held(d, 1, 2, 10) == {10}  # /d/sub/g is live still; /d/f's blocks are the orphans'


def test_a_rename_onto_another_snapshot_is_refused_and_changes_nothing(d: Driver) -> None:
    take(d, "a")
    take(d, "b")
    snap = state(sm(d))
    d.err(SnapshotRename("/d", "a", "b"), "ALREADY_EXISTS")
    assert state(sm(d)) == snap
    d.err(SnapshotRename("/d", "a", "a"), "INVALID_ARGUMENT")
    d.err(SnapshotRename("/d", "a", ".snapshot"), "INVALID_ARGUMENT")
    assert state(sm(d)) == snap
