"""A chunk server's own limits: its disk reservation and the calls it serves at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from chunk_keys import provision, signer

from keelfs.chunk.node import ChunkNode, ChunkNodeConfig
from keelfs.chunk.store import BlockStore
from keelfs.datapath.client import AsyncChunkClient
from keelfs.errors import KeelError, ResourceExhausted
from keelfs.rpc.pb import chunk_pb2 as pb
from keelfs.rpc.pb import chunk_pb2_grpc as pb_grpc

EVERYTHING = 1 << 62
"""A reservation larger than any disk: free space is always below it."""


def test_a_store_at_its_reservation_refuses_new_blocks(tmp_path: Path) -> None:
    store = BlockStore.open(tmp_path / "d", reserved_bytes=EVERYTHING)
    with pytest.raises(ResourceExhausted) as refused:
        store.create(7, 1, "shard-1")
    assert "reserved" in str(refused.value)
    assert store.block_report() == []  # nothing was started
    usage = store.usage()
    assert usage.capacity_bytes == 0 and usage.available_bytes == 0  # what masters are told
    roomy = BlockStore.open(tmp_path / "e")
    assert roomy.usage().capacity_bytes > 0
    roomy.discard(roomy.create(7, 1, "shard-1"))
    store.close()
    roomy.close()


def test_a_write_to_a_full_server_fails_clearly_and_another_takes_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        full = ChunkNode(
            ChunkNodeConfig(provision(tmp_path / "full"), reserved_bytes=EVERYTHING, io_threads=0)
        )
        roomy = ChunkNode(ChunkNodeConfig(provision(tmp_path / "roomy"), io_threads=0))
        await full.start()
        await roomy.start()
        try:
            assert full.status().capacity_bytes == 0
            async with AsyncChunkClient(signer=signer()) as client:
                with pytest.raises(KeelError) as refused:
                    await client.write_block([full.address], 7, 2, b"x" * 1000, "shard-1", 3)
                assert "reserved" in str(refused.value), refused.value
                await client.write_block([roomy.address], 7, 2, b"x" * 1000, "shard-1", 3)
            assert full.block_report() == [] and len(roomy.block_report()) == 1
        finally:
            await full.stop()
            await roomy.stop()

    asyncio.run(scenario())


def test_calls_beyond_max_concurrent_rpcs_are_resource_exhausted(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = ChunkNode(
            ChunkNodeConfig(provision(tmp_path / "a"), io_threads=0, max_concurrent_rpcs=1)
        )
        await node.start()
        try:
            async with grpc.aio.insecure_channel(node.address) as channel:
                stub = pb_grpc.ChunkServerStub(channel)
                held = stub.WriteBlock()  # open, no header yet: the one call in progress
                await asyncio.wait_for(held.wait_for_connection(), 10)
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await asyncio.wait_for(stub.ServerInfo(pb.ServerInfoRequest(), timeout=10), 15)
                assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
                held.cancel()
        finally:
            await node.stop()

    asyncio.run(scenario())
