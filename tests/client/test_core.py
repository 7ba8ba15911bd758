"""The client's routing, retry and session decisions, driven without any network.

``keelfs.client._core`` plans yield ``Call``/``Sleep``/``WaitSession`` actions; here a scripted
fake cluster answers the calls, so each decision (follow a NOT_LEADER hint, refresh the map on
REDIRECT, keep (session, seq) across an unknown outcome, replace an expired session, give up
at the deadline with the right error) is checked call by call. Time is a fake clock that a
``Sleep`` moves forward, and chance a seeded generator: nothing here waits.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from keelfs.client import OutcomeUnknown
from keelfs.client import _ops as ops
from keelfs.client._core import (
    BACKOFF_MAX,
    ELECTION_POLL_MAX,
    MIN_ANSWER_SAMPLES,
    MIN_ATTEMPT_TIMEOUT,
    SUSPECT_SECONDS,
    Call,
    Core,
    Plan,
    SessionPool,
    Sleep,
    WaitSession,
)
from keelfs.errors import (
    InvalidPath,
    KeelError,
    NotFound,
    NotLeader,
    Redirect,
    SessionExpired,
    Unavailable,
)
from keelfs.meta.ring import HASH_MAX
from keelfs.meta.shardmap import ShardMap
from keelfs.rpc import grpc_errors
from keelfs.rpc.pb import meta_pb2 as pb
from keelfs.rpc.wire import session_id_from_pb, session_id_to_pb, shard_map_to_pb

A1, A2, A3 = "10.0.0.1:7001", "10.0.0.2:7001", "10.0.0.3:7001"


class RpcFailure(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str, md: tuple[Any, ...] = ()) -> None:
        self._code, self._details, self._md = code, details, md

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[Any, ...]:
        return self._md


def refusal(err: KeelError) -> RpcFailure:
    md = ((grpc_errors.ERROR_KEY, grpc_errors.encode_error(err)),)
    return RpcFailure(grpc_errors.status_of(err), err.message, md)


Answer = Any  # a reply, a KeelError to refuse with, an RpcFailure, or a callable(call)


class FakeCluster:
    """One shard (``shard-1``) on A1..A3 with leader ``leader``; ``script[method]`` is a list
    of answers used first (then the default behaviour)."""

    def __init__(self, leader: str = A2, version: int = 1) -> None:
        self.leader = leader
        self.map = ShardMap(version, {"shard-1": {1: A1, 2: A2, 3: A3}})
        self.script: dict[str, list[Answer]] = {}
        self.calls: list[Call] = []
        self.sessions = 100

    def answer(self, call: Call) -> Any:
        self.calls.append(call)
        queue = self.script.get(call.method)
        if queue:
            a = queue.pop(0)
            a = a(call) if callable(a) else a
            return refusal(a) if isinstance(a, KeelError) else a
        if call.method == "FetchShardMap":
            return pb.FetchShardMapReply(map=shard_map_to_pb(self.map))
        leader_reply = pb.ReplyInfo(node_id=2, group="shard-1", leader=True)
        if call.method in ("GetFileInfo", "ListDir"):
            return pb.FileInfoReply(info=pb.FileInfo(path="/x", kind=pb.FILE))
        if call.address != self.leader:
            return refusal(NotLeader("shard-1", 2, self.leader))
        if call.method == "RegisterSession":
            self.sessions += 1
            return pb.RegisterSessionReply(
                session_id=session_id_to_pb(self.sessions), ttl_ms=60_000, info=leader_reply
            )
        return pb.FileInfoReply(info=pb.FileInfo(path="/x", kind=pb.FILE), reply=leader_reply)

    def of(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]


class FakeClock:
    """Seconds that pass only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


CLOCK = FakeClock()
"""The clock of every ``Core`` made here; a ``Sleep`` that ``run`` meets advances it."""
SEEDS = itertools.count(1)


def run(plan: Plan, answer: Callable[[Call], Any]) -> tuple[Any, list[Any]]:
    """Drive ``plan``; returns its value and the non-call actions (sleeps, waits)."""
    others: list[Any] = []
    try:
        action = next(plan)
        while True:
            result = answer(action) if isinstance(action, Call) else None
            if not isinstance(action, Call):
                others.append(action)
            if isinstance(action, Sleep):
                CLOCK.advance(action.seconds)
            action = plan.send(result)
    except StopIteration as stop:
        return stop.value, others


def core(**kwargs: Any) -> Core:
    """A core on the fake clock, with a generator of its own (each seeded differently)."""
    opts = {"deadline": 5.0, "attempt_timeout": 1.0, "max_sessions": 4, **kwargs}
    return Core([A1], clock=CLOCK, rng=random.Random(next(SEEDS)), **opts)


