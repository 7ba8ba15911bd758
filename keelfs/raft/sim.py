"""Deterministic cluster simulator for the Raft core.

One seed fixes everything: cluster size, fault rates, every message delay and every decision.
A run has a *fault phase* (message loss, duplication, reordering and delay; symmetric and
asymmetric partitions; crashes that lose whatever was not yet persisted, including crashes in
the middle of handling a Ready; restarts; snapshots and compaction; leadership transfers;
membership changes; client writes and ReadIndex reads, answered from the leader's lease in half
the seeds) and then a *calm phase* in which faults
stop and a leader must emerge and commit within a bounded number of ticks.

After every simulated step the checker verifies:

- election safety: at most one leader per term;
- log matching: two entries with the same index and term have the same data and the same
  predecessor term (checked inductively as entries are persisted);
- leader completeness: a new leader's log holds every entry committed so far;
- state-machine safety: no two nodes apply different entries (or reach a different state) at one
  index, and nodes apply indexes in order with no gap;
- no committed entry lost: an index once known committed never changes term;
- ReadIndex: a read's index is at least the index of every write acknowledged before the read
  was issued;
- forged messages change nothing: some seeds hand nodes messages no honest member sends (an
  integer out of range, a vote or response from a node no configuration names, an append,
  heartbeat or snapshot at the current term from somebody other than the term's leader), and
  the node must drop each one (``Raft.ignored``) with its term, vote, log and commit unchanged.
  Forgeries draw from their own random stream and change nothing, so a seed replays the same
  run with or without them.

Run a sweep with ``python -m keelfs.raft.sim --seeds N --steps M``; a failing seed prints a
one-line command that replays it with a full trace.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import json
import multiprocessing
import random
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from keelfs.raft.core import Config, Raft, ReadOnlyOption, StateType
from keelfs.raft.errors import (
    InvariantViolation,
    ProposalDropped,
)
from keelfs.raft.messages import (
    MAX_WIRE_INT,
    NO_NODE,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    SnapshotMeta,
)
from keelfs.raft.rawnode import RawNode, Ready
from keelfs.raft.storage import MemoryStorage

SUBSTEPS_PER_TICK = 4
STRANGERS = 1_000_000
"""Forged messages claim node ids from here up: no simulated node ever has one."""
ELECTION_TICK = 10
HEARTBEAT_TICK = 1


class Violation(Exception):
    """A safety or liveness property failed."""


@dataclass
class FaultRates:
    drop: float = 0.0
    duplicate: float = 0.0
    max_latency: int = 6  # substeps
    long_delay: float = 0.0
    """Chance that a message is held for up to three election timeouts (a stalled link)."""
    partition: float = 0.0
    heal: float = 0.004
    crash: float = 0.0
    crash_mid_ready: float = 0.0
    restart: float = 0.01
    snapshot: float = 0.01
    transfer: float = 0.0
    membership: float = 0.0
    propose: float = 0.3
    read: float = 0.05
    delay_ready: float = 0.1

    @classmethod
    def random(cls, rng: random.Random) -> FaultRates:
        profile = rng.random()
        if profile < 0.1:  # calm: only client traffic and snapshots
            return cls(max_latency=rng.choice([2, 6]), snapshot=rng.choice([0.0, 0.02]))
        if profile < 0.4:  # chaos: leaders crash and get cut off every few election timeouts
            return cls(
                drop=rng.choice([0.0, 0.05, 0.2]),
                duplicate=rng.choice([0.0, 0.05]),
                max_latency=rng.choice([2, 4, 8]),
                long_delay=rng.choice([0.0, 0.005, 0.02]),
                partition=rng.choice([0.005, 0.01]),
                heal=rng.choice([0.01, 0.03]),
                crash=rng.choice([0.005, 0.01]),
                crash_mid_ready=rng.choice([0.0, 0.002]),
                restart=rng.choice([0.02, 0.05]),
                snapshot=rng.choice([0.0, 0.01, 0.03]),
                transfer=rng.choice([0.0, 0.005]),
                membership=rng.choice([0.0, 0.003]),
                propose=rng.choice([0.3, 0.6]),
                read=rng.choice([0.0, 0.05, 0.2]),
                delay_ready=rng.choice([0.0, 0.3]),
            )
        return cls(
            drop=rng.choice([0.0, 0.01, 0.05, 0.15]),
            duplicate=rng.choice([0.0, 0.01, 0.05]),
            max_latency=rng.choice([2, 4, 6, 12]),
            partition=rng.choice([0.0, 0.001, 0.004]),
            crash=rng.choice([0.0, 0.0005, 0.002]),
            crash_mid_ready=rng.choice([0.0, 0.001]),
            snapshot=rng.choice([0.0, 0.005, 0.02]),
            transfer=rng.choice([0.0, 0.002]),
            membership=rng.choice([0.0, 0.001, 0.003]),
            propose=rng.choice([0.005, 0.1, 0.3, 0.6]),
            read=rng.choice([0.0, 0.005, 0.05]),
            delay_ready=rng.choice([0.0, 0.1, 0.3]),
        )


class StateMachine:
    """A replicated key-value map plus a hash chain over every applied entry.

    The chain value at index *i* summarises entries 1..i, so comparing it across nodes checks
    state-machine safety without keeping every node's full history.
    """

    def __init__(self) -> None:
        self.applied = 0
        self.chain = b""
        self.kv: dict[str, str] = {}

    def apply(self, e: Entry) -> None:
        if e.index != self.applied + 1:
            raise Violation(f"applied index {e.index} after {self.applied}: gap or repeat")
        h = hashlib.blake2b(self.chain, digest_size=8)
        h.update(e.index.to_bytes(8, "big"))
        h.update(bytes([e.type]))
        h.update(e.data)
        self.chain = h.digest()
        self.applied = e.index
        if e.type is EntryType.NORMAL and e.data:
            key, _, value = e.data.decode().partition("=")
            self.kv[key] = value

    def encode(self) -> bytes:
        return json.dumps([self.applied, self.chain.hex(), self.kv], sort_keys=True).encode()

    def restore(self, data: bytes) -> None:
        if not data:
            self.applied, self.chain, self.kv = 1, b"", {}  # the bootstrap snapshot
            return
        applied, chain, kv = json.loads(data)
        self.applied, self.chain, self.kv = applied, bytes.fromhex(chain), kv


@dataclass
class PendingWrite:
    index: int
    term: int
    data: bytes


@dataclass
class PendingRead:
    context: bytes
    need: int  # highest index acknowledged to a writer before the read was issued
    index: int = -1


@dataclass
class SimNode:
    id: int
    storage: MemoryStorage
    node: RawNode | None = None
    sm: StateMachine = field(default_factory=StateMachine)
    writes: list[PendingWrite] = field(default_factory=list)
    reads: dict[bytes, PendingRead] = field(default_factory=dict)
    retired: bool = False
    retire_at: int = -1
    phase: int = 0


class Simulator:
    def __init__(
        self,
        seed: int,
        trace: Callable[[str], None] | None = None,
        rates: FaultRates | None = None,
        nodes: int | None = None,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.rates = rates or FaultRates.random(self.rng)
        self.trace_fn = trace
        self.now = 0
        self.queue: list[tuple[int, int, Message]] = []
        self.qseq = 0
        self.cut: set[tuple[int, int]] = set()  # (frm, to) pairs that cannot talk
        self.quiesce_after = self.rng.choice([0, 0, 6])
        self.read_only_option = random.Random(f"lease-{seed}").choice(list(ReadOnlyOption))
        """Half the seeds serve reads from the leader's lease (drawn from a stream of its own,
        so every other draw of a seed is the same either way)."""
        n = nodes or self.rng.choice([3, 3, 5])
        conf = ConfState(frozenset(range(1, n + 1)))
        self.nodes: dict[int, SimNode] = {}
        for i in range(1, n + 1):
            sn = SimNode(i, MemoryStorage(conf), phase=self.rng.randrange(SUBSTEPS_PER_TICK))
            self.nodes[i] = sn
            self._start(sn)
        self.next_id = n + 1
        self.next_op = 0
        self.forge_rng = random.Random(f"forge-{seed}")
        self.forge_rate = self.forge_rng.choice([0.0, 0.02, 0.1])
        # checker state
        self.leader_of_term: dict[int, int] = {}
        self.entry_facts: dict[tuple[int, int], tuple[bytes, int]] = {}
        self.committed: dict[int, int] = {}  # index -> term, for every index known committed
        self.max_committed = 1
        self.chain_at: dict[int, bytes] = {}
        self.acked_max = 0
        self.stats = {
            k: 0
            for k in (
                "writes_acked",
                "reads_served",
                "lease_reads_served",
                "elections",
                "snapshots",
                "installs",
                "crashes",
                "partitions",
                "conf_changes",
                "transfers",
                "quiesced_steps",
                "forgeries",
            )
        }

    # ------------------------------------------------------------------ helpers
    def trace(self, s: str) -> None:
        if self.trace_fn is not None:
            self.trace_fn(f"[{self.now // SUBSTEPS_PER_TICK}.{self.now % SUBSTEPS_PER_TICK}] {s}")

    def _start(self, sn: SimNode) -> None:
        snap = sn.storage.snapshot_meta()
        sn.sm = StateMachine()
        if snap.index:
            sn.sm.restore(sn.storage.snapshot_data())
        cfg = Config(
            id=sn.id,
            rng=random.Random(self.rng.getrandbits(64)),
            election_tick=ELECTION_TICK,
            heartbeat_tick=HEARTBEAT_TICK,
            max_size_per_msg=self.rng.choice([200, 4096]),
            max_inflight_msgs=self.rng.choice([2, 64]),
            snapshot_chunk_size=self.rng.choice([16, 64, 4096]),
            snapshot_window=self.rng.choice([1, 3]),
            max_learner_lag=8,
            quiesce_after_ticks=self.quiesce_after,
            read_only_option=self.read_only_option,
            applied=snap.index,
        )
        sn.node = RawNode(cfg, sn.storage)
        sn.writes, sn.reads = [], {}

    def live(self) -> list[SimNode]:
        return [sn for sn in self.nodes.values() if sn.node is not None and not sn.retired]

    def leader(self) -> SimNode | None:
        best: SimNode | None = None
        for sn in self.live():
            assert sn.node is not None
            r = sn.node.raft
            if r.state is StateType.LEADER and (best is None or r.term > best.node.raft.term):  # type: ignore[union-attr]
                best = sn
        return best

    # ------------------------------------------------------------------ network
    def send(self, m: Message) -> None:
        r = self.rates
        if (m.frm, m.to) in self.cut or self.rng.random() < r.drop:
            return
        copies = 2 if self.rng.random() < r.duplicate else 1
        for _ in range(copies):
            self.qseq += 1
            at = self.now + self.rng.randint(1, r.max_latency)
            if r.long_delay and self.rng.random() < r.long_delay:
                at += self.rng.randint(1, 3 * ELECTION_TICK * SUBSTEPS_PER_TICK)
            heapq.heappush(self.queue, (at, self.qseq, m))

    def deliver_due(self) -> None:
        while self.queue and self.queue[0][0] <= self.now:
            _, _, m = heapq.heappop(self.queue)
            sn = self.nodes.get(m.to)
            if sn is None or sn.node is None or sn.retired or (m.frm, m.to) in self.cut:
                continue
            if self.trace_fn is not None:
                self.trace("recv " + m.describe())
            sn.node.step(m)

    # ------------------------------------------------------------------ ready handling
    def handle_ready(self, sn: SimNode) -> None:
        node = sn.node
        assert node is not None
        if not node.has_ready():
            return
        rd = node.ready()
        self._persist(sn, rd)
        if self.rates.crash_mid_ready and self.rng.random() < self.rates.crash_mid_ready:
            self.crash(sn, "after persisting, before sending")
            return
        for m in rd.messages:
            self.send(m)
        for e in rd.committed_entries:
            self._apply(sn, e)
        for rs in rd.read_states:
            pr = sn.reads.get(rs.context)
            if pr is not None:
                pr.index = rs.index
        if rd.soft_state is not None:
            self._on_soft_state(sn)
        node.advance(rd)
        self._check_commit(sn)
        self._serve_reads(sn)

    def _persist(self, sn: SimNode, rd: Ready) -> None:
        st = sn.storage
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)
        for c in rd.snapshot_chunks:
            st.write_snapshot_chunk(c.meta, c.offset, c.data)
        if rd.snapshot is not None:
            data = st.install_snapshot(rd.snapshot)
            sn.sm.restore(data)
            self._check_chain(sn.id, sn.sm)
            self.stats["installs"] += 1
            self.trace(f"node {sn.id} installed snapshot {rd.snapshot.describe()}")
        if rd.entries:
            st.append(rd.entries)
            self._check_log_matching(sn, rd.entries)

    def _apply(self, sn: SimNode, e: Entry) -> None:
        sn.sm.apply(e)
        self._check_chain(sn.id, sn.sm)
        if sn.writes:
            keep = []
            for w in sn.writes:
                if w.index == e.index:
                    if w.term == e.term:
                        if e.data != w.data:
                            raise Violation(f"write {w} applied with other data {e.data!r}")
                        self.acked_max = max(self.acked_max, e.index)
                        self.stats["writes_acked"] += 1
                elif w.index > e.index:
                    keep.append(w)
            sn.writes = keep
        if e.type is EntryType.CONF_CHANGE:
            cc = ConfChange.decode(e.data)
            self.trace(f"node {sn.id} applied {cc.describe()} at {e.index}")
            if sn.node is not None and sn.node.raft.state is StateType.LEADER:
                self.stats["conf_changes"] += 1
            if cc.type is ConfChangeType.REMOVE:
                gone = self.nodes.get(cc.node_id)
                if gone is not None and gone.retire_at < 0:
                    gone.retire_at = self.now + 60 * SUBSTEPS_PER_TICK

    def _serve_reads(self, sn: SimNode) -> None:
        for ctx, pr in list(sn.reads.items()):
            if 0 <= pr.index <= sn.sm.applied:
                if pr.index < pr.need:
                    raise Violation(
                        f"read {ctx!r} on node {sn.id} got index {pr.index}, but a write at "
                        f"{pr.need} was acknowledged before the read was issued"
                    )
                del sn.reads[ctx]
                self.stats["reads_served"] += 1
                if self.read_only_option is ReadOnlyOption.LEASE_BASED:
                    self.stats["lease_reads_served"] += 1

    # ------------------------------------------------------------------ checks
    def _check_log_matching(self, sn: SimNode, ents: list[Entry]) -> None:
        st = sn.storage
        prev_term = st.term(ents[0].index - 1) if ents[0].index - 1 >= st.first_index() - 1 else -1
        facts = self.entry_facts
        for e in ents:
            key = (e.index, e.term)
            fact = facts.get(key)
            if fact is None:
                facts[key] = (e.data, prev_term)
            elif fact[0] != e.data or (prev_term >= 0 and fact[1] >= 0 and fact[1] != prev_term):
                raise Violation(
                    f"log matching: node {sn.id} has entry {e.index}/{e.term} with data "
                    f"{e.data!r} after term {prev_term}; seen before {fact}"
                )
            prev_term = e.term

    def _check_chain(self, node_id: int, sm: StateMachine) -> None:
        seen = self.chain_at.get(sm.applied)
        if seen is None:
            self.chain_at[sm.applied] = sm.chain
        elif seen != sm.chain and sm.applied > 1:
            raise Violation(f"state-machine safety: node {node_id} diverged at {sm.applied}")

    def _check_commit(self, sn: SimNode) -> None:
        assert sn.node is not None
        log = sn.node.raft.log
        lo = max(self.max_committed + 1, log.first_index())
        for i in range(lo, log.committed + 1):
            self.committed[i] = log.term(i)
        self.max_committed = max(self.max_committed, log.committed)
        # The last few committed indexes this node knows must agree with the global record.
        for i in range(max(log.first_index(), log.committed - 3), log.committed + 1):
            t = self.committed.get(i)
            if t is not None and t != log.term(i):
                raise Violation(
                    f"committed entry {i} has term {log.term(i)} on node {sn.id}, {t} elsewhere"
                )

    def _on_soft_state(self, sn: SimNode) -> None:
        assert sn.node is not None
        r = sn.node.raft
        if r.state is not StateType.LEADER:
            return
        self.stats["elections"] += 1
        prev = self.leader_of_term.setdefault(r.term, r.id)
        if prev != r.id:
            raise Violation(f"two leaders in term {r.term}: {prev} and {r.id}")
        self.trace(f"node {r.id} became leader at term {r.term}")
        if r.log.last_index() < self.max_committed:
            raise Violation(
                f"leader completeness: leader {r.id} (term {r.term}) ends at "
                f"{r.log.last_index()}, but {self.max_committed} is committed"
            )
        for i in range(max(r.log.first_index(), 2), self.max_committed + 1):
            t = self.committed.get(i)
            if t is not None and r.log.term(i) != t:
                raise Violation(
                    f"leader completeness: leader {r.id} (term {r.term}) has term "
                    f"{r.log.term(i)} at committed index {i}, which is {t}"
                )

    def _check_one_leader_per_term(self) -> None:
        for sn in self.live():
            assert sn.node is not None
            r = sn.node.raft
            if r.state is StateType.LEADER:
                prev = self.leader_of_term.setdefault(r.term, r.id)
                if prev != r.id:
                    raise Violation(f"two leaders in term {r.term}: {prev} and {r.id}")

    # ------------------------------------------------------------------ faults and clients
    def crash(self, sn: SimNode, why: str = "") -> None:
        sn.node = None
        self.stats["crashes"] += 1
        self.trace(f"crash node {sn.id} {why}".rstrip())

    def restart(self, sn: SimNode) -> None:
        self._start(sn)
        self.trace(f"restart node {sn.id}")

    def _random_events(self) -> None:
        r, rng = self.rates, self.rng
        ids = [i for i, sn in self.nodes.items() if not sn.retired]
        if r.partition and rng.random() < r.partition and len(ids) > 1:
            rng.shuffle(ids)
            k = rng.randrange(1, len(ids))
            a, b = ids[:k], ids[k:]
            one_way = rng.random() < 0.3
            for x in a:
                for y in b:
                    self.cut.add((x, y))
                    if not one_way:
                        self.cut.add((y, x))
            self.stats["partitions"] += 1
            self.trace(f"partition {sorted(a)} {'->' if one_way else '|'} {sorted(b)}")
        if self.cut and rng.random() < r.heal:
            self.cut.clear()
            self.trace("heal")
        if r.crash and rng.random() < r.crash:
            ld = self.leader()
            live = self.live()
            if ld is not None and rng.random() < 0.5:
                self.crash(ld, "(the leader)")
            elif live:
                self.crash(rng.choice(live))
        for sn in self.nodes.values():
            if sn.node is None and not sn.retired and rng.random() < r.restart:
                self.restart(sn)
        if r.snapshot and rng.random() < r.snapshot:
            live = self.live()
            if live:
                self.take_snapshot(rng.choice(live))
        if r.transfer and rng.random() < r.transfer:
            ld = self.leader()
            if ld is not None:
                assert ld.node is not None
                target = rng.choice(sorted(ld.node.raft.conf.voters))
                self.trace(f"transfer leadership {ld.id} -> {target}")
                self.stats["transfers"] += 1
                ld.node.transfer_leader(target)
        if r.membership and rng.random() < r.membership:
            self.change_membership()

    def take_snapshot(self, sn: SimNode, keep: int | None = None) -> None:
        assert sn.node is not None
        st = sn.storage
        applied = sn.sm.applied
        if applied <= st.snapshot_meta().index:
            return
        conf = sn.node.conf_state_at(applied)
        st.create_snapshot(applied, conf, sn.sm.encode())
        keep = self.rng.choice([0, 2, 10]) if keep is None else keep
        st.compact(max(st.first_index() - 1, applied - keep))
        self.stats["snapshots"] += 1
        self.trace(f"node {sn.id} snapshot at {applied}, log from {st.first_index()}")

    def change_membership(self) -> None:
        ld = self.leader()
        if ld is None:
            return
        assert ld.node is not None
        conf = ld.node.raft.conf
        choice = self.rng.random()
        try:
            if choice < 0.4 and len(conf.learners) < 2 and len(conf.voters) < 5:
                new = SimNode(self.next_id, MemoryStorage(), phase=self.rng.randrange(4))
                self.next_id += 1
                self.nodes[new.id] = new
                self._start(new)
                ld.node.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, new.id))
                self.trace(f"propose add-learner {new.id}")
            elif choice < 0.7 and conf.learners:
                target = self.rng.choice(sorted(conf.learners))
                ld.node.propose_conf_change(ConfChange(ConfChangeType.PROMOTE, target))
                self.trace(f"propose promote {target}")
            elif len(conf.voters) > 3 or conf.learners:
                pool = sorted(conf.learners) if len(conf.voters) <= 3 else sorted(conf.voters)
                target = self.rng.choice(pool)
                ld.node.propose_conf_change(ConfChange(ConfChangeType.REMOVE, target))
                self.trace(f"propose remove {target}")
        except ProposalDropped as e:
            self.trace(f"membership change dropped: {e}")

    def client_ops(self) -> None:
        r, rng = self.rates, self.rng
        live = self.live()
        if not live:
            return
        if rng.random() < r.propose:
            # Clients find *a* node that believes it leads, stale leaders included: that is
            # how divergent log tails come about.
            leaders = [
                x for x in live if x.node is not None and x.node.raft.state is StateType.LEADER
            ]
            sn = rng.choice(leaders) if leaders and rng.random() < 0.9 else rng.choice(live)
            assert sn.node is not None
            self.next_op += 1
            data = f"k{rng.randrange(5)}=v{self.next_op}".encode()
            try:
                index, term = sn.node.propose(data)
                sn.writes.append(PendingWrite(index, term, data))
            except ProposalDropped:
                pass
        if r.read and rng.random() < r.read:
            sn = rng.choice(live)
            assert sn.node is not None
            self.next_op += 1
            ctx = f"r{self.next_op}".encode()
            try:
                sn.node.read_index(ctx)
                sn.reads[ctx] = PendingRead(ctx, self.acked_max)
            except ProposalDropped:
                pass

    # ------------------------------------------------------------------ main loop
    def step(self, faults: bool) -> None:
        self.now += 1
        sub = self.now % SUBSTEPS_PER_TICK
        for sn in list(self.nodes.values()):
            if sn.retire_at >= 0 and self.now >= sn.retire_at and not sn.retired:
                sn.retired = True
                self.trace(f"node {sn.id} retired")
            if sn.node is not None and not sn.retired and sn.phase == sub:
                sn.node.tick()
        if faults:
            self._random_events()
        self._failure_detector()
        self.deliver_due()
        if self.forge_rate and self.forge_rng.random() < self.forge_rate:
            self.forge()
        self.client_ops()
        for sn in self.live():
            if faults and self.rng.random() < self.rates.delay_ready:
                continue
            self.handle_ready(sn)
        self._check_one_leader_per_term()

    # ------------------------------------------------------------------ forged messages
    def forge(self) -> None:
        """Hand one live node a forged message and check that it changed nothing."""
        live = self.live()
        if not live:
            return
        sn = self.forge_rng.choice(live)
        assert sn.node is not None
        r = sn.node.raft
        m = self._forged_message(r)
        if m is None:
            return
        before = self._forgery_view(sn)
        ignored = r.ignored
        self.trace(f"forged to node {sn.id}: {m.describe()}")
        sn.node.step(m)
        self.stats["forgeries"] += 1
        if r.ignored != ignored + 1 or self._forgery_view(sn) != before:
            raise Violation(f"forged message accepted by node {sn.id}: {m.describe()}")

    @staticmethod
    def _forgery_view(sn: SimNode) -> tuple[object, ...]:
        assert sn.node is not None
        r = sn.node.raft
        return (
            r.hard_state(),
            r.log.last_index(),
            r.log.last_term(),
            r.lead,
            r.state,
            r.conf,
            len(r.msgs),
            len(r.read_states),
        )

    def _forged_message(self, r: Raft) -> Message | None:
        """One of the forgeries the core must drop on its own (the module docstring)."""
        rng = self.forge_rng
        kind = rng.choice(["out-of-range", "stranger", "impostor"])
        last, last_term = r.log.last_index(), r.log.last_term()
        stranger = STRANGERS + rng.randrange(1000)
        huge = rng.choice([MAX_WIRE_INT + 1, 2**64 - 1])
        if kind == "out-of-range":
            frm = rng.choice([stranger, *sorted((r.conf.voters | r.conf.learners) - {r.id})])
            field = rng.choice(["term", "index", "commit", "entry"])
            term = huge if field == "term" else max(r.term, 1)
            return Message(
                rng.choice([MessageType.HEARTBEAT, MessageType.APP, MessageType.VOTE]),
                r.id,
                frm,
                term,
                log_term=min(last_term, term),
                index=huge if field == "index" else last,
                commit=huge if field == "commit" else 0,
                entries=(Entry(huge, last + 1),) if field == "entry" else (),
            )
        if kind == "stranger":
            t = rng.choice(sorted(_STRANGER_TYPES))
            term = r.term + rng.randrange(0, 3) or 1
            return Message(
                t,
                r.id,
                stranger,
                term,
                log_term=min(last_term, term),
                index=last + 5,
                snapshot=SnapshotMeta(last, min(last_term, term)) if t is MT_SNAP_RESP else None,
            )
        if r.lead == NO_NODE or not r.term:
            return None  # an impostor needs a known leader to impersonate against
        members = sorted((r.conf.voters | r.conf.learners | {stranger}) - {r.lead, r.id})
        frm = rng.choice(members)
        t = rng.choice(sorted(_IMPOSTOR_TYPES))
        if t is MessageType.SNAP:
            meta = SnapshotMeta(last + 10, r.term, r.conf)
            return Message(t, r.id, frm, r.term, snapshot=meta, snap_data=b"forged", snap_done=True)
        return Message(
            t,
            r.id,
            frm,
            r.term,
            log_term=last_term,
            index=last,
            entries=(Entry(r.term, last + 1, b"forged"),) if t is MessageType.APP else (),
            commit=last + 1 if t is MessageType.APP else last,
            context=b"forged",
        )

    def _failure_detector(self) -> None:
        """What the runtime's transport does for quiesced followers: wake them when the link
        to their leader's node is gone (the node crashed, retired or is cut off)."""
        for sn in self.live():
            assert sn.node is not None
            r = sn.node.raft
            if not r.quiesced:
                continue
            if r.state is StateType.LEADER:
                self.stats["quiesced_steps"] += 1
                continue
            ld = self.nodes.get(r.lead)
            if ld is None or ld.node is None or ld.retired or (r.lead, sn.id) in self.cut:
                self.trace(f"node {sn.id} wakes: its leader {r.lead} is unreachable")
                sn.node.wake(leader_unreachable=True)

    def calm(self) -> None:
        """Stop faults: heal the network, restart crashed nodes, stop losing messages."""
        self.cut.clear()
        self.rates.drop = self.rates.duplicate = 0.0
        self.rates.crash_mid_ready = 0.0
        self.rates.max_latency = 2  # links behave like TCP again: little reordering
        self.rates.long_delay = 0.0
        for sn in self.nodes.values():
            if sn.node is None and not sn.retired:
                self.restart(sn)
        self.trace("calm: faults stop")

    def run(self, steps: int, liveness_ticks: int = 300) -> dict[str, int]:
        try:
            for _ in range(steps):
                self.step(faults=True)
            self.calm()
            self._check_liveness(liveness_ticks)
        except InvariantViolation as e:
            raise Violation(f"core invariant: {e}") from e
        return self.stats

    def _check_liveness(self, ticks: int) -> None:
        deadline = self.now + ticks * SUBSTEPS_PER_TICK
        self.rates.propose = 0.0
        marker: tuple[SimNode, int, int] | None = None
        while self.now < deadline:
            self.step(faults=False)
            ld = self.leader()
            if ld is None or ld.node is None:
                continue
            if marker is None or marker[0] is not ld:
                try:
                    index, term = ld.node.propose(b"liveness=ok")
                except ProposalDropped:
                    continue
                marker = (ld, index, term)
            elif ld.sm.applied >= marker[1]:
                if ld.storage.term(marker[1]) == marker[2] or marker[1] <= ld.storage.first_index():
                    self._check_converged(deadline)
                    return
                marker = None
        raise Violation(f"liveness: no proposal committed within {ticks} ticks of calm")

    def _check_converged(self, deadline: int) -> None:
        """Every live member catches up with the leader's commit index."""
        while self.now < deadline:
            ld = self.leader()
            members = [
                sn
                for sn in self.live()
                if ld is not None
                and ld.node is not None
                and sn.id in (ld.node.raft.conf.voters | ld.node.raft.conf.learners)
            ]
            if (
                ld is not None
                and ld.node is not None
                and all(sn.sm.applied == ld.node.raft.log.committed for sn in members)
            ):
                for sn in members:
                    self._check_chain(sn.id, sn.sm)
                return
            self.step(faults=False)
        raise Violation("liveness: members did not converge after calm")


