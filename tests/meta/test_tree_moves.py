"""A directory tree moved across shards in steps, as two shards' state machines see it
(``keelfs.meta.tree_fences``, ``keelfs.meta.tree_move_steps``), and the driver's planning
(``keelfs.master.tree_move``): what the user would check is that the tree is readable
whole under exactly one name at every point, that nobody can change it while it moves, and
that an aborted move leaves the old tree as it was and nothing of the new one."""

from __future__ import annotations

import json

from meta_helpers import Driver, formatted

from keelfs.master import subtree
from keelfs.master.tree_move import pages, stage_parts
from keelfs.meta.commands import (
    CompleteFile,
    Create,
    Mkdir,
    MoveTreeAbort,
    MoveTreeDrop,
    MoveTreeFence,
    MoveTreeStage,
    Rename,
    SnapshotAllow,
    TxnBegin,
    TxnDecide,
    TxnFinish,
    TxnPrepare,
)
from keelfs.meta.namespace import ShardStateMachine
from keelfs.meta.shardmap import ShardMap
from keelfs.meta.transactions import Step, encode_part

MOVE = 41
TXN = 77


def _shards() -> tuple[Driver, Driver]:
    """A holds the whole old tree /src (its entry and every record: the coordinator); B is
    where the moved records go."""
    a = formatted(ShardStateMachine(shard_id="shard-a"))
    b = formatted(ShardStateMachine(shard_id="shard-b"))
    s = a.session()
    a.ok(Mkdir("/src"))
    a.ok(Mkdir("/src/d"))
    for i, path in enumerate(["/src/f", "/src/d/g"]):
        a.ok(Create(path), s, 2 * i + 1)
        a.ok(CompleteFile(path), s, 2 * i + 2)
    return a, b


def _fence(a: Driver, b: Driver) -> None:
    a.ok(MoveTreeFence(MOVE, "/src", "/dst", "shard-a", ("shard-a", "shard-b")))
    b.ok(MoveTreeFence(MOVE, "/src", "/dst", "shard-a"))


def _record(d: Driver, key: bytes) -> str:
    raw = d.sm._store.get(key)  # type: ignore[attr-defined]
    assert raw is not None
    return bytes(raw).decode()


def _stage(a: Driver, b: Driver) -> None:
    """What the driver copies: every record of /src, under /dst, onto B."""
    from keelfs.meta.shard_records import _entry_key, _self_key

    steps = [
        Step("put_self", "/dst", _record(a, _self_key("/src"))),
        Step("put_self", "/dst/d", _record(a, _self_key("/src/d"))),
        Step("put_entry", "/dst/d", _record(a, _entry_key("/src/d"))),
        Step("put_entry", "/dst/f", _record(a, _entry_key("/src/f"))),
        Step("put_entry", "/dst/d/g", _record(a, _entry_key("/src/d/g"))),
    ]
    assert b.ok(MoveTreeStage(MOVE, encode_part(steps)))["staged"] == 5


def _switch_parts(a: Driver) -> tuple[str, str]:
    from keelfs.meta.shard_records import _entry_key

    top = _record(a, _entry_key("/src"))
    own = [
        Step("tree_switch", "/src", str(MOVE)),
        Step("entry", "/src", top),
        Step("del_entry", "/src"),
        Step("touch", "/"),
        Step("absent", "/dst"),
        Step("put_entry", "/dst", top),
    ]
    theirs = [Step("tree_switch", "/src", str(MOVE))]
    return encode_part(own), encode_part(theirs)


def _begin_switch(a: Driver, b: Driver) -> None:
    own, theirs = _switch_parts(a)
    a.ok(TxnBegin(TXN, own, json.dumps({"shard-b": theirs}), "rename", "{}"))
    assert b.ok(TxnPrepare(TXN, "shard-a", theirs))["state"] == "prepared"


def _drop_all(d: Driver) -> int:
    dropped = 0
    while True:
        out = d.ok(MoveTreeDrop(MOVE, 2))
        dropped += out["dropped"]
        if out["done"]:
            return dropped


