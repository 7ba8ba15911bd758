"""Directory trees moved across shards in steps: renames too large for one transaction.

A rename of a directory whose subtree spans shards is one transaction over every record of
the tree (``keelfs.master.cross_shard``), at most ``subtree.MAX_ENTRIES`` records and
``subtree.MAX_RECORD_BYTES`` of them. A larger tree is moved in steps, driven by the leader
of the source entry's shard (the *coordinator*), each step recorded in the shards' Raft logs:

1. **Fence** (``move_tree_fence``), the coordinator's shard first, then every other shard of
   the map: no change is accepted under ``src`` or ``dst`` from then on (``UNAVAILABLE``
   "locked": the master re-proposes a client's write until the move is over or the request's
   time is up); ``src`` stays readable; ``dst`` must not exist (its parent's shard checks).
2. **Copy** (``move_tree_stage``): the tree, read now that nothing changes it, is written to
   the shards of the new names, under the new names, in pages of at most
   :data:`PAGE_RECORDS` records and :data:`PAGE_BYTES` bytes; readers of ``dst/...`` wait
   for the move to end (nothing is there for them before the switch).
3. **Switch**: one transaction, carrying the client's request (its session and seq, so a
   retry is answered from it), moves the top entry (``src`` out of its parent, ``dst`` into
   its parent, with the rights checked as for any rename) and turns every shard's fence to
   *switched* (a ``tree_switch`` step per shard). While it is prepared, readers below ``src``
   wait too, so nobody sees the old tree after the new one.
4. **Drop** (``move_tree_drop``): each shard's leader deletes the records left under ``src``
   in pages, then the fence goes (readers below ``src`` wait until then, then find nothing).

If anything fails before the switch commits (a file found open for writing, a copy refused,
the switch transaction aborted), the coordinator *aborts* the move (``move_tree_abort``):
its own shard first (after which no switch can commit: the switch's part there needs the fence
copying), then every other shard; each drops the copies it received and lifts its fence. The
old tree is then untouched and whole.

Crashes: every decision is a log entry, so whoever leads a shard next finishes its part. The
recovery loop (:meth:`TreeMoves.recovery_loop`) on every shard leader drops what a switched or
aborted move left there; on the coordinator's shard it aborts a move still copying that no
driver runs (its leader died before the switch began: the copies are dropped, the client's
retry moves the tree afresh), and finishes an abort (the other shards first). A switch that
began is the transaction machinery's to decide (``keelfs.master.transactions``); the fence
waits for that decision. So a crash at any step ends in the old tree or the new one, whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from keelfs import failpoints
from keelfs.errors import KeelError, OutcomeUnknown, RetryableError, Unavailable
from keelfs.master import subtree
from keelfs.master.cross_shard import txn_outcome
from keelfs.meta import commands
from keelfs.meta import tree_fences as tf
from keelfs.meta.commands import MoveTreeAbort, MoveTreeDrop, MoveTreeFence, MoveTreeStage
from keelfs.meta.principals import Caller, Guard
from keelfs.meta.shardmap import ShardMap
from keelfs.meta.transactions import Step, TxnRecord, encode_part

if TYPE_CHECKING:
    from keelfs.master.member import Member
    from keelfs.master.node import MetaNode
    from keelfs.rpc.pb import meta_pb2 as pb

__all__ = [
    "PAGE_BYTES",
    "PAGE_RECORDS",
    "TreeMoves",
    "pages",
    "stage_parts",
]

log = logging.getLogger("keelfs.master.tree_move")

PAGE_RECORDS = 250
"""Records one ``move_tree_stage`` (or ``move_tree_drop``) command carries at most: small
log entries, each applied quickly, so that a shard's leader keeps up its heartbeats while a
large tree streams through its log."""
PAGE_BYTES = 64 * 1024
"""Bytes of records one ``move_tree_stage`` carries at most (a command is at most 1 MiB:
``keelfs.meta.commands.MAX_COMMAND_BYTES``); a single larger record goes alone."""
SWITCH_TIMEOUT_S = 30.0
_STEP_DEADLINE_S = 10.0
_PEER_DEADLINE_S = 30.0
"""How long a step on another shard is retried (its leader may change meanwhile)."""
ABANDON_S = 30.0
"""How long a move still copying may go undriven (its leader died, and no retry of its request
took it over) before the recovery aborts it."""
KEEP_S = 600.0
"""How long a finished move's task waits for a retry of its request."""


