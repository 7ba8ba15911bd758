"""Scripted, golden-output scenarios for the Raft core (after etcd-io/raft's interaction tests).

A scenario script drives a small cluster of ``RawNode``s over ``MemoryStorage``. Nothing happens
on its own: time passes only when a command ticks a node, and a message moves only when a command
delivers it. Every node has its own queue of messages addressed to it; ``process-ready`` puts the
messages a node sends on their recipients' queues, ``deliver-msgs`` feeds a queue to its node.
Everything is deterministic (node *i* draws its randomized election timeouts from
``random.Random(i)``, also after a restart), so a script's output can be kept as a golden file.

Each node's state machine is the list of the DATA words of the normal entries it applied; its
snapshot image is those words joined by spaces, which is what ``compact`` stores and what a
follower restores when it installs a snapshot.

Script files use the datadriven format::

    # comments and blank lines between commands are kept as they are
    command arg key=value key=(1,2,3)
    ----
    expected output (``ok`` when the command prints nothing)

An output containing blank lines is written between ``----``/``----`` pairs, as datadriven
does. ``run_script`` runs a whole file and returns it with the actual outputs; run this module
(``python -m keelfs.testing.scenario [--rewrite] FILE...``) to check or rewrite files.

Commands
--------

Node ids are positive integers; a list is written ``(1,2,3)`` or ``(1 2 3)``.

``add-nodes N [voters=(..)] [learners=(..)] [pre-vote=true] [check-quorum=true] [election=10]
[heartbeat=1] [max-size=1048576] [max-inflight=256] [lease-read=false] [snapshot-chunk=1048576]
[snapshot-window=4] [max-learner-lag=64]``
    Add N nodes with the next free ids. Each gets a ``MemoryStorage`` bootstrapped with the
    given configuration (a snapshot at index 1 term 1). Without ``voters``/``learners`` the
    first ``add-nodes`` makes the new nodes the voters, and a later one gives them empty
    storage: they are joiners, to be added by a conf change and caught up by a snapshot.
    ``election``/``heartbeat`` are ticks; the other options map to ``Config`` fields.
    Prints the state of each new node (as ``raft-state`` does).
``campaign ID``
    The node starts an election (pre-vote first when enabled), as if its timer had fired.
``tick-heartbeat ID``
    Tick the node ``heartbeat`` times.
``tick ID N``
    Tick the node N times; prints where its election timer stands afterwards.
``tick-election ID``
    Tick the node exactly as many times as it takes for its election timer to fire: a
    follower or candidate ticks until ``election_elapsed`` reaches its *randomized* timeout
    (``randomized_election_timeout``, drawn in [election, 2*election)); a leader ticks until
    its elapsed time reaches the plain ``election`` setting, when it checks its quorum and
    aborts a stalled leadership transfer. (etcd's ``tick-election`` always ticks
    ``election`` times and pins the randomized timeout to it; here the timeout stays
    randomized, so the number of ticks is printed.)
``propose ID DATA``
    Propose DATA (one word). Prints nothing unless the proposal is refused.
``propose-conf-change ID add-learner|promote|remove NODE``
    Propose a single-server membership change.
``read-index ID CTX``
    Ask for a linearizable read; the answer comes as a ReadState in a later Ready.
``transfer-leadership FROM TO``
    Ask node FROM (the leader, or a follower which forwards it) to hand leadership to TO.
``compact ID INDEX``
    Snapshot the node's state machine as of INDEX (which it must have applied) into its
    storage and drop the log up to INDEX.
``crash ID`` / ``restart ID``
    Crash the node: its in-memory state, including anything not yet handed out in a Ready,
    is lost; messages delivered to it while down are dropped (``(dropped: ID is down)``).
    Restart builds a new RawNode from its storage, restores the state machine from the stored
    snapshot (so committed entries after it are applied again) and prints its state.
``process-ready ID...``
    For each node: take one Ready; persist it (hard state, snapshot chunks, snapshot, entries,
    in that order); print it (soft state, hard state, entries, snapshot chunks, the installed
    snapshot with the image restored from it, messages, committed entries, read states);
    queue its messages; apply its committed entries; advance. A node with nothing to do
    prints ``> ID has no Ready``.
``deliver-msgs [drop=ID|(..)] [count=N] [ID...]``
    Step every message queued for each node ID into that node, printing it; with ``drop``
    discard the messages queued for those nodes instead. ``count`` takes only the first N
    messages of each named queue.
``send-msg FROM TO TYPE [term=N] [log-term=N] [index=N] [commit=N] [entries=(T/I ...)]
[snapshot=T/I] [reject=true] [data=WORD]``
    Queue a message for TO as if FROM had sent it, however no correct node would: forged
    messages, for the tests of what the core drops. TYPE is the message type's name without
    ``Msg`` (``Heartbeat``, ``App``, ``Vote``, ...); integers may be any size. Each entry is
    ``term/index``, with DATA (default ``forged``) as its data; ``snapshot`` names the
    snapshot of a ``Snap`` (carrying FROM's configuration, one chunk of DATA, done). Prints
    the message. A message that the recipient then drops is marked ``(ignored)`` when
    delivered.
``stabilize [ID...]``
    Repeat rounds until nothing happens, printing everything: each round handles one Ready of
    every named node (default: all) that has one, then delivers the queue of every named node,
    in id order. Down nodes handle no Ready, and messages delivered to them are dropped;
    messages queued for nodes not named stay queued.
``partition (..) (..) ...`` / ``heal``
    Cut every link between nodes of different groups (nodes left out keep all their links;
    a new partition replaces the previous one); ``heal`` restores all links. A message sent,
    or delivered, over a cut link is dropped, and marked ``(dropped: partitioned)``.
``raft-state``
    One line per node: role, term, vote, leader, commit, applied, last index, configuration.
``raft-log ID``
    The node's durable log: its snapshot, then its entries.
``status ID``
    The node's state line and, on a leader, the progress of each member and any transfer.

Output conventions: ``Message.describe()`` and ``Entry.describe()`` (``term/index data``)
formats; sections of a Ready are indented under ``> ID handling Ready``. Errors raised by the
core (``ProposalDropped``, ``NotLeaderError``, ``ValueError`` for invalid conf changes,
``InvariantViolation``) are printed as ``error: Type: message``; a malformed command raises
``ScenarioError``.
"""

