"""Keeping every block at its replication: the shard leader's background work.

Each shard this node leads is walked a few pages of files per tick (``PAGES_PER_TICK`` ×
``PAGE`` files, so a shard of millions of files costs the event loop little at a time), a new
pass beginning no sooner than half the chunk servers' dead-after time after the last one began
(``walk_due``), and for every block of a closed file (the last block of a file being written
is the writer's):

- fewer good replicas than the file's replication (a server died: it stopped heartbeating for
  ``dead_after_s``; a replica was found corrupt) → one holder copies it to new targets;
- more than needed → the replicas on the fullest servers are deleted, but only once every
  replica that stays has been *verified* since that was decided: its server re-read it from
  disk and checked its checksums (a ``verify`` command, answered in a heartbeat's
  ``verified`` notes, or by a corrupt report). A replica reported good may have rotted
  silently since its last scan; trimming the others on its word would delete the last good
  copy (DESIGN 2.12: when in doubt, keep data). Until every kept replica has answered, the
  trim waits (each walk asks again every ``RESCHEDULE_S``); a kept replica found corrupt
  makes the next walk decide anew;
- replicas with an older generation stamp (left by a failed pipeline) or corrupt ones, once
  enough good replicas exist → deleted;
- blocks of deleted files (the shard's delete queue) → deleted on every holder, and dequeued
  (``DequeueBlockDeletes``) once no server reports them;
- orphans (blocks no shard references at all) are ``keelfs.master.orphans``' work: the walk's
  memory is never evidence that a block is unreferenced, only the shards' block indexes are.

Chunk servers' administrative states (``keelfs.master.balancer``): the replicas that count
towards a block's replication are those on live servers in service, and those on servers in
maintenance while one of the first kind exists; a repair copies until they are enough (the
first new copy on another rack if they are all on one). Replicas on a decommissioning server
never count and are never trimmed as excess; each complete walk records, per decommissioning
server, how many of the shard's blocks it holds still lack copies elsewhere (``drains``,
served in ``Node.Status`` as ``drain``: ``keelfs admin servers`` shows "decommissioned" once
every shard's leader reports none left). Balancer moves (``balance_step``, driven by ``keelfs
admin balance``) are a copy to the target, then the ordinary excess trim with the move's
source ranked first to go: it still waits for every kept replica's verification.

Each shard led here is maintained in its own task (walk ticks, deletions, lease ticks, orphan
rounds), so a shard that cannot reach a quorum or another shard holds up only its own work.

Commands wait in per-server queues and travel in the replies to that server's heartbeats
(the seed's ``pending_commands``), each with the shard's id and epoch (its Raft term), which
the chunk server checks against the highest it has seen: a deposed leader's commands are
refused; and a command leaves this node only while it still leads that shard at that epoch
(``take_commands``). As it leaves, each of its blocks gets a block access token
(``keelfs.datapath.tokens``) for that block, stamp, shard and epoch: delete, replicate (which
the source passes on to its targets' writes) or read (verify); a chunk server does nothing
without it. Only leaders queue commands; block locations themselves are soft state
on every member (``keelfs.master.blocks``).

While a directory moves between shards, only the shard serving it maintains its files'
blocks (``_maintains``); both reference them (``keelfs.meta.blockrefs``), so neither lets
them be taken for orphans. Likewise a file locked by a cross-shard transaction here (a
rename or a directory move not yet applied on this shard) is not trimmed here: once the
decision is applied elsewhere, its new shard holds the file too and trims it its own way
(``_trims_here``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from keelfs.datapath.tokens import Access
from keelfs.errors import KeelError
from keelfs.master.balancer import (
    Move,
    choose_moves,
    counted_replicas,
    leaving_holders,
    trimmable,
)
from keelfs.master.blocks import DECOMMISSIONING, Replica, ServerState
from keelfs.master.orphans import OrphanCollector
from keelfs.meta import paths
from keelfs.meta.commands import DequeueBlockDeletes, RecoverLease, Tick
from keelfs.meta.ranges import FROZEN
from keelfs.meta.records import BlockInfo
from keelfs.rpc.pb import meta_pb2 as pb

if TYPE_CHECKING:
    from keelfs.master.member import Member
    from keelfs.master.node import MetaNode

__all__ = ["ReplicationMonitor"]

log = logging.getLogger("keelfs.master.replication")

PAGE = 500
PAGES_PER_TICK = 4
SCAN_LIMIT = 4 * PAGE
"""Records one page looks through at most: files without blocks are passed over cheaply,
but a shard of millions of them must not hold the event loop for one page."""
TICK_S = 0.5
RESCHEDULE_S = 10.0
"""A block's repair is not queued again for this long (the copy takes time to be reported)."""
MOVE_TIMEOUT_S = 120.0
"""A balancer move whose copy is not reported by then is forgotten (the next step may retry)."""
BALANCE_PAGES = 8
"""Pages of files one balancer step looks through at most (it goes on where it stopped)."""
_COMMAND_ACCESS = {
    "delete": Access.DELETE,
    "replicate": Access.REPLICATE | Access.WRITE,  # the source writes to its targets with it
    "verify": Access.READ,
}