def test_fenced_tree_refuses_changes_and_stays_readable() -> None:
    a, b = _shards()
    _fence(a, b)
    s = a.session()
    assert a.err(Create("/src/new"), "UNAVAILABLE", s, 1).error["reason"] == "locked"
    a.err(Mkdir("/src/d/e"), "UNAVAILABLE")
    a.err(Rename("/src/f", "/src/h"), "UNAVAILABLE")
    a.err(Mkdir("/dst"), "UNAVAILABLE")  # the target's name is held too
    a.ok(Mkdir("/elsewhere"))  # outside both trees: untouched
    assert a.sm.stat("/src/d/g").is_dir is False  # type: ignore[attr-defined]
    assert a.sm.lock_holder("/src/d/g") == 0  # type: ignore[attr-defined]
    _stage(a, b)
    # the copies are there on B but hidden: a reader waits for the move's end
    assert b.sm.lock_holder("/dst/d/g") == MOVE  # type: ignore[attr-defined]
    assert b.sm.lock_holder("/dst") == 0  # type: ignore[attr-defined]
    b.err(Create("/dst/x"), "UNAVAILABLE", b.session(), 1)


def test_switch_then_drop_leaves_the_new_tree_only() -> None:
    a, b = _shards()
    _fence(a, b)
    _stage(a, b)
    _begin_switch(a, b)
    # prepared: readers below /src wait on both shards (no old tree after the new one)
    assert a.sm.lock_holder("/src/d") == TXN  # type: ignore[attr-defined]
    assert b.sm.lock_holder("/src/d") == TXN  # type: ignore[attr-defined]
    a.err(MoveTreeAbort(MOVE), "UNAVAILABLE")  # an abort waits for the decision
    assert a.ok(TxnDecide(TXN, True))["state"] == "committed"
    assert b.ok(TxnFinish(TXN, True))["state"] == "committed"
    assert [f.state for f in b.sm.tree_fences()] == ["switched"]  # type: ignore[attr-defined]
    assert not a.sm.exists("/src")  # type: ignore[attr-defined]
    assert a.sm.stat("/dst").is_dir  # type: ignore[attr-defined]
    assert b.sm.stat("/dst/d/g").is_dir is False  # type: ignore[attr-defined]
    assert b.sm.lock_holder("/dst/d/g") == 0  # type: ignore[attr-defined]
    b.ok(Create("/dst/new"), b.session(), 1)  # the new tree is live
    assert a.sm.lock_holder("/src/d/g") == MOVE  # type: ignore[attr-defined]
    a.err(Mkdir("/src"), "UNAVAILABLE")  # the old name is free once dropped
    assert _drop_all(a) == 5  # /src's self-record, /src/d's, three entries
    assert _drop_all(b) == 0
    assert not a.sm.tree_fences() and not b.sm.tree_fences()  # type: ignore[attr-defined]
    assert a.sm.lock_holder("/src/d/g") == 0  # type: ignore[attr-defined]
    assert not a.sm.exists("/src/d/g")  # type: ignore[attr-defined]
    a.ok(Mkdir("/src"))
    # a late command of the settled move is refused
    a.err(MoveTreeFence(MOVE, "/src", "/dst", "shard-a"), "INVALID_ARGUMENT")


def test_abort_drops_the_copies_and_frees_the_tree() -> None:
    a, b = _shards()
    _fence(a, b)
    _stage(a, b)
    assert a.ok(MoveTreeAbort(MOVE))["state"] == "aborted"
    # no switch can commit after the coordinator's abort
    own, _ = _switch_parts(a)
    a.err(TxnBegin(TXN, own, json.dumps({"shard-b": own}), "rename", "{}"), "UNAVAILABLE")
    b.ok(MoveTreeAbort(MOVE))
    a.ok(Create("/src/new"), a.session(), 1)  # the old tree is live again at once
    assert b.sm.lock_holder("/dst/d") == MOVE  # type: ignore[attr-defined]
    b.err(Mkdir("/dst"), "UNAVAILABLE")  # until the copies are gone
    assert _drop_all(b) == 5
    assert _drop_all(a) == 0
    assert not b.sm.exists("/dst/d")  # type: ignore[attr-defined]
    assert a.sm.stat("/src/d/g").is_dir is False  # type: ignore[attr-defined]
    b.ok(Mkdir("/dst"))
    # a shard the abort reached before its fence: the late fence is refused
    c = formatted(ShardStateMachine(shard_id="shard-c"))
    c.ok(MoveTreeAbort(MOVE))
    c.err(MoveTreeFence(MOVE, "/src", "/dst", "shard-a"), "INVALID_ARGUMENT")


