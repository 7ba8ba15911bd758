"""Helpers for the Raft core unit tests (``test_core_*.py``).

``Network`` is a tiny, fully deterministic in-memory cluster of ``RawNode``s: every ``Ready`` is
handled the way the runtime handles it (persist hard state, snapshot chunks, snapshot and
entries into the node's ``MemoryStorage`` *before* its messages are queued; apply committed
entries; collect read states), and messages sit in one FIFO queue until a test delivers them.
Tests can deliver everything, deliver only messages matching a predicate (the rest stay
queued), take messages out of the queue (to drop or to inspect them), cut links between pairs
of nodes, or install a ``drop`` predicate that loses matching messages when they are sent.

The module also builds storages with hand-made logs (``storage_with``) and takes a fingerprint
of a ``Raft``'s whole observable state (``fingerprint``) for "this input changed nothing" tests.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Iterable
from typing import Any

from keelfs.raft.core import Config, Raft, StateType
from keelfs.raft.messages import (
    ConfState,
    Entry,
    HardState,
    Message,
    MessageType,
)
from keelfs.raft.rawnode import RawNode, Ready
from keelfs.raft.read_only import ReadState
from keelfs.raft.storage import MemoryStorage

MT = MessageType
ELECTION = 10
HEARTBEAT = 1

Pred = Callable[[Message], bool]


def conf(voters: Iterable[int], learners: Iterable[int] = ()) -> ConfState:
    return ConfState(frozenset(voters), frozenset(learners))


def config(node_id: int, seed: int | None = None, **kw: Any) -> Config:
    """A test Config: election_tick=10, heartbeat_tick=1, rng seeded with ``seed`` (or the id)."""
    kw.setdefault("election_tick", ELECTION)
    kw.setdefault("heartbeat_tick", HEARTBEAT)
    return Config(id=node_id, rng=random.Random(node_id if seed is None else seed), **kw)


def storage_with(
    voters: Iterable[int] = (1, 2, 3),
    terms: Iterable[int] = (),
    *,
    term: int | None = None,
    vote: int = 0,
    commit: int = 1,
    learners: Iterable[int] = (),
    data: Callable[[int], bytes] | None = None,
) -> MemoryStorage:
    """A bootstrapped storage (snapshot at 1/1) followed by one entry per item of ``terms``.

    The entries get indexes 2, 3, ...; their data is ``data(index)`` (default ``b"e<index>"``).
    The hard state's term defaults to the last entry's term.
    """
    st = MemoryStorage(conf(voters, learners))
    ents = []
    for i, t in enumerate(terms):
        index = i + 2
        ents.append(Entry(t, index, data(index) if data else f"e{index}".encode()))
    st.append(ents)
    last_term = ents[-1].term if ents else 1
    st.set_hard_state(HardState(last_term if term is None else term, vote, commit))
    return st


def log_entries(r: Raft) -> list[Entry]:
    """Every entry the node's log holds (stable and unstable)."""
    log = r.log
    return log.slice(log.first_index(), log.last_index() + 1, 1 << 62)


def log_terms(r: Raft) -> list[tuple[int, int]]:
    return [(e.index, e.term) for e in log_entries(r)]


_OPAQUE = object()


def _plain(v: Any) -> Any:
    """``v`` if it is a plain comparable value (or a dict of them), else ``_OPAQUE``."""
    if v is None or isinstance(v, int | str | bytes | enum.Enum):
        return v
    if isinstance(v, dict):
        items = [(_plain(k), _plain(x)) for k, x in v.items()]
        if all(k is not _OPAQUE and x is not _OPAQUE for k, x in items):
            return tuple(sorted(items, key=repr))
    return _OPAQUE


def fingerprint(r: Raft) -> tuple[Any, ...]:
    """Everything about a node's state that a message could change.

    Every plain attribute of the Raft object (terms, timers, flags, counters other than
    ``ignored``, dicts of those) is included automatically, so state added to the core later is
    covered too; the structured parts (log, configuration, progress, outputs) are spelt out.
    """
    log = r.log
    scalars = []
    for k, v in sorted(vars(r).items()):
        p = _plain(v)
        if k != "ignored" and p is not _OPAQUE:
            scalars.append((k, p))
    pending = getattr(r.read_only, "pending_count", None)
    return (
        tuple(scalars),
        r.hard_state(),
        log.committed,
        log.applied,
        log.first_index(),
        log.last_index(),
        tuple(log_entries(r)),
        log.unstable.snapshot,
        r.conf,
        tuple(r.conf_history),
        tuple(sorted((i, pr.describe(), pr.inflights.count()) for i, pr in r.prs.items())),
        pending() if pending is not None else None,
        tuple(r.pending_reads),
        r.receiving,
        tuple(r.msgs),
        tuple(r.read_states),
        tuple(r.snapshot_chunks),
    )


