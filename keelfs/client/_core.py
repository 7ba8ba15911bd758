"""The client's routing, retry and session logic, without I/O.

A request is run by a *plan*: a generator that yields actions (:class:`Call` an RPC,
:class:`Sleep`, :class:`WaitSession`) and receives their results; ``Client`` drives plans
with blocking gRPC calls and ``AsyncClient`` with ``grpc.aio``, so the two share every
decision (h11's sans-I/O shape). The clock and the random draws are the caller's too
(``Core(clock=..., rng=...)``). :class:`Core` holds what plans share, behind one lock:

- the ShardMap (fetched from any config server, refreshed on ``REDIRECT``), the node registry
  and the config servers' addresses;
- the leader last seen for each group (``"config"`` or a shard id);
- per group, a pool of client sessions with their sequence numbers.

The retry policy of one request (:meth:`Core.plan`), within its deadline:

==========================  ==================================================================
answer                      what the plan does
==========================  ==================================================================
``NOT_LEADER``              remember the hinted leader; retry there at once (then back off);
                            with no hint (an election), back off at most 0.1 s
``REDIRECT``                refresh the ShardMap if the redirect's version is newer, else back
                            off; retry on the owner shard
``UNAVAILABLE``             forget the leader, back off, retry on the next member (a lost
                            lead: back off at most 0.1 s, ``LEADERSHIP_REASONS``)
``OUTCOME_UNKNOWN``,        same, noting that a write may have been applied: retrying it with
gRPC failures, timeouts     the same session and seq returns the first outcome (exactly-once);
                            a member failing at the transport is passed over for a moment
                            (``SUSPECT_SECONDS``), hints naming it included
``SESSION_EXPIRED``         open a new session and retry, unless an earlier attempt of this
                            request on that session had an unknown outcome (then raise)
map moved the path          after an unknown outcome, no new session on the new owner: the
(to another shard)          same (session, seq) goes back to its own shard as a *replay*
                            (``RequestHeader.session_shard``), which answers from its reply
                            cache (the first outcome) or says ``REDIRECT``: never applied,
                            and now never will be; only then is the write sent to the new
                            owner in a session there. ``OutcomeUnknown`` if that shard is gone
anything else               raise it (``keelfs.errors``)
==========================  ==================================================================

An attempt waits for its answer a few times the members' usual answer time for its method
(``AnswerTimes``, at least 0.25 s, at most ``attempt_timeout``; all of it until the method
was answered 8 times), doubling with each timeout of the request: a frozen leader is left for
the next member after a fraction of a second.

When the deadline passes, :class:`OutcomeUnknown` is raised if a write attempt's outcome was
unknown, else ``Unavailable``.

Sessions (Raft dissertation 6.3; ``keelfs.meta.sessions``): a session allows one outstanding
command, so each group has a pool of up to ``max_sessions`` sessions; a request takes an idle
one (or registers a new one), numbers its command with the session's next ``seq`` and keeps
that (session, seq) for all its retries, and returns it when done. A session idle for more than
half its TTL is dropped from the pool rather than reused (the server will expire it), so idle
clients need no keep-alive traffic. A file's writer lease belongs to the session that created
it: ``complete`` uses that session again.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import grpc

from keelfs.client.identity import ACTING_FOR
from keelfs.errors import (
    InvalidArgument,
    NotFound,
    NotLeader,
    OperationError,
    OutcomeUnknown,
    Redirect,
    SessionExpired,
    Unavailable,
)
from keelfs.meta.frozen import fast_init
from keelfs.meta.shardmap import ShardMap
from keelfs.rpc.grpc_errors import error_from_rpc, transport_failure
from keelfs.rpc.pb import meta_pb2 as pb
from keelfs.rpc.wire import (
    CONFIG_GROUP,
    session_id_from_pb,
    session_id_to_pb,
    shard_map_from_pb,
)
from keelfs.runtime.requests import REQUEST_ID
from keelfs.tls.credentials import TlsSettings

_calls_log = logging.getLogger("keelfs.client.calls")

__all__ = [
    "log_call",
    "Call",
    "Core",
    "Op",
    "Route",
    "Sleep",
    "WaitSession",
]

T = TypeVar("T")


def monotonic() -> float:
    """``time.monotonic()``, looked up at each call (the default clock: a simulation that
    replaces ``time.monotonic`` is obeyed by clients made before it did)."""
    return time.monotonic()


class Randomness(Protocol):
    """The draws a ``Core`` makes: a ``random.Random``, or the ``random`` module itself (the
    default, so that a run that seeds it, as the whole-cluster simulator does, replays)."""

    def uniform(self, a: float, b: float) -> float: ...

    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int: ...

    def choice(self, seq: Sequence[T]) -> T: ...


BACKOFF_INITIAL = 0.02
BACKOFF_MAX = 0.5
ELECTION_POLL_MAX = 0.1
"""The longest back-off after a member says "not the leader" and knows no other: an election
is under way, and the members answer such questions cheaply, so the client asks often enough
to find the new leader within ~0.1 s of its election, not after a back-off of up to 0.5 s."""
MIN_ATTEMPT_TIMEOUT = 0.25
"""The shortest wait for one attempt's answer (see :class:`AnswerTimes`)."""
LEADERSHIP_REASONS = frozenset({"leader changed", "leader changing", "timed out"})
"""Reasons of ``UNAVAILABLE``/``OUTCOME_UNKNOWN`` that mean the member lost (or is losing) the
lead: the back-off after them stays under ``ELECTION_POLL_MAX``, as for "not the leader"
(unlike "busy", "locked" or "dropped" — Raft's own back-pressure, too many uncommitted bytes,
among its causes — where waiting longer is the point)."""
_GONE_SILENT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
"""Transport failures of a member that is dead or frozen (not one too busy to start a call)."""
SUSPECT_SECONDS = 0.5
"""How long a member that failed at the transport (refused the connection, broke it, or left
an attempt unanswered) is passed over: requests go to the other members, a "not the leader"
naming it is taken as "an election is under way" (the others still name a dead or frozen
leader until their election timeout, 150-300 ms), and the back-off after such a failure stays
under ``ELECTION_POLL_MAX``. Without it a writer kept coming back to a killed leader, through
the rotation and the others' hints, each time after a longer back-off (up to ``BACKOFF_MAX``):
stalls of 1-2 s where the election took 0.3 s. Short, so that a leader that was merely slow
is asked again soon (any answer from a member clears it at once)."""