def test_fence_refusals() -> None:
    a, b = _shards()
    a.ok(Mkdir("/taken"))
    a.err(MoveTreeFence(MOVE, "/src", "/taken", "shard-a"), "ALREADY_EXISTS")
    a.err(MoveTreeFence(MOVE, "/src", "/src/d/x", "shard-a"), "INVALID_ARGUMENT")
    _fence(a, b)
    a.err(MoveTreeFence(MOVE + 1, "/src/d", "/other", "shard-a"), "UNAVAILABLE")
    a.ok(Mkdir("/other"))
    a.err(MoveTreeFence(MOVE + 1, "/other", "/src/d/new", "shard-a"), "UNAVAILABLE")
    # the records staged must be the target's
    bad = encode_part([Step("put_entry", "/src/x", _record(a, b"E/src\x00f"))])
    b.err(MoveTreeStage(MOVE, bad), "INVALID_ARGUMENT")
    # another transaction reaching into the fenced tree is refused at begin
    record = _record(a, b"E/src\x00f")
    own = encode_part([Step("entry", "/src/f", record), Step("del_entry", "/src/f")])
    theirs = encode_part([Step("absent", "/g"), Step("put_entry", "/g", record)])
    a.err(TxnBegin(TXN, own, json.dumps({"shard-b": theirs}), "rename", "{}"), "UNAVAILABLE")


def test_pages_cut_by_records_and_bytes() -> None:
    steps = [Step("put_entry", f"/d/f{i}", "x" * 100) for i in range(10)]
    assert [len(p) for p in pages(steps, max_records=4)] == [4, 4, 2]
    sized = [len(p) for p in pages(steps, max_records=100, max_bytes=3 * 130)]
    assert sized == [3, 3, 3, 1]
    big = [Step("put_entry", "/d/big", "x" * 1000), *steps[:2]]
    assert [len(p) for p in pages(big, max_bytes=500)] == [1, 2]  # alone when too large
    assert [s for p in pages(steps, max_records=3) for s in p] == steps


def test_stage_parts_place_every_record_on_its_new_directory_shard() -> None:
    m = ShardMap(version=1, shards={"s1": {1: "a"}, "s2": {2: "b"}, "s3": {3: "c"}})
    a, _ = _shards()
    from keelfs.meta.shard_records import _entry_key, _self_key

    dirs = [
        subtree.DirRecords(
            "/src",
            _record(a, _self_key("/src")),
            (
                ("/src/d", _record(a, _entry_key("/src/d")), True),
                ("/src/f", _record(a, _entry_key("/src/f")), False),
            ),
        ),
        subtree.DirRecords(
            "/src/d",
            _record(a, _self_key("/src/d")),
            (("/src/d/g", _record(a, _entry_key("/src/d/g")), False),),
        ),
    ]
    parts = stage_parts(m, dirs, "/src", "/x/y")
    placed = {(s.kind, s.path): shard for shard, steps in parts.items() for s in steps}
    assert placed == {
        ("put_self", "/x/y"): m.shard_for_directory("/x/y"),
        ("put_entry", "/x/y/d"): m.shard_for_directory("/x/y"),
        ("put_entry", "/x/y/f"): m.shard_for_directory("/x/y"),
        ("put_self", "/x/y/d"): m.shard_for_directory("/x/y/d"),
        ("put_entry", "/x/y/d/g"): m.shard_for_directory("/x/y/d"),
    }
    files = [s for steps in parts.values() for s in steps if s.path == "/x/y/f"]
    assert files[0].record == _record(a, _entry_key("/src/f"))  # a file's record as it was


def test_a_fence_over_a_snapshottable_directory_is_refused() -> None:
    """An allow-snapshot that lands between the master's check and the move's first step: the
    fence refuses, as a rename's apply does (snapshots are kept by path), changing nothing."""
    a, b = _shards()
    a.ok(SnapshotAllow("/src/d"))
    a.err(
        MoveTreeFence(MOVE, "/src", "/dst", "shard-a", ("shard-a", "shard-b")), "INVALID_ARGUMENT"
    )
    assert a.sm.tree_fences() == []  # type: ignore[attr-defined]
