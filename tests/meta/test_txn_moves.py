"""Cross-shard transactions while hash ranges move (resharding), in the state machines.

Three in-memory shards: A coordinates, B participates, T is the target of a move out of A or
B. The commands are applied in the order the masters send them (``keelfs.master.transactions``
and ``keelfs.master.resharding``). What must hold whatever the interleaving: a transaction
either applies on every shard it touches or on none, so an acknowledged rename or mkdir is
never lost, and a coordinator's decision can always be applied where it is recorded."""

from __future__ import annotations

import base64
import json

from meta_helpers import Driver, formatted

from keelfs.meta.commands import (
    CompleteFile,
    Create,
    Mkdir,
    MoveFreeze,
    MoveIngest,
    MoveSettle,
    TxnBegin,
    TxnDecide,
    TxnFinish,
    TxnPrepare,
)
from keelfs.meta.namespace import ShardStateMachine
from keelfs.meta.ranges import texts
from keelfs.meta.records import DIRECTORY, Inode
from keelfs.meta.ring import key_hash
from keelfs.meta.transactions import Step, encode_part


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def around(directory: str) -> tuple[str, ...]:
    """A hash range holding just ``directory``'s records (its self-record and children)."""
    h = key_hash(directory)
    return texts([(h, h)])


def move(src: Driver, dst: Driver, txn_id: int, ranges: tuple[str, ...]) -> None:
    """Copy a frozen range from ``src`` to ``dst`` and settle it on both (map version 9)."""
    dst.ok(MoveIngest(txn_id, ranges, src.sm.shard_id))  # type: ignore[attr-defined]
    page = src.sm.move_records(txn_id)  # type: ignore[attr-defined]
    if page:
        keys = tuple(_b64(k) for k, _ in page)
        values = tuple(_b64(v) for _, v in page)
        dst.ok(MoveIngest(txn_id, ranges, src.sm.shard_id, keys, values))  # type: ignore[attr-defined]
    settle(src, dst, txn_id, ranges)


def settle(src: Driver, dst: Driver, txn_id: int, ranges: tuple[str, ...]) -> None:
    src_id, dst_id = src.sm.shard_id, dst.sm.shard_id  # type: ignore[attr-defined]
    src.ok(MoveSettle(txn_id, ranges, dst_id, True, True, 9))
    dst.ok(MoveSettle(txn_id, ranges, src_id, False, True, 9))


def shards() -> tuple[Driver, Driver, Driver]:
    a = formatted(ShardStateMachine(shard_id="shard-a"))
    b = formatted(ShardStateMachine(shard_id="shard-b"))
    t = formatted(ShardStateMachine(shard_id="shard-t"))
    a.ok(Mkdir("/x"))
    a.ok(Mkdir("/x/src"))
    b.ok(Mkdir("/y"))
    b.ok(Mkdir("/y/dst"))
    s = a.session()
    a.ok(Create("/x/src/f"), s, 1)
    a.ok(CompleteFile("/x/src/f"), s, 2)
    return a, b, t


def rename_parts(a: Driver, src: str, dst: str) -> tuple[str, str]:
    """The parts ``NamespaceService._rename_across`` builds for a file."""
    record = a.sm.entry_record(src)  # type: ignore[attr-defined]
    assert record is not None
    src_dir, dst_dir = src.rsplit("/", 1)[0], dst.rsplit("/", 1)[0]
    own = [Step("entry", src, record), Step("del_entry", src), Step("touch", src_dir)]
    theirs = [
        Step("dir", dst_dir),
        Step("absent", dst),
        Step("put_entry", dst, record),
        Step("touch", dst_dir),
    ]
    return encode_part(own), encode_part(theirs)


def begin(a: Driver, txn_id: int, own: str, theirs: str, kind: str = "rename") -> None:
    out = a.ok(TxnBegin(txn_id, own, json.dumps({"shard-b": theirs}), kind, "{}"))
    assert out["state"] == "pending"


def prepared(b: Driver, txn_id: int, theirs: str) -> bool:
    """Send the prepare as the coordinator does; whether the participant prepared (a refusal
    that is not recorded, "locked", is what the coordinator retries and finally aborts)."""
    result = b.apply(TxnPrepare(txn_id, "shard-a", theirs))
    return bool(result.ok and result.value["state"] == "prepared")


