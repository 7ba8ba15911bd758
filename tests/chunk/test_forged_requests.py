"""Forged requests to a real ``ChunkNode`` (issue [9]): a request without a block access token
signed by a master reads nothing, writes nothing, deletes nothing, and moves no epoch.

The requests are raw protobuf on the chunk server's own gRPC port, as an attacker who can reach
it would send them; the replica is put in place through the store, and the node knows a block
key (provisioned in its data directory), so that the refusals are about the requests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from keelfs.chunk.node import ChunkNode, ChunkNodeConfig
from keelfs.datapath.checksums import chunk_crcs
from keelfs.rpc.pb import chunk_pb2 as pb
from keelfs.rpc.pb import chunk_pb2_grpc as pb_grpc

MAX = 2**64 - 1
DATA = b"k" * 70_000


def _provision_key(data_dir: Path) -> None:
    data_dir.mkdir(parents=True, mode=0o700)
    key = {"key_id": 1, "secret": "ab" * 32, "active_ms": 0, "expires_ms": 0}
    (data_dir / "block-keys.json").write_text(json.dumps({"keys": [key]}))


async def _started(tmp_path: Path) -> ChunkNode:
    _provision_key(tmp_path / "cs")
    node = ChunkNode(ChunkNodeConfig(tmp_path / "cs", server_id="cs-1", io_threads=0))
    await node.start()
    writer = node.store.create(7, 2, "shard-1")
    writer.write(DATA, chunk_crcs(DATA))
    writer.finalize(False)
    node.epochs.admit("shard-1", 3)
    return node


async def _code_of(call: Any) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def _read_code(stub: Any, request: Any) -> grpc.StatusCode:
    try:
        async for _ in stub.ReadBlock(request):
            pass
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def _write_code(channel: grpc.aio.Channel, header: Any) -> grpc.StatusCode:
    call = channel.stream_stream(
        "/keelfs.chunk.v1.ChunkServer/WriteBlock",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=pb.WriteAck.FromString,
    )

    async def requests() -> AsyncIterator[Any]:
        yield pb.WriteRequest(header=header)
        yield pb.WriteRequest(
            packet=pb.Packet(seqno=1, offset=0, data=b"x", crcs=chunk_crcs(b"x"), last=True)
        )

    try:
        async for ack in call(requests()):
            if ack.failed:
                return grpc.StatusCode.ABORTED
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_requests_without_a_token_are_refused_and_change_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = await _started(tmp_path)
        epochs_file = tmp_path / "cs" / "epochs.json"
        before = epochs_file.read_bytes()
        try:
            async with grpc.aio.insecure_channel(node.address) as channel:
                stub = pb_grpc.ChunkServerStub(channel)
                denied = grpc.StatusCode.PERMISSION_DENIED
                # a forged fence of 2^64-1 would fence shard-1 out of this server forever
                forged = pb.DeleteBlocksRequest(
                    fence=pb.Fence(shard_id="shard-1", epoch=MAX),
                    blocks=[pb.BlockRef(block_id=7, gen=0)],
                )
                assert await _code_of(stub.DeleteBlocks(forged)) == denied
                fence_only = pb.DeleteBlocksRequest(fence=pb.Fence(shard_id="shard-9", epoch=MAX))
                assert await _code_of(stub.DeleteBlocks(fence_only)) == denied
                # ReadBlock reads any block without a token
                assert await _read_code(stub, pb.ReadRequest(block_id=7, gen=2)) == denied
                copy = pb.ReplicateBlockRequest(
                    fence=pb.Fence(shard_id="shard-1", epoch=MAX),
                    block_id=7,
                    gen=2,
                    targets=[pb.Target(address=node.address)],
                )
                assert await _code_of(stub.ReplicateBlock(copy)) == denied
                header = pb.WriteHeader(
                    block_id=8, gen=1, fence=pb.Fence(shard_id="shard-2", epoch=MAX)
                )
                assert await _write_code(channel, header) == denied
            assert epochs_file.read_bytes() == before
            assert node.epochs.snapshot() == {"shard-1": 3}
            assert [(r.block_id, r.gen, r.length) for r in node.block_report()] == [
                (7, 2, len(DATA))
            ]
        finally:
            await node.stop()

    asyncio.run(scenario())


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__])
