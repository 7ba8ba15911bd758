"""Append, truncate and concat in the shard state machine (``keelfs.meta.file_edits``):
the lease rules, the block lists they leave, the blocks they queue for deletion, rights, bad
input, and lease recovery rolling back what a dead writer left half done."""

from __future__ import annotations

import pytest
from meta_helpers import Driver

from keelfs.meta.commands import (
    AddBlock,
    Append,
    CompleteFile,
    CompleteInline,
    Concat,
    Create,
    CreateInline,
    Mkdir,
    RecoverLease,
    SetPermission,
    Tick,
    Truncate,
)
from keelfs.meta.file_edits import block_at
from keelfs.meta.namespace import DEFAULT_LEASE_TTL_MS, ShardStateMachine
from keelfs.meta.principals import Caller
from keelfs.meta.records import MAX_INLINE_BYTES, BlockInfo, Inode, decode_foreign
from keelfs.meta.shard_records import _entry_key

ALICE = Caller("alice", ("staff",))
BOB = Caller("bob", ("users",))
BS = 64 * 1024


def sm(d: Driver) -> ShardStateMachine:
    assert isinstance(d.sm, ShardStateMachine)
    return d.sm


def queued(d: Driver) -> set[int]:
    return {b.block_id for b in sm(d).pending_block_deletes()}


def blocks(d: Driver, path: str) -> list[list[int]]:
    return [b.to_list() for b in sm(d).stat(path).blocks]


def write_file(
    d: Driver, path: str, lengths: list[int], first_id: int, caller: Caller | None = None
) -> None:
    """A closed file of blocks ``first_id, first_id + 1, ...`` of ``lengths``."""
    s = d.session(caller)
    d.ok(Create(path, block_size=BS, owner=caller.user if caller else "root"), s, 1, caller=caller)
    previous = None
    for i, length in enumerate(lengths):
        d.ok(AddBlock(path, first_id + i, 1, previous), s, 2 + i, caller=caller)
        previous = length
    d.ok(CompleteFile(path, previous), s, 2 + len(lengths), caller=caller)


@pytest.fixture
def d(mem_shard: Driver) -> Driver:
    mem_shard.ok(Mkdir("/d", mode=0o777))
    return mem_shard


def test_block_at() -> None:
    bs = [BlockInfo(1, 1, 10), BlockInfo(2, 1, 10), BlockInfo(3, 1, 5)]
    assert block_at(bs, 0) == (0, 0)
    assert block_at(bs, 3) == (0, 0)
    assert block_at(bs, 10) == (1, 10)
    assert block_at(bs, 24) == (2, 20)
    assert block_at(bs, 25) == (3, 25)


# -- append ---------------------------------------------------------------------------------
def test_append_adds_new_blocks_after_the_old_ones(d: Driver) -> None:
    write_file(d, "/d/f", [BS, 100], 1)
    s = d.session()
    info = d.ok(Append("/d/f"), s, 1)
    assert info["under_construction"] and info["lease_holder"] == s and info["length"] == BS + 100
    d.ok(AddBlock("/d/f", 3, 1, None), s, 2)  # the old last block keeps its 100 bytes
    d.ok(CompleteFile("/d/f", 7), s, 3)
    assert blocks(d, "/d/f") == [[1, 1, BS], [2, 1, 100], [3, 1, 7]]
    assert sm(d).stat("/d/f").length == BS + 107 and not sm(d).stat("/d/f").under_construction
    assert queued(d) == set()


def test_a_second_appender_and_an_appender_of_a_file_being_written_get_lease_conflict(
    d: Driver,
) -> None:
    write_file(d, "/d/f", [10], 1)
    s1, s2 = d.session(), d.session()
    d.ok(Append("/d/f"), s1, 1)
    d.err(Append("/d/f"), "LEASE_CONFLICT", s2, 1)
    d.err(Append("/d/f"), "LEASE_CONFLICT", s1, 2)  # its own session too (HDFS)
    d.ok(Create("/d/g"), s1, 3)
    d.err(Append("/d/g"), "LEASE_CONFLICT", s2, 2)
    d.err(Truncate("/d/f", 5), "LEASE_CONFLICT", s2, 3)
    d.err(Concat("/d/f", ("/d/g",)), "LEASE_CONFLICT")


