"""POSIX/HDFS ACLs in the shard state machine (``keelfs.meta.acls``): the check order, the
mask, default ACLs inherited by new files and directories, chmod with an ACL, the traverse
guards of a directory whose ACL refuses someone ``x`` (here and on a shard holding only
deeper records), refusals that change nothing, and the records' encoding.

The checks are compared with a small reference of HDFS's rule (``reference_allows``), written
over the whole ACL as set, apart from the module's stored form.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from meta_helpers import Driver, formatted, state

from keelfs.errors import InvalidArgument, PermissionDenied
from keelfs.meta import acls
from keelfs.meta.acls import AclEntry
from keelfs.meta.commands import (
    CompleteFile,
    Create,
    Mkdir,
    MkdirSelf,
    ModifyAclEntries,
    RemoveAcl,
    RemoveAclEntries,
    RemoveDefaultAcl,
    Rename,
    SetAcl,
    SetPermission,
    SetTraverseGuard,
    SnapshotAllow,
    SnapshotTake,
    TxnFinish,
    TxnPrepare,
)
from keelfs.meta.namespace import ShardStateMachine
from keelfs.meta.principals import EXECUTE, READ, WRITE, Caller, Guard
from keelfs.meta.records import FileInfo, Inode, decode_foreign
from keelfs.meta.transactions import decode_part, encode_part, may_step

ALICE = Caller("alice", ("staff",))
BOB = Caller("bob", ("users",))
CAROL = Caller("carol", ("staff",))
DAVE = Caller("dave", ("ops", "staff"))
ROOT = Caller("hdfs", ("supergroup",), superuser=True)


@pytest.fixture
def d() -> Driver:
    """``/proj`` (alice:staff 0750), ``/proj/f`` (0640), ``/proj/sub`` (0755) with ``g``."""
    driver = formatted(ShardStateMachine(None, shard_id="shard-1"))
    driver.ok(Mkdir("/proj", mode=0o750, owner="alice", group="staff"))
    sid = driver.session(ALICE)
    driver.ok(Create("/proj/f", mode=0o640), sid, caller=ALICE)
    driver.ok(CompleteFile("/proj/f"), sid, caller=ALICE)
    driver.ok(Mkdir("/proj/sub", mode=0o755), caller=ALICE)
    driver.ok(Create("/proj/sub/g", mode=0o644), sid, caller=ALICE)
    driver.ok(CompleteFile("/proj/sub/g"), sid, caller=ALICE)
    return driver


def sm(d: Driver) -> ShardStateMachine:
    assert isinstance(d.sm, ShardStateMachine)
    return d.sm


def spec(text: str) -> tuple[str, ...]:
    return tuple(text.split(","))


def may(s: ShardStateMachine, path: str, access: int, caller: Caller) -> bool:
    try:
        s.check_access(path, access, caller=caller)
    except PermissionDenied:
        return False
    return True


def guards_of(s: ShardStateMachine, directory: str) -> tuple[Guard, ...]:
    raw = s.self_record(directory)
    assert raw is not None
    return Inode.decode(raw.encode()).guards


def refused(d: Driver, cmd: Any, caller: Caller, code: str = "PERMISSION_DENIED") -> None:
    before = state(d.sm)
    d.err(cmd, code, caller=caller)
    assert state(d.sm) == before


def texts(info: dict[str, Any]) -> list[str]:
    return list(info.get("acl", []))


# -- the check order and the mask ----------------------------------------------------------------
def test_a_named_user_gets_its_entry_masked_before_any_group(d: Driver) -> None:
    s = sm(d)
    assert not may(s, "/proj/f", READ, BOB)  # other: ---
    info = d.ok(
        SetAcl("/proj/f", spec("user::rw-,user:bob:rw-,group::r--,other::---")), caller=ALICE
    )
    assert texts(info) == ["user:bob:rw-", "group::r--"]
    assert info["mode"] == 0o660  # the mask (union of the group class) in the group bits
    assert may(s, "/proj", EXECUTE, ALICE) and not may(s, "/proj", EXECUTE, BOB)
    d.ok(SetPermission("/proj", 0o755), caller=ALICE)
    assert may(s, "/proj/f", READ | WRITE, BOB)
    d.ok(SetPermission("/proj/f", 0o640), caller=ALICE)  # chmod: the mask is now r--
    assert may(s, "/proj/f", READ, BOB) and not may(s, "/proj/f", WRITE, BOB)
    assert s.stat("/proj/f").acl == (
        AclEntry(False, "user", "bob", 6),
        AclEntry(False, "group", "", 4),
    )


def test_a_named_user_entry_refuses_even_where_other_and_groups_grant(d: Driver) -> None:
    d.ok(SetPermission("/proj", 0o755), caller=ALICE)
    d.ok(ModifyAclEntries("/proj/sub/g", spec("user:carol:---")), caller=ALICE)
    s = sm(d)
    assert not may(s, "/proj/sub/g", READ, CAROL)  # carol is in staff (r--) and other is r--
    assert may(s, "/proj/sub/g", READ, BOB)


def test_groups_any_matching_entry_grants_and_a_matched_group_never_falls_to_other(
    d: Driver,
) -> None:
    d.ok(SetPermission("/proj", 0o755), caller=ALICE)
    d.ok(SetAcl("/proj/sub/g", spec("user::rw-,group::---,group:ops:r--,other::rw-")), caller=ALICE)
    s = sm(d)
    assert may(s, "/proj/sub/g", READ, DAVE)  # staff gives nothing, ops gives r
    assert not may(s, "/proj/sub/g", WRITE, DAVE)  # matched a group: other's w is not his
    assert not may(s, "/proj/sub/g", READ, CAROL)  # staff only: ---
    assert may(s, "/proj/sub/g", READ | WRITE, BOB)  # no entry: other
    assert may(s, "/proj/sub/g", READ | WRITE, ALICE)  # the owner
    assert may(s, "/proj/sub/g", READ | WRITE | EXECUTE, ROOT)


def test_a_mask_given_bounds_the_group_class_and_chmod_changes_it(d: Driver) -> None:
    d.ok(SetPermission("/proj", 0o755), caller=ALICE)
    info = d.ok(
        SetAcl("/proj/sub/g", spec("user::rw-,user:bob:rwx,group::rw-,mask::r--,other::---")),
        caller=ALICE,
    )
    assert info["mode"] == 0o640
    s = sm(d)
    assert may(s, "/proj/sub/g", READ, BOB) and not may(s, "/proj/sub/g", WRITE, BOB)
    assert may(s, "/proj/sub/g", READ, CAROL) and not may(s, "/proj/sub/g", WRITE, CAROL)
    d.ok(SetPermission("/proj/sub/g", 0o670), caller=ALICE)
    assert may(s, "/proj/sub/g", READ | WRITE, BOB) and may(s, "/proj/sub/g", WRITE, CAROL)
    # the ACL itself is unchanged by the chmod: the mask is the group bits
    assert s.stat("/proj/sub/g").acl == acls.parse_spec("user:bob:rwx,group::rw-")


def test_remove_acl_puts_the_group_entry_back_into_the_mode(d: Driver) -> None:
    d.ok(SetAcl("/proj/f", spec("user::rw-,user:bob:rwx,group::r--,other::---")), caller=ALICE)
    assert sm(d).stat("/proj/f").mode == 0o670
    info = d.ok(RemoveAcl("/proj/f"), caller=ALICE)
    assert info["mode"] == 0o640 and "acl" not in info
    raw = sm(d).entry_record("/proj/f")
    assert raw is not None and len(json.loads(raw)) == 12  # as before any ACL


def test_remove_entries_recomputes_the_mask_and_refuses_to_drop_a_needed_one(d: Driver) -> None:
    d.ok(ModifyAclEntries("/proj/f", spec("user:bob:rwx,user:carol:r--")), caller=ALICE)
    assert sm(d).stat("/proj/f").mode == 0o670  # mask: rwx | r-- | group r--
    info = d.ok(RemoveAclEntries("/proj/f", spec("user:bob")), caller=ALICE)
    assert texts(info) == ["user:carol:r--", "group::r--"] and info["mode"] == 0o640
    refused(d, RemoveAclEntries("/proj/f", spec("mask::")), ALICE, "INVALID_ARGUMENT")
    # the last named entry gone: the mask stays, recomputed (HDFS keeps it: getfacl shows it)
    info = d.ok(RemoveAclEntries("/proj/f", spec("user:carol:")), caller=ALICE)
    assert texts(info) == ["group::r--"] and info["mode"] == 0o640
    with pytest.raises(InvalidArgument, match="mask is required"):
        acls.filter_by_spec(
            acls.parse_spec("user::rw-,user:x:r--,group::r--,mask::r--,other::---"),
            acls.parse_spec("mask::", with_perm=False),
        )


# -- default ACLs --------------------------------------------------------------------------------
def test_new_files_and_directories_inherit_the_default_acl(d: Driver) -> None:
    d.ok(SetPermission("/proj", 0o755), caller=ALICE)
    info = d.ok(ModifyAclEntries("/proj/sub", spec("default:user:bob:rwx")), caller=ALICE)
    # the missing default base entries are copied from the access ones, a mask computed
    assert texts(info) == [
        "default:user::rwx",
        "default:user:bob:rwx",
        "default:group::r-x",
        "default:mask::rwx",
        "default:other::r-x",
    ]
    assert info["mode"] == 0o755  # the access ACL is still the mode alone
    sid = d.session(ALICE)
    made = d.ok(Create("/proj/sub/new", mode=0o664), sid, caller=ALICE)
    assert made["acl"] == ["user:bob:rwx", "group::r-x"]
    assert made["mode"] == 0o664  # user rwx&rw-, mask rwx&rw-, other r-x&r--
    s = sm(d)
    assert may(s, "/proj/sub/new", READ | WRITE, BOB) and not may(s, "/proj/sub/new", EXECUTE, BOB)
    d.ok(Mkdir("/proj/sub/a/b", parents=True, mode=0o750), caller=ALICE)
    for path in ("/proj/sub/a", "/proj/sub/a/b"):
        made_dir = s.stat(path)
        assert made_dir.mode == 0o750
        assert [e.to_text() for e in made_dir.acl] == [
            "user:bob:rwx",
            "group::r-x",
            *texts(info),
        ]
    assert may(s, "/proj/sub/a/b", READ | EXECUTE, BOB)  # mask: rwx & 750's r-x
    assert not may(s, "/proj/sub/a/b", WRITE, BOB)


def test_a_minimal_default_acl_filters_the_group_entry_and_stores_nothing_of_the_access(
    d: Driver,
) -> None:
    d.ok(
        SetAcl("/proj/sub", spec("default:user::rwx,default:group::rwx,default:other::---")),
        caller=ALICE,
    )
    sid = d.session(ALICE)
    made = d.ok(Create("/proj/sub/m", mode=0o644), sid, caller=ALICE)
    assert made["mode"] == 0o640 and "acl" not in made  # a minimal ACL: the mode alone


def test_default_acls_are_for_directories_only_and_remove_default_keeps_access(d: Driver) -> None:
    refused(d, ModifyAclEntries("/proj/f", spec("default:user:bob:r--")), ALICE, "INVALID_ARGUMENT")
    d.ok(ModifyAclEntries("/proj/sub", spec("user:bob:r-x,default:user:bob:r-x")), caller=ALICE)
    info = d.ok(RemoveDefaultAcl("/proj/sub"), caller=ALICE)
    assert texts(info) == ["user:bob:r-x", "group::r-x"]
    info = d.ok(RemoveDefaultAcl("/proj/f"), caller=ALICE)  # nothing to remove: no error
    assert "acl" not in info


# -- refusals ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "cmd",
    [
        SetAcl("/proj/f", spec("user::rwx,group::r--,other::---")),
        ModifyAclEntries("/proj/f", spec("user:bob:rwx")),
        RemoveAclEntries("/proj/f", spec("user:bob")),
        RemoveDefaultAcl("/proj/sub"),
        RemoveAcl("/proj/f"),
    ],
)
def test_only_the_owner_or_a_superuser_changes_an_acl(d: Driver, cmd: Any) -> None:
    d.ok(SetPermission("/proj", 0o777), caller=ALICE)
    d.ok(SetPermission("/proj/f", 0o666), caller=ALICE)  # carol may write it, not own it
    refused(d, cmd, CAROL)
    d.ok(cmd, caller=ROOT)


@pytest.mark.parametrize(
    "entries",
    [
        ("user:bob:rwx", "user:bob:r--"),  # the same key twice
        ("user::rwx", "group::r--"),  # a set without other::
        ("mask:m:rwx",),  # a named mask
        ("user:bob:rwz",),  # a bad permission
        ("owner:bob:rwx",),  # a bad kind
        ("user:b,ob:rwx",),
        tuple(f"user:u{i}:r--" for i in range(33)),  # more than 32
    ],
)
def test_bad_specs_are_refused_with_invalid_argument_and_change_nothing(
    d: Driver, entries: tuple[str, ...]
) -> None:
    refused(d, SetAcl("/proj/f", entries), ALICE, "INVALID_ARGUMENT")
    if entries != ("user::rwx", "group::r--"):  # (a modify keeps the other:: it has)
        refused(d, ModifyAclEntries("/proj/f", entries), ALICE, "INVALID_ARGUMENT")


def test_thirty_named_entries_fit_and_the_limit_is_per_scope(d: Driver) -> None:
    many = tuple(f"user:u{i}:r--" for i in range(28))  # + user::, group::, mask, other: 32
    d.ok(ModifyAclEntries("/proj/sub", many), caller=ALICE)
    refused(d, ModifyAclEntries("/proj/sub", ("user:one-more:r--",)), ALICE, "INVALID_ARGUMENT")
    d.ok(ModifyAclEntries("/proj/sub", tuple("default:" + e for e in many)), caller=ALICE)


# -- traverse guards with ACLs -------------------------------------------------------------------
def test_a_directory_whose_acl_refuses_x_is_a_guard_for_everything_below(d: Driver) -> None:
    s = sm(d)
    d.ok(SetPermission("/proj", 0o755), caller=ALICE)
    assert may(s, "/proj/sub/g", READ, BOB)
    assert guards_of(sm(d), "/proj/sub") == ()
    d.ok(ModifyAclEntries("/proj", spec("user:bob:---")), caller=ALICE)
    assert not may(s, "/proj/sub/g", READ, BOB)  # other has x, bob's entry has not
    with pytest.raises(PermissionDenied) as caught:
        s.list_dir("/proj/sub", caller=BOB)
    assert caught.value.path == "/proj"
    assert may(s, "/proj/sub/g", READ, CAROL)
    (guard,) = guards_of(s, "/proj/sub")
    assert guard.acl == acls.parse_spec("user:bob:---,group::r-x")
    d.ok(ModifyAclEntries("/proj", spec("user:bob:r-x")), caller=ALICE)  # no one refused: none
    assert may(s, "/proj/sub/g", READ, BOB) and guards_of(s, "/proj/sub") == ()


def test_a_named_user_or_group_entry_lets_through_where_the_mode_refuses(d: Driver) -> None:
    s = sm(d)
    assert not may(s, "/proj/sub/g", READ, BOB)  # /proj 0750: other has no x
    d.ok(ModifyAclEntries("/proj", spec("user:bob:--x,group:ops:--x")), caller=ALICE)
    assert may(s, "/proj/sub/g", READ, BOB)
    assert may(s, "/proj/sub/g", READ, Caller("erin", ("ops",)))
    assert not may(s, "/proj/sub/g", READ, Caller("frank", ("other",)))
    d.ok(SetPermission("/proj", 0o700), caller=ALICE)  # the mask takes x away from all of them
    assert not may(s, "/proj/sub/g", READ, BOB)
    assert not may(s, "/proj/sub/g", READ, Caller("erin", ("ops",)))


def test_a_moved_directory_keeps_and_rebases_acl_guards(d: Driver) -> None:
    d.ok(SetPermission("/proj", 0o755), caller=ALICE)
    d.ok(Mkdir("/proj/sub/secret", mode=0o755), caller=ALICE)
    d.ok(ModifyAclEntries("/proj/sub/secret", spec("user:bob:---")), caller=ALICE)
    d.ok(Mkdir("/proj/sub/secret/inner"), caller=ALICE)
    d.ok(Mkdir("/open/deep", parents=True, mode=0o777))
    d.ok(Rename("/proj/sub", "/open/deep/sub"))
    s = sm(d)
    with pytest.raises(PermissionDenied) as caught:
        s.list_dir("/open/deep/sub/secret/inner", caller=BOB)
    assert caught.value.path == "/open/deep/sub/secret"
    assert s.list_dir("/open/deep/sub/secret/inner", caller=CAROL).entries == ()


def test_set_traverse_guard_carries_the_acl_to_a_shard_holding_only_deeper_records() -> None:
    """shard-2 holds /a/b's self-record and what is in it, not /a (on shard-1): /a's ACL
    refuses bob ``x`` through his named entry, lets carol in through a group entry, and the
    master's fan-out (``SetTraverseGuard`` with the ACL) keeps shard-2 in step."""
    d = formatted(ShardStateMachine(None, shard_id="shard-2"))
    d.ok(MkdirSelf("/a/b", owner="alice", group="staff", guards=("1:700:alice:staff",)))
    d.ok(Create("/a/b/f", mode=0o644), d.session())
    s = sm(d)
    for who in (BOB, CAROL):
        assert not may(s, "/a/b/f", READ, who)
    acl = ("user:bob:---", "group::---", "group:staff:r-x")
    assert d.ok(SetTraverseGuard("/a", "alice", "staff", 0o755, acl)) == {"records": 1}
    assert not may(s, "/a/b/f", READ, BOB)  # his entry: ---, though other has r-x
    assert may(s, "/a/b/f", READ, CAROL)  # a group entry & mask r-x
    assert may(s, "/a/b/f", READ, Caller("gina", ("staff",)))
    d.ok(SetTraverseGuard("/a", "alice", "staff", 0o745, acl))  # mask r--: carol out
    assert not may(s, "/a/b/f", READ, CAROL)
    assert may(s, "/a/b/f", READ, Caller("zed", ()))  # other r-x
    d.ok(SetTraverseGuard("/a", "alice", "staff", 0o755))  # the ACL removed: all pass
    assert may(s, "/a/b/f", READ, BOB) and guards_of(s, "/a/b") == ()
    # a client may not send it
    before = state(d.sm)
    d.err(SetTraverseGuard("/a", "alice", "staff", 0o700, acl), "PERMISSION_DENIED", caller=ALICE)
    assert state(d.sm) == before