class Network:
    """A deterministic in-memory cluster; see the module docstring."""

    def __init__(
        self,
        ids: Iterable[int] = (1, 2, 3),
        *,
        learners: Iterable[int] = (),
        storages: dict[int, MemoryStorage] | None = None,
        seed: int = 0,
        configs: dict[int, dict[str, Any]] | None = None,
        **cfg: Any,
    ) -> None:
        ids = list(ids)
        learners = list(learners)
        members = conf(ids, learners)
        self.nodes: dict[int, RawNode] = {}
        self.storages: dict[int, MemoryStorage] = {}
        self.queue: list[Message] = []
        self.sent: list[Message] = []  # every message any node emitted, in order
        self.delivered: list[Message] = []
        self.lost: list[Message] = []
        self.cut: set[tuple[int, int]] = set()
        self.drop: Pred | None = None
        self.applied: dict[int, list[Entry]] = {}
        self.read_states: dict[int, list[ReadState]] = {}
        self.readies: dict[int, list[Ready]] = {}
        self.installed: dict[int, list[bytes]] = {}
        for i in [*ids, *learners]:
            st = storages[i] if storages and i in storages else MemoryStorage(members)
            kw = dict(cfg)
            if configs and i in configs:
                kw.update(configs[i])
            self.add(i, st, seed=seed * 1000 + i, **kw)

    # ------------------------------------------------------------------ membership of the net
    def add(self, node_id: int, storage: MemoryStorage | None = None, **cfg: Any) -> RawNode:
        """Start a node (an empty storage by default: a node about to join the group)."""
        st = storage if storage is not None else MemoryStorage()
        seed = cfg.pop("seed", node_id)
        snap = st.snapshot_meta()
        cfg.setdefault("applied", snap.index)
        node = RawNode(config(node_id, seed, **cfg), st)
        self.nodes[node_id] = node
        self.storages[node_id] = st
        self.applied.setdefault(node_id, [])
        self.read_states.setdefault(node_id, [])
        self.readies.setdefault(node_id, [])
        self.installed.setdefault(node_id, [])
        return node

    def raft(self, node_id: int) -> Raft:
        return self.nodes[node_id].raft

    def leader(self) -> int:
        leaders = [i for i, n in self.nodes.items() if n.raft.state is StateType.LEADER]
        assert len(leaders) == 1, f"expected one leader, got {leaders}"
        return leaders[0]

    # ------------------------------------------------------------------ readies
    def flush(self) -> None:
        """Handle every node's pending Ready (persist, queue messages, apply, advance)."""
        busy = True
        while busy:
            busy = False
            for i in sorted(self.nodes):
                node = self.nodes[i]
                while node.has_ready():
                    busy = True
                    self._handle_ready(i, node)

    def _handle_ready(self, i: int, node: RawNode) -> None:
        rd = node.ready()
        self.readies[i].append(rd)
        st = self.storages[i]
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)
        for c in rd.snapshot_chunks:
            st.write_snapshot_chunk(c.meta, c.offset, c.data)
        if rd.snapshot is not None:
            self.installed[i].append(st.install_snapshot(rd.snapshot))
        if rd.entries:
            st.append(rd.entries)
        for m in rd.messages:
            self.sent.append(m)
            if self._lost(m):
                self.lost.append(m)
            else:
                self.queue.append(m)
        self.applied[i].extend(rd.committed_entries)
        self.read_states[i].extend(rd.read_states)
        node.advance(rd)

    def _lost(self, m: Message) -> bool:
        return (m.frm, m.to) in self.cut or (self.drop is not None and self.drop(m))

    # ------------------------------------------------------------------ network
    def step(self, m: Message) -> None:
        """Hand one message to its addressee (unless the link is cut)."""
        node = self.nodes.get(m.to)
        if node is None or self._lost(m):
            self.lost.append(m)
            return
        self.delivered.append(m)
        node.step(m)

    def deliver(self, pred: Pred | None = None, limit: int = 100_000) -> int:
        """Deliver queued messages matching ``pred`` (all by default), including the ones they
        cause, until none matches; others stay queued. Returns how many were delivered."""
        n = 0
        while True:
            self.flush()
            at = next(
                (k for k, m in enumerate(self.queue) if pred is None or pred(m)),
                None,
            )
            if at is None:
                return n
            self.step(self.queue.pop(at))
            n += 1
            if n > limit:
                raise RuntimeError("message storm: delivery did not converge")

    def take(self, pred: Pred | None = None) -> list[Message]:
        """Remove and return the queued messages matching ``pred``."""
        self.flush()
        out = [m for m in self.queue if pred is None or pred(m)]
        self.queue = [m for m in self.queue if not (pred is None or pred(m))]
        return out

    def pending(self, pred: Pred | None = None) -> list[Message]:
        self.flush()
        return [m for m in self.queue if pred is None or pred(m)]

    def isolate(self, node_id: int) -> None:
        for other in self.nodes:
            if other != node_id:
                self.cut.add((node_id, other))
                self.cut.add((other, node_id))

    def heal(self) -> None:
        self.cut.clear()
        self.drop = None

    # ------------------------------------------------------------------ driving
    def tick(self, ids: Iterable[int] | None = None, n: int = 1, deliver: bool = True) -> None:
        for _ in range(n):
            for i in sorted(self.nodes) if ids is None else list(ids):
                self.nodes[i].tick()
            if deliver:
                self.deliver()
            else:
                self.flush()

    def elect(self, node_id: int) -> None:
        """Make ``node_id`` campaign, deliver everything, and check it leads."""
        self.nodes[node_id].campaign()
        self.deliver()
        assert self.raft(node_id).state is StateType.LEADER, self.raft(node_id).status()

    def propose(self, node_id: int, data: bytes) -> tuple[int, int]:
        return self.nodes[node_id].propose(data)

    def snapshot_and_compact(self, node_id: int, image: bytes, index: int | None = None) -> None:
        """Snapshot node ``node_id``'s state at ``index`` (its applied index) and compact."""
        r = self.raft(node_id)
        st = self.storages[node_id]
        at = r.log.applied if index is None else index
        st.create_snapshot(at, r.conf_state_at(at), image)
        st.compact(at)


def of_type(*types: MessageType, to: int | None = None, frm: int | None = None) -> Pred:
    """A predicate for messages of these types (and, if given, to / from these nodes)."""
    wanted = frozenset(types)

    def pred(m: Message) -> bool:
        return m.type in wanted and (to is None or m.to == to) and (frm is None or m.frm == frm)

    return pred
