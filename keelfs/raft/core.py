"""The Raft state machine: every input is ``step(message)`` or ``tick()``; it does no I/O.

Role-specific behaviour is dispatch by table (``_STEP`` and ``_TICK`` below), as in
etcd-io/raft: a follower, a (pre-)candidate and a leader each have their own step and tick
function, and ``_become_*`` swaps them. Outputs accumulate in ``msgs``, ``read_states``,
``snapshot_chunks`` and the log's unstable part; ``RawNode.ready()`` collects them.

Membership uses single-server changes (see docs/membership.md): a configuration takes effect as
soon as its entry is in a node's log, committed or not, and a leader allows one uncommitted
change at a time and none before it has committed an entry of its own term.
"""

from __future__ import annotations

import enum
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from keelfs.raft.errors import (
    CompactedError,
    InvariantViolation,
    NotLeaderError,
    ProposalDropped,
    SnapshotOutOfDateError,
    UnavailableError,
)
from keelfs.raft.log import RaftLog
from keelfs.raft.messages import (
    MAX_WIRE_INT,
    NO_NODE,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    SnapshotMeta,
)
from keelfs.raft.progress import Inflights, Progress, ProgressState
from keelfs.raft.quorum import VoteResult, committed_index, has_quorum, vote_result
from keelfs.raft.read_only import ReadOnly, ReadState
from keelfs.raft.storage import BOOTSTRAP_TERM, LogStorage

MT = MessageType


