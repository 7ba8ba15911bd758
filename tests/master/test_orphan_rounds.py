"""The orphan decision (``keelfs.master.orphans.unreferenced``) against references that travel
between shards while the shards are being read, one after another. Shards are modelled as
sets of referenced blocks with their ``gained`` counters; a script moves references between
two reads, exactly where a one-round or count-free check would be fooled."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from keelfs.errors import Unavailable
from keelfs.master.orphans import ShardAnswer, unreferenced


class Shards:
    def __init__(self, refs: dict[str, set[int]]) -> None:
        self.refs = refs
        self.gained = dict.fromkeys(refs, 0)
        self.reads: list[str] = []
        self.before: dict[int, Callable[[], None]] = {}
        """Run just before the n-th read (0-based), to move references in between reads."""
        self.down: set[str] = set()

    def move(self, block: int, src: str, dst: str) -> Callable[[], None]:
        def run() -> None:
            self.refs[dst].add(block)  # the destination holds it before the source lets go
            self.gained[dst] += 1
            self.refs[src].discard(block)

        return run

    async def ask(self, shard: str, blocks: list[int]) -> ShardAnswer:
        hook = self.before.pop(len(self.reads), None)
        if hook is not None:
            hook()
        self.reads.append(shard)
        if shard in self.down:
            raise Unavailable("down", message=f"{shard} does not answer")
        return ShardAnswer(frozenset(set(blocks) & self.refs[shard]), self.gained[shard])


def _run(shards: Shards, candidates: set[int]) -> set[int]:
    async def ask_in_order(shard: str, blocks: list[int]) -> ShardAnswer:
        return await shards.ask(shard, blocks)

    return asyncio.run(unreferenced(candidates, sorted(shards.refs), ask_in_order))


def test_a_block_no_shard_references_is_an_orphan() -> None:
    shards = Shards({"a": {1}, "b": {2}, "c": set()})
    assert _run(shards, {1, 2, 3}) == {3}


def test_a_reference_travelling_behind_the_reads_is_never_taken_for_an_orphan() -> None:
    # a round asks every shard at once; here they answer in the order a, b, c (reads 0-2),
    # then a, b, c again (reads 3-5)
    shards = Shards({"a": set(), "b": set(), "c": {7}})
    shards.before[2] = shards.move(7, "c", "b")  # after b's first read, before c's
    shards.before[4] = shards.move(7, "b", "a")  # after a's second read, before b's
    # every one of the six reads says "unknown"; only b's count moved between its two reads
    assert _run(shards, {7}) == set()
    assert shards.reads == ["a", "b", "c", "a", "b", "c"]
    assert shards.refs["a"] == {7}


def test_a_reference_that_stays_put_is_seen() -> None:
    shards = Shards({"a": set(), "b": {7}})
    shards.before[1] = shards.move(7, "b", "a")  # after a's read: the first round misses it
    assert _run(shards, {7}) == set()  # the second round finds it on a


def test_an_unreachable_shard_keeps_every_block() -> None:
    shards = Shards({"a": set(), "b": set()})
    shards.down.add("b")
    with pytest.raises(Unavailable):
        _run(shards, {1})


def test_nothing_to_ask_about_asks_nobody() -> None:
    shards = Shards({"a": set()})
    assert _run(shards, set()) == set()
    assert shards.reads == []
