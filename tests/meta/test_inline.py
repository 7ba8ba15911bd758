"""Small files kept inline in their metadata record (``CreateInline``, ``CompleteInline``):
one entry creates a complete file with its data; it has no blocks (nothing for the block layer
to delete), overwrite, delete and rename treat it as any file, and its data survives every
path that copies records: snapshots, cross-shard transactions and resharding moves."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from meta_helpers import Driver, formatted, state

from keelfs.errors import InvalidArgument, PermissionDenied
from keelfs.meta.commands import (
    MAX_COMMAND_BYTES,
    SHARD_COMMANDS,
    AddBlock,
    CompleteFile,
    CompleteInline,
    Create,
    CreateInline,
    Delete,
    Envelope,
    Mkdir,
    MoveFreeze,
    MoveIngest,
    Rename,
    TxnBegin,
    TxnDecide,
    TxnFinish,
    TxnPrepare,
    decode_envelope,
)
from keelfs.meta.namespace import ShardStateMachine
from keelfs.meta.principals import READ, Caller
from keelfs.meta.ranges import texts
from keelfs.meta.records import FILE, MAX_INLINE_BYTES, FileHead, Inode, decode_foreign
from keelfs.meta.ring import key_hash
from keelfs.meta.shard_records import MOVE_PAGE_BYTES, _entry_key
from keelfs.meta.transactions import Step, encode_part

ALICE = Caller("alice", ("staff",))
BOB = Caller("bob", ("users",))


def sm(d: Driver) -> ShardStateMachine:
    assert isinstance(d.sm, ShardStateMachine)
    return d.sm


def put_inline(
    d: Driver, path: str, data: bytes, caller: Caller | None = None, **kw: object
) -> dict:
    s = d.session(caller)
    value: dict = d.ok(CreateInline.of(path, data, **kw), s, 1, caller=caller)  # type: ignore[arg-type]
    return value


def record(d: Driver, path: str) -> str:
    raw = sm(d)._store.get(_entry_key(path))
    assert raw is not None
    return bytes(raw).decode()


def test_one_entry_creates_a_complete_file_holding_its_data(shard: Driver) -> None:
    data = os.urandom(3000)
    shard.ok(Mkdir("/d"))
    before = shard.index
    reply = put_inline(shard, "/d/f", data)
    assert shard.index == before + 2  # the session, then the one create
    assert reply["length"] == len(data) and reply["blocks"] == []
    assert "data" not in reply  # results are kept in reply caches: never the data
    info = sm(shard).stat("/d/f")
    assert info.length == len(data) and info.blocks == () and not info.under_construction
    assert info.lease_holder == 0 and info.data is None  # a plain stat carries no data
    assert sm(shard).stat("/d/f", with_data=True).data == data
    assert sm(shard).check_access("/d/f", READ, with_data=True).data == data
    [listed] = sm(shard).list_dir("/d").entries
    assert listed.length == len(data) and listed.data is None  # never in listings
    assert sm(shard).content_summary("/d").length == len(data)
    assert Inode.decode(record(shard, "/d/f").encode()).data == data
    assert sm(shard).maintained_files_page(None, 10, 10) == ([], None)  # nothing to maintain
    assert sm(shard).pending_block_deletes() == []


def test_the_limit_is_exact(shard: Driver) -> None:
    put_inline(shard, "/at", b"a" * MAX_INLINE_BYTES)
    assert sm(shard).stat("/at", with_data=True).data == b"a" * MAX_INLINE_BYTES
    over = CreateInline.of("/over", b"a" * (MAX_INLINE_BYTES + 1))
    with pytest.raises(InvalidArgument):
        over.validate()
    s = shard.session()
    shard.err(over, "INVALID_ARGUMENT", s, 1)
    assert not sm(shard).exists("/over")
    # the largest inline create is a sane entry: well under the command limit
    largest = Envelope(CreateInline.of("/" + "n" * 255, b"\xff" * MAX_INLINE_BYTES), 1, 2**127, 1)
    assert len(largest.encode()) < MAX_COMMAND_BYTES // 8


@pytest.mark.parametrize(
    "data",
    [
        "not base64!",
        "QQ",
        "QQ==\n",
        base64.b64encode(b"x").decode() + "A",
        # what the decoder reads as the encoder's text, but with unused bits set: only the
        # last group is compared with the encoder's (commands._canonical_base64)
        "QR==",
        "QUJ=",
        base64.b64encode(b"abc" * 100).decode() + "QR==",
        base64.b64encode(b"abc" * 100).decode()[:-4] + "YWJ=",
    ],
)
def test_data_that_is_not_canonical_base64_is_refused(shard: Driver, data: str) -> None:
    s = shard.session()
    before = state(shard.sm)
    shard.err(CreateInline("/x", data), "INVALID_ARGUMENT", s, 1)
    assert state(shard.sm) == before


def test_overwrite_rules_are_those_of_create(shard: Driver) -> None:
    s = shard.session()
    shard.ok(Create("/f"), s, 1)
    shard.ok(AddBlock("/f", 77, 1), s, 2)
    shard.ok(CompleteFile("/f", 100), s, 3)
    put = CreateInline.of("/f", b"new")
    shard.err(put, "ALREADY_EXISTS", s, 4)
    shard.ok(CreateInline.of("/f", b"new", overwrite=True), s, 5)
    info = sm(shard).stat("/f", with_data=True)
    assert info.data == b"new" and info.blocks == ()
    assert [b.block_id for b in sm(shard).pending_block_deletes()] == [77]  # the old block
    # an inline file overwritten by a plain create loses its data, with no block to queue
    shard.ok(Create("/f", overwrite=True), s, 6)
    info = sm(shard).stat("/f", with_data=True)
    assert info.data is None and info.length == 0 and info.under_construction
    shard.ok(CompleteFile("/f"), s, 7)
    # never over a file another live session writes, nor over a directory
    other = shard.session()
    shard.ok(Create("/busy"), other, 1)
    shard.err(CreateInline.of("/busy", b"x", overwrite=True), "LEASE_CONFLICT", s, 8)
    shard.ok(Mkdir("/dir"))
    shard.err(CreateInline.of("/dir", b"x", overwrite=True), "IS_A_DIRECTORY", s, 9)
    shard.err(CreateInline.of("/nodir/x", b"x"), "NOT_FOUND", s, 10)


def test_delete_and_rename_carry_no_blocks(shard: Driver) -> None:
    data = os.urandom(1000)
    shard.ok(Mkdir("/a"))
    put_inline(shard, "/a/f", data)
    shard.ok(Rename("/a/f", "/a/g"))
    assert sm(shard).stat("/a/g", with_data=True).data == data
    shard.ok(Rename("/a", "/b"))  # a directory with an inline file in it
    assert sm(shard).stat("/b/g", with_data=True).data == data
    assert shard.ok(Delete("/b/g")) == {"files": 1, "directories": 0, "blocks": 0}
    assert sm(shard).pending_block_deletes() == []


def test_a_writer_closes_with_its_data_inline(shard: Driver) -> None:
    """``open("wb")``: Create at open (the lease), the data with the close."""
    s = shard.session()
    shard.ok(Create("/w"), s, 1)
    assert sm(shard).stat("/w").under_construction
    reply = shard.ok(CompleteInline.of("/w", b"written"), s, 2)
    assert reply["length"] == 7 and not reply["under_construction"]
    info = sm(shard).stat("/w", with_data=True)
    assert info.data == b"written" and info.lease_holder == 0
    assert sm(shard).lease_expiry(s) is None  # its only lease went with the close
    # only the lease holder closes it, and only a file without blocks
    shard.ok(Create("/w2"), s, 3)
    other = shard.session()
    shard.err(CompleteInline.of("/w2", b"x"), "LEASE_CONFLICT", other, 1)
    shard.ok(AddBlock("/w2", 5, 1), s, 4)
    shard.err(CompleteInline.of("/w2", b"x"), "INVALID_ARGUMENT", s, 5)


def test_a_user_cannot_write_inline_where_a_plain_create_is_refused() -> None:
    d = formatted(ShardStateMachine(None, shard_id="shard-1"))
    d.ok(Mkdir("/home"))
    d.ok(Mkdir("/home/alice", mode=0o700, owner="alice", group="staff"))
    put_inline(d, "/home/alice/mine", b"alice's", ALICE)
    s = d.session(BOB)
    d.err(CreateInline.of("/home/alice/x", b"bob's"), "PERMISSION_DENIED", s, 1, caller=BOB)
    d.err(
        CreateInline.of("/home/alice/mine", b"bob's", overwrite=True),
        "PERMISSION_DENIED",
        s,
        2,
        caller=BOB,
    )
    assert [e.name for e in sm(d).list_dir("/home/alice").entries] == ["mine"]
    assert sm(d).stat("/home/alice/mine", with_data=True).data == b"alice's"
    assert not sm(d).exists("/home/alice/x")
    # alice's file in an open directory: bob may stat it, but read its data only with r
    d.ok(Mkdir("/pub", mode=0o755, owner="alice", group="staff"))
    put_inline(d, "/pub/secret", b"s", ALICE, mode=0o600)
    assert sm(d).stat("/pub/secret", caller=BOB).length == 1
    with pytest.raises(PermissionDenied):
        sm(d).check_access("/pub/secret", READ, caller=BOB, with_data=True)


def test_snapshot_and_restore_keep_the_data(tmp_path: Path) -> None:
    a = formatted(ShardStateMachine(tmp_path / "a"))
    data = {f"/f{i}": os.urandom(i * 997) for i in range(8)}
    for path, content in data.items():
        put_inline(a, path, content)
    b = ShardStateMachine(tmp_path / "b")
    b.restore_chunks(iter(a.sm.snapshot_chunks(chunk_bytes=4096)), a.index)
    for path, content in data.items():
        assert b.stat(path, with_data=True).data == content
    b.close()
    b = ShardStateMachine(tmp_path / "b")  # and after a restart
    assert b.snapshot() == a.sm.snapshot()
    assert b.stat("/f7", with_data=True).data == data["/f7"]
    b.close()
    a.sm.close()


def test_a_rename_to_another_shard_carries_the_data() -> None:
    """The cross-shard rename moves the stored record (``keelfs.master.cross_shard``)."""
    a = formatted(ShardStateMachine(shard_id="shard-a"))
    b = formatted(ShardStateMachine(shard_id="shard-b"))
    a.ok(Mkdir("/src"))
    b.ok(Mkdir("/dst"))
    data = os.urandom(MAX_INLINE_BYTES)
    put_inline(a, "/src/f", data)
    rec = record(a, "/src/f")
    own = encode_part([Step("entry", "/src/f", rec), Step("del_entry", "/src/f")])
    theirs = encode_part([Step("absent", "/dst/g"), Step("put_entry", "/dst/g", rec)])
    begin = TxnBegin(7, own, json.dumps({"shard-b": theirs}), "rename", "{}")
    assert len(Envelope(begin, 1).encode()) < MAX_COMMAND_BYTES
    a.ok(begin)
    assert b.ok(TxnPrepare(7, "shard-a", theirs))["state"] == "prepared"
    a.ok(TxnDecide(7, True))
    b.ok(TxnFinish(7, True))
    assert not sm(a).exists("/src/f")
    assert sm(b).stat("/dst/g", with_data=True).data == data


@pytest.mark.parametrize(
    "change",
    [
        {"blocks": [[1, 1, 3]]},
        {"lease_holder": 5},  # (under construction it is a file being appended)
        {"kind": "d"},
        {"data": base64.b64encode(b"x" * (MAX_INLINE_BYTES + 1)).decode()},
        {"data": "not base64"},
    ],
)
def test_a_copied_inline_record_must_be_one_this_version_writes(change: dict) -> None:
    good = Inode("file", 0o644, "u", "g", 1, 1, data=b"abc").encode()
    assert decode_foreign(good).data == b"abc"
    body = json.loads(good)
    positions = {"kind": 1, "blocks": 9, "under_construction": 10, "lease_holder": 11, "data": 14}
    for name, value in change.items():
        body[positions[name]] = value
    with pytest.raises(ValueError):
        decode_foreign(json.dumps(body, separators=(",", ":")).encode())


def test_a_resharding_move_copies_inline_files_in_pages_of_sane_size() -> None:
    src = formatted(ShardStateMachine(shard_id="src"))
    dst = Driver(ShardStateMachine(shard_id="dst"))
    src.ok(Mkdir("/d"))
    data = {f"/d/f{i}": os.urandom(MAX_INLINE_BYTES) for i in range(12)}
    for path, content in data.items():
        put_inline(src, path, content)
    h = key_hash("/d")
    ranges = texts([(h, h)])
    src.ok(MoveFreeze(9, ranges, "dst"))
    dst.ok(MoveIngest(9, ranges, "src"))
    after, pages = None, 0
    while page := sm(src).move_records(9, after):
        assert len(page) == 1 or sum(len(k) + len(v) for k, v in page) < MOVE_PAGE_BYTES * 2
        b64 = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
        ingest = MoveIngest(9, ranges, "src", tuple(map(b64, (k for k, _ in page))),
                            tuple(map(b64, (v for _, v in page))))  # fmt: skip
        assert len(Envelope(ingest, 1).encode()) < MAX_COMMAND_BYTES
        dst.ok(ingest)
        after, pages = page[-1][0], pages + 1
    assert pages > 1
    for path, content in data.items():
        raw = sm(dst)._store.get(_entry_key(path))
        assert raw is not None and Inode.decode(bytes(raw)).data == content


def test_the_commands_are_registered_and_decode() -> None:
    for cmd in (CreateInline.of("/f", b"\x00\x01"), CompleteInline.of("/f", b"")):
        assert SHARD_COMMANDS[cmd.op] is type(cmd)
        assert cmd.needs_session and not cmd.servers_only
        decoded = decode_envelope(Envelope(cmd, 1, 5, 1).encode(), SHARD_COMMANDS).command
        assert decoded == cmd


def test_block_maintenance_pages_over_files_without_blocks(
    shard: Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The leader's walk gets the files with blocks and those being written, in key order,
    page by page; inline and empty closed files and directories are passed over without a
    full decode of their records (an inline file's is mostly its data)."""
    shard.ok(Mkdir("/d"))
    s = shard.session()
    shard.ok(Create("/d/b1"), s, 1)
    shard.ok(AddBlock("/d/b1", 7, 1), s, 2)
    shard.ok(CompleteFile("/d/b1", 10), s, 3)
    shard.ok(Create("/d/empty"), s, 4)
    shard.ok(CompleteFile("/d/empty", 0), s, 5)
    shard.ok(Create("/d/open"), s, 6)  # being written, no block yet: its lease is looked at
    for i in range(6):
        put_inline(shard, f"/d/i{i}", os.urandom(4096))
    shard.ok(Create("/d/z"), s, 7)
    shard.ok(AddBlock("/d/z", 8, 1), s, 8)
    shard.ok(CompleteFile("/d/z", 10), s, 9)

    decoded: list[int] = []
    real_decode = Inode.decode

    def counted(raw: bytes) -> Inode:
        decoded.append(len(raw))
        return real_decode(raw)

    monkeypatch.setattr(Inode, "decode", staticmethod(counted))
    files, after = sm(shard).maintained_files_page(None, 10, 100)
    assert [p for p, _ in files] == ["/d/b1", "/d/open", "/d/z"] and after is None
    assert [b.block_id for b in files[0][1].blocks] == [7] and files[1][1].under_construction
    assert len(decoded) == 3 and max(decoded) < 1000  # no inline record decoded
    # pages: by files found, and by records looked through
    assert sm(shard).maintained_files_page(None, 1, 100) == ([files[0]], "/d/b1")
    page, after = sm(shard).maintained_files_page("/d/b1", 5, 3)  # /d/empty, /d/i0, /d/i1
    assert page == [] and after == "/d/i1"
    page, after = sm(shard).maintained_files_page(after, 5, 100)
    assert [p for p, _ in page] == ["/d/open", "/d/z"] and after is None


