"""Exactly-once sessions and writer leases, both expiring by log time (never a wall clock)."""

from __future__ import annotations

from meta_helpers import T0, Driver, state

from keelfs.meta.commands import (
    AddBlock,
    CloseSession,
    CompleteFile,
    Create,
    Delete,
    KeepAlive,
    Mkdir,
    RegisterSession,
    Rename,
    RenewLease,
    Tick,
    UpdateBlock,
)
from keelfs.meta.machine import DEFAULT_SESSION_TTL_MS
from keelfs.meta.namespace import DEFAULT_LEASE_TTL_MS, ShardStateMachine

LEASE = DEFAULT_LEASE_TTL_MS
SESSION = DEFAULT_SESSION_TTL_MS


# -- exactly-once ---------------------------------------------------------------------------------
def test_retried_create_returns_the_original_success(shard: Driver) -> None:
    s = shard.session()
    first = shard.apply(Create("/f"), s, 1)
    assert first.ok
    # the leader applied it, then failed over before answering; the client retries
    again = shard.apply(Create("/f"), s, 1)
    assert again == first  # not ALREADY_EXISTS
    # a new command (next seq) is applied normally
    assert shard.apply(Create("/f"), s, 2).code == "ALREADY_EXISTS"


def test_retry_returns_the_original_even_after_the_state_moved_on(shard: Driver) -> None:
    s = shard.session()
    other = shard.session()
    shard.ok(Mkdir("/d"), s, 1)
    shard.ok(Delete("/d"), other, 1)  # someone else removed it meanwhile
    assert shard.apply(Mkdir("/d"), s, 1).value == {"created": ["/d"]}
    assert not shard.sm.exists("/d")  # and it was not applied a second time


def test_errors_are_remembered_too(shard: Driver) -> None:
    s = shard.session()
    first = shard.apply(Delete("/missing"), s, 1)
    assert first.code == "NOT_FOUND"
    shard.ok(Mkdir("/missing"))
    assert shard.apply(Delete("/missing"), s, 1) == first
    assert shard.sm.exists("/missing")


def test_every_reply_kind_survives_the_cache(shard: Driver) -> None:
    s = shard.session()
    commands = [Mkdir("/a"), Create("/a/f"), AddBlock("/a/f", 1, 1), CompleteFile("/a/f", 3)]
    commands += [RenewLease(), Rename("/a/f", "/a/g"), Delete("/a", recursive=True)]
    for seq, cmd in enumerate(commands, start=1):
        first = shard.apply(cmd, s, seq)
        assert shard.apply(cmd, s, seq) == first, cmd


def test_seq_reused_for_another_command_is_refused(shard: Driver) -> None:
    s = shard.session()
    shard.ok(Mkdir("/a"), s, 1)
    before = state(shard.sm)
    r = shard.err(Mkdir("/b"), "INVALID_ARGUMENT", s, 1)
    assert r.error is not None and "different command" in r.error["message"]
    assert state(shard.sm) == before
    assert shard.apply(Mkdir("/a"), s, 1).ok  # the genuine retry still gets its reply


def test_a_retried_block_allocation_gets_the_first_block(shard: Driver) -> None:
    """AllocateBlock takes a fresh block id for every attempt, so the retry of a request
    whose reply was lost carries another id: it is the same request, and gets the first
    attempt's block (the file never gets two)."""
    s = shard.session()
    shard.ok(Create("/f"), s, 1)
    first = shard.apply(AddBlock("/f", 10, 1), s, 2)
    assert first.ok
    assert shard.apply(AddBlock("/f", 11, 1), s, 2) == first
    assert [b.block_id for b in shard.sm.stat("/f").blocks] == [10]
    # another file, or another previous length, is another request: still refused
    assert shard.apply(AddBlock("/g", 12, 1), s, 2).code == "INVALID_ARGUMENT"
    assert shard.apply(AddBlock("/f", 12, 1, 5), s, 2).code == "INVALID_ARGUMENT"