def test_append_after_the_writer_vanished_waits_for_lease_recovery(d: Driver) -> None:
    write_file(d, "/d/f", [10], 1)
    s1, s2 = d.session(), d.session()
    d.ok(Append("/d/f"), s1, 1)
    d.ok(Tick(), now=d.now + DEFAULT_LEASE_TTL_MS + 1)  # the lease lapses, unheld
    result = d.err(Append("/d/f"), "LEASE_CONFLICT", s2, 1)
    assert "recovery" in str(result.error)
    d.ok(RecoverLease("/d/f", 10))
    d.ok(Append("/d/f"), s2, 2)


def test_append_bad_input_and_rights(d: Driver) -> None:
    s = d.session(BOB)
    d.err(Append("/d/missing"), "NOT_FOUND", s, 1, caller=BOB)
    d.err(Append("/d"), "IS_A_DIRECTORY", s, 2, caller=BOB)
    d.err(Append("/"), "INVALID_ARGUMENT", s, 3, caller=BOB)
    write_file(d, "/d/f", [10], 1, caller=ALICE)  # 0644: bob may read it, not write it
    d.err(Append("/d/f"), "PERMISSION_DENIED", s, 4, caller=BOB)
    d.ok(Append("/d/f"), d.session(ALICE), 1, caller=ALICE)


def test_append_to_an_inline_file_that_stays_inline(d: Driver) -> None:
    s = d.session()
    d.ok(CreateInline.of("/d/f", b"hello "), s, 1)
    d.ok(Append("/d/f"), s, 2)
    assert sm(d).stat("/d/f", with_data=True).data == b"hello "  # readers see it meanwhile
    d.ok(CompleteInline.of("/d/f", b"hello world"), s, 3)
    info = sm(d).stat("/d/f", with_data=True)
    assert info.data == b"hello world" and info.blocks == () and not info.under_construction


def test_append_moving_an_inline_file_into_blocks_keeps_its_data_until_the_block_is(
    d: Driver,
) -> None:
    s = d.session()
    d.ok(CreateInline.of("/d/f", b"x" * 1000), s, 1)
    d.ok(Append("/d/f"), s, 2)
    d.ok(AddBlock("/d/f", 1, 1, None), s, 3)  # old + new bytes go to this block
    raw = sm(d)._store.get(_entry_key("/d/f"))
    assert raw is not None and decode_foreign(bytes(raw)).data == b"x" * 1000  # still there
    assert sm(d).stat("/d/f").length == 1000
    d.ok(AddBlock("/d/f", 2, 1, BS), s, 4)  # the first block is finalized: data gone
    d.ok(CompleteFile("/d/f", 5), s, 5)
    info = sm(d).stat("/d/f", with_data=True)
    assert info.data is None and info.length == BS + 5


def test_a_dead_appender_of_an_inline_file_leaves_it_as_it_was(d: Driver) -> None:
    s = d.session()
    d.ok(CreateInline.of("/d/f", b"old"), s, 1)
    d.ok(Append("/d/f"), s, 2)
    d.ok(AddBlock("/d/f", 9, 1, None), s, 3)
    d.ok(Tick(), now=d.now + DEFAULT_LEASE_TTL_MS + 1)
    d.ok(RecoverLease("/d/f", 2000))
    info = sm(d).stat("/d/f", with_data=True)
    assert info.data == b"old" and info.blocks == () and not info.under_construction
    assert queued(d) == {9}


