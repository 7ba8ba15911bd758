"""Chunk servers killed, restarted, and damaged on disk (real processes)."""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import AsyncIterator, Callable

import pytest
from chunk_keys import signer

from keelfs.chunk.layout import Layout
from keelfs.datapath.client import AsyncChunkClient, ChunkClient
from keelfs.datapath.protocol import NodeState
from keelfs.datapath.replica import DeleteOutcome, ReplicaState
from keelfs.errors import CorruptReplica, Fenced, PipelineBroken
from keelfs.server.chunkservers import LocalChunkServers

MIB = 1 << 20

MakeServers = Callable[..., LocalChunkServers]


def payload(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def wait_for(probe: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        time.sleep(0.05)


def test_kill9_of_the_middle_server_during_a_write(make_servers: MakeServers) -> None:
    servers = make_servers(3, "--ack-timeout-s", "20")
    a0, a1, a2 = servers.addresses
    data = payload(10 * MIB, 9)
    acked: list[int] = []

    async def scenario() -> None:
        async with AsyncChunkClient(signer=signer()) as client:
            progress = asyncio.Event()

            def on_ack(length: int) -> None:
                acked.append(length)
                if length >= 3 * MIB:
                    progress.set()

            async def source() -> AsyncIterator[bytes]:
                for i in range(10):
                    if i == 5:
                        await progress.wait()  # 3 MiB are acknowledged by all three
                        servers.kill9(1)
                    yield data[i * MIB : (i + 1) * MIB]

            with pytest.raises(PipelineBroken) as exc:
                await client.write_block(
                    [a0, a1, a2], 200, 1, source(), "shard-1", 1, on_ack=on_ack
                )
            broken = exc.value
            assert broken.failed == [a1]
            nodes = broken.result.nodes
            assert [n.state for n in nodes] == [NodeState.OK, NodeState.FAILED, NodeState.UNKNOWN]
            assert [n.address for n in nodes] == [a0, a1, a2]
            acked_length = broken.acked_length
            assert acked_length >= 3 * MIB and acked_length % MIB == 0
            assert acked_length == acked[-1] and nodes[0].length >= acked_length
            # the first node still holds everything it acknowledged
            [info] = await client.block_info(a0, 200)
            assert info.state is ReplicaState.BEING_WRITTEN and info.length >= acked_length
            prefix = await client.read_block(a0, 200, 1, 0, acked_length)
            assert md5(prefix) == md5(data[:acked_length])
            # pipeline recovery: the survivors continue from the acknowledged length with a
            # new generation stamp
            rest = data[acked_length:]
            result = await client.write_block(
                [a0, a2], 200, 2, rest, "shard-1", 1, offset=acked_length
            )
            assert result.finalized and result.length == len(data)
            for address in (a0, a2):
                assert md5(await client.read_block(address, 200, 2)) == md5(data)
                [info] = await client.block_info(address, 200)
                assert (info.gen, info.state) == (2, ReplicaState.FINALIZED)

    asyncio.run(scenario())
    # the killed server comes back without its half-written replica
    servers.restart(1)
    with ChunkClient(signer=signer()) as client:
        assert client.list_blocks(a1) == []
    assert list((servers.data_dir(1) / "rbw").iterdir()) == []


def test_scanner_finds_a_flipped_byte_without_a_read(
    make_servers: MakeServers, client: ChunkClient
) -> None:
    servers = make_servers(1, "--scan-interval-s", "0.2")
    address = servers.addresses[0]
    data = payload(MIB + 5, 10)
    client.write_block([address], 300, 1, data, "shard-1", 1)
    layout = Layout(servers.data_dir(0))
    path = Layout.files(layout.finalized_dir(300), 300, 1)[0]
    with open(path, "r+b") as f:
        f.seek(700_000)
        byte = f.read(1)
        f.seek(700_000)
        f.write(bytes([byte[0] ^ 0x80]))

    def corrupt() -> bool:
        [info] = client.block_info(address, 300)
        return info.corrupt

    wait_for(corrupt, "the scanner marks the replica corrupt")
    assert "CRC32C mismatch in chunk 10" in servers.log_tail(0, 50)
    assert client.server_info(address).corrupt == 1
    with pytest.raises(CorruptReplica):
        client.read_block(address, 300, 1, 0, 10)


def test_fencing_and_replicas_survive_a_restart(
    make_servers: MakeServers, client: ChunkClient
) -> None:
    servers = make_servers(1)
    address = servers.addresses[0]
    data = payload(200_000, 11)
    client.write_block([address], 400, 3, data, "shard-1", 9)
    client.write_block([address], 401, 1, b"other", "shard-2", 2)
    assert servers.terminate(0) == 0  # SIGTERM: a clean exit
    ready = servers.restart(0)
    assert ready["server_id"] == "cs0" and ready["address"] == address
    with pytest.raises(Fenced) as exc:
        client.delete_blocks(address, [400], "shard-1", 8)
    assert exc.value.current_epoch == 9
    assert client.read_block(address, 400, 3) == data
    assert client.server_info(address).epochs == {"shard-1": 9, "shard-2": 2}
    [r] = client.delete_blocks(address, [401], "shard-2", 2)
    assert r.outcome is DeleteOutcome.DELETED
    assert sorted(i.block_id for i in client.list_blocks(address)) == [400]
