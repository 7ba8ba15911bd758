"""POSIX permissions in the shard state machine (``keelfs.meta.principals``,
``keelfs.meta.permission_checks``): who may do what, the traverse guards that let a shard check
ancestors it does not hold, and that every refusal changes nothing.

The tree most tests use (made by the superuser, then by alice)::

    /                 keelfs:keelfs 0755
    /home             keelfs:keelfs 0755
    /home/alice       alice:staff   0700   <- private: bob may not pass
    /home/alice/g     alice:staff   0644
    /home/alice/docs  alice:staff   0755   <- open itself, but under a private directory
    /home/alice/docs/f alice:staff  0644
    /tmp              keelfs:keelfs 1777   (sticky)
    /pub              keelfs:keelfs 0777
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from meta_helpers import Driver, formatted, state

from keelfs.errors import KeelError, PermissionDenied
from keelfs.meta.commands import (
    SHARD_COMMANDS,
    AddBlock,
    CompleteFile,
    Create,
    Delete,
    DequeueBlockDeletes,
    Envelope,
    Mkdir,
    MkdirSelf,
    Rename,
    SetOwner,
    SetPermission,
    SetReplication,
    SetTimes,
    SetTraverseGuard,
    SnapshotAllow,
    SnapshotTake,
    TxnBegin,
    TxnFinish,
    TxnPrepare,
    decode_envelope,
)
from keelfs.meta.namespace import ShardStateMachine
from keelfs.meta.principals import READ, WRITE, Caller, Guard
from keelfs.meta.transactions import Step, decode_part, encode_part, may_step

ALICE = Caller("alice", ("staff",))
BOB = Caller("bob", ("users",))
CAROL = Caller("carol", ("staff",))
ROOT = Caller("hdfs", ("supergroup",), superuser=True)


@pytest.fixture
def d() -> Driver:
    driver = formatted(ShardStateMachine(None, shard_id="shard-1"))
    driver.ok(Mkdir("/home"))
    driver.ok(Mkdir("/home/alice", mode=0o700, owner="alice", group="staff"))
    driver.ok(Mkdir("/tmp", mode=0o1777))
    driver.ok(Mkdir("/pub", mode=0o777))
    sid = driver.session(ALICE)
    driver.ok(Create("/home/alice/g"), sid, caller=ALICE)
    driver.ok(CompleteFile("/home/alice/g"), sid, caller=ALICE)
    driver.ok(Mkdir("/home/alice/docs"), caller=ALICE)
    driver.ok(Create("/home/alice/docs/f"), sid, caller=ALICE)
    driver.ok(CompleteFile("/home/alice/docs/f"), sid, caller=ALICE)
    return driver


def sm(d: Driver) -> ShardStateMachine:
    assert isinstance(d.sm, ShardStateMachine)
    return d.sm


def refused(d: Driver, cmd: Any, caller: Caller, session: int = 0) -> dict[str, Any]:
    """Apply ``cmd`` for ``caller``: it must be PERMISSION_DENIED with every replicated
    record unchanged (the clock does not move, so a refusal may not change a byte)."""
    before = state(d.sm)
    result = d.err(cmd, "PERMISSION_DENIED", session, caller=caller)
    assert state(d.sm) == before
    assert result.error is not None
    return result.error


def read_refused(read: Callable[[], Any]) -> PermissionDenied:
    with pytest.raises(PermissionDenied) as caught:
        read()
    return caught.value


# -- ownership ------------------------------------------------------------------------------------
def test_the_owner_is_the_caller_and_the_group_the_parents_whatever_the_request_says(
    d: Driver,
) -> None:
    sid = d.session(BOB)
    info = d.ok(Create("/pub/x", owner="mallory", group="wheel"), sid, caller=BOB)
    assert (info["owner"], info["group"]) == ("bob", "keelfs")
    d.ok(Mkdir("/pub/dir", owner="mallory", group="wheel"), caller=BOB)
    made = sm(d).stat("/pub/dir")
    assert (made.owner, made.group) == ("bob", "keelfs")
    d.ok(Mkdir("/home/alice/docs/a/b", parents=True, owner="mallory"), caller=ALICE)
    for path in ("/home/alice/docs/a", "/home/alice/docs/a/b"):
        made = sm(d).stat(path)
        assert (made.owner, made.group) == ("alice", "staff")


def test_a_superuser_may_name_owner_and_group() -> None:
    d = formatted(ShardStateMachine(None))
    sid = d.session(ROOT)
    info = d.ok(Create("/x", owner="alice", group="staff"), sid, caller=ROOT)
    assert (info["owner"], info["group"]) == ("alice", "staff")
    info = d.ok(Create("/y", owner="carol", group="staff"), d.session())  # no caller: the superuser
    assert (info["owner"], info["group"]) == ("carol", "staff")


# -- bob inside alice's private directory ---------------------------------------------------------
INSIDE = ["/home/alice/g", "/home/alice/docs/f"]
"""A file in alice's 0700 directory, and one deeper, whose parent (0755) would let bob in:
only the grandparent's traverse guard refuses him there."""


