"""The data path under faults, on real processes (3 masters, 4 chunk servers): a chunk server
killed (-9) in the middle of a write, a replica corrupted on disk, the shard leader killed (-9)
during a large write and during a large read, the replies of the block RPCs lost. Every file
is compared by MD5."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from keelfs.chunk.layout import HEADER_SIZE
from keelfs.client import AsyncClient
from keelfs.datapath.checksums import CHUNK_SIZE
from keelfs.errors import StaleGeneration

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

MiB = 1 << 20
PIECE = 256 << 10


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.fixture(scope="module")
def fs(data_cluster: Any) -> Any:
    c, _ = data_cluster
    client = c.client()
    client.mkdir("/faults", parents=True)
    return client


def server_index(servers: Any, server_id: str) -> int:
    return next(i for i, r in enumerate(servers.ready) if r["server_id"] == server_id)


def locations(fs: Any, path: str) -> list[list[str]]:
    """Each block's replica locations (server ids), as the shard's leader knows them."""
    from keelfs.client import _ops as ops

    reply = fs._run(ops.stat(path, False), None)
    return [[loc.server_id for loc in b.locations] for b in reply.info.blocks]


def write_killing(fs: Any, path: str, data: bytes, at: int, kill: Any, **options: Any) -> Any:
    """Write ``data`` in pieces; call ``kill(writer)`` once every node acknowledged ``at``
    bytes (the rest of the file still to come)."""
    f = fs.open(path, "wb", **options)
    killed = False
    with f:
        for i in range(0, len(data), PIECE):
            f.write(data[i : i + PIECE])
            if not killed and i + PIECE >= at + MiB:
                f.flush()
                deadline = time.monotonic() + 10
                while f.writer.acked < at and time.monotonic() < deadline:
                    time.sleep(0.005)
                assert f.writer.acked >= at
                kill(f)
                killed = True
    assert killed
    return f


def test_a_chunk_server_killed_mid_write(data_cluster: Any, fs: Any) -> None:
    """The middle node of the pipeline dies after the first MiB: the pipeline is rebuilt with
    a fresh server (the block re-sent under a new stamp) and every block ends with 3 replicas,
    none on the dead server."""
    c, servers = data_cluster
    data = os.urandom(10 * MiB + 1234)
    victims: list[int] = []

    def kill(f: Any) -> None:
        middle = f.pipeline[1]
        victims.append(server_index(servers, middle.server_id))
        servers.kill9(victims[0])

    f = write_killing(fs, "/faults/cs-kill", data, MiB, kill, block_size=4 * MiB)
    try:
        assert f.writer.recoveries >= 1
        assert md5(fs.read_bytes("/faults/cs-kill")) == md5(data)
        dead = servers.ready[victims[0]]["server_id"]

        def healed() -> bool:
            locs = locations(fs, "/faults/cs-kill")
            return all(len(ids) == 3 and dead not in ids for ids in locs)

        c.wait_for(healed, 60, "blocks did not end with 3 live replicas")
        assert md5(fs.read_bytes("/faults/cs-kill")) == md5(data)
    finally:
        servers.restart(victims[0])


def test_a_pipeline_of_survivors_is_continued(data_cluster: Any, fs: Any) -> None:
    """With replication 4 on 4 servers there is no fresh server: the 3 survivors' replicas are
    continued from the acknowledged length under a new stamp."""
    c, servers = data_cluster
    c.wait_for(
        lambda: c.chunk_servers_reported({r["server_id"] for r in servers.ready}),
        30,
        "chunk servers unreported",
    )
    data = os.urandom(6 * MiB + 77)
    victims: list[int] = []

    def kill(f: Any) -> None:
        victims.append(server_index(servers, f.pipeline[-1].server_id))
        servers.kill9(victims[0])

    f = write_killing(
        fs, "/faults/continue", data, 2 * MiB, kill, block_size=4 * MiB, replication=4
    )
    try:
        assert f.writer.recoveries >= 1 and f.writer.resumed >= 1
        assert md5(fs.read_bytes("/faults/continue")) == md5(data)
        dead = servers.ready[victims[0]]["server_id"]

        def survivors_reported() -> bool:
            # the three survivors' continued replicas (new stamp), not the dead server
            first = locations(fs, "/faults/continue")[0]
            return len(first) >= 3 and dead not in first

        c.wait_for(survivors_reported, 30, "the continued replicas were not reported")
    finally:
        servers.restart(victims[0])


def _replica_file(servers: Any, i: int, block_id: int, gen: int) -> Path:
    found = list(servers.data_dir(i).rglob(f"blk_{block_id}_{gen}.data"))
    assert len(found) == 1, found
    return found[0]


def test_a_corrupt_replica_is_skipped_and_reported(data_cluster: Any, fs: Any) -> None:
    c, servers = data_cluster
    data = os.urandom(3 * MiB)
    fs.write_bytes("/faults/corrupt", data, block_size=MiB)
    c.wait_for(
        lambda: all(len(ids) == 3 for ids in locations(fs, "/faults/corrupt")),
        30,
        "replicas not all reported",
    )
    with fs.open("/faults/corrupt", "rb") as f:
        block = f.reader._blocks[1]
        server_id, _ = block.locations[0]  # the replica this reader tries first
        path = _replica_file(servers, server_index(servers, server_id), block.block_id, block.gen)
        with open(path, "r+b") as raw:
            raw.seek(300_000)
            byte = raw.read(1)
            raw.seek(300_000)
            raw.write(bytes([byte[0] ^ 0xFF]))
        assert md5(f.read()) == md5(data)
        assert f.reader.bad_replicas == [(server_id, block.block_id, block.gen)]
        assert f.reader.failovers == 1

    def replaced() -> bool:
        ids = locations(fs, "/faults/corrupt")[1]
        return len(ids) == 3 and server_id not in ids

    c.wait_for(replaced, 60, "the corrupt replica was not replaced")
    assert md5(fs.read_bytes("/faults/corrupt")) == md5(data)


@pytest.mark.parametrize("where", ["data", "sidecar"])
def test_a_corrupt_chunk_deep_in_a_read_piece_fails_over(
    data_cluster: Any, fs: Any, where: str
) -> None:
    # a chunk server sends a block in pieces of 1 MiB, each checked by one CRC32C against the
    # combination of its chunks' stored CRCs: a flipped byte in the last chunk of the seventh
    # piece, or in that chunk's stored CRC, must still be caught there, and the reader go on
    # from another replica
    c, servers = data_cluster
    data = os.urandom(8 * MiB)
    path = f"/faults/deep-{where}"
    fs.write_bytes(path, data, block_size=8 * MiB)
    c.wait_for(lambda: len(locations(fs, path)[0]) == 3, 30, "replicas not all reported")
    with fs.open(path, "rb") as f:
        block = f.reader._blocks[0]
        server_id, _ = block.locations[0]  # the replica this reader tries first
        i = server_index(servers, server_id)
        damaged = _replica_file(servers, i, block.block_id, block.gen)
        at = 7 * MiB - 100
        if where == "sidecar":
            damaged = damaged.with_suffix(".meta")
            at = HEADER_SIZE + (7 * MiB // CHUNK_SIZE - 1) * 4  # the chunk's stored CRC
        with open(damaged, "r+b") as raw:
            raw.seek(at)
            byte = raw.read(1)
            raw.seek(at)
            raw.write(bytes([byte[0] ^ 0x01]))
        assert md5(f.read()) == md5(data)
        assert f.reader.bad_replicas == [(server_id, block.block_id, block.gen)]
        assert f.reader.failovers == 1


def test_the_shard_leader_killed_during_a_large_write(data_cluster: Any, fs: Any) -> None:
    c, _ = data_cluster
    data = os.urandom(24 * MiB + 5)
    killed: list[int] = []

    def kill(f: Any) -> None:
        killed.append(c.leader("shard-1"))
        c.kill9(killed[0])

    try:
        f = write_killing(fs, "/faults/leader-w", data, 5 * MiB, kill, block_size=2 * MiB)
        assert f.closed
        assert c.leader("shard-1") != killed[0]
        assert md5(fs.read_bytes("/faults/leader-w")) == md5(data)
        assert fs.stat("/faults/leader-w").length == len(data)
    finally:
        if killed:
            c.restart(killed[0])


def test_the_shard_leader_killed_during_a_large_read(data_cluster: Any, fs: Any) -> None:
    c, _ = data_cluster
    data = os.urandom(24 * MiB + 5)
    fs.write_bytes("/faults/leader-r", data, block_size=2 * MiB)
    killed = c.leader("shard-1")
    try:
        with fs.open("/faults/leader-r", "rb") as f:
            head = f.read(5 * MiB)
            c.kill9(killed)
            rest = f.read()
        assert md5(head + rest) == md5(data)
        # and a new reader finds the new leader
        assert md5(fs.read_bytes("/faults/leader-r")) == md5(data)
    finally:
        c.restart(killed)


class LostReply(grpc.RpcError):
    """What the client sees when a reply is lost on the way back: a deadline, outcome
    unknown (the request was applied)."""

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.DEADLINE_EXCEEDED

    def details(self) -> str:
        return "reply lost (test)"

    def trailing_metadata(self) -> tuple[Any, ...]:
        return ()


def lose_first_replies(afs: AsyncClient, methods: set[str]) -> dict[str, Any]:
    """Make ``afs`` lose the first reply of each of ``methods`` after the masters applied the
    request (the client core then retries it with the same session and seq); the lost
    replies by method."""
    lost: dict[str, Any] = {}
    real = afs._call

    async def call(action: Any) -> Any:
        result = await real(action)
        if action.method in methods - lost.keys() and not isinstance(result, grpc.RpcError):
            lost[action.method] = result
            return LostReply()
        return result

    afs._call = call  # type: ignore[method-assign]
    return lost


def refuse_first_pipeline(afs: AsyncClient) -> None:
    """The first block write's header is refused (as a chunk server refuses a stale stamp):
    the writer asks for a new stamp (``RecoverPipeline``)."""
    chunks = afs._chunk_client()
    real = chunks.write_block
    refused: list[int] = []

    async def write_block(pipeline: Any, block_id: int, gen: int, *args: Any, **kw: Any) -> Any:
        if not refused:
            refused.append(block_id)
            raise StaleGeneration(block_id, gen, gen + 1)
        return await real(pipeline, block_id, gen, *args, **kw)

    chunks.write_block = write_block  # type: ignore[method-assign]


def test_lost_block_replies_are_retried_exactly_once(data_cluster: Any, fs: Any) -> None:
    """The replies of the first AllocateBlock and of a RecoverPipeline are lost after the
    masters applied them: each retry (same session and seq) gets the first outcome, the same
    block and the same generation stamp, and the file is written whole, with no extra block."""
    c, _ = data_cluster
    data = os.urandom(MiB + 4321)
    path = "/faults/lost-replies"

    async def main() -> None:
        async with AsyncClient(c.config_addresses, tls=c.client_tls) as afs:
            lost = lose_first_replies(afs, {"AllocateBlock", "RecoverPipeline"})
            refuse_first_pipeline(afs)
            async with await afs.open(path, "wb", block_size=MiB) as w:
                await w.write(data)
                assert w.recoveries == 1
            assert lost.keys() == {"AllocateBlock", "RecoverPipeline"}
            first = lost["AllocateBlock"].block
            recovered = lost["RecoverPipeline"].block
            assert recovered.block_id == first.block_id and recovered.gen_stamp == 2
            info = await afs.stat(path)
            assert [b.block_id for b in info.blocks][0] == first.block_id
            assert [b.gen_stamp for b in info.blocks] == [2, 1]
            assert [b.length for b in info.blocks] == [MiB, 4321]
            assert md5(await afs.read_bytes(path)) == md5(data)

    asyncio.run(main())
