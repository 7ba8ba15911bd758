"""Commands a shard's leader gives a chunk server, and the one function that executes them.

The commands arrive as RPCs (``DeleteBlocks``, ``ReplicateBlock``) or in heartbeat replies
(those two and ``VerifyBlock``). Either way they go through :meth:`CommandExecutor.execute`,
which first checks the block access token of every block the command names
(``keelfs.datapath.tokens``: signed by a master for that block, stamp, mode, shard and epoch;
else ``PermissionDenied``), then admits the command's fence (``keelfs.chunk.fencing``: an
older epoch of the shard is refused with ``Fenced``), and only then dispatches on the
command's type. A refused command changes nothing, ``epochs.json`` included: a fence counts
only inside a token signed for it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast, overload

from keelfs.chunk.fencing import EpochTable
from keelfs.chunk.reader import ReplicaReader
from keelfs.chunk.store import BlockStore
from keelfs.datapath.client import AsyncChunkClient
from keelfs.datapath.protocol import Target, WriteResult
from keelfs.datapath.replica import (
    DeleteResult,
    ReplicaInfo,
    ReplicaState,
    check_block_id,
    check_gen,
)
from keelfs.datapath.tokens import Access, TokenVerifier
from keelfs.errors import InvalidArgument

__all__ = ["Command", "CommandExecutor", "DeleteBlocks", "Fence", "ReplicateBlock", "VerifyBlock"]


@dataclass(frozen=True, slots=True)
class Fence:
    shard_id: str
    epoch: int


@dataclass(frozen=True, slots=True)
class DeleteBlocks:
    fence: Fence
    blocks: tuple[tuple[int, int], ...]
    """``(block_id, gen)``: delete the replica if its stamp is ``gen`` or older (0: any)."""
    tokens: tuple[bytes, ...] = ()
    """The DELETE token of each of ``blocks``, in order."""

    def grants(self) -> list[tuple[bytes, int, int, Access]]:
        if not self.blocks or len(self.tokens) != len(self.blocks):
            # refused as tokenless: a fence alone (no block, or a block without its token)
            # must not move the epoch table
            return [(b"", self.blocks[0][0] if self.blocks else 0, 0, Access.DELETE)]
        return [
            (token, block_id, gen, Access.DELETE)
            for (block_id, gen), token in zip(self.blocks, self.tokens, strict=True)
        ]

    def describe(self) -> str:
        return f"delete {len(self.blocks)} blocks ({self.fence.shard_id}@{self.fence.epoch})"


@dataclass(frozen=True, slots=True)
class ReplicateBlock:
    fence: Fence
    block_id: int
    gen: int
    targets: tuple[Target, ...]
    """The pipeline the copy is written through."""
    token: bytes = b""
    """REPLICATE | WRITE: checked here, then passed on to the targets' WriteBlock."""

    def grants(self) -> list[tuple[bytes, int, int, Access]]:
        return [(self.token, self.block_id, self.gen, Access.REPLICATE)]

    def describe(self) -> str:
        to = ",".join(t.address for t in self.targets)
        return f"replicate blk_{self.block_id}_{self.gen} to {to} ({self.fence.shard_id}@{self.fence.epoch})"  # noqa: E501


@dataclass(frozen=True, slots=True)
class VerifyBlock:
    """Re-read ``blk_<block_id>_<gen>`` from disk now and check every chunk's checksum: a
    master keeps this replica and trims others, and will not on the word of a scan that may
    be months old. Returns the replica verified; a failed check marks it corrupt (reported
    by the next heartbeat, like the scanner's findings) and raises ``CorruptReplica``."""

    fence: Fence
    block_id: int
    gen: int
    token: bytes = b""
    """READ, with the fence."""

    def grants(self) -> list[tuple[bytes, int, int, Access]]:
        return [(self.token, self.block_id, self.gen, Access.READ)]

    def describe(self) -> str:
        return f"verify blk_{self.block_id}_{self.gen} ({self.fence.shard_id}@{self.fence.epoch})"


Command = DeleteBlocks | ReplicateBlock | VerifyBlock


class CommandExecutor:
    """Executes commands against ``store`` after checking their tokens with ``tokens`` and
    their fence in ``epochs``; copies go out through ``client``."""

    def __init__(
        self,
        store: BlockStore,
        epochs: EpochTable,
        client: AsyncChunkClient,
        tokens: TokenVerifier,
    ) -> None:
        self.store = store
        self.epochs = epochs
        self.client = client
        self.tokens = tokens
        self._handlers: dict[type[Any], Callable[[Any], Awaitable[Any]]] = {
            DeleteBlocks: self._delete,
            ReplicateBlock: self._replicate,
            VerifyBlock: self._verify,
        }

    @overload
    async def execute(self, command: DeleteBlocks) -> list[DeleteResult]: ...
    @overload
    async def execute(self, command: ReplicateBlock) -> WriteResult: ...
    @overload
    async def execute(self, command: VerifyBlock) -> ReplicaInfo: ...
    async def execute(self, command: Command) -> list[DeleteResult] | WriteResult | ReplicaInfo:
        fence = (command.fence.shard_id, command.fence.epoch)
        for token, block_id, gen, mode in command.grants():
            self.tokens.check(token, block_id, gen, mode, fence)
        await self.epochs.admit_async(command.fence.shard_id, command.fence.epoch)
        result: list[DeleteResult] | WriteResult | ReplicaInfo = await self._handlers[
            type(command)
        ](command)
        return result

    async def _delete(self, command: DeleteBlocks) -> list[DeleteResult]:
        def run() -> list[DeleteResult]:
            return [self.store.delete(block_id, gen) for block_id, gen in command.blocks]

        return await asyncio.to_thread(run)

    async def _verify(self, command: VerifyBlock) -> ReplicaInfo:
        async with self._finalized_reader(command.block_id, command.gen, "verified") as reader:
            async for _ in _pieces(reader):  # each piece's checksums checked as it is read
                pass
            return reader.info

    async def _replicate(self, command: ReplicateBlock) -> WriteResult:
        if not command.targets:
            raise InvalidArgument("replicate to no target", "targets")
        async with self._finalized_reader(command.block_id, command.gen, "copied") as reader:
            return await self.client.write_block(
                command.targets,
                command.block_id,
                command.gen,
                _pieces(reader),
                command.fence.shard_id,
                command.fence.epoch,
                chunk_size=reader.info.chunk_size,
                token=command.token,
            )

    @contextlib.asynccontextmanager
    async def _finalized_reader(
        self, block_id: int, gen: int, verb: str
    ) -> AsyncIterator[ReplicaReader]:
        """A reader of the finalized replica ``block_id`` at ``gen`` (``InvalidArgument`` for
        one being written: only finalized replicas are ``verb``), closed after the block."""
        check_block_id(block_id)
        check_gen(gen)
        reader = await asyncio.to_thread(self.store.open_reader, block_id, gen)
        try:
            if reader.info.state is not ReplicaState.FINALIZED:
                raise InvalidArgument(
                    f"{reader.info.name} is being written: only finalized replicas are {verb}",
                    "block_id",
                )
            yield reader
        finally:
            reader.close()


async def _pieces(reader: ReplicaReader) -> AsyncIterator[bytes]:
    """The replica's verified bytes, read in a worker thread piece by piece."""
    while (piece := await asyncio.to_thread(reader.read_piece)) is not None:
        yield cast(bytes, piece[1])  # an unframed reader's pieces are bytes