def test_first_request_fetches_the_map_then_follows_the_leader_hint() -> None:
    fake, c = FakeCluster(leader=A3), core()
    c._turn["shard-1"] = 0  # start at A1, a follower
    reply, _ = run(c.plan(ops.create("/x", False, None, "", "", 0, 0)), fake.answer)
    assert reply.info.path == "/x"
    methods = [(x.method, x.address) for x in fake.calls]
    assert methods[0] == ("FetchShardMap", A1)
    assert ("RegisterSession", A1) in methods and ("RegisterSession", A3) in methods
    creates = fake.of("Create")
    assert [x.address for x in creates] == [A3]  # the leader is known by now
    assert c.leader("shard-1") == A3


def test_a_hint_is_followed_at_once_and_the_leader_remembered() -> None:
    fake, c = FakeCluster(leader=A3), core()
    run(c.plan(ops.delete("/x", False)), fake.answer)  # loads the map, opens a session
    c._learn_leader("shard-1", A1)  # stale belief
    fake.script["Mkdir"] = [NotLeader("shard-1", 3, A3)]
    run(c.plan(ops.mkdir("/d", False, None, "", "")), fake.answer)
    assert [x.address for x in fake.of("Mkdir")] == [A1, A3]
    assert c.leader("shard-1") == A3