from __future__ import annotations

import argparse
import difflib
import random
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from keelfs.raft.core import Config, ReadOnlyOption, StateType
from keelfs.raft.errors import RaftError
from keelfs.raft.messages import (
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

MAX_STABILIZE_ROUNDS = 1000
"""``stabilize`` gives up after this many rounds (a livelock is worth an error, not a hang)."""


class ScenarioError(Exception):
    """The script itself is wrong: unknown command, bad argument, unknown node."""


# ---------------------------------------------------------------------------------- commands
_TOKEN = re.compile(r"[^\s=()]+=\([^)]*\)|\([^)]*\)|\S+")


@dataclass(frozen=True)
class Command:
    name: str
    pos: tuple[str, ...]
    kw: dict[str, str]
    line: int = 0

    @classmethod
    def parse(cls, text: str, line: int = 0) -> Command:
        toks = _TOKEN.findall(text)
        if not toks:
            raise ScenarioError(f"line {line}: empty command")
        pos: list[str] = []
        kw: dict[str, str] = {}
        for t in toks[1:]:
            key, eq, value = t.partition("=")
            if eq and not key.startswith("("):
                if key in kw:
                    raise ScenarioError(f"line {line}: argument {key} given twice")
                kw[key] = value
            else:
                pos.append(t)
        return cls(toks[0], tuple(pos), kw, line)


def _int(s: str, what: str) -> int:
    try:
        return int(s)
    except ValueError:
        raise ScenarioError(f"{what}: not an integer: {s!r}") from None


def _ids(s: str, what: str) -> list[int]:
    """``3``, ``(1,2,3)`` or ``(1 2 3)``."""
    body = s[1:-1] if s.startswith("(") and s.endswith(")") else s
    return [_int(p, what) for p in re.split(r"[\s,]+", body.strip()) if p]


def _bool(s: str, what: str) -> bool:
    if s in ("true", "false"):
        return s == "true"
    raise ScenarioError(f"{what}: expected true or false, got {s!r}")


# ---------------------------------------------------------------------------------- nodes
@dataclass
class NodeOptions:
    pre_vote: bool = True
    check_quorum: bool = True
    election: int = 10
    heartbeat: int = 1
    max_size: int = 1 << 20
    max_inflight: int = 256
    lease_read: bool = False
    snapshot_chunk: int = 1 << 20
    snapshot_window: int = 4
    max_learner_lag: int = 64

    def config(self, node_id: int, applied: int) -> Config:
        return Config(
            id=node_id,
            rng=random.Random(node_id),
            election_tick=self.election,
            heartbeat_tick=self.heartbeat,
            pre_vote=self.pre_vote,
            check_quorum=self.check_quorum,
            max_size_per_msg=self.max_size,
            max_inflight_msgs=self.max_inflight,
            snapshot_chunk_size=self.snapshot_chunk,
            snapshot_window=self.snapshot_window,
            read_only_option=(
                ReadOnlyOption.LEASE_BASED if self.lease_read else ReadOnlyOption.SAFE
            ),
            max_learner_lag=self.max_learner_lag,
            applied=applied,
        )


_BOOL_OPTIONS = {"pre-vote": "pre_vote", "check-quorum": "check_quorum", "lease-read": "lease_read"}
_INT_OPTIONS = {
    "election": "election",
    "heartbeat": "heartbeat",
    "max-size": "max_size",
    "max-inflight": "max_inflight",
    "snapshot-chunk": "snapshot_chunk",
    "snapshot-window": "snapshot_window",
    "max-learner-lag": "max_learner_lag",
}


@dataclass
class ScenarioNode:
    id: int
    opts: NodeOptions
    storage: MemoryStorage
    raw: RawNode | None = None
    applied: list[tuple[int, bytes]] = field(default_factory=list)
    """The state machine: every non-empty normal entry applied, with its index (entries restored
    from a snapshot carry the snapshot's index)."""
    applied_index: int = 0

    def start(self) -> None:
        snap = self.storage.snapshot_meta()
        self.restore(snap.index, self.storage.snapshot_data())
        self.raw = RawNode(self.opts.config(self.id, snap.index), self.storage)

    def restore(self, index: int, image: bytes) -> None:
        self.applied = [(index, p) for p in image.split(b" ")] if image else []
        self.applied_index = index

    def image(self, index: int) -> bytes:
        return b" ".join(d for i, d in self.applied if i <= index)


def _state_name(s: StateType) -> str:
    return "State" + "".join(p.capitalize() for p in s.name.split("_"))


def _show_bytes(b: bytes) -> str:
    return repr(b.decode("utf-8", "backslashreplace"))


class Scenario:
    """The interpreter: ``run(command_line)`` returns the command's output."""

    def __init__(self) -> None:
        self.nodes: dict[int, ScenarioNode] = {}
        self.queues: dict[int, list[Message]] = {}
        self.cut: set[tuple[int, int]] = set()
        self._handlers: dict[str, Callable[[Command, list[str]], None]] = {
            "add-nodes": self._add_nodes,
            "campaign": self._campaign,
            "tick-heartbeat": self._tick_heartbeat,
            "tick-election": self._tick_election,
            "tick": self._tick_n,
            "propose": self._propose,
            "propose-conf-change": self._propose_conf_change,
            "read-index": self._read_index,
            "transfer-leadership": self._transfer,
            "compact": self._compact,
            "crash": self._crash,
            "restart": self._restart,
            "process-ready": self._process_ready_cmd,
            "deliver-msgs": self._deliver_msgs_cmd,
            "stabilize": self._stabilize,
            "send-msg": self._send_msg,
            "partition": self._partition,
            "heal": self._heal,
            "raft-state": self._raft_state,
            "raft-log": self._raft_log,
            "status": self._status,
        }

    # ------------------------------------------------------------------ entry point
    def run(self, cmd: Command) -> str:
        handler = self._handlers.get(cmd.name)
        if handler is None:
            raise ScenarioError(f"line {cmd.line}: unknown command {cmd.name!r}")
        out: list[str] = []
        try:
            handler(cmd, out)
        except ScenarioError as e:
            raise ScenarioError(f"line {cmd.line}: {cmd.name}: {e}") from None
        text = "\n".join(out)
        return text if text else "ok"

    # ------------------------------------------------------------------ helpers
    def _node(self, s: str) -> ScenarioNode:
        i = _int(s, "node id")
        sn = self.nodes.get(i)
        if sn is None:
            raise ScenarioError(f"no node {i}")
        return sn

    def _up(self, s: str) -> tuple[ScenarioNode, RawNode]:
        sn = self._node(s)
        if sn.raw is None:
            raise ScenarioError(f"node {sn.id} is down")
        return sn, sn.raw

    @staticmethod
    def _want(cmd: Command, npos: int, kw: Sequence[str] = ()) -> None:
        if len(cmd.pos) != npos:
            raise ScenarioError(f"want {npos} positional arguments, got {len(cmd.pos)}")
        extra = set(cmd.kw) - set(kw)
        if extra:
            raise ScenarioError(f"unknown arguments: {', '.join(sorted(extra))}")

    @staticmethod
    def _core(out: list[str], fn: Callable[[], object], indent: str = "") -> None:
        """Call into the core, printing the errors it raises by design."""
        try:
            fn()
        except (RaftError, ValueError) as e:
            out.append(f"{indent}error: {type(e).__name__}: {e}")

    def _state_line(self, sn: ScenarioNode) -> str:
        if sn.raw is None:
            return f"{sn.id}: down"
        st = sn.raw.status()
        return (
            f"{sn.id}: {_state_name(st.state)} term={st.term} vote={st.vote} lead={st.lead} "
            f"commit={st.commit} applied={st.applied} last={st.last_index} "
            f"{st.conf.describe()}"
        )

    # ------------------------------------------------------------------ setup
    def _add_nodes(self, cmd: Command, out: list[str]) -> None:
        self._want(cmd, 1, ["voters", "learners", *_BOOL_OPTIONS, *_INT_OPTIONS])
        n = _int(cmd.pos[0], "N")
        if n <= 0:
            raise ScenarioError("N must be positive")
        first = max(self.nodes, default=0) + 1
        ids = list(range(first, first + n))
        opts = NodeOptions()
        for k, attr in _BOOL_OPTIONS.items():
            if k in cmd.kw:
                setattr(opts, attr, _bool(cmd.kw[k], k))
        for k, attr in _INT_OPTIONS.items():
            if k in cmd.kw:
                setattr(opts, attr, _int(cmd.kw[k], k))
        conf: ConfState | None
        if "voters" in cmd.kw or "learners" in cmd.kw:
            conf = ConfState(
                frozenset(_ids(cmd.kw.get("voters", "()"), "voters")),
                frozenset(_ids(cmd.kw.get("learners", "()"), "learners")),
            )
        elif not self.nodes:
            conf = ConfState(frozenset(ids))
        else:
            conf = None
        for i in ids:
            sn = ScenarioNode(i, opts, MemoryStorage(conf))
            try:
                sn.start()
            except ValueError as e:
                raise ScenarioError(str(e)) from None
            self.nodes[i] = sn
            self.queues.setdefault(i, [])
            out.append(self._state_line(sn))

    # ------------------------------------------------------------------ inputs
    def _campaign(self, cmd: Command, out: list[str]) -> None:
        self._want(cmd, 1)
        _, raw = self._up(cmd.pos[0])
        self._core(out, raw.campaign)

    def _tick(self, raw: RawNode, n: int, out: list[str]) -> None:
        for _ in range(n):
            self._core(out, raw.tick)

    def _tick_heartbeat(self, cmd: Command, out: list[str]) -> None:
        self._want(cmd, 1)
        sn, raw = self._up(cmd.pos[0])
        self._tick(raw, sn.opts.heartbeat, out)

    def _tick_election(self, cmd: Command, out: list[str]) -> None:
        self._want(cmd, 1)
        sn, raw = self._up(cmd.pos[0])
        r = raw.raft
        if r.state is StateType.LEADER:
            timeout, what = sn.opts.election, "election timeout"
        else:
            timeout, what = r.randomized_election_timeout, "randomized election timeout"
        n = max(1, timeout - r.election_elapsed)
        out.append(f"{sn.id} ticks {n} times ({what} {timeout})")
        self._tick(raw, n, out)

    def _tick_n(self, cmd: Command, out: list[str]) -> None:
        self._want(cmd, 2)
        sn, raw = self._up(cmd.pos[0])
        n = _int(cmd.pos[1], "N")
        self._tick(raw, n, out)
        r = raw.raft
        if r.state is StateType.LEADER:
            timeout, what = sn.opts.election, "election timeout"
        else:
            timeout, what = r.randomized_election_timeout, "randomized election timeout"
        out.append(
            f"{sn.id} ticks {n} times (now {_state_name(r.state)}, election elapsed "
            f"{r.election_elapsed}, {what} {timeout})"
        )

    def _propose(self, cmd: Command, out: list[str]) -> None:
        self._want(cmd, 2)
        _, raw = self._up(cmd.pos[0])
        data = cmd.pos[1].encode()
        self._core(out, lambda: raw.propose(data))

    def _propose_conf_change(self, cmd: Command, out: list[str]) -> None:
        self._want(cmd, 3)
        _, raw = self._up(cmd.pos[0])
        kinds = {
            "add-learner": ConfChangeType.ADD_LEARNER,
            "promote": ConfChangeType.PROMOTE,
            "remove": ConfChangeType.REMOVE,
        }
        kind = kinds.get(cmd.pos[1])
        if kind is None:
            raise ScenarioError(f"conf change type must be one of {', '.join(kinds)}")
        cc = ConfChange(kind, _int(cmd.pos[2], "NODE"))
        self._core(out, lambda: raw.propose_conf_change(cc))

    def _read_index(self, cmd: Command, out: list[str]) -> None:
        self._want(cmd, 2)
        _, raw = self._up(cmd.pos[0])
        ctx = cmd.pos[1].encode()
        self._core(out, lambda: raw.read_index(ctx))

    def _transfer(self, cmd: Command, out: list[str]) -> None:
        self._want(cmd, 2)
        _, raw = self._up(cmd.pos[0])
        target = _int(cmd.pos[1], "TO")
        self._core(out, lambda: raw.transfer_leader(target))

    def _compact(self, cmd: Command, out: list[str]) -> None:
        self._want(cmd, 2)
        sn, raw = self._up(cmd.pos[0])
        index = _int(cmd.pos[1], "INDEX")
        if index > sn.applied_index:
            raise ScenarioError(f"node {sn.id} has applied only up to {sn.applied_index}")
        st = sn.storage
        meta = st.create_snapshot(index, raw.conf_state_at(index), sn.image(index))
        st.compact(index)
        out.append(
            f"snapshot {meta.describe()} data={_show_bytes(st.snapshot_data())}; "
            f"log now {st.first_index()}..{st.last_index()}"
        )

    def _crash(self, cmd: Command, out: list[str]) -> None:
        self._want(cmd, 1)
        sn, _ = self._up(cmd.pos[0])
        sn.raw = None
        sn.applied, sn.applied_index = [], 0

    def _restart(self, cmd: Command, out: list[str]) -> None:
        self._want(cmd, 1)
        sn = self._node(cmd.pos[0])
        if sn.raw is not None:
            raise ScenarioError(f"node {sn.id} is up")
        self._core(out, sn.start)
        out.append(self._state_line(sn))

    # ------------------------------------------------------------------ ready
    def _process_ready_cmd(self, cmd: Command, out: list[str]) -> None:
        self._want(cmd, len(cmd.pos))
        if not cmd.pos:
            raise ScenarioError("name at least one node")
        for s in cmd.pos:
            sn, raw = self._up(s)
            if not raw.has_ready():
                out.append(f"> {sn.id} has no Ready")
                continue
            self._process_ready(sn, raw, out)

    def _process_ready(self, sn: ScenarioNode, raw: RawNode, out: list[str]) -> None:
        rd = raw.ready()
        st = sn.storage
        # persist
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)
        for c in rd.snapshot_chunks:
            st.write_snapshot_chunk(c.meta, c.offset, c.data)
        image = b""
        if rd.snapshot is not None:
            image = st.install_snapshot(rd.snapshot)
            sn.restore(rd.snapshot.index, image)
        if rd.entries:
            st.append(rd.entries)
        out.append(f"> {sn.id} handling Ready")
        self._print_ready(rd, image, out)
        # send
        for m in rd.messages:
            if (m.frm, m.to) in self.cut:
                continue
            self.queues.setdefault(m.to, []).append(m)
        # apply
        for e in rd.committed_entries:
            if e.index != sn.applied_index + 1:
                out.append(f"  error: applying {e.index} after {sn.applied_index}")
            sn.applied_index = e.index
            if e.type is EntryType.NORMAL and e.data:
                sn.applied.append((e.index, e.data))
        raw.advance(rd)

    def _print_ready(self, rd: Ready, image: bytes, out: list[str]) -> None:
        if rd.soft_state is not None:
            out.append(f"  Lead:{rd.soft_state.lead} State:{_state_name(rd.soft_state.state)}")
        if rd.hard_state is not None:
            out.append(f"  HardState {rd.hard_state.describe()}")
        if rd.entries:
            out.append("  Entries:")
            out.extend(f"    {e.describe()}" for e in rd.entries)
        if rd.snapshot_chunks:
            out.append("  SnapshotChunks:")
            for c in rd.snapshot_chunks:
                done = " Done" if c.done else ""
                out.append(
                    f"    {c.meta.describe()} {c.offset}+{len(c.data)} {_show_bytes(c.data)}{done}"
                )
        if rd.snapshot is not None:
            out.append(f"  Snapshot: {rd.snapshot.describe()} data={_show_bytes(image)}")
        if rd.messages:
            out.append("  Messages:")
            for m in rd.messages:
                note = " (dropped: partitioned)" if (m.frm, m.to) in self.cut else ""
                out.append(f"    {m.describe()}{note}")
        if rd.committed_entries:
            out.append("  CommittedEntries:")
            out.extend(f"    {e.describe()}" for e in rd.committed_entries)
        if rd.read_states:
            out.append("  ReadStates:")
            out.extend(
                f"    Index:{rs.index} Ctx:{rs.context.decode('utf-8', 'backslashreplace')}"
                for rs in rd.read_states
            )

    def _deliver_msgs_cmd(self, cmd: Command, out: list[str]) -> None:
        self._want(cmd, len(cmd.pos), ["drop", "count"])
        count = _int(cmd.kw["count"], "count") if "count" in cmd.kw else None
        drop = _ids(cmd.kw["drop"], "drop") if "drop" in cmd.kw else []
        for i in drop:
            self._deliver(self._node(str(i)).id, count, out, drop=True)
        for s in cmd.pos:
            self._deliver(self._node(s).id, count, out, drop=False)
        if not drop and not cmd.pos:
            raise ScenarioError("name at least one node, or drop=")

    def _deliver(self, to: int, count: int | None, out: list[str], drop: bool) -> bool:
        q = self.queues.get(to, [])
        n = len(q) if count is None else min(count, len(q))
        if n == 0:
            return False
        msgs, self.queues[to] = q[:n], q[n:]
        sn = self.nodes[to]
        out.append(f"> {to} {'dropping' if drop else 'receiving'} messages")
        for m in msgs:
            if drop:
                out.append(f"  {m.describe()}")
            elif sn.raw is None:
                out.append(f"  {m.describe()} (dropped: {to} is down)")
            elif (m.frm, m.to) in self.cut:
                out.append(f"  {m.describe()} (dropped: partitioned)")
            else:
                out.append(f"  {m.describe()}")
                ignored = sn.raw.raft.ignored
                self._core(out, partial(sn.raw.step, m), indent="  ")
                if sn.raw.raft.ignored > ignored:
                    out[-1] += " (ignored)"
        return True

    def _send_msg(self, cmd: Command, out: list[str]) -> None:
        keys = ["term", "log-term", "index", "commit", "entries", "snapshot", "reject", "data"]
        self._want(cmd, 3, keys)
        frm, to = _int(cmd.pos[0], "FROM"), self._node(cmd.pos[1]).id
        names = {t.name.replace("_", "").lower(): t for t in MessageType}
        mtype = names.get(cmd.pos[2].lower())
        if mtype is None:
            raise ScenarioError(f"unknown message type {cmd.pos[2]!r}")
        kw = cmd.kw
        data = kw.get("data", "forged").encode()

        def num(key: str) -> int:
            return _int(kw[key], key) if key in kw else 0

        entries = tuple(
            Entry(_int(t, "entries"), _int(i, "entries"), data)
            for t, _, i in (e.partition("/") for e in kw.get("entries", "()").strip("()").split())
        )

        snapshot = None
        if "snapshot" in kw:
            term, index = (_int(x, "snapshot") for x in kw["snapshot"].split("/"))
            sender = self.nodes.get(frm)
            conf = sender.raw.raft.conf if sender and sender.raw else ConfState()
            snapshot = SnapshotMeta(index, term, conf)
        m = Message(
            mtype,
            to,
            frm,
            num("term"),
            log_term=num("log-term"),
            index=num("index"),
            entries=entries,
            commit=num("commit"),
            reject=_bool(kw.get("reject", "false"), "reject"),
            snapshot=snapshot,
            snap_data=data if snapshot is not None else b"",
            snap_done=snapshot is not None,
        )
        self.queues.setdefault(to, []).append(m)
        out.append(m.describe())

    def _stabilize(self, cmd: Command, out: list[str]) -> None:
        self._want(cmd, len(cmd.pos))
        ids = [self._node(s).id for s in cmd.pos] if cmd.pos else sorted(self.nodes)
        for _ in range(MAX_STABILIZE_ROUNDS):
            busy = False
            for i in ids:
                raw = self.nodes[i].raw
                if raw is not None and raw.has_ready():
                    self._process_ready(self.nodes[i], raw, out)
                    busy = True
            for i in ids:
                busy = self._deliver(i, None, out, drop=False) or busy
            if not busy:
                return
        out.append(f"error: not stable after {MAX_STABILIZE_ROUNDS} rounds")

    # ------------------------------------------------------------------ network
    def _partition(self, cmd: Command, out: list[str]) -> None:
        self._want(cmd, len(cmd.pos))
        groups = [_ids(g, "group") for g in cmd.pos]
        if len(groups) < 2:
            raise ScenarioError("name at least two groups")
        self.cut.clear()
        for gi, a in enumerate(groups):
            for b in groups[gi + 1 :]:
                for x in a:
                    for y in b:
                        self.cut.update({(x, y), (y, x)})

    def _heal(self, cmd: Command, out: list[str]) -> None:
        self._want(cmd, 0)
        self.cut.clear()

    # ------------------------------------------------------------------ inspection
    def _raft_state(self, cmd: Command, out: list[str]) -> None:
        self._want(cmd, 0)
        out.extend(self._state_line(sn) for _, sn in sorted(self.nodes.items()))

    def _raft_log(self, cmd: Command, out: list[str]) -> None:
        self._want(cmd, 1)
        st = self._node(cmd.pos[0]).storage
        snap = st.snapshot_meta()
        out.append(f"snapshot {snap.describe()} data={_show_bytes(st.snapshot_data())}")
        first, last = st.first_index(), st.last_index()
        if last < first:
            out.append("no entries")
            return
        out.extend(e.describe() for e in st.entries(first, last + 1, 1 << 62))

    def _status(self, cmd: Command, out: list[str]) -> None:
        self._want(cmd, 1)
        sn = self._node(cmd.pos[0])
        out.append(self._state_line(sn))
        if sn.raw is None:
            return
        st = sn.raw.status()
        for i, pr in st.progress.items():
            out.append(f"  {i}: {pr}")
        if st.lead_transferee:
            out.append(f"  transferring leadership to {st.lead_transferee}")


