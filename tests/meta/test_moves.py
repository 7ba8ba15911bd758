"""Online resharding in the state machines: range states, the guard, the config group's plan.

Two in-memory shards and a config group are driven through the move commands in the order
``keelfs.master.resharding`` uses them; what a user would see at each step is asserted: the
files stay readable while frozen, writes wait, the old shard redirects once the move commits,
nothing is lost or doubled, and an aborted move leaves everything as it was."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from meta_helpers import Driver, formatted

from keelfs.meta.commands import (
    AddShard,
    BeginMove,
    Create,
    Delete,
    Envelope,
    FinishMove,
    Mkdir,
    MoveDrop,
    MoveFreeze,
    MoveIngest,
    MoveSettle,
    RegisterMaster,
    RemoveShard,
    SealRing,
    SwitchMove,
)
from keelfs.meta.namespace import ShardStateMachine
from keelfs.meta.ranges import FROZEN, INCOMING, MOVED, RangeTable, pairs, texts
from keelfs.meta.reshard_plan import DONE, SWITCHED
from keelfs.meta.ring import HASH_MAX, HashRing, changed_ranges, key_hash
from keelfs.meta.shardmap import ConfigStateMachine

ALL = texts([(0, HASH_MAX)])


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def around(directory: str) -> tuple[str, ...]:
    """A range holding just ``directory``'s hash."""
    h = key_hash(directory)
    return texts([(h, h)])


def copy(src: Driver, dst: Driver, txn_id: int, ranges: tuple[str, ...]) -> int:
    dst.ok(MoveIngest(txn_id, ranges, "src"))
    page = src.sm.move_records(txn_id)  # type: ignore[attr-defined]
    if page:
        keys = tuple(_b64(k) for k, _ in page)
        values = tuple(_b64(v) for _, v in page)
        dst.ok(MoveIngest(txn_id, ranges, "src", keys, values))
    return len(page)


def drop(d: Driver, txn_id: int, final: bool = False) -> None:
    keys = tuple(_b64(k) for k, _ in d.sm.move_records(txn_id))  # type: ignore[attr-defined]
    if keys or final:
        d.ok(MoveDrop(txn_id, keys, final))


class Writer:
    """One client session on a shard (creates need one), numbering its commands."""

    def __init__(self, d: Driver) -> None:
        self.d, self.sid, self.seq = d, d.session(), 0

    def apply(self, cmd: Any) -> Any:
        self.seq += 1
        return self.d.apply(cmd, self.sid, self.seq)

    def ok(self, cmd: Any) -> Any:
        result = self.apply(cmd)
        assert result.ok, result.error
        return result.value

    def err(self, cmd: Any, code: str) -> Any:
        result = self.apply(cmd)
        assert result.code == code, result
        return result


@pytest.fixture
def pair() -> tuple[Driver, Driver]:
    src = formatted(ShardStateMachine(shard_id="src"))
    dst = Driver(ShardStateMachine(shard_id="dst"))
    src.ok(Mkdir("/d"))
    w = Writer(src)
    for i in range(5):
        w.ok(Create(f"/d/f{i}"))
    return src, dst


def test_range_table_later_settings_cut_older_ones() -> None:
    t = RangeTable().with_state(10, 100, MOVED, 1, "a", 5)
    t = t.with_state(40, 60, INCOMING, 2, "b")
    assert [(r.first, r.last, r.state) for r in t] == [
        (10, 39, MOVED),
        (40, 60, INCOMING),
        (61, 100, MOVED),
    ]
    assert t.lookup(50).txn_id == 2 and t.lookup(9) is None and t.lookup(100).peer == "a"
    assert RangeTable.decode(t.encode()).lookup(70).version == 5
    assert pairs(texts([(1, 2), (0, HASH_MAX)])) == [(1, 2), (0, HASH_MAX)]
    for bad in ([], ["5:1"], ["x:1"], [f"0:{HASH_MAX + 1}"]):
        with pytest.raises(Exception, match="range"):
            pairs(bad)


