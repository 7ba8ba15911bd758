"""Packs: many commands in one entry (``keelfs.meta.packs``, ``MetaStateMachine._apply_pack``).

A pack must leave the state and give the results that its commands give applied one by one,
each in its own entry, at the pack's clock: the commands fail alone, a repeated request is
answered from its session's reply cache inside a pack and across packs, and single-command
entries (the only kind before packs) apply as before, mixed with packs in one log.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from meta_helpers import T0, Driver, formatted, state

from keelfs.meta import commands as c
from keelfs.meta import packs
from keelfs.meta.commands import Envelope, Result
from keelfs.meta.namespace import ShardStateMachine

DIRS = ("/a", "/q", "/")
NAMES = ("f", "g")
SESSIONS = 2
QUOTA_NAMES = 2
"""On /q: itself and one more name (HDFS counts the directory)."""


class _Forgetful(dict[bytes, tuple[int, bytes]]):
    """A ``_touched`` memo that never remembers: every touch rewrites its records, as before
    the memo existed (the reference the memo must not differ from)."""

    def __setitem__(self, key: bytes, value: tuple[int, bytes]) -> None:
        pass


def _machine(path: Path | None = None, *, memo: bool = True) -> ShardStateMachine:
    sm = ShardStateMachine(path, shard_id="shard-1")
    if not memo:
        sm._touched = _Forgetful()
    return sm


def _prepared(sm: ShardStateMachine) -> tuple[Driver, list[int]]:
    """Root, /a, /q with its quota, and ``SESSIONS`` sessions: each a single-command entry."""
    d = formatted(sm)
    d.ok(c.Mkdir("/a"))
    d.ok(c.Mkdir("/q"))
    d.ok(c.SetQuota("/q", names=QUOTA_NAMES, version=1))
    return d, [d.session() for _ in range(SESSIONS)]


def _path(directory: int, name: int) -> str:
    return DIRS[directory % len(DIRS)].rstrip("/") + "/" + NAMES[name % len(NAMES)]


def _command(kind: int, a: int, b: int, flag: bool) -> c.Command:
    p, q = _path(a, b), _path(b, a + 1)
    directory = DIRS[a % 2]
    kinds: list[c.Command] = [
        c.Create(p, overwrite=flag),
        c.Create(p),
        c.CreateInline.of(p, b"x" * (a * 7), overwrite=flag),
        c.Mkdir(directory + "/" + NAMES[b % 2], parents=flag),
        c.AddBlock(p, 1000 * a + b + 1, 1, None),
        c.CompleteFile(p, 0 if flag else None),
        c.Delete(p if flag else directory, recursive=flag),
        c.Rename(p, q, overwrite=flag),
        c.SetReplication(p, 1 + b % 4),
        c.SetTimes(directory if flag else p, mtime=T0 - a),
        c.SetOwner(p, owner=f"u{b % 2}"),
        c.RenewLease(),
        c.KeepAlive(),
        c.CloseSession() if flag and a == 0 else c.Tick(),
    ]
    return kinds[kind % len(kinds)]


_ACTION = st.tuples(
    st.integers(0, 13),  # kind
    st.integers(0, 2),  # a
    st.integers(0, 1),  # b
    st.booleans(),  # flag
    st.integers(0, SESSIONS - 1),  # session
    st.sampled_from(["next", "next", "next", "repeat", "reuse", "none"]),  # seq
    st.integers(0, 2),  # how far this command's clock is behind the pack's
)


def _requests(
    actions: list[tuple[Any, ...]], sessions: list[int]
) -> list[tuple[c.Command, int, int, int]]:
    """``(command, session, seq, ms behind)`` for ``actions``. "repeat": the session's last
    command with its seq again (a retry); "reuse": its last seq with another command;
    "none": no session."""
    seqs = dict.fromkeys(sessions, 0)
    last: dict[int, c.Command] = {}
    out: list[tuple[c.Command, int, int, int]] = []
    for kind, a, b, flag, s, mode, behind in actions:
        sid = sessions[s]
        cmd = _command(kind, a, b, flag)
        if mode == "repeat" and sid in last:
            cmd, seq = last[sid], seqs[sid]
        elif mode == "reuse" and seqs[sid]:
            seq = seqs[sid]
        elif mode == "none" and not cmd.needs_session:
            sid = seq = 0
        else:
            seq = seqs[sid] = seqs[sid] + 1
            last[sid] = cmd
        out.append((cmd, sid, seq, behind))
    return out


def _runs(count: int, cuts: list[int]) -> list[range]:
    bounds = sorted({0, count, *(x % (count + 1) for x in cuts)})
    return [range(lo, hi) for lo, hi in zip(bounds, bounds[1:], strict=False)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions=st.lists(_ACTION, min_size=1, max_size=30), cuts=st.lists(st.integers(0, 30)))
def test_a_pack_equals_its_commands_applied_one_by_one(
    actions: list[tuple[Any, ...]], cuts: list[int]
) -> None:
    """The same commands, cut into entries: runs of two or more as packs, a run of one as a
    plain entry; and each in an entry of its own, with every directory record rewritten at
    every touch (as before the touch memo). The same results in the same order and the same
    replicated state, byte for byte. A pack's clock is its newest command's, so on the
    one-by-one side each command of a pack carries that clock."""
    single, single_sessions = _prepared(_machine(memo=False))
    packed, packed_sessions = _prepared(_machine())
    assert single_sessions == packed_sessions
    now = single.now + 5
    requests = _requests(actions, single_sessions)
    expected: list[Result] = []
    got: list[Result] = []
    for run in _runs(len(requests), cuts):
        clock = max(now - requests[i][3] for i in run)
        for i in run:
            cmd, sid, seq, _ = requests[i]
            expected.append(_one(single.raw(Envelope(cmd, clock, sid, seq).encode())))
        items = [
            Envelope(cmd, now - behind, sid, seq).encode()
            for cmd, sid, seq, behind in (requests[i] for i in run)
        ]
        outcome = packed.raw(items[0] if len(items) == 1 else packs.pack(items))
        got.extend(outcome if isinstance(outcome, list) else [outcome])

    assert got == expected
    assert state(packed.sm) == state(single.sm)
    assert packed.sm.clock_ms() == single.sm.clock_ms()


def _one(outcome: Result | list[Result]) -> Result:
    assert isinstance(outcome, Result)
    return outcome


def test_a_failing_command_fails_alone() -> None:
    d, (s, *_) = _prepared(_machine())
    items = [
        Envelope(c.Create("/a/f"), d.now, s, 1).encode(),
        Envelope(c.Create("/a/f"), d.now, s, 2).encode(),  # exists: fails
        Envelope(c.Create("/nowhere/f"), d.now, s, 3).encode(),  # no parent: fails
        b'{"v":1,"op":"create","now":1,"a":{"path":7}}',  # undecodable: fails
        Envelope(c.Create("/q/f"), d.now, s, 4).encode(),
        Envelope(c.Mkdir("/a/d"), d.now).encode(),
    ]
    results = d.raw(packs.pack(items))
    assert isinstance(results, list)
    assert [r.code for r in results] == [
        None,
        "ALREADY_EXISTS",
        "NOT_FOUND",
        "INVALID_ARGUMENT",
        None,
        None,
    ]
    assert {e.name for e in d.sm.list_dir("/a").entries} == {"d", "f"}
    assert d.sm.exists("/q/f")
    assert d.sm.session(s).last_seq == 4


def test_the_pack_over_a_quota_is_refused_command_by_command() -> None:
    """The quota on /q counts each command's names before the next one is checked: a pack of
    creates keeps as many as it allows."""
    d, (s, *_) = _prepared(_machine())
    items = [Envelope(c.Create(f"/q/f{i}"), d.now, s, i + 1).encode() for i in range(6)]
    results = d.raw(packs.pack(items))
    assert isinstance(results, list)
    kept = QUOTA_NAMES - 1
    assert [r.code for r in results] == [None] * kept + ["QUOTA_EXCEEDED"] * (6 - kept)
    assert len(d.sm.list_dir("/q").entries) == kept


def test_a_repeated_request_is_answered_from_the_session_cache() -> None:
    d, (s, t) = _prepared(_machine())
    first = Envelope(c.Create("/a/f"), d.now, s, 1).encode()
    other = Envelope(c.Create("/a/g"), d.now, t, 1).encode()
    inside = d.raw(packs.pack([first, other, first]))  # a retry in the same pack
    assert isinstance(inside, list)
    assert inside[0].ok and inside[2] == inside[0]
    d.advance(10)
    again = d.raw(packs.pack([other, Envelope(c.Create("/a/f"), d.now, s, 1).encode()]))
    assert isinstance(again, list)
    assert again == [inside[1], inside[0]]  # across packs, with their first replies
    assert len(d.sm.list_dir("/a").entries) == 2  # f, g: nothing created twice
    reused = d.raw(packs.pack([Envelope(c.Create("/a/h"), d.now, s, 1).encode(), other]))
    assert isinstance(reused, list)
    assert reused[0].code == "INVALID_ARGUMENT"  # seq 1 answered another command
    assert not d.sm.exists("/a/h")


def test_commands_that_cannot_be_packed_are_refused_inside_a_pack() -> None:
    d, (s, *_) = _prepared(_machine())
    items = [
        Envelope(c.SetQuota("/a", names=1, version=1), d.now).encode(),
        Envelope(c.Create("/a/f"), d.now, s, 1).encode(),
        Envelope(c.TxnAcked(1, "shard-2"), d.now).encode(),
        packs.pack([Envelope(c.Tick(), d.now).encode()] * 2),  # no pack inside a pack
    ]
    results = d.raw(packs.pack(items))
    assert isinstance(results, list)
    assert [r.code for r in results] == [
        "INVALID_ARGUMENT",
        None,
        "INVALID_ARGUMENT",
        "INVALID_ARGUMENT",
    ]
    assert "cannot be packed" in str(results[0].error)
    assert d.sm.quota("/a")["names"] is None


@pytest.mark.parametrize(
    "broken",
    [
        packs.MAGIC,  # truncated header
        packs.pack([b"{}", b"{}"])[:-1],  # truncated item
        packs.pack([b"{}", b"{}"]) + b"x",  # trailing bytes
        packs.pack([b"{}"]),  # one item: a plain entry is written for that
        struct.pack(">4sBI", packs.MAGIC, 2, 2) + b"\x00" * 8,  # unknown version
        struct.pack(">4sBI", packs.MAGIC, 1, 2) + struct.pack(">I", 1 << 30),  # a huge length
    ],
)
def test_a_malformed_pack_fails_whole_and_changes_nothing(broken: bytes) -> None:
    d, _ = _prepared(_machine())
    before = state(d.sm)
    result = d.raw(broken)
    assert isinstance(result, Result) and result.code == "INVALID_ARGUMENT"
    assert state(d.sm) == before
    assert d.sm.applied_index() == d.index


def test_single_entries_and_packs_mix_in_one_log_and_replay(tmp_path: Path) -> None:
    """A log of single-command entries, as every version wrote them, with packs between:
    replayed into a fresh replica on RocksDB it reaches the same state; so does the same
    log with every pack unpacked into single entries."""
    sm = _machine(tmp_path / "a")
    d, (s, t) = _prepared(sm)
    for i in range(30):
        d.ok(c.Create(f"/a/single{i}"), s, i + 1)
        items = [
            Envelope(c.Create(f"/a/packed{i}"), d.now, t, 2 * i + 1).encode(),
            Envelope(c.SetTimes("/a", mtime=T0 + i), d.now).encode(),
            Envelope(c.Create(f"/q/p{i}"), d.now, t, 2 * i + 2).encode(),
        ]
        d.raw(packs.pack(items))
        d.advance(3)
    replica = _machine(tmp_path / "b")
    d.replay_into(replica)
    assert state(replica) == state(sm)
    flat = _machine(tmp_path / "c", memo=False)
    index = 0
    for _, data in d.log:
        for item in packs.unpack(data) if packs.is_pack(data) else [data]:
            index += 1
            flat.apply(index, item)
    assert state(flat) == state(sm)
    replica.close()
    flat.close()
    sm.close()


def test_one_write_and_one_clock_per_pack() -> None:
    """A pack is one store write (with the applied index), its clock the newest command's."""
    sm = _machine()
    d, (s, *_) = _prepared(sm)
    writes: list[int] = []
    store = sm._store
    original = store.write

    def counting(changes: Any, **kw: Any) -> None:
        writes.append(len(changes))
        original(changes, **kw)

    store.write = counting  # type: ignore[method-assign]
    items = [Envelope(c.Create(f"/a/f{i}"), d.now + (i % 3), s, i + 1).encode() for i in range(20)]
    results = d.raw(packs.pack(items))
    assert isinstance(results, list) and all(r.ok for r in results)
    assert len(writes) == 1
    assert sm.clock_ms() == d.now + 2
    assert {sm.stat(f"/a/f{i}").mtime for i in range(20)} == {d.now + 2}
    assert sm.stat("/a").mtime == d.now + 2


