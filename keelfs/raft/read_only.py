"""ReadIndex bookkeeping on the leader (Raft dissertation §6.4), and the leader lease.

Every heartbeat broadcast is a numbered **round**. A read that arrives is tagged with the next
round number and triggers a broadcast, so a heartbeat of round ``r`` was sent *after* every
read tagged ``<= r`` arrived, and a follower's answer to it proves the leader was still leader
after those reads arrived. Answers to older rounds prove nothing about newer reads, which is why
acknowledgements are matched by round and never counted in bulk.

The same rounds give a sound lease: a follower that answered round ``r`` heard from the leader
no earlier than when ``r`` was sent, and will not vote for another candidate for an election
timeout after hearing it. So the lease holds while a majority has answered rounds sent less
than an election timeout ago (measured on the leader's own tick count).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from keelfs.raft.quorum import has_quorum, majority

ROUND_HISTORY = 256
"""How many recent rounds remember when they were sent (older acks cannot extend a lease)."""


@dataclass(frozen=True, slots=True)
class ReadState:
    """A read may be served once the state machine has applied ``index``."""

    index: int
    context: bytes


@dataclass(slots=True)
class PendingRead:
    index: int
    requester: int
    context: bytes
    round: int
    """The first heartbeat round that can confirm this read."""
    acks: set[int] = field(default_factory=set)


class ReadOnly:
    def __init__(self) -> None:
        self._round = 0
        self._sent_at: OrderedDict[int, int] = OrderedDict()
        self._pending: deque[PendingRead] = deque()

    def last_round(self) -> int:
        return self._round

    def next_round(self, now: int) -> int:
        """Number a new heartbeat broadcast sent at tick ``now``."""
        self._round += 1
        self._sent_at[self._round] = now
        if len(self._sent_at) > ROUND_HISTORY:
            self._sent_at.popitem(last=False)
        return self._round

    def forget_rounds_sent(self) -> None:
        """Answers to the rounds sent so far will no longer count towards a lease (they still
        confirm the reads they were sent for): the leader lost track of time since (a frozen
        or stalled process, a quiesced group), so when they were sent, in ticks, says nothing
        of how long ago that was. Forgetting the acks heard so far is not enough: an answer
        sent before the pause and read after it (a 1.5 s freeze, a new leader elected
        meanwhile, the answers queued in the socket) would make a lease of it again."""
        self._sent_at.clear()

    def pending_count(self) -> int:
        return len(self._pending)

    def add(self, index: int, requester: int, context: bytes, self_id: int) -> None:
        """Queue a read; the next round (which the caller must broadcast) can confirm it."""
        self._pending.append(PendingRead(index, requester, context, self._round + 1, {self_id}))

    def ack(self, frm: int, rnd: int, voters: Collection[int]) -> list[PendingRead]:
        """Record that ``frm`` answered round ``rnd``; return the reads now confirmed, in order.

        A confirmed read also confirms every read that arrived before it.
        """
        confirmed = 0
        for i, pr in enumerate(self._pending):
            if pr.round > rnd:
                break
            pr.acks.add(frm)
            if has_quorum(voters, pr.acks):
                confirmed = i + 1
        return [self._pending.popleft() for _ in range(confirmed)]

    def lease_valid(
        self,
        now: int,
        timeout: int,
        voters: Collection[int],
        self_id: int,
        acked_round: Mapping[int, int],
    ) -> bool:
        """Has a majority answered a round sent less than ``timeout`` ticks before ``now``?"""
        sent: list[int] = []
        for v in voters:
            if v == self_id:
                sent.append(now)
                continue
            t = self._sent_at.get(acked_round.get(v, 0))
            if t is not None:
                sent.append(t)
        if len(sent) < majority(len(voters)):
            return False
        sent.sort(reverse=True)
        return sent[majority(len(voters)) - 1] > now - timeout
