"""File checksums (``MD5-of-MD5-of-CRC32C``) without processes: the algorithm against a reference
written here from HDFS's definition, the store's stored-CRC lookup (partial chunks, corruption,
lengths past the end), and the ``BlockChecksum`` RPC of an in-process chunk node (tokens)."""

from __future__ import annotations

import asyncio
import hashlib
import random
import struct
from pathlib import Path

import google_crc32c
import grpc
import pytest
from chunk_keys import provision, signer

from keelfs.chunk.layout import HEADER_SIZE, Layout
from keelfs.chunk.node import ChunkNode, ChunkNodeConfig
from keelfs.chunk.store import BlockStore
from keelfs.datapath.checksums import chunk_crcs
from keelfs.datapath.client import AsyncChunkClient
from keelfs.datapath.file_checksum import (
    EMPTY_FILE_CHECKSUM,
    FileChecksum,
    LocalChecksummer,
    block_digest,
    checksum_of_blocks,
    combine,
    composite,
    crc32c_combine,
    crc32c_of_packed,
)
from keelfs.datapath.tokens import Access
from keelfs.errors import CorruptReplica, InvalidArgument, NotFound, PermissionDenied
from keelfs.rpc.pb import chunk_pb2 as pb
from keelfs.rpc.pb import chunk_pb2_grpc as pb_grpc

CS = 512


