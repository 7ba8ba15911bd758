"""Online resharding: moving directories between shards while clients keep working.

``AddShard``/``RemoveShard`` on a formatted namespace record a plan in the config group
(``keelfs.meta.reshard_plan``): moves of hash ranges, each from one shard to another. The
leader of the config group drives them one at a time, each as a transaction whose decision is
the config group's own log entry:

1. ``BeginMove``: this attempt's id is recorded in the plan (any earlier attempt of the move is
   aborted first: presumed abort, an attempt that did not switch never happened);
2. ``move_freeze`` on the source: the ranges stop changing (reads go on);
3. copy: pages of the frozen records (``MoveRead``) go to the target (``move_ingest``), which
   keeps the ranges invisible;
4. ``SwitchMove`` on the config group: **the decision**: a new ShardMap version in which the
   ranges belong to the target;
5. ``move_settle`` (commit) on the source, which answers ``REDIRECT`` from then on, and only
   then on the target, which starts serving (so a read on the source never misses a write on
   the target: nobody writes until both have settled);
6. the source's copies are dropped (``move_drop``) and ``FinishMove`` recorded; after the last
   move the new ring replaces the old one.

A crash of any party at any step leaves the plan, the shards' move records and range states
in their logs; the next config leader resumes: a move not switched is aborted on both shards
(the target drops what it received) and tried again; a switched one is settled and finished.
Writes to a moving range wait from step 2 to step 5 (the "unavailability" the benchmark
reports); reads wait only between steps 4 and 5.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from typing import TYPE_CHECKING, Any

from keelfs import failpoints
from keelfs.errors import KeelError
from keelfs.meta.commands import BeginMove, Command, FinishMove, SwitchMove
from keelfs.meta.ranges import texts
from keelfs.meta.reshard_plan import PENDING, SWITCHED, Move, ReshardPlan

if TYPE_CHECKING:
    from keelfs.master.node import MetaNode

__all__ = ["Resharder"]

log = logging.getLogger("keelfs.master.reshard")

PAGE = 500
"""Records per copy or drop command (well under the command size limit)."""
_IDLE_S = 0.2
_RPC_DEADLINE_S = 10.0


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Resharder:
    """Drives the config group's resharding plan while this node leads the config group."""

    def __init__(self, node: MetaNode) -> None:
        self.node = node
        self.moves_done = 0
        self.records_moved = 0
        self.longest_freeze_s = 0.0
        self.last_error = ""
        self._frozen_at: float | None = None

    def status(self) -> dict[str, Any]:
        return {
            "moves_done": self.moves_done,
            "records_moved": self.records_moved,
            "longest_freeze_s": round(self.longest_freeze_s, 4),
            "last_error": self.last_error,
        }

    async def loop(self) -> None:
        member = self.node.config_member
        assert member is not None
        while True:
            plan = member.sm.reshard_plan() if member.group.is_leader else None
            if plan is None:
                await asyncio.sleep(_IDLE_S)
                continue
            try:
                await self.step(plan)
                self.last_error = ""
            except KeelError as exc:
                self.last_error = str(exc)
                log.info("resharding step failed (%s); retrying", exc)
                await asyncio.sleep(_IDLE_S)

    async def step(self, plan: ReshardPlan) -> None:
        """Bring the first unfinished move of ``plan`` to done."""
        index, move = next((i, m) for i, m in enumerate(plan.moves) if m.state != "done")
        if move.state == PENDING:
            if move.txn_id:
                await self._abort(move)
            move = await self._attempt(index, move)
        assert move.state == SWITCHED
        await self._finish(index, move)

    async def _config(self, command: Command) -> dict[str, Any]:
        member = self.node.config_member
        assert member is not None
        result, _, _ = await self.node.propose(member, command, None, _RPC_DEADLINE_S)
        value = dict(result.unwrap())
        self.node.poke_map_refresh()
        return value

    async def _shard(self, group: str, op: str, **args: Any) -> dict[str, Any]:
        return await self.node.internal.move_command(group, op, args, deadline=_RPC_DEADLINE_S)

    async def _pages(self, group: str, txn_id: int, *, restart: bool = False) -> Any:
        """The records of move ``txn_id`` on ``group``, page by page (``restart``: each page
        from the start, for a caller that deletes what it got)."""
        after: bytes | None = None
        while True:
            page = await self.node.internal.move_read(
                group, txn_id, None if restart else after, PAGE, deadline=_RPC_DEADLINE_S
            )
            if not page:
                return
            yield page
            after = page[-1][0]

    async def _attempt(self, index: int, move: Move) -> Move:
        txn_id = await self.node.txns.next_id()
        await self._config(BeginMove(index, txn_id))
        ranges = texts(move.ranges)
        source, target = move.source, move.target
        frozen_at = time.monotonic()
        await self._shard(source, "move_freeze", txn_id=txn_id, ranges=ranges, peer=target)
        failpoints.hit("reshard.frozen")
        await self._shard(target, "move_ingest", txn_id=txn_id, ranges=ranges, peer=source)
        copied = 0
        async for page in self._pages(source, txn_id):
            await self._shard(
                target,
                "move_ingest",
                txn_id=txn_id,
                ranges=ranges,
                peer=source,
                keys=[_b64(k) for k, _ in page],
                values=[_b64(v) for _, v in page],
            )
            copied += len(page)
        failpoints.hit("reshard.copied")
        version = int((await self._config(SwitchMove(index, txn_id)))["version"])
        failpoints.hit("reshard.switched")
        log.info(
            "move %d (%s -> %s, %d ranges, attempt %d): %d records copied, map version %d",
            index, source, target, len(move.ranges), txn_id, copied, version,
        )  # fmt: skip
        self.records_moved += copied
        self._frozen_at = frozen_at
        return Move(move.ranges, source, target, SWITCHED, txn_id, version)

    async def _finish(self, index: int, move: Move) -> None:
        ranges = texts(move.ranges)
        common = {"txn_id": move.txn_id, "ranges": ranges, "commit": True, "version": move.version}
        await self._shard(move.source, "move_settle", peer=move.target, source=True, **common)
        failpoints.hit("reshard.source_settled")
        await self._shard(move.target, "move_settle", peer=move.source, source=False, **common)
        if self._frozen_at is not None:  # this node froze it: how long writes waited
            self.longest_freeze_s = max(self.longest_freeze_s, time.monotonic() - self._frozen_at)
            self._frozen_at = None
        async for page in self._pages(move.source, move.txn_id, restart=True):
            await self._shard(
                move.source, "move_drop", txn_id=move.txn_id, keys=[_b64(k) for k, _ in page]
            )
        await self._config(FinishMove(index, move.txn_id))
        self.moves_done += 1

    async def _abort(self, move: Move) -> None:
        """Abort an earlier attempt of ``move`` that did not switch, on both shards."""
        txn_id, ranges = move.txn_id, texts(move.ranges)
        log.info("aborting move attempt %d (%s -> %s)", txn_id, move.source, move.target)
        common = {"txn_id": txn_id, "ranges": ranges, "commit": False}
        await self._shard(move.source, "move_settle", peer=move.target, source=True, **common)
        await self._shard(move.target, "move_settle", peer=move.source, source=False, **common)
        async for page in self._pages(move.target, txn_id, restart=True):
            await self._shard(
                move.target, "move_drop", txn_id=txn_id, keys=[_b64(k) for k, _ in page]
            )
        await self._shard(move.target, "move_drop", txn_id=txn_id, keys=[], final=True)
