"""One Raft group's member on a host: proposals, reads, applying, snapshots, membership.

Everything here runs on the host's event loop; the host's ready loop calls ``_flush``,
``_on_ready_persisted`` and friends. Callers use ``propose``, ``read_barrier``,
``transfer_leader`` and the membership methods.

Errors a caller sees are ``keelfs.errors``' own, all retryable, against another member or
later: ``NotLeader`` (naming the leader's id and *Raft* address, in ``raft_address``: this
layer knows no client addresses) and a plain ``Unavailable`` mean the request was certainly
not applied; ``OutcomeUnknown`` means a proposal may or may not have been (or may still be)
applied. ``ApplyFailed`` is no caller's error: it stops the host (see ``_apply_failed``).
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import logging
import random
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from keelfs.errors import NotLeader, OutcomeUnknown, Unavailable
from keelfs.raft.core import Config, ReadOnlyOption, StateType
from keelfs.raft.errors import NotLeaderError, ProposalDropped, SnapshotOutOfDateError
from keelfs.raft.messages import ConfChange, ConfChangeType, Entry, EntryType, SnapshotMeta
from keelfs.raft.rawnode import RawNode, Ready
from keelfs.runtime.statemachine import (
    PackingStateMachine,
    StateMachine,
    StreamingStateMachine,
)
from keelfs.runtime.status import GroupStatus, MemberProgress, lag
from keelfs.storage.rocks import RocksLogStorage

if TYPE_CHECKING:
    from keelfs.runtime.host import RaftHost

log = logging.getLogger("keelfs.runtime")


class ApplyFailed(Exception):
    """Applying a committed entry raised: this node stopped rather than diverge (not retryable
    here; the process must exit, and a restart applies the entry again)."""


class RaftGroup:
    def __init__(
        self, host: RaftHost, group_id: str, storage: RocksLogStorage, sm: StateMachine
    ) -> None:
        self.host = host
        self.group_id = group_id
        self.storage = storage
        self.sm = sm
        cfg = host.config
        snap = storage.snapshot_meta()
        if snap.index > sm.applied_index():
            self._restore_from_storage(snap)
        self.node = RawNode(
            Config(
                id=host.node_id,
                rng=random.Random(host.rng.getrandbits(64)),
                election_tick=cfg.election_tick,
                heartbeat_tick=cfg.heartbeat_tick,
                pre_vote=True,
                check_quorum=True,
                max_inflight_msgs=cfg.max_inflight_msgs,
                snapshot_chunk_size=cfg.snapshot_chunk_size,
                quiesce_after_ticks=cfg.quiesce_after_ticks,
                read_only_option=(
                    ReadOnlyOption.LEASE_BASED if cfg.lease_reads else ReadOnlyOption.SAFE
                ),
                applied=max(snap.index, min(sm.applied_index(), storage.initial_state()[0].commit)),
            ),
            storage,
        )
        self.addresses: dict[int, str] = dict(storage.membership())
        self._queue: list[tuple[bytes, asyncio.Future[Any], bool]] = []
        self._packs = host.config.pack_proposals and isinstance(sm, PackingStateMachine)
        """Whether packable proposals of one round share entries (``_entries_of``)."""
        self._pending: dict[int, tuple[int, asyncio.Future[Any]]] = {}
        self._reads: dict[bytes, asyncio.Future[int]] = {}
        self._snapshotting: asyncio.Task[None] | None = None
        self._image: tuple[SnapshotMeta, int] | None = None
        """A snapshot image written in the background, waiting to be adopted."""
        self._read_views: dict[bytes, tuple[int, int, StateType]] = {}
        """(term, leader, role) when each pending read was asked for."""
        self._read_waiters: dict[bytes, int] = {}
        self._read_batches: dict[bytes, _ReadBatch] = {}
        """The barriers waiting on each ReadIndex request (``read_barrier``)."""
        self._open_read: tuple[tuple[Any, ...], bytes] | None = None
        """The newest ReadIndex request and the state it was made in (see read_barrier)."""
        self._issued_read: tuple[bytes, float] | None = None
        """The ReadIndex request in flight and when it was made (loop time)."""
        self._queued_read: bytes | None = None
        """Barriers waiting for the request in flight to settle, to share the next one."""
        self._apply_waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._read_ids = itertools.count(1)
        self._waiter_ids = itertools.count()
        self.removed = False
        self.leader_changes: asyncio.Event = asyncio.Event()
        self.snapshots_installed = 0
        """Snapshots received from a leader and installed (not counting our own)."""
        self.proposals_lost = 0
        """Proposals accepted while leading, then overwritten by another leader's entries."""

    # ------------------------------------------------------------------ queries
    @property
    def leader_id(self) -> int:
        return self.node.raft.lead

    @property
    def is_leader(self) -> bool:
        return self.node.raft.state is StateType.LEADER

    def leader_address(self) -> str | None:
        return self.addresses.get(self.leader_id)

    def applied_index(self) -> int:
        return self.node.raft.log.applied

    def status(self) -> GroupStatus:
        st = self.node.status()
        return GroupStatus(
            group=self.group_id,
            id=st.id,
            state=st.state.name.lower(),
            term=st.term,
            leader=st.lead,
            commit=st.commit,
            applied=st.applied,
            last_index=st.last_index,
            voters=sorted(st.conf.voters),
            learners=sorted(st.conf.learners),
            members=dict(sorted(self.addresses.items())),
            snapshot_index=self.storage.snapshot_meta().index,
            first_index=self.storage.first_index(),
            snapshots_installed=self.snapshots_installed,
            proposals_lost=self.proposals_lost,
            removed=self.removed,
            progress={
                i: MemberProgress(pr.state, pr.match, pr.next, lag(st.last_index, pr.match))
                for i, pr in sorted(st.progress.items())
            },
        )

    def voters(self) -> frozenset[int]:
        return self.node.raft.conf.voters

    def learners(self) -> frozenset[int]:
        return self.node.raft.conf.learners

    def match_index(self, node_id: int) -> int | None:
        """On the leader: the highest index known replicated on ``node_id`` (None elsewhere)."""
        if not self.is_leader:
            return None
        pr = self.node.raft.prs.get(node_id)
        return None if pr is None else pr.match

    def commit_index(self) -> int:
        return self.node.raft.log.committed

    def leader_caught_up(self) -> bool:
        """Whether this member leads and has applied an entry of its own term: only then does
        its state hold every entry committed before its term. A new leader learns what its
        predecessors committed only when an entry of its own term commits (Raft §5.4.2), so
        right after an election a write they acknowledged may be in its log, not yet applied."""
        raft = self.node.raft
        return (
            raft.state is StateType.LEADER and raft.log.term_or_zero(raft.log.applied) == raft.term
        )

    async def lead(self, timeout: float | None = None) -> None:
        """Return once this member leads with a state holding every acknowledged write
        (``leader_caught_up``): for the checks a leader makes on its own state before it
        proposes (the file a writer adds a block to exists, say). ``NotLeader`` when it does
        not lead. Free once caught up; until then a ReadIndex barrier, which waits for an
        entry of this term to commit and for the state to apply it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout or self.host.config.request_timeout)
        for _ in range(3):
            if not self.is_leader:
                raise self._not_leader()
            if self.leader_caught_up():
                return
            left = deadline - loop.time()
            if left <= 0:
                break
            await self.read_barrier(left)
        raise Unavailable("leader changing", message="leadership keeps changing; retry")

    def not_leader_error(self) -> NotLeader:
        """The error a follower answers with, naming the leader it knows of."""
        return self._not_leader()

    def _not_leader(self) -> NotLeader:
        return NotLeader(self.group_id, self.leader_id, raft_address=self.leader_address())

    # ------------------------------------------------------------------ proposals
    async def propose(
        self, data: bytes, timeout: float | None = None, *, packable: bool = False
    ) -> Any:
        """Replicate ``data``; returns what the state machine's ``apply`` returned.

        Raises ``NotLeader`` at once on a follower, ``Unavailable`` when the queue is
        full (back-pressure) or when the entry was lost to a leader change; on timeout it raises
        ``OutcomeUnknown`` (the entry may still commit), which is why clients carry request ids.
        ``packable``: ``data`` may share one entry with other proposals of the same round
        (``PackingStateMachine``; ``HostConfig.pack_proposals``).
        """
        return (await self.propose_entry(data, timeout, packable=packable))[0]

    async def propose_entry(
        self, data: bytes, timeout: float | None = None, *, packable: bool = False
    ) -> tuple[Any, int, int]:
        """``propose``, also returning the ``(index, term)`` the entry was committed at
        (shared by the proposals packed into one entry)."""
        fut = self.enqueue(data, packable=packable)
        try:
            result: tuple[Any, int, int] = await asyncio.wait_for(
                fut, timeout or self.host.config.request_timeout
            )
        except TimeoutError:
            raise OutcomeUnknown(
                "timed out", message="proposal timed out; its outcome is unknown"
            ) from None
        return result

    def enqueue(self, data: bytes, *, packable: bool = False) -> asyncio.Future[Any]:
        """Queue ``data`` for the next round and return the future its ``(result, index,
        term)`` resolves (what ``propose_entry`` waits for; a caller proposing many at once
        waits for their futures together, cancelling those it stops waiting for). Raises as
        ``propose`` does at once: ``NotLeader``, ``Unavailable`` (removed, busy, stopped)."""
        if self.removed:
            raise Unavailable("removed", message=f"this node was removed from {self.group_id}")
        self.host.check_running()
        if not self.is_leader:
            raise self._not_leader()
        if len(self._pending) + len(self._queue) >= self.host.config.max_pending:
            raise Unavailable("busy", message="too many proposals in flight; retry later")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((data, fut, packable and self._packs))
        self.host.wake(self)
        return fut

    def _flush(self) -> None:
        """Propose everything queued as one batch (one append, one message per follower);
        make the queued reads' ReadIndex request if the one in flight is overdue."""
        if self._queued_read is not None:
            self._settle_reads()
        if not self._queue:
            return
        queue, self._queue = self._queue, []
        live = [(d, f, p) for d, f, p in queue if not f.done()]
        if not live:
            return
        entries, waiters = self._entries_of(live)
        try:
            stamps = self.node.propose_batch(entries)
        except NotLeaderError:
            err: Exception = self._not_leader()
        except ProposalDropped as e:
            err = Unavailable("dropped", message=str(e))
        else:
            for fut, (index, term) in zip(waiters, stamps, strict=True):
                self._track(index, term, fut)
            return
        for _, fut, _ in live:
            fut.set_exception(err)

    def _members_read_packs(self) -> bool:
        """Whether every other member said it applies packs (``RaftAck.features``): during a
        rolling upgrade from a release without them, proposals go one per entry until the last
        member runs this one (a member of that release would not apply a pack)."""
        transport = self.host.transport
        others = (self.voters() | self.learners()) - {self.host.node_id}
        return all("packs" in transport.peer_features(n) for n in others)

    def _entries_of(
        self, live: list[tuple[bytes, asyncio.Future[Any], bool]]
    ) -> tuple[list[bytes], list[asyncio.Future[Any]]]:
        """The entries that carry the queued proposals ``live``, and the future each entry's
        outcome resolves: the packable proposals go into the entries the state machine packs
        them in (``PackingStateMachine.pack``), each answered from its entry's results
        (``_answer_packed``), ahead of the others, each in an entry of its own."""
        packable = [(d, f) for d, f, p in live if p]
        entries: list[bytes] = []
        waiters: list[asyncio.Future[Any]] = []
        if len(packable) > 1 and self._members_read_packs():
            assert isinstance(self.sm, PackingStateMachine)
            at = 0
            loop = asyncio.get_running_loop()
            for count, data in self.sm.pack([d for d, _ in packable]):
                futures = [f for _, f in packable[at : at + count]]
                at += count
                entries.append(data)
                if count == 1:
                    waiters.append(futures[0])
                    continue
                shared: asyncio.Future[Any] = loop.create_future()
                shared.add_done_callback(functools.partial(_answer_packed, futures))
                waiters.append(shared)
            assert at == len(packable), "a pack plan must cover every item once"
            live = [item for item in live if not item[2]]
        for d, f, _ in live:
            entries.append(d)
            waiters.append(f)
        return entries, waiters

    # ------------------------------------------------------------------ reads
    async def read_barrier(self, timeout: float | None = None) -> None:
        """Return once this member's state reflects every write acknowledged before the call.

        ReadIndex on the leader or forwarded from a follower, then a wait until applied.
        Barriers share ReadIndex requests, as etcd's read loop does, and each one is still
        asked for after every barrier it serves arrived (so it sees what they must see):

        - a barrier asked for while nothing could have changed since the newest request was
          made (no round has sent messages since, same commit index, term and leader) shares
          that request: the index it returns is the one each would have got, and the
          heartbeats confirming it leave after all of them arrived;
        - otherwise, while a request is in flight, barriers wait together for it to settle
          and then share the next one (``_settle_reads``): one heartbeat round at a time
          serves every barrier, however many arrive, where each round's worth of them used
          to make a round of its own;
        - otherwise a new request is made at once.

        Under leases a leader answers a request when it is made: it may be shared only by
        barriers scheduled before that, in the same turn of the event loop
        (``_close_shared_read``), never by one arriving later.

        The barriers of one request wait as one batch (``_ReadBatch``): the request's answer,
        and then the apply of its index, release all of them at once, each with one wakeup;
        one timer per batch enforces their deadlines.
        """
        self.host.check_running()
        ctx = self._join_read()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        deadline = loop.time() + (timeout or self.host.config.request_timeout)
        self._read_batches[ctx].add(fut, deadline, loop)
        self._read_waiters[ctx] += 1
        try:
            await fut
        finally:
            self._read_waiters[ctx] -= 1
            if not self._read_waiters[ctx]:
                self._forget_read(ctx)

    def _read_answered(self, ctx: bytes, answer: asyncio.Future[int]) -> None:
        """The ReadIndex request ``ctx`` was answered (or failed): release its barriers once
        the state machine has applied the index, failing them if the request failed."""
        batch = self._read_batches.get(ctx)
        if batch is None:
            return  # every barrier of it gave up
        if answer.cancelled():
            batch.fail(Unavailable("cancelled", message="read cancelled; retry"))
            return
        exc = answer.exception()
        if exc is not None:
            batch.fail(exc)
            return
        index = answer.result()
        if self.applied_index() >= index:
            batch.release()
            return
        applied: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        applied.add_done_callback(batch.released_by)
        heapq.heappush(self._apply_waiters, (index, next(self._waiter_ids), applied))

    def _join_read(self) -> bytes:
        """The context of the ReadIndex request a barrier asked for now waits on (see
        ``read_barrier``): the newest request if it may be shared, the batch queued behind the
        request in flight, or a request made now."""
        raft = self.node.raft
        view = (raft.term, raft.lead, raft.state)
        key = (self.host.send_rounds, raft.log.committed, *view)
        shared = self._open_read
        if shared is not None and shared[0] == key and self._read_live(shared[1]):
            return shared[1]
        queued = self._queued_read
        if queued is not None and self._read_live(queued):
            if self._read_views[queued] == view:
                return queued
            # asked for under another term (the same leader re-elected: no soft state change
            # failed it): never issued now, so fail it rather than leave it to time out
            self._reads[queued].set_exception(
                Unavailable("leader changed", message="leadership changed during a read; retry")
            )
        ctx = self._new_read(view)
        if self._read_in_flight():
            self._queued_read = ctx
        else:
            self._issue_read(ctx)
        return ctx

    def _new_read(self, view: tuple[int, int, StateType]) -> bytes:
        ctx = f"{self.host.node_id}:{next(self._read_ids)}".encode()
        answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        answer.add_done_callback(functools.partial(self._read_answered, ctx))
        self._reads[ctx] = answer
        self._read_views[ctx] = view
        self._read_waiters[ctx] = 0
        self._read_batches[ctx] = _ReadBatch()
        return ctx

    def _read_live(self, ctx: bytes) -> bool:
        fut = self._reads.get(ctx)
        return fut is not None and not fut.done()

    def _read_in_flight(self) -> bool:
        """Whether a ReadIndex request was made less than an election timeout ago and is
        still unanswered (one older than that may have been lost: it holds nobody back)."""
        issued = self._issued_read
        if issued is None or not self._read_live(issued[0]):
            return False
        cfg = self.host.config
        patience = cfg.tick_ms * cfg.election_tick / 1000
        return asyncio.get_running_loop().time() - issued[1] < patience

    def _issue_read(self, ctx: bytes) -> None:
        """Ask Raft for a read index for ``ctx`` now (its answer comes in a Ready)."""
        raft = self.node.raft
        self.host.keep_ticks_current()  # the leader may answer from its lease
        try:
            self.node.read_index(ctx)
        except ProposalDropped:
            self._reads[ctx].set_exception(self._not_leader())
            return
        key = (self.host.send_rounds, raft.log.committed, raft.term, raft.lead, raft.state)
        self._open_read = (key, ctx)
        loop = asyncio.get_running_loop()
        self._issued_read = (ctx, loop.time())
        if self.host.config.lease_reads and raft.state is StateType.LEADER:
            # A leader judges the request from its lease now, not by a heartbeat round that
            # leaves after the barriers sharing it arrived: only a barrier already running or
            # scheduled (so arrived) before now may share it. Steps scheduled from now on,
            # every new arrival among them (after a freeze of this process, say), run after
            # this mark, which closes the request to them. (A follower's request is judged
            # by the leader when it gets there: the key above already closes it once sent.)
            loop.call_soon(self._close_shared_read, ctx)
        self.host.wake(self)

    def _close_shared_read(self, ctx: bytes) -> None:
        if self._open_read is not None and self._open_read[1] == ctx:
            self._open_read = None

    def _settle_reads(self) -> None:
        """Once no request is in flight (answered, failed, abandoned or overdue), make the
        one the queued barriers share."""
        if self._read_in_flight():
            return
        self._issued_read = None
        queued, self._queued_read = self._queued_read, None
        if queued is not None and self._read_live(queued):
            self._issue_read(queued)

    def _forget_read(self, ctx: bytes) -> None:
        self._reads.pop(ctx, None)
        self._read_views.pop(ctx, None)
        self._read_waiters.pop(ctx, None)
        batch = self._read_batches.pop(ctx, None)
        if batch is not None:
            batch.close()
        if self._open_read is not None and self._open_read[1] == ctx:
            self._open_read = None
        if self._queued_read == ctx:
            self._queued_read = None
        if self._issued_read is not None and self._issued_read[0] == ctx:
            self._settle_reads()

    async def wait_applied(self, index: int) -> None:
        if self.applied_index() >= index:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._apply_waiters, (index, next(self._waiter_ids), fut))
        await fut

    # ------------------------------------------------------------------ leadership, membership
    def transfer_leader(self, target: int) -> None:
        try:
            self.node.transfer_leader(target)
        except ProposalDropped:
            raise self._not_leader() from None
        self.host.wake(self)

    async def add_learner(self, node_id: int, address: str) -> None:
        await self._conf_change(ConfChange(ConfChangeType.ADD_LEARNER, node_id, address.encode()))

    async def promote(self, node_id: int) -> None:
        await self._conf_change(ConfChange(ConfChangeType.PROMOTE, node_id))

    async def remove_member(self, node_id: int) -> None:
        await self._conf_change(ConfChange(ConfChangeType.REMOVE, node_id))

    async def _conf_change(self, cc: ConfChange) -> None:
        if not self.is_leader:
            raise self._not_leader()
        if cc.type is ConfChangeType.ADD_LEARNER:
            self._learn_address(cc)
        try:
            index, term = self.node.propose_conf_change(cc)
        except ProposalDropped as e:
            raise Unavailable("dropped", message=str(e)) from None
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._track(index, term, fut)
        self.host.wake(self)
        try:
            await asyncio.wait_for(fut, self.host.config.request_timeout)
        except TimeoutError:
            raise OutcomeUnknown(
                "timed out", message="membership change timed out; outcome unknown"
            ) from None

    def _track(self, index: int, term: int, fut: asyncio.Future[Any]) -> None:
        """Wait for ``index`` to apply. An older proposal at the same index (from an earlier
        term of ours) was cut from our log when that index was overwritten: it is lost."""
        old = self._pending.get(index)
        if old is not None and old[0] != term:
            self.proposals_lost += 1
        if old is not None and not old[1].done():
            old[1].set_exception(
                Unavailable("leader changed", message="lost to a leader change; retry")
            )
        self._pending[index] = (term, fut)

    def _learn_address(self, cc: ConfChange) -> bool:
        if cc.type is not ConfChangeType.ADD_LEARNER or not cc.context:
            return False
        address = cc.context.decode()
        if self.addresses.get(cc.node_id) == address:
            return False
        self.addresses[cc.node_id] = address
        self.host.set_peer_address(cc.node_id, address)
        return True

    def set_addresses(self, addresses: Mapping[int, str]) -> None:
        self.addresses.update(addresses)

    # ------------------------------------------------------------------ ready handling
    def membership_changed_by(self, entries: list[Entry]) -> bool:
        """New members' addresses from conf-change entries about to be persisted."""
        changed = False
        for e in entries:
            if e.type is EntryType.CONF_CHANGE:
                changed |= self._learn_address(ConfChange.decode(e.data))
        return changed

    def _restore_from_storage(self, meta: SnapshotMeta) -> None:
        """Rebuild the state machine from the stored snapshot ``meta``, streaming if it can."""
        sm = self.sm
        if isinstance(sm, StreamingStateMachine):
            chunks = self.storage.open_snapshot_chunks(meta)
            first = next(chunks, b"")
            # An empty image (a new group's bootstrap snapshot) is the empty state.
            sm.restore_chunks(itertools.chain([first], chunks) if first else None, meta.index)
        else:
            sm.restore(self.storage.snapshot_data(), meta.index)

    def install_snapshot(self, rd: Ready) -> None:
        assert rd.snapshot is not None
        self.storage.install_snapshot_path(rd.snapshot)
        self._restore_from_storage(rd.snapshot)
        for index in [i for i in self._pending if i <= rd.snapshot.index]:
            _, fut = self._pending.pop(index)
            if not fut.done():
                fut.set_exception(
                    OutcomeUnknown("snapshot", message="outcome unknown: replaced by a snapshot")
                )
        self.snapshots_installed += 1

    def apply(self, entries: list[Entry]) -> None:
        for e in entries:
            result: Any = None
            if e.type is EntryType.NORMAL:
                if e.data:
                    try:
                        result = self.sm.apply(e.index, e.data)
                    except Exception as exc:
                        raise self._apply_failed(e, exc) from exc
            else:
                self._apply_conf_change(ConfChange.decode(e.data))
            waiting = self._pending.pop(e.index, None)
            if waiting is not None:
                term, fut = waiting
                if term != e.term:
                    self.proposals_lost += 1
                if fut.done():
                    continue
                if term != e.term:
                    fut.set_exception(
                        Unavailable("leader changed", message="lost to a leader change; retry")
                    )
                else:
                    fut.set_result((result, e.index, e.term))
        applied = entries[-1].index if entries else self.applied_index()
        while self._apply_waiters and self._apply_waiters[0][0] <= applied:
            _, _, fut = heapq.heappop(self._apply_waiters)
            if not fut.done():
                fut.set_result(None)

    def _apply_failed(self, entry: Entry, exc: Exception) -> ApplyFailed:
        """The error that stops this node when applying a committed ``entry`` raised.

        The other members applied that entry (or will): were this one to answer its proposer
        with the error and go on, as a failed command, its applied index would move past an
        entry its state does not reflect, and it would diverge for good, serving reads and
        snapshots of a state no other member has. A state machine answers a refused command in
        its return value (``MetaStateMachine`` turns every ``KeelError`` into a ``Result``); an
        exception is a bug or a failing disk, which only a stop can contain: the applied index
        stays before ``entry``, the ready loop ends with this error, and the process exits (as
        etcd panics). A restart applies the entry again: a transient fault heals, a
        deterministic bug stops every member at the same entry, and nothing diverges."""
        message = (
            f"{self.group_id}: applying committed entry {entry.index} (term {entry.term}) "
            f"raised {exc!r}; stopping this node so that it cannot diverge from the members "
            f"that applied it (applied index stays {self.applied_index()})"
        )
        log.critical("%s", message, exc_info=exc)
        return ApplyFailed(message)

    def _apply_conf_change(self, cc: ConfChange) -> None:
        if cc.node_id == self.host.node_id and cc.type is not ConfChangeType.REMOVE:
            # Added (back): a member removed earlier and re-added, or one that replays its
            # own removal from the log before its re-addition.
            self.removed = False
        if cc.type is ConfChangeType.REMOVE:
            if cc.node_id == self.host.node_id:
                self.removed = True
            elif cc.node_id in self.addresses and cc.node_id not in (
                self.voters() | self.learners()
            ):
                # (unless a later entry, already appended, added it back: keep its address)
                del self.addresses[cc.node_id]
                self.storage.set_membership(self.addresses)

    def on_read_states(self, rd: Ready) -> None:
        for rs in rd.read_states:
            fut = self._reads.get(rs.context)
            if fut is not None and not fut.done():
                fut.set_result(rs.index)
        self._settle_reads()

    def on_soft_state(self, rd: Ready) -> None:
        if rd.soft_state is None:
            return
        self.leader_changes.set()
        self.leader_changes = asyncio.Event()
        if rd.soft_state.state is not StateType.LEADER:
            err = self._not_leader()
            for _, fut, _ in self._queue:
                if not fut.done():
                    fut.set_exception(err)
            self._queue = []
        # A leader that stepped down forgot its pending ReadIndex requests, and a request a
        # follower forwarded to its old leader may never be answered: fail the reads issued
        # under another term, leader or role (safe: reads can be retried) rather than leaving
        # the callers to time out.
        now = (self.node.raft.term, rd.soft_state.lead, rd.soft_state.state)
        for ctx, fut2 in self._reads.items():
            if not fut2.done() and self._read_views.get(ctx) != now:
                fut2.set_exception(
                    Unavailable("leader changed", message="leadership changed during a read; retry")
                )
        self._settle_reads()

    def after_ready(self) -> None:
        """Take a snapshot and compact when the log has grown past the threshold (called
        between rounds, when no write of this node is in flight)."""
        if self._image is not None:  # written by the background thread: adopt it now
            meta, version = self._image
            self._image = None
            try:
                self.storage.adopt_snapshot(meta, version)
                self._compact_to(meta.index)
            except SnapshotOutOfDateError:
                pass  # a newer snapshot was installed meanwhile
        cfg = self.host.config
        applied = self.applied_index()
        snap = self.storage.snapshot_meta()
        if applied - snap.index < cfg.snapshot_every or self._snapshotting is not None:
            return
        conf = self.node.conf_state_at(applied)
        sm = self.sm
        if isinstance(sm, StreamingStateMachine):
            # A state in RocksDB may be large (a shard with a million files): its image is
            # written by another thread, from a view fixed now, while this loop goes on
            # applying and answering; it is adopted (and the log compacted) at a later round.
            meta, version = self.storage.plan_snapshot(applied, conf)
            chunks = sm.snapshot_chunks()
            self._snapshotting = asyncio.create_task(
                self._write_image(meta, version, chunks), name=f"snapshot-{self.group_id}"
            )
            return
        self.storage.create_snapshot(applied, conf, sm.snapshot())
        self._compact_to(applied)

    def _compact_to(self, index: int) -> None:
        keep = self.host.config.keep_after_snapshot
        self.storage.compact(max(self.storage.first_index() - 1, index - keep))
        self.storage.snapshots.delete_older_than(index)

    async def _write_image(self, meta: SnapshotMeta, version: int, chunks: Any) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(
                None, self.storage.snapshots.create, meta, chunks
            )
            self._image = (meta, version)
        except Exception:
            log.exception("snapshot of %s at %d failed; the log is kept", self.group_id, meta.index)
        finally:
            self._snapshotting = None

    def fail_all(self, err: Exception) -> None:
        """Fail every caller (shutdown): proposals already handed to Raft get ``err`` too,
        so pass an ``OutcomeUnknown``."""
        for _, fut, _ in self._queue:
            if not fut.done():
                fut.set_exception(err)
        for _, fut in self._pending.values():
            if not fut.done():
                fut.set_exception(err)
        for fut2 in self._reads.values():
            if not fut2.done():
                fut2.set_exception(err)
        for _, _, fut3 in self._apply_waiters:
            if not fut3.done():
                fut3.set_exception(err)
        self._queue, self._pending, self._apply_waiters = [], {}, []
        self._issued_read = self._queued_read = None