MIN_ANSWER_SAMPLES = 8
"""Answers of a method heard before its answer time is trusted (until then an attempt waits
the whole ``attempt_timeout``): a method called rarely, or slow by nature (a ``mkdir -p`` that
spans shards), is not cut short on the strength of a few fast answers."""


class AnswerTimes:
    """How long members take to answer one method, smoothed as TCP smooths round trips
    (RFC 6298: SRTT and RTTVAR), and the wait for an answer it suggests: ``srtt + 4 *
    rttvar``, at least :data:`MIN_ATTEMPT_TIMEOUT`, at most the client's ``attempt_timeout``
    (all of it before :data:`MIN_ANSWER_SAMPLES` answers).

    Why: a frozen leader (SIGSTOP, a stalled disk, a VM paused) keeps its connections open and
    silent, so the only sign is time. Waiting the whole ``attempt_timeout`` (2 s) before trying
    another member made such a pause a 2 s stall of every writer, while the other members had
    elected a new leader after ~0.3 s. With this, a request gives up on a member after a few
    times its usual answer time and retries elsewhere (writes keep their session and seq, so a
    retry is applied at most once); each further timeout of the same request doubles its wait,
    so a request that is merely slow still gets the full ``attempt_timeout`` in the end."""

    __slots__ = ("srtt", "rttvar", "samples")

    def __init__(self) -> None:
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.samples = 0

    def sample(self, seconds: float) -> None:
        self.samples += 1
        if self.srtt is None:
            self.srtt, self.rttvar = seconds, seconds / 2
            return
        self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - seconds)
        self.srtt = 0.875 * self.srtt + 0.125 * seconds

    def wait(self, ceiling: float) -> float:
        if self.srtt is None or self.samples < MIN_ANSWER_SAMPLES:
            return ceiling
        return min(ceiling, max(MIN_ATTEMPT_TIMEOUT, self.srtt + 4 * self.rttvar))


# -- actions a plan yields ----------------------------------------------------------------------
@fast_init
@dataclass(frozen=True, slots=True)
class Call:
    """Invoke ``service.method(request)`` on ``address``; the result sent back is the reply
    or the ``grpc.RpcError``."""

    address: str
    service: str
    method: str
    request: Any
    timeout: float


def log_call(call: Call, result: Any) -> None:
    """One DEBUG line per call on ``keelfs.client.calls``: method, address and outcome (the
    request id follows as on every line under one, ``keelfs.runtime.requests``)."""
    if _calls_log.isEnabledFor(logging.DEBUG):
        code = result.code().name if isinstance(result, grpc.RpcError) else "OK"
        _calls_log.debug(
            "%s/%s at %s: %s",
            call.service,
            call.method,
            call.address,
            code,
            extra={"request_id": REQUEST_ID.get()},
        )


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class WaitSession:
    """Wait (at most ``timeout``) for a session of ``pool`` to be returned (``pin``: the
    one this request must have, if any)."""

    pool: SessionPool
    timeout: float
    pin: int = 0