MT_SNAP_RESP = MessageType.SNAP_RESP
_STRANGER_TYPES = frozenset(MessageType) - {
    MessageType.HUP,
    MessageType.BEAT,
    MessageType.PROP,
    MessageType.APP,
    MessageType.HEARTBEAT,
    MessageType.SNAP,
}
"""What a node takes only from members: everything but a leader's own traffic (which a node
whose log is behind must take from a member it does not know yet; see ``Raft._accepts_sender``)."""

_IMPOSTOR_TYPES = frozenset(
    {
        MessageType.APP,
        MessageType.HEARTBEAT,
        MessageType.SNAP,
        MessageType.TIMEOUT_NOW,
        MessageType.READ_INDEX_RESP,
    }
)
"""What only the leader of a term sends."""


def run_seed(seed: int, steps: int, trace: bool = False) -> tuple[int, str | None, dict[str, int]]:
    lines: list[str] = []
    sim = Simulator(seed, trace=lines.append if trace else None)
    try:
        stats = sim.run(steps)
    except Exception as e:  # any crash of the core is a failure of this seed, not of the sweep
        if trace:
            print("\n".join(lines))
            traceback.print_exc()
        kind = "" if isinstance(e, Violation) else f"{type(e).__name__}: "
        return seed, kind + str(e), sim.stats
    return seed, None, stats