def test_the_self_record_on_another_shard_takes_the_default_acl_its_children_inherit() -> None:
    d = formatted(ShardStateMachine(None, shard_id="shard-2"))
    d.ok(MkdirSelf("/a", owner="alice", group="staff"))
    acl = ("default:user::rwx", "default:user:bob:rwx", "default:group::r-x")
    acl += ("default:mask::rwx", "default:other::---")
    d.ok(SetTraverseGuard("/a", "alice", "staff", 0o755, acl))
    made = d.ok(Create("/a/f", mode=0o644), d.session(ALICE), caller=ALICE)
    assert made["acl"] == ["user:bob:rwx", "group::r-x"] and made["mode"] == 0o640


def test_a_may_step_refuses_a_new_directory_built_before_a_default_acl_changed(
    d: Driver,
) -> None:
    """A cross-shard mkdir builds the new directory's ACL from its parent's default ACL as
    the coordinator read it; a setfacl of those defaults since makes the parent's shard
    refuse the part ("changed": the retry reads anew), as a chmod above does for guards."""
    read = acls.default_entries(sm(d).stat("/proj/sub").acl)
    assert read == ()
    guards = guards_of(sm(d), "/proj/sub")  # what its children get (/proj's: 0750)
    part = encode_part([may_step("/proj/sub", ALICE, WRITE, "", guards, read)])
    assert d.ok(TxnPrepare(1, "shard-2", part))["state"] == "prepared"
    d.ok(TxnFinish(1, False))
    d.ok(ModifyAclEntries("/proj/sub", spec("default:other::---")), caller=ALICE)
    stale = d.ok(TxnPrepare(2, "shard-2", part))
    assert stale["state"] == "aborted" and stale["error"]["reason"] == "changed"
    fresh = acls.default_entries(sm(d).stat("/proj/sub").acl)
    part = encode_part([may_step("/proj/sub", ALICE, WRITE, "", guards, fresh)])
    assert d.ok(TxnPrepare(3, "shard-2", part))["state"] == "prepared"
    with pytest.raises(InvalidArgument):
        decode_part(json.dumps([["may", "/tmp", '[["bob",[]],2,"",[],["user:bob:rwx"]]']]))