@pytest.mark.parametrize("path", INSIDE)
def test_bob_may_not_read_stat_or_list_inside_alices_private_directory(
    d: Driver, path: str
) -> None:
    s = sm(d)
    err = read_refused(lambda: s.check_access(path, READ, caller=BOB))
    assert err.path == "/home/alice"
    assert "user=bob" in err.message and "EXECUTE" in err.message
    read_refused(lambda: s.stat(path, caller=BOB))
    parent = path.rsplit("/", 1)[0]
    read_refused(lambda: s.list_dir(parent, caller=BOB))
    read_refused(lambda: s.content_summary(parent, caller=BOB))
    # alice may do all of it, and a superuser too
    for who in (ALICE, ROOT):
        assert s.check_access(path, READ, caller=who).path == path
        assert [e.path for e in s.list_dir(parent, caller=who).entries]


@pytest.mark.parametrize("path", INSIDE)
def test_bob_may_not_change_anything_inside_alices_private_directory(d: Driver, path: str) -> None:
    sid = d.session(BOB)
    parent = path.rsplit("/", 1)[0]
    refused(d, Create(f"{parent}/new"), BOB, sid)
    refused(d, Create(path, overwrite=True), BOB, sid)
    refused(d, Mkdir(f"{parent}/newdir"), BOB)
    refused(d, Mkdir(f"{parent}/p/q", parents=True), BOB)
    refused(d, Delete(path), BOB)
    refused(d, Delete("/home/alice/docs", recursive=True), BOB)
    refused(d, Rename(path, "/pub/stolen"), BOB)
    refused(d, Rename("/pub", f"{parent}/planted"), BOB)
    refused(d, SetTimes(path, mtime=1), BOB)
    refused(d, SetReplication(path, 1), BOB)
    refused(d, SetPermission(path, 0o777), BOB)
    refused(d, SetOwner(path, group="users"), BOB)
    # what he cannot see he cannot learn about either: no NOT_FOUND for a missing name
    refused(d, Delete(f"{parent}/no-such-file"), BOB)


def test_alice_and_a_superuser_may_do_what_bob_may_not(d: Driver) -> None:
    for who, name in ((ALICE, "a"), (ROOT, "r")):
        sid = d.session(who)
        d.ok(Create(f"/home/alice/docs/{name}"), sid, caller=who)
        d.ok(CompleteFile(f"/home/alice/docs/{name}"), sid, caller=who)
        d.ok(Rename(f"/home/alice/docs/{name}", f"/home/alice/{name}2"), caller=who)
        d.ok(SetTimes(f"/home/alice/{name}2", mtime=5), caller=who)
        d.ok(Delete(f"/home/alice/{name}2"), caller=who)
    d.ok(Delete("/home/alice/docs", recursive=True), caller=ALICE)
    assert [e.name for e in sm(d).list_dir("/home/alice").entries] == ["g"]