def test_an_inline_file_needs_read_to_be_appended(d: Driver) -> None:
    s = d.session(ALICE)
    d.ok(CreateInline.of("/d/f", b"secret", owner="alice", mode=0o622), s, 1, caller=ALICE)
    b = d.session(BOB)
    d.err(Append("/d/f"), "PERMISSION_DENIED", b, 1, caller=BOB)
    write_file(d, "/d/g", [10], 1, caller=ALICE)
    d.ok(SetPermission("/d/g", 0o622), caller=ALICE)
    d.ok(Append("/d/g"), b, 2, caller=BOB)  # a file in blocks: w is enough (HDFS)


# -- truncate -------------------------------------------------------------------------------
def test_truncate_on_a_block_boundary_drops_the_blocks_after_it(d: Driver) -> None:
    write_file(d, "/d/f", [BS, BS, 10], 1)
    s = d.session()
    info = d.ok(Truncate("/d/f", BS), s, 1)
    assert not info["under_construction"] and info["length"] == BS
    assert blocks(d, "/d/f") == [[1, 1, BS]]
    assert queued(d) == {2, 3}
    d.ok(Truncate("/d/f", BS), s, 2)  # its own length: nothing changes
    d.ok(Truncate("/d/f", 0), s, 3)
    assert blocks(d, "/d/f") == [] and queued(d) == {1, 2, 3}


def test_truncate_inside_a_block_copies_it_then_splices_it_in(d: Driver) -> None:
    write_file(d, "/d/f", [BS, BS, 10], 1)
    s = d.session()
    info = d.ok(Truncate("/d/f", BS + 100), s, 1)
    assert info["under_construction"] and info["lease_holder"] == s
    assert info["length"] == 2 * BS + 10  # readers see the old content meanwhile
    d.err(Append("/d/f"), "LEASE_CONFLICT", d.session(), 1)  # not appendable until done
    d.err(CompleteFile("/d/f", None), "INVALID_ARGUMENT", s, 2)  # no copy yet
    d.ok(AddBlock("/d/f", 7, 1, None), s, 3)
    assert sm(d).stat("/d/f").length == 2 * BS + 10
    d.err(AddBlock("/d/f", 8, 1, 100), "INVALID_ARGUMENT", s, 4)  # one copy block only
    d.err(CompleteFile("/d/f", 99), "INVALID_ARGUMENT", s, 5)  # not the kept length
    d.ok(CompleteFile("/d/f", 100), s, 6)
    assert blocks(d, "/d/f") == [[1, 1, BS], [7, 1, 100]]
    assert queued(d) == {2, 3}
    raw = sm(d)._store.get(_entry_key("/d/f"))
    assert raw is not None and decode_foreign(bytes(raw)).truncating is None
    d.ok(Append("/d/f"), s, 7)


def test_a_dead_truncater_leaves_the_file_as_it_was(d: Driver) -> None:
    write_file(d, "/d/f", [BS, 10], 1)
    s = d.session()
    d.ok(Truncate("/d/f", 5), s, 1)
    d.ok(AddBlock("/d/f", 7, 1, None), s, 2)
    raw = sm(d)._store.get(_entry_key("/d/f"))
    assert raw is not None
    inode = decode_foreign(bytes(raw))  # a cross-shard step could carry it: it checks
    assert inode.truncating == (5, 2)
    d.ok(Tick(), now=d.now + DEFAULT_LEASE_TTL_MS + 1)
    d.ok(RecoverLease("/d/f", 5))
    assert blocks(d, "/d/f") == [[1, 1, BS], [2, 1, 10]]
    assert queued(d) == {7}
    assert not sm(d).stat("/d/f").under_construction


def test_truncate_of_an_inline_file(d: Driver) -> None:
    s = d.session()
    d.ok(CreateInline.of("/d/f", b"0123456789"), s, 1)
    d.ok(Truncate("/d/f", 4), s, 2)
    assert sm(d).stat("/d/f", with_data=True).data == b"0123"


