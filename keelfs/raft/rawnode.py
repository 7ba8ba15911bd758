"""``RawNode``: the core's public face. Feed it inputs; take a ``Ready``; do it; ``advance()``.

The loop around it (the asyncio runtime, the simulator) is::

    node.tick() / node.step(msg) / node.propose(data) / ...
    if node.has_ready():
        rd = node.ready()
        persist rd.hard_state, rd.entries, rd.snapshot_chunks, rd.snapshot   # durably
        send rd.messages                                                      # only after that
        apply rd.committed_entries; serve rd.read_states when applied
        node.advance(rd)

``RawNode`` is synchronous and not thread-safe. Inputs may be fed between ``ready()`` and
``advance()`` (while a write is in flight); they show up in the next ``Ready``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from keelfs.raft.core import Config, Raft, SnapshotChunk, StateType, Status
from keelfs.raft.errors import InvariantViolation
from keelfs.raft.messages import (
    ConfChange,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    SnapshotMeta,
)
from keelfs.raft.read_only import ReadState
from keelfs.raft.storage import LogStorage


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile facts worth telling the application about; never persisted."""

    lead: int
    state: StateType


@dataclass(slots=True)
class Ready:
    """One batch of work for the application. Field order is the order of duties."""

    hard_state: HardState | None = None
    """Persist (if not None) before sending ``messages``; write it in the same synced batch as
    ``entries`` (one fsync per Ready: group commit)."""
    entries: list[Entry] = field(default_factory=list)
    """Append to stable storage, replacing any stored entries from ``entries[0].index`` on,
    before sending ``messages``."""
    snapshot_chunks: list[SnapshotChunk] = field(default_factory=list)
    """Stage durably, in order, before sending ``messages`` (they acknowledge the chunks)."""
    snapshot: SnapshotMeta | None = None
    """A fully received snapshot: install the staged image as the current snapshot (dropping
    the log it covers) and restore the state machine from it, before sending ``messages`` and
    before applying ``committed_entries``."""
    messages: list[Message] = field(default_factory=list)
    """Send only after everything above is durable. Loss, duplication and reordering are fine."""
    committed_entries: list[Entry] = field(default_factory=list)
    """Apply in order (after persisting ``entries``: some may be in both lists). Entries with
    empty data are the leaders' no-ops; conf-change entries have already taken effect in the
    core and are shown here so the application can update addresses."""
    read_states: list[ReadState] = field(default_factory=list)
    """Serve each read once the state machine has applied ``index``."""
    soft_state: SoftState | None = None
    """Set when leader or role changed since the last Ready."""

    must_sync: bool = False
    """Whether persisting this Ready needs a synced write: new entries, or a new term or vote.
    A hard state that only moved the commit index may be written without sync (as etcd's
    MustSync): a commit index lost in a crash is learnt again from the leader."""


