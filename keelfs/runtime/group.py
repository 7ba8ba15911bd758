"""One Raft group's member on a host: proposals, reads, applying, snapshots, membership.

Everything here runs on the host's event loop; the host's ready loop calls ``_flush``,
``_on_ready_persisted`` and friends. Callers use ``propose``, ``read_barrier``,
``transfer_leader`` and the membership methods.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from keelfs.raft.core import Config, StateType
from keelfs.raft.errors import NotLeaderError, ProposalDropped
from keelfs.raft.messages import ConfChange, ConfChangeType, Entry, EntryType
from keelfs.raft.rawnode import RawNode, Ready
from keelfs.runtime.errors import NotLeader, RuntimeUnavailable
from keelfs.runtime.statemachine import StateMachine
from keelfs.storage.rocks import RocksLogStorage

if TYPE_CHECKING:
    from keelfs.runtime.host import RaftHost


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
            sm.restore(storage.snapshot_data(), snap.index)
        self.node = RawNode(
            Config(
                id=host.node_id,
                rng=random.Random(),
                election_tick=cfg.election_tick,
                heartbeat_tick=cfg.heartbeat_tick,
                pre_vote=True,
                check_quorum=True,
                max_inflight_msgs=cfg.max_inflight_msgs,
                snapshot_chunk_size=cfg.snapshot_chunk_size,
                applied=max(snap.index, min(sm.applied_index(), storage.initial_state()[0].commit)),
            ),
            storage,
        )
        self.addresses: dict[int, str] = dict(storage.membership())
        self._queue: list[tuple[bytes, asyncio.Future[Any]]] = []
        self._pending: dict[int, tuple[int, asyncio.Future[Any]]] = {}
        self._reads: dict[bytes, asyncio.Future[int]] = {}
        self._apply_waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._read_ids = itertools.count(1)
        self._waiter_ids = itertools.count()
        self.removed = False
        self.leader_changes: asyncio.Event = asyncio.Event()

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

    def status(self) -> dict[str, Any]:
        st = self.node.status()
        return {
            "group": self.group_id,
            "id": st.id,
            "state": st.state.name.lower(),
            "term": st.term,
            "leader": st.lead,
            "commit": st.commit,
            "applied": st.applied,
            "last_index": st.last_index,
            "voters": sorted(st.conf.voters),
            "learners": sorted(st.conf.learners),
            "progress": st.progress,
            "members": {str(k): v for k, v in sorted(self.addresses.items())},
        }

    def _not_leader(self) -> NotLeader:
        return NotLeader(self.group_id, self.leader_id, self.leader_address())

    # ------------------------------------------------------------------ proposals
    async def propose(self, data: bytes, timeout: float | None = None) -> Any:
        """Replicate ``data``; returns what the state machine's ``apply`` returned.

        Raises ``NotLeader`` at once on a follower, ``RuntimeUnavailable`` when the queue is
        full (back-pressure) or when the entry was lost to a leader change; on timeout the
        outcome is unknown (the entry may still commit), which is why clients carry request ids.
        """
        if self.removed:
            raise RuntimeUnavailable(f"this node was removed from {self.group_id}")
        if not self.is_leader:
            raise self._not_leader()
        if len(self._pending) + len(self._queue) >= self.host.config.max_pending:
            raise RuntimeUnavailable("too many proposals in flight; retry later")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((data, fut))
        self.host.wake()
        try:
            return await asyncio.wait_for(fut, timeout or self.host.config.request_timeout)
        except TimeoutError:
            raise RuntimeUnavailable("proposal timed out; its outcome is unknown") from None

    def _flush(self) -> None:
        """Propose everything queued as one batch (one append, one message per follower)."""
        if not self._queue:
            return
        queue, self._queue = self._queue, []
        live = [(d, f) for d, f in queue if not f.done()]
        if not live:
            return
        try:
            stamps = self.node.propose_batch([d for d, _ in live])
        except NotLeaderError:
            err: Exception = self._not_leader()
        except ProposalDropped as e:
            err = RuntimeUnavailable(str(e))
        else:
            for (_, fut), (index, term) in zip(live, stamps, strict=True):
                self._pending[index] = (term, fut)
            return
        for _, fut in live:
            fut.set_exception(err)

    # ------------------------------------------------------------------ reads
    async def read_barrier(self, timeout: float | None = None) -> None:
        """Return once this member's state reflects every write acknowledged before the call.

        ReadIndex on the leader or forwarded from a follower, then a wait until applied.
        """
        ctx = f"{self.host.node_id}:{next(self._read_ids)}".encode()
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._reads[ctx] = fut
        try:
            try:
                self.node.read_index(ctx)
            except ProposalDropped:
                raise self._not_leader() from None
            self.host.wake()
            t = timeout or self.host.config.request_timeout
            index = await asyncio.wait_for(fut, t)
            await asyncio.wait_for(self.wait_applied(index), t)
        except TimeoutError:
            raise RuntimeUnavailable("read timed out (leadership may have changed)") from None
        finally:
            self._reads.pop(ctx, None)

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
        self.host.wake()

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
            raise RuntimeUnavailable(str(e)) from None
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[index] = (term, fut)
        self.host.wake()
        try:
            await asyncio.wait_for(fut, self.host.config.request_timeout)
        except TimeoutError:
            raise RuntimeUnavailable("membership change timed out; outcome unknown") from None

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

    def install_snapshot(self, rd: Ready) -> None:
        assert rd.snapshot is not None
        data = self.storage.install_snapshot(rd.snapshot)
        self.sm.restore(data, rd.snapshot.index)
        for index in [i for i in self._pending if i <= rd.snapshot.index]:
            _, fut = self._pending.pop(index)
            if not fut.done():
                fut.set_exception(RuntimeUnavailable("outcome unknown: replaced by a snapshot"))

    def apply(self, entries: list[Entry]) -> None:
        for e in entries:
            result: Any = None
            error: Exception | None = None
            if e.type is EntryType.NORMAL:
                if e.data:
                    try:
                        result = self.sm.apply(e.index, e.data)
                    except Exception as exc:  # a bad command fails its proposer, not the node
                        error = exc
            else:
                self._apply_conf_change(ConfChange.decode(e.data))
            waiting = self._pending.pop(e.index, None)
            if waiting is not None:
                term, fut = waiting
                if fut.done():
                    continue
                if term != e.term:
                    fut.set_exception(RuntimeUnavailable("lost to a leader change; retry"))
                elif error is not None:
                    fut.set_exception(error)
                else:
                    fut.set_result(result)
        applied = entries[-1].index if entries else self.applied_index()
        while self._apply_waiters and self._apply_waiters[0][0] <= applied:
            _, _, fut = heapq.heappop(self._apply_waiters)
            if not fut.done():
                fut.set_result(None)

    def _apply_conf_change(self, cc: ConfChange) -> None:
        if cc.type is ConfChangeType.REMOVE:
            if cc.node_id == self.host.node_id:
                self.removed = True
            elif cc.node_id in self.addresses:
                del self.addresses[cc.node_id]
                self.storage.set_membership(self.addresses)

    def on_read_states(self, rd: Ready) -> None:
        for rs in rd.read_states:
            fut = self._reads.get(rs.context)
            if fut is not None and not fut.done():
                fut.set_result(rs.index)

    def on_soft_state(self, rd: Ready) -> None:
        if rd.soft_state is None:
            return
        self.leader_changes.set()
        self.leader_changes = asyncio.Event()
        if rd.soft_state.state is not StateType.LEADER:
            err = self._not_leader()
            for _, fut in self._queue:
                if not fut.done():
                    fut.set_exception(err)
            self._queue = []

    def after_ready(self) -> None:
        """Take a snapshot and compact when the log has grown past the threshold."""
        cfg = self.host.config
        applied = self.applied_index()
        snap = self.storage.snapshot_meta()
        if applied - snap.index < cfg.snapshot_every:
            return
        conf = self.node.conf_state_at(applied)
        self.storage.create_snapshot(applied, conf, self.sm.snapshot())
        self.storage.compact(max(self.storage.first_index() - 1, applied - cfg.keep_after_snapshot))
        self.storage.snapshots.delete_older_than(applied)

    def fail_all(self, err: Exception) -> None:
        for _, fut in self._queue:
            if not fut.done():
                fut.set_exception(err)
        for _, fut in self._pending.values():
            if not fut.done():
                fut.set_exception(err)
        for fut2 in self._reads.values():
            if not fut2.done():
                fut2.set_exception(err)
        self._queue, self._pending = [], {}
