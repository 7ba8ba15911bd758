"""Cross-shard transaction records in the shard state machine: two shards (A coordinates, B
participates) driven entry by entry. What a user would check: the file ends up in exactly one
place, a prepared participant never lets go on its own, locks keep everyone else out until the
outcome is applied, and every record is collected once nothing needs it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from meta_helpers import Driver, formatted

from keelfs.errors import InvalidArgument
from keelfs.meta.commands import (
    Create,
    Delete,
    Mkdir,
    TxnAcked,
    TxnBegin,
    TxnDecide,
    TxnFinish,
    TxnPrepare,
)
from keelfs.meta.namespace import ShardStateMachine
from keelfs.meta.records import Inode
from keelfs.meta.transactions import Step, decode_part, encode_part, record_digest

RETENTION = 60_000


def _shards(on_disk: Path | None = None) -> tuple[Driver, Driver]:
    """Shards A and B, in memory or (``on_disk``) each in a RocksDB there."""
    where = (None, None) if on_disk is None else (on_disk / "a", on_disk / "b")
    a = formatted(ShardStateMachine(where[0], shard_id="shard-a", txn_retention_ms=RETENTION))
    b = formatted(ShardStateMachine(where[1], shard_id="shard-b", txn_retention_ms=RETENTION))
    a.ok(Mkdir("/src"))
    b.ok(Mkdir("/dst"))
    s = a.session()
    a.ok(Create("/src/f"), s, 1)
    from keelfs.meta.commands import CompleteFile

    a.ok(CompleteFile("/src/f"), s, 2)
    return a, b


def _entry(d: Driver, path: str) -> str:
    from keelfs.meta.shard_records import _entry_key

    raw = d.sm._store.get(_entry_key(path))  # type: ignore[attr-defined]
    assert raw is not None
    return bytes(raw).decode()


def _rename_parts(a: Driver, src: str, dst: str) -> tuple[str, str]:
    record = _entry(a, src)
    own = encode_part([Step("entry", src, record), Step("del_entry", src), Step("touch", "/src")])
    theirs = encode_part(
        [
            Step("dir", "/dst"),
            Step("absent", dst),
            Step("put_entry", dst, record),
            Step("touch", "/dst"),
        ]
    )
    return own, theirs


def _begin(a: Driver, txn_id: int, dst: str = "/dst/g") -> str:
    own, theirs = _rename_parts(a, "/src/f", dst)
    out = a.ok(TxnBegin(txn_id, own, json.dumps({"shard-b": theirs}), "rename", "{}"))
    assert out["state"] == "pending"
    return theirs


def test_commit_moves_the_file_and_collects_every_record() -> None:
    a, b = _shards()
    theirs = _begin(a, 7)
    assert b.ok(TxnPrepare(7, "shard-a", theirs))["state"] == "prepared"
    assert a.ok(TxnDecide(7, True))["state"] == "committed"
    assert not a.sm.exists("/src/f")  # type: ignore[attr-defined]
    assert b.ok(TxnFinish(7, True))["state"] == "committed"
    assert b.sm.stat("/dst/g").length == 0  # type: ignore[attr-defined]
    assert a.ok(TxnAcked(7, "shard-b"))["acked"] == ["shard-b"]
    for d in (a, b):
        assert d.sm.lock_holder("/src/f") == 0 and d.sm.lock_holder("/dst/g") == 0  # type: ignore[attr-defined]
        assert d.sm.transaction(7) is not None  # type: ignore[attr-defined]
    a.advance(RETENTION + 1)
    b.advance(RETENTION + 1)
    a.ok(Mkdir("/tick"))
    b.ok(Mkdir("/tick"))
    assert a.sm.transaction(7) is None and b.sm.transaction(7) is None  # type: ignore[attr-defined]


def test_a_prepared_participant_holds_its_locks_until_the_decision_reaches_it() -> None:
    a, b = _shards()
    theirs = _begin(a, 8)
    b.ok(TxnPrepare(8, "shard-a", theirs))
    s = b.session()
    for _ in range(6):  # time passes: nothing times out on the participant
        b.advance(20_000)
        refused = b.err(Create("/dst/g"), "UNAVAILABLE", s, 1)
        assert refused.error is not None and refused.error["reason"] == "locked"
    assert b.sm.lock_holder("/dst/g") == 8  # type: ignore[attr-defined]
    assert b.sm.transaction(8).state == "prepared"  # type: ignore[attr-defined, union-attr]
    b.err(Delete("/dst", recursive=True), "UNAVAILABLE")  # the parent is required
    # the coordinator aborts; once the participant hears it, the refused seq is applied anew
    a.ok(TxnDecide(8, False, json.dumps({"code": "UNAVAILABLE", "message": "timed out"})))
    assert b.ok(TxnFinish(8, False))["state"] == "aborted"
    assert b.ok(Create("/dst/g"), s, 1)["path"] == "/dst/g"
    assert a.sm.stat("/src/f").path == "/src/f"  # type: ignore[attr-defined]


def test_a_lock_is_respected_after_creates_found_nothing_locked(tmp_path: Path) -> None:
    """On RocksDB a create remembers that nothing is locked or fenced (``holds_any``): a
    lock a transaction then takes must still refuse the next create, and its release let it."""
    a, b = _shards(tmp_path)
    s = b.session()
    b.ok(Create("/dst/before"), s, 1)  # nothing locked: the store remembers it
    b.ok(TxnPrepare(8, "shard-a", _begin(a, 8)))
    refused = b.err(Create("/dst/g"), "UNAVAILABLE", s, 2)
    assert refused.error is not None and refused.error["reason"] == "locked"
    a.ok(TxnDecide(8, False, json.dumps({"code": "UNAVAILABLE", "message": "timed out"})))
    assert b.ok(TxnFinish(8, False))["state"] == "aborted"
    assert b.ok(Create("/dst/g"), s, 2)["path"] == "/dst/g"
    for d in (a, b):
        d.sm.close()


def test_the_first_decision_wins() -> None:
    a, _ = _shards()
    _begin(a, 9)
    assert a.ok(TxnDecide(9, False))["state"] == "aborted"
    assert a.ok(TxnDecide(9, True))["state"] == "aborted"
    assert a.sm.exists("/src/f")  # type: ignore[attr-defined]
    assert a.sm.lock_holder("/src/f") == 0  # type: ignore[attr-defined]


def test_a_refused_prepare_is_remembered() -> None:
    a, b = _shards()
    s = b.session()
    b.ok(Create("/dst/g"), s, 1)
    theirs = _begin(a, 10)
    first = b.ok(TxnPrepare(10, "shard-a", theirs))
    assert first["state"] == "aborted" and first["error"]["code"] == "ALREADY_EXISTS"
    assert b.ok(TxnPrepare(10, "shard-a", theirs))["state"] == "aborted"
    assert b.sm.lock_holder("/dst/g") == 0  # type: ignore[attr-defined]


def test_conflicting_transactions_do_not_both_lock() -> None:
    a, b = _shards()
    theirs = _begin(a, 11)
    b.ok(TxnPrepare(11, "shard-a", theirs))
    second = b.ok(TxnPrepare(12, "shard-a", theirs))
    assert second["state"] == "aborted" and second["error"]["reason"] == "locked"
    own = _rename_parts(a, "/src/f", "/dst/h")[0]
    refused = a.apply(TxnBegin(13, own, json.dumps({"shard-b": theirs})))
    assert refused.code == "UNAVAILABLE"


def test_a_changed_source_refuses_to_begin() -> None:
    a, _ = _shards()
    own, theirs = _rename_parts(a, "/src/f", "/dst/g")
    from keelfs.meta.commands import SetReplication

    a.ok(SetReplication("/src/f", 2))
    res = a.apply(TxnBegin(14, own, json.dumps({"shard-b": theirs})))
    assert res.code == "UNAVAILABLE" and res.error is not None
    assert res.error["reason"] == "changed"
    assert a.sm.transaction(14) is None  # type: ignore[attr-defined]


def test_a_digest_check_refuses_a_changed_entry_and_passes_an_unchanged_one() -> None:
    """``entry_digest``: the check of ``entry`` by the record's SHA-256 (a delete or a move
    need not carry an inline file's data to check it)."""
    from keelfs.meta.commands import SetReplication

    a, b = _shards()
    digest = record_digest(_entry(a, "/src/f"))
    own = encode_part([Step("entry_digest", "/src/f", digest), Step("del_entry", "/src/f")])
    theirs = encode_part([Step("dir", "/dst")])
    a.ok(SetReplication("/src/f", 2))  # changed since the digest was taken
    res = a.apply(TxnBegin(30, own, json.dumps({"shard-b": theirs})))
    assert res.code == "UNAVAILABLE" and res.error is not None
    assert res.error["reason"] == "changed"
    own = encode_part(
        [Step("entry_digest", "/src/f", record_digest(_entry(a, "/src/f"))),
         Step("del_entry", "/src/f")]
    )  # fmt: skip
    assert a.ok(TxnBegin(31, own, json.dumps({"shard-b": theirs})))["state"] == "pending"
    b.ok(TxnPrepare(31, "shard-a", theirs))
    assert a.ok(TxnDecide(31, True))["state"] == "committed"
    assert not a.sm.exists("/src/f")  # type: ignore[attr-defined]