def test_a_directory_set_between_two_touches_is_touched_again() -> None:
    """The touch memo skips a directory record only while it holds the very bytes a touch at
    the same clock wrote: a ``SetTimes`` (or a chmod) of the directory between two creates
    of one pack is followed by a rewrite, as one by one."""
    results = []
    for memo in (True, False):
        d, (s, _) = _prepared(_machine(memo=memo))
        items = [
            Envelope(c.Create("/a/f"), d.now, s, 1).encode(),
            Envelope(c.SetTimes("/a", mtime=T0 - 50), d.now).encode(),
            Envelope(c.SetPermission("/a", 0o700), d.now).encode(),
            Envelope(c.Create("/a/g"), d.now, s, 2).encode(),
        ]
        assert all(r.ok for r in d.raw(packs.pack(items)))  # type: ignore[union-attr]
        assert d.sm.stat("/a").mtime == d.now
        results.append(state(d.sm))
    assert results[0] == results[1]


def test_plan_packs_by_count_and_size() -> None:
    small = [b"s" * 10] * (packs.MAX_PACK_ITEMS + 3)
    planned = packs.plan(small)
    assert [n for n, _ in planned] == [packs.MAX_PACK_ITEMS, 3]
    assert packs.unpack(planned[0][1]) == small[: packs.MAX_PACK_ITEMS]
    big = b"b" * (packs.MAX_PACK_BYTES // 2)
    planned = packs.plan([big, big, b"x", big])
    assert [n for n, _ in planned] == [1, 2, 1]
    assert planned[0][1] == big and planned[2][1] == big  # alone: plain entries
    assert all(len(data) <= packs.MAX_PACK_BYTES for _, data in planned)
    assert packs.plan([b"one"]) == [(1, b"one")]
    assert packs.plan([]) == []


def test_inline_data_survives_a_pack() -> None:
    d, (s, *_) = _prepared(_machine())
    content = bytes(range(256)) * 10
    items = [
        Envelope(c.CreateInline.of("/a/i", content), d.now, s, 1).encode(),
        Envelope(c.Create("/a/j"), d.now, s, 2).encode(),
    ]
    results = d.raw(packs.pack(items))
    assert isinstance(results, list) and all(r.ok for r in results)
    info = d.sm.stat("/a/i", with_data=True)
    assert info.data == content