def _new_token() -> int:
    """A verify command's token, unique among those the masters of a cluster issue (random:
    a note answering another node's or an older decision must never match)."""
    return random.getrandbits(63) | 1


@dataclass
class _Walk:
    cursor: str | None = None
    began: float = 0.0
    """When the pass under way began (monotonic)."""
    last_pass: float = float("-inf")
    """When the last complete pass began: the next one begins no sooner than the rest after
    it (``ReplicationMonitor.walk_due``)."""
    under: int = 0
    missing: int = 0
    excess: set[int] = field(default_factory=set)
    """Blocks found with more good replicas than wanted in this walk."""
    leaving: dict[str, int] = field(default_factory=dict)
    """Decommissioning server -> blocks of this walk's it holds without enough copies
    elsewhere (or of a file being written)."""
    leaving_ready: set[str] = field(default_factory=set)
    """The decommissioning servers known as such, with their full report in here, when this
    pass began: only for those does a pass that found nothing left prove anything."""


class _PageLeases:
    """Whether a lease holder's leases have expired, looked up once per holder for one page
    of the walk.

    Why: a shard's open files are mostly held by a few sessions (a client writing many files
    holds all their leases in one session), and the walk used to read the holder's expiry
    and the log time again for every file, most of the walk's cost on a shard being filled
    (``keelfs bench meta``). Within one page nothing is applied (the page is checked without
    a pause), so a holder's expiry is the same for all its files; the log time is taken once,
    when the page's first lease is checked (at most the page's few milliseconds earlier than
    per file: a lease that expires meanwhile is found by the next pass)."""

    __slots__ = ("_expired", "_member", "_now")

    def __init__(self, member: Member) -> None:
        self._member = member
        self._now: int | None = None
        self._expired: dict[int, bool] = {}

    def expired(self, holder: int) -> bool:
        known = self._expired.get(holder)
        if known is None:
            expiry = self._member.sm.lease_expiry(holder)
            if expiry is None:
                known = True
            else:
                if self._now is None:
                    self._now = self._member.log_time()
                known = expiry < self._now
            self._expired[holder] = known
        return known


@dataclass
class _Drain:
    """A decommissioning server as one shard's last complete walk left it."""

    blocks_left: int
    confirmed: bool
    """The walk began after this master knew of the decommission and had the server's full
    report, and found nothing of the shard's that still needs the server."""


@dataclass
class _Moving:
    """A balancer move under way: ``move`` copied, then the source's replica trimmed."""

    shard: str
    move: Move
    deadline: float


@dataclass
class _TrimDecision:
    """An excess trim decided for a block of ``shard``'s: the replicas it keeps, and those
    of them whose servers have verified their replica since (answering ``token``)."""

    shard: str
    gen_stamp: int
    keep: frozenset[str]
    token: int
    verified: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class _Trim:
    """A queued maintenance delete of a replica of a block of ``path``'s at ``gen_stamp``;
    ``keep``: the replicas an excess trim relies on (empty for a stale or corrupt one)."""

    path: str
    gen_stamp: int
    keep: frozenset[str]


