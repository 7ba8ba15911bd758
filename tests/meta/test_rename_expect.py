"""``Rename(expect=...)``: replace the target only if it is still the version its caller saw,
in one command (on one shard) or in a transaction's prepare (across shards) — the
compare-and-replace behind the S3 gateway's ``If-Match`` writes."""

from __future__ import annotations

import base64
import json

import pytest
from meta_helpers import Driver, formatted

from keelfs.errors import InvalidArgument
from keelfs.meta.commands import CreateInline, Mkdir, Rename, TxnPrepare
from keelfs.meta.namespace import ShardStateMachine
from keelfs.meta.principals import READ
from keelfs.meta.records import content_version
from keelfs.meta.transactions import Step, encode_part


def _inline(d: Driver, path: str, data: bytes) -> None:
    d.ok(CreateInline(path, base64.b64encode(data).decode(), overwrite=True), d.session(), 1)


def _version(d: Driver, path: str) -> str:
    """What a reader's stat tells a client (``FileInfo.version``)."""
    return d.sm.check_access(path, READ, with_data=True).version  # type: ignore[attr-defined]


def test_only_the_writer_that_saw_the_current_version_replaces_it(shard: Driver) -> None:
    shard.ok(Mkdir("/b"))
    _inline(shard, "/b/key", b"first")
    seen = _version(shard, "/b/key")  # both writers read the same object
    _inline(shard, "/b/tmp-a", b"from a")
    _inline(shard, "/b/tmp-b", b"from b")
    assert shard.ok(Rename("/b/tmp-a", "/b/key", overwrite=True, expect=seen)) == {}
    refused = shard.err(Rename("/b/tmp-b", "/b/key", overwrite=True, expect=seen), "ALREADY_EXISTS")
    assert refused.error is not None and refused.error["name"] == "/b/key"
    data = shard.sm.check_access("/b/key", READ, with_data=True).data  # type: ignore[attr-defined]
    assert data == b"from a"
    assert shard.sm.exists("/b/tmp-b")  # type: ignore[attr-defined]  # the loser's file stays
    # with the version it now sees, b succeeds
    now = _version(shard, "/b/key")
    assert shard.ok(Rename("/b/tmp-b", "/b/key", overwrite=True, expect=now)) == {}


def test_versions_tell_apart_contents_of_one_length_and_time(shard: Driver) -> None:
    shard.ok(Mkdir("/b"))
    _inline(shard, "/b/one", b"aaaa")
    _inline(shard, "/b/two", b"bbbb")  # same log time, same length
    assert _version(shard, "/b/one") != _version(shard, "/b/two")
    info = shard.sm.check_access("/b/one", READ, with_data=True)  # type: ignore[attr-defined]
    assert info.version == content_version(info.mtime, info.blocks, b"aaaa")


def test_expect_on_a_missing_target_or_a_directory(shard: Driver) -> None:
    shard.ok(Mkdir("/b/dir", parents=True))
    _inline(shard, "/b/tmp", b"x")
    some = content_version(0, (), b"x")
    shard.err(Rename("/b/tmp", "/b/none", overwrite=True, expect=some), "NOT_FOUND")
    shard.err(Rename("/b/tmp", "/b/dir", overwrite=True, expect=some), "ALREADY_EXISTS")
    assert shard.sm.exists("/b/tmp")  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("overwrite", "expect"), [(False, "0" * 32), (True, "not-a-version"), (True, "A" * 32)]
)
def test_expect_needs_overwrite_and_a_version(overwrite: bool, expect: str) -> None:
    with pytest.raises(InvalidArgument):
        Rename("/a", "/b", overwrite=overwrite, expect=expect).validate()


@pytest.mark.parametrize("record", ["", "not-a-version", "A" * 32, "0" * 64])
def test_a_version_step_names_a_version(record: str) -> None:
    with pytest.raises(InvalidArgument):
        Step("version", "/b", record).validate()


def test_a_cross_shard_rename_checks_the_version_where_the_target_is() -> None:
    """The target's shard checks ``version`` at prepare, under the transaction's lock."""
    b = formatted(ShardStateMachine(shard_id="shard-b"))
    b.ok(Mkdir("/dst"))
    _inline(b, "/dst/g", b"old")
    seen = _version(b, "/dst/g")
    _inline(b, "/dst/g", b"replaced meanwhile")  # another writer got there first

    def theirs(expect: str) -> str:
        return encode_part(
            [
                Step("dir", "/dst"),
                Step("version", "/dst/g", expect),
                Step("replaceable", "/dst/g"),
                Step("replace", "/dst/g"),
                Step("touch", "/dst"),
            ]
        )

    stale = b.ok(TxnPrepare(21, "shard-a", theirs(seen)))
    assert stale["state"] == "aborted" and stale["error"]["code"] == "ALREADY_EXISTS"
    assert b.sm.lock_holder("/dst/g") == 0  # type: ignore[attr-defined]
    current = b.ok(TxnPrepare(22, "shard-a", theirs(_version(b, "/dst/g"))))
    assert current["state"] == "prepared"
    missing = encode_part([Step("version", "/dst/none", seen)])
    gone = b.ok(TxnPrepare(23, "shard-a", missing))
    assert gone["state"] == "aborted" and gone["error"]["code"] == "NOT_FOUND"


def test_a_rename_without_expect_is_encoded_as_the_release_before_encoded_it() -> None:
    """Fields added after a release (``Command.added_fields``) stay out of a command that
    does not use them: the last release's replicas decode the entry during a rolling upgrade,
    and a retry's fingerprint is the one that release computed (values from its code)."""
    from keelfs.meta.commands import SHARD_COMMANDS, SetTraverseGuard, decode_command

    plain = Rename("/a", "/b", overwrite=True)
    assert plain.args() == {"src": "/a", "dst": "/b", "overwrite": True}
    assert Rename("/a", "/b").digest() == "608533adf21fcf2b"  # the last release's
    version = content_version(1, (), b"x")
    assert Rename("/a", "/b", True, version).args()["expect"] == version
    guard = SetTraverseGuard("/d", "u", "g", 0o700)
    assert set(guard.args()) == {"path", "owner", "group", "mode"}
    assert "acl" in SetTraverseGuard("/d", "u", "g", 0o750, ("user:bob:r-x",)).args()
    assert decode_command("rename", json.dumps(plain.args()), SHARD_COMMANDS) == plain
