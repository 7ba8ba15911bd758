"""ReadIndex bookkeeping on the leader (Raft dissertation §6.4).

A read that arrives gets the leader's commit index and a sequence number ``seq``. Every
heartbeat carries the latest ``seq``; a heartbeat sent with ``seq = s`` was sent *after* every
read numbered ``<= s`` arrived, so a follower's answer to it proves the leader was still leader
after those reads arrived. Answers to older heartbeats prove nothing about newer reads, which is
why acknowledgements are matched by sequence number and never counted in bulk.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass, field

from keelfs.raft.quorum import has_quorum


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
    acks: set[int] = field(default_factory=set)


class ReadOnly:
    def __init__(self) -> None:
        self._seq = 0
        self._pending: OrderedDict[int, PendingRead] = OrderedDict()

    def last_seq(self) -> int:
        return self._seq

    def pending_count(self) -> int:
        return len(self._pending)

    def add(self, index: int, requester: int, context: bytes, self_id: int) -> int:
        self._seq += 1
        self._pending[self._seq] = PendingRead(index, requester, context, {self_id})
        return self._seq

    def ack(self, frm: int, seq: int, voters: Collection[int], self_id: int) -> list[PendingRead]:
        """Record that ``frm`` answered heartbeat ``seq``; return the reads now confirmed."""
        ready_upto = 0
        for s, pr in self._pending.items():
            if s > seq:
                break
            pr.acks.add(frm)
            if has_quorum(voters, pr.acks):
                ready_upto = s
        out: list[PendingRead] = []
        while self._pending:
            s = next(iter(self._pending))
            if s > ready_upto:
                break
            out.append(self._pending.pop(s))
        return out