def test_unknown_and_repeated_finishes_change_nothing() -> None:
    a, b = _shards()
    assert b.ok(TxnFinish(99, True))["state"] == "unknown"
    theirs = _begin(a, 15)
    b.ok(TxnPrepare(15, "shard-a", theirs))
    b.ok(TxnFinish(15, True))
    assert b.ok(TxnFinish(15, False))["state"] == "committed"
    assert b.sm.exists("/dst/g")  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "part",
    [
        "not json",
        "[]",
        '[["explode", "/x", ""]]',
        '[["put_entry", "/x", ""]]',
        '[["del_entry", "relative", ""]]',
        '[["absent", "/x"]]',
        '[["entry_digest", "/x", ""]]',
        '[["entry_digest", "/x", "not-hex"]]',
        '[["entry_digest", "/x", "' + "A" * 64 + '"]]',
    ],
)
def test_bad_parts_are_refused(part: str) -> None:
    with pytest.raises(InvalidArgument):
        TxnPrepare(1, "shard-a", part).validate()


def test_parts_round_trip() -> None:
    record = Inode("file", 0o644, "u", "g", 1, 1).encode().decode()
    steps = (Step("put_entry", "/a/b", record), Step("touch", "/a"))
    assert decode_part(encode_part(steps)) == steps