# -- item 2: a part may not prepare inside a range that is moving --------------------------------
def test_a_rename_into_a_directory_being_moved_is_never_lost() -> None:
    a, b, t = shards()
    ranges = around("/y/dst")
    b.ok(MoveFreeze(50, ranges, "shard-t"))  # /y/dst starts moving to T; nothing is locked
    own, theirs = rename_parts(a, "/x/src/f", "/y/dst/g")
    begin(a, 11, own, theirs)
    refused = b.apply(TxnPrepare(11, "shard-a", theirs))
    commit = refused.ok and refused.value["state"] == "prepared"
    a.ok(TxnDecide(11, commit))  # the coordinator commits only what every part prepared
    move(b, t, 50, ranges)  # the copy, the switch, the settle
    b.apply(TxnFinish(11, commit))  # the decision reaches the participant (retried forever)
    # the file is exactly once somewhere: where it was, or where the directory went
    found = [p for d, p in ((a, "/x/src/f"), (t, "/y/dst/g")) if d.sm.exists(p)]  # type: ignore[attr-defined]
    assert found == ["/x/src/f"], found
    # the refusal was "locked", not recorded: the prepare is retried until the move ends
    assert refused.code == "UNAVAILABLE" and refused.error["reason"] == "locked"
    assert b.sm.transaction(11) is None and b.sm.lock_holder("/y/dst/g") == 0  # type: ignore[attr-defined]
    assert a.sm.lock_holder("/x/src/f") == 0  # type: ignore[attr-defined]
    # once moved, a prepare there is refused for good (REDIRECT) and the coordinator aborts
    late = b.ok(TxnPrepare(11, "shard-a", theirs))
    assert late["state"] == "aborted" and late["error"]["code"] == "REDIRECT"
    # the client's retry, routed by the new map, goes to T and commits
    own, theirs = rename_parts(a, "/x/src/f", "/y/dst/g")
    begin(a, 12, own, theirs)
    assert t.ok(TxnPrepare(12, "shard-a", theirs))["state"] == "prepared"
    a.ok(TxnDecide(12, True))
    t.ok(TxnFinish(12, True))
    assert t.sm.exists("/y/dst/g") and not a.sm.exists("/x/src/f")  # type: ignore[attr-defined]


def test_a_cross_shard_mkdir_into_a_moving_range_leaves_no_half_directory() -> None:
    a, b, t = shards()
    ranges = around("/x/new")  # where the new directory's self-record (B's part) goes
    b.ok(MoveFreeze(51, ranges, "shard-t"))
    record = Inode(DIRECTORY, 0o755, "root", "root", 1, 1).encode().decode()
    own = encode_part(
        [
            Step("dir", "/x"),
            Step("absent", "/x/new"),
            Step("put_entry", "/x/new", record),
            Step("touch", "/x"),
        ]
    )
    theirs = encode_part([Step("put_self", "/x/new", record)])
    begin(a, 13, own, theirs, "mkdir")
    commit = prepared(b, 13, theirs)
    a.ok(TxnDecide(13, commit))
    move(b, t, 51, ranges)
    b.apply(TxnFinish(13, commit))
    entry = a.sm.entry_record("/x/new")  # type: ignore[attr-defined]
    self_record = t.sm.self_record("/x/new")  # type: ignore[attr-defined]
    assert (entry is None) == (self_record is None), (entry, self_record)
    assert entry is None and b.sm.transaction(13) is None  # type: ignore[attr-defined]


def test_a_part_already_prepared_holds_the_freeze_of_its_ranges() -> None:
    a, b, t = shards()
    own, theirs = rename_parts(a, "/x/src/f", "/y/dst/g")
    begin(a, 14, own, theirs)
    assert prepared(b, 14, theirs)
    for directory in ("/y/dst", "/y"):  # the new entry's range, the touched entry's range
        b.err(MoveFreeze(52, around(directory), "shard-t"), "UNAVAILABLE")
    a.ok(TxnDecide(14, True))
    b.ok(TxnFinish(14, True))
    b.ok(MoveFreeze(52, around("/y/dst"), "shard-t"))
    move(b, t, 52, around("/y/dst"))
    assert t.sm.exists("/y/dst/g") and not a.sm.exists("/x/src/f")  # type: ignore[attr-defined]


