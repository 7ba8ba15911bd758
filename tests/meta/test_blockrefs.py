"""The block reference index (``keelfs.meta.blockrefs``): what the orphan collector's
authoritative answer rests on. Every way a file's blocks can be held by a shard (an entry, a
renamed entry, a prepared participant, a pending coordinator, a moved-in copy) must show in
``referenced_blocks``, and every way they arrive from elsewhere must move ``blocks_gained``."""

from __future__ import annotations

import json
from pathlib import Path

from meta_helpers import Driver, formatted, state

from keelfs.meta.commands import (
    AddBlock,
    CompleteFile,
    Create,
    Delete,
    Mkdir,
    RecoverLease,
    Rename,
    TxnBegin,
    TxnDecide,
    TxnFinish,
    TxnPrepare,
)
from keelfs.meta.namespace import ShardStateMachine
from keelfs.meta.shard_records import _entry_key
from keelfs.meta.transactions import Step, encode_part


def _file(d: Driver, path: str, block_ids: list[int]) -> None:
    s = d.session()
    d.ok(Create(path), s, 1)
    for i, block_id in enumerate(block_ids):
        d.ok(AddBlock(path, block_id, 1, 10 if i else None), s, 2 + i)
    d.ok(CompleteFile(path, 10), s, 2 + len(block_ids))


def _sm(d: Driver) -> ShardStateMachine:
    assert isinstance(d.sm, ShardStateMachine)
    return d.sm


def test_entries_reference_their_blocks_until_deleted() -> None:
    d = formatted(ShardStateMachine(shard_id="s"))
    d.ok(Mkdir("/a"))
    _file(d, "/a/f", [101, 102])
    sm = _sm(d)
    assert sm.referenced_blocks([101, 102, 103]) == {101, 102}
    assert sm.blocks_gained() == 0  # new blocks are not "gained"
    d.ok(Rename("/a/f", "/a/g"))
    assert sm.referenced_blocks([101, 102]) == {101, 102}
    assert sm.blocks_gained() == 0  # a rename within the shard gains nothing
    d.ok(Delete("/a/g"))
    assert sm.referenced_blocks([101, 102]) == set()
    assert [b.block_id for b in sm.pending_block_deletes()] == [101, 102]


def test_a_dropped_last_block_is_no_longer_referenced() -> None:
    d = formatted(ShardStateMachine(shard_id="s", lease_ttl_ms=1000))
    s = d.session()
    d.ok(Create("/f"), s, 1)
    d.ok(AddBlock("/f", 7, 1), s, 2)
    d.advance(5_000)
    d.ok(Mkdir("/tick"))  # the lease expires by log time
    d.ok(RecoverLease("/f", drop_last=True))
    assert _sm(d).referenced_blocks([7]) == set()


def test_a_cross_shard_rename_is_referenced_somewhere_at_every_step() -> None:
    a = formatted(ShardStateMachine(shard_id="shard-a"))
    b = formatted(ShardStateMachine(shard_id="shard-b"))
    a.ok(Mkdir("/src"))
    b.ok(Mkdir("/dst"))
    _file(a, "/src/f", [5])
    record = bytes(_sm(a)._store.get(_entry_key("/src/f")) or b"").decode()
    own = encode_part([Step("entry", "/src/f", record), Step("del_entry", "/src/f")])
    theirs = encode_part(
        [Step("dir", "/dst"), Step("absent", "/dst/f"), Step("put_entry", "/dst/f", record)]
    )

    def holders() -> set[str]:
        return {d.sm.shard_id for d in (a, b) if _sm(d).referenced_blocks([5])}  # type: ignore[attr-defined]

    a.ok(TxnBegin(9, own, json.dumps({"shard-b": theirs}), "rename", "{}"))
    assert holders() == {"shard-a"}
    gained = _sm(b).blocks_gained()
    b.ok(TxnPrepare(9, "shard-a", theirs))
    assert holders() == {"shard-a", "shard-b"}  # the prepared record holds it
    assert _sm(b).blocks_gained() == gained + 1  # it arrived from elsewhere
    a.ok(TxnDecide(9, True))
    assert holders() == {"shard-b"}  # source entry gone; B's prepared record still holds it
    b.ok(TxnFinish(9, True))
    assert holders() == {"shard-b"}  # now as an entry
    assert _sm(b).blocks_gained() == gained + 1  # record -> entry is no new arrival


def test_an_aborted_prepare_lets_go_and_the_source_keeps_it() -> None:
    a = formatted(ShardStateMachine(shard_id="shard-a"))
    b = formatted(ShardStateMachine(shard_id="shard-b"))
    a.ok(Mkdir("/src"))
    b.ok(Mkdir("/dst"))
    _file(a, "/src/f", [6])
    record = bytes(_sm(a)._store.get(_entry_key("/src/f")) or b"").decode()
    theirs = encode_part([Step("dir", "/dst"), Step("put_entry", "/dst/f", record)])
    b.ok(TxnPrepare(3, "shard-a", theirs))
    assert _sm(b).referenced_blocks([6]) == {6}
    b.ok(TxnFinish(3, False))
    assert _sm(b).referenced_blocks([6]) == set()
    assert _sm(a).referenced_blocks([6]) == {6}


def test_moved_in_copies_count_while_hidden_and_until_dropped() -> None:
    from test_moves import around, copy, drop

    from keelfs.meta.commands import MoveFreeze, MoveSettle
    from keelfs.meta.ranges import INCOMING

    src = formatted(ShardStateMachine(shard_id="src"))
    dst = Driver(ShardStateMachine(shard_id="dst"))
    src.ok(Mkdir("/d"))
    _file(src, "/d/f", [11])
    ranges = around("/d")
    before = _sm(dst).blocks_gained()
    src.ok(MoveFreeze(7, ranges, "dst"))
    assert copy(src, dst, 7, ranges) > 0
    assert _sm(dst).range_of("/d").state == INCOMING  # invisible while incoming...
    assert _sm(dst).referenced_blocks([11]) == {11}  # ...but referenced
    assert _sm(dst).blocks_gained() == before + 1
    src.ok(MoveSettle(7, ranges, "dst", True, True, 42))
    dst.ok(MoveSettle(7, ranges, "src", False, True, 42))
    assert _sm(src).referenced_blocks([11]) == {11}  # the source's copy until dropped
    drop(src, 7)
    assert _sm(src).referenced_blocks([11]) == set()
    assert _sm(dst).referenced_blocks([11]) == {11}


def test_the_index_is_replicated_state_and_rebuilt_for_old_stores(tmp_path: Path) -> None:
    d = formatted(ShardStateMachine(tmp_path / "one", shard_id="s"))
    d.ok(Mkdir("/a"))
    _file(d, "/a/f", [21, 22])
    replica = ShardStateMachine(tmp_path / "two", shard_id="s")
    d.replay_into(replica)
    assert state(replica) == state(d.sm)  # same index on every replica
    # a store written before the index existed: drop the index, reopen, it is rebuilt
    sm = _sm(d)
    index = [k for k, _ in state(sm) if k[:1] == b"B"]
    assert len(index) == 2
    sm._store.write({k: None for k in index} | {b"\x00blockrefs-version": None})
    sm.close()
    reopened = ShardStateMachine(tmp_path / "one", shard_id="s")
    assert reopened.referenced_blocks([21, 22, 23]) == {21, 22}
    # a restored snapshot is indexed again
    image = replica.snapshot()
    fresh = ShardStateMachine(shard_id="s")
    fresh.restore(image, replica.applied_index())
    assert fresh.referenced_blocks([21, 22]) == {21, 22}