def _run_seed_args(args: tuple[int, int]) -> tuple[int, str | None, dict[str, int]]:
    return run_seed(*args)


def sweep(
    seeds: range, steps: int, jobs: int, out: Callable[[str], None] = print
) -> list[tuple[int, str]]:
    failures: list[tuple[int, str]] = []
    totals: dict[str, int] = {}
    started = time.monotonic()
    work = [(s, steps) for s in seeds]
    if jobs > 1:
        # spawn, not fork: the caller may hold threads (gRPC, a test session's clients) that a
        # forked child would inherit in an arbitrary state
        with multiprocessing.get_context("spawn").Pool(jobs) as pool:
            results = pool.imap_unordered(_run_seed_args, work, chunksize=8)
            for seed, err, stats in results:
                _tally(seed, err, stats, totals, failures, steps, out)
    else:
        for seed, err, stats in map(_run_seed_args, work):
            _tally(seed, err, stats, totals, failures, steps, out)
    took = time.monotonic() - started
    out(
        f"{len(work)} seeds x {steps} steps in {took:.1f}s: {len(failures)} failed; "
        + ", ".join(f"{k}={v}" for k, v in sorted(totals.items()))
    )
    return failures


def _tally(
    seed: int,
    err: str | None,
    stats: dict[str, int],
    totals: dict[str, int],
    failures: list[tuple[int, str]],
    steps: int,
    out: Callable[[str], None],
) -> None:
    for k, v in stats.items():
        totals[k] = totals.get(k, 0) + v
    if err is not None:
        failures.append((seed, err))
        out(f"FAIL seed {seed}: {err}")
        out(f"  replay: python -m keelfs.raft.sim --seed {seed} --steps {steps} --trace")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m keelfs.raft.sim", description=__doc__.split("\n")[0]
    )
    p.add_argument("--seeds", type=int, default=100, help="number of seeds to run")
    p.add_argument("--start", type=int, default=0, help="first seed")
    p.add_argument("--seed", type=int, help="run just this seed")
    p.add_argument("--steps", type=int, default=2000, help="substeps of faults per seed")
    p.add_argument("--jobs", type=int, default=multiprocessing.cpu_count())
    p.add_argument("--trace", action="store_true", help="print every event (with --seed)")
    a = p.parse_args(argv)
    if a.seed is not None:
        seed, err, stats = run_seed(a.seed, a.steps, trace=a.trace)
        print(f"seed {seed}: {'FAIL: ' + err if err else 'ok'} {stats}")
        return 1 if err else 0
    failures = sweep(range(a.start, a.start + a.seeds), a.steps, a.jobs)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
