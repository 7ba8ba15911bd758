"""``checksum(path)``: a file's ``MD5-of-MD5-of-CRC32C`` (``keelfs.datapath.file_checksum``)
without reading its data.

One ``GetFileInfo`` (as a reader's: the caller needs ``r`` on the file; it gives each block its
locations and a READ token), then one ``BlockChecksum`` per block to a chunk server holding
it, nearest first. A replica that fails (down, missing, another stamp, shorter than the file's
block) is skipped for the next one; one found corrupt is also reported to the shard, as a
reader would. When every replica of a block failed, the locations are fetched again (the
masters may have re-replicated it, or its stamp moved on), a few times, before the last error
is raised. An inline file (data in its record, no blocks) is checksummed here, over its data,
as one block. Blocks of no bytes (a writer can leave an empty last block) are left out: the
checksum depends on the bytes, the block size and the chunk size only.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from keelfs.client import _ops as ops
from keelfs.datapath.checksums import CHUNK_SIZE
from keelfs.datapath.client import AsyncChunkClient
from keelfs.datapath.file_checksum import (
    BlockDigest,
    FileChecksum,
    LocalChecksummer,
    by_mode,
    checksum_of_blocks,
)
from keelfs.errors import ChecksumMismatch, CorruptReplica, IsADirectory, KeelError, Unavailable
from keelfs.rpc.pb import meta_pb2 as pb

if TYPE_CHECKING:
    from keelfs.client.aio import AsyncClient
    from keelfs.meta.records import FileInfo

__all__ = ["file_checksum", "local_checksum"]

log = logging.getLogger(__name__)

_LOCAL_PIECE = 4 << 20

_REFETCHES = 4
"""Location lookups for one block whose replicas all failed, before giving up."""


@dataclass(frozen=True, slots=True)
class _Block:
    block_id: int
    gen: int
    length: int
    locations: tuple[tuple[str, str], ...]
    """(server id, address), nearest first."""
    token: bytes


async def _file_info(fs: AsyncClient, path: str) -> pb.FileInfo:
    reply = await fs._run(ops.stat(path, False, read=True), None)
    info: pb.FileInfo = reply.info
    if info.kind == pb.DIRECTORY:
        raise IsADirectory(info.path)
    return info


def _blocks(info: pb.FileInfo) -> list[_Block]:
    return [
        _Block(
            b.block_id,
            b.gen_stamp,
            b.length,
            tuple((loc.server_id, loc.address) for loc in b.locations),
            b.token,
        )
        for b in info.blocks
    ]


async def file_checksum(
    fs: AsyncClient, chunks: AsyncChunkClient, path: str, mode: str = "MD5MD5CRC"
) -> FileChecksum:
    """The checksum of file ``path`` (see the module docstring); ``mode``: ``MD5MD5CRC`` or
    ``COMPOSITE_CRC`` (``keelfs.datapath.file_checksum``)."""
    combine = by_mode(mode)
    info = await _file_info(fs, path)
    if info.HasField("inline_data"):
        return checksum_of_blocks([info.inline_data] if info.inline_data else [], mode=mode)
    digests: list[BlockDigest] = []
    blocks = [b for b in _blocks(info) if b.length]
    for index in range(len(blocks)):
        digests.append(await _block_digest(fs, chunks, info.path, blocks, index))
    return combine(digests)


async def _block_digest(
    fs: AsyncClient, chunks: AsyncChunkClient, path: str, blocks: list[_Block], index: int
) -> BlockDigest:
    """Block ``index``'s digest from the first replica that gives it; ``blocks[index]`` is
    replaced by what a location lookup found when every replica failed."""
    last: KeelError | None = None
    for attempt in range(_REFETCHES + 1):
        if attempt:
            await asyncio.sleep(min(0.05 * 2**attempt, 1.0))
            fresh = {b.block_id: b for b in _blocks(await _file_info(fs, path))}
            if blocks[index].block_id not in fresh:
                raise Unavailable(
                    f"{path}: block {blocks[index].block_id} left the file while it was "
                    "checksummed (the file changed)"
                )
            blocks[index] = fresh[blocks[index].block_id]
        b = blocks[index]
        for server_id, address in b.locations:
            try:
                return await chunks.block_checksum(
                    address, b.block_id, b.gen, b.length, token=b.token
                )
            except KeelError as exc:
                last = exc
                log.info("%s: checksum of block %d at %s: %s", path, b.block_id, address, exc)
                if isinstance(exc, ChecksumMismatch | CorruptReplica):
                    await _report(fs, path, server_id, b, exc)
    raise last or Unavailable(f"{path}: block {blocks[index].block_id} has no live replica")


async def _report(fs: AsyncClient, path: str, server_id: str, b: _Block, exc: KeelError) -> None:
    op = ops.report_bad_replica(path, server_id, b.block_id, b.gen, str(exc))
    try:
        await fs._run(op, 5.0)
    except KeelError as err:
        log.warning("%s: could not report a bad replica: %s", path, err)


def local_checksum(
    local: str | os.PathLike[str], info: FileInfo, bytes_per_crc: int = CHUNK_SIZE
) -> FileChecksum:
    """The checksum :func:`file_checksum` gives for the keelfs file ``info`` describes,
    computed over local file ``local`` (a copy of it: ``keelfs get --verify``), cut into the
    blocks ``info`` lists (an inline file's data: one block). ``ValueError`` when ``local``
    has another length than those blocks."""
    lengths = [b.length for b in info.blocks] or [info.length]
    summer = LocalChecksummer(lengths, bytes_per_crc or CHUNK_SIZE)
    with open(local, "rb") as f:
        while piece := f.read(_LOCAL_PIECE):
            summer.update(piece)
    return summer.result()
