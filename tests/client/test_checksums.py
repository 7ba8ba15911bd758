"""``Client.checksum`` on real processes (3 masters, 4 chunk servers): the file checksum from the
chunk servers' sidecars equals HDFS's ``MD5-of-MD5-of-CRC32C`` computed here over the bytes,
for inline files and files of one and several blocks; equal files give equal checksums; a
replica with a damaged sidecar is skipped (and reported) for another one."""

from __future__ import annotations

import asyncio
import hashlib
import os
import struct
from pathlib import Path
from typing import Any

import google_crc32c
import pytest
from google_crc32c import value as crc32c

from keelfs.client import AsyncClient
from keelfs.client import _ops as ops
from keelfs.errors import IsADirectory, NotFound, PermissionDenied
from keelfs.meta.records import MAX_INLINE_BYTES
from keelfs.tls.certs import issue_client
from keelfs.tls.credentials import TlsSettings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

KiB = 1 << 10
BLOCK = 128 * KiB  # two 64 KiB chunks a block: many block boundaries in little data
CHUNK = 64 * KiB


def hdfs_reference(data: bytes, block_size: int, bpc: int = CHUNK) -> tuple[str, str]:
    """HDFS's file checksum of ``data`` in blocks of ``block_size`` (see the longer reference
    in tests/chunk/test_file_checksum.py): MD5 of the block MD5s in a zero-filled buffer of 32
    bytes doubled to fit, each block MD5 over its big-endian chunk CRC32Cs."""
    if not data:
        return "MD5-of-0MD5-of-0CRC32", "00" * 12 + hashlib.md5(bytes(32)).hexdigest()
    blocks = [data[i : i + block_size] for i in range(0, len(data), block_size)]
    md5s = b""
    for block in blocks:
        crcs = [google_crc32c.value(block[i : i + bpc]) for i in range(0, len(block), bpc)]
        md5s += hashlib.md5(struct.pack(f">{len(crcs)}I", *crcs)).digest()
    size = 32
    while size < len(md5s):
        size *= 2
    crc_per_block = -(-len(blocks[0]) // bpc) if len(blocks) > 1 else 0
    raw = struct.pack(">iq", bpc, crc_per_block) + hashlib.md5(md5s.ljust(size, b"\0")).digest()
    return f"MD5-of-{crc_per_block}MD5-of-{bpc}CRC32C", raw.hex()


@pytest.fixture(scope="module")
def fs(data_cluster: Any) -> Any:
    c, _ = data_cluster
    client = c.client()
    client.mkdir("/sum", parents=True)
    return client


def _write_blocks(fs: Any, path: str, data: bytes, block_size: int = BLOCK) -> None:
    """Through the block path whatever the size (``open``, then an hflush, keeps a small file
    out of its record)."""
    with fs.open(path, "wb", block_size=block_size) as f:
        f.write(data)
        f.hflush()


@pytest.mark.parametrize(
    "size",
    [1, CHUNK - 1, CHUNK, CHUNK + 1, BLOCK, BLOCK + 1, 3 * BLOCK, 3 * BLOCK + 12_345],
)
def test_checksum_of_files_in_blocks_is_hdfs_s(fs: Any, size: int) -> None:
    data = os.urandom(size)
    path = f"/sum/blocks-{size}"
    _write_blocks(fs, path, data)
    assert len([b for b in fs.stat(path).blocks if b.length]) == -(-size // BLOCK)
    got = fs.checksum(path)
    assert (got.algorithm, got.hex) == hdfs_reference(data, BLOCK)
    assert got.length == 28
    crc = fs.checksum(path, mode="COMPOSITE_CRC")  # the whole file's CRC32C
    assert (crc.algorithm, crc.bytes) == ("COMPOSITE-CRC32C", struct.pack(">I", crc32c(data)))


@pytest.mark.parametrize("size", [0, 1, 1000, MAX_INLINE_BYTES])
def test_checksum_of_inline_files_is_that_of_one_block(fs: Any, size: int) -> None:
    data = os.urandom(size)
    path = f"/sum/inline-{size}"
    fs.write_bytes(path, data)
    assert fs.stat(path).blocks == ()
    got = fs.checksum(path)
    assert (got.algorithm, got.hex) == hdfs_reference(data, BLOCK)
    if size:  # the same bytes in a block have the same checksum
        _write_blocks(fs, f"{path}-in-a-block", data)
        assert fs.checksum(f"{path}-in-a-block") == got


def test_equal_files_equal_checksums(data_cluster: Any, fs: Any) -> None:
    data = os.urandom(2 * BLOCK + 5)
    for name in ("a", "b"):
        _write_blocks(fs, f"/sum/eq-{name}", data)
    _write_blocks(fs, "/sum/eq-other-block-size", data, 2 * BLOCK)
    a, b = fs.checksum("/sum/eq-a"), fs.checksum("/sum/eq-b")
    assert a == b
    assert fs.checksum("/sum/eq-other-block-size") != a
    composite = {  # whatever the block size
        fs.checksum(f"/sum/eq-{n}", mode="COMPOSITE_CRC") for n in ("a", "b", "other-block-size")
    }
    assert len(composite) == 1

    async def from_asyncio() -> Any:
        c, _ = data_cluster
        async with AsyncClient(c.config_addresses, tls=c.client_tls) as afs:
            return await afs.checksum("/sum/eq-a")

    assert asyncio.run(from_asyncio()) == a


def test_bad_paths(fs: Any) -> None:
    with pytest.raises(NotFound):
        fs.checksum("/sum/missing")
    with pytest.raises(IsADirectory):
        fs.checksum("/sum")


def test_checksum_needs_read_permission(data_cluster: Any, fs: Any) -> None:
    c, _ = data_cluster
    _write_blocks(fs, "/sum/private", b"secret" * 1000)
    fs.chmod("/sum/private", 0o600)
    if c.tls_dir is None:
        other = c.client(user="mallory")
    else:  # the TLS tier takes the caller from the certificate
        issue_client(c.tls_dir, "mallory", overwrite=True)
        other = c.client(user="mallory", tls=TlsSettings.for_user(c.tls_dir, "mallory"))
    with pytest.raises(PermissionDenied):
        other.checksum("/sum/private")


def _replica_files(servers: Any, server_id: str, block_id: int, gen: int) -> list[Path]:
    i = next(i for i, r in enumerate(servers.ready) if r["server_id"] == server_id)
    return list(servers.data_dir(i).rglob(f"blk_{block_id}_{gen}.meta"))


def test_a_corrupt_replica_is_skipped_and_reported(data_cluster: Any, fs: Any) -> None:
    c, servers = data_cluster
    data = os.urandom(3 * BLOCK)
    _write_blocks(fs, "/sum/corrupt", data)

    def located() -> Any:
        info = fs._run(ops.stat("/sum/corrupt", False, read=True), None).info
        return info if all(len(b.locations) == 3 for b in info.blocks) else None

    info = c.wait_for(located, 30, "replicas not all reported")
    block = info.blocks[1]
    victim = block.locations[0].server_id  # the replica asked first
    (meta,) = _replica_files(servers, victim, block.block_id, block.gen_stamp)
    with open(meta, "r+b") as raw:  # the sidecar's header: its CRC no longer matches
        raw.seek(20)
        byte = raw.read(1)
        raw.seek(20)
        raw.write(bytes([byte[0] ^ 0xFF]))
    got = fs.checksum("/sum/corrupt")
    assert (got.algorithm, got.hex) == hdfs_reference(data, BLOCK)

    def replaced() -> bool:
        now = fs._run(ops.stat("/sum/corrupt", False), None).info.blocks[1]
        ids = [loc.server_id for loc in now.locations]
        return len(ids) == 3 and victim not in ids

    c.wait_for(replaced, 60, "the reported replica was not replaced")
    assert fs.checksum("/sum/corrupt") == got
