"""A chunk server's own limits: its disk reservation and the calls it serves at once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from chunk_keys import provision, signer

from keelfs.chunk.node import ChunkNode, ChunkNodeConfig
from keelfs.chunk.store import BlockStore
from keelfs.client.files import AsyncFileWriter
from keelfs.datapath.client import AsyncChunkClient
from keelfs.errors import KeelError, ResourceExhausted
from keelfs.rpc.pb import chunk_pb2 as pb
from keelfs.rpc.pb import chunk_pb2_grpc as pb_grpc
from keelfs.rpc.pb import meta_pb2 as meta_pb

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
                # One call held open (a WriteBlock without its header) fills the one slot; the
                # next is refused. The server counts the held call once its handler starts, a
                # moment after the client sees it open, and a stray call from elsewhere on a
                # busy machine (a client of an earlier test retrying a port now reused) may
                # hold the slot for a moment: so try until a call is refused while ours is
                # held (never, had the limit no effect).
                refused: grpc.aio.AioRpcError | None = None
                deadline = asyncio.get_running_loop().time() + 10
                while refused is None and asyncio.get_running_loop().time() < deadline:
                    held = stub.WriteBlock()
                    await asyncio.wait_for(held.wait_for_connection(), 10)
                    try:
                        await stub.ServerInfo(pb.ServerInfoRequest(), timeout=10)
                    except grpc.aio.AioRpcError as exc:
                        if not held.done():
                            refused = exc
                    held.cancel()
                    if refused is None:
                        await asyncio.sleep(0.05)
                assert refused is not None, "no second call was refused beside a held one"
                assert refused.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        finally:
            await node.stop()

    asyncio.run(scenario())


class _Masters:
    """An ``AsyncClient`` stand-in for the masters of a writer: they do not know yet that the
    first server's disk filled up (its usage reaches them with its next heartbeat), so they
    put it first in the block's pipeline; a recovery keeps ``keep`` and adds any server
    not excluded, as ``ChunkRegistry.choose`` does."""

    def __init__(self, servers: dict[str, str], replication: int) -> None:
        self.servers = servers  # server id -> address, in placement order
        self.replication = replication
        self.open_writers: set[object] = set()
        self._core = SimpleNamespace(writers={})
        self.excluded: list[list[str]] = []
        self.gen = 1

    def _reply(self, reply: Any, chosen: list[str]) -> Any:
        reply.shard, reply.epoch = "shard-1", 3
        reply.block.block_id, reply.block.gen_stamp = 7, self.gen
        for server_id in chosen:
            reply.block.locations.add(server_id=server_id, address=self.servers[server_id])
        return reply

    def _choose(self, keep: list[str], exclude: list[str]) -> list[str]:
        fresh = [s for s in self.servers if s not in keep and s not in exclude]
        return [*keep, *fresh][: self.replication]

    async def _run(self, op: Any, deadline: object) -> Any:
        req = op.build(meta_pb.RequestHeader())
        if op.method == "AllocateBlock":
            self.excluded.append(list(req.exclude))
            return self._reply(meta_pb.AllocateBlockReply(), self._choose([], list(req.exclude)))
        if op.method == "RecoverPipeline":
            self.gen += 1
            self.excluded.append(list(req.exclude))
            chosen = self._choose(list(req.keep), list(req.exclude))
            return self._reply(meta_pb.AllocateBlockReply(), chosen)
        assert op.method == "Complete", op.method
        return meta_pb.FileInfoReply()


def test_a_writer_leaves_a_full_first_server_for_another(tmp_path: Path) -> None:
    """The first node of a pipeline refusing the block (its disk reservation) is excluded
    like a failed one: the recovery puts another server in its place and the write lands
    there, instead of retrying the same pipeline until ``max_recoveries``."""
    data = bytes(range(256)) * 400

    async def scenario() -> None:
        full = ChunkNode(
            ChunkNodeConfig(provision(tmp_path / "full"), reserved_bytes=EVERYTHING, io_threads=0)
        )
        roomy = [
            ChunkNode(ChunkNodeConfig(provision(tmp_path / f"r{i}"), io_threads=0))
            for i in range(2)
        ]
        nodes = [full, *roomy]
        for node in nodes:
            await node.start()
        try:
            masters = _Masters({n.server_id: n.address for n in nodes}, replication=2)
            async with AsyncChunkClient(signer=signer()) as chunks:
                writer = AsyncFileWriter(
                    masters,  # type: ignore[arg-type]
                    chunks,
                    "/d/f",
                    group="shard-1",
                    session_id=5,
                    block_size=1 << 20,
                    lease_renew_s=0,
                    max_recoveries=3,
                )
                await writer.write(data)
                await writer.close()
                assert masters.excluded[-1] == [full.server_id], masters.excluded
                for node in roomy:
                    got = await chunks.read_block(node.address, 7, masters.gen, 0, len(data))
                    assert got == data
            assert full.block_report() == []
        finally:
            for node in nodes:
                await node.stop()

    asyncio.run(scenario())