def test_a_snapshot_copy_keeps_the_acl(d: Driver) -> None:
    d.ok(ModifyAclEntries("/proj/f", spec("user:bob:r--")), caller=ALICE)
    d.ok(SnapshotAllow("/proj"))
    d.ok(SnapshotTake("/proj", "s1", 1))
    d.ok(RemoveAcl("/proj/f"), caller=ALICE)
    assert sm(d).stat("/proj/.snapshot/s1/f").acl == acls.parse_spec("user:bob:r--,group::r--")
    assert sm(d).stat("/proj/f").acl == ()


# -- records -------------------------------------------------------------------------------------
def test_records_without_an_acl_are_unchanged_and_with_one_round_trip() -> None:
    plain = Inode("file", 0o644, "alice", "staff", 1, 2, replication=3, block_size=65536)
    assert len(json.loads(plain.encode())) == 12
    assert Inode.decode(plain.encode()) == plain
    acl = acls.parse_spec("user:bob:rwx,group::r--")
    with_acl = plain.evolve(mode=0o674, acl=acl)
    body = json.loads(with_acl.encode())
    assert body[17] == ["user:bob:rwx", "group::r--"] and body[12:17] == [[], "", None, None, 0]
    assert Inode.decode(with_acl.encode()) == with_acl
    assert decode_foreign(with_acl.encode()) == with_acl
    guard = Guard(1, "alice", "staff", 0o755, acls.parse_spec("user:bob:---,group::r-x"))
    assert Guard.from_text(guard.to_text()) == guard
    assert Guard.from_list(guard.to_list()) == guard
    assert Guard(1, "a", "b", 0o700).to_list() == [1, 0o700, "a", "b"]
    info = with_acl.info("/f")
    assert FileInfo.from_dict(info.to_dict()) == info
    assert "acl" not in plain.info("/f").to_dict()