def test_the_walk_gets_a_file_being_written_without_blocks_as_its_head(
    shard: Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``heads``, a file being written that has no block yet comes as its record's head
    (lease holder, replication), without a full decode; a file with blocks still comes
    whole (its blocks are checked one by one)."""
    shard.ok(Mkdir("/d"))
    s = shard.session()
    shard.ok(Create("/d/b1", replication=2), s, 1)
    shard.ok(AddBlock("/d/b1", 7, 1), s, 2)  # being written, with a block
    shard.ok(Create("/d/open", replication=2), s, 3)  # being written, no block yet
    decoded: list[int] = []
    real_decode = Inode.decode

    def counted(raw: bytes) -> Inode:
        decoded.append(len(raw))
        return real_decode(raw)

    monkeypatch.setattr(Inode, "decode", staticmethod(counted))
    files, after = sm(shard).maintained_files_page(None, 10, 100, heads=True)
    assert [p for p, _ in files] == ["/d/b1", "/d/open"] and after is None
    whole, head = files[0][1], files[1][1]
    assert isinstance(whole, Inode) and [b.block_id for b in whole.blocks] == [7]
    assert isinstance(head, FileHead) and len(decoded) == 1  # only /d/b1 was decoded
    assert head.lease_holder == s and head.under_construction and head.replication == 2
    assert not head.blocks
    # without heads, both come whole, as before
    plain, _ = sm(shard).maintained_files_page(None, 10, 100)
    assert [type(i) for _, i in plain] == [Inode, Inode]
    assert plain[1][1].lease_holder == head.lease_holder


def test_a_record_whose_head_does_not_read_counts_as_maintained() -> None:
    from keelfs.meta.records import maintained_file

    assert maintained_file(b'[1,"f",420')  # truncated: the full decode says what is wrong
    assert maintained_file(b'[2,"f"]')  # a version this code does not know
    assert not maintained_file(Inode("dir", 0o755, "u", "g", 1, 1).encode())
    assert not maintained_file(Inode("file", 0o644, "u", "g", 1, 1, data=b"x").encode())
    assert maintained_file(Inode("file", 0o644, "u", "g", 1, 1, under_construction=True).encode())


def test_an_inline_commands_content_is_its_base64_decoded() -> None:
    """``content`` after ``validate`` (which remembers the decoded bytes) and on a command
    never validated, and for texts equal in value but not the same object."""
    data = os.urandom(5000)
    cmd = CreateInline.of("/f", data)
    assert cmd.content == data  # not validated: decoded
    cmd.validate()
    assert cmd.content == data  # validated: remembered
    copy = CreateInline("/f", "".join(list(cmd.data)))  # equal text, another object
    assert copy.data is not cmd.data and copy.content == data
    empty = CompleteInline.of("/f", b"")
    empty.validate()
    assert empty.content == b""
    for n in range(200):  # more than the memo holds
        other = CreateInline.of("/g", bytes([n]) * n)
        other.validate()
        assert other.content == bytes([n]) * n
    assert cmd.content == data


def test_a_record_written_with_the_commands_text_is_the_record_encode_writes() -> None:
    data = os.urandom(3001)
    cmd = CreateInline.of("/f", data)
    inode = Inode(FILE, 0o644, "u", "g", 1, 1, data=data)
    assert inode.encode(data_text=cmd.data) == inode.encode()
    assert Inode.decode(inode.encode(data_text=cmd.data)).data == data