def _answer_packed(futures: list[asyncio.Future[Any]], shared: asyncio.Future[Any]) -> None:
    """Answer the proposals packed into one entry from that entry's outcome ``shared``:
    each its own result when ``apply`` returned one per proposal, else all the same."""
    if shared.cancelled():
        err: BaseException = OutcomeUnknown("cancelled", message="outcome unknown")
    else:
        exc = shared.exception()
        if exc is None:
            result, index, term = shared.result()
            each = isinstance(result, list) and len(result) == len(futures)
            for i, fut in enumerate(futures):
                if not fut.done():
                    fut.set_result((result[i] if each else result, index, term))
            return
        err = exc
    for fut in futures:
        if not fut.done():
            fut.set_exception(err)


class _ReadBatch:
    """The barriers sharing one ReadIndex request: their futures, and one timer that fails
    each at its own deadline (the earliest one pending; re-armed for the next)."""

    __slots__ = ("waiters", "timer")

    def __init__(self) -> None:
        self.waiters: list[tuple[float, asyncio.Future[None]]] = []
        self.timer: asyncio.TimerHandle | None = None

    def add(
        self, fut: asyncio.Future[None], deadline: float, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.waiters.append((deadline, fut))
        if self.timer is None or deadline < self.timer.when():
            if self.timer is not None:
                self.timer.cancel()
            self.timer = loop.call_at(deadline, self._expire, loop)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self.timer = None
        now = loop.time()
        later: float | None = None
        for deadline, fut in self.waiters:
            if fut.done():
                continue
            if deadline <= now:
                fut.set_exception(
                    Unavailable("timed out", message="read timed out (leadership may have changed)")
                )
            elif later is None or deadline < later:
                later = deadline
        if later is not None:
            self.timer = loop.call_at(later, self._expire, loop)

    def release(self) -> None:
        for _, fut in self.waiters:
            if not fut.done():
                fut.set_result(None)
        self.close()

    def fail(self, exc: BaseException) -> None:
        for _, fut in self.waiters:
            if not fut.done():
                fut.set_exception(exc)
        self.close()

    def released_by(self, applied: asyncio.Future[None]) -> None:
        """``applied`` resolved: the batch's index was applied (or the group failed)."""
        if applied.cancelled():
            self.fail(Unavailable("cancelled", message="read cancelled; retry"))
        elif (exc := applied.exception()) is not None:
            self.fail(exc)
        else:
            self.release()

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