Action = Call | Sleep | WaitSession
Plan = Generator[Action, Any, Any]


# -- what a request is ----------------------------------------------------------------------------
@fast_init
@dataclass(frozen=True, slots=True)
class Route:
    """Where a request goes: ``entry`` (the shard of the path's parent directory), ``dir``
    (the shard of the directory itself), ``shard`` (by id) or ``config``."""

    kind: str
    key: str = ""


CONFIG_ROUTE = Route("config")


@fast_init
@dataclass(frozen=True, slots=True)
class Op:
    """One request of the client library (a plan runs it: ``Core.plan``). Built for every
    request, so its ``__init__`` is ``fast_init``'s."""

    service: str
    method: str
    route: Route
    build: Callable[[pb.RequestHeader], Any]
    write: bool = False
    """Proposes a command: leader only, and its outcome may be unknown after a failure."""
    session: bool = False
    """Carries a client session and seq (exactly-once)."""
    pin_session: int = 0
    """Use this session id if the pool has it (the holder of a writer lease)."""
    any_member: bool = False
    """A read any member answers at once (``stale_ok``): spread over the group's members,
    followers included, instead of sent to the leader."""
    fresh: bool = False
    """With ``any_member``: a linearizable read. It goes to the client's member like a
    ``stale_ok`` one (a follower answers after a ReadIndex barrier, a round trip to the
    leader), or to the leader, which answers from its lease, if the client does not spread
    fresh reads (``Core.spread_reads``)."""
    replayable: bool = True
    """After an unknown outcome and a move of its path, the session's own shard is asked
    first (a *replay*, see the module doc). Not for commands the server builds anew on each
    attempt (a new block id, the next generation stamp): no reply cache could match them.
    Those need the writer's lease, which does not move with the file, so the new shard
    refuses them (``LEASE_CONFLICT``): they are not applied twice either."""
    attempt_timeout: float | None = None
    """One attempt's limit when not the client's: an RPC that waits on the server (a new
    member catching up) needs longer than a request."""


def reply_info(reply: Any) -> pb.ReplyInfo | None:
    if isinstance(reply, pb.FileInfoReply):
        return reply.reply
    info = getattr(reply, "info", None)
    return info if isinstance(info, pb.ReplyInfo) else None


# -- sessions -------------------------------------------------------------------------------------
@dataclass(eq=False)
class Session:
    session_id: int
    group: str
    ttl_ms: int
    last_used: float
    """When the session was last returned to its pool or kept alive (the core's clock)."""
    seq: int = 0

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq


class SessionPool:
    """The sessions of one group. Thread-safe; ``cond`` is notified when one is returned (the
    blocking client's threads wait on it), and so is one waker of ``notify_when_free`` (the
    asyncio client's tasks). ``clock`` (seconds, monotonic) tells how long a session has been
    idle."""

    def __init__(
        self, group: str, max_sessions: int, clock: Callable[[], float] | None = None
    ) -> None:
        self.group = group
        self.max_sessions = max_sessions
        self.clock = clock or monotonic
        self.cond = threading.Condition()
        self._idle: list[Session] = []
        self._all: dict[int, Session] = {}
        self._busy: set[int] = set()
        self._growing = 0
        self._wakers: list[tuple[int, Callable[[], bool]]] = []

    def notify_when_free(self, wake: Callable[[], bool], pin: int = 0) -> None:
        """Call ``wake`` once, when a session this waiter can take is returned (``pin``: the
        one it must have, if any) or a place to open one frees; with the pool's lock held, so
        it must only schedule its waiter. ``wake`` returns False if its waiter is gone (timed
        out, cancelled): another one is woken instead. Why not poll: with every session busy,
        each waiting request woke every few milliseconds to look (64 requests on 16 sessions
        spent a client's CPU on ~24,000 looks a second)."""
        with self.cond:
            self._wakers.append((pin, wake))

    def forget_waker(self, wake: Callable[[], bool]) -> None:
        """``wake``'s waiter stopped waiting (timed out, cancelled) before it was called."""
        with self.cond:
            self._wakers = [(p, w) for p, w in self._wakers if w is not wake]

    def _wake_one(self, freed: int = 0) -> None:
        """Wake one waiter that can use what was freed (session ``freed``, or room to open
        one): the first pinned to ``freed``, else the first not pinned to a session still
        busy. A writer's calls are pinned to its session (its lease): woken by another
        session's return it could not use it, and the wake would be lost to the others."""
        while True:
            pick = None
            for i, (pin, _) in enumerate(self._wakers):
                if freed and pin == freed:
                    pick = i
                    break
                if pick is None and (not pin or pin not in self._busy):
                    pick = i
                    if not freed:
                        break
            if pick is None:
                return
            _, wake = self._wakers.pop(pick)
            if wake():
                return

    def take(self, pin: int = 0) -> Session | None | bool:
        """An idle session (``pin``'s if it is here), None if the caller should register a new
        one (it then must call ``add`` or ``abandon_growth``), False if it must wait."""
        with self.cond:
            now = self.clock()
            for s in list(self._idle):
                if now - s.last_used > s.ttl_ms / 2000:
                    self._idle.remove(s)  # may have expired on the server: let it
                    del self._all[s.session_id]
            if pin and pin in self._all:
                s = self._all[pin]
                if pin in self._busy:
                    return False
                self._idle.remove(s)
                self._busy.add(pin)
                return s
            if self._idle:
                s = self._idle.pop()
                self._busy.add(s.session_id)
                return s
            if len(self._all) + self._growing < self.max_sessions:
                self._growing += 1
                return None
            return False

    def add(self, session_id: int, ttl_ms: int) -> Session:
        with self.cond:
            self._growing -= 1
            s = Session(session_id, self.group, ttl_ms or 60_000, self.clock())
            self._all[session_id] = s
            self._busy.add(session_id)
            return s

    def abandon_growth(self) -> None:
        with self.cond:
            self._growing -= 1
            self.cond.notify()
            self._wake_one()

    def release(self, s: Session) -> None:
        with self.cond:
            if s.session_id in self._busy:
                self._busy.discard(s.session_id)
                s.last_used = self.clock()
                if s.session_id in self._all:
                    self._idle.append(s)
            self.cond.notify()
            self._wake_one(s.session_id)

    def discard(self, s: Session) -> None:
        with self.cond:
            self._busy.discard(s.session_id)
            self._all.pop(s.session_id, None)
            if s in self._idle:
                self._idle.remove(s)
            self.cond.notify()
            self._wake_one()

    def kept_alive(self, s: Session) -> None:
        """``s`` was just kept alive on the server: its idle time starts again."""
        with self.cond:
            s.last_used = self.clock()

    def idle(self) -> list[Session]:
        with self.cond:
            return list(self._idle)

    def __len__(self) -> int:
        with self.cond:
            return len(self._all)


# -- one request's attempts ---------------------------------------------------------------------
class _Attempt:
    __slots__ = ("deadline", "unknown", "last_error", "hinted", "_b", "_clock", "_rng")

    def __init__(self, deadline: float, clock: Callable[[], float], rng: Randomness) -> None:
        self._clock = clock
        self._rng = rng
        self.deadline = clock() + deadline
        self.unknown = False
        self.last_error = "no attempt made"
        self.hinted = False
        self._b = BACKOFF_INITIAL

    def remaining(self) -> float:
        return self.deadline - self._clock()

    def backoff(self, cap: float = BACKOFF_MAX) -> Sleep:
        b = min(self._b, cap) * self._rng.uniform(0.5, 1.0)
        self._b = min(self._b * 2, BACKOFF_MAX)
        return Sleep(max(0.0, min(b, self.remaining())))

    def give_up(self) -> Unavailable:
        if self.unknown:
            return OutcomeUnknown(
                "outcome unknown", message=f"deadline passed; last error: {self.last_error}"
            )
        return Unavailable(f"deadline passed; last error: {self.last_error}")