def stage_parts(
    m: ShardMap,
    dirs: list[subtree.DirRecords],
    src: str,
    dst: str,
    dst_guards: tuple[Guard, ...] = (),
) -> dict[str, list[Step]]:
    """Per shard, the records of the tree ``src`` (walked into ``dirs``) as they are written
    under ``dst`` (the top entry excluded: the switch writes it): each directory's
    self-record and its children's entries on the shard of the directory's new name,
    directories' guards rebased (``subtree.regarded``)."""
    parts: dict[str, list[Step]] = defaultdict(list)
    for d in dirs:
        new_dir = dst + d.path[len(src) :]
        shard = m.shard_for_directory(new_dir)
        parts[shard].append(
            Step("put_self", new_dir, subtree.regarded(d.self_record, src, dst, dst_guards))
        )
        for path, record, is_dir in d.children:
            moved = subtree.regarded(record, src, dst, dst_guards) if is_dir else record
            parts[shard].append(Step("put_entry", dst + path[len(src) :], moved))
    return dict(parts)


def pages(
    steps: list[Step], max_records: int = PAGE_RECORDS, max_bytes: int = PAGE_BYTES
) -> Iterator[list[Step]]:
    """``steps`` cut into pages of at most ``max_records`` steps and ``max_bytes`` bytes of
    paths and records (a step larger than that alone), in order."""
    page: list[Step] = []
    size = 0
    for step in steps:
        cost = len(step.path) + len(step.record) + 16
        if page and (len(page) == max_records or size + cost > max_bytes):
            yield page
            page, size = [], 0
        page.append(step)
        size += cost
    if page:
        yield page


_Key = tuple[str, bytes, int]