def test_a_committed_move_keeps_every_file_once(pair: tuple[Driver, Driver]) -> None:
    src, dst = pair
    ranges = around("/d")
    src.ok(MoveFreeze(7, ranges, "dst"))
    # frozen: reads go on, writes wait ("locked" is not an answer, the master re-proposes)
    assert src.sm.stat("/d/f1").path == "/d/f1"
    Writer(src).err(Create("/d/new"), "UNAVAILABLE")
    assert copy(src, dst, 7, ranges) == 6  # the directory's self-record and its 5 entries
    # the target holds them but serves nothing of them before the decision
    Writer(dst).err(Create("/d/x"), "UNAVAILABLE")
    assert dst.sm.range_of("/d").state == INCOMING
    src.ok(MoveSettle(7, ranges, "dst", True, True, 42))
    dst.ok(MoveSettle(7, ranges, "src", False, True, 42))
    # the source redirects everything about the directory, naming the map version
    result = Writer(src).err(Create("/d/late"), "REDIRECT")
    assert result.error["shard_id"] == "dst" and result.error["map_version"] == 42
    assert src.sm.range_of("/d").state == MOVED
    # the target owns it now
    assert dst.sm.range_of("/d") is None
    assert [e.name for e in dst.sm.list_dir("/d").entries] == [f"f{i}" for i in range(5)]
    Writer(dst).ok(Create("/d/after"))
    drop(src, 7)
    assert src.sm.move_records(7) == []
    assert not src.sm.exists("/d/f0") or src.sm.range_of("/d").state == MOVED
    # a late command of the settled move (a driver that lost its leadership) changes nothing
    src.err(MoveFreeze(7, ranges, "dst"), "INVALID_ARGUMENT")
    dst.err(MoveIngest(7, ranges, "src"), "INVALID_ARGUMENT")
    # other directories on the source are untouched
    src.ok(Mkdir("/other"))


def test_an_aborted_move_changes_nothing(pair: tuple[Driver, Driver]) -> None:
    src, dst = pair
    ranges = around("/d")
    src.ok(MoveFreeze(8, ranges, "dst"))
    copy(src, dst, 8, ranges)
    src.ok(MoveSettle(8, ranges, "dst", True, False))
    dst.ok(MoveSettle(8, ranges, "src", False, False))
    assert dst.sm.range_of("/d").state == INCOMING  # still invisible until dropped
    drop(dst, 8, final=True)
    assert dst.sm.range_of("/d") is None and dst.sm.move_records(8) == []
    assert not dst.sm.exists("/d/f0")
    assert src.sm.range_of("/d") is None
    Writer(src).ok(Create("/d/again"))  # the source serves writes again
    assert len(src.sm.list_dir("/d").entries) == 6
    # an abort cannot turn into a commit
    src.err(MoveSettle(8, ranges, "dst", True, True, 9), "INVALID_ARGUMENT")


def test_a_freeze_waits_for_a_cross_shard_transaction_lock(pair: tuple[Driver, Driver]) -> None:
    from keelfs.meta.commands import TxnBegin
    from keelfs.meta.transactions import Step, encode_part

    src, _ = pair
    part = encode_part([Step("del_entry", "/d/f0")])
    theirs = json.dumps({"other": encode_part([Step("absent", "/x/f0")])})
    src.ok(TxnBegin(99, part, theirs, "rename", "{}"))
    src.err(MoveFreeze(3, around("/d"), "dst"), "UNAVAILABLE")