def test_a_group_member_gets_the_group_bits(d: Driver) -> None:
    d.ok(SetPermission("/home/alice", 0o750), caller=ALICE)
    s = sm(d)
    assert s.check_access("/home/alice/g", READ, caller=CAROL).owner == "alice"
    read_refused(lambda: s.stat("/home/alice/g", caller=BOB))
    refused(d, Create("/home/alice/carols"), CAROL, d.session(CAROL))  # r-x: no w


# -- traverse guards ------------------------------------------------------------------------------
def test_a_chmod_of_an_ancestor_opens_and_closes_every_directory_below_it(d: Driver) -> None:
    s = sm(d)
    read_refused(lambda: s.stat("/home/alice/docs/f", caller=BOB))
    d.ok(SetPermission("/home/alice", 0o755), caller=ALICE)
    assert s.stat("/home/alice/docs/f", caller=BOB).owner == "alice"
    assert s.list_dir("/home/alice/docs", caller=BOB).entries
    d.ok(SetPermission("/home/alice", 0o700), caller=ALICE)
    read_refused(lambda: s.stat("/home/alice/docs/f", caller=BOB))
    d.ok(SetOwner("/home/alice", owner="bob"), caller=ROOT)  # a chown moves the guard too
    assert s.stat("/home/alice/docs/f", caller=BOB).owner == "alice"
    read_refused(lambda: s.stat("/home/alice/docs/f", caller=ALICE))


def test_a_renamed_directory_takes_the_guards_of_its_new_place(d: Driver) -> None:
    s = sm(d)
    d.ok(Mkdir("/home/alice/docs/sub/deeper", parents=True), caller=ALICE)
    d.ok(Rename("/home/alice/docs", "/pub/docs"), caller=ALICE)
    assert s.list_dir("/pub/docs/sub/deeper", caller=BOB).entries == ()
    assert s.stat("/pub/docs/f", caller=BOB).owner == "alice"
    d.ok(Rename("/pub/docs", "/home/alice/again"), caller=ALICE)
    err = read_refused(lambda: s.list_dir("/home/alice/again/sub/deeper", caller=BOB))
    assert err.path == "/home/alice"


def test_a_private_directory_inside_a_moved_one_stays_private(d: Driver) -> None:
    s = sm(d)
    d.ok(Mkdir("/pub/proj"), caller=ALICE)
    d.ok(Mkdir("/pub/proj/secret", mode=0o700), caller=ALICE)
    d.ok(Mkdir("/pub/proj/secret/inner"), caller=ALICE)
    d.ok(Mkdir("/pub/elsewhere/deep", parents=True))
    d.ok(Rename("/pub/proj", "/pub/elsewhere/deep/proj"))
    err = read_refused(lambda: s.list_dir("/pub/elsewhere/deep/proj/secret/inner", caller=BOB))
    assert err.path == "/pub/elsewhere/deep/proj/secret"


def test_set_traverse_guard_brings_a_change_to_a_shard_holding_only_deeper_records() -> None:
    """The shard of /home/alice/docs holds its self-record and entries, not /home/alice:
    the guard it got at mkdir refuses bob, and ``SetTraverseGuard`` (the master's fan-out
    after a chmod on the shard of /home/alice's entry) changes it."""
    d = formatted(ShardStateMachine(None, shard_id="shard-2"))
    d.ok(MkdirSelf("/home/alice/docs", owner="alice", group="staff", guards=("2:700:alice:staff",)))
    sid = d.session(ALICE)
    d.ok(Create("/home/alice/docs/f"), sid, caller=ALICE)
    d.ok(Mkdir("/home/alice/docs/sub"), caller=ALICE)
    s = sm(d)
    read_refused(lambda: s.stat("/home/alice/docs/f", caller=BOB))
    refused(d, SetTraverseGuard("/home/alice", "alice", "staff", 0o755), ALICE)  # servers only
    # the self-records of docs and sub, and sub's entry
    assert d.ok(SetTraverseGuard("/home/alice", "alice", "staff", 0o755)) == {"records": 3}
    assert s.stat("/home/alice/docs/f", caller=BOB).owner == "alice"
    assert s.list_dir("/home/alice/docs/sub", caller=BOB).entries == ()
    assert d.ok(SetTraverseGuard("/home/alice", "alice", "staff", 0o711)) == {"records": 0}
    d.ok(SetTraverseGuard("/home/alice", "alice", "staff", 0o700))
    read_refused(lambda: s.list_dir("/home/alice/docs/sub", caller=BOB))
    # the directory's own self-record takes the new attributes
    d.ok(SetTraverseGuard("/home/alice/docs", "alice", "staff", 0o700))
    assert s.stat("/", caller=BOB).path == "/"
    read_refused(lambda: s.list_dir("/home/alice/docs", caller=CAROL))