class RawNode:
    def __init__(self, config: Config, storage: LogStorage) -> None:
        self.raft = Raft(config, storage)
        self._prev_hs = self.raft.hard_state()
        self._prev_ss = SoftState(self.raft.lead, self.raft.state)
        self._outstanding: Ready | None = None

    # ------------------------------------------------------------------ inputs
    def tick(self) -> None:
        self.raft.tick()

    def step(self, m: Message) -> None:
        """A message from a peer. Local message types are refused here (use the methods), and
        so is anything claiming to come from this node: the core takes a message from its own
        id as a local request (a read or a transfer asked here), which may raise
        ``NotLeaderError`` for the caller; from the network it is forged, and dropped."""
        if m.type in (MessageType.HUP, MessageType.BEAT, MessageType.PROP) or m.frm == self.raft.id:
            self.raft.ignored += 1
            return
        self.raft.step(m)

    def campaign(self) -> None:
        self.raft.step(Message(MessageType.HUP, self.raft.id, self.raft.id))

    def propose(self, data: bytes) -> tuple[int, int]:
        """Append ``data`` if we lead; returns ``(index, term)`` it will commit at, if ever.

        Raises ``NotLeaderError`` (with a leader hint) or ``ProposalDropped``. The proposal is
        done only when an entry with this index *and term* is applied; the same index applied
        with another term means it was lost to a leader change.
        """
        return self.propose_batch([data])[0]

    def propose_batch(self, items: list[bytes]) -> list[tuple[int, int]]:
        """Many proposals in one append (and so in the same messages)."""
        return self._propose([Entry(0, 0, d) for d in items])

    def propose_conf_change(self, cc: ConfChange) -> tuple[int, int]:
        """Propose one membership change; raises ``ValueError`` for an invalid one."""
        return self._propose([Entry(0, 0, cc.encode(), EntryType.CONF_CHANGE)])[0]

    def _propose(self, ents: list[Entry]) -> list[tuple[int, int]]:
        r = self.raft
        r.step(Message(MessageType.PROP, r.id, r.id, entries=tuple(ents)))
        last = r.log.last_index()
        first = last - len(ents) + 1
        return [(first + i, r.term) for i in range(len(ents))]

    def read_index(self, context: bytes) -> None:
        """Ask for a linearizable read; a ``ReadState`` with ``context`` comes in a Ready."""
        r = self.raft
        r.step(Message(MessageType.READ_INDEX, r.id, r.id, context=context))

    def wake(self, leader_unreachable: bool = False) -> None:
        """Leave quiescence (see ``Config.quiesce_after_ticks``): call it when a client uses
        this member, or with ``leader_unreachable=True`` when the leader's node is lost."""
        self.raft.wake(leader_unreachable=leader_unreachable)

    def forget_lease(self) -> None:
        """The runtime lost track of time (its ticks fell behind the clock: a stalled or
        frozen process): the heartbeat answers heard so far no longer hold up a lease, and
        lease reads wait for a new round's answers (``ReadOnlyOption.LEASE_BASED``), not for
        late answers to a round sent before (``ReadOnly.forget_rounds_sent``)."""
        self.raft.acked_round = {}
        self.raft.read_only.forget_rounds_sent()

    def transfer_leader(self, target: int) -> None:
        r = self.raft
        r.step(Message(MessageType.TRANSFER_LEADER, r.id, r.id, index=target))

    # ------------------------------------------------------------------ outputs
    def has_ready(self) -> bool:
        r = self.raft
        return bool(
            r.msgs
            or r.read_states
            or r.snapshot_chunks
            or r.log.unstable.entries
            or r.log.unstable.snapshot is not None
            or r.log.has_next_committed()
            or r.hard_state() != self._prev_hs
            or SoftState(r.lead, r.state) != self._prev_ss
        )

    def ready(self) -> Ready:
        if self._outstanding is not None:
            raise InvariantViolation("ready() called again before advance()")
        r = self.raft
        rd = Ready(
            entries=r.log.unstable_entries(),
            snapshot_chunks=r.snapshot_chunks,
            snapshot=r.log.unstable.snapshot,
            messages=r.msgs,
            committed_entries=r.log.next_committed(),
            read_states=r.read_states,
        )
        r.snapshot_chunks, r.msgs, r.read_states = [], [], []
        hs = r.hard_state()
        if hs != self._prev_hs:
            rd.hard_state = hs
            rd.must_sync = hs.term != self._prev_hs.term or hs.vote != self._prev_hs.vote
            self._prev_hs = hs
        rd.must_sync = rd.must_sync or bool(rd.entries)
        ss = SoftState(r.lead, r.state)
        if ss != self._prev_ss:
            rd.soft_state = ss
            self._prev_ss = ss
        if rd.committed_entries:
            r.log.accept_applying(rd.committed_entries[-1].index)
        self._outstanding = rd
        return rd

    def advance(self, rd: Ready) -> None:
        """The application has done everything ``rd`` asked."""
        if rd is not self._outstanding:
            raise InvariantViolation("advance() with a Ready that is not outstanding")
        self._outstanding = None
        r = self.raft
        if rd.snapshot is not None:
            r.log.stable_snap_to(rd.snapshot.index)
        if rd.entries:
            last = rd.entries[-1]
            r.log.stable_to(last.index, last.term)
        if rd.committed_entries:
            r.log.applied_to(rd.committed_entries[-1].index)

    # ------------------------------------------------------------------ queries
    def status(self) -> Status:
        return self.raft.status()

    def conf_state_at(self, index: int) -> ConfState:
        """Membership as of ``index``: pass it with a snapshot taken at that index."""
        return self.raft.conf_state_at(index)

    @property
    def id(self) -> int:
        return self.raft.id