def test_truncate_bad_input_and_rights(d: Driver) -> None:
    write_file(d, "/d/f", [100], 1, caller=ALICE)
    s = d.session(BOB)
    d.err(Truncate("/d/f", 101), "INVALID_ARGUMENT", d.session(ALICE), 1, caller=ALICE)
    with pytest.raises(Exception, match="length"):
        Truncate("/d/f", -1).validate()
    d.err(Truncate("/d/f", 10), "PERMISSION_DENIED", s, 2, caller=BOB)
    d.err(Truncate("/d/nope", 0), "NOT_FOUND", s, 3, caller=BOB)
    d.err(Truncate("/d", 0), "IS_A_DIRECTORY", s, 4, caller=BOB)
    d.ok(SetPermission("/d/f", 0o622), caller=ALICE)  # bob: w, not r
    d.ok(Truncate("/d/f", 0), s, 5, caller=BOB)  # a boundary needs no read
    write_file(d, "/d/g", [100], 5, caller=ALICE)
    d.ok(SetPermission("/d/g", 0o622), caller=ALICE)
    d.err(Truncate("/d/g", 10), "PERMISSION_DENIED", s, 6, caller=BOB)  # copying needs r


# -- concat ---------------------------------------------------------------------------------
def test_concat_splices_the_sources_blocks_and_removes_them(d: Driver) -> None:
    write_file(d, "/d/t", [BS, 10], 1)
    write_file(d, "/d/a", [BS, 20], 3)
    write_file(d, "/d/b", [30], 5)
    info = d.ok(Concat("/d/t", ("/d/a", "/d/b")))
    assert info["length"] == 2 * BS + 60
    assert blocks(d, "/d/t") == [[1, 1, BS], [2, 1, 10], [3, 1, BS], [4, 1, 20], [5, 1, 30]]
    assert not sm(d).exists("/d/a") and not sm(d).exists("/d/b")
    assert queued(d) == set()  # nothing deleted: the same blocks, another record
    assert sm(d).referenced_blocks([1, 2, 3, 4, 5]) == {1, 2, 3, 4, 5}


def test_concat_of_inline_files(d: Driver) -> None:
    s = d.session()
    d.ok(CreateInline.of("/d/t", b"ab"), s, 1)
    d.ok(CreateInline.of("/d/a", b"cd"), s, 2)
    d.ok(Concat("/d/t", ("/d/a",)))
    assert sm(d).stat("/d/t", with_data=True).data == b"abcd"
    d.ok(CreateInline.of("/d/big", b"x" * MAX_INLINE_BYTES), s, 3)
    d.err(Concat("/d/t", ("/d/big",)), "INVALID_ARGUMENT")
    write_file(d, "/d/blocks", [10], 1)
    d.err(Concat("/d/blocks", ("/d/t",)), "INVALID_ARGUMENT")


def test_concat_bad_input(d: Driver) -> None:
    write_file(d, "/d/t", [10], 1)
    write_file(d, "/d/a", [10], 2)
    d.err(Concat("/d/t", ("/d/missing",)), "NOT_FOUND")
    d.err(Concat("/d/missing", ("/d/a",)), "NOT_FOUND")
    d.ok(Mkdir("/d/dir"))
    d.err(Concat("/d/t", ("/d/dir",)), "IS_A_DIRECTORY")
    d.err(Concat("/d/dir", ("/d/a",)), "IS_A_DIRECTORY")
    for bad in (("/d/t",), ("/d/a", "/d/a"), ()):
        with pytest.raises(Exception, match="target|twice|sources"):
            Concat("/d/t", bad).validate()
    s = d.session()
    d.ok(Create("/d/open", block_size=BS), s, 1)
    d.err(Concat("/d/t", ("/d/open",)), "LEASE_CONFLICT")
    d.err(Concat("/d/open", ("/d/a",)), "LEASE_CONFLICT")
    d.ok(Create("/d/other", block_size=2 * BS), s, 2)
    d.ok(CompleteFile("/d/other", None), s, 3)
    d.err(Concat("/d/t", ("/d/other",)), "INVALID_ARGUMENT")  # another block size
    # a failure changes nothing: the first source is still there
    d.err(Concat("/d/t", ("/d/a", "/d/missing")), "NOT_FOUND")
    assert sm(d).exists("/d/a") and blocks(d, "/d/t") == [[1, 1, 10]]


