"""Bad input changes nothing and says why: a table of bad commands and bad log entries.

Each row is applied to a populated shard; the reply must carry the expected code, and every
replicated record must be byte-for-byte what it was (the applied index still moves on: the
entry was applied, as an error)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from meta_helpers import T0, Driver, formatted, state

from keelfs.meta.commands import (
    SHARD_COMMANDS,
    AddBlock,
    Command,
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
    decode_envelope,
)
from keelfs.meta.namespace import ShardStateMachine


@pytest.fixture
def populated() -> tuple[Driver, int]:
    d = formatted(ShardStateMachine(None))
    s = d.session()
    d.ok(Mkdir("/d/sub", parents=True))
    d.ok(Create("/d/f"), s)
    d.ok(Create("/f"), s)
    d.ok(CompleteFile("/f"), s)
    return d, s


LONG_NAME = "n" * 256
LONG_PATH = "/" + "/".join(["p" * 200] * 21)

COMMANDS: list[tuple[Command, str, bool]] = [
    # (command, code, carries the session)
    (Mkdir(""), "INVALID_PATH", False),
    (Mkdir("relative/x"), "INVALID_PATH", False),
    (Mkdir("/a/../b"), "INVALID_PATH", False),
    (Mkdir("/a/./b"), "INVALID_PATH", False),
    (Mkdir("/.."), "INVALID_PATH", False),
    (Mkdir("//a"), "INVALID_PATH", False),
    (Mkdir("/a//b"), "INVALID_PATH", False),
    (Mkdir("/a\x00b"), "INVALID_PATH", False),
    (Mkdir("/a\nb"), "INVALID_PATH", False),
    (Mkdir("/a\x7f"), "INVALID_PATH", False),
    (Mkdir("/a\ud800"), "INVALID_PATH", False),
    (Mkdir("/" + LONG_NAME), "INVALID_PATH", False),
    (Mkdir(LONG_PATH), "INVALID_PATH", False),
    (Create("/d/" + LONG_NAME), "INVALID_PATH", True),
    (Rename("/f", "/x/../y"), "INVALID_PATH", False),
    (Rename("bad", "/y"), "INVALID_PATH", False),
    (Mkdir("/x", mode=0o10000), "INVALID_ARGUMENT", False),
    (Mkdir("/x", mode=-1), "INVALID_ARGUMENT", False),
    (Mkdir("/x", owner=""), "INVALID_ARGUMENT", False),
    (Mkdir("/x", owner="a:b"), "INVALID_ARGUMENT", False),
    (Mkdir("/x", group="\x00"), "INVALID_ARGUMENT", False),
    (Create("/x", replication=0), "INVALID_ARGUMENT", True),
    (Create("/x", replication=513), "INVALID_ARGUMENT", True),
    (Create("/x", block_size=1000), "INVALID_ARGUMENT", True),
    (Create("/x", block_size=0), "INVALID_ARGUMENT", True),
    (Create("/"), "INVALID_ARGUMENT", True),
    (Create("/x"), "INVALID_ARGUMENT", False),  # no session
    (AddBlock("/d/f", 0, 1), "INVALID_ARGUMENT", True),
    (AddBlock("/d/f", 1, -1), "INVALID_ARGUMENT", True),
    (SetReplication("/f", 0), "INVALID_ARGUMENT", False),
    (SetTimes("/f"), "INVALID_ARGUMENT", False),
    (SetTimes("/f", mtime=-5), "INVALID_ARGUMENT", False),
    (SetOwner("/f"), "INVALID_ARGUMENT", False),
    (SetPermission("/f", 0o77777), "INVALID_ARGUMENT", False),
    (Delete("/"), "INVALID_ARGUMENT", False),
    (Rename("/", "/x"), "INVALID_ARGUMENT", False),
    (Rename("/d", "/d/sub/x"), "INVALID_ARGUMENT", False),
    (DequeueBlockDeletes(()), "INVALID_ARGUMENT", False),
    (DequeueBlockDeletes((0,)), "INVALID_ARGUMENT", False),
    # wrong for the current state
    (Create("/f/x"), "NOT_A_DIRECTORY", True),
    (Mkdir("/f/x"), "NOT_A_DIRECTORY", False),
    (Mkdir("/f/x/y", parents=True), "NOT_A_DIRECTORY", False),
    (Create("/missing/x"), "NOT_FOUND", True),
    (Delete("/missing"), "NOT_FOUND", False),
    (Delete("/d"), "DIRECTORY_NOT_EMPTY", False),
    (Mkdir("/d"), "ALREADY_EXISTS", False),
    (Mkdir("/f", parents=True), "ALREADY_EXISTS", False),
    (MkdirSelf("/d"), "ALREADY_EXISTS", False),
    (MkdirSelf("/f"), "ALREADY_EXISTS", False),
    (Create("/f"), "ALREADY_EXISTS", True),
    (Create("/d", overwrite=True), "IS_A_DIRECTORY", True),
    (SetReplication("/d", 2), "IS_A_DIRECTORY", False),
    (Rename("/f", "/d"), "ALREADY_EXISTS", False),
    (Rename("/d", "/f", overwrite=True), "NOT_A_DIRECTORY", False),
    (Rename("/d/sub", "/d", overwrite=True), "DIRECTORY_NOT_EMPTY", False),
    (CompleteFile("/f"), "LEASE_CONFLICT", True),
]


@pytest.mark.parametrize(
    ("cmd", "code", "in_session"), COMMANDS, ids=[f"{c.op}-{code}" for c, code, _ in COMMANDS]
)
def test_bad_command_changes_nothing(
    populated: tuple[Driver, int], cmd: Command, code: str, in_session: bool
) -> None:
    d, s = populated
    before = state(d.sm)
    result = d.apply(cmd, s if in_session else 0)
    assert result.code == code, result
    assert result.error is not None and result.error["message"]
    assert state(d.sm) == before
    assert d.sm.applied_index() == d.index


def envelope(**overrides: Any) -> bytes:
    body: dict[str, Any] = {"v": 1, "op": "mkdir", "now": T0, "sid": 0, "seq": 0}
    body["a"] = {"path": "/new"}
    body.update(overrides)
    return json.dumps(body).encode()


ENTRIES: list[tuple[bytes, str]] = [
    (b"", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"mkdir /x", "not valid JSON"),
    (b"[" * 100_000, "not valid JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b"null", "not a JSON object"),
    (envelope(v=2), "version"),
    (envelope(v=None), "version"),
    (envelope(v=True), "version"),
    (envelope(op="format_everything"), "unknown command"),
    (envelope(op=None), "unknown command"),
    (envelope(now=None), "'now'"),
    (envelope(now=-1), "'now'"),
    (envelope(now=2**64), "'now'"),
    (envelope(now=True), "'now'"),
    (envelope(now="12"), "'now'"),
    (envelope(sid=-1), "'sid'"),
    (envelope(seq=3), "seq without a session"),
    (envelope(a=[]), "not an object"),
    (envelope(a={}), "missing argument 'path'"),
    (envelope(a={"path": "/x", "colour": "red"}), "unknown argument 'colour'"),
    (envelope(a={"path": 5}), "path must be a string"),
    (envelope(a={"path": "/x", "parents": 1}), "parents must be true or false"),
    (envelope(a={"path": "/x", "mode": "755"}), "mode must be an integer"),
    (envelope(a={"path": "/x", "mode": 2**70}), "64-bit"),
    (envelope(op="dequeue_block_deletes", a={"block_ids": 5}), "must be a list"),
    (envelope(op="dequeue_block_deletes", a={"block_ids": ["x"]}), "must be an integer"),
    (envelope(a={"path": "/" + "x" * (1 << 20)}), "bytes (at most"),
]


@pytest.mark.parametrize(("data", "why"), ENTRIES, ids=[w for _, w in ENTRIES])
def test_bad_entry_changes_nothing(populated: tuple[Driver, int], data: bytes, why: str) -> None:
    d, _ = populated
    before = state(d.sm)
    result = d.raw(data)
    assert result.code == "INVALID_ARGUMENT", result
    assert result.error is not None and why in result.error["message"]
    assert state(d.sm) == before
    assert d.sm.applied_index() == d.index


def test_good_envelopes_round_trip() -> None:
    for cmd in (
        Rename("/a", "/b", overwrite=True),
        DequeueBlockDeletes((3, 1, 2)),
        SetTimes("/a", atime=5),
        Create("/x", replication=2),
    ):
        env = Envelope(cmd, T0, 4, 9)
        assert env.encode() == env.encode()
        assert decode_envelope(env.encode(), SHARD_COMMANDS) == env


def test_stale_or_duplicate_index_changes_nothing(populated: tuple[Driver, int]) -> None:
    d, _ = populated
    before = state(d.sm)
    result = d.sm.apply(d.index, Envelope(Mkdir("/dup"), T0).encode())
    assert result.code == "INVALID_ARGUMENT"
    assert state(d.sm) == before and d.sm.applied_index() == d.index


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)
_ops = st.sampled_from(["mkdir", "create", "rename", "delete", "set_times", "tick", "add_block"])


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    garbage=st.one_of(
        st.binary(max_size=64),
        st.builds(
            lambda op, a, now, sid, seq: json.dumps(
                {"v": 1, "op": op, "a": a, "now": now, "sid": sid, "seq": seq}
            ).encode(),
            _ops,
            _json,
            _json,
            _json,
            _json,
        ),
    )
)
def test_apply_never_raises(populated: tuple[Driver, int], garbage: bytes) -> None:
    d, _ = populated
    result = d.raw(garbage)
    assert result.ok or result.code in (
        "INVALID_ARGUMENT",
        "INVALID_PATH",
        "SESSION_EXPIRED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "NOT_A_DIRECTORY",
        "IS_A_DIRECTORY",
        "DIRECTORY_NOT_EMPTY",
        "LEASE_CONFLICT",
    )


def test_a_handler_that_raises_a_non_keel_error_writes_nothing_and_propagates(
    populated: tuple[Driver, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in a handler (not a refusal) is not answered as an error: ``apply`` raises, and
    nothing of the entry (the command's stage, the clock, session housekeeping, the applied
    index) reaches the store, so the runtime can stop the node with that entry unapplied and
    a restart applies it again."""
    d, sid = populated
    sm = d.sm
    assert isinstance(sm, ShardStateMachine)
    before, applied, clock = state(sm), sm.applied_index(), sm.clock_ms()

    def broken(txn: Any, cmd: Any, ctx: Any) -> Any:
        txn.put(b"Ebroken", b"half-done")
        raise RuntimeError("a bug")

    monkeypatch.setitem(sm._handlers, "mkdir", broken)
    entry = Envelope(Mkdir("/late"), T0 + 3_600_000, 0, 0).encode()
    with pytest.raises(RuntimeError, match="a bug"):
        sm.apply(applied + 1, entry)
    assert state(sm) == before
    assert (sm.applied_index(), sm.clock_ms()) == (applied, clock)
    monkeypatch.undo()
    assert sm.apply(applied + 1, entry).ok  # applied again (a restart), it takes effect once
    assert sm.exists("/late") and sm.applied_index() == applied + 1