# -- item 3: a coordinator's decision must be able to apply ------------------------------------
def test_a_pending_coordinator_holds_the_freeze_of_its_grandparent_range() -> None:
    """The coordinator's part touches /x/src, whose entry lives in /x's range: that range may
    not freeze while the decision is pending (else the commit can never be applied)."""
    a, b, _ = shards()
    own, theirs = rename_parts(a, "/x/src/f", "/y/dst/g")
    begin(a, 15, own, theirs)
    assert prepared(b, 15, theirs)
    a.err(MoveFreeze(53, around("/x"), "shard-t"), "UNAVAILABLE")
    a.ok(TxnDecide(15, True))
    b.ok(TxnFinish(15, True))
    a.ok(MoveFreeze(53, around("/x"), "shard-t"))  # decided: the move may go on


def test_a_coordinator_does_not_begin_while_its_grandparent_range_is_frozen() -> None:
    a, b, _ = shards()
    a.ok(MoveFreeze(54, around("/x"), "shard-t"))
    own, theirs = rename_parts(a, "/x/src/f", "/y/dst/g")
    refused = a.apply(TxnBegin(16, own, json.dumps({"shard-b": theirs}), "rename", "{}"))
    assert refused.code == "UNAVAILABLE" and refused.error["reason"] == "locked"
    assert a.sm.transaction(16) is None and a.sm.lock_holder("/x/src/f") == 0  # type: ignore[attr-defined]


def test_a_decision_applies_when_a_touched_parent_entry_has_moved_away() -> None:
    """/x (so the entry of /x/src) and /y (the entry of /y/dst) moved to T; /x/src and /y/dst
    stayed. A rename between them touches both directories: each shard changes the records
    of them that are here and skips the moved ones, as an ordinary rename does."""
    a, b, t = shards()
    a.ok(MoveFreeze(55, around("/x"), "shard-t"))
    move(a, t, 55, around("/x"))
    b.ok(MoveFreeze(56, around("/y"), "shard-t"))
    move(b, t, 56, around("/y"))
    own, theirs = rename_parts(a, "/x/src/f", "/y/dst/g")
    begin(a, 17, own, theirs)
    assert prepared(b, 17, theirs)
    assert a.ok(TxnDecide(17, True))["state"] == "committed"
    assert b.ok(TxnFinish(17, True))["state"] == "committed"
    assert b.sm.exists("/y/dst/g") and not a.sm.exists("/x/src/f")  # type: ignore[attr-defined]


def test_a_request_aborted_because_its_target_moved_runs_again_when_retried() -> None:
    """The client is told REDIRECT (it refreshes its map); its retry, same session and seq,
    must run as a new transaction routed by the new map, not get the abort again forever."""
    a, b, t = shards()
    b.ok(MoveFreeze(58, around("/y/dst"), "shard-t"))
    move(b, t, 58, around("/y/dst"))
    s = a.session()
    own, theirs = rename_parts(a, "/x/src/f", "/y/dst/g")
    request = '["rename",{"dst":"/y/dst/g","overwrite":false,"src":"/x/src/f"}]'

    def begin_request(txn_id: int, to: str) -> int:
        parts = json.dumps({to: theirs})
        cmd = TxnBegin(txn_id, own, parts, "rename", "{}", request)
        return int(a.ok(cmd, s, 3)["txn_id"])

    assert begin_request(19, "shard-b") == 19
    refusal = b.ok(TxnPrepare(19, "shard-a", theirs))["error"]
    a.ok(TxnDecide(19, False, json.dumps(refusal)))
    assert begin_request(20, "shard-t") == 20  # released: the retry is a new transaction
    assert t.ok(TxnPrepare(20, "shard-a", theirs))["state"] == "prepared"
    a.ok(TxnDecide(20, True))
    t.ok(TxnFinish(20, True))
    assert t.sm.exists("/y/dst/g") and not a.sm.exists("/x/src/f")  # type: ignore[attr-defined]
