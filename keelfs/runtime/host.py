"""``RaftHost``: one process's multi-raft runtime.

One asyncio loop drives every group the process holds:

- a **tick task** turns wall time into ``tick()`` calls (``tick_ms`` per tick);
- inbound messages from the transport are stepped into their groups as they arrive;
- the **ready loop** wakes whenever anything happened and, for all groups at once:
  proposes what callers queued (one batch per group), takes every group's ``Ready``, installs
  received snapshots, makes hard states and entries of *all* groups durable with **one synced
  RocksDB write** (group commit), and only then sends messages, applies committed entries,
  answers reads, and advances.

The synced write itself runs in a worker thread, off the loop; the batch is encoded before it on
the loop and the storage caches are updated after it on the loop, so the core and the caches are
never shared with another thread. While the write waits on ``fsync`` the loop keeps handling
RPCs and Raft messages, which are persisted together in the next round.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from keelfs.errors import OutcomeUnknown, Unavailable
from keelfs.raft.messages import ConfState, Message, MessageType, message_size
from keelfs.raft.rawnode import Ready
from keelfs.runtime.group import ApplyFailed, RaftGroup
from keelfs.runtime.statemachine import StateMachine
from keelfs.storage.private import private_dir
from keelfs.storage.rocks import RocksEngine
from keelfs.transport.base import OnMessages, Transport

log = logging.getLogger(__name__)


@dataclass
class HostConfig:
    tick_ms: float = 15.0
    """One Raft tick. With ``election_tick=10`` the election timeout is 150-300 ms (seed 001)."""
    election_tick: int = 10
    heartbeat_tick: int = 2
    max_inflight_msgs: int = 256
    snapshot_chunk_size: int = 1 << 20
    snapshot_every: int = 20_000
    """Take a snapshot once this many entries were applied since the last one."""
    keep_after_snapshot: int = 2_000
    """Entries kept behind a snapshot so slightly lagging followers need no InstallSnapshot."""
    max_pending: int = 65_536
    """Back-pressure: proposals queued or in flight per group before callers get an error."""
    request_timeout: float = 5.0
    quiesce_after_ticks: int = 20
    """An idle group goes quiet after this many ticks (see ``Config.quiesce_after_ticks``);
    0 keeps every group heartbeating. The tick loop wakes a quiesced follower whose leader's
    node the transport reports unreachable."""
    lease_reads: bool = True
    """A leader answers ReadIndex requests (its own and those its followers forward) from its
    lease, without a heartbeat round, while a majority answered heartbeats it sent less than
    ``election_tick - 2`` ticks ago (``ReadOnlyOption.LEASE_BASED``; the host keeps a leader's
    ticks current before it judges a lease: ``keep_ticks_current``, and forgets its leases when
    its loop fell behind). A request is judged when it is made, so under leases a barrier never
    shares a request made before it arrived (``RaftGroup._join_read``). Off: every read waits
    for a heartbeat round started after it arrived (``ReadOnlyOption.SAFE``)."""
    pack_proposals: bool = True
    """Proposals of one round that may share an entry do (``PackingStateMachine``): the
    metadata groups' client writes. Off while a member runs a version that cannot apply such
    entries (``keelfs.meta.packs``), e.g. during a rolling upgrade from one."""


def add_host_arguments(p: argparse.ArgumentParser) -> None:
    """The Raft host's command-line flags, shared by every process that runs groups."""
    p.add_argument("--tick-ms", type=float, default=15.0, help="Raft tick (default 15 ms)")
    p.add_argument("--election-tick", type=int, default=10, help="ticks per election timeout")
    p.add_argument(
        "--snapshot-every", type=int, default=20_000, help="entries applied between snapshots"
    )
    p.add_argument("--keep-log", type=int, default=2_000, help="entries kept behind a snapshot")
    p.add_argument(
        "--request-timeout", type=float, default=5.0, help="server-side limit per request (s)"
    )
    p.add_argument(
        "--quiesce-after-ticks",
        type=int,
        default=HostConfig.quiesce_after_ticks,
        help="idle ticks before a group goes quiet (0: never)",
    )