def test_a_retried_pipeline_recovery_gets_the_first_stamp(shard: Driver) -> None:
    """RecoverPipeline proposes the current stamp + 1, so a retry after a lost reply (the
    first attempt applied) proposes one more: it gets the first attempt's stamp."""
    s = shard.session()
    shard.ok(Create("/f"), s, 1)
    shard.ok(AddBlock("/f", 10, 1), s, 2)
    first = shard.apply(UpdateBlock("/f", 10, 2), s, 3)
    assert first.ok
    assert shard.apply(UpdateBlock("/f", 10, 3), s, 3) == first
    assert [b.gen_stamp for b in shard.sm.stat("/f").blocks] == [2]
    assert shard.apply(UpdateBlock("/f", 99, 4), s, 3).code == "INVALID_ARGUMENT"


def test_older_seq_and_unknown_session(shard: Driver) -> None:
    s = shard.session()
    shard.ok(Mkdir("/a"), s, 1)
    shard.ok(Mkdir("/b"), s, 2)
    before = state(shard.sm)
    r = shard.err(Mkdir("/c"), "INVALID_ARGUMENT", s, 1)
    assert r.error is not None and r.error["argument"] == "seq"
    shard.err(Mkdir("/c"), "SESSION_EXPIRED", 12345, 1)
    assert not shard.sm.exists("/c")
    assert state(shard.sm) == before


def test_entries_from_before_random_ids_are_numbered_by_log_index(shard: Driver) -> None:
    a = int(shard.ok(RegisterSession())["session_id"])  # carries no id: an old log entry
    assert a == shard.index
    b = shard.session()
    assert b != shard.index
    info = shard.sm.session(a)
    assert info is not None and info.last_active_ms == T0 and info.last_seq == 0


def test_session_expires_by_log_time(shard: Driver) -> None:
    s = shard.session()
    shard.ok(Mkdir("/a"), s, 1)
    shard.advance(SESSION)  # exactly the TTL: still alive
    shard.ok(Tick())
    assert shard.sm.session(s) is not None
    shard.advance(1)
    shard.ok(Tick())
    assert shard.sm.session(s) is None
    r = shard.apply(Mkdir("/a"), s, 1)  # the retry can no longer be answered
    assert r.code == "SESSION_EXPIRED"


def test_commands_and_keepalives_keep_a_session_alive(shard: Driver) -> None:
    s = shard.session()
    for _ in range(5):
        shard.advance(SESSION - 1)
        shard.ok(KeepAlive(), s)
    shard.advance(SESSION - 1)
    shard.ok(Mkdir("/x"), s, 1)
    shard.advance(SESSION - 1)
    shard.ok(Tick())
    assert shard.sm.session(s) is not None
    assert shard.sm.session(s).last_seq == 1  # type: ignore[union-attr]
    shard.err(KeepAlive(), "INVALID_ARGUMENT")  # needs a session


def test_clock_is_the_max_leader_time(shard: Driver) -> None:
    shard.ok(Tick(), now=T0 + 10_000)
    assert shard.sm.clock_ms() == T0 + 10_000
    shard.ok(Mkdir("/late"), now=T0 + 5_000)  # a new leader whose clock lags
    assert shard.sm.clock_ms() == T0 + 10_000
    assert shard.sm.stat("/late").mtime == T0 + 10_000


def test_expiry_does_not_read_the_wall_clock(tmp_path: object) -> None:
    """Two members applying the same log at different wall times agree exactly."""
    d = Driver(ShardStateMachine(None), now=1000)  # a clock far in the past
    s = d.session()
    d.ok(Tick(), now=1000 + SESSION)
    assert d.sm.session(s) is not None


def test_close_session(shard: Driver) -> None:
    s = shard.session()
    shard.ok(CloseSession(), s)
    assert shard.sm.session(s) is None
    shard.err(KeepAlive(), "SESSION_EXPIRED", s)


