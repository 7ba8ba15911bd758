"""Deleting orphan blocks: replicas that no shard's namespace references (DESIGN §2.12).

An orphan is a replica a chunk server reports whose block no file needs any more: a chunk
server that was down while its file was deleted comes back with it, a writer's last block was
dropped by lease recovery, a replica was left by a failed pipeline. Deleting one is the most
dangerous thing the block layer does, so the decision rests on authoritative state only:

- every shard keeps a linearizable index of the blocks its records reference
  (``keelfs.meta.blockrefs``: entries, undecided transaction records, moved-in copies), read
  with a ReadIndex barrier on its leader (``BlocksKnown``);
- a block is deleted only when EVERY shard of the map says it does not reference it, twice:
  two rounds over all shards, the second begun after the first ended, with the map version and
  each shard's ``gained`` count (references that arrived from another shard) unchanged between
  its two reads.

Why two rounds and the count: a reference can travel between shards (a rename, a resharding
move), and the shards are read one after another, so a single round could read the
destination before the reference arrived and the source after it left. Pick any instant T
between the rounds. A shard referencing the block at T either referenced it at its first read
(then that read saw it) or gained it after that read and before T (then its count moved
before its second read). Neither happened, so at T no shard referenced the block; and a
reference cannot appear from nothing, because a block is in a file's list (``AddBlock``)
before any replica of it is written, and block ids are never reused. So from T on the block
is garbage for good. Anything short of a full, clean answer (a shard unreachable, a leader
change, a map change, a count that moved) keeps every block for a later round.

Which shard's leader looks at which replica: the shard whose tag the replica carries (the
shard that allocated it), or for a tag no longer in the map the first shard of the map. The
tag decides only who does the work, never whether the block is kept. Each led shard runs its
rounds in its own task with a timeout on every question, so one shard's outage delays only
the deletions that need its answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from keelfs.errors import KeelError

if TYPE_CHECKING:
    from keelfs.master.member import Member
    from keelfs.master.node import MetaNode

__all__ = ["OrphanCollector", "ShardAnswer", "unreferenced"]

log = logging.getLogger("keelfs.master.orphans")

ROUND_S = 5.0
"""Between two orphan rounds of one shard."""
BATCH = 1000
"""Candidates asked about in one round."""
LOCAL_CHECKS = 20_000
"""Reported blocks checked against this shard's own index in one round."""
ASK_TIMEOUT_S = 5.0
RECHECK_S = 600.0
"""A block found referenced (here or by another shard) is not looked at again for this long
(if its file is deleted, the delete queue of the file's shard deletes it)."""


@dataclass(frozen=True, slots=True)
class ShardAnswer:
    known: frozenset[int]
    """Those of the asked blocks the shard references."""
    gained: int
    """The shard's count of references that arrived from elsewhere (``blockrefs``)."""


Ask = Callable[[str, list[int]], Awaitable[ShardAnswer]]


async def _round(shards: Sequence[str], blocks: list[int], ask: Ask) -> dict[str, ShardAnswer]:
    replies = await asyncio.gather(*(ask(s, blocks) for s in shards))
    return dict(zip(shards, replies, strict=True))


async def unreferenced(
    candidates: Iterable[int],
    shards: Sequence[str],
    ask: Ask,
    *,
    known_elsewhere: Callable[[set[int]], None] | None = None,
) -> set[int]:
    """Those of ``candidates`` that no shard of ``shards`` references, by two full rounds
    (the module doc says why). ``ask(shard, blocks)`` answers linearizably or raises; any
    exception propagates and nothing is returned. ``known_elsewhere`` is told the blocks some
    shard was found to reference."""
    remaining = set(candidates)
    if not remaining or not shards:
        return set()
    first = await _round(shards, sorted(remaining), ask)
    seen = set().union(*(a.known for a in first.values()))
    if seen and known_elsewhere is not None:
        known_elsewhere(seen)
    remaining -= seen
    if not remaining:
        return set()
    second = await _round(shards, sorted(remaining), ask)
    if any(second[s].gained != first[s].gained for s in shards):
        return set()  # a reference travelled meanwhile: ask again next round
    seen = set().union(*(a.known for a in second.values()))
    if seen and known_elsewhere is not None:
        known_elsewhere(seen)
    return remaining - seen