# ---------------------------------------------------------------------------------- files
SEPARATOR = "----"


@dataclass
class Block:
    """One command of a script, with the comment/blank lines before it."""

    prefix: list[str]
    command: str
    expected: str
    line: int


@dataclass
class Script:
    blocks: list[Block]
    trailer: list[str]


def parse_script(text: str) -> Script:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    blocks: list[Block] = []
    prefix: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.startswith("#"):
            prefix.append(line)
            i += 1
            continue
        lineno = i + 1
        if i + 1 >= len(lines) or lines[i + 1] != SEPARATOR:
            raise ScenarioError(f"line {lineno}: command not followed by {SEPARATOR!r}")
        i += 2
        body: list[str] = []
        if i < len(lines) and lines[i] == SEPARATOR:  # ----/---- form: blank lines allowed
            i += 1
            while i < len(lines) and not (
                lines[i] == SEPARATOR and i + 1 < len(lines) and lines[i + 1] == SEPARATOR
            ):
                body.append(lines[i])
                i += 1
            if i >= len(lines):
                raise ScenarioError(f"line {lineno}: unterminated {SEPARATOR}/{SEPARATOR} block")
            i += 2
        else:
            while i < len(lines) and lines[i].strip():
                body.append(lines[i])
                i += 1
        if i < len(lines) and not lines[i].strip():
            i += 1  # the blank line that ends a block
        blocks.append(Block(prefix, line, "\n".join(body), lineno))
        prefix = []
    return Script(blocks, prefix)