def test_an_abort_worth_retrying_lets_the_same_request_run_again() -> None:
    a, _ = _shards()
    s = a.session()
    own, theirs = _rename_parts(a, "/src/f", "/dst/g")
    request = '["rename",{"dst":"/dst/g","overwrite":false,"src":"/src/f"}]'

    def begin(txn_id: int) -> dict:  # type: ignore[type-arg]
        cmd = TxnBegin(txn_id, own, json.dumps({"shard-b": theirs}), "rename", "{}", request)
        return a.ok(cmd, s, 5)  # type: ignore[no-any-return]

    assert begin(20)["txn_id"] == 20
    assert begin(21)["txn_id"] == 20  # a retry: the first attempt's transaction
    locked = {"code": "UNAVAILABLE", "reason": "locked", "message": "locked"}
    a.ok(TxnDecide(20, False, json.dumps(locked)))
    assert begin(22)["txn_id"] == 22  # released: the retry is a new transaction
    a.ok(TxnDecide(22, False, json.dumps({"code": "ALREADY_EXISTS", "message": "x"})))
    assert begin(23)["txn_id"] == 22  # a definite answer stays the request's answer


def test_writers_wait_for_a_file_a_transaction_is_bringing() -> None:
    a, b = _shards()
    theirs = _begin(a, 30)
    b.ok(TxnPrepare(30, "shard-a", theirs))
    from keelfs.meta.commands import Rename

    for cmd in (Delete("/dst/g"), Rename("/dst/g", "/dst/h")):
        refused = b.apply(cmd)
        assert refused.code == "UNAVAILABLE", refused  # not NOT_FOUND: it is on its way
    a.ok(TxnDecide(30, True))
    b.ok(TxnFinish(30, True))
    b.ok(Rename("/dst/g", "/dst/h"))
    assert b.ok(Delete("/dst/h"))["files"] == 1


def test_lock_holder_reads_the_store_once_per_applied_index_and_sees_every_new_lock() -> None:
    """Every linearizable read asks ``lock_holder``: with nothing locked or fenced it is
    answered from what the first read at that applied index found (not from two store reads
    each), and the next applied entry, a lock here, is seen by the very next read."""
    a, b = _shards()
    store = b.sm._store  # type: ignore[attr-defined]
    reads = {"n": 0}
    get, scan = store.get, store.scan

    def counted_get(key: bytes) -> Any:
        reads["n"] += 1
        return get(key)

    def counted_scan(start: bytes, end: bytes) -> Any:
        reads["n"] += 1
        return scan(start, end)

    store.get, store.scan = counted_get, counted_scan
    for _ in range(100):
        assert b.sm.lock_holder("/dst/g") == 0  # type: ignore[attr-defined]
    assert reads["n"] <= 2, f"{reads['n']} store reads for 100 lock checks at one applied index"
    b.ok(TxnPrepare(9, "shard-a", _begin(a, 9)))
    assert b.sm.lock_holder("/dst/g") == 9  # type: ignore[attr-defined]
    assert b.sm.lock_holder("/dst/other") == 0  # type: ignore[attr-defined]
    assert b.ok(TxnFinish(9, False))["state"] == "aborted"
    assert b.sm.lock_holder("/dst/g") == 0  # type: ignore[attr-defined]