def test_guards_leave_records_of_open_directories_as_they_were(d: Driver) -> None:
    """A directory under nothing private carries no guards: its record encodes as before."""
    raw = sm(d).self_record("/pub")
    assert raw is not None and len(json.loads(raw)) == 12
    raw = sm(d).self_record("/home/alice/docs")
    assert raw is not None and json.loads(raw)[12] == [[2, 0o700, "alice", "staff"]]


# -- sticky bit, chmod, chown ---------------------------------------------------------------------
def test_in_a_sticky_directory_only_owners_remove_or_rename(d: Driver) -> None:
    d.ok(Create("/tmp/a"), d.session(ALICE), caller=ALICE)
    d.ok(Create("/tmp/b"), d.session(BOB), caller=BOB)
    refused(d, Delete("/tmp/a"), BOB)
    refused(d, Rename("/tmp/a", "/tmp/mine"), BOB)
    refused(d, Rename("/tmp/b", "/tmp/a", overwrite=True), BOB)
    d.ok(Rename("/tmp/b", "/tmp/b2"), caller=BOB)
    d.ok(Delete("/tmp/b2"), caller=BOB)
    d.ok(Rename("/tmp/a", "/tmp/a2"), caller=ALICE)
    d.ok(Delete("/tmp/a2"), caller=Caller("keelfs", ()))  # the directory's owner


def test_only_the_owner_changes_the_mode(d: Driver) -> None:
    refused(d, SetPermission("/home/alice", 0o777), BOB)
    refused(d, SetPermission("/home/alice", 0o777), CAROL)
    assert d.ok(SetPermission("/home/alice", 0o750), caller=ALICE)["mode"] == 0o750


def test_chown_is_the_superusers_and_chgrp_the_owners_to_their_own_groups(d: Driver) -> None:
    d.ok(SetPermission("/home/alice", 0o755), caller=ALICE)
    refused(d, SetOwner("/home/alice/g", owner="bob"), ALICE)
    refused(d, SetOwner("/home/alice/g", owner="bob"), BOB)
    refused(d, SetOwner("/home/alice/g", group="users"), BOB)
    refused(d, SetOwner("/home/alice/g", group="users"), ALICE)  # not one of hers
    two_groups = Caller("alice", ("staff", "research"))
    assert d.ok(SetOwner("/home/alice/g", group="research"), caller=two_groups)["group"] == (
        "research"
    )
    assert d.ok(SetOwner("/home/alice/g", owner="bob"), caller=ROOT)["owner"] == "bob"


def test_times_for_the_owner_or_a_writer_replication_for_a_writer(d: Driver) -> None:
    d.ok(SetPermission("/home/alice", 0o755), caller=ALICE)
    d.ok(SetPermission("/home/alice/g", 0o444), caller=ALICE)
    d.ok(SetTimes("/home/alice/g", atime=7), caller=ALICE)
    refused(d, SetReplication("/home/alice/g", 2), ALICE)
    d.ok(SetPermission("/home/alice/g", 0o646), caller=ALICE)
    d.ok(SetTimes("/home/alice/g", atime=8), caller=BOB)
    d.ok(SetReplication("/home/alice/g", 2), caller=BOB)