class TreeMoves:
    """The tree moves this master coordinates, per client request (shard, session, seq): a
    retry of the request waits on the task its first attempt started; and the recovery of
    every fence on the shards it leads."""

    def __init__(self, node: MetaNode) -> None:
        self.node = node
        self._tasks: dict[_Key, asyncio.Task[None]] = {}
        self._ended: dict[_Key, float] = {}
        self._driving: set[int] = set()
        self._undriven_since: dict[int, float] = {}
        self.moves_done = 0

    # -- the client's request -------------------------------------------------------------
    async def move(
        self,
        member: Member,
        request: commands.Rename,
        header: pb.RequestHeader,
        timeout: float,
        caller: Caller | None,
        dst_guards: tuple[Guard, ...],
        switch_steps: tuple[list[Step], list[Step]],
    ) -> None:
        """Move the tree ``request.src`` to ``request.dst`` in steps (module doc), waiting at
        most ``timeout``; ``OutcomeUnknown`` after that (the move goes on: the client's retry
        of the request waits for it again). ``switch_steps``: the top entry's steps on the
        source's and on the target's parent's shard (rights checked there)."""
        self._prune()
        key = (member.group_id, bytes(header.session_id), header.seq)
        task = self._tasks.get(key)
        if task is None or (task.done() and (task.cancelled() or task.exception())):
            work = self._run(member, request, header, caller, dst_guards, switch_steps)
            task = asyncio.create_task(work, name=f"move {request.src}")
            self._tasks[key] = task
            task.add_done_callback(lambda _: self._ended.__setitem__(key, time.monotonic()))
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            raise OutcomeUnknown(
                "tree move in progress",
                message=f"moving the tree at {request.src} (in steps: it is large); retry "
                "the request (same session and seq) to wait for it",
            ) from None

    def _prune(self) -> None:
        now = time.monotonic()
        for key, ended in list(self._ended.items()):
            if now - ended > KEEP_S:
                del self._ended[key]
                self._tasks.pop(key, None)

    async def _run(
        self,
        member: Member,
        request: commands.Rename,
        header: pb.RequestHeader,
        caller: Caller | None,
        dst_guards: tuple[Guard, ...],
        switch_steps: tuple[list[Step], list[Step]],
    ) -> None:
        node, src, dst = self.node, request.src, request.dst
        m = node.shard_map
        if m.resharding:  # the copies are placed by the map: not while ranges move
            raise Unavailable(
                "resharding",
                message=f"{src} is too large to move in one step while shards are being "
                "added or removed; retry when resharding is over",
            )
        adopted = await self._adoptable(member, src, dst)
        if adopted is not None:
            move_id, shards = adopted.move_id, list(adopted.shards)
            log.info("tree move %d: %s -> %s taken over", move_id, src, dst)
        else:
            move_id, shards = await node.txns.next_id(), sorted(m.shards)
        self._driving.add(move_id)
        try:
            try:
                await self._fence(member, move_id, src, dst, shards)
                failpoints.hit("tree_move.fenced")
                dirs = await subtree.walk(node.internal, src, moving=True, bounded=False)
                parts = stage_parts(m, dirs, src, dst, dst_guards)
                steps = [*(s for part in parts.values() for s in part), *switch_steps[1]]
                puts = [s.record for s in steps if s.kind == "put_entry"]
                member.sm.check_incoming(src, dst, puts)
                copied = await self._copy(member, move_id, parts)
                failpoints.hit("tree_move.copied")
                outcome = await self._switch(
                    member, move_id, request, header, caller, shards, switch_steps
                )
            except RetryableError as exc:
                # a leader changed (here or there), or the switch's outcome is unknown: the
                # fences stay for the client's retry to take the move over (it goes on where
                # this one stopped), or for the recovery to abort once nobody drives it
                log.info("tree move %d: stopped (%s), left for a retry", move_id, exc)
                raise
            except KeelError as exc:
                if await self._decided_meanwhile(member, move_id):
                    # another driver's switch (this request's, begun before a leader change)
                    # committed while this one read a tree that had gone: the client's retry
                    # is answered from that transaction
                    raise Unavailable(
                        "changed", message=f"the move of {src} was decided meanwhile; retry"
                    ) from exc
                log.info("tree move %d: aborted: %r", move_id, exc)
                await self._abort_quietly(member, move_id, shards)
                raise
            except BaseException:
                await self._abort_quietly(member, move_id, shards)
                raise
            if not (isinstance(outcome, TxnRecord) and outcome.state == "committed"):
                await self._abort_quietly(member, move_id, shards)
            txn_outcome(outcome, f"rename {src} -> {dst}")
            failpoints.hit("tree_move.switched")
            self.moves_done += 1
            log.info("tree move %d: %s -> %s, %d records copied", move_id, src, dst, copied)
        finally:
            self._driving.discard(move_id)

    async def _adoptable(self, member: Member, src: str, dst: str) -> tf.Fence | None:
        """A move of ``src`` to ``dst`` coordinated here, still copying, whose driver stopped
        (a leader changed): a retry of the request goes on with it rather than wait for its
        abort."""
        await self.node.read(member, False, _STEP_DEADLINE_S)
        for fence in member.sm.tree_fences():
            same = (fence.src, fence.dst, fence.coordinator) == (src, dst, member.group_id)
            if same and fence.state == tf.COPYING and fence.move_id not in self._driving:
                return fence
        return None

    async def _decided_meanwhile(self, member: Member, move_id: int) -> bool:
        """Whether move ``move_id`` is no longer copying on the coordinator's shard."""
        await self.node.read(member, False, _STEP_DEADLINE_S)
        fences = {f.move_id: f for f in member.sm.tree_fences()}
        fence = fences.get(move_id)
        if fence is None:
            return bool(member.sm.tree_move_settled(move_id))  # else: never fenced here
        return fence.state != tf.COPYING

    async def _command(self, member: Member, group: str, command: commands.Command) -> Any:
        """Propose ``command`` on shard ``group``: here, or through its leader."""
        if group == member.group_id:
            result, _, _ = await self.node.propose(member, command, None, _STEP_DEADLINE_S)
            return result.unwrap()
        args = command.args()
        return await self.node.internal.move_command(
            group, command.op, json.loads(json.dumps(args)), deadline=_PEER_DEADLINE_S
        )

    async def _fence(
        self, member: Member, move_id: int, src: str, dst: str, shards: list[str]
    ) -> None:
        own = member.group_id
        await self._command(member, own, MoveTreeFence(move_id, src, dst, own, tuple(shards)))
        for shard in shards:
            if shard != own:
                await self._command(member, shard, MoveTreeFence(move_id, src, dst, own))

    async def _copy(self, member: Member, move_id: int, parts: dict[str, list[Step]]) -> int:
        copied = 0
        for shard, steps in sorted(parts.items()):
            for page in pages(steps):
                await self._command(member, shard, MoveTreeStage(move_id, encode_part(page)))
                copied += len(page)
        return copied

    async def _switch(
        self,
        member: Member,
        move_id: int,
        request: commands.Rename,
        header: pb.RequestHeader,
        caller: Caller | None,
        shards: list[str],
        switch_steps: tuple[list[Step], list[Step]],
    ) -> TxnRecord | dict[str, Any]:
        m = self.node.shard_map
        parts: dict[str, list[Step]] = {
            s: [Step("tree_switch", request.src, str(move_id))] for s in shards
        }
        parts[m.shard_for_path(request.src)] += switch_steps[0]
        parts[m.shard_for_path(request.dst)] += switch_steps[1]
        own = parts.pop(member.group_id)
        return await self.node.txns.run(
            member, "rename", own, parts, header, SWITCH_TIMEOUT_S, request, caller=caller
        )

    async def _abort_quietly(self, member: Member, move_id: int, shards: list[str]) -> None:
        """Abort the move now if it can be (else the recovery loop does, later)."""
        try:
            await self._abort(member, move_id, shards)
        except KeelError as exc:
            log.info("tree move %d: abort deferred to recovery: %s", move_id, exc)

    async def _abort(self, member: Member, move_id: int, shards: list[str]) -> None:
        """Abort on the coordinator's shard first (no switch can commit after that), then on
        every other; each drops its copies (its recovery, or here)."""
        own = member.group_id
        await self._command(member, own, MoveTreeAbort(move_id))
        for shard in shards:
            if shard != own:
                await self._command(member, shard, MoveTreeAbort(move_id))

    # -- recovery -----------------------------------------------------------------------------
    async def recovery_loop(self, interval_s: float = 0.5) -> None:
        """Forever: on every shard this node leads, drive each fence one step on."""
        while True:
            await asyncio.sleep(interval_s)
            for member in list(self.node.shards.values()):
                if not member.group.is_leader or not member.sm.tree_fences():
                    continue
                with contextlib.suppress(Exception):
                    await self._recover(member)

    async def _recover(self, member: Member) -> None:
        await self.node.read(member, False, _STEP_DEADLINE_S)
        for fence in member.sm.tree_fences():
            try:
                await self._recover_one(member, fence)
            except KeelError as exc:
                log.info("tree move %d: recovery step failed: %s", fence.move_id, exc)

    async def _recover_one(self, member: Member, fence: tf.Fence) -> None:
        coordinator = fence.coordinator == member.group_id
        if fence.state == tf.COPYING:
            if not coordinator or fence.move_id in self._driving:
                self._undriven_since.pop(fence.move_id, None)
                return  # the coordinator settles it; or its driver runs here
            if member.sm.lock_holder(fence.src):
                return  # its switch transaction is undecided: that decides
            since = self._undriven_since.setdefault(fence.move_id, time.monotonic())
            if time.monotonic() - since < ABANDON_S:
                return  # the client's retry may still take it over
            await self._abort(member, fence.move_id, list(fence.shards))
            self._undriven_since.pop(fence.move_id, None)
            return
        if fence.state == tf.ABORTED and coordinator:
            await self._abort(member, fence.move_id, list(fence.shards))  # the others first
        while True:
            result = await self._command(
                member, member.group_id, MoveTreeDrop(fence.move_id, PAGE_RECORDS)
            )
            if result["done"]:
                return