def host_config_from_args(ns: argparse.Namespace) -> HostConfig:
    return HostConfig(
        tick_ms=ns.tick_ms,
        election_tick=ns.election_tick,
        snapshot_every=ns.snapshot_every,
        keep_after_snapshot=ns.keep_log,
        request_timeout=ns.request_timeout,
        quiesce_after_ticks=ns.quiesce_after_ticks,
    )


TransportFactory = Callable[[OnMessages], Transport]

CATCH_UP_TICKS = 2
"""Overdue ticks ``keep_ticks_current`` delivers at once; further behind, leases are forgotten."""


def _check_fits_transport(config: HostConfig, transport: Transport) -> None:
    """A snapshot chunk must fit the transport's largest message: one that does not is dropped
    every time it is sent, and a follower that needs the snapshot never catches up."""
    largest = transport.max_message_bytes
    chunk = message_size(Message(MessageType.SNAP, 1, 1)) + config.snapshot_chunk_size
    if chunk > largest:
        raise ValueError(
            f"snapshot_chunk_size={config.snapshot_chunk_size}: a chunk of {chunk} bytes does "
            f"not fit the transport's largest message ({largest} bytes)"
        )


class RaftHost:
    def __init__(
        self,
        node_id: int,
        data_dir: str | Path,
        transport_factory: TransportFactory,
        config: HostConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.node_id = node_id
        self.rng = rng or random.Random()
        """Where each group's Raft core draws its election timeouts from (a simulation seeds
        it, so that a run replays exactly)."""
        self.config = config or HostConfig()
        self.data_dir = private_dir(data_dir)
        self.transport = transport_factory(self._on_messages)
        _check_fits_transport(self.config, self.transport)
        self.engine = RocksEngine(self.data_dir / "raft")
        self.groups: dict[str, RaftGroup] = {}
        self._wakeup = asyncio.Event()
        self._dirty: set[str] = set()
        """Groups that may have a Ready: stepped, ticked, proposed to since the last round."""
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False
        self.failed: Exception | None = None
        """What stopped the ready loop (None while it runs or was stopped cleanly)."""
        self._next_tick_at = -1.0
        """Loop time the next tick is due at (negative until the tick loop starts)."""
        self.rounds = 0
        self.send_rounds = 0
        """Rounds that reached their sending step: a ReadIndex request issued since the last
        one can still share the heartbeat round of an earlier one (``RaftGroup.read_barrier``)."""
        """Ready-loop rounds that persisted something (one synced write each)."""

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        await self.transport.start()
        self._running = True
        self._tasks = [
            asyncio.create_task(self._tick_loop(), name=f"raft-tick-{self.node_id}"),
            asyncio.create_task(self._ready_loop(), name=f"raft-ready-{self.node_id}"),
        ]

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        """The tick and ready tasks; one that finishes while running means the node died
        (the ready loop re-raises what broke it), and the process should stop."""
        return list(self._tasks)

    async def stop(self) -> None:
        self._running = False
        self.wake()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks = []
        for g in self.groups.values():
            g.fail_all(OutcomeUnknown("shutdown", message="node shutting down"))
        await self.transport.stop()
        self.engine.close()

    def open_group(
        self, group_id: str, sm: StateMachine, peers: Mapping[int, str] | None = None
    ) -> RaftGroup:
        """Open (or create) this node's member of ``group_id``.

        ``peers`` (node id -> Raft address, this node included) is needed only the first time a
        group is created here, to bootstrap it; afterwards the membership is read from disk
        (sticky, as SeaweedFS masters keep theirs). A node created without ``peers`` starts with
        an empty log and waits for the leader to add it (as a learner) and catch it up.
        """
        if group_id in self.groups:
            raise ValueError(f"group {group_id} is already open")
        exists = group_id in self.engine.group_ids()
        if not exists and peers is not None:
            if self.node_id not in peers:
                raise ValueError(f"node {self.node_id} is not among the peers {sorted(peers)}")
            storage = self.engine.group(group_id, ConfState(frozenset(peers)))
            storage.set_membership(peers)
        else:
            storage = self.engine.group(group_id)
        group = RaftGroup(self, group_id, storage, sm)
        for node_id, address in group.addresses.items():
            self.set_peer_address(node_id, address)
        self.groups[group_id] = group
        self.wake()
        return group

    def set_peer_address(self, node_id: int, address: str) -> None:
        if node_id != self.node_id:
            self.transport.set_peer_address(node_id, address)

    def wake(self, group: RaftGroup | None = None) -> None:
        """Run a ready round soon; ``group`` names the group that changed (None: all)."""
        if group is None:
            self._dirty.update(self.groups)
        else:
            self._dirty.add(group.group_id)
        self._wakeup.set()

    # ------------------------------------------------------------------ inputs
    def _on_messages(self, batch: list[tuple[str, Message]]) -> None:
        self.keep_ticks_current()  # a ReadIndex may be answered from a lease
        groups = self.groups
        dirty = self._dirty
        for group_id, m in batch:
            g = groups.get(group_id)
            if g is not None:
                g.node.step(m)
                dirty.add(group_id)
        self._wakeup.set()

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        period = self.config.tick_ms / 1000
        self._next_tick_at = loop.time() + period
        while self._running:
            await asyncio.sleep(max(0.0, self._next_tick_at - loop.time()))
            now = loop.time()
            if self._next_tick_at - now > period / 100:
                continue  # this tick was delivered early (keep_ticks_current)
            self._tick(now)

    def keep_ticks_current(self) -> None:
        """Deliver the ticks now due (at most ``CATCH_UP_TICKS``) before a leader judges its
        lease (a forwarded ReadIndex arriving, a read asked here): the lease is counted in the
        leader's ticks, and is sound only while they keep up with the clock (within a tick;
        ``ReadOnlyOption.LEASE_BASED``). A loop that fell further behind (stalled, or frozen
        and resumed) forgets its leases instead: reads wait for a round, as without a lease."""
        if self._next_tick_at < 0:
            return  # not started
        now = asyncio.get_running_loop().time()
        for _ in range(CATCH_UP_TICKS):
            if now < self._next_tick_at:
                return
            self._tick(now)
        if now >= self._next_tick_at:
            self._forget_leases()

    def _forget_leases(self) -> None:
        for g in self.groups.values():
            if g.is_leader:
                g.node.forget_lease()

    def _tick(self, now: float) -> None:
        """One tick of every group, due at ``_next_tick_at``."""
        period = self.config.tick_ms / 1000
        self._next_tick_at += period
        if now - self._next_tick_at > 10 * period:
            # we were frozen (SIGSTOP): don't burst ticks, but the ticks dropped are time a
            # lease did not see pass
            self._next_tick_at = now + period
            self._forget_leases()
        unreachable = self.transport.unreachable
        for g in self.groups.values():
            r = g.node.raft
            if r.quiesced:
                if r.lead != self.node_id and r.lead and unreachable(r.lead):
                    g.node.wake(leader_unreachable=True)
                else:
                    continue  # a quiesced group's tick changes nothing: skip its round
            g.node.tick()
            self._dirty.add(g.group_id)
        self._wakeup.set()

    # ------------------------------------------------------------------ the ready loop
    async def _ready_loop(self) -> None:
        while self._running:
            await self._wakeup.wait()
            self._wakeup.clear()
            try:
                await self._round()
            except ApplyFailed as exc:
                self._fail(exc)  # (the group logged why, once)
                raise
            except Exception as exc:
                log.exception("raft ready loop failed; stopping this node's groups")
                self._fail(exc)
                raise
            await asyncio.sleep(0)  # let transports and callers run between rounds

    def _fail(self, exc: Exception) -> None:
        """The ready loop died: nothing of this node may be persisted, sent or applied any
        more. Its callers fail now (rather than time out) and later calls are refused; the
        owner sees the ready task end (``tasks``) and stops the process."""
        self.failed = exc
        self._running = False  # the tick loop ends too
        for g in self.groups.values():
            g.fail_all(OutcomeUnknown("stopped", message=f"this node stopped: {exc}"))

    def check_running(self) -> None:
        """Raise ``Unavailable`` if this node's ready loop died (see ``_fail``)."""
        if self.failed is not None:
            raise Unavailable(
                "stopped", message=f"this node stopped after a fatal error: {self.failed}"
            )

    async def _round(self) -> None:
        dirty, self._dirty = self._dirty, set()
        readies: list[tuple[RaftGroup, Ready]] = []
        for group_id in dirty:
            g = self.groups.get(group_id)
            if g is None:
                continue
            g._flush()
            if g.node.has_ready():
                readies.append((g, g.node.ready()))
        if not readies:
            return
        # 1. durable first: snapshots, then one write for every group's log and state
        for g, rd in readies:
            for c in rd.snapshot_chunks:
                g.storage.write_snapshot_chunk(c.meta, c.offset, c.data)
            if rd.snapshot is not None:
                g.install_snapshot(rd)
        batch = self.engine.write_batch()
        sync = False
        for g, rd in readies:
            sync = sync or rd.must_sync
            if rd.hard_state is not None:
                batch.set_hard_state(g.storage, rd.hard_state)
            if rd.entries:
                batch.append(g.storage, rd.entries)
                if g.membership_changed_by(rd.entries):
                    batch.set_membership(g.storage, g.addresses)
        wb = batch.prepare()
        if wb is not None:
            if sync:
                # fsync off the loop: while it runs, RPCs and Raft messages keep arriving and
                # are handled (and persisted together) in the next round.
                await asyncio.get_running_loop().run_in_executor(None, batch.write, wb, True)
                self.rounds += 1
            else:
                batch.write(wb, False)
        batch.finish()
        # 2. then the world may hear about it
        self.send_rounds += 1
        send = self.transport.send
        for g, rd in readies:
            for m in without_superseded_appends(rd.messages):
                send(g.group_id, m)
        # 3. apply, answer, advance
        for g, rd in readies:
            if rd.committed_entries:
                g.apply(rd.committed_entries)
            if rd.read_states:
                g.on_read_states(rd)
            g.on_soft_state(rd)
            g.node.advance(rd)
            g.after_ready()
            if g.node.has_ready():
                self.wake(g)


def without_superseded_appends(messages: list[Message]) -> list[Message]:
    """``messages`` without each empty append that a later append to the same peer makes
    redundant: same term, same point in the log (``index``, ``log_term``), a commit index at
    least as high (and, as a rule, the entries after that point).

    Why: a leader tells its followers a new commit index with an empty append as soon as
    a majority acknowledged, and under load the round that sends it often proposes more
    entries too, so each follower got two appends from the same point in one round (and
    handled both, and answered both, and the leader handled both answers). The later one
    carries all the empty one does; a follower answers it exactly as it would have answered
    the two. Dropping a message is always safe in Raft (the network may lose any), and this
    one is superseded by a message sent at the same moment."""
    if len(messages) < 2:
        return messages
    kept: list[Message] = []
    later: dict[int, Message] = {}  # peer -> the next append to it, going backwards
    for m in reversed(messages):
        if m.type == MessageType.APP:
            after = later.get(m.to)
            if (
                not m.entries
                and after is not None
                and after.term == m.term
                and after.index == m.index
                and after.log_term == m.log_term
                and after.commit >= m.commit
            ):
                continue
            later[m.to] = m
        kept.append(m)
    kept.reverse()
    return kept
