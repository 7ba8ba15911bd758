"""Session ids are unguessable and belong to the user that registered them; one user holds a
bounded number of sessions, one session a bounded number of writer leases (issue [9])."""

from __future__ import annotations

import json
import secrets
from typing import Any

from meta_helpers import Driver, formatted, state

from keelfs.meta.commands import (
    CompleteFile,
    Create,
    Mkdir,
    RegisterSession,
    RenewLease,
    TxnBegin,
)
from keelfs.meta.namespace import ShardStateMachine
from keelfs.meta.principals import Caller
from keelfs.meta.transactions import Step, encode_part
from keelfs.rpc.wire import file_info_from_pb, file_info_to_pb

ALICE = Caller("alice", ("staff",))
BOB = Caller("bob", ("staff",))


def _session(shard: Driver, caller: Caller) -> int:
    return int(shard.ok(RegisterSession.fresh(), caller=caller)["session_id"])


def _alices_open_file(shard: Driver) -> int:
    shard.ok(Mkdir("/home", mode=0o777))
    a = _session(shard, ALICE)
    shard.ok(Create("/home/f", mode=0o666), a, 1, caller=ALICE)
    return a


def test_session_ids_are_128_random_bits_not_log_indices(shard: Driver) -> None:
    ids = [_session(shard, ALICE) for _ in range(8)]
    assert len(set(ids)) == 8
    assert all(0 < sid < 2**128 for sid in ids)
    assert any(sid >= 2**64 for sid in ids)  # 2^-512 to fail by chance
    assert not set(ids) & set(range(shard.index + 1))


def test_stat_shows_the_writers_user_not_its_session(shard: Driver) -> None:
    a = _alices_open_file(shard)
    assert isinstance(shard.sm, ShardStateMachine)
    info = shard.sm.stat("/home/f")
    seen = file_info_to_pb(info)  # what a stat or a listing sends anyone
    assert seen.lease_holder == b"" and seen.lease_user == "alice"
    assert file_info_from_pb(seen).lease_holder == 0
    # the writer's own Create reply carries its session, which it knows already
    assert file_info_from_pb(file_info_to_pb(info, viewer=a)).lease_holder == a


def test_another_users_session_is_refused(shard: Driver) -> None:
    a = _alices_open_file(shard)  # bob learnt (or guessed) alice's session id
    denied = shard.err(CompleteFile("/home/f"), "PERMISSION_DENIED", a, 1, caller=BOB)
    assert "another user" in str(denied.error)
    shard.err(RenewLease(), "PERMISSION_DENIED", a, 2, caller=BOB)
    assert isinstance(shard.sm, ShardStateMachine)
    assert shard.sm.stat("/home/f").under_construction  # nothing changed
    # alice's own session carries on, its seq unharmed by bob's tries
    shard.ok(CompleteFile("/home/f"), a, 2, caller=ALICE)


def test_the_superuser_may_not_use_another_users_session(shard: Driver) -> None:
    a = _alices_open_file(shard)
    shard.err(CompleteFile("/home/f"), "PERMISSION_DENIED", a, 2)  # no caller: superuser


def test_sessions_per_user_are_limited() -> None:
    shard = formatted(ShardStateMachine(shard_id="s1", max_sessions_per_user=3))
    for _ in range(3):
        _session(shard, ALICE)
    refused = shard.apply(RegisterSession.fresh(), caller=ALICE)
    assert refused.code == "RESOURCE_EXHAUSTED", refused
    _session(shard, BOB)  # another user is not affected


def test_sessions_whose_ids_start_with_ff_count_towards_the_limit() -> None:
    """The per-user index is scanned by prefix; ids are 128 random bits, and one in 256
    starts with byte 0xFF, which a bound of ``prefix + b"\\xff"`` left out of the count."""
    shard = formatted(ShardStateMachine(shard_id="s1", max_sessions_per_user=3))
    for first in ("ff", "ff", "01"):
        shard.ok(RegisterSession(first + secrets.token_hex(15)), caller=ALICE)
    refused = shard.apply(RegisterSession("ff" + secrets.token_hex(15)), caller=ALICE)
    assert refused.code == "RESOURCE_EXHAUSTED", refused


def test_closed_and_expired_sessions_free_their_place() -> None:
    sm = ShardStateMachine(shard_id="s1", max_sessions_per_user=1, session_ttl_ms=1_000)
    shard = formatted(sm)
    _session(shard, ALICE)
    shard.advance(2_000)
    _session(shard, ALICE)  # the first one expired with this entry


def test_leases_per_session_are_limited() -> None:
    shard = formatted(ShardStateMachine(shard_id="s1", max_leases_per_session=2))
    shard.ok(Mkdir("/home", mode=0o777))
    s = _session(shard, ALICE)
    shard.ok(Create("/home/a"), s, 1, caller=ALICE)
    shard.ok(Create("/home/b"), s, 2, caller=ALICE)
    shard.err(Create("/home/c"), "RESOURCE_EXHAUSTED", s, 3, caller=ALICE)
    assert isinstance(shard.sm, ShardStateMachine)
    assert not shard.sm.exists("/home/c")  # refused, nothing changed
    shard.ok(CompleteFile("/home/a"), s, 4, caller=ALICE)
    shard.ok(Create("/home/c"), s, 5, caller=ALICE)
    shard.err(Create("/home/d"), "RESOURCE_EXHAUSTED", s, 6, caller=ALICE)  # b and c held


def test_open_transactions_per_coordinator_are_limited() -> None:
    shard = formatted(ShardStateMachine(shard_id="s1", max_open_txns=1))
    shard.ok(Mkdir("/a"))
    shard.ok(Mkdir("/b"))

    def begin(txn_id: int, directory: str) -> Any:
        part = encode_part([Step("dir", directory)])
        theirs = json.dumps({"s2": encode_part([Step("dir", "/x")])})
        return shard.apply(TxnBegin(txn_id, part, theirs))

    assert begin(1, "/a").ok
    before = state(shard.sm)
    refused = begin(2, "/b")
    assert refused.code == "RESOURCE_EXHAUSTED", refused
    assert state(shard.sm)[1:] == before[1:]  # only the clock moved
    assert begin(1, "/a").ok  # a retry of the open one is no new transaction