@pytest.mark.parametrize(
    "acl",
    [
        ["group::r--", "user:bob:rwx"],  # not sorted
        ["default:user:bob:rwx"],  # default entries on a file
        ["user:bob:rwx"],  # no group:: entry
        ["mask::rwx", "group::r--"],
        ["default:user::rwx", "default:user:bob:r--", "default:group::r--", "default:other::---"],
    ],
)
def test_a_foreign_record_with_a_bad_acl_is_refused(acl: list[str]) -> None:
    kind = "dir" if acl[0].startswith("default:user::") else "file"  # (the last: no mask)
    body = json.loads(Inode(kind, 0o644, "a", "b", 1, 1).encode())
    body += [[], "", None, None, 0, acl]
    with pytest.raises(ValueError):
        decode_foreign(json.dumps(body, separators=(",", ":")).encode())


# -- the rule against a reference ----------------------------------------------------------------
USERS = ("alice", "bob", "carol", "dave")
GROUPS = ("staff", "users", "ops")
PERMS = st.sampled_from((7, 5, 1, 3, 0, 4, 6, 2))
"""Permissions, those with ``x`` drawn more often (a mode that lets all through beside an
entry that does not is the guard case that matters)."""


def reference_allows(
    caller: Caller, owner: str, group: str, entries: list[AclEntry], access: int
) -> bool:
    """HDFS's rule over the whole access ACL, as the permissions guide states it."""
    if caller.superuser:
        return True
    by = {(e.kind, e.name): e.perm for e in entries if not e.default}
    if caller.user == owner:
        return by[("user", "")] & access == access
    mask = by.get(("mask", ""), 7)
    if ("user", caller.user) in by and caller.user != "":
        return by[("user", caller.user)] & mask & access == access
    mine = [
        perm
        for (kind, name), perm in by.items()
        if kind == "group" and (name or group) in caller.groups
    ]
    if mine:
        return any(perm & mask & access == access for perm in mine)
    return by[("other", "")] & access == access