def test_files_being_written_move_without_their_lease(pair: tuple[Driver, Driver]) -> None:
    src, dst = pair
    writer = Writer(src)
    sid = writer.sid
    writer.ok(Create("/d/open"))
    assert src.sm.lease_expiry(sid) is not None
    ranges = around("/d")
    src.ok(MoveFreeze(4, ranges, "dst"))
    copy(src, dst, 4, ranges)
    src.ok(MoveSettle(4, ranges, "dst", True, True, 2))
    dst.ok(MoveSettle(4, ranges, "src", False, True, 2))
    assert src.sm.lease_expiry(sid) is None  # released on the source
    moved = dst.sm.stat("/d/open")
    assert moved.under_construction and moved.lease_holder == 0


def _config() -> Driver:
    c = Driver(ConfigStateMachine(vnodes=16))
    for node in (1, 2, 3, 4):
        c.ok(RegisterMaster(node, f"127.0.0.1:{9000 + node}"))
    return c


def test_shards_join_the_ring_at_once_before_the_namespace_exists() -> None:
    c = _config()
    c.ok(AddShard("s1", (1,)))
    c.ok(AddShard("s2", (2,)))
    m = c.sm.shard_map()
    assert m.ring.shards == ("s1", "s2") and not m.resharding
    assert c.sm.reshard_plan() is None


def test_adding_a_shard_to_a_sealed_ring_moves_ranges_step_by_step() -> None:
    c = _config()
    c.ok(AddShard("s1", (1,)))
    c.ok(AddShard("s2", (2,)))
    c.ok(SealRing())
    before = c.sm.shard_map()
    out = c.ok(AddShard("s3", (3,)))
    m = c.sm.shard_map()
    assert out["moves"] > 0 and m.resharding
    assert "s3" in m.shards and m.ring.shards == ("s1", "s2")
    probe = [f"/dir{i}" for i in range(300)]
    assert [m.shard_for_directory(d) for d in probe] == [
        before.shard_for_directory(d) for d in probe
    ]  # nothing is routed to s3 before a move switches
    c.err(AddShard("s4", (4,)), "INVALID_ARGUMENT")  # one resharding at a time
    plan = c.sm.reshard_plan()
    assert plan is not None and {mv.target for mv in plan.moves} == {"s3"}
    for i, mv in enumerate(plan.moves):
        c.err(SwitchMove(i, 5), "INVALID_ARGUMENT")  # not the recorded attempt
        c.ok(BeginMove(i, 100 + i))
        version = c.ok(SwitchMove(i, 100 + i))["version"]
        assert c.sm.reshard_plan().moves[i].state == SWITCHED
        m = c.sm.shard_map()
        assert m.version == version
        h = mv.ranges[0][0]
        assert m.owner_of_hash(h) == "s3"
        c.ok(FinishMove(i, 100 + i))
    final = c.sm.shard_map()
    assert c.sm.reshard_plan() is None and not final.resharding
    assert final.ring.shards == ("s1", "s2", "s3") and final.overrides == ()
    expected = HashRing(("s1", "s2", "s3"), 16)
    assert [final.shard_for_directory(d) for d in probe] == [expected.lookup(d) for d in probe]


def test_removing_a_shard_moves_all_of_its_ranges_away() -> None:
    c = _config()
    for s, n in (("s1", 1), ("s2", 2), ("s3", 3)):
        c.ok(AddShard(s, (n,)))
    c.ok(SealRing())
    c.ok(RemoveShard("s2"))
    plan = c.sm.reshard_plan()
    assert plan is not None and {mv.source for mv in plan.moves} == {"s2"}
    old, new = HashRing(("s1", "s2", "s3"), 16), HashRing(("s1", "s3"), 16)
    assert sum(len(mv.ranges) for mv in plan.moves) == len(changed_ranges(old, new))
    for i in range(len(plan.moves)):
        c.ok(BeginMove(i, 10 + i))
        c.ok(SwitchMove(i, 10 + i))
        c.ok(FinishMove(i, 10 + i))
    m = c.sm.shard_map()
    assert sorted(m.shards) == ["s1", "s3"] and not m.resharding
    assert all(mv.state == DONE for mv in plan.moves) or c.sm.reshard_plan() is None


