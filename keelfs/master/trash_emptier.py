"""Emptying the trash every interval (HDFS's trash ``Emptier``), on one master.

Which master: the leader of the shard that holds ``/.Trash``'s children (its directory's own
shard on the ring), since listing the users' trash directories is a read there. It is one
master at a time (a deposed leader stops at its next round), so two do not race; if they did
for a moment (a leader change during a round), the steps are idempotent: a checkpoint
deleted twice is NOT_FOUND the second time, a ``Current`` renamed twice is gone the second
time, and nothing is deleted that is younger than the interval.

Each round, at every multiple of the interval on the wall clock (:func:`until_next_round`),
does for each user's trash what ``keelfs expunge`` does for one
(``keelfs.client.trash.expunge_steps``): delete the checkpoints older than the interval, then
turn ``Current`` into a checkpoint. So what ``rm`` moved at time t is deleted between one and
two intervals after t. The deletes go through the ordinary ``Delete`` (as this master: a
superuser), so the files' blocks are queued and deleted as any deleted file's
(DESIGN §2.12). ``trash_interval_ms`` 0: no emptier (and no trash).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from keelfs import failpoints
from keelfs.client import trash
from keelfs.errors import KeelError, NotFound

if TYPE_CHECKING:
    from keelfs.master.node import MetaNode

__all__ = ["TrashEmptier", "until_next_round"]

log = logging.getLogger(__name__)


def until_next_round(now_ms: int, interval_ms: int) -> int:
    """Milliseconds from ``now_ms`` to the next multiple of ``interval_ms`` of the wall clock
    (as HDFS's emptier): rounds happen at the same times whichever master runs them and
    however often masters restart (a countdown from each start would never end for a master
    restarted more often than once an interval)."""
    return interval_ms - now_ms % interval_ms


class TrashEmptier:
    def __init__(self, node: MetaNode) -> None:
        self.node = node
        self.rounds = 0
        """Rounds run by this master (as the designated one)."""

    def designated(self) -> bool:
        """Whether this master is the one to empty the trash now: none while it has no shard
        map yet (just started), since it cannot tell which shard holds the trash."""
        shard_map = self.node.shard_map
        if not shard_map.shards:
            return False
        member = self.node.shards.get(shard_map.shard_for_directory(trash.TRASH_ROOT))
        return member is not None and member.group.is_leader

    async def loop(self) -> None:
        interval_ms = self.node.config.trash_interval_ms
        if interval_ms <= 0:
            return
        while True:
            await asyncio.sleep(until_next_round(trash.now_ms(), interval_ms) / 1000)
            try:
                if self.designated():
                    await self.round(interval_ms)
            except KeelError as exc:  # the next round tries again
                log.info("emptying the trash failed: %s", exc)

    async def round(self, interval_ms: int) -> list[str]:
        """One pass over every user's trash; the checkpoints deleted."""
        failpoints.hit("trash.round")
        internal = self.node.internal
        try:
            homes = [e async for e in internal.ls(trash.TRASH_ROOT) if e.is_dir]
        except NotFound:
            return []
        deleted: list[str] = []
        now = trash.now_ms()
        for home in homes:
            steps = trash.expunge_steps(home.path, interval_ms, now, immediate=False)
            deleted += await trash.run_async(internal, steps)
        self.rounds += 1
        if deleted:
            log.info("trash: deleted %d checkpoints", len(deleted))
        return deleted