def render_script(script: Script, outputs: Sequence[str] | None = None) -> str:
    """The script's text, with ``outputs`` (one per block) in place of the expected ones."""
    parts: list[str] = []
    for n, b in enumerate(script.blocks):
        parts.extend(b.prefix)
        parts.append(b.command)
        parts.append(SEPARATOR)
        body = b.expected if outputs is None else outputs[n]
        if any(not ln.strip() for ln in body.split("\n")):
            parts.extend([SEPARATOR, body, SEPARATOR, SEPARATOR])
        else:
            parts.append(body)
        parts.append("")
    parts.extend(script.trailer)
    while parts and parts[-1] == "":
        parts.pop()
    return "\n".join(parts) + "\n"


def run_script(text: str) -> tuple[str, str]:
    """Run a script; return ``(expected, actual)`` renderings of the whole file."""
    script = parse_script(text)
    sc = Scenario()
    outputs = [sc.run(Command.parse(b.command, b.line)) for b in script.blocks]
    return render_script(script), render_script(script, outputs)


def check_file(path: Path, rewrite: bool) -> str | None:
    """Run one script file. Returns a unified diff when the output differs (and not
    ``rewrite``); with ``rewrite`` the file gets the actual output."""
    expected, actual = run_script(path.read_text())
    if expected == actual:
        return None
    if rewrite:
        path.write_text(actual)
        return None
    return "".join(
        difflib.unified_diff(
            expected.splitlines(keepends=True),
            actual.splitlines(keepends=True),
            fromfile=f"{path} (expected)",
            tofile=f"{path} (actual)",
        )
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m keelfs.testing.scenario")
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--rewrite", action="store_true", help="write the actual output back")
    a = p.parse_args(argv)
    failed = 0
    for f in a.files:
        diff = check_file(f, a.rewrite)
        if diff:
            failed += 1
            sys.stdout.write(diff)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