# -- deletes and writers --------------------------------------------------------------------------
def test_a_recursive_delete_needs_rwx_on_every_directory_that_is_not_empty(d: Driver) -> None:
    sid = d.session(CAROL)
    d.ok(Mkdir("/pub/proj"), caller=ALICE)
    d.ok(SetPermission("/pub/proj", 0o777), caller=ALICE)
    d.ok(Mkdir("/pub/proj/locked", mode=0o700), caller=CAROL)
    d.ok(Create("/pub/proj/locked/f"), sid, caller=CAROL)
    refused(d, Delete("/pub/proj", recursive=True), BOB)
    d.ok(Delete("/pub/proj/locked/f"), caller=CAROL)
    d.ok(Delete("/pub/proj", recursive=True), caller=BOB)  # an empty directory is no obstacle


def test_a_writer_is_the_files_owner_not_whoever_knows_the_session(d: Driver) -> None:
    sid = d.session(ALICE)
    d.ok(Create("/pub/w", mode=0o644), sid, caller=ALICE)
    refused(d, AddBlock("/pub/w", 1, 1), BOB, sid)
    refused(d, CompleteFile("/pub/w"), BOB, sid)
    d.ok(SetPermission("/pub/w", 0o444), caller=ALICE)  # read-only: its creator still writes
    d.ok(AddBlock("/pub/w", 1, 1), sid, caller=ALICE)
    d.ok(CompleteFile("/pub/w", 0), sid, caller=ALICE)


def test_server_commands_are_refused_for_a_client_caller(d: Driver) -> None:
    servers_only = sorted(op for op, cls in SHARD_COMMANDS.items() if cls.servers_only)
    assert "txn_prepare" in servers_only and "set_traverse_guard" in servers_only
    # a transaction's begin is built by a coordinator in its client's session, for that client
    assert "txn_begin" not in servers_only
    refused(d, DequeueBlockDeletes((1,)), ALICE)
    d.ok(DequeueBlockDeletes((1,)), caller=ROOT)


# -- the caller on the wire -----------------------------------------------------------------------
def test_the_caller_travels_in_the_envelope_and_is_absent_when_none_is_named() -> None:
    plain = Envelope(Mkdir("/x"), 5)
    assert b"who" not in plain.encode()
    for caller in (ALICE, ROOT, Caller("u", ())):
        data = Envelope(Mkdir("/x"), 5, caller=caller).encode()
        assert decode_envelope(data, SHARD_COMMANDS).caller == caller
    assert decode_envelope(plain.encode(), SHARD_COMMANDS).acting_for.superuser


@pytest.mark.parametrize(
    "who",
    [
        "alice",
        ["alice"],
        ["alice", "staff"],
        ["", []],
        ["a:b", []],
        ["alice", [1]],
        ["alice", [], 2],
        ["alice", [], True],
        ["alice", ["g"] * 257],
    ],
)
def test_a_malformed_caller_is_refused_and_changes_nothing(d: Driver, who: object) -> None:
    body = json.loads(Envelope(Mkdir("/pub/z"), d.now).encode())
    body["who"] = who
    before = state(d.sm)
    result = d.raw(json.dumps(body).encode())
    assert result.code == "INVALID_ARGUMENT"
    assert state(d.sm) == before


def test_replicas_applying_the_same_log_agree(d: Driver) -> None:
    d.apply(Mkdir("/home/alice/x"), caller=BOB)
    d.ok(SetPermission("/home/alice", 0o711), caller=ALICE)
    d.ok(Rename("/home/alice/docs", "/pub/docs"), caller=ALICE)
    other = ShardStateMachine(None, shard_id="shard-1")
    d.replay_into(other)
    assert state(other) == state(d.sm)


def test_permission_denied_round_trips(d: Driver) -> None:
    details = refused(d, Delete("/home/alice/g"), BOB)
    err = KeelError.from_details(details)
    assert isinstance(err, PermissionDenied)
    assert (err.path, err.details["user"]) == ("/home/alice", "bob")
    assert WRITE  # the constants are part of the API the master uses