def payload(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


def hdfs_reference(data: bytes, block_size: int, bpc: int) -> tuple[str, str]:
    """HDFS's file checksum of ``data`` stored in blocks of ``block_size`` with ``bpc`` bytes per
    CRC32C, as ``(algorithm, hex bytes)``; written from HDFS's code, independently of keelfs:
    the datanode MD5s its meta file's CRCs (big-endian ints); the client writes each block MD5
    into a ``DataOutputBuffer`` (a ``ByteArrayOutputStream``: 32 bytes, grown to
    ``max(2 * capacity, needed)``) and MD5s its whole backing array."""
    if not data:
        return "MD5-of-0MD5-of-0CRC32", "00" * 12 + hashlib.md5(bytes(32)).hexdigest()
    buffer, count = bytearray(32), 0
    blocks = [data[i : i + block_size] for i in range(0, len(data), block_size)]
    crc_counts = []
    for block in blocks:
        crcs = [google_crc32c.value(block[i : i + bpc]) for i in range(0, len(block), bpc)]
        crc_counts.append(len(crcs))
        block_md5 = hashlib.md5(b"".join(struct.pack(">I", c) for c in crcs)).digest()
        if count + 16 > len(buffer):
            buffer.extend(bytes(max(2 * len(buffer), count + 16) - len(buffer)))
        buffer[count : count + 16] = block_md5
        count += 16
    crc_per_block = crc_counts[0] if len(blocks) > 1 else 0
    file_md5 = hashlib.md5(bytes(buffer)).digest()
    raw = struct.pack(">i", bpc) + struct.pack(">q", crc_per_block) + file_md5
    return f"MD5-of-{crc_per_block}MD5-of-{bpc}CRC32C", raw.hex()


def split(data: bytes, block_size: int) -> list[bytes]:
    return [data[i : i + block_size] for i in range(0, len(data), block_size)]


SIZES = [0, 1, CS - 1, CS, CS + 1, 4 * CS, 4 * CS + 7, 9 * CS, 33 * 4 * CS + 5]


@pytest.mark.parametrize("size", SIZES)
def test_the_checksum_is_hdfs_md5_of_md5_of_crc32c(size: int) -> None:
    block_size = 4 * CS  # several blocks, some ending exactly at a boundary
    data = payload(size, size)
    got = checksum_of_blocks(split(data, block_size), CS)
    assert (got.algorithm, got.hex) == hdfs_reference(data, block_size, CS)
    assert got.length == 28 and got.to_json()["length"] == 28
    # the same from a stream cut anywhere
    local = LocalChecksummer([len(b) for b in split(data, block_size)], CS)
    for i in range(0, size, 777):
        local.update(data[i : i + 777])
    assert local.result() == got


@pytest.mark.parametrize("size", SIZES)
def test_the_composite_crc_is_the_whole_file_s_crc32c(size: int) -> None:
    data = payload(size, size)
    for block_size, bpc in ((4 * CS, CS), (2 * CS, 2 * CS), (16 * CS, 4 * CS)):
        got = checksum_of_blocks(split(data, block_size), bpc, mode="COMPOSITE_CRC")
        if not size:  # as HDFS: its fixed answer for a file without blocks
            assert got == EMPTY_FILE_CHECKSUM
            continue
        assert got.algorithm == "COMPOSITE-CRC32C" and got.length == 4 and got.composite
        assert got.bytes == struct.pack(">I", google_crc32c.value(data))  # any block size
        local = LocalChecksummer([len(b) for b in split(data, block_size)], bpc, "COMPOSITE_CRC")
        local.update(data)
        assert local.result() == got


def test_crc32c_combine() -> None:
    for a_len, b_len in ((0, 0), (0, 5), (5, 0), (1, 1), (100, 65_536), (70_000, 3)):
        a, b = payload(a_len, 1), payload(b_len, 2)
        assert crc32c_combine(
            google_crc32c.value(a), google_crc32c.value(b), b_len
        ) == google_crc32c.value(a + b)
    with pytest.raises(InvalidArgument, match="MD5MD5CRC or COMPOSITE_CRC"):
        checksum_of_blocks([b"x"], mode="md5")


def test_crc32c_of_packed_is_the_crc_of_the_data() -> None:
    # whole chunks, a short last chunk, one chunk, none; the table-driven shift for whole
    # chunks and the general one for a short last chunk
    for chunk_size in (512, 4096, 65_536):
        for size in (0, 1, chunk_size - 1, chunk_size, chunk_size + 1, 5 * chunk_size,
                     5 * chunk_size + 7, 16 * chunk_size):  # fmt: skip
            data = payload(size, size + chunk_size)
            got = crc32c_of_packed(chunk_crcs(data, chunk_size), chunk_size, size)
            assert got == google_crc32c.value(data), (chunk_size, size)


def test_known_values() -> None:
    # what WebHDFS answers for an empty file
    assert EMPTY_FILE_CHECKSUM.to_json() == {
        "algorithm": "MD5-of-0MD5-of-0CRC32",
        "bytes": "00000000000000000000000070bc8f4b72a86921468bf8e8441dce51",
        "length": 28,
    }
    one = checksum_of_blocks([b"hello"])
    assert one.algorithm == "MD5-of-0MD5-of-65536CRC32C"
    assert (
        one.md5
        == hashlib.md5(
            hashlib.md5(struct.pack(">I", google_crc32c.value(b"hello"))).digest() + bytes(16)
        ).digest()
    )


def test_equal_files_equal_checksums_and_what_changes_it() -> None:
    data = payload(10 * CS, 5)
    a = checksum_of_blocks(split(data, 4 * CS), CS)
    assert a == checksum_of_blocks(split(bytes(data), 4 * CS), CS)
    assert a != checksum_of_blocks(split(data, 2 * CS), CS)  # another block size
    assert a != checksum_of_blocks(split(data, 4 * CS), 2 * CS)  # another chunk size
    changed = bytearray(data)
    changed[7 * CS + 3] ^= 1
    assert a != checksum_of_blocks(split(bytes(changed), 4 * CS), CS)
    assert FileChecksum(a.algorithm, a.bytes) == a


def test_blocks_of_different_chunk_sizes_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="per 512 and per 1024"):
        combine([block_digest(b"", 512), block_digest(b"", 1024)])


def test_empty_blocks_count_for_nothing() -> None:
    local = LocalChecksummer([0, 3, 0], CS)
    local.update(b"abc")
    assert local.result() == checksum_of_blocks([b"abc"], CS)


def test_local_checksummer_needs_exactly_the_blocks_bytes() -> None:
    short = LocalChecksummer([10, 10], CS)
    short.update(b"x" * 15)
    with pytest.raises(ValueError, match="fewer"):
        short.result()
    with pytest.raises(ValueError, match="more"):
        LocalChecksummer([3], CS).update(b"abcd")


# -- the store ------------------------------------------------------------------------------------
@pytest.fixture
def store(tmp_path: Path) -> BlockStore:
    return BlockStore.open(tmp_path / "data")


