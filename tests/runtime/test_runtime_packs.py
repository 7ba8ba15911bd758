"""Packed proposals (``PackingStateMachine``): the packable proposals of one round share
entries, each still answered with its own result; three hosts in one process."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from keelfs.errors import Unavailable
from keelfs.runtime import HostConfig, RaftGroup, RaftHost, kv
from keelfs.runtime.group import _answer_packed
from keelfs.runtime.kv import KVStateMachine
from keelfs.runtime.statemachine import PackingStateMachine
from keelfs.transport.local import LocalNetwork

PEERS = {1: "local:1", 2: "local:2", 3: "local:3"}
_PACK = b"P"


class PackingKV(KVStateMachine):
    """The KV state machine with packs: ``P`` + a JSON list of the items (at most 50 each);
    a pack holding the item ``poison`` answers all its proposals with one string."""

    def __init__(self) -> None:
        super().__init__()
        self.entries = 0
        self.packs: list[int] = []

    def pack(self, items: Sequence[bytes]) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        for at in range(0, len(items), 50):
            run = items[at : at + 50]
            if len(run) == 1:
                out.append((1, run[0]))
            else:
                out.append((len(run), _PACK + json.dumps([i.decode() for i in run]).encode()))
        return out

    def apply(self, index: int, data: bytes) -> Any:
        self.entries += 1
        if not data.startswith(_PACK):
            return super().apply(index, data)
        items = json.loads(data[1:])
        self.packs.append(len(items))
        if "poison" in items:
            self._applied = index
            return "the whole pack"
        return [super(PackingKV, self).apply(index, item.encode()) for item in items]


@asynccontextmanager
async def cluster(tmp: Path, config: HostConfig | None = None) -> AsyncIterator[RaftGroup]:
    net = LocalNetwork()
    hosts: dict[int, RaftHost] = {}
    try:
        for i in PEERS:
            hosts[i] = RaftHost(i, tmp / f"n{i}", lambda cb, i=i: net.add(i, cb), config)
            await hosts[i].start()
            hosts[i].open_group("g", PackingKV(), PEERS)
        for _ in range(500):
            leader = next((h.groups["g"] for h in hosts.values() if h.groups["g"].is_leader), None)
            if leader is not None:
                yield leader
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("no leader")
    finally:
        for h in hosts.values():
            await h.stop()


def test_the_packing_kv_is_a_packing_state_machine() -> None:
    assert isinstance(PackingKV(), PackingStateMachine)
    assert not isinstance(KVStateMachine(), PackingStateMachine)


def test_concurrent_packable_proposals_share_entries_and_get_their_own_results(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with cluster(tmp_path) as leader:
            await leader.propose(kv.put("k0", "old"))
            sm: PackingKV = leader.sm  # type: ignore[assignment]
            before = sm.entries
            results = await asyncio.gather(
                *(leader.propose(kv.put(f"k{i}", f"v{i}"), packable=True) for i in range(200)),
                *(leader.propose(kv.put(f"solo{i}", "s")) for i in range(5)),
            )
            assert results[0] == "old"  # put returns the previous value, each its own
            assert results[1:200] == [None] * 199
            assert results[200:] == [None] * 5
            used = sm.entries - before
            assert used <= 205 // 2, f"{used} entries for 205 proposals"
            assert sm.packs and max(sm.packs) <= 50
            assert all(sm.get(f"k{i}") == f"v{i}" for i in range(200))

    asyncio.run(main())


def test_packing_off_proposes_one_entry_each(tmp_path: Path) -> None:
    async def main() -> None:
        async with cluster(tmp_path, HostConfig(pack_proposals=False)) as leader:
            sm: PackingKV = leader.sm  # type: ignore[assignment]
            await asyncio.gather(
                *(leader.propose(kv.put(f"k{i}", "v"), packable=True) for i in range(50))
            )
            assert sm.packs == []

    asyncio.run(main())


def test_a_pack_answered_as_a_whole_answers_each_of_its_proposals(tmp_path: Path) -> None:
    async def main() -> None:
        async with cluster(tmp_path) as leader:
            results = await asyncio.gather(
                leader.propose(kv.put("a", "1"), packable=True),
                leader.propose(b"poison", packable=True),
                leader.propose(kv.put("b", "1"), packable=True),
            )
            assert results == ["the whole pack"] * 3

    asyncio.run(main())


def test_a_failed_pack_fails_each_of_its_proposals() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(3)]
        futures[1].cancel()  # its proposer gave up (timed out) meanwhile
        shared: asyncio.Future[Any] = loop.create_future()
        shared.add_done_callback(lambda f: _answer_packed(futures, f))
        shared.set_exception(Unavailable("leader changed", message="lost"))
        await asyncio.sleep(0)
        for fut in (futures[0], futures[2]):
            with pytest.raises(Unavailable):
                fut.result()
        assert futures[1].cancelled()

    asyncio.run(main())


def test_no_packs_while_a_member_has_not_said_it_reads_them(tmp_path: Path) -> None:
    """A rolling upgrade from a release without packs: its members' links name no features
    (``RaftAck.features``), and the leader proposes one entry each until every member says
    it applies packs; then packs again."""

    async def main() -> None:
        async with cluster(tmp_path) as leader:
            sm: PackingKV = leader.sm  # type: ignore[assignment]
            old = next(n for n in PEERS if n != leader.host.node_id)
            transport: Any = leader.host.transport
            said = transport.peer_features
            transport.peer_features = lambda n: frozenset() if n == old else said(n)
            results = await asyncio.gather(
                *(leader.propose(kv.put(f"k{i}", "v"), packable=True) for i in range(50))
            )
            assert sm.packs == [] and len(results) == 50
            transport.peer_features = said
            await asyncio.gather(
                *(leader.propose(kv.put(f"j{i}", "v"), packable=True) for i in range(50))
            )
            assert sm.packs, "every member reads packs again: they share entries"

    asyncio.run(main())
