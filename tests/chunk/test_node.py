"""A ``ChunkNode`` inside the test's own event loop, through the interface the heartbeat to the
masters uses: ``status``, ``block_report``, ``take_events`` and ``execute``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from chunk_keys import Access, provision, signer

from keelfs.chunk.commands import DeleteBlocks, Fence, ReplicateBlock
from keelfs.chunk.events import EventKind
from keelfs.chunk.node import ChunkNode, ChunkNodeConfig
from keelfs.datapath.client import AsyncChunkClient
from keelfs.datapath.protocol import Target
from keelfs.datapath.replica import DeleteOutcome, ReplicaState
from keelfs.errors import Fenced, InvalidArgument


def test_node_reporting_and_commands(tmp_path: Path) -> None:
    async def scenario() -> None:
        a = ChunkNode(ChunkNodeConfig(provision(tmp_path / "a"), server_id="a", io_threads=0))
        b = ChunkNode(ChunkNodeConfig(provision(tmp_path / "b"), rack="/r2", io_threads=0))
        await a.start()
        await b.start()
        try:
            async with AsyncChunkClient(signer=signer()) as client:
                await client.write_block([a.address], 7, 2, b"x" * 100_000, "shard-1", 3)
            st = a.status()
            assert (st.server_id, st.address, st.finalized, st.epochs) == (
                "a",
                a.address,
                1,
                {"shard-1": 3},
            )
            assert b.status().rack == "/r2" and b.server_id.startswith("cs-")
            [info] = a.block_report()
            assert (info.block_id, info.gen, info.length, info.state) == (
                7,
                2,
                100_000,
                ReplicaState.FINALIZED,
            )
            batch = a.take_events()
            assert [e.kind for e in batch.events] == [EventKind.RECEIVING, EventKind.FINALIZED]
            assert not batch.overflowed and a.take_events().events == ()
            fence = Fence("shard-1", 3)
            sign = signer().sign
            copying = sign(7, 2, Access.REPLICATE | Access.WRITE, "shard-1", 3)
            copy = await a.execute(ReplicateBlock(fence, 7, 2, (Target(b.address, "b"),), copying))
            assert copy.length == 100_000 and [n.server_id for n in copy.nodes] == [b.server_id]
            assert [r.block_id for r in b.block_report()] == [7]
            with pytest.raises(Fenced):
                old = sign(7, 0, Access.DELETE, "shard-1", 2)
                await a.execute(DeleteBlocks(Fence("shard-1", 2), ((7, 0),), (old,)))
            with pytest.raises(InvalidArgument):
                await a.execute(ReplicateBlock(fence, 7, 2, (), copying))
            deleting = sign(7, 2, Access.DELETE, "shard-1", 3)
            [result] = await a.execute(DeleteBlocks(fence, ((7, 2),), (deleting,)))
            assert result.outcome is DeleteOutcome.DELETED
            assert a.block_report() == []
            assert [e.kind for e in a.take_events().events] == [EventKind.DELETED]
        finally:
            await a.stop()
            await b.stop()
        # the identity is kept in the data directory
        again = ChunkNode(ChunkNodeConfig(tmp_path / "b", io_threads=0))
        await again.start()
        try:
            assert again.server_id == b.server_id
        finally:
            await again.stop()
        with pytest.raises(InvalidArgument):
            await ChunkNode(ChunkNodeConfig(tmp_path / "b", server_id="other")).start()

    asyncio.run(scenario())