# -- the shared state -----------------------------------------------------------------------------
class Core:
    """Routing caches, session pools and the plans (see the module doc). Thread-safe.

    Time and chance come from the caller: ``clock`` (seconds, monotonic) measures deadlines
    and sessions' idle time, ``rng`` draws back-off jitter and the member tried first, so that
    a test drives every decision with a fake clock and a seed, without waiting."""

    def __init__(
        self,
        config_servers: Iterable[str],
        *,
        deadline: float,
        attempt_timeout: float,
        max_sessions: int,
        clock: Callable[[], float] | None = None,
        rng: Randomness | None = None,
        tls: TlsSettings | None = None,
        spread_reads: bool = True,
    ) -> None:
        seeds = [a.strip() for a in config_servers if a and a.strip()]
        if not seeds:
            raise InvalidArgument("need at least one config server address", "config_servers")
        if max_sessions < 1:
            raise InvalidArgument("max_sessions must be at least 1", "max_sessions")
        self.deadline = deadline
        self.attempt_timeout = attempt_timeout
        self.max_sessions = max_sessions
        self.tls = tls
        """The TLS material every channel of the clients sharing this core uses (None:
        plain gRPC)."""
        self.spread_reads = spread_reads
        """Fresh (linearizable) reads go to this client's member like ``stale_ok`` ones
        (``_spread``); False: to the leader. The trade: a follower answers after a ReadIndex
        round trip to the leader, so each read waits longer and costs the shard more CPU in
        all (one client, 4 KiB files: 2,485-2,940 reads/s from a follower against
        3,147-3,608 from the leader, 380-455 against 345-360 us of CPU per read), while it
        costs the leader about a third of serving it: a shard read by many clients at once
        serves more (``keelfs bench meta``'s four clients: linearizable stats/s +13-35 %
        when spread)."""
        self.clock = clock or monotonic
        self._rng: Randomness = rng if rng is not None else random
        self._lock = threading.Lock()
        self._config: list[str] = list(dict.fromkeys(seeds))
        self._map: ShardMap | None = None
        self._nodes: dict[int, str] = {}
        self._leaders: dict[str, str] = {}
        self._turn: dict[str, int] = {}
        self._readers: dict[str, str] = {}
        """Per group, the member reads go to (see ``_spread``; fresh reads pass a ReadIndex
        barrier there)."""
        self._suspects: dict[tuple[str, str], float] = {}
        """(group, address) -> until when (``clock``) that member is passed over for that
        group (``SUSPECT_SECONDS``; per group: a node slow for one shard, waiting on a lock
        there, is not passed over for the others it leads)."""
        self._member_lists: dict[str, tuple[ShardMap, list[str]]] = {}
        """A shard's members' addresses in the map they were read from (``_members``: every
        request of the group asks for them); callers must not change the list."""
        self._pools: dict[tuple[str, str], SessionPool] = {}
        self.writers: dict[str, tuple[str, int]] = {}
        """Files this client created and has not completed: path -> (group, session id)."""
        self.stats = {"calls": 0, "retries": 0, "unknown_outcomes": 0, "redirects": 0}
        self.answer_times: dict[str, AnswerTimes] = {}
        """Per method name, how long members take to answer it (see ``_wait``)."""

    # -- caches ------------------------------------------------------------------------------
    @property
    def shard_map(self) -> ShardMap | None:
        with self._lock:
            return self._map

    @property
    def nodes(self) -> dict[int, str]:
        with self._lock:
            return dict(self._nodes)

    @property
    def config_addresses(self) -> list[str]:
        with self._lock:
            return list(self._config)

    def leader(self, group: str) -> str | None:
        with self._lock:
            return self._leaders.get(group)

    def pool(self, group: str) -> SessionPool:
        """The sessions of ``group`` for whom this call acts: a master's internal client
        acting for a user (``ACTING_FOR``) has pools apart for each, since a session may be
        used only by the user that registered it (``keelfs.meta.sessions.check_owner``)."""
        acting = ACTING_FOR.get()
        key = (group, "" if acting is None else json.dumps(acting, sort_keys=True))
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                pool = self._pools[key] = SessionPool(group, self.max_sessions, self.clock)
            return pool

    def pools(self) -> list[SessionPool]:
        with self._lock:
            return list(self._pools.values())

    def install(self, reply: pb.FetchShardMapReply) -> None:
        if reply.unchanged:
            return
        new = shard_map_from_pb(reply.map)
        with self._lock:
            if self._map is None or new.version >= self._map.version:
                self._map = new
            self._nodes = {int(k): v for k, v in reply.nodes.items()}
            for node_id in reply.config_members:
                address = self._nodes.get(int(node_id))
                if address and address not in self._config:
                    self._config.append(address)

    def _group_of(self, route: Route) -> str:
        if route.kind == "config":
            return CONFIG_GROUP
        if route.kind == "shard":
            return route.key
        with self._lock:
            m = self._map
        assert m is not None
        if route.kind == "dir":
            return m.shard_for_directory(route.key)
        return m.shard_for_path(route.key)

    def _members(self, group: str) -> list[str]:
        with self._lock:
            if group == CONFIG_GROUP:
                return list(self._config)
            m = self._map
            if m is None or group not in m.shards:
                return []
            known = self._member_lists.get(group)
            if known is None or known[0] is not m:  # (a new map is a new object)
                known = self._member_lists[group] = (
                    m,
                    [a for _, a in sorted(m.shards[group].items())],
                )
            return known[1]

    def _target(self, group: str) -> str | None:
        leader = self.leader(group)
        if leader is not None:
            return leader
        members = self._members(group)
        if not members:
            return None
        with self._lock:
            start = self._turn.get(group, self._rng.randrange(len(members)))
            for turn in range(start, start + len(members)):  # the next one not suspected
                if not self._suspected(group, members[turn % len(members)]):
                    break
            else:
                turn = start  # all suspected: each in turn, as if none were
            self._turn[group] = turn + 1
        return members[turn % len(members)]

    def _spread(self, group: str) -> str | None:
        """The member of ``group`` this client reads from: one picked at random and kept
        until it fails (or, for a fresh read, says it knows no leader), so that clients
        spread over the members, leader or not, while each client's reads still travel
        together (batching)."""
        members = self._members(group)
        if not members:
            return self.leader(group)
        with self._lock:
            chosen = self._readers.get(group)
            if chosen not in members:
                alive = [a for a in members if not self._suspected(group, a)]
                chosen = self._readers[group] = self._rng.choice(alive or members)
        return chosen

    def _forget(self, group: str, address: str) -> None:
        with self._lock:
            if self._leaders.get(group) == address:
                del self._leaders[group]
            if self._readers.get(group) == address:
                del self._readers[group]

    def _forget_reader(self, group: str, address: str) -> None:
        with self._lock:
            if self._readers.get(group) == address:
                del self._readers[group]

    def _suspected(self, group: str, address: str) -> bool:
        """Whether ``address`` is passed over for ``group`` now (``SUSPECT_SECONDS``); the
        lock is held."""
        until = self._suspects.get((group, address))
        if until is None:
            return False
        if until > self.clock():
            return True
        del self._suspects[group, address]
        return False

    def _suspect(self, group: str, address: str) -> None:
        with self._lock:
            self._suspects[group, address] = self.clock() + SUSPECT_SECONDS

    def _heard_from(self, group: str, address: str) -> None:
        if self._suspects:  # read without the lock: only a hint (most calls skip the lock)
            with self._lock:
                self._suspects.pop((group, address), None)

    def _others_unsuspected(self, group: str, address: str) -> bool:
        """Whether ``group`` has a member besides ``address`` not passed over now."""
        members = self._members(group)
        with self._lock:
            return any(a != address and not self._suspected(group, a) for a in members)

    def is_suspected(self, group: str, address: str) -> bool:
        with self._lock:
            return self._suspected(group, address)

    def _learn_leader(self, group: str, address: str | None) -> None:
        with self._lock:
            if address:
                self._leaders[group] = address
            else:
                self._leaders.pop(group, None)

    def _wait(self, op: Op, patience: float) -> float:
        """How long one attempt of ``op`` waits for an answer: the op's own timeout if it has
        one, else what the members' answer times suggest (:class:`AnswerTimes`) times the
        request's ``patience`` (doubled by each timeout), at most ``attempt_timeout``."""
        if op.attempt_timeout is not None:
            return op.attempt_timeout
        with self._lock:
            times = self.answer_times.get(op.method)
            suggested = self.attempt_timeout if times is None else times.wait(self.attempt_timeout)
        return min(self.attempt_timeout, suggested * patience)

    def _answered(self, method: str, seconds: float) -> None:
        with self._lock:
            times = self.answer_times.get(method)
            if times is None:
                times = self.answer_times[method] = AnswerTimes()
            times.sample(seconds)

    def _count(self, key: str) -> None:
        with self._lock:
            self.stats[key] += 1

    # -- plans -------------------------------------------------------------------------------
    def _attempt(self, deadline: float | None) -> _Attempt:
        return _Attempt(self.deadline if deadline is None else deadline, self.clock, self._rng)

    def plan(self, op: Op, deadline: float | None = None) -> Plan:
        """Run ``op`` to its reply (the plan's return value) or raise a ``KeelError``."""
        attempt = self._attempt(deadline)
        session: Session | None = None
        pool: SessionPool | None = None
        seq = 0
        session_unknown = False
        patience = 1.0
        try:
            while True:
                if attempt.remaining() <= 0:
                    raise attempt.give_up()
                if op.route.kind in ("entry", "dir") and self.shard_map is None:
                    yield from self._refresh(attempt)
                try:
                    group = self._group_of(op.route)
                except Unavailable as exc:  # a map without shards
                    attempt.last_error = str(exc)
                    yield attempt.backoff()
                    yield from self._refresh(attempt)
                    continue
                replay = (
                    op.replayable
                    and session_unknown
                    and session is not None
                    and session.group != group
                )
                if replay:
                    assert session is not None
                    group = self._replay_group(session, op.method)
                if op.session and (session is None or session.group != group):
                    if session is not None and pool is not None:
                        pool.release(session)
                    pool = self.pool(group)
                    session = yield from self._acquire(pool, op.pin_session, attempt)
                    seq, session_unknown = session.next_seq(), False
                spread = op.any_member and (self.spread_reads or not op.fresh)
                address = self._spread(group) if spread else self._target(group)
                if address is None:
                    attempt.last_error = f"no known member of {group}"
                    yield attempt.backoff()
                    yield from self._refresh(attempt)
                    continue
                m = self.shard_map
                header = pb.RequestHeader(
                    session_id=session_id_to_pb(session.session_id if session is not None else 0),
                    seq=seq if session is not None else 0,
                    map_version=m.version if m is not None else 0,
                    session_shard=group if replay else "",
                )
                self._count("calls")
                timeout = max(0.01, min(self._wait(op, patience), attempt.remaining()))
                sent = self.clock()
                result = yield Call(address, op.service, op.method, op.build(header), timeout)
                if not isinstance(result, grpc.RpcError):
                    self._answered(op.method, self.clock() - sent)
                    self._heard_from(group, address)
                    info = reply_info(result)
                    if info is not None and info.leader:
                        self._learn_leader(group, address)
                    return result
                self._count("retries")
                err = error_from_rpc(result)
                if err is None:
                    failure = transport_failure(result, address, op.method)
                    if failure.error is not None:
                        raise failure.error
                    if result.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                        patience *= 2  # this request waits longer on its next attempt
                    self._forget(group, address)
                    attempt.last_error = f"{address}: {failure.code.name}: {failure.message}"
                    if op.write and not failure.never_sent:
                        attempt.unknown = session_unknown = True
                        self._count("unknown_outcomes")
                    if result.code() in _GONE_SILENT:
                        # dead or frozen, not busy: another member may answer now (an
                        # election is likely under way), so ask it soon
                        self._suspect(group, address)
                        if self._others_unsuspected(group, address):
                            yield attempt.backoff(cap=ELECTION_POLL_MAX)
                            continue
                    yield attempt.backoff()
                    continue
                self._answered(op.method, self.clock() - sent)  # a refusal is an answer too
                self._heard_from(group, address)
                attempt.last_error = f"{address}: {err.code}: {err.message}"
                if isinstance(err, NotLeader):
                    hint = err.leader_address if err.leader_address != address else None
                    if hint and self.is_suspected(group, hint):
                        hint = None  # a leader that just failed us: an election is likely
                    self._learn_leader(group, hint)
                    if op.any_member:  # a reader that cannot reach a leader: read elsewhere
                        self._forget_reader(group, address)
                    if hint and not attempt.hinted:
                        attempt.hinted = True
                        continue
                    attempt.hinted = False
                    yield attempt.backoff(cap=BACKOFF_MAX if hint else ELECTION_POLL_MAX)
                elif replay and isinstance(err, Redirect) and err.shard_id != group:
                    # the session's own shard never applied it, and now never will: from
                    # here on a new request, sent where the map says in a session there
                    self._count("redirects")
                    attempt.unknown = session_unknown = False
                    if session is not None and pool is not None:
                        pool.release(session)
                    session = None
                elif replay and isinstance(err, NotFound) and err.details.get("kind") == "shard":
                    raise self._shard_gone(group, op.method)
                elif isinstance(err, Redirect):
                    self._count("redirects")
                    self._forget(group, address)
                    if session is not None and not session_unknown:
                        # a definite "not applied", which the shard may have kept as this
                        # seq's reply: the next attempt (whose command a master may build
                        # differently under a newer map) is a new request with its own seq
                        seq = session.next_seq()
                    current = m.version if m is not None else 0
                    if err.map_version >= current:
                        yield from self._refresh(attempt, at_least=err.map_version)
                    if err.map_version <= current:
                        yield attempt.backoff()
                elif isinstance(err, Unavailable):  # OutcomeUnknown too
                    self._forget(group, address)
                    if op.write and isinstance(err, OutcomeUnknown):
                        attempt.unknown = session_unknown = True
                        self._count("unknown_outcomes")
                    lost_lead = err.details.get("reason") in LEADERSHIP_REASONS
                    yield attempt.backoff(cap=ELECTION_POLL_MAX if lost_lead else BACKOFF_MAX)
                elif isinstance(err, SessionExpired) and session is not None and pool is not None:
                    pool.discard(session)
                    session = None
                    if session_unknown:
                        raise OutcomeUnknown(
                            "session expired",
                            message=f"the session expired after an attempt of unknown "
                            f"outcome; the {op.method} may or may not have been applied",
                        )
                else:
                    raise err
        finally:
            if session is not None and pool is not None:
                pool.release(session)

    def _replay_group(self, session: Session, method: str) -> str:
        """Where a write of unknown outcome goes once the map places its path on another
        shard: back to its session's shard, which alone can tell whether it applied (the
        new owner has no record of this session); ``OutcomeUnknown`` if that shard is gone."""
        with self._lock:
            m = self._map
        if m is None or session.group not in m.shards:
            raise self._shard_gone(session.group, method)
        return session.group

    @staticmethod
    def _shard_gone(group: str, method: str) -> OutcomeUnknown:
        return OutcomeUnknown(
            "shard removed",
            message=f"the {method} may or may not have been applied on shard {group}, which "
            "is no longer in the shard map",
        )

    def _acquire(
        self, pool: SessionPool, pin: int, attempt: _Attempt
    ) -> Generator[Action, Any, Session]:
        while True:
            got = pool.take(pin)
            if isinstance(got, Session):
                return got
            if got is None:
                try:
                    reply = yield from self.plan(
                        register_session_op(pool.group), attempt.remaining()
                    )
                except BaseException:
                    pool.abandon_growth()
                    raise
                return pool.add(session_id_from_pb(reply.session_id), int(reply.ttl_ms))
            if attempt.remaining() <= 0:
                raise Unavailable(f"no free session for {pool.group} within the deadline")
            yield WaitSession(pool, min(0.1, attempt.remaining()), pin)

    def _refresh(self, attempt: _Attempt, at_least: int = 0) -> Plan:
        """Fetch the ShardMap (linearizable) from any config server, until its version is at
        least ``at_least``."""
        while True:
            op = fetch_map_op(None, stale_ok=False)
            reply = yield from self._config_read(op, attempt)
            self.install(reply)
            m = self.shard_map
            if m is not None and m.version >= at_least:
                return
            attempt.last_error = f"config group has map version {m and m.version} < {at_least}"
            yield attempt.backoff()

    def _config_read(self, op: Op, attempt: _Attempt) -> Plan:
        """One read from any config server, retried over them within ``attempt``."""
        while True:
            if attempt.remaining() <= 0:
                raise attempt.give_up()
            address = self._target(CONFIG_GROUP)
            assert address is not None
            timeout = max(0.01, min(self.attempt_timeout, attempt.remaining()))
            request = op.build(pb.RequestHeader())
            result = yield Call(address, op.service, op.method, request, timeout)
            if not isinstance(result, grpc.RpcError):
                return result
            err = error_from_rpc(result)
            if err is None:
                failure = transport_failure(result, address, op.method)
                if failure.error is not None:
                    raise failure.error
                attempt.last_error = f"{address}: {failure.code.name}: {failure.message}"
            elif isinstance(err, OperationError) or not err.retryable:
                raise err
            else:
                attempt.last_error = f"{address}: {err.code}: {err.message}"
            self._forget(CONFIG_GROUP, address)
            yield attempt.backoff()

    def fetch_map_plan(
        self, since_version: int | None, stale_ok: bool, deadline: float | None
    ) -> Plan:
        attempt = self._attempt(deadline)
        reply = yield from self._config_read(fetch_map_op(since_version, stale_ok), attempt)
        self.install(reply)
        return reply

    def refresh_plan(self, deadline: float | None) -> Plan:
        attempt = self._attempt(deadline)
        yield from self._refresh(attempt)
        return self.shard_map


# -- op builders (shared by both clients) ----------------------------------------------------------
def register_session_op(group: str) -> Op:
    service = "Config" if group == CONFIG_GROUP else "Namespace"
    route = CONFIG_ROUTE if group == CONFIG_GROUP else Route("shard", group)
    return Op(
        service, "RegisterSession", route, lambda h: pb.RegisterSessionRequest(group=group), True
    )


def fetch_map_op(since_version: int | None, stale_ok: bool) -> Op:
    def build(h: pb.RequestHeader) -> pb.FetchShardMapRequest:
        req = pb.FetchShardMapRequest(stale_ok=stale_ok)
        if since_version is not None:
            req.since_version = since_version
        return req

    return Op("Config", "FetchShardMap", CONFIG_ROUTE, build)