def test_unknown_outcome_is_retried_with_the_same_session_and_seq() -> None:
    fake, c = FakeCluster(), core()
    fake.script["Create"] = [
        RpcFailure(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"),
        OutcomeUnknown("timed out", message="proposal timed out"),
    ]
    run(c.plan(ops.create("/x", False, None, "", "", 0, 0)), fake.answer)
    creates = fake.of("Create")
    assert len(creates) >= 3  # (a retry may meet a follower first: it is not the leader)
    headers = {(x.request.header.session_id, x.request.header.seq) for x in creates}
    assert len(headers) == 1 and next(iter(headers))[1] == 1
    assert c.stats["unknown_outcomes"] == 2
    # the next request on the session uses the next seq
    run(c.plan(ops.create("/y", False, None, "", "", 0, 0)), fake.answer)
    assert fake.of("Create")[-1].request.header.seq == 2


def test_redirect_to_a_newer_map_refreshes_it_and_retries() -> None:
    fake, c = FakeCluster(), core()
    run(c.plan(ops.stat("/x", False)), fake.answer)
    assert c.shard_map is not None and c.shard_map.version == 1
    newer = ShardMap(2, {"shard-1": {1: A1, 2: A2, 3: A3}})

    def redirect(call: Call) -> KeelError:
        fake.map = newer
        return Redirect("/x", "shard-1", 2, {"2": A2})

    fake.script["GetFileInfo"] = [redirect]
    run(c.plan(ops.stat("/x", False)), fake.answer)
    assert c.shard_map is not None and c.shard_map.version == 2
    stats = fake.of("GetFileInfo")
    assert [x.request.header.map_version for x in stats[-2:]] == [1, 2]


def test_a_write_redirected_to_the_same_shard_is_retried_under_a_new_seq() -> None:
    """A shard's state machine keeps a REDIRECT as the seq's reply; the retry, which a master
    with a newer map may build as another command (a cross-shard mkdir), must not reuse that
    seq ("seq N was used for a different command")."""
    fake, c = FakeCluster(), core()
    fake.script["Mkdir"] = [Redirect("/d", "shard-1", 1, {"2": A2})]
    run(c.plan(ops.mkdir("/d", False, None, "", "")), fake.answer)
    mkdirs = [x.request.header for x in fake.of("Mkdir")]
    first, last = mkdirs[0], mkdirs[-1]
    assert last.session_id == first.session_id and last.seq == first.seq + 1


def test_a_redirect_after_an_unknown_outcome_keeps_the_seq() -> None:
    """After an attempt of unknown outcome the seq must stay: that attempt may have applied."""
    fake, c = FakeCluster(), core()
    fake.script["Delete"] = [
        RpcFailure(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"),
        Redirect("/d/f", "shard-1", 1, {"2": A2}),
    ]
    run(c.plan(ops.delete("/d/f", False)), fake.answer)
    assert len({x.request.header.seq for x in fake.of("Delete")}) == 1


def test_session_expired_on_a_fresh_session_opens_a_new_one() -> None:
    fake, c = FakeCluster(), core()
    fake.script["Delete"] = [SessionExpired(101)]
    run(c.plan(ops.delete("/x", False)), fake.answer)
    deletes = fake.of("Delete")
    assert [session_id_from_pb(x.request.header.session_id) for x in deletes] == [101, 102]
    assert [x.request.header.seq for x in deletes] == [1, 1]


def test_session_expired_after_an_unknown_outcome_is_outcome_unknown() -> None:
    fake, c = FakeCluster(), core()
    fake.script["Delete"] = [
        RpcFailure(grpc.StatusCode.UNAVAILABLE, "Socket closed"),
        SessionExpired(101),
    ]
    with pytest.raises(OutcomeUnknown):
        run(c.plan(ops.delete("/x", False)), fake.answer)


def test_operation_errors_are_raised_without_retrying() -> None:
    fake, c = FakeCluster(), core()
    fake.script["GetFileInfo"] = [NotFound("/x")]
    with pytest.raises(NotFound):
        run(c.plan(ops.stat("/x", False)), fake.answer)
    assert len(fake.of("GetFileInfo")) == 1


def test_bad_paths_fail_before_anything_is_sent() -> None:
    for bad in ("", "rel", "/a/../b", "/a\x00b", "/a//b", "/" + "x" * 5000):
        with pytest.raises(InvalidPath):
            ops.create(bad, False, None, "", "", 0, 0)
    with pytest.raises(InvalidPath) as info:
        ops.rename("/a", "b", False)
    assert info.value.details["argument"] == "dst"


def test_deadline_gives_unavailable_or_outcome_unknown() -> None:
    fake, c = FakeCluster(), core(deadline=0.3)
    fake.script["GetFileInfo"] = [Unavailable("no leader")] * 1000
    with pytest.raises(Unavailable) as info:
        run(c.plan(ops.stat("/x", False)), fake.answer)
    assert not isinstance(info.value, OutcomeUnknown)
    fake2, c2 = FakeCluster(), core(deadline=0.3)
    fake2.script["Create"] = [RpcFailure(grpc.StatusCode.UNAVAILABLE, "Socket closed")] * 1000
    with pytest.raises(OutcomeUnknown):
        run(c2.plan(ops.create("/x", False, None, "", "", 0, 0)), fake2.answer)


def test_the_deadline_is_kept_on_the_callers_clock() -> None:
    """A minute's deadline of back-offs passes on the core's clock, not the wall's."""
    fake, c = FakeCluster(), core(deadline=60.0)
    fake.script["GetFileInfo"] = [Unavailable("no leader")] * 10_000
    started, wall = CLOCK(), time.monotonic()
    with pytest.raises(Unavailable):
        run(c.plan(ops.stat("/x", False)), fake.answer)
    assert CLOCK() - started >= 60.0 - 1e-9  # (floating-point sums of the sleeps)
    assert time.monotonic() - wall < 5.0  # (generous: a loaded machine)


def test_same_seed_same_jitter_and_first_member() -> None:
    def attempts(seed: int) -> tuple[list[float], str]:
        c = Core([A1], deadline=5.0, attempt_timeout=1.0, max_sessions=4, clock=CLOCK,
                 rng=random.Random(seed))  # fmt: skip
        fake = FakeCluster()
        fake.script["GetFileInfo"] = [Unavailable("no leader")] * 4
        _, others = run(c.plan(ops.stat("/x", False)), fake.answer)
        sleeps = [a.seconds for a in others if isinstance(a, Sleep)]
        return sleeps, fake.of("GetFileInfo")[0].address

    assert attempts(7) == attempts(7)
    assert attempts(7) != attempts(8)


def test_retries_back_off() -> None:
    fake, c = FakeCluster(), core()
    fake.script["GetFileInfo"] = [Unavailable("no leader")] * 4
    _, others = run(c.plan(ops.stat("/x", False)), fake.answer)
    sleeps = [a.seconds for a in others if isinstance(a, Sleep)]
    assert len(sleeps) == 4 and sleeps[-1] > sleeps[0]


def test_session_pool_limits_and_reuse() -> None:
    clock = FakeClock()
    pool = SessionPool("shard-1", max_sessions=2, clock=clock)
    assert pool.take() is None  # register one
    s1 = pool.add(1, 60_000)
    assert pool.take() is None
    s2 = pool.add(2, 60_000)
    assert pool.take() is False  # both busy, at the limit: wait
    pool.release(s1)
    assert pool.take() is s1
    assert pool.take(pin=2) is False  # pinned session busy
    pool.release(s2)
    assert pool.take(pin=2) is s2
    pool.release(s2)
    clock.advance(31.0)  # idle for more than half its TTL: not reused
    assert pool.take() is None
    assert len(pool) == 1


def test_a_returned_session_wakes_one_waiter_and_passes_over_gone_ones() -> None:
    pool = SessionPool("shard-1", max_sessions=1, clock=FakeClock())
    assert pool.take() is None
    s1 = pool.add(1, 60_000)
    woken: list[str] = []

    def waiter(name: str, present: bool = True) -> Callable[[], bool]:
        def wake() -> bool:
            woken.append(name)
            return present

        return wake

    pool.notify_when_free(waiter("gone", present=False))
    pool.notify_when_free(waiter("a"))
    pool.notify_when_free(waiter("b"))
    pool.release(s1)  # "gone" timed out: "a" is woken in its place, "b" still waits
    assert woken == ["gone", "a"]
    assert pool.take() is s1
    pool.discard(s1)  # room to open another: the next waiter
    assert woken == ["gone", "a", "b"]
    assert pool.take() is None
    pool.notify_when_free(waiter("c"))
    pool.abandon_growth()  # the registration failed: room again
    assert woken == ["gone", "a", "b", "c"]


def test_a_returned_session_wakes_a_waiter_that_can_take_it() -> None:
    """A writer's calls are pinned to its session: the return of another session wakes a
    request that can take that one, and the writer's own session wakes the writer first."""
    pool = SessionPool("shard-1", max_sessions=2, clock=FakeClock())
    assert pool.take() is None
    writers = pool.add(1, 60_000)
    assert pool.take() is None
    other = pool.add(2, 60_000)
    woken: list[str] = []

    def waiter(name: str) -> Callable[[], bool]:
        def wake() -> bool:
            woken.append(name)
            return True

        return wake

    gone = waiter("gone")
    pool.notify_when_free(gone)
    pool.forget_waker(gone)  # it timed out: never called
    pool.notify_when_free(waiter("writer"), pin=1)
    pool.notify_when_free(waiter("any"))
    pool.notify_when_free(waiter("any, later"))
    pool.release(other)  # session 2: of no use to the writer, waiting first
    assert woken == ["any"]
    assert pool.take(pin=1) is False and pool.take() is other
    pool.release(writers)  # the writer's own: the writer, though "any, later" waits too
    assert woken == ["any", "writer"]
    assert pool.take(pin=1) is writers
    pool.release(other)
    assert woken == ["any", "writer", "any, later"]


def test_requests_wait_for_a_session_when_the_pool_is_full() -> None:
    fake, c = FakeCluster(), core(max_sessions=1)
    first = c.plan(ops.delete("/a", False))
    action = next(first)  # fetch map
    while not (isinstance(action, Call) and action.method == "Delete"):
        assert isinstance(action, Call)  # (no sleeps on this path)
        action = first.send(fake.answer(action))
    second = c.plan(ops.delete("/b", False))
    action2 = next(second)
    while isinstance(action2, Call):
        action2 = second.send(fake.answer(action2))
    assert isinstance(action2, WaitSession)
    assert isinstance(action, Call)
    with contextlib.suppress(StopIteration):
        first.send(fake.answer(action))
    action2 = second.send(None)
    assert isinstance(action2, Call) and action2.method == "Delete"
    assert action2.request.header.seq == 2  # the same session, its next seq
    second.close()


def test_reads_go_to_one_member_per_client_spread_over_all_of_them() -> None:
    """Each client keeps one member (leader or not) for its reads, so that they batch
    together, and clients spread over every member; fresh reads go there too (a follower
    answers them after a ReadIndex barrier); a member that fails is replaced."""
    chosen = set()
    for _ in range(40):
        fake, c = FakeCluster(leader=A2), core()
        run(c.plan(ops.create("/x", False, None, "", "", 0, 0)), fake.answer)  # the leader
        fake.calls.clear()
        for _ in range(5):
            run(c.plan(ops.stat("/x", stale_ok=True)), fake.answer)
        used = {x.address for x in fake.of("GetFileInfo")}
        assert len(used) == 1
        chosen |= used
        fake.calls.clear()
        run(c.plan(ops.stat("/x", stale_ok=False)), fake.answer)
        assert [x.address for x in fake.of("GetFileInfo")] == list(used)
    assert chosen == {A1, A2, A3}
    (first,) = used
    fake.calls.clear()
    fake.script["GetFileInfo"] = [Unavailable("shutting down")]
    run(c.plan(ops.stat("/x", stale_ok=True)), fake.answer)
    calls = [x.address for x in fake.of("GetFileInfo")]
    assert calls[0] == first and len(calls) == 2  # retried, and not necessarily there again


def test_a_client_that_does_not_spread_fresh_reads_sends_them_to_the_leader() -> None:
    """With ``spread_reads`` off a linearizable read (stat, listing, summary) goes to the
    leader, which answers from its lease, not to a follower (a ReadIndex round trip first);
    ``stale_ok`` reads still go to the client's member."""
    members = set()
    for _ in range(30):
        fake, c = FakeCluster(leader=A2), core(spread_reads=False)
        run(c.plan(ops.create("/x", False, None, "", "", 0, 0)), fake.answer)  # the leader
        fake.calls.clear()
        for op in (
            ops.stat("/x", stale_ok=False),
            ops.list_dir("/", None, 10, stale_ok=False),
            ops.content_summary("/x", stale_ok=False),
        ):
            run(c.plan(op), fake.answer)
        assert {x.address for x in fake.calls} == {A2}
        fake.calls.clear()
        run(c.plan(ops.stat("/x", stale_ok=True)), fake.answer)
        members |= {x.address for x in fake.of("GetFileInfo")}
    assert members == {A1, A2, A3}


B1, B2, B3 = "10.0.1.1:7001", "10.0.1.2:7001", "10.0.1.3:7001"
TWO_SHARDS = {"shard-1": {1: A1, 2: A2, 3: A3}, "shard-2": {4: B1, 5: B2, 6: B3}}


class MovingCluster(FakeCluster):
    """``shard-1`` (leader A2) and ``shard-2`` (leader B2); every directory is on shard-1 until
    ``move()``, then on shard-2 (map version 2). Before the move is known to the client, a
    write's reply is lost; the next attempt meets the new map (a REDIRECT from routing, before
    anything reaches a state machine)."""

    def __init__(self) -> None:
        super().__init__()
        self.map = ShardMap(1, TWO_SHARDS, ring_members=("shard-1",))

    def move(self) -> None:
        self.map = ShardMap(2, TWO_SHARDS, overrides=((0, HASH_MAX, "shard-2"),))

    def answer(self, call: Call) -> Any:
        if call.address in (B1, B2, B3) and call.method != "FetchShardMap":
            self.calls.append(call)
            queue = self.script.get(call.method)
            if queue:
                a = queue.pop(0)
                return refusal(a) if isinstance(a, KeelError) else a
            if call.address != B2:
                return refusal(NotLeader("shard-2", 5, B2))
            info = pb.ReplyInfo(node_id=5, group="shard-2", leader=True)
            if call.method == "RegisterSession":
                self.sessions += 1
                return pb.RegisterSessionReply(
                    session_id=session_id_to_pb(self.sessions), ttl_ms=60_000, info=info
                )
            return pb.DeleteReply(files=1, info=info)
        return super().answer(call)

    def lose_reply_then_move(self, method: str) -> None:
        def lost(call: Call) -> RpcFailure:
            self.move()
            return RpcFailure(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")

        def routed_away(call: Call) -> KeelError:
            return Redirect("/d/f", "shard-2", 2, {"5": B2})

        self.script[method] = [lost, routed_away]


def _started(fake: MovingCluster) -> Core:
    c = core()
    run(c.plan(ops.stat("/d", False)), fake.answer)  # loads the map
    c._learn_leader("shard-1", A2)
    c._learn_leader("shard-2", B2)
    return c


def test_a_write_of_unknown_outcome_asks_its_own_shard_again_after_a_move() -> None:
    """The delete may have been applied on shard-1 before its directory moved: only
    shard-1's reply cache knows. So the retry goes there, in the same session and seq,
    marked to be answered from the cache only; shard-2 never sees it."""
    fake = MovingCluster()
    c = _started(fake)
    fake.lose_reply_then_move("Delete")
    reply, _ = run(c.plan(ops.delete("/d/f", False)), fake.answer)
    deletes = fake.of("Delete")
    assert [x.address for x in deletes if x.address in (B1, B2, B3)] == []
    assert fake.of("RegisterSession")[-1].address == A2  # no session opened on shard-2
    assert len({(x.request.header.session_id, x.request.header.seq) for x in deletes}) == 1
    marks = [x.request.header.session_shard for x in deletes]
    assert marks[:2] == ["", ""] and set(marks[2:]) == {"shard-1"}  # (a follower may answer)
    assert isinstance(reply, pb.FileInfoReply)  # shard-1's answer (the first outcome)
    assert c.stats["unknown_outcomes"] == 1


def test_a_write_its_own_shard_never_applied_goes_to_the_new_owner() -> None:
    """Shard-1 answers the replayed seq with REDIRECT from its state machine: it was never
    applied there (and now never will be: the seq is answered). Then, and only then, the
    write is sent to the new owner, in a session of that shard."""
    fake = MovingCluster()
    c = _started(fake)
    fake.lose_reply_then_move("Delete")
    fake.script["Delete"].append(Redirect(message="seq 1 of session 101 was not applied here"))
    reply, _ = run(c.plan(ops.delete("/d/f", False)), fake.answer)
    assert reply.files == 1
    deletes = fake.of("Delete")
    replays = [x for x in deletes if x.request.header.session_shard == "shard-1"]
    assert replays and all(x.address in (A1, A2, A3) for x in replays)
    after = deletes[deletes.index(replays[-1]) + 1 :]
    assert after and all(x.address in (B1, B2, B3) for x in after)
    assert all(not x.request.header.session_shard for x in after)
    assert fake.of("RegisterSession")[-1].address == B2
    assert after[-1].request.header.seq == 1  # a fresh session of shard-2
    assert after[-1].request.header.session_id != deletes[0].request.header.session_id
    assert c.stats["unknown_outcomes"] == 1


def test_a_write_of_unknown_outcome_whose_shard_is_gone_is_outcome_unknown() -> None:
    fake = MovingCluster()
    c = _started(fake)

    def lost(call: Call) -> RpcFailure:
        fake.map = ShardMap(2, {"shard-2": TWO_SHARDS["shard-2"]})  # shard-1 was removed
        return RpcFailure(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")

    fake.script["Delete"] = [lost, Redirect("/d/f", "shard-2", 2, {"5": B2})]
    with pytest.raises(OutcomeUnknown, match="shard-1"):
        run(c.plan(ops.delete("/d/f", False)), fake.answer)
    assert all(x.address in (A1, A2, A3) for x in fake.of("Delete"))


def test_a_block_allocation_is_not_replayed_its_lease_guards_it() -> None:
    """``AllocateBlock`` builds a new block id on every attempt: no reply cache could match
    it, so it is not replayed; it follows the move (where the file has no writer's lease
    any more, so it is refused rather than applied twice)."""
    fake = MovingCluster()
    c = _started(fake)
    fake.lose_reply_then_move("AllocateBlock")
    run(c.plan(ops.allocate_block("/d/f", None, (), 0)), fake.answer)
    calls = fake.of("AllocateBlock")
    assert all(not x.request.header.session_shard for x in calls)
    assert calls[-1].address in (B1, B2, B3)


def _silent(call: Call) -> RpcFailure:
    """A frozen member: the call waits its whole timeout and fails DEADLINE_EXCEEDED."""
    CLOCK.advance(call.timeout)
    return RpcFailure(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")


def test_before_any_answer_an_attempt_waits_the_whole_attempt_timeout() -> None:
    fake, c = FakeCluster(), core(attempt_timeout=1.0)
    fake.script["FetchShardMap"] = [_silent]
    run(c.plan(ops.stat("/x", False)), fake.answer)
    assert fake.of("FetchShardMap")[0].timeout == 1.0


def test_a_frozen_leader_is_left_after_a_few_answer_times_not_the_attempt_timeout() -> None:
    """The leader stops answering (SIGSTOP): the write's attempt there gives up after
    ``MIN_ATTEMPT_TIMEOUT`` (the members answered at once so far), and the retry, same
    session and seq, finds the new leader through the next member's hint."""
    fake, c = FakeCluster(leader=A2), core(attempt_timeout=2.0)
    for i in range(MIN_ANSWER_SAMPLES):  # creates answered at once: learned
        run(c.plan(ops.create(f"/a{i}", False, None, "", "", 0, 0)), fake.answer)
    fake.calls.clear()
    fake.script["Create"] = [_silent]
    fake.leader = A3  # elected meanwhile; A1 and A3 now name A3
    started = CLOCK()
    run(c.plan(ops.create("/b", False, None, "", "", 0, 0)), fake.answer)
    creates = fake.of("Create")
    assert creates[0].address == A2 and creates[0].timeout == MIN_ATTEMPT_TIMEOUT
    assert creates[-1].address == A3
    assert {session_id_from_pb(c.request.header.session_id) for c in creates} == {
        session_id_from_pb(creates[0].request.header.session_id)
    } and {c.request.header.seq for c in creates} == {creates[0].request.header.seq}
    assert CLOCK() - started < 0.5


def test_each_timeout_of_one_request_doubles_its_wait_up_to_the_attempt_timeout() -> None:
    fake, c = FakeCluster(), core(attempt_timeout=1.0, deadline=5.0)
    for _ in range(MIN_ANSWER_SAMPLES):  # answered at once: the wait is the least
        run(c.plan(ops.stat("/x", False)), fake.answer)
    fake.calls.clear()
    fake.script["GetFileInfo"] = [_silent] * 5
    run(c.plan(ops.stat("/x", False)), fake.answer)
    waits = [call.timeout for call in fake.of("GetFileInfo")]
    assert waits[:5] == [MIN_ATTEMPT_TIMEOUT, 0.5, 1.0, 1.0, 1.0]


def test_slow_answers_lengthen_the_wait() -> None:
    fake, c = FakeCluster(), core(attempt_timeout=2.0)

    def slow(call: Call) -> Any:
        CLOCK.advance(0.3)
        return pb.FileInfoReply(info=pb.FileInfo(path="/x", kind=pb.FILE))

    fake.script["GetFileInfo"] = [slow] * 20
    for _ in range(20):
        run(c.plan(ops.stat("/x", False)), fake.answer)
    times = c.answer_times["GetFileInfo"]
    assert 0.3 <= times.wait(2.0) < 2.0
    assert times.wait(2.0) > MIN_ATTEMPT_TIMEOUT


def test_a_method_answered_only_a_few_times_waits_the_whole_attempt_timeout() -> None:
    """A ``mkdir -p`` spanning shards is slow by nature and called rarely: fast answers of
    other methods, or a few of its own, do not cut its wait short (a retry of it would
    report only what the retry created)."""
    fake, c = FakeCluster(), core(attempt_timeout=2.0)
    for _ in range(3 * MIN_ANSWER_SAMPLES):
        run(c.plan(ops.stat("/x", False)), fake.answer)
    for i in range(MIN_ANSWER_SAMPLES - 1):
        run(c.plan(ops.mkdir(f"/m{i}", True, None, "", "")), fake.answer)
    fake.calls.clear()
    run(c.plan(ops.mkdir("/last", True, None, "", "")), fake.answer)
    assert [call.timeout for call in fake.of("Mkdir")][-1] == 2.0


def test_during_an_election_the_members_are_asked_often() -> None:
    """ "Not the leader, and I know none" means an election is under way: the back-off stays
    under ``ELECTION_POLL_MAX`` instead of growing to ``BACKOFF_MAX``."""
    fake, c = FakeCluster(), core(deadline=10.0)
    fake.script["GetFileInfo"] = [NotLeader("shard-1", 0, "")] * 12
    _, others = run(c.plan(ops.stat("/x", False)), fake.answer)
    sleeps = [a.seconds for a in others if isinstance(a, Sleep)]
    assert len(sleeps) >= 12 and max(sleeps) <= ELECTION_POLL_MAX


def test_a_reader_that_knows_no_leader_is_left_for_another_member() -> None:
    """A follower cut off from the leader cannot pass a fresh read's barrier and says "not
    the leader" every time: the client reads from another member instead of asking it again
    until the deadline."""
    for _ in range(20):
        fake, c = FakeCluster(leader=A2), core(deadline=5.0)
        run(c.plan(ops.stat("/x", stale_ok=True)), fake.answer)
        (cut_off,) = {x.address for x in fake.of("GetFileInfo")}
        if cut_off == A2:
            continue

        def answer(call: Call, fake: FakeCluster = fake, cut_off: str = cut_off) -> Any:
            if call.method == "GetFileInfo" and call.address == cut_off:
                fake.calls.append(call)
                return refusal(NotLeader("shard-1", 0, ""))
            return fake.answer(call)

        fake.calls.clear()
        reply, _ = run(c.plan(ops.stat("/x", stale_ok=False)), answer)
        assert reply.info.path == "/x"
        assert fake.of("GetFileInfo")[-1].address != cut_off
        return
    raise AssertionError("no client picked a follower in 20 tries")


# -- a leader lost: the client passes it over while the others elect one --------------------------
REFUSED = RpcFailure(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses")


def _election(fake: FakeCluster, dead: str, elected: str, after: float, gone: Answer) -> Any:
    """Answers while ``dead`` (the leader) is gone: it answers ``gone``; the others name it
    (they have not timed out yet) until ``after`` seconds have passed, then ``elected`` leads."""
    began = CLOCK()

    def answer(call: Call) -> Any:
        if call.method != "Create":
            return fake.answer(call)
        if call.address == dead:
            fake.calls.append(call)
            return gone(call) if callable(gone) else gone
        if CLOCK() - began >= after:
            fake.leader = elected
            return fake.answer(call)
        fake.calls.append(call)
        return refusal(NotLeader("shard-1", 2, dead))

    return answer


def _learned(c: Core, fake: FakeCluster) -> None:
    for i in range(MIN_ANSWER_SAMPLES):  # creates answered at once: their answer time known
        run(c.plan(ops.create(f"/warm{i}", False, None, "", "", 0, 0)), fake.answer)
    fake.calls.clear()


def test_a_killed_leader_is_passed_over_while_the_others_elect_a_new_one() -> None:
    """kill -9 of the leader: its port refuses connections, and the others still name it
    until their election timeout. The client asks it no more (neither in turn nor on their
    hint) and polls the others at most ``ELECTION_POLL_MAX`` apart, so the write lands
    within a poll of the election (it went back to the dead member on every hint, after
    ever longer back-offs: 1-2 s writer stalls measured by ``keelfs bench stall``)."""
    for _ in range(10):  # each core draws its own first member and jitter
        fake, c = FakeCluster(leader=A2), core(deadline=10.0)
        _learned(c, fake)
        started = CLOCK()
        answer = _election(fake, dead=A2, elected=A1, after=0.3, gone=REFUSED)
        _, others = run(c.plan(ops.create("/k", False, None, "", "", 0, 0)), answer)
        creates = fake.of("Create")
        assert [x.address for x in creates].count(A2) == 1, [x.address for x in creates]
        assert creates[-1].address == A1
        assert max(a.seconds for a in others if isinstance(a, Sleep)) <= ELECTION_POLL_MAX
        assert CLOCK() - started <= 0.3 + ELECTION_POLL_MAX


def test_a_frozen_leader_named_by_the_others_is_not_asked_again_before_the_election() -> None:
    """SIGSTOP of the leader: one attempt waits ``MIN_ATTEMPT_TIMEOUT`` there, then the
    others' hints naming it are not followed (each would wait twice as long on it)."""
    for _ in range(10):  # each core draws its own first member and jitter
        fake, c = FakeCluster(leader=A2), core(deadline=10.0)
        _learned(c, fake)
        started = CLOCK()
        answer = _election(fake, dead=A2, elected=A3, after=0.45, gone=_silent)
        run(c.plan(ops.create("/f", False, None, "", "", 0, 0)), answer)
        creates = fake.of("Create")
        assert [x.address for x in creates].count(A2) == 1
        assert creates[-1].address == A3
        assert CLOCK() - started <= 0.45 + ELECTION_POLL_MAX


def test_a_leader_that_was_only_slow_is_asked_again_soon() -> None:
    """An attempt timed out at a leader that still leads (slow, not frozen): the others keep
    naming it, and the client goes back to it once its suspicion ends (``SUSPECT_SECONDS``),
    not at the deadline."""
    fake, c = FakeCluster(leader=A2), core(deadline=10.0)
    _learned(c, fake)
    fake.script["Create"] = [_silent]  # one attempt lost at A2; A2 answers after that
    started = CLOCK()
    run(c.plan(ops.create("/s", False, None, "", "", 0, 0)), fake.answer)
    creates = fake.of("Create")
    assert creates[-1].address == A2 and len([x for x in creates if x.address == A2]) == 2
    assert CLOCK() - started <= MIN_ATTEMPT_TIMEOUT + SUSPECT_SECONDS + ELECTION_POLL_MAX


def test_a_lost_lead_is_retried_soon_a_busy_member_later() -> None:
    """``OUTCOME_UNKNOWN`` "timed out" (a new leader deposed before its entry committed) and
    ``UNAVAILABLE`` "leader changed" are retried within ``ELECTION_POLL_MAX``; "busy"
    (back-pressure) backs off further and further."""
    fake, c = FakeCluster(), core(deadline=30.0)
    fake.script["Create"] = [
        OutcomeUnknown("timed out"),
        Unavailable("leader changed"),
    ] * 4
    _, others = run(c.plan(ops.create("/l", False, None, "", "", 0, 0)), fake.answer)
    assert max(a.seconds for a in others if isinstance(a, Sleep)) <= ELECTION_POLL_MAX
    for reason in ("busy", "dropped"):  # back-pressure (Raft's own: too many uncommitted bytes)
        fake.script["Create"] = [Unavailable(reason)] * 8
        _, others = run(c.plan(ops.create(f"/{reason}", False, None, "", "", 0, 0)), fake.answer)
        sleeps = [a.seconds for a in others if isinstance(a, Sleep)]
        assert max(sleeps) > ELECTION_POLL_MAX and max(sleeps) <= BACKOFF_MAX, reason


def test_with_every_member_suspected_each_is_tried_in_turn() -> None:
    """The whole group failed at the transport (a restart of every member): the client
    keeps asking each member in turn (one of them answers first), not one member over and
    over until the suspicion ends."""
    fake, c = FakeCluster(leader=A2), core(deadline=10.0)
    _learned(c, fake)
    for address in (A1, A2, A3):
        c._suspect("shard-1", address)
    c._learn_leader("shard-1", None)
    assert len({c._target("shard-1") for _ in range(3)}) == 3


def test_a_member_is_passed_over_only_for_the_group_it_failed() -> None:
    c = core()
    c._suspect("shard-1", A2)
    assert c.is_suspected("shard-1", A2) and not c.is_suspected("shard-2", A2)
    CLOCK.advance(SUSPECT_SECONDS)
    assert not c.is_suspected("shard-1", A2)


def test_a_groups_members_are_listed_once_per_map() -> None:
    c = core()
    first = ShardMap(version=1, shards={"s1": {2: "h2:1", 1: "h1:1"}})
    c.install(pb.FetchShardMapReply(map=shard_map_to_pb(first)))
    listed = c._members("s1")
    assert listed == ["h1:1", "h2:1"] and c._members("s1") is listed, "listed once per map"
    second = ShardMap(version=2, shards={"s1": {3: "h3:1", 1: "h1:1"}})
    c.install(pb.FetchShardMapReply(map=shard_map_to_pb(second)))
    assert c._members("s1") == ["h1:1", "h3:1"], "a new map is listed again"
    assert c._members("s2") == []