def test_the_range_check_covers_every_record_of_the_whole_space(
    pair: tuple[Driver, Driver],
) -> None:
    """A move of the whole hash space takes the root too: everything redirects after it."""
    src, dst = pair
    src.ok(MoveFreeze(5, ALL, "dst"))
    n = copy(src, dst, 5, ALL)
    assert n == 1 + 2 + 5  # the root's self-record, /d's entry and self-record, 5 files
    src.ok(MoveSettle(5, ALL, "dst", True, True, 3))
    dst.ok(MoveSettle(5, ALL, "src", False, True, 3))
    src.err(Mkdir("/e"), "REDIRECT")
    dst.ok(Mkdir("/e"))
    assert sorted(e.name for e in dst.sm.list_dir("/").entries) == ["d", "e"]
    assert src.sm.range_of("/").state == MOVED and dst.sm.range_of("/") is None
    assert FROZEN != MOVED


def test_a_create_only_needs_its_own_directory_to_stay(pair: tuple[Driver, Driver]) -> None:
    """/d/sub stays while /d moves: a create in /d/sub touches /d's entry of sub only if it
    is here, so the moved (leftover) record reads as absent instead of redirecting."""
    src, dst = pair
    src.ok(Mkdir("/d/sub"))
    ranges = around("/d")
    assert src.sm.range_of("/d/sub") is None or around("/d/sub") == ranges
    src.ok(MoveFreeze(6, ranges, "dst"))
    copy(src, dst, 6, ranges)
    src.ok(MoveSettle(6, ranges, "dst", True, True, 11))
    dst.ok(MoveSettle(6, ranges, "src", False, True, 11))
    Writer(src).ok(Create("/d/sub/file"))  # its home, /d/sub, is still here
    assert src.sm.exists("/d/sub/file")
    Writer(src).err(Create("/d/other"), "REDIRECT")  # its home, /d, is not


def _move_out(src: Driver, dst: Driver, directory: str, txn_id: int) -> None:
    ranges = around(directory)
    src.ok(MoveFreeze(txn_id, ranges, "dst"))
    copy(src, dst, txn_id, ranges)
    src.ok(MoveSettle(txn_id, ranges, "dst", True, True, 42))
    dst.ok(MoveSettle(txn_id, ranges, "src", False, True, 42))
    drop(src, txn_id)


def test_a_replayed_seq_after_a_move_gets_its_first_reply_or_never_applies(
    pair: tuple[Driver, Driver],
) -> None:
    """A client whose delete's reply was lost asks the source again once the directory has
    moved (``Envelope.replay``): an applied seq gets its recorded reply, not a REDIRECT; a seq
    never applied is answered REDIRECT, and that answer sticks: the first attempt, arriving
    late, is not applied either."""
    src, dst = pair
    w = Writer(src)
    applied = w.ok(Delete("/d/f1"))
    _move_out(src, dst, "/d", 9)
    replayed = src.raw(Envelope(Delete("/d/f1"), src.now, w.sid, w.seq, replay=True).encode())
    assert replayed.ok and replayed.value == applied
    # a seq the source never saw: not applied, and never will be
    late = Envelope(Delete("/d/f2"), src.now, w.sid, w.seq + 1)
    result = src.raw(Envelope(late.command, src.now, w.sid, w.seq + 1, replay=True).encode())
    assert result.code == "REDIRECT" and "not applied" in result.error["message"]
    assert src.raw(late.encode()).code == "REDIRECT"
    assert dst.sm.exists("/d/f2")  # the new owner still has it, for the client to delete
    # the replay mark travels in the entry only when set; it needs a session's seq
    assert b"replay" not in late.encode()
    bad = json.loads(Envelope(Delete("/d/f3"), src.now).encode())
    bad["replay"] = True
    assert src.raw(json.dumps(bad).encode()).code == "INVALID_ARGUMENT"