class OrphanCollector:
    """The rounds of one master for the shards it leads (started by ``ReplicationMonitor``)."""

    def __init__(self, node: MetaNode, queue_delete: Callable[[Member, int], int]) -> None:
        self.node = node
        self._queue_delete = queue_delete
        self._referenced_until: dict[int, float] = {}
        self.deleted = 0

    async def run(self, member: Member) -> None:
        """Rounds for ``member``'s shard while this node leads it."""
        while member.group.is_leader:
            try:
                await self.round(member)
            except (TimeoutError, KeelError) as exc:
                log.info("%s: orphan round skipped: %s", member.group_id, exc)
            except Exception:  # a bug: say so, keep every block, try again next round
                log.exception("%s: orphan round failed", member.group_id)
            await asyncio.sleep(ROUND_S)

    def candidates(self, member: Member) -> list[int]:
        """Up to ``BATCH`` reported blocks this shard is to look at that it does not reference
        itself. The own check reads the applied state without a barrier: it only narrows the
        list (the rounds decide), and a block found referenced is not looked at again for
        ``RECHECK_S`` (if its file is deleted, the delete queue deletes it). At most
        ``LOCAL_CHECKS`` index reads per round, so a master with millions of blocks spreads
        the first pass over many rounds."""
        shard = member.group_id
        shards = self.node.shard_map.shards
        fallback = min(shards) if shards else shard
        now = time.monotonic()
        out: list[int] = []
        checked = 0
        for block_id, holders in list(self.node.chunks.replicas.items()):
            if self._referenced_until.get(block_id, 0.0) > now:
                continue
            tags = {r.shard for r in holders.values()}
            if shard not in tags and not (shard == fallback and tags - set(shards)):
                continue
            if checked == LOCAL_CHECKS or len(out) == BATCH:
                break
            checked += 1
            if member.sm.referenced_blocks([block_id]):
                self._referenced_until[block_id] = now + RECHECK_S
            else:
                out.append(block_id)
        return sorted(out)

    async def round(self, member: Member) -> int:
        """One round for ``member``'s shard: the number of orphan blocks queued for deletion."""
        candidates = self.candidates(member)
        if not candidates:
            return 0
        # the map as the config group has it now, not as cached here: a shard added a moment
        # ago may already hold moved-in references
        m = await self.node.refresh_map(linearizable=True)
        shards = sorted(m.shards)
        if member.group_id not in shards:
            shards.append(member.group_id)

        def remember(blocks: set[int]) -> None:
            until = time.monotonic() + RECHECK_S
            for b in blocks:
                self._referenced_until[b] = until

        orphans = await unreferenced(candidates, shards, self._ask, known_elsewhere=remember)
        after = await self.node.refresh_map(linearizable=True)
        if after.version != m.version or not member.group.is_leader:
            return 0  # the shards changed while we asked: the answer covers the old set
        now = time.monotonic()
        self._referenced_until = {b: t for b, t in self._referenced_until.items() if t > now}
        for block_id in sorted(orphans):
            if self._queue_delete(member, block_id):
                self.deleted += 1
                log.info("%s: deleting orphan block %d", member.group_id, block_id)
        return len(orphans)

    async def ask(self, shard: str, blocks: list[int]) -> ShardAnswer:
        """Which of ``blocks`` shard ``shard`` references (linearizable), and its count."""
        return await self._ask(shard, blocks)

    async def _ask(self, shard: str, blocks: list[int]) -> ShardAnswer:
        known, gained = await asyncio.wait_for(
            self.node.internal.blocks_known(shard, blocks, deadline=ASK_TIMEOUT_S),
            ASK_TIMEOUT_S + 1.0,
        )
        return ShardAnswer(frozenset(known), gained)
