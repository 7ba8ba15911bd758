"""The apply's cheaper record paths read and write exactly what the plain ones did: session
records (the reply left undecoded until asked for), a command's file result
(``Inode.info_dict``) and the memo of accepted principal names."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from keelfs.errors import InvalidArgument, NotFound
from keelfs.meta.acls import parse_spec
from keelfs.meta.commands import Command, Create, RegisterSession, Rename, Result, _fingerprint
from keelfs.meta.principals import check_principal
from keelfs.meta.records import DIRECTORY, FILE, BlockInfo, Inode
from keelfs.meta.sessions import SessionRecord

_FILE_REPLY = {
    "path": "/d/f",
    "kind": "file",
    "length": 0,
    "lease_holder": 2**127 + 5,
    "lease_user": "alice",
}


def _as_the_last_release_wrote(body: dict[str, Any]) -> bytes:
    """A session record as the release before this change encoded it (``json``, sorted)."""
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def _read_as_before(raw: bytes) -> tuple[Any, ...]:
    """What the last release's ``SessionRecord.decode`` made of ``raw``."""
    body = json.loads(raw)
    reply = None if body["r"] is None else Result.from_json(body["r"])
    return int(body["t"]), int(body["q"]), reply, str(body.get("d", "")), body.get("u")


@pytest.mark.parametrize(
    "body",
    [
        {"t": 5, "q": 3, "d": "0123456789abcdef", "r": {"v": _FILE_REPLY}, "u": "alice"},
        {"t": 5, "q": 0, "d": "", "r": None},  # a fresh session's, from before owners
        {"t": 7, "q": 2, "d": "ab", "r": {"e": {"code": "NOT_FOUND", "message": "gone"}}},
        {"t": 9, "q": 4, "d": "cd", "r": {"v": {"clock": 9}}, "u": "jos\u00e9"},
        {"t": 5.0, "q": True, "d": None, "r": {"v": []}, "u": 3},  # odd values: read as before
        {"t": 1, "q": 1, "r": {"v": None}, "x": "a field from a later version"},
    ],
)
def test_a_stored_session_record_reads_as_the_last_release_read_it(body: dict[str, Any]) -> None:
    raw = _as_the_last_release_wrote(body)
    record = SessionRecord.decode(raw)
    fields = (record.last_active, record.seq, record.reply, record.digest, record.owner)
    assert fields == _read_as_before(raw)


def test_a_record_written_here_encodes_byte_for_byte_as_before() -> None:
    for reply in (None, Result.success(_FILE_REPLY), Result.failure(NotFound("/x"))):
        record = SessionRecord(11, 4, reply, "feed", "alice")
        body = {"t": 11, "q": 4, "d": "feed", "r": None if reply is None else reply.to_json()}
        body["u"] = "alice"
        assert record.encode() == _as_the_last_release_wrote(body)
        again = SessionRecord.decode(record.encode())
        assert again == record and again.touched(12).encode() == record.touched(12).encode()


def test_the_reply_is_decoded_only_when_asked_for() -> None:
    raw = SessionRecord(5, 3, Result.success({"a": 1}), "dd", "bob").encode()
    record = SessionRecord.decode(raw)
    answered = record.answered(6, 4, Result.success({"b": 2}), "ee")
    assert record._reply_json is not None  # the new answer did not need the old one
    assert answered.encode() == SessionRecord(6, 4, Result.success({"b": 2}), "ee", "bob").encode()
    assert record.reply == Result.success({"a": 1}) and record._reply_json is None


def test_a_broken_stored_reply_still_fails_when_it_is_read() -> None:
    record = SessionRecord.decode(b'{"d":"","q":1,"r":{"e":{"message":"no code"}},"t":1}')
    with pytest.raises(InvalidArgument):
        _ = record.reply


def _inodes() -> list[Inode]:
    acl = parse_spec(["user:bob:rw-", "mask::rw-"])
    return [
        Inode(FILE, 0o644, "a", "g", 1, 2, replication=3, block_size=1 << 26),
        Inode(
            FILE,
            0o600,
            "a",
            "g",
            1,
            2,
            replication=2,
            block_size=1 << 20,
            blocks=(BlockInfo(7, 1, 100), BlockInfo(8, 2, 50)),
            under_construction=True,
            lease_holder=2**127 + 1,
            lease_user="a",
            acl=acl,
        ),
        Inode(FILE, 0o644, "a", "g", 1, 2, lease_holder=0, lease_user="stale"),
        Inode(FILE, 0o644, "a", "g", 1, 2, data=b"inline bytes"),
        Inode(DIRECTORY, 0o755, "a", "g", 1, 2),
    ]


@pytest.mark.parametrize("inode", _inodes())
def test_info_dict_is_what_info_to_dict_was(inode: Inode) -> None:
    assert inode.info_dict("/d/x") == inode.info("/d/x").to_dict()


def test_a_remembered_principal_name_does_not_let_a_bad_one_through() -> None:
    for _ in range(2):
        assert check_principal("alice", "owner") == "alice"
        for bad in ("", "a:b", "a/b", "tab\there", "x" * 300):
            with pytest.raises(InvalidArgument):
                check_principal(bad, "owner")


@pytest.mark.parametrize("inode", _inodes())
def test_evolve_is_dataclasses_replace(inode: Inode) -> None:
    for changes in ({"mtime": 99}, {"lease_holder": 0, "under_construction": False}, {}):
        assert inode.evolve(**changes) == dataclasses.replace(inode, **changes)
    with pytest.raises(TypeError):
        inode.evolve(colour="red")


@pytest.mark.parametrize(
    "command",
    [
        Create("/d/f", replication=2),
        Create("/d/caf\u00e9 \U0001f600", owner="jos\u00e9"),
        Rename("/a", "/b"),
        RegisterSession("0" * 31 + "1"),
    ],
)
def test_a_command_digest_is_the_fingerprint_of_its_body(command: Command) -> None:
    assert command.digest() == _fingerprint(command.digest_body())