def test_concat_rights(d: Driver) -> None:
    d.ok(Mkdir("/priv", mode=0o755, owner="alice"))
    write_file(d, "/d/t", [10], 1, caller=BOB)
    write_file(d, "/d/a", [10], 2, caller=ALICE)
    d.ok(SetPermission("/d/a", 0o600), caller=ALICE)
    d.err(Concat("/d/t", ("/d/a",)), "PERMISSION_DENIED", caller=BOB)  # no r on the source
    d.ok(SetPermission("/d/a", 0o644), caller=ALICE)
    d.ok(Concat("/d/t", ("/d/a",)), caller=BOB)
    write_file(d, "/priv/s", [10], 3, caller=ALICE)
    d.err(Concat("/d/t", ("/priv/s",)), "PERMISSION_DENIED", caller=BOB)  # no w on /priv
    d.err(Concat("/priv/s", ("/d/t",)), "PERMISSION_DENIED", caller=BOB)  # no w on target


def test_records_with_the_new_fields_round_trip() -> None:
    inode = Inode(
        "file", 0o644, "a", "g", 1, 1, 3, BS, (BlockInfo(1, 1, 5),), True, 7, "a",
        truncating=(3, 1), sealed_blocks=1,
    )  # fmt: skip
    assert decode_foreign(inode.encode()) == inode
    assert decode_foreign(inode.evolve(truncating=None).encode()).sealed_blocks == 1
    appended = Inode("file", 0o644, "a", "g", 1, 1, 3, BS, (), True, 7, "a", data=b"xy")
    assert decode_foreign(appended.encode()) == appended


def test_the_blocks_a_reopened_file_had_stay_as_they_were(d: Driver) -> None:
    """An appender may not change the committed last block (its stamp, its length), and
    lease recovery of an appender that died before its first block keeps it, whatever the
    replicas' reports say (``drop_last``: none reported)."""
    from keelfs.meta.commands import UpdateBlock

    write_file(d, "/d/f", [BS, 100], 1)
    s = d.session()
    d.ok(Append("/d/f"), s, 1)
    d.err(UpdateBlock("/d/f", 2, 2), "INVALID_ARGUMENT", s, 2)
    d.err(AddBlock("/d/f", 3, 1, 50), "INVALID_ARGUMENT", s, 3)
    d.err(CompleteFile("/d/f", 50), "INVALID_ARGUMENT", s, 4)
    d.ok(Tick(), now=d.now + DEFAULT_LEASE_TTL_MS + 1)
    d.ok(RecoverLease("/d/f", 0, drop_last=True))
    assert blocks(d, "/d/f") == [[1, 1, BS], [2, 1, 100]] and queued(d) == set()
    s2 = d.session()
    d.ok(Append("/d/f"), s2, 1)
    d.ok(AddBlock("/d/f", 3, 1, 100), s2, 2)  # its own length: fine (what a writer sends)
    d.ok(UpdateBlock("/d/f", 3, 2), s2, 3)  # the new block: a pipeline recovery as usual
    d.ok(Tick(), now=d.now + DEFAULT_LEASE_TTL_MS + 1)
    d.ok(RecoverLease("/d/f", 0, drop_last=True))  # the new block had nothing: dropped
    assert blocks(d, "/d/f") == [[1, 1, BS], [2, 1, 100]]
    raw = sm(d)._store.get(_entry_key("/d/f"))
    assert raw is not None and decode_foreign(bytes(raw)).sealed_blocks == 0