def whole_acl(
    base: tuple[int, int, int], named: dict[tuple[str, str], int], mask: int | None
) -> list[AclEntry]:
    """The ACL a SetAcl of these entries leaves: HDFS computes the mask (the union of the
    group class) when named entries need one and none is given."""
    entries = [AclEntry(False, "user", "", base[0]), AclEntry(False, "group", "", base[1])]
    entries.append(AclEntry(False, "other", "", base[2]))
    entries += [AclEntry(False, kind, name, perm) for (kind, name), perm in named.items()]
    if mask is None and named:
        mask = base[1]
        for perm in named.values():
            mask |= perm
    if mask is not None:
        entries.append(AclEntry(False, "mask", "", mask))
    return entries


acl_cases = st.tuples(
    st.sampled_from(USERS),
    st.sampled_from(GROUPS),
    st.tuples(PERMS, PERMS, PERMS),
    st.dictionaries(
        st.tuples(st.just("user"), st.sampled_from(USERS))
        | st.tuples(st.just("group"), st.sampled_from(GROUPS)),
        PERMS,
        max_size=5,
    ),
    st.none() | PERMS,
)
callers = st.builds(
    Caller,
    st.sampled_from(USERS),
    st.lists(st.sampled_from(GROUPS), max_size=2, unique=True).map(tuple),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    acl_cases,
    st.lists(callers, min_size=1, max_size=4),
    st.sampled_from([READ, WRITE, EXECUTE, READ | EXECUTE]),
)
def test_every_check_and_traverse_guard_matches_the_reference(
    case: Any, who: list[Caller], access: int
) -> None:
    """A random ACL set on a file and on a directory (through ``SetAcl``), and on a shard
    that holds only a directory below it (``SetTraverseGuard``): each caller's access to the
    file, and traverse through the directory here and there, is the reference's answer."""
    owner, group, base, named, mask = case
    entries = whole_acl(base, named, mask)
    texts_ = tuple(e.to_text() for e in entries)
    d = formatted(ShardStateMachine(None, shard_id="shard-1"))
    d.ok(Mkdir("/d", mode=0o755, owner=owner, group=group))
    d.ok(Mkdir("/d/sub", mode=0o777))
    d.ok(Create("/d/sub/f", mode=0o644), d.session())
    d.ok(Create("/file", mode=0o644, owner=owner, group=group), d.session())
    d.ok(SetAcl("/file", texts_))
    info = d.ok(SetAcl("/d", texts_))
    other = formatted(ShardStateMachine(None, shard_id="shard-2"))
    sub_guards = guards_of(sm(d), "/d/sub")
    other.ok(MkdirSelf("/d/sub", mode=0o777, guards=tuple(g.to_text() for g in sub_guards)))
    other.ok(Create("/d/sub/f", mode=0o644), other.session())
    other.ok(SetTraverseGuard("/d", owner, group, info["mode"], tuple(info.get("acl", ()))))
    assert guards_of(sm(other), "/d/sub") == sub_guards
    for caller in who:
        expected = reference_allows(caller, owner, group, entries, access)
        assert may(sm(d), "/file", access, caller) == expected
        through = reference_allows(caller, owner, group, entries, EXECUTE)
        assert may(sm(d), "/d/sub/f", READ, caller) == through
        assert may(sm(other), "/d/sub/f", READ, caller) == through