class ReplicationMonitor:
    def __init__(self, node: MetaNode) -> None:
        self.node = node
        self._commands: dict[str, list[pb.ChunkCommand]] = {}
        self._walks: dict[str, _Walk] = {}
        self._scheduled: dict[tuple[str, int], float] = {}
        self._trims: dict[tuple[str, int], _Trim] = {}
        """(server, block) of the trims queued (see ``take_commands``)."""
        self._decisions: dict[int, _TrimDecision] = {}
        """Block -> its excess trim waiting for the kept replicas' verification."""
        self._tick_due: set[str] = set()
        """Shards whose log time must be carried forward (an expired lease to release)."""
        self.orphans = OrphanCollector(node, self._queue_orphan_delete)
        self.drains: dict[str, dict[str, _Drain]] = {}
        """Per shard led here: each decommissioning server as the last complete walk saw it."""
        self._moves: dict[int, _Moving] = {}
        """Block -> the balancer move under way for it."""
        self._balance_cursor: dict[str, str | None] = {}
        self.health: dict[str, dict[str, int]] = {}
        """Per shard led here, as of its last complete walk: blocks of closed files with fewer
        good replicas than wanted (``under_replicated``) and with none (``missing``)."""
        self.stats = {
            "replications": 0,
            "deletions": 0,
            "orphans": 0,
            "recovered": 0,
            "verifications": 0,
            "moves": 0,
        }

    # -- what the heartbeat service asks --------------------------------------------------
    def take_commands(self, server_id: str) -> list[pb.ChunkCommand]:
        """The commands queued for ``server_id`` that this node may still send: those of a
        shard it leads now, at the term it leads it in. The rest are dropped.

        The chunk server's fence (``keelfs.chunk.fencing``) is not enough on its own: it
        refuses an epoch older than the highest it has *seen* from the shard, and it sees a
        successor's epoch only once that successor has written to it or sent it a command.
        Until then a deposed leader's command passes, decided from a view the successor may
        already have acted against (a replica it re-replicated elsewhere, then trimmed here).
        A leader deposed and elected again (term 3, then 5) is not fenced at all by its own
        older commands, yet what it decided at term 3 may have been undone at term 4. So a
        command leaves only with the term it was decided in, while that term is current. What
        remains is the moment a deposed leader has not yet noticed it lost (``check_quorum``
        bounds it to an election timeout), and the fence covers that once the successor
        reaches the server.

        A trim (a replica deleted to maintain a file's blocks: excess, stale or corrupt)
        leaves only while its shard still references the block and no cross-shard
        transaction locks the file here: a command may wait long for its server (down, or
        slow to heartbeat), and if the file went to another shard meanwhile (a cross-shard
        rename), that shard maintains it now and trims in its own way; both trims together
        could delete every replica. An excess trim leaves only while every replica it keeps
        is still good here (not reported corrupt since its verification, its server alive)."""
        if not self.node.block_keys.signer.ready():
            return []  # they wait for the keys: unsigned, the server would refuse them
        queued = self._commands.pop(server_id, [])
        out = [
            c
            for c in queued
            if self._still_trims(server_id, c) and self._leads_at(c.shard, c.epoch)
        ]
        for command in out:
            self._sign(command)
        return out

    def _sign(self, command: pb.ChunkCommand) -> None:
        """Give each block of ``command`` its access token (signed now: a command may wait
        long for its server, longer than a token lives)."""
        modes = _COMMAND_ACCESS.get(command.kind, Access(0))
        del command.block_tokens[:]
        for b in command.blocks:
            command.block_tokens.append(
                self.node.block_keys.sign(
                    b.block_id, b.gen_stamp, modes, command.shard, command.epoch
                )
            )

    def _still_trims(self, server_id: str, command: pb.ChunkCommand) -> bool:
        """False for a trim that may no longer be done (see take_commands)."""
        if command.kind != "delete":
            return True
        block_id = command.blocks[0].block_id
        trim = self._trims.pop((server_id, block_id), None)
        if trim is None:
            return True  # the delete queue's or an orphan's: unreferenced by design
        member = self.node.shards.get(command.shard)
        if (
            member is not None
            and member.sm.referenced_blocks([block_id])
            and self._trims_here(member, trim.path)
            and self._still_good(block_id, trim.gen_stamp, trim.keep)
        ):
            return True
        # dropped: the next walk decides again from what it sees then
        self._scheduled.pop((f"delete:{server_id}", block_id), None)
        return False

    def _still_good(self, block_id: int, gen_stamp: int, servers: frozenset[str]) -> bool:
        """Whether every one of ``servers`` holds a good replica of ``block_id`` as far as
        this node knows now."""
        good = {s.server_id for s in self.node.chunks.locations(block_id, gen_stamp)}
        return servers <= good

    def verified(self, server_id: str, block_id: int, gen_stamp: int, token: int) -> None:
        """``server_id`` re-read its replica of ``block_id`` at ``gen_stamp`` and found it
        good, answering the verify command ``token`` (a note for another decision, another
        node's or an older one, is ignored: only a check made after this decision counts)."""
        decision = self._decisions.get(block_id)
        if (
            decision is not None
            and decision.token == token
            and decision.gen_stamp == gen_stamp
            and server_id in decision.keep
        ):
            decision.verified.add(server_id)

    def _leads_at(self, shard: str, epoch: int) -> bool:
        member = self.node.shards.get(shard)
        if member is None or not member.group.is_leader:
            return False
        return bool(member.group.node.raft.term == epoch)

    # -- the loop ---------------------------------------------------------------------------
    async def loop(self) -> None:
        """Start a maintenance task for each shard as this node comes to lead it."""
        tasks: dict[str, asyncio.Task[None]] = {}
        try:
            while True:
                for member in list(self.node.shards.values()):
                    task = tasks.get(member.group_id)
                    if member.group.is_leader and (task is None or task.done()):
                        tasks[member.group_id] = asyncio.create_task(
                            self._lead(member), name=f"maintain-{member.group_id}"
                        )
                await asyncio.sleep(TICK_S)
        finally:
            for task in tasks.values():
                task.cancel()

    async def _lead(self, member: Member) -> None:
        """Maintain ``member``'s shard while this node leads it."""
        orphans = asyncio.create_task(self.orphans.run(member))
        try:
            while member.group.is_leader:
                try:
                    await self.tick(member, walk_files=self.walk_due(member.group_id))
                except KeelError as exc:
                    log.info("%s: block maintenance step failed: %s", member.group_id, exc)
                await asyncio.sleep(TICK_S)
        finally:
            orphans.cancel()
            self._walks.pop(member.group_id, None)
            self.health.pop(member.group_id, None)
            self.drains.pop(member.group_id, None)
            for block_id in [b for b, m in self._moves.items() if m.shard == member.group_id]:
                del self._moves[block_id]

    def _queue(self, server_id: str, command: pb.ChunkCommand) -> None:
        self._commands.setdefault(server_id, []).append(command)

    def _pending(self, kind: str, block_id: int) -> bool:
        """Whether ``kind`` was done for ``block_id`` less than ``RESCHEDULE_S`` ago."""
        return self._scheduled.get((kind, block_id), 0.0) > time.monotonic()

    def _queue_delete(
        self, server_id: str, shard: str, epoch: int, block_id: int, gen_stamp: int
    ) -> None:
        """Queue the deletion of ``server_id``'s replica of ``block_id`` at ``gen_stamp``."""
        ref = pb.ReplicaReport(block_id=block_id, gen_stamp=gen_stamp)
        self._queue(
            server_id, pb.ChunkCommand(kind="delete", shard=shard, epoch=epoch, blocks=[ref])
        )

    def _due(self, kind: str, block_id: int) -> bool:
        """Whether ``kind`` may be done for ``block_id`` now (then it is not again for
        ``RESCHEDULE_S``)."""
        if self._pending(kind, block_id):
            return False
        self._scheduled[(kind, block_id)] = time.monotonic() + RESCHEDULE_S
        return True

    def walk_due(self, shard: str) -> bool:
        """Whether the next tick walks ``shard``'s files: always while a pass is under way,
        and a new pass once half the time after which a silent chunk server is taken for dead
        has passed since the last one began.

        A walk decodes and checks every file, and a small shard's pass ends in a tick or two:
        started again at once, it took half the leader's CPU on a shard of a few thousand
        files that served reads (``keelfs bench meta``), for no gain, since what it repairs (a
        dead server's blocks) shows up no faster than that. A shard too big for one pass in
        that time is walked without a pause, as before."""
        walk = self._walks.get(shard)
        if walk is None or walk.cursor is not None:
            return True
        return time.monotonic() - walk.last_pass >= self.node.chunks.dead_after_s / 2

    async def tick(self, member: Member, walk_files: bool = True) -> None:
        """One step of ``member``'s maintenance: a few pages of the walk (unless
        ``walk_files`` is false), the deletions, and the log time carried forward."""
        if walk_files:
            await self._walk_pages(member)
        shard = member.group_id
        epoch = member.group.node.raft.term
        await self._deletions(member, shard, epoch)
        if shard in self._tick_due:
            self._tick_due.discard(shard)
            await self.node.propose(member, Tick(), None, 5.0)
        now = time.monotonic()
        self._scheduled = {k: v for k, v in self._scheduled.items() if v > now}

    async def _walk_pages(self, member: Member) -> None:
        shard = member.group_id
        walk = self._walks.setdefault(shard, _Walk())
        epoch = member.group.node.raft.term
        if walk.cursor is None:
            walk.began = time.monotonic()
            walk.leaving_ready = self._leaving_ready()
            walk.leaving = {}
        for _ in range(PAGES_PER_TICK):
            page, after = member.sm.maintained_files_page(walk.cursor, PAGE, SCAN_LIMIT, heads=True)
            leases = _PageLeases(member)
            for path, inode in page:
                self._check_file(member, shard, epoch, path, inode, walk, leases)
            if after is None:
                self._forget_decisions(shard, walk.excess)
                self.health[shard] = {
                    "under_replicated": walk.under,
                    "missing": walk.missing,
                    "corrupt_replicas": sum(1 for _ in self.node.chunks.corrupt),
                }
                self.drains[shard] = self._drain_report(walk)
                walk.cursor, walk.under, walk.missing = None, 0, 0
                walk.excess = set()
                walk.last_pass = walk.began
                break
            walk.cursor = after
            await asyncio.sleep(0)

    @staticmethod
    def _maintains(member: Member, path: str) -> bool:
        """Whether this shard keeps ``path``'s blocks at their replication (repairs, trims,
        recovers the lease) now.

        While a directory moves between shards (``keelfs.meta.ranges``) both hold its files'
        records, and two leaders trimming "excess" replicas on their own would delete too
        many. Exactly one maintains: the source while the range is ``frozen`` (it still
        serves it), the target once the move committed; nobody maintains a target's
        ``incoming`` copy or a source's ``moved`` leftover. Between the source's settle and
        the target's, neither does: a repair waits a moment, nothing is deleted twice."""
        state = member.sm.range_of(paths.parent(path))
        return state is None or state.state == FROZEN

    @staticmethod
    def _trims_here(member: Member, path: str) -> bool:
        """Whether this shard may delete replicas of ``path``'s blocks now: not while a
        cross-shard transaction locks the file here.

        A file renamed to another shard is held by both from the moment the shard that
        gains it applies the decision until the shard that loses it applies it too (in a
        directory move both are participants, finishing in any order); the losing shard
        keeps its lock on the file until then, and the gaining one trims. While the
        transaction is undecided the file stays where it is, locked, and nobody trims it:
        it may be aborted (kept here) or committed (trimmed there)."""
        return not member.sm.lock_holder(path)

    def _excess(
        self,
        shard: str,
        epoch: int,
        block: BlockInfo,
        kept: list[str],
        want: int,
        walk: _Walk,
        drop: str | None = None,
    ) -> tuple[list[str], frozenset[str]]:
        """The replicas of ``block`` to trim as excess now (of ``kept``, its good replicas
        not already being deleted), and those that the trim keeps.

        A trim is decided once (the ``want`` replicas on the servers with most free space
        stay) and asks each kept replica's server to verify it; it is done only when every
        one of them has answered "good" since. A decision holds while its kept replicas
        stay good here; one reported corrupt, dead or gone makes the next walk decide anew."""
        if len(kept) <= want:
            self._decisions.pop(block.block_id, None)
            return [], frozenset()
        walk.excess.add(block.block_id)
        decision = self._decisions.get(block.block_id)
        if (
            decision is None
            or decision.shard != shard
            or decision.gen_stamp != block.gen_stamp
            or not decision.keep <= set(kept)
        ):
            # a balancer move's source goes, whatever its free space says
            ranked = [s for s in kept if s != drop] + [s for s in kept if s == drop]
            keep = frozenset(ranked[:want])
            decision = _TrimDecision(shard, block.gen_stamp, keep, _new_token())
            self._decisions[block.block_id] = decision
            for server_id in keep:  # asked at once, whatever an older decision asked
                self._scheduled.pop((f"verify:{server_id}", block.block_id), None)
        unverified = sorted(decision.keep - decision.verified)
        if not unverified:
            del self._decisions[block.block_id]
            return [s for s in kept if s not in decision.keep], decision.keep
        for server_id in unverified:
            if self._due(f"verify:{server_id}", block.block_id):
                self._queue_verify(server_id, shard, epoch, block, decision.token)
        return [], decision.keep

    def _repair(
        self,
        shard: str,
        epoch: int,
        block: BlockInfo,
        ref: pb.ReplicaReport,
        good: list[ServerState],
        counted: list[str],
        holders: dict[str, Replica],
        want: int,
    ) -> None:
        """Copy ``block`` from a live good replica to enough new servers in service that
        ``counted`` reaches ``want``; the first new one on another rack if the replicas that
        count are all on one (``ChunkRegistry.choose``)."""
        reg = self.node.chunks
        targets = reg.choose(want - len(counted), exclude=set(holders), survivors=counted)
        if not targets:
            return
        self._queue_replicate(shard, epoch, ref, good[0].server_id, targets)
        log.info("%s: re-replicating block %d to %s", shard, block.block_id,
                 [t.server_id for t in targets])  # fmt: skip

    def _queue_replicate(
        self,
        shard: str,
        epoch: int,
        ref: pb.ReplicaReport,
        source: str,
        targets: Sequence[ServerState],
    ) -> None:
        cmd = pb.ChunkCommand(kind="replicate", shard=shard, epoch=epoch, blocks=[ref])
        for t in targets:
            cmd.targets.add(server_id=t.server_id, address=t.address, rack=t.rack)
        self._queue(source, cmd)
        self.stats["replications"] += 1

    def _moved_source(self, block: BlockInfo, kept: list[str]) -> str | None:
        """The source of ``block``'s balancer move, once its copy is reported on the target
        and both replicas are good here (then the trim drops the source); None otherwise.
        A move whose source's replica is gone is done; one whose block changed or that took
        too long is forgotten."""
        moving = self._moves.get(block.block_id)
        if moving is None:
            return None
        move = moving.move
        holders = self.node.chunks.replicas.get(block.block_id, {})
        if (
            move.gen_stamp != block.gen_stamp
            or move.source not in holders
            or time.monotonic() > moving.deadline
        ):
            del self._moves[block.block_id]
            return None
        return move.source if move.target in kept and move.source in kept else None

    # -- decommissioning ----------------------------------------------------------------------
    def _leaving_ready(self) -> set[str]:
        """The decommissioning servers live here with their full report in."""
        reg = self.node.chunks
        return {
            sid
            for sid in reg.admin
            if reg.admin_state(sid) == DECOMMISSIONING
            and sid in reg.servers
            and reg.servers[sid].reported
            and reg.live(sid)
        }

    def _drain_report(self, walk: _Walk) -> dict[str, _Drain]:
        reg = self.node.chunks
        out: dict[str, _Drain] = {}
        for sid in reg.admin:
            if reg.admin_state(sid) != DECOMMISSIONING:
                continue
            left = walk.leaving.get(sid, 0)
            out[sid] = _Drain(left, left == 0 and sid in walk.leaving_ready)
        return out

    def drain_status(self) -> list[pb.DrainReport]:
        """Per shard led here, per decommissioning server: what the last complete walk found.
        ``done`` also needs nothing being written on the server now (its last heartbeat's
        load): a pipeline opened before the decommission may still go through it."""
        reg = self.node.chunks
        out: list[pb.DrainReport] = []
        for shard, drains in sorted(self.drains.items()):
            for sid, drain in sorted(drains.items()):
                if reg.admin_state(sid) != DECOMMISSIONING:
                    continue
                st = reg.servers.get(sid)
                idle = st is not None and reg.live(sid) and st.load == 0
                out.append(
                    pb.DrainReport(
                        shard=shard,
                        server_id=sid,
                        blocks_left=drain.blocks_left,
                        done=drain.confirmed and idle,
                    )
                )
        return out

    # -- the balancer -------------------------------------------------------------------------
    def balance_step(
        self,
        member: Member,
        sources: Sequence[str],
        targets: Sequence[str],
        max_bytes: int,
        min_block_bytes: int = 0,
        room: Mapping[str, int] | None = None,
        excess: Mapping[str, int] | None = None,
    ) -> tuple[list[Move], int]:
        """Begin moves of ``member``'s replicas from ``sources`` to ``targets`` (see
        ``keelfs.master.balancer``): at most ``max_bytes`` in flight for this shard, these
        included. Returns the moves begun and how many of the shard's are in flight."""
        shard = member.group_id
        epoch = member.group.node.raft.term
        reg = self.node.chunks
        mine = [m for m in self._moves.values() if m.shard == shard]
        budget = max_bytes - sum(m.move.length for m in mine)
        begun: list[Move] = []
        take = None if room is None else dict(room)
        shed = None if excess is None else dict(excess)
        cursor = self._balance_cursor.get(shard)
        for _ in range(BALANCE_PAGES):
            if budget <= 0:
                break
            page, after = member.sm.maintained_files_page(cursor, PAGE, SCAN_LIMIT)
            candidates = [
                (b, inode.replication)
                for path, inode in page
                if not inode.under_construction
                and self._maintains(member, path)
                and self._trims_here(member, path)
                for b in inode.blocks
            ]
            busy = set(self._moves) | set(self._decisions)
            flying = [m.move for m in self._moves.values()]  # every shard's: one registry
            chosen = choose_moves(
                reg, candidates, sources, targets, budget, busy, flying, min_block_bytes,
                take, shed,
            )  # fmt: skip
            for move in chosen:
                if take is not None:
                    take[move.target] -= move.length
                if shed is not None:
                    shed[move.source] -= move.length
                ref = pb.ReplicaReport(
                    block_id=move.block_id, gen_stamp=move.gen_stamp, length=move.length
                )
                self._queue_replicate(shard, epoch, ref, move.source, [reg.servers[move.target]])
                self._moves[move.block_id] = _Moving(shard, move, time.monotonic() + MOVE_TIMEOUT_S)
                self.stats["moves"] += 1
                budget -= move.length
                begun.append(move)
            cursor = after
            if cursor is None:
                break
        self._balance_cursor[shard] = cursor
        return begun, sum(1 for m in self._moves.values() if m.shard == shard)

    def _queue_verify(
        self, server_id: str, shard: str, epoch: int, block: BlockInfo, token: int
    ) -> None:
        """Ask ``server_id`` to re-read its replica of ``block`` now and answer ``token``."""
        ref = pb.ReplicaReport(block_id=block.block_id, gen_stamp=block.gen_stamp)
        command = pb.ChunkCommand(kind="verify", shard=shard, epoch=epoch, blocks=[ref])
        command.token = token
        self._queue(server_id, command)
        self.stats["verifications"] += 1

    def _forget_decisions(self, shard: str, excess: set[int]) -> None:
        """Drop ``shard``'s trim decisions for blocks a whole walk found no excess of (the
        file was deleted, moved away, or a replica went)."""
        for block_id in [
            b for b, d in self._decisions.items() if d.shard == shard and b not in excess
        ]:
            del self._decisions[block_id]

    def _check_file(
        self,
        member: Member,
        shard: str,
        epoch: int,
        path: str,
        inode: object,
        walk: _Walk,
        leases: _PageLeases,
    ) -> None:
        reg = self.node.chunks
        blocks = inode.blocks  # type: ignore[attr-defined]
        writing = inode.under_construction  # type: ignore[attr-defined]
        want = inode.replication  # type: ignore[attr-defined]
        if not self._maintains(member, path):
            return
        # looked up at the first block that needs it: a file without blocks (an inline one,
        # an empty one being written) needs none, and it was most of such a file's check
        trims: bool | None = None
        for i, b in enumerate(blocks):
            if writing and i == len(blocks) - 1:
                for server_id in leaving_holders(reg, b.block_id):  # it waits for the close
                    walk.leaving[server_id] = walk.leaving.get(server_id, 0) + 1
                self._moves.pop(b.block_id, None)  # a block being written is never moved
                continue
            holders = reg.replicas.get(b.block_id, {})
            good = reg.locations(b.block_id, b.gen_stamp)
            counted = counted_replicas(reg, b)
            stale = [s for s, r in holders.items() if r.gen_stamp < b.gen_stamp]
            corrupt = [s for s in holders if (b.block_id, s) in reg.corrupt]
            ref = pb.ReplicaReport(block_id=b.block_id, gen_stamp=b.gen_stamp, length=b.length)
            walk.under += len(counted) < want
            walk.missing += not good
            if len(counted) < want:
                for server_id in leaving_holders(reg, b.block_id):
                    walk.leaving[server_id] = walk.leaving.get(server_id, 0) + 1
            if good and len(counted) < want and self._due("replicate", b.block_id):
                self._repair(shard, epoch, b, ref, good, counted, holders, want)
            if trims is None:
                trims = self._trims_here(member, path)
            if not trims:
                continue
            # the fullest servers' (most free first), among those not already told to delete
            # theirs: until they report it, a walk that ranked the servers anew (their use
            # changed) would otherwise pick the replicas it kept last time as extra too
            # (with no more good replicas than wanted there is no excess: skip the lookups)
            trim_pool = [s for s in good if trimmable(reg, s.server_id)]
            kept = [
                s.server_id
                for s in (trim_pool if len(trim_pool) > want else [])
                if not self._pending(f"delete:{s.server_id}", b.block_id)
            ]
            drop = self._moved_source(b, kept)
            extra, keep = self._excess(shard, epoch, b, kept, want, walk, drop)
            plain = stale + (corrupt if len(good) >= want else [])
            for server_id in plain + extra:
                if self._due(f"delete:{server_id}", b.block_id):
                    gen = holders[server_id].gen_stamp if server_id in holders else b.gen_stamp
                    self._queue_delete(server_id, shard, epoch, b.block_id, gen)
                    relies_on = keep if server_id in extra else frozenset()
                    self._trims[(server_id, b.block_id)] = _Trim(path, b.gen_stamp, relies_on)
                    self.stats["deletions"] += 1
        if not writing:
            return
        holder = inode.lease_holder  # type: ignore[attr-defined]
        if holder:
            if leases.expired(holder):
                # expired by the time this leader would propose but not yet by the log
                # (nothing was applied since): a Tick carries it into the log, which releases
                # the lease (the wall clock would be wrong here: log time is not wall time)
                self._tick_due.add(shard)
        elif self._due("recover", hash(path)):
            task = asyncio.ensure_future(self._recover_lease(member, path, inode))
            task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def _recover_lease(self, member: Member, path: str, inode: object) -> None:
        """Close a file whose writer is gone: its last block's length is the smallest among
        the finalized replicas reported at its generation stamp; with none, the block is
        dropped if no server reports it at all (nothing of it was ever acknowledged) and
        that absence means something: every live server's full report is in here (see
        ``ChunkRegistry.complete``). Otherwise it waits (and is tried again later): right
        after a failover or a restart the registry is still filling, and the block may be a
        finalized one holding data the writer hflushed."""
        command = self._lease_recovery(path, inode.blocks)  # type: ignore[attr-defined]
        if command is None:
            return
        with contextlib.suppress(KeelError):
            result, _, _ = await self.node.propose(member, command, None, 5.0)
            if result.ok:
                self.stats["recovered"] += 1
                log.info("%s: lease of %s recovered", member.group_id, path)

    def _lease_recovery(self, path: str, blocks: Sequence[BlockInfo]) -> RecoverLease | None:
        """The command that closes ``path`` (last block ``blocks[-1]``), or None to wait."""
        if not blocks:
            return RecoverLease(path)
        reg = self.node.chunks
        last = blocks[-1]
        holders = reg.replicas.get(last.block_id, {})
        lengths = [r.length for r in holders.values() if r.gen_stamp == last.gen_stamp]
        if lengths:
            return RecoverLease(path, min(lengths))
        if not holders and reg.complete():
            return RecoverLease(path, 0, drop_last=True)
        # only stale replicas (the writer's recovery may be under way), or replicas this
        # master may not have heard of yet: wait
        return None

    async def _deletions(self, member: Member, shard: str, epoch: int) -> None:
        reg = self.node.chunks
        gone: list[int] = []
        pending = member.sm.pending_block_deletes(limit=1000)
        if pending and member.sm.has_snapshots():
            held = await self._held_elsewhere(member, [b.block_id for b in pending])
            if held is None:
                return  # a shard did not answer: delete nothing this time
            # held by another shard's record (a snapshot's copy of a file that moved here
            # after it was taken): not this queue's to delete any more; the orphan collector
            # deletes it once nothing references it
            gone += sorted(held)
            pending = [b for b in pending if b.block_id not in held]
        for block in pending:
            holders = reg.replicas.get(block.block_id, {})
            if not holders:
                gone.append(block.block_id)
                continue
            for server_id, replica in holders.items():
                if self._due(f"delete:{server_id}", block.block_id):
                    self._queue_delete(server_id, shard, epoch, block.block_id, replica.gen_stamp)
                    self.stats["deletions"] += 1
        if gone and reg.complete():  # no live server still on its way back with a replica
            await self.node.propose(member, DequeueBlockDeletes(tuple(gone)), None, 5.0)

    async def _held_elsewhere(self, member: Member, block_ids: list[int]) -> set[int] | None:
        """Those of ``block_ids`` (queued for deletion here) that another shard references,
        asked only where snapshots exist (``keelfs.meta.snapshots``): a snapshot's copy stays
        on the shard the file was on when it was taken, so a file renamed to another shard
        and deleted there is queued on a shard that does not hold the copy. None: some shard
        did not answer. One round suffices: a queued block is referenced by no live record,
        and a copy never travels (it is made from a live record, and dropped)."""
        others = [s for s in sorted(self.node.shard_map.shards) if s != member.group_id]
        held: set[int] = set()
        try:
            for other in others:
                answer = await self.orphans.ask(other, block_ids)
                held |= answer.known
        except (TimeoutError, KeelError) as exc:
            log.info("%s: deletions wait, a shard did not answer: %s", member.group_id, exc)
            return None
        return held

    def _queue_orphan_delete(self, member: Member, block_id: int) -> int:
        """Queue the deletion of every reported replica of orphan ``block_id`` under
        ``member``'s epoch; how many were queued."""
        epoch = member.group.node.raft.term
        holders = self.node.chunks.replicas.get(block_id, {})
        for server_id, replica in holders.items():
            self._queue_delete(server_id, member.group_id, epoch, block_id, replica.gen_stamp)
        self.stats["orphans"] += 1 if holders else 0
        return len(holders)
