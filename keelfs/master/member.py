"""A node's member of one Raft group, as every service of the node sees it: the group, its
state machine, the log time it proposes with (``LogClock``) and, for a shard, the lock that
orders directory-structure proposals (``StructureLock``).

Kept apart from ``keelfs.master.node`` so that the services (which the node assembles) can
use it without importing the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from keelfs.runtime.group import RaftGroup

__all__ = ["LOG_TIME_SLEW", "LogClock", "Member", "StructureLock", "now_ms"]


def now_ms() -> int:
    """This node's wall clock in milliseconds (what ``LogClock`` slews log time towards)."""
    return time.time_ns() // 1_000_000


def _monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


LOG_TIME_SLEW = 0.1
"""How much faster than real time log time may run while a leader's wall clock pulls it
forward (``LogClock``): 10 %, well inside the renewal periods (a third of a lease's TTL, half a
session's)."""


class LogClock:
    """The time this node stamps on the entries it proposes to one group (ms).

    Log time is the state machine's clock: the largest time any applied entry carried
    (``MetaStateMachine``: a max, the same on every replica). Leases and sessions expire by it.
    Were entries stamped with the leader's wall clock, one node whose clock runs an hour ahead
    would, the first time it led, push log time an hour forward and expire every lease and
    session at once; nothing in ``apply`` can tell that hour from an hour of silence. So the
    leader reckons log time from the log itself and measures only durations itself:

    - every entry applied here is observed (``observe``) with the monotonic instant it was
      applied: ``time - instant`` is an offset, and the largest seen gives log time now as
      ``monotonic + offset``, real time elapsed since as this node measured it. A follower
      that takes over after an hour of silence carries log time an hour forward, so leases
      and sessions still expire in real time when a leader dies;
    - the wall clock only pulls it forward gently: while the wall clock is ahead, the offset
      grows by at most ``LOG_TIME_SLEW`` of the monotonic time this node has been proposing
      in its current term, so log time runs at most 10 % fast and never jumps, however far
      off the wall clock is. That keeps log time near calendar time (file times) after the
      whole cluster was down, when nothing observed can say for how long;
    - a group whose log never carried a time (clock 0: new, no lease or session yet) starts
      at the wall clock. A member that has observed no time but has committed entries left
      to apply (an in-memory state machine rebuilding from the log after a restart) stamps
      0 until it has: apply keeps the log's clock for such an entry.

    A wall clock behind log time changes nothing (log time never goes back). Local state of
    this node, neither replicated nor read by ``apply``. ``wall_ms``/``monotonic_ms`` are the
    clocks (defaults: ``now_ms``, ``time.monotonic_ns``), replaceable in tests."""

    def __init__(
        self,
        wall_ms: Callable[[], int] | None = None,
        monotonic_ms: Callable[[], int] | None = None,
    ) -> None:
        self._wall = wall_ms or (lambda: now_ms())  # (looked up at each call)
        self._monotonic = monotonic_ms or _monotonic_ms
        self._offset: int | None = None
        """Log time minus monotonic time, the largest known (None: the log has no time)."""
        self._term = -1
        self._slew_from = 0
        """Monotonic ms of this term's previous proposal: the slew is earned from there."""
        self._slew_carry = 0.0
        """Slew earned but under a millisecond (proposals a few ms apart still add up)."""

    def observe(self, log_ms: int) -> None:
        """An entry carrying log time ``log_ms`` was applied here just now."""
        if log_ms <= 0:
            return
        offset = log_ms - self._monotonic()
        if self._offset is None or offset > self._offset:
            self._offset = offset

    def now(self, term: int, caught_up: bool = True) -> int:
        """The log time to propose an entry with, leading at ``term``; ``caught_up``: every
        committed entry known here is applied."""
        mono, wall = self._monotonic(), self._wall()
        if term != self._term:  # no slew earned while another node led
            self._term, self._slew_from, self._slew_carry = term, mono, 0.0
        if self._offset is None:
            if not caught_up:
                return 0
            self._offset = wall - mono
        estimate = mono + self._offset
        if wall > estimate:
            earned = self._slew_carry + (mono - self._slew_from) * LOG_TIME_SLEW
            step = min(wall - estimate, int(earned))
            self._slew_carry = min(earned - step, 1.0)  # never saved up for a later jump
            self._offset += step
            estimate += step
        else:
            self._slew_carry = 0.0
        self._slew_from = mono
        return estimate


class StructureLock:
    """Orders directory-structure proposals on one shard leader: mkdirs hold it shared (they
    run concurrently), a directory rename holds it exclusively from its placement check to its
    apply, so no directory appears in its subtree between the two (file renames take no part).
    Waiting renames block new mkdirs."""

    def __init__(self) -> None:
        self._cond = asyncio.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextlib.asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        async with self._cond:
            await self._cond.wait_for(lambda: not self._writer and not self._writers_waiting)
            self._readers += 1
        try:
            yield
        finally:
            async with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        async with self._cond:
            self._writers_waiting += 1
            try:
                await self._cond.wait_for(lambda: not self._writer and not self._readers)
            finally:
                self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            async with self._cond:
                self._writer = False
                self._cond.notify_all()


@dataclass
class Member:
    """This node's member of one group: the Raft group, its state machine, and (for a shard)
    the lock that orders directory-structure proposals (see ``namespace_service``)."""

    group_id: str
    group: RaftGroup
    sm: Any  # ShardStateMachine | ConfigStateMachine
    structure: StructureLock = field(default_factory=StructureLock)
    clock: LogClock = field(default_factory=LogClock)
    """The log time this member proposes with, fed by what its state machine applies."""

    def __post_init__(self) -> None:
        if hasattr(self.sm, "clock_listener"):
            self.sm.clock_listener = self.clock.observe
            self.clock.observe(self.sm.clock_ms())

    def log_time(self) -> int:
        """The log time to stamp a proposal with now (see ``LogClock``)."""
        g = self.group
        return self.clock.now(g.node.raft.term, g.applied_index() >= g.commit_index())