class StateType(enum.IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3


class ReadOnlyOption(enum.Enum):
    SAFE = "safe"
    """Every read waits for a heartbeat round that started after it arrived."""
    LEASE_BASED = "lease"
    """The leader answers at once while its lease holds: a majority answered heartbeats it sent
    less than ``election_tick - lease_margin_ticks`` ticks ago (``read_only.py``). Assumes that
    every node's ticks advance at nearly the same rate (drift within the margin) and that a
    leader's ticks do not lag real time by more than a tick when it answers (the runtime catches
    them up first); a node restarted with a term refuses votes for an election timeout
    (``Raft.restart_lease``), as it may have answered the leader just before it stopped. The
    lease is given up for the rest of a term once the leader sends TimeoutNow (a forced election
    ignores leases). When the lease does not hold, the read falls back to a ReadIndex round."""


@dataclass
class Config:
    id: int
    rng: random.Random
    """All randomness (election timeouts) comes from here, so a seed replays exactly."""
    election_tick: int = 10
    """Ticks without a leader before a follower campaigns; randomized in [e, 2e)."""
    heartbeat_tick: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    max_size_per_msg: int = 1 << 20
    max_inflight_msgs: int = 256
    max_inflight_bytes: int = 32 << 20
    max_committed_size_per_ready: int = 16 << 20
    max_uncommitted_entries_size: int = 64 << 20
    """Back-pressure: proposals beyond this many uncommitted bytes are refused (0 = no limit)."""
    snapshot_chunk_size: int = 1 << 20
    snapshot_window: int = 4
    """Snapshot chunks in flight to one follower."""
    read_only_option: ReadOnlyOption = ReadOnlyOption.SAFE
    quiesce_after_ticks: int = 0
    """A leader with nothing to do for this many ticks (every member caught up, nothing
    pending) sends a quiescing heartbeat and stops heartbeating; its followers stop their
    election timers. 0 disables it. Any activity wakes the group. A quiesced follower cannot
    notice a dead leader by itself: the runtime must call ``RawNode.wake(leader_unreachable=
    True)`` when its failure detector (the transport) loses the leader's node."""
    lease_margin_ticks: int = 2
    """Ticks of clock drift the lease allows for."""
    max_learner_lag: int = 64
    """A learner is promoted only once it is within this many entries of the commit index."""
    applied: int = 0
    """Index the application's state machine already reflects when the node (re)starts."""

    def validate(self) -> None:
        if self.id <= NO_NODE:
            raise ValueError("node id must be positive")
        if self.heartbeat_tick <= 0 or self.election_tick <= self.heartbeat_tick:
            raise ValueError("need 0 < heartbeat_tick < election_tick")
        if self.max_inflight_msgs <= 0 or self.snapshot_chunk_size <= 0:
            raise ValueError("inflight window and snapshot chunk size must be positive")
        if self.read_only_option is ReadOnlyOption.LEASE_BASED and not self.check_quorum:
            raise ValueError("lease-based reads need check_quorum")


@dataclass(frozen=True, slots=True)
class SnapshotChunk:
    """A piece of a snapshot received from the leader; stage it durably, in order."""

    meta: SnapshotMeta
    offset: int
    data: bytes
    done: bool


@dataclass
class _Receiving:
    meta: SnapshotMeta
    next_offset: int = 0


@dataclass(frozen=True, slots=True)
class FollowerProgress:
    """What a leader knows of one member's log (``Status.progress``): its replication state
    (``probe``, ``replicate`` or ``snapshot``), the highest index known replicated there
    (``match``) and the next one to send. ``str()`` is the one-line form of golden tests."""

    state: str
    match: int
    next: int
    paused: bool
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass
class Status:
    id: int
    term: int
    vote: int
    lead: int
    state: StateType
    commit: int
    applied: int
    last_index: int
    conf: ConfState
    lead_transferee: int
    progress: dict[int, FollowerProgress] = field(default_factory=dict)
    """On the leader: every member's progress."""


class Raft:
    def __init__(self, config: Config, storage: LogStorage) -> None:
        config.validate()
        self.id = config.id
        self.cfg = config
        self.rng = config.rng
        self.log = RaftLog(storage, config.max_committed_size_per_ready)
        hs, snap_conf = storage.initial_state()
        self.term = 0
        self.vote = NO_NODE
        self.lead = NO_NODE
        self.state = StateType.FOLLOWER
        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        self.snapshot_chunks: list[SnapshotChunk] = []
        self.prs: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = 0
        self.lead_transferee = NO_NODE
        self.pending_conf_index = 0
        self.uncommitted: deque[tuple[int, int]] = deque()  # (index, bytes) not yet committed
        self.uncommitted_size = 0
        self.read_only = ReadOnly()
        self.pending_reads: list[Message] = []  # arrived before this term's first commit
        self.receiving: _Receiving | None = None
        self.ticks_in_term = 0
        self.acked_round: dict[int, int] = {}
        self.timeout_now_sent = False
        self.quiesced = False
        self.idle_ticks = 0
        self.ignored = 0
        """Messages dropped as malformed, misaddressed or from unknown peers."""

        # Membership: the snapshot's configuration, then every conf-change entry in the log.
        self.snapshot_conf = snap_conf
        self.conf_history: list[tuple[int, ConfState]] = []
        self.conf = snap_conf
        first, last = self.log.first_index(), self.log.last_index()
        if last >= first:
            for e in self.log.slice(first, last + 1, 1 << 62):
                if e.type is EntryType.CONF_CHANGE:
                    self._record_conf(e)
        if hs.term or hs.vote or hs.commit:
            if hs.commit > self.log.last_index() or hs.commit < self.log.committed:
                raise InvariantViolation(f"hard state commit {hs.commit} outside the log")
            self.term, self.vote = hs.term, hs.vote
            self.log.committed = hs.commit
        if config.applied:
            self.log.applied_to(config.applied)
        self._become_follower(self.term, NO_NODE)
        self.restart_lease = (
            config.read_only_option is ReadOnlyOption.LEASE_BASED and self.term > BOOTSTRAP_TERM
        )
        """Whether this node restarted after some election, and so may have answered a
        leader's heartbeat just before it stopped: until an election timeout has passed or it
        changes role, it refuses (pre-)votes as if it still heard from that leader, whose lease
        may count on its answer. A node still at the bootstrap term answered no leader (every
        leader's term is later, and a term is persisted before any answer is sent)."""

    # ------------------------------------------------------------------ state accessors
    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def promotable(self) -> bool:
        return self.id in self.conf.voters

    def is_learner(self) -> bool:
        return self.id in self.conf.learners

    def status(self) -> Status:
        st = Status(
            self.id,
            self.term,
            self.vote,
            self.lead,
            self.state,
            self.log.committed,
            self.log.applied,
            self.log.last_index(),
            self.conf,
            self.lead_transferee,
        )
        if self.state is StateType.LEADER:
            st.progress = {
                i: FollowerProgress(
                    pr.state.name.lower(), pr.match, pr.next, pr.probe_sent, pr.describe()
                )
                for i, pr in sorted(self.prs.items())
            }
        return st

    # ------------------------------------------------------------------ membership
    def _record_conf(self, e: Entry) -> None:
        cc = ConfChange.decode(e.data)
        voters, learners = set(self.conf.voters), set(self.conf.learners)
        if cc.type is ConfChangeType.ADD_LEARNER:
            if cc.node_id not in voters:
                learners.add(cc.node_id)
        elif cc.type is ConfChangeType.PROMOTE:
            learners.discard(cc.node_id)
            voters.add(cc.node_id)
        else:
            voters.discard(cc.node_id)
            learners.discard(cc.node_id)
        self.conf = ConfState(frozenset(voters), frozenset(learners))
        self.conf_history.append((e.index, self.conf))

    def conf_state_at(self, index: int) -> ConfState:
        """Membership as of ``index`` (for a snapshot taken there)."""
        conf = self.snapshot_conf
        for i, c in self.conf_history:
            if i > index:
                break
            conf = c
        return conf

    def _conf_after_truncate(self, from_index: int) -> None:
        """Entries at ``from_index`` and later were replaced: forget their configurations."""
        while self.conf_history and self.conf_history[-1][0] >= from_index:
            self.conf_history.pop()
        self.conf = self.conf_history[-1][1] if self.conf_history else self.snapshot_conf

    def _append_to_log(self, ents: list[Entry]) -> None:
        """Every append goes through here so the configuration follows the log."""
        if not ents:
            return
        if self.conf_history and self.conf_history[-1][0] >= ents[0].index:
            self._conf_after_truncate(ents[0].index)
        self.log.append(ents)
        changed = False
        for e in ents:
            if e.type is EntryType.CONF_CHANGE:
                self._record_conf(e)
                changed = True
        if changed:
            self._on_conf_changed()

    def _on_conf_changed(self) -> None:
        if self.state is not StateType.LEADER:
            return
        members = self.conf.voters | self.conf.learners
        last = self.log.last_index()
        for i in members:
            if i not in self.prs:
                self.prs[i] = self._new_progress(last + 1)
        for i in list(self.prs):
            if i not in members and i != self.id:
                del self.prs[i]
        if self.id not in members:
            self.prs.pop(self.id, None)
        if self.lead_transferee and self.lead_transferee not in self.conf.voters:
            self.lead_transferee = NO_NODE
        if self._maybe_commit():
            self._bcast_append()

    def _new_progress(self, next_index: int) -> Progress:
        return Progress(
            next_index, Inflights(self.cfg.max_inflight_msgs, self.cfg.max_inflight_bytes)
        )

    # ------------------------------------------------------------------ role changes
    def _reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NO_NODE
        self.lead = NO_NODE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = self.cfg.election_tick + self.rng.randrange(
            self.cfg.election_tick
        )
        self.lead_transferee = NO_NODE
        self.votes = {}
        self.prs = {}
        self.pending_conf_index = 0
        self.uncommitted = deque()
        self.uncommitted_size = 0
        self.read_only = ReadOnly()
        self.pending_reads = []
        self.ticks_in_term = 0
        self.acked_round = {}
        self.timeout_now_sent = False
        self.quiesced = False
        self.idle_ticks = 0
        self.restart_lease = False

    def _become_follower(self, term: int, lead: int) -> None:
        self._reset(term)
        self.lead = lead
        self.state = StateType.FOLLOWER

    def _become_pre_candidate(self) -> None:
        if self.state is StateType.LEADER:
            raise InvariantViolation("leader cannot become pre-candidate")
        self.votes = {}
        self.lead = NO_NODE
        self.state = StateType.PRE_CANDIDATE

    def _become_candidate(self) -> None:
        if self.state is StateType.LEADER:
            raise InvariantViolation("leader cannot become candidate")
        self._reset(self.term + 1)
        self.vote = self.id
        self.state = StateType.CANDIDATE

    def _become_leader(self) -> None:
        if self.state is StateType.FOLLOWER:
            raise InvariantViolation("follower cannot become leader directly")
        self._reset(self.term)
        self.lead = self.id
        self.state = StateType.LEADER
        last = self.log.last_index()
        for i in self.conf.voters | self.conf.learners:
            self.prs[i] = self._new_progress(last + 1)
        me = self.prs.get(self.id)
        if me is not None:
            me.match = last
            me.become_replicate()
            me.recent_active = True
        # No conf change until this term's no-op entry is committed (Ongaro's fix for
        # single-server changes): pending_conf_index blocks proposals until then.
        self.pending_conf_index = last + 1
        self._append_entry([Entry(self.term, last + 1)])

    # ------------------------------------------------------------------ ticking
    def tick(self) -> None:
        _TICK[self.state](self)

    def _tick_election(self) -> None:
        if self.quiesced:
            return
        self.election_elapsed += 1
        if self.election_elapsed >= self.cfg.election_tick:
            self.restart_lease = False
        if self.promotable() and self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            self.step(Message(MT.HUP, self.id, self.id))

    def _tick_heartbeat(self) -> None:
        if self.quiesced:
            return
        q = self.cfg.quiesce_after_ticks
        if q and self._idle():
            self.idle_ticks += 1
            if self.idle_ticks >= q:
                self._quiesce()
                return
        else:
            self.idle_ticks = 0
        self.ticks_in_term += 1
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.cfg.election_tick:
            self.election_elapsed = 0
            if self.cfg.check_quorum and not self._quorum_active():
                self._become_follower(self.term, NO_NODE)
                return
            if self.lead_transferee != NO_NODE:
                self._abort_transfer()
        if self.heartbeat_elapsed >= self.cfg.heartbeat_tick:
            self.heartbeat_elapsed = 0
            self._bcast_heartbeat()

    # ------------------------------------------------------------------ quiescence
    def _idle(self) -> bool:
        last = self.log.last_index()
        if (
            self.log.committed != last
            or self.lead_transferee != NO_NODE
            or self.pending_reads
            or self.read_only.pending_count()
        ):
            return False
        return all(
            pr.match == last and pr.state is ProgressState.REPLICATE for pr in self.prs.values()
        )

    def _quiesce(self) -> None:
        self.quiesced = True
        for i in self.prs:
            if i != self.id:
                self._send(
                    Message(
                        MT.HEARTBEAT,
                        i,
                        self.id,
                        self.term,
                        commit=self.log.committed,
                        quiesce=True,
                    )
                )

    def wake(self, leader_unreachable: bool = False, lease_expired: bool = False) -> None:
        """Leave quiescence. A follower that suspects its leader (``leader_unreachable``)
        also gives up the leader's lease so that it and its peers can elect a new one."""
        if not self.quiesced:
            return
        self.quiesced = False
        self.idle_ticks = 0
        if self.state is StateType.LEADER:
            self.heartbeat_elapsed = self.election_elapsed = 0
            self.acked_round = {}  # no ticks passed while quiesced: the lease must be re-earned
            self.read_only.forget_rounds_sent()  # by answers to rounds sent from now on
            self._bcast_heartbeat()
            return
        if leader_unreachable or lease_expired:
            self.election_elapsed = self.cfg.election_tick
        else:
            self.election_elapsed = 0
            if self.lead != NO_NODE:
                # Wake the leader too, or we would time out waiting for its heartbeats.
                self._send(
                    Message(MT.APP_RESP, self.lead, self.id, self.term, index=self.log.last_index())
                )

    def _quorum_active(self) -> bool:
        active = {i for i, pr in self.prs.items() if pr.recent_active or i == self.id}
        for i, pr in self.prs.items():
            if i != self.id:
                pr.recent_active = False
        return has_quorum(self.conf.voters, active)

    def _abort_transfer(self) -> None:
        self.lead_transferee = NO_NODE
        if self.id not in self.conf.voters:
            # A leader that removed itself gives up the lead even if the handover failed.
            self._become_follower(self.term, NO_NODE)

    # ------------------------------------------------------------------ elections
    def _campaign(self, pre: bool, transfer: bool = False) -> None:
        if not self.promotable():
            return
        if pre:
            self._become_pre_candidate()
            vote_type, term = MT.PRE_VOTE, self.term + 1
        else:
            self._become_candidate()
            vote_type, term = MT.VOTE, self.term
        if self._poll(self.id, True) is VoteResult.WON:
            # A single-voter group wins at once.
            if pre:
                self._campaign(pre=False, transfer=transfer)
            else:
                self._become_leader()
            return
        last = self.log.last_index()
        last_term = self.log.last_term()
        for v in sorted(self.conf.voters):
            if v != self.id:
                self._send(
                    Message(
                        vote_type, v, self.id, term, log_term=last_term, index=last, force=transfer
                    )
                )

    def _poll(self, frm: int, granted: bool) -> VoteResult:
        self.votes.setdefault(frm, granted)
        return vote_result(self.conf.voters, self.votes)

    def _has_unapplied_conf_change(self) -> bool:
        lo, hi = self.log.applied + 1, self.log.committed
        return any(lo <= i <= hi for i, _ in self.conf_history)

    # ------------------------------------------------------------------ step
    def step(self, m: Message) -> None:
        """Feed one message (local or from a peer) into the state machine."""
        if not self._valid(m) or not self._accepts_sender(m):
            self.ignored += 1
            return
        if self.quiesced:
            self._maybe_wake_for(m)
        if m.type is MT.HUP and m.term == 0:
            if self.state is not StateType.LEADER:
                self._hup(transfer=False)
            return
        if m.term == 0:
            pass  # a local input
        elif m.term > self.term:
            if m.type in (MT.VOTE, MT.PRE_VOTE):
                in_lease = (
                    self.cfg.check_quorum
                    and (self.lead != NO_NODE or self.restart_lease)
                    and self.election_elapsed < self.cfg.election_tick
                )
                if in_lease and not m.force:
                    # We heard from a leader recently: a disruptive candidate (e.g. one coming
                    # back from a partition) does not get to bump our term.
                    return
            if m.type is MT.PRE_VOTE or (m.type is MT.PRE_VOTE_RESP and not m.reject):
                pass  # pre-vote messages carry a future term; never adopt it
            elif m.type in (MT.APP, MT.HEARTBEAT, MT.SNAP):
                self._become_follower(m.term, m.frm)
            else:
                self._become_follower(m.term, NO_NODE)
        elif m.term < self.term:
            if m.type in (MT.APP, MT.HEARTBEAT) and (self.cfg.check_quorum or self.cfg.pre_vote):
                # A stale leader (or a node isolated while we moved on) learns our term.
                self._send(Message(MT.APP_RESP, m.frm, self.id, self.term))
            elif m.type is MT.PRE_VOTE:
                self._send(Message(MT.PRE_VOTE_RESP, m.frm, self.id, self.term, reject=True))
            return

        if m.type in (MT.VOTE, MT.PRE_VOTE):
            self._handle_vote_request(m)
            return
        _STEP[self.state](self, m)

    def _maybe_wake_for(self, m: Message) -> None:
        t = m.type
        if self.state is StateType.LEADER:
            if t is not MT.HEARTBEAT_RESP:
                self.wake()
        elif not (t is MT.HEARTBEAT and m.quiesce):
            # A (pre-)vote means a peer suspects the leader: don't shield the leader's lease.
            self.wake(lease_expired=t in (MT.VOTE, MT.PRE_VOTE))

    def _valid(self, m: Message) -> bool:
        """Reject what no correct peer would send; such messages change nothing."""
        if m.term == 0 and m.type in _LOCAL_INPUTS:
            return m.to == self.id and m.frm == self.id
        if m.to != self.id or m.frm <= NO_NODE or m.frm == self.id or m.term <= 0:
            return False
        if m.type not in _REMOTE_TYPES or not _in_range(m):
            return False
        if m.entries and m.type is not MT.APP:
            return False  # only appends carry entries
        if m.type is MT.APP:
            if m.log_term > m.term:
                return False
            prev_term = m.log_term
            for i, e in enumerate(m.entries):
                if e.index != m.index + 1 + i or e.term > m.term or e.term < prev_term:
                    return False
                prev_term = e.term
                if e.type is EntryType.CONF_CHANGE:
                    try:
                        if not _valid_node_id(ConfChange.decode(e.data).node_id):
                            return False
                    except ValueError:
                        return False
        elif m.type in (MT.VOTE, MT.PRE_VOTE):
            return m.log_term <= m.term
        elif m.type is MT.SNAP:
            s = m.snapshot
            return (
                s is not None
                and s.index > 0
                and s.term <= m.term
                and all(_valid_node_id(i) for i in s.conf.voters | s.conf.learners)
            )
        return True

    def _accepts_sender(self, m: Message) -> bool:
        """Whether ``m`` (already ``_valid``) comes from a node that may send it.

        - At our current term, what only a leader sends is taken only from the leader we know:
          there is at most one leader per term, so an append from anybody else (a forged one,
          or a confused peer's) would let two logs diverge silently.
        - Everything else must come from a member: a voter or learner of our latest
          configuration or of the one our commit index has reached (a leader removing itself
          is still a member of the committed one until its removal commits), so a removed
          node cannot disrupt the group with votes and no stranger can bump our term with
          one. A candidate whose membership entry our log lacks gets no vote from us, as in
          etcd; it can win with the votes of the members whose logs are as long as its own.
        - Except a leader's own traffic (append, heartbeat, snapshot) from a node no
          configuration of ours names: our log may simply be behind the entry that made it a
          member (a node added after our last entry, or after the snapshot it sent us, or any
          node when we are a joiner that knows no configuration yet), and refusing it would
          leave us behind for good. It is refused only from a node our log shows removed.
          Telling a new member from a stranger here is the transport's job: it checks that
          ``frm`` is the authenticated peer (``keelfs.transport.grpc_transport``).
        """
        t = m.type
        if m.frm == self.id:
            return True  # a local input (checked in _valid)
        if t in _FROM_OUR_LEADER and m.term == self.term and self.lead != NO_NODE:
            return m.frm == self.lead
        if self._is_member(m.frm):
            return True
        return t in _LEADER_TRAFFIC and m.frm not in self._removed()

    def _is_member(self, node_id: int) -> bool:
        c = self.conf
        if node_id in c.voters or node_id in c.learners:
            return True
        committed = self.conf_state_at(self.log.committed)
        return node_id in committed.voters or node_id in committed.learners

    def _removed(self) -> set[int]:
        """Nodes that a configuration our log still shows named, and that are gone now."""
        seen = set(self.snapshot_conf.voters | self.snapshot_conf.learners)
        for _, c in self.conf_history:
            seen |= c.voters | c.learners
        return {i for i in seen if not self._is_member(i)}

    def _hup(self, transfer: bool) -> None:
        if not self.promotable():
            return
        if self.log.unstable.snapshot is not None or self._has_unapplied_conf_change():
            return  # apply what we already know first
        self._campaign(pre=self.cfg.pre_vote and not transfer, transfer=transfer)

    def _handle_vote_request(self, m: Message) -> None:
        can_vote = (
            self.vote == m.frm
            or (self.vote == NO_NODE and self.lead == NO_NODE)
            or (m.type is MT.PRE_VOTE and m.term > self.term)
        )
        resp = MT.VOTE_RESP if m.type is MT.VOTE else MT.PRE_VOTE_RESP
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            # Grant with the candidate's term so a pre-candidate counts it (§9.6).
            self._send(Message(resp, m.frm, self.id, m.term))
            if m.type is MT.VOTE:
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            self._send(Message(resp, m.frm, self.id, self.term, reject=True))

    # ------------------------------------------------------------------ follower
    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t is MT.APP:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_append(m)
        elif t is MT.HEARTBEAT:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_heartbeat(m)
        elif t is MT.SNAP:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_snapshot_chunk(m)
        elif t is MT.PROP:
            raise NotLeaderError(self.lead)
        elif t is MT.TRANSFER_LEADER:
            if self.lead == NO_NODE:
                if m.frm == self.id:
                    raise NotLeaderError(NO_NODE, "no leader to transfer from")
                return  # a peer's forwarded request that found no leader here: drop it
            self._send(Message(MT.TRANSFER_LEADER, self.lead, self.id, self.term, index=m.index))
        elif t is MT.TIMEOUT_NOW:
            self._hup(transfer=True)
        elif t is MT.READ_INDEX:
            if m.frm == self.id:
                if self.lead == NO_NODE:
                    raise NotLeaderError(NO_NODE, "no leader to serve the read")
                self._send(Message(MT.READ_INDEX, self.lead, self.id, self.term, context=m.context))
        elif t is MT.READ_INDEX_RESP:
            self.read_states.append(ReadState(m.index, m.context))
        # everything else (stale responses, votes already handled) is ignored

    def _handle_append(self, m: Message) -> None:
        if m.index < self.log.committed:
            self._send(Message(MT.APP_RESP, m.frm, self.id, self.term, index=self.log.committed))
            return
        before = self.log.last_index()
        try:
            last_new = self._maybe_append(m)
        except InvariantViolation:
            raise
        if last_new is not None:
            self._send(Message(MT.APP_RESP, m.frm, self.id, self.term, index=last_new))
            return
        hint = min(m.index, before)
        hint_index, hint_term = self.log.find_conflict_by_term(hint, m.log_term)
        self._send(
            Message(
                MT.APP_RESP,
                m.frm,
                self.id,
                self.term,
                index=m.index,
                reject=True,
                reject_hint=hint_index,
                log_term=hint_term,
            )
        )

    def _maybe_append(self, m: Message) -> int | None:
        log = self.log
        if not log.match_term(m.index, m.log_term):
            return None
        last_new = m.index + len(m.entries)
        ci = log.find_conflict(m.entries)
        if ci:
            if ci <= log.committed:
                raise InvariantViolation(f"entry {ci} conflicts with committed {log.committed}")
            self._append_to_log(list(m.entries[ci - m.index - 1 :]))
        log.commit_to(min(m.commit, last_new))
        return last_new

    def _handle_heartbeat(self, m: Message) -> None:
        self.log.commit_to(min(m.commit, self.log.last_index()))
        if m.quiesce and self.log.committed == self.log.last_index() == m.commit:
            self.quiesced = True
            return  # the leader expects no answer
        self._send(Message(MT.HEARTBEAT_RESP, m.frm, self.id, self.term, read_seq=m.read_seq))

    def _handle_snapshot_chunk(self, m: Message) -> None:
        meta = m.snapshot
        assert meta is not None  # checked in _valid
        if self.log.unstable.snapshot is not None:
            return  # a received snapshot awaits installation; the leader will resend
        if meta.index <= self.log.committed:
            # We already have everything the snapshot covers: tell the leader where we are.
            self.receiving = None
            self._send(Message(MT.APP_RESP, m.frm, self.id, self.term, index=self.log.committed))
            return
        rc = self.receiving
        if rc is None or rc.meta != meta:
            if m.snap_offset != 0:
                self._snap_resp(m.frm, meta, 0, reject=True)  # start over from the beginning
                return
            rc = self.receiving = _Receiving(meta)
        if m.snap_offset != rc.next_offset:
            self._snap_resp(m.frm, meta, rc.next_offset, reject=True)  # resume where we are
            return
        self.snapshot_chunks.append(SnapshotChunk(meta, m.snap_offset, m.snap_data, m.snap_done))
        rc.next_offset += len(m.snap_data)
        if not m.snap_done:
            self._snap_resp(m.frm, meta, rc.next_offset)
            return
        self.receiving = None
        self._restore(meta)
        self._send(Message(MT.APP_RESP, m.frm, self.id, self.term, index=self.log.last_index()))

    def _snap_resp(
        self, to: int, meta: SnapshotMeta, next_offset: int, reject: bool = False
    ) -> None:
        self._send(
            Message(
                MT.SNAP_RESP,
                to,
                self.id,
                self.term,
                snapshot=meta,
                snap_offset=next_offset,
                reject=reject,
            )
        )

    def _restore(self, meta: SnapshotMeta) -> None:
        if self.log.match_term(meta.index, meta.term):
            # Our log already holds the snapshot's last entry: just move the commit index.
            self.log.commit_to(meta.index)
            return
        self.log.restore(meta)
        self.snapshot_conf = meta.conf
        self.conf_history = []
        self.conf = meta.conf

    # ------------------------------------------------------------------ candidate
    def _step_candidate(self, m: Message) -> None:
        t = m.type
        my_resp = MT.PRE_VOTE_RESP if self.state is StateType.PRE_CANDIDATE else MT.VOTE_RESP
        if t is MT.PROP:
            raise NotLeaderError(NO_NODE, "election in progress")
        if t in (MT.APP, MT.HEARTBEAT, MT.SNAP):
            self._become_follower(m.term, m.frm)
            self._step_follower(m)
        elif t is my_resp:
            res = self._poll(m.frm, not m.reject)
            if res is VoteResult.WON:
                if self.state is StateType.PRE_CANDIDATE:
                    self._campaign(pre=False)
                else:
                    self._become_leader()
                    self._bcast_append()
            elif res is VoteResult.LOST:
                self._become_follower(self.term, NO_NODE)
        elif t in (MT.READ_INDEX, MT.TRANSFER_LEADER) and m.frm == self.id:
            raise NotLeaderError(NO_NODE, "election in progress")

    # ------------------------------------------------------------------ leader
    def _step_leader(self, m: Message) -> None:
        t = m.type
        if t is MT.BEAT:
            self._bcast_heartbeat()
        elif t is MT.PROP:
            self._handle_proposal(m)
        elif t is MT.READ_INDEX:
            self._handle_read_index(m)
        elif t is MT.TRANSFER_LEADER:
            self._handle_transfer(m.index)
        elif t in _LEADER_RESPONSES:
            pr = self.prs.get(m.frm)
            if pr is not None:
                pr.recent_active = True
                _LEADER_RESPONSES[t](self, m, pr)

    def _handle_proposal(self, m: Message) -> None:
        if self.lead_transferee != NO_NODE:
            raise ProposalDropped(f"leadership transfer to {self.lead_transferee} in progress")
        if self.id not in self.conf.voters:
            raise NotLeaderError(NO_NODE, "leader is being removed")
        ents = list(m.entries)
        for e in ents:
            if e.type is EntryType.CONF_CHANGE:
                self._check_conf_change(ConfChange.decode(e.data))
        size = sum(len(e.data) for e in ents)
        limit = self.cfg.max_uncommitted_entries_size
        if limit and self.uncommitted_size > 0 and self.uncommitted_size + size > limit:
            raise ProposalDropped("too many uncommitted bytes; retry later")
        self._append_entry(ents)
        self._bcast_append()

    def _check_conf_change(self, cc: ConfChange) -> None:
        if self.pending_conf_index > self.log.committed:
            raise ProposalDropped("a membership change is already in progress")
        members = self.conf.voters | self.conf.learners
        if cc.node_id <= NO_NODE:
            raise ValueError(f"invalid node id {cc.node_id}")
        if cc.type is ConfChangeType.ADD_LEARNER:
            if cc.node_id in members:
                raise ValueError(f"node {cc.node_id} is already a member")
        elif cc.type is ConfChangeType.PROMOTE:
            if cc.node_id not in self.conf.learners:
                raise ValueError(f"node {cc.node_id} is not a learner")
            pr = self.prs[cc.node_id]
            if pr.match + self.cfg.max_learner_lag < self.log.committed:
                raise ProposalDropped(
                    f"learner {cc.node_id} has not caught up (match {pr.match}, "
                    f"commit {self.log.committed}); retry later"
                )
        else:
            if cc.node_id not in members:
                raise ValueError(f"node {cc.node_id} is not a member")
            if self.conf.voters == {cc.node_id}:
                raise ValueError("cannot remove the last voter")

    def _append_entry(self, ents: list[Entry]) -> None:
        last = self.log.last_index()
        stamped = [Entry(self.term, last + 1 + i, e.data, e.type) for i, e in enumerate(ents)]
        for e in stamped:
            if e.data:
                self.uncommitted.append((e.index, len(e.data)))
                self.uncommitted_size += len(e.data)
            if e.type is EntryType.CONF_CHANGE:
                self.pending_conf_index = e.index
        self._append_to_log(stamped)
        me = self.prs.get(self.id)
        if me is not None:
            me.maybe_update(self.log.last_index())
        self._maybe_commit()

    def _maybe_commit(self) -> bool:
        mci = committed_index(self.conf.voters, self._match_of)
        if mci > self.log.committed and self.log.term_or_zero(mci) == self.term:
            # Only entries of the current term are committed by counting (§5.4.2).
            self._commit_to(mci)
            return True
        return False

    def _match_of(self, i: int) -> int:
        pr = self.prs.get(i)
        return pr.match if pr is not None else 0

    def _commit_to(self, index: int) -> None:
        old = self.log.committed
        self.log.commit_to(index)
        if old < index:
            while self.uncommitted and self.uncommitted[0][0] <= index:
                self.uncommitted_size -= self.uncommitted.popleft()[1]
            if self.log.term_or_zero(old) != self.term and self.pending_reads:
                # First commit of this term: reads that waited for it may go.
                pending, self.pending_reads = self.pending_reads, []
                for r in pending:
                    self._handle_read_index(r)
            if self.id not in self.conf.voters and self.pending_conf_index <= index:
                # Our own removal is committed: hand over to the most up-to-date voter.
                self._hand_over()

    def _hand_over(self) -> None:
        candidates = [v for v in self.conf.voters if v in self.prs]
        if not candidates:
            self._become_follower(self.term, NO_NODE)
            return
        best = max(candidates, key=lambda v: (self.prs[v].match, -v))
        self._handle_transfer(best)

    def _on_app_resp(self, m: Message, pr: Progress) -> None:
        if m.reject:
            next_probe = m.reject_hint
            if m.log_term > 0:
                next_probe, _ = self.log.find_conflict_by_term(m.reject_hint, m.log_term)
            if pr.maybe_decr_to(m.index, next_probe):
                if pr.state is ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(m.frm)
            return
        if m.index > self.log.last_index():
            self.ignored += 1  # acknowledges entries we never had
            return
        was_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            if was_paused and pr.state is ProgressState.PROBE:
                self._send_append(m.frm)
            return
        if pr.state is ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state is ProgressState.SNAPSHOT:
            if pr.match + 1 >= self.log.first_index():
                pr.become_probe()
                pr.become_replicate()
            else:
                # The follower installed a snapshot we have since compacted past: send the
                # current one right away instead of waiting for a stalled round.
                pr.become_snapshot(self.log.storage.snapshot_meta())
                self._pump_snapshot(m.frm, pr)
                return
        else:
            pr.inflights.free_le(m.index)
        if self._maybe_commit():
            if self.state is not StateType.LEADER:
                return  # the commit finished our own removal and we handed over
            self._bcast_append()
        elif was_paused:
            self._send_append(m.frm)
        while self._maybe_send_append(m.frm, send_if_empty=False):
            pass
        if m.frm == self.lead_transferee and pr.match == self.log.last_index():
            self._send_timeout_now(m.frm)

    def _on_heartbeat_resp(self, m: Message, pr: Progress) -> None:
        if pr.state is ProgressState.SNAPSHOT:
            if pr.snap_acked == pr.snap_acked_at_last_beat:
                pr.snap_sent = pr.snap_acked  # no progress for a round: resend from the ack
                pr.snap_done_sent = False
                self._pump_snapshot(m.frm, pr)
            pr.snap_acked_at_last_beat = pr.snap_acked
        else:
            pr.probe_sent = False
            if pr.state is ProgressState.REPLICATE and pr.inflights.full():
                pr.inflights.free_first()  # an append may have been lost: make room to retry
            if pr.match < self.log.last_index():
                self._send_append(m.frm)
        if m.read_seq > self.read_only.last_round():
            self.ignored += 1  # answers a round we never sent
            return
        if m.read_seq > self.acked_round.get(m.frm, 0):
            self.acked_round[m.frm] = m.read_seq
        if m.read_seq and m.frm in self.conf.voters:
            for rs in self.read_only.ack(m.frm, m.read_seq, self.conf.voters):
                self._respond_read(rs.requester, rs.index, rs.context)

    def _on_snap_resp(self, m: Message, pr: Progress) -> None:
        if pr.state is not ProgressState.SNAPSHOT or m.snapshot != pr.snapshot:
            return
        if m.reject:
            pr.snap_sent = pr.snap_acked = m.snap_offset
            pr.snap_done_sent = False
        elif m.snap_offset > pr.snap_acked:
            pr.snap_acked = min(m.snap_offset, pr.snap_sent)
        self._pump_snapshot(m.frm, pr)

    # ------------------------------------------------------------------ sending
    def _send(self, m: Message) -> None:
        self.msgs.append(m)

    def _bcast_append(self) -> None:
        for i in self.prs:
            if i != self.id:
                self._send_append(i)

    def _send_append(self, to: int) -> None:
        self._maybe_send_append(to, send_if_empty=True)

    def _maybe_send_append(self, to: int, send_if_empty: bool) -> bool:
        pr = self.prs[to]
        if pr.is_paused():
            return False
        prev = pr.next - 1
        try:
            prev_term = self.log.term(prev)
            ents = (
                self.log.entries_from(pr.next, self.cfg.max_size_per_msg)
                if pr.next <= self.log.last_index()
                else []
            )
        except CompactedError:
            return self._start_snapshot(to, pr)
        except UnavailableError as e:
            raise InvariantViolation(f"progress of {to} beyond our log: {e}") from e
        if not ents and not send_if_empty:
            return False
        self._send(
            Message(
                MT.APP,
                to,
                self.id,
                self.term,
                log_term=prev_term,
                index=prev,
                entries=tuple(ents),
                commit=self.log.committed,
            )
        )
        if ents:
            if pr.state is ProgressState.REPLICATE:
                last = ents[-1].index
                pr.next = last + 1
                pr.inflights.add(last, sum(e.size() for e in ents))
            else:
                pr.probe_sent = True
        elif pr.state is ProgressState.PROBE:
            pr.probe_sent = True
        return True

    def _start_snapshot(self, to: int, pr: Progress) -> bool:
        if not pr.recent_active:
            return False  # don't stream a snapshot to a peer that does not answer
        meta = self.log.storage.snapshot_meta()
        if meta.index == 0:
            raise InvariantViolation("log compacted but storage has no snapshot")
        pr.become_snapshot(meta)
        self._pump_snapshot(to, pr)
        return True

    def _pump_snapshot(self, to: int, pr: Progress) -> None:
        """Keep up to ``snapshot_window`` chunks in flight; chunks come from storage."""
        chunk = self.cfg.snapshot_chunk_size
        storage = self.log.storage
        while (
            not pr.snap_done_sent
            and pr.snapshot is not None
            and pr.snap_sent - pr.snap_acked < self.cfg.snapshot_window * chunk
        ):
            try:
                data, done = storage.snapshot_chunk(pr.snapshot, pr.snap_sent, chunk)
            except SnapshotOutOfDateError:
                pr.become_snapshot(storage.snapshot_meta())  # a newer one replaced it
                continue
            self._send(
                Message(
                    MT.SNAP,
                    to,
                    self.id,
                    self.term,
                    snapshot=pr.snapshot,
                    snap_offset=pr.snap_sent,
                    snap_data=data,
                    snap_done=done,
                )
            )
            pr.snap_sent += len(data)
            pr.snap_done_sent = done

    def _bcast_heartbeat(self) -> None:
        seq = self.read_only.next_round(self.ticks_in_term)
        for i, pr in self.prs.items():
            if i != self.id:
                self._send(
                    Message(
                        MT.HEARTBEAT,
                        i,
                        self.id,
                        self.term,
                        commit=min(pr.match, self.log.committed),
                        read_seq=seq,
                    )
                )

    def _send_timeout_now(self, to: int) -> None:
        self._send(Message(MT.TIMEOUT_NOW, to, self.id, self.term))
        self.timeout_now_sent = True
        if self.id not in self.conf.voters:
            self._become_follower(self.term, NO_NODE)

    # ------------------------------------------------------------------ reads
    def _handle_read_index(self, m: Message) -> None:
        requester = m.frm
        if self.conf.voters == {self.id}:
            self._respond_read(requester, self.log.committed, m.context)
            return
        if self.log.term_or_zero(self.log.committed) != self.term:
            # Our commit index may be behind until an entry of this term commits (§6.4).
            self.pending_reads.append(m)
            return
        if self.cfg.read_only_option is ReadOnlyOption.LEASE_BASED and self._lease_valid():
            self._respond_read(requester, self.log.committed, m.context)
            return
        self.read_only.add(self.log.committed, requester, m.context, self.id)
        self._bcast_heartbeat()

    def _lease_valid(self) -> bool:
        if self.lead_transferee != NO_NODE or self.timeout_now_sent:
            return False  # a forced election may already be under way elsewhere
        return self.read_only.lease_valid(
            self.ticks_in_term,
            self.cfg.election_tick - self.cfg.lease_margin_ticks,
            self.conf.voters,
            self.id,
            self.acked_round,
        )

    def _respond_read(self, requester: int, index: int, context: bytes) -> None:
        if requester == self.id:
            self.read_states.append(ReadState(index, context))
        else:
            self._send(
                Message(
                    MT.READ_INDEX_RESP, requester, self.id, self.term, index=index, context=context
                )
            )

    # ------------------------------------------------------------------ transfer
    def _handle_transfer(self, target: int) -> None:
        if target == self.id or target not in self.conf.voters:
            return
        if self.lead_transferee == target:
            return
        self.lead_transferee = target
        self.election_elapsed = 0  # the transfer must finish within one election timeout
        pr = self.prs[target]
        if pr.match == self.log.last_index():
            self._send_timeout_now(target)
        else:
            self._send_append(target)


_LEADER_TRAFFIC = frozenset({MT.APP, MT.HEARTBEAT, MT.SNAP})
"""What a leader sends to bring a follower up to date (see ``Raft._accepts_sender``)."""

_FROM_OUR_LEADER = _LEADER_TRAFFIC | {MT.TIMEOUT_NOW, MT.READ_INDEX_RESP}
"""What only the leader of a term sends."""


def _valid_node_id(node_id: int) -> bool:
    return NO_NODE < node_id <= MAX_WIRE_INT


def _in_range(m: Message) -> bool:
    """Every integer ``m`` carries is in [0, MAX_WIRE_INT] (see ``messages.MAX_WIRE_INT``).

    Of the entries only the last index is checked here: ``_valid`` then checks that an
    append's entries count up from ``index`` with terms between ``log_term`` and ``term``, and
    that no other kind of message carries entries.
    """
    ints = (m.to, m.frm, m.term, m.log_term, m.index, m.commit, m.reject_hint, m.read_seq)
    if min(ints) < 0 or max(ints) > MAX_WIRE_INT or not 0 <= m.snap_offset <= MAX_WIRE_INT:
        return False
    if m.entries and m.entries[-1].index > MAX_WIRE_INT:
        return False
    s = m.snapshot
    return s is None or (0 <= s.index <= MAX_WIRE_INT and 0 <= s.term <= MAX_WIRE_INT)


_LOCAL_INPUTS = frozenset({MT.HUP, MT.BEAT, MT.PROP, MT.READ_INDEX, MT.TRANSFER_LEADER})

_REMOTE_TYPES = frozenset(
    {
        MT.APP,
        MT.APP_RESP,
        MT.HEARTBEAT,
        MT.HEARTBEAT_RESP,
        MT.PRE_VOTE,
        MT.PRE_VOTE_RESP,
        MT.VOTE,
        MT.VOTE_RESP,
        MT.SNAP,
        MT.SNAP_RESP,
        MT.READ_INDEX,
        MT.READ_INDEX_RESP,
        MT.TRANSFER_LEADER,
        MT.TIMEOUT_NOW,
    }
)

_STEP: dict[StateType, Callable[[Raft, Message], None]] = {
    StateType.FOLLOWER: Raft._step_follower,
    StateType.PRE_CANDIDATE: Raft._step_candidate,
    StateType.CANDIDATE: Raft._step_candidate,
    StateType.LEADER: Raft._step_leader,
}

_LEADER_RESPONSES: dict[MessageType, Callable[[Raft, Message, Progress], None]] = {
    MT.APP_RESP: Raft._on_app_resp,
    MT.HEARTBEAT_RESP: Raft._on_heartbeat_resp,
    MT.SNAP_RESP: Raft._on_snap_resp,
}

_TICK: dict[StateType, Callable[[Raft], None]] = {
    StateType.FOLLOWER: Raft._tick_election,
    StateType.PRE_CANDIDATE: Raft._tick_election,
    StateType.CANDIDATE: Raft._tick_election,
    StateType.LEADER: Raft._tick_heartbeat,
}