@pytest.mark.parametrize("length", [0, 1, CS - 1, CS, CS + 1, 3 * CS, 3 * CS + 100])
def test_store_block_crcs_cover_any_prefix(store: BlockStore, length: int) -> None:
    data = payload(3 * CS + 100, 2)
    store.write_replica(1, 1, "shard-1", data, CS)
    chunk_size, crcs = store.block_crcs(1, 1, length)
    expected = struct.pack(
        f"<{-(-length // CS)}I",
        *(google_crc32c.value(data[i : min(i + CS, length)]) for i in range(0, length, CS)),
    )
    assert (chunk_size, crcs) == (CS, expected)


def test_store_block_crcs_refusals(store: BlockStore) -> None:
    store.write_replica(1, 1, "shard-1", payload(2 * CS + 1), CS)
    with pytest.raises(InvalidArgument, match="fewer than"):
        store.block_crcs(1, 1, 2 * CS + 2)
    with pytest.raises(NotFound):
        store.block_crcs(2, 1, 0)
    store.write_replica(3, 1, "shard-1", payload(2 * CS + 1), CS)
    _, meta = Layout.files(store.layout.finalized_dir(3), 3, 1)
    with open(meta, "r+b") as f:  # the sidecar's header
        f.seek(10)
        b = f.read(1)
        f.seek(10)
        f.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(CorruptReplica, match="header"):
        store.block_crcs(3, 1, CS)
    assert [r.corrupt for r in store.replicas(3)] == [True]
    # a partial chunk is read and checked: a flipped byte there is found, not checksummed
    store.write_replica(4, 1, "shard-1", payload(2 * CS + 1), CS)
    data, _ = Layout.files(store.layout.finalized_dir(4), 4, 1)
    with open(data, "r+b") as f:
        f.seek(CS + 3)
        b = f.read(1)
        f.seek(CS + 3)
        f.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(CorruptReplica, match="chunk 1"):
        store.block_crcs(4, 1, CS + 10)
    assert HEADER_SIZE == 128


# -- the RPC --------------------------------------------------------------------------------------
async def _node(tmp_path: Path) -> ChunkNode:
    provision(tmp_path / "cs")
    node = ChunkNode(ChunkNodeConfig(tmp_path / "cs", server_id="cs-1", io_threads=0))
    await node.start()
    return node


def test_block_checksum_rpc_and_its_token(tmp_path: Path) -> None:
    data = payload(5 * CS + 3, 9)

    async def scenario() -> None:
        node = await _node(tmp_path)
        node.store.write_replica(7, 2, "shard-1", data, CS)
        client = AsyncChunkClient(signer=signer())
        try:
            digest = await client.block_checksum(node.address, 7, 2, len(data))
            assert digest == block_digest(
                struct.pack(
                    "<6I", *(google_crc32c.value(data[i : i + CS]) for i in range(0, len(data), CS))
                ),
                CS,
                len(data),
            )
            assert combine([digest]) == checksum_of_blocks([data], CS)
            assert digest.crc32c == google_crc32c.value(data) and digest.length == len(data)
            # a prefix ending inside a chunk (a file's block shorter than this replica)
            short = await client.block_checksum(node.address, 7, 2, 2 * CS + 5)
            assert combine([short]) == checksum_of_blocks([data[: 2 * CS + 5]], CS)
            assert composite([short]).bytes == struct.pack(
                ">I", google_crc32c.value(data[: 2 * CS + 5])
            )
            # refusals: no token, a token for another block, another stamp, a WRITE token
            bare = AsyncChunkClient()
            try:
                with pytest.raises(PermissionDenied):
                    await bare.block_checksum(node.address, 7, 2, len(data))
                for token in (
                    signer().sign(8, 2, Access.READ),
                    signer().sign(7, 3, Access.READ),
                    signer().sign(7, 2, Access.WRITE, "shard-1", 1),
                ):
                    with pytest.raises(PermissionDenied):
                        await bare.block_checksum(node.address, 7, 2, len(data), token=token)
            finally:
                await bare.close()
            # forged by hand on the wire: refused too
            async with grpc.aio.insecure_channel(node.address) as channel:
                stub = pb_grpc.ChunkServerStub(channel)
                request = pb.BlockChecksumRequest(block_id=7, gen=2, length=1, token=b"x" * 80)
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.BlockChecksum(request)
                assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            with pytest.raises(NotFound):
                await client.block_checksum(node.address, 99, 1, 0)
        finally:
            await client.close()
            await node.stop()

    asyncio.run(scenario())
