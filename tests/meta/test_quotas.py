"""Directory quotas in the shard state machine (``keelfs.meta.quotas``): each rule that adds
names or space under a quota directory, the counters kept exact through every kind of write,
restarts and snapshots, and the other shards' reports counted in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from meta_helpers import Driver, formatted
from test_moves import around, copy, drop

from keelfs.meta.commands import (
    AddBlock,
    CompleteFile,
    CompleteInline,
    Create,
    CreateInline,
    Delete,
    Mkdir,
    MoveFreeze,
    MoveSettle,
    QuotaReport,
    Rename,
    SetQuota,
    SetReplication,
    TxnPrepare,
)
from keelfs.meta.namespace import ShardStateMachine
from keelfs.meta.principals import Caller
from keelfs.meta.records import FILE, Inode
from keelfs.meta.transactions import Step, encode_part

BLOCK = 64 * 1024
ALICE = Caller("alice", ("users",), False)


def _shard(sm: ShardStateMachine | None = None) -> Driver:
    d = formatted(sm or ShardStateMachine(shard_id="shard-1"))
    d.ok(Mkdir("/q"))
    d.ok(Mkdir("/other"))
    return d


def _quota(d: Driver, path: str = "/q", names: int | None = None, space: int | None = None,
           version: int = 1) -> None:  # fmt: skip
    d.ok(SetQuota(path, names, space, version))


def _used(d: Driver, path: str = "/q") -> list[int]:
    sm: ShardStateMachine = d.sm  # type: ignore[assignment]
    return list(sm.quota(path)["here"])


def _file(d: Driver, path: str, data: bytes = b"", replication: int = 3, code: str = "") -> None:
    """An inline file (a create in a session of its own); ``code``: the refusal expected."""
    s = d.session()
    cmd = CreateInline.of(path, data, replication=replication, block_size=BLOCK)
    if code:
        d.err(cmd, code, s, 1)
    else:
        d.ok(cmd, s, 1)


def test_create_past_the_name_quota_is_refused_with_the_directory_and_limit() -> None:
    d = _shard()
    _quota(d, names=3)  # /q itself and two more
    assert _used(d) == [1, 0]
    _file(d, "/q/a")
    s = d.session()
    d.ok(Create("/q/b", replication=1, block_size=BLOCK), s, 1)
    refused = d.err(Create("/q/c", replication=1, block_size=BLOCK), "QUOTA_EXCEEDED", s, 2)
    details = refused.error
    assert details is not None
    assert (details["path"], details["quota"], details["limit"]) == ("/q", "names", 3)
    assert (details["used"], details["wanted"]) == (3, 1)
    _file(d, "/q/c", b"x", code="QUOTA_EXCEEDED")
    assert _used(d) == [3, 0]
    _file(d, "/other/free")  # outside the quota: no limit
    d.ok(Delete("/q/a"))
    _file(d, "/q/c")  # room again
    assert _used(d) == [3, 0]


def test_mkdir_past_the_name_quota_is_refused_whole() -> None:
    d = _shard()
    _quota(d, names=3)
    d.ok(Mkdir("/q/d"))
    d.err(Mkdir("/q/d/e/f", parents=True), "QUOTA_EXCEEDED")  # two more: nothing made
    assert not d.sm.exists("/q/d/e")  # type: ignore[attr-defined]
    d.ok(Mkdir("/q/d/e"))
    d.err(Mkdir("/q/x"), "QUOTA_EXCEEDED")


def test_a_nested_quota_and_its_parent_both_hold() -> None:
    d = _shard()
    d.ok(Mkdir("/q/inner"))
    _quota(d, names=10)
    _quota(d, "/q/inner", names=2)
    _file(d, "/q/inner/a")
    _file(d, "/q/inner/b", code="QUOTA_EXCEEDED")
    assert _used(d) == [3, 0] and _used(d, "/q/inner") == [2, 0]


def test_add_block_reserves_a_whole_block_times_replication() -> None:
    d = _shard()
    _quota(d, space=4 * BLOCK)  # one block of replication 3 fits, a second does not
    s = d.session()
    d.ok(Create("/q/big", replication=3, block_size=BLOCK), s, 1)
    d.ok(AddBlock("/q/big", 101, 1), s, 2)
    assert _used(d) == [2, 3 * BLOCK]
    refused = d.err(AddBlock("/q/big", 102, 1, previous_length=BLOCK), "QUOTA_EXCEEDED", s, 3)
    assert refused.error is not None and refused.error["quota"] == "space"
    d.ok(CompleteFile("/q/big", last_length=1000), s, 4)  # closed: its real length counts
    assert _used(d) == [2, 3000]
    d.ok(Create("/q/next", replication=1, block_size=BLOCK), s, 5)
    d.ok(AddBlock("/q/next", 103, 1), s, 6)
    assert _used(d) == [3, 3000 + BLOCK]


def test_an_inline_complete_and_a_replication_raise_count_too() -> None:
    d = _shard()
    _quota(d, space=100)
    _file(d, "/q/a", b"x" * 30)  # 90 of 100
    _file(d, "/q/b", b"y" * 20, replication=1, code="QUOTA_EXCEEDED")
    s = d.session()
    d.ok(Create("/q/c", replication=1, block_size=BLOCK), s, 1)
    d.err(CompleteInline.of("/q/c", b"z" * 11), "QUOTA_EXCEEDED", s, 2)
    d.ok(CompleteInline.of("/q/c", b"z" * 10), s, 3)
    d.err(SetReplication("/q/a", 4), "QUOTA_EXCEEDED")
    assert _used(d) == [3, 100]


def test_a_rename_into_a_quota_directory_counts_the_moved_subtree() -> None:
    d = _shard()
    _quota(d, names=3)
    d.ok(Mkdir("/other/tree/sub", parents=True))
    _file(d, "/other/tree/sub/f")
    d.err(Rename("/other/tree", "/q/tree"), "QUOTA_EXCEEDED")  # 3 names, 2 free
    assert d.sm.exists("/other/tree/sub/f")  # type: ignore[attr-defined]
    d.ok(Delete("/other/tree/sub/f"))
    d.ok(Rename("/other/tree", "/q/tree"))
    assert _used(d) == [3, 0]
    d.ok(Rename("/q/tree", "/q/renamed"))  # within the quota: nothing added
    d.ok(Rename("/q/renamed", "/other/back"))  # out: freed
    assert _used(d) == [1, 0]


def test_a_transaction_part_bringing_names_in_is_refused_at_prepare() -> None:
    d = _shard()
    _quota(d, names=2)
    _file(d, "/q/a")
    record = Inode(FILE, 0o644, "keelfs", "keelfs", 1, 1, 1, BLOCK).encode().decode()
    part = encode_part(
        [Step("dir", "/q"), Step("absent", "/q/b"), Step("put_entry", "/q/b", record)]
    )
    out = d.ok(TxnPrepare(9, "shard-2", part))
    assert out["state"] == "aborted" and out["error"]["code"] == "QUOTA_EXCEEDED"
    other = encode_part([Step("dir", "/other"), Step("put_entry", "/other/b", record)])
    assert d.ok(TxnPrepare(10, "shard-2", other))["state"] == "prepared"


def test_the_other_shards_reports_count_and_a_missed_quota_is_learned() -> None:
    d = _shard()
    _quota(d, names=5)
    report = QuotaReport("shard-2", json.dumps({"/q": [3, 0]}))
    assert d.ok(report)["kept"] == 1
    _file(d, "/q/a")  # 1 + 1 here + 3 there = 5
    s = d.session()
    refused = d.err(CreateInline.of("/q/b", b""), "QUOTA_EXCEEDED", s, 1)
    assert refused.error is not None and refused.error["used"] == 5
    d.ok(QuotaReport("shard-2", json.dumps({})))  # a report naming nothing changes nothing
    _file(d, "/q/b", code="QUOTA_EXCEEDED")
    d.ok(QuotaReport("shard-2", json.dumps({"/q": [0, 0]})))  # nothing there now
    _file(d, "/q/b")
    # a shard that never saw a set learns it from a report, and a newer clear wins
    fresh = _shard()
    _file(fresh, "/q/x")
    limits = json.dumps({"/q": [5, None, 7]})
    fresh.ok(QuotaReport("shard-2", json.dumps({"/q": [0, 0]}), limits))
    assert fresh.sm.quota("/q")["names"] == 5 and _used(fresh) == [2, 0]  # type: ignore[attr-defined]
    _quota(fresh, names=None, space=None, version=8)
    fresh.ok(QuotaReport("shard-2", "{}", limits))  # the older set does not come back
    assert fresh.sm.quota("/q")["names"] is None  # type: ignore[attr-defined]


def test_set_quota_counts_what_is_there_and_an_older_set_changes_nothing() -> None:
    d = _shard()
    d.ok(Mkdir("/q/a/b", parents=True))
    _file(d, "/q/a/b/f", b"12345", replication=2)
    _quota(d, names=100, version=5)
    assert _used(d) == [4, 10]
    assert d.ok(SetQuota("/q", 1, None, 4)) == {"applied": False}
    assert d.sm.quota("/q")["names"] == 100  # type: ignore[attr-defined]
    d.ok(SetQuota("/q", None, None, 6))  # cleared
    _file(d, "/q/more")
    assert d.sm.quota("/q")["names"] is None  # type: ignore[attr-defined]


def test_only_servers_set_quotas_and_bad_values_are_refused() -> None:
    d = _shard()
    d.err(SetQuota("/q", 5, None, 1), "PERMISSION_DENIED", caller=ALICE)
    d.err(QuotaReport("shard-2", "{}"), "PERMISSION_DENIED", caller=ALICE)
    for bad in (SetQuota("/", 5), SetQuota("/q", 0), SetQuota("/q", None, -1)):
        with pytest.raises(Exception, match="quota on /|names|space"):
            bad.validate()
    with pytest.raises(Exception, match="usage"):
        QuotaReport("shard-2", '{"/q": [1]}').validate()
    with pytest.raises(Exception, match="limits"):
        QuotaReport("shard-2", "{}", '{"/q": [0, null, 1]}').validate()


def test_counters_survive_a_restart_and_a_snapshot_install(tmp_path: Path) -> None:
    d = _shard(ShardStateMachine(tmp_path / "a", shard_id="shard-1"))
    _quota(d, names=50, space=10_000)
    for i in range(5):
        _file(d, f"/q/f{i}", b"x" * i)
    d.ok(Delete("/q/f0"))
    before = _used(d)
    assert before == [5, 3 * (1 + 2 + 3 + 4)]
    d.sm.close()
    reopened = Driver(ShardStateMachine(tmp_path / "a", shard_id="shard-1"))
    assert _used(reopened) == before
    _file(reopened, "/q/big", b"y" * 5000, code="QUOTA_EXCEEDED")
    b = ShardStateMachine(tmp_path / "b", shard_id="shard-1")
    b.restore(reopened.sm.snapshot(), reopened.index)
    copy = Driver(b)
    assert _used(copy) == before
    _file(copy, "/q/big", b"y" * 5000, code="QUOTA_EXCEEDED")
    reopened.sm.close()
    b.close()


def test_a_resharding_move_carries_the_usage_to_the_new_shard() -> None:
    src, dst = _shard(ShardStateMachine(shard_id="src")), _shard(ShardStateMachine(shard_id="dst"))
    src.ok(Mkdir("/q/d"))
    for i in range(3):
        _file(src, f"/q/d/f{i}", b"ab")
    for d in (src, dst):
        _quota(d, names=10, space=1000)
    assert _used(src) == [5, 18] and _used(dst) == [1, 0]  # dst's own /q (a test's twin)
    ranges = around("/q/d")
    src.ok(MoveFreeze(7, ranges, "dst"))
    assert copy(src, dst, 7, ranges) == 4  # /q/d's self-record and its 3 entries
    assert _used(dst) == [4, 18]  # counted as soon as copied: stricter, never looser
    src.ok(MoveSettle(7, ranges, "dst", True, True, 42))
    dst.ok(MoveSettle(7, ranges, "src", False, True, 42))
    drop(src, 7, final=True)
    assert _used(src) == [2, 0] and _used(dst) == [4, 18]


def test_a_quota_set_during_a_move_counts_the_records_being_moved_on_both_shards() -> None:
    src, dst = _shard(ShardStateMachine(shard_id="src")), _shard(ShardStateMachine(shard_id="dst"))
    src.ok(Mkdir("/q/d"))
    for i in range(3):
        _file(src, f"/q/d/f{i}", b"ab")
    ranges = around("/q/d")
    src.ok(MoveFreeze(7, ranges, "dst"))
    copy(src, dst, 7, ranges)
    for d in (src, dst):  # set while the records are on both shards
        _quota(d, names=10, space=1000)
    assert _used(src) == [5, 18] and _used(dst) == [4, 18]
    src.ok(MoveSettle(7, ranges, "dst", True, True, 42))
    dst.ok(MoveSettle(7, ranges, "src", False, True, 42))
    drop(src, 7, final=True)
    assert _used(src) == [2, 0] and _used(dst) == [4, 18]  # exact again, never below