# -- cross-shard operations ---------------------------------------------------------------------
def test_a_transaction_checks_its_callers_rights_where_the_directory_is(d: Driver) -> None:
    """A cross-shard rename's parts carry ``may`` steps: the coordinator refuses to begin one
    whose caller may not remove the source (nothing recorded), a participant records its
    refusal, and a caller with the rights gets the parts prepared and locked."""
    src_dir = [may_step("/home/alice/docs", BOB, WRITE, "f")]
    own = encode_part([*src_dir, Step("del_entry", "/home/alice/docs/f")])
    before = state(d.sm)
    result = d.err(TxnBegin(1, own, json.dumps({"shard-2": own})), "PERMISSION_DENIED")
    assert result.error is not None and result.error["path"] == "/home/alice"
    assert state(d.sm) == before
    prepared = d.ok(TxnPrepare(2, "shard-2", own))
    assert prepared["state"] == "aborted" and prepared["error"]["code"] == "PERMISSION_DENIED"
    sid = d.session(ALICE)
    d.ok(Create("/tmp/a"), sid, caller=ALICE)
    sticky = encode_part([may_step("/tmp", BOB, WRITE, "a"), Step("del_entry", "/tmp/a")])
    assert d.ok(TxnPrepare(3, "shard-2", sticky))["error"]["code"] == "PERMISSION_DENIED"
    allowed = encode_part([may_step("/tmp", ALICE, WRITE, "a"), Step("del_entry", "/tmp/a")])
    assert d.ok(TxnPrepare(4, "shard-2", allowed))["state"] == "prepared"
    assert sm(d).lock_holder("/tmp") == 4  # shared: a chmod of /tmp waits for the decision
    d.err(SetPermission("/tmp", 0o700), "UNAVAILABLE")


def test_a_may_step_refuses_guards_built_before_an_ancestors_chmod(d: Driver) -> None:
    """A new directory's records carry the guards its coordinator read: if a chmod above
    changed them since, the step refuses ("changed": the retry reads anew)."""
    read = (Guard(2, "alice", "staff", 0o700),)  # what /home/alice/docs gives its children
    part = encode_part([may_step("/home/alice/docs", ALICE, WRITE, "", read)])
    assert d.ok(TxnPrepare(1, "shard-2", part))["state"] == "prepared"
    d.ok(TxnFinish(1, False))
    d.ok(SetPermission("/home/alice", 0o755), caller=ALICE)
    refused_part = d.ok(TxnPrepare(2, "shard-2", part))
    assert refused_part["state"] == "aborted"
    assert refused_part["error"]["reason"] == "changed"
    fresh = encode_part([may_step("/home/alice/docs", ALICE, WRITE, "", ())])
    assert d.ok(TxnPrepare(3, "shard-2", fresh))["state"] == "prepared"


@pytest.mark.parametrize(
    "record",
    [
        '[["bob",[]],8,""]',
        '[["bob",[]],2,"a/b"]',
        '"x"',
        "[1,2]",
        '[["bob",[]],2,"",["x"]]',
        '[["bob",[]],2,"",[],5]',
        '{"a":1}',
    ],
)
def test_a_malformed_may_step_is_refused(record: str) -> None:
    with pytest.raises(KeelError):
        decode_part(json.dumps([["may", "/tmp", record]]))


# -- a reader's stat (GetFileInfo with read) ------------------------------------------------------
def _outcome(read: Callable[[], Any]) -> Any:
    try:
        return read()
    except KeelError as exc:
        return (type(exc).__name__, str(exc), getattr(exc, "path", None))