# -- leases ---------------------------------------------------------------------------------------
def test_lease_conflict_and_expiry(shard: Driver) -> None:
    a, b = shard.session(), shard.session()
    shard.ok(Create("/f"), a)
    r = shard.err(Create("/f", overwrite=True), "LEASE_CONFLICT", b)
    # the holder's user, never its session id (which would let anyone write in its name)
    assert r.error is not None and r.error["holder"] == "keelfs"
    assert str(a) not in r.error["message"] and f"{a:x}" not in r.error["message"]
    shard.err(AddBlock("/f", 1, 1), "LEASE_CONFLICT", b)
    shard.err(CompleteFile("/f"), "LEASE_CONFLICT", b)
    assert shard.sm.lease_expiry(a) == T0 + LEASE
    # a keeps its session alive but stops renewing its lease
    shard.advance(LEASE)
    shard.ok(KeepAlive(), a)
    shard.err(Create("/f", overwrite=True), "LEASE_CONFLICT", b)
    shard.advance(1)
    shard.ok(KeepAlive(), a)
    st = shard.sm.stat("/f")
    assert st.under_construction and st.lease_holder == 0  # released, not closed
    assert shard.sm.lease_expiry(a) is None
    shard.err(AddBlock("/f", 1, 1), "LEASE_CONFLICT", a)  # a lost it
    shard.ok(Create("/f", overwrite=True), b)  # b takes it over
    assert shard.sm.stat("/f").lease_holder == b


def test_lease_renewal(shard: Driver) -> None:
    a, b = shard.session(), shard.session()
    shard.ok(Create("/f"), a)
    shard.ok(Create("/g"), a)
    for _ in range(3):
        shard.advance(LEASE - 1)
        assert shard.ok(RenewLease(), a)["renewed"] is True
        shard.ok(KeepAlive(), b)
    shard.err(Create("/f", overwrite=True), "LEASE_CONFLICT", b)
    shard.advance(LEASE - 1)
    shard.ok(AddBlock("/g", 1, 1), a)  # writing renews too
    shard.ok(KeepAlive(), b)
    shard.advance(LEASE - 1)
    shard.err(Create("/g", overwrite=True), "LEASE_CONFLICT", b)
    assert shard.ok(RenewLease(), b) == {"renewed": False}


def test_complete_releases_the_lease(shard: Driver) -> None:
    a, b = shard.session(), shard.session()
    shard.ok(Create("/f"), a)
    shard.ok(Create("/g"), a)
    shard.ok(CompleteFile("/f"), a)
    assert shard.sm.lease_expiry(a) is not None  # still holds /g
    shard.ok(CompleteFile("/g"), a)
    assert shard.sm.lease_expiry(a) is None
    shard.ok(Create("/f", overwrite=True), b)


def test_session_end_releases_leases(shard: Driver) -> None:
    a, b, c = shard.session(), shard.session(), shard.session()
    shard.ok(Create("/by-a"), a)
    shard.ok(Create("/by-b"), b)
    shard.ok(CloseSession(), a)
    assert shard.sm.stat("/by-a").lease_holder == 0
    # b's session expires (its lease too, earlier)
    for _ in range(3):
        shard.advance(SESSION // 2)
        shard.ok(KeepAlive(), c)
    assert shard.sm.session(b) is None
    assert shard.sm.stat("/by-b").lease_holder == 0
    shard.ok(Create("/by-a", overwrite=True), c)
    shard.ok(Create("/by-b", overwrite=True), c)


def test_same_session_may_overwrite_its_own_file(shard: Driver) -> None:
    a = shard.session()
    shard.ok(Create("/f"), a)
    shard.err(Create("/f"), "ALREADY_EXISTS", a)
    shard.ok(Create("/f", overwrite=True), a)
    assert shard.sm.stat("/f").lease_holder == a


def test_lease_follows_rename_and_ends_with_delete(shard: Driver) -> None:
    a, b = shard.session(), shard.session()
    shard.ok(Mkdir("/d"))
    shard.ok(Create("/d/f"), a)
    shard.ok(Rename("/d", "/e"))
    shard.ok(AddBlock("/e/f", 1, 1), a)
    shard.ok(CompleteFile("/e/f", 10), a)
    shard.ok(Create("/e/g"), a)
    shard.ok(Delete("/e", recursive=True))
    assert shard.sm.lease_expiry(a) is None
    shard.advance(LEASE * 2)
    shard.ok(KeepAlive(), b)
    # no lease bookkeeping is left dangling (holder, expiry index, held files)
    assert [k for k, _ in state(shard.sm) if k[:1] in (b"H", b"X", b"L")] == []