def test_a_readers_stat_is_stat_then_a_read_check_with_one_lookup(d: Driver) -> None:
    """``stat_for_read`` answers and refuses exactly as ``stat`` followed (for a file) by
    ``check_access(READ, with_data=True)``: for every caller, on files, directories, a file
    nobody may read, missing paths, a path under a file, and through a snapshot."""
    bobs = d.session(BOB)
    d.ok(Create("/pub/noread", mode=0o000), bobs, caller=BOB)
    d.ok(CompleteFile("/pub/noread"), bobs, caller=BOB)
    d.ok(SnapshotAllow("/home/alice/docs"))
    d.ok(SnapshotTake("/home/alice/docs", "s1", 1234))
    s = sm(d)

    def old_way(path: str, caller: Caller) -> tuple[Any, bool]:
        info = s.stat(path, caller=caller)
        if info.is_dir:
            return info, False
        return s.check_access(path, READ, caller=caller, with_data=True), True

    checked = 0
    for path in (
        "/",
        "/home",
        "/home/alice",
        "/home/alice/g",
        "/home/alice/docs/f",
        "/home/alice/g/under-a-file",
        "/home/alice/missing",
        "/pub/noread",
        "/pub/missing",
        "/home/alice/docs/.snapshot/s1/f",
        "/home/alice/docs/.snapshot/s1",
        "//home/alice/./docs/f",
    ):
        for caller in (ALICE, BOB, CAROL, ROOT):
            expected = _outcome(lambda p=path, c=caller: old_way(p, c))
            got = _outcome(lambda p=path, c=caller: s.stat_for_read(p, caller=c))
            assert got == expected, (path, caller)
            checked += isinstance(got, tuple) and isinstance(got[1], bool)
    assert checked >= 8  # some answers, not only refusals
    info, readable = s.stat_for_read("/home/alice/g", caller=ALICE)
    assert readable and info.path == "/home/alice/g"
    read_refused(lambda: s.stat_for_read("/pub/noread", caller=ALICE))
    read_refused(lambda: s.stat_for_read("/home/alice/g", caller=BOB))


def test_a_plain_stat_with_its_read_check_is_stat_then_check_access(d: Driver) -> None:
    """``stat_and_may_read`` answers and refuses exactly as ``stat`` followed by
    ``check_access(READ)`` (its ``PermissionDenied`` taken as "may not read"): for every
    caller, on files, directories, a file nobody may read, missing paths, a path under a
    file, and through a snapshot."""
    bobs = d.session(BOB)
    d.ok(Create("/pub/noread", mode=0o000), bobs, caller=BOB)
    d.ok(CompleteFile("/pub/noread"), bobs, caller=BOB)
    d.ok(Mkdir("/pub/nolist", mode=0o311), bobs, caller=BOB)
    d.ok(SnapshotAllow("/home/alice/docs"))
    d.ok(SnapshotTake("/home/alice/docs", "s1", 1234))
    s = sm(d)

    def old_way(path: str, caller: Caller) -> tuple[Any, bool]:
        info = s.stat(path, caller=caller)
        try:
            s.check_access(path, READ, caller=caller)
        except PermissionDenied:
            return info, False
        return info, True

    answers: Counter[bool] = Counter()
    for path in (
        "/",
        "/home",
        "/home/alice",
        "/home/alice/g",
        "/home/alice/docs/f",
        "/home/alice/g/under-a-file",
        "/home/alice/missing",
        "/pub/noread",
        "/pub/nolist",
        "/pub/missing",
        "/home/alice/docs/.snapshot/s1/f",
        "/home/alice/docs/.snapshot/s1",
        "//home/alice/./docs/f",
    ):
        for caller in (ALICE, BOB, CAROL, ROOT):
            expected = _outcome(lambda p=path, c=caller: old_way(p, c))
            got = _outcome(lambda p=path, c=caller: s.stat_and_may_read(p, caller=c))
            assert got == expected, (path, caller)
            if isinstance(got[1], bool):
                answers[got[1]] += 1
    assert answers[True] >= 8 and answers[False] >= 2  # both answers, not only refusals
    info, may_read = s.stat_and_may_read("/pub/noread", caller=ALICE)
    assert info.path == "/pub/noread" and info.data is None and not may_read
