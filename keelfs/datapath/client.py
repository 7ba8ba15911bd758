"""Clients of chunk servers: :class:`AsyncChunkClient` (asyncio) and :class:`ChunkClient` (its
synchronous twin, which runs the asyncio one on a private event-loop thread), plus the one-shot
functions :func:`write_block` and :func:`read_block`.

Every method raises the ``keelfs.errors`` tree (``keelfs.errors`` included). Writes follow
``keelfs.datapath.protocol``: the result says which nodes hold the block; a broken pipeline raises
``PipelineBroken`` carrying the same information, for the caller to rebuild the pipeline.

==================  ===========  =============================================================
option              default      meaning
==================  ===========  =============================================================
``packet_size``     1 MiB        bytes per packet (a multiple of the chunk size)
``window``          16           packets sent and not yet acknowledged
``ack_timeout_s``   60 s         longest wait for the next ack (a write) or reply (a read)
``call_timeout_s``  30 s         deadline of the unary calls
``verify_reads``    on           check each read reply's CRC32C
``signer``          None         a ``TokenSigner`` holding a block key: calls given no token
                                 sign their own (benchmarks and tests that run chunk
                                 servers without masters; a client of a cluster passes the
                                 tokens its masters signed)
==================  ===========  =============================================================

Making one raises glibc's malloc thresholds for the process, once
(``keelfs.datapath.memory.tune_malloc_for_client``): megabyte message buffers and read results
are then reused from the heap instead of mapped, faulted in and unmapped every time.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Sequence,
)
from typing import Any, TypeVar

import grpc

from keelfs.datapath.checksums import CHUNK_SIZE, crc32c
from keelfs.datapath.file_checksum import BlockDigest, crc32c_tail
from keelfs.datapath.framing import read_response_fields
from keelfs.datapath.memory import tune_malloc_for_client
from keelfs.datapath.protocol import (
    DEFAULT_PACKET_SIZE,
    AckTracker,
    NodeResult,
    Packetizer,
    ServerStatus,
    Target,
    WriteResult,
    header_request,
    targets_of,
)
from keelfs.datapath.replica import DeleteOutcome, DeleteResult, ReplicaInfo
from keelfs.datapath.tokens import Access, TokenSigner
from keelfs.datapath.wire import AsyncChannels, error_of, pb, replica_from_pb
from keelfs.errors import ChecksumMismatch, Unavailable
from keelfs.runtime.requests import request_metadata
from keelfs.tls.credentials import TlsSettings

__all__ = ["AsyncChunkClient", "ChunkClient", "read_block", "write_block"]

T = TypeVar("T")

Data = bytes | Iterable[bytes] | AsyncIterable[bytes]
"""What a write takes: pieces of any size, sync or async. A sync iterable is consumed on the
event loop, so it should not block (pass an async iterable for slow sources)."""

_OUTCOME = {
    pb.DELETED: DeleteOutcome.DELETED,
    pb.DELETE_NOT_FOUND: DeleteOutcome.NOT_FOUND,
    pb.KEPT_NEWER: DeleteOutcome.KEPT_NEWER,
}


class _SourceError(Exception):
    """The caller's data iterable raised (re-raised as the original exception)."""


async def _pieces(data: Data) -> AsyncIterator[bytes]:
    if isinstance(data, bytes | bytearray | memoryview):
        yield bytes(data)
    elif isinstance(data, AsyncIterable):
        async for piece in data:
            yield piece
    else:
        for piece in data:
            yield piece


def _data_crc(reply: bytes, start: int, end: int) -> int:
    """CRC32C of ``reply[start:end]`` (the data of a read reply: normally its tail, summed in
    place)."""
    if end == len(reply):
        return crc32c_tail(reply, start)
    return int(crc32c(reply[start:end]))


class AsyncChunkClient:
    """See the module docstring. Close it (``await client.close()``) when done."""

    def __init__(
        self,
        *,
        packet_size: int = DEFAULT_PACKET_SIZE,
        window: int = 16,
        ack_timeout_s: float = 60.0,
        call_timeout_s: float = 30.0,
        verify_reads: bool = True,
        signer: TokenSigner | None = None,
        tls: TlsSettings | None = None,
    ) -> None:
        self.signer = signer
        self.packet_size = packet_size
        self.window = window
        self.ack_timeout_s = ack_timeout_s
        self.call_timeout_s = call_timeout_s
        self.verify_reads = verify_reads
        self._channels = AsyncChannels(tls=tls)
        tune_malloc_for_client()

    async def close(self) -> None:
        await self._channels.close()

    def _token(
        self, given: bytes, block_id: int, gen: int, modes: Access, fence: tuple[str, int] = ("", 0)
    ) -> bytes:
        if given or self.signer is None:
            return given
        return self.signer.sign(block_id, gen, modes, *fence)

    async def __aenter__(self) -> AsyncChunkClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- writes ---------------------------------------------------------------------------------
    async def write_block(
        self,
        pipeline: Sequence[str | Target],
        block_id: int,
        gen: int,
        data: Data,
        shard_id: str,
        epoch: int,
        *,
        offset: int = 0,
        chunk_size: int = CHUNK_SIZE,
        packet_size: int | None = None,
        sync: bool = False,
        on_ack: Callable[[int], None] | None = None,
        token: bytes = b"",
    ) -> WriteResult:
        """Write ``data`` as replica ``blk_<block_id>_<gen>`` through ``pipeline`` (the first
        node, then the nodes it forwards to) and finalize it on every node. ``offset`` > 0
        continues the nodes' existing replicas (pipeline recovery: ``data`` is then the rest of
        the block from ``offset``). ``sync`` fsyncs the last packet before its ack (the servers
        fsync on finalize anyway unless told not to). ``on_ack(length)`` is called on the
        event loop after each acknowledged packet (progress: every node holds ``length``
        bytes)."""
        targets = targets_of(pipeline)
        token = self._token(token, block_id, gen, Access.WRITE, (shard_id, epoch))
        tracker = AckTracker(block_id, gen, targets, offset)
        packets = Packetizer(packet_size or self.packet_size, chunk_size, offset, sync_last=sync)
        header = header_request(
            block_id,
            gen,
            shard_id,
            epoch,
            targets[1:],
            chunk_size=chunk_size,
            offset=offset,
            token=token,
        )
        call = self._channels.write_block(targets[0].address)(metadata=request_metadata())
        window = asyncio.Semaphore(self.window)
        set_up = asyncio.Event()

        async def send() -> None:
            await call.write(header.SerializeToString())
            # no packet before every node accepted the header: a write racing the end of a
            # refused call would replace the call's status with grpc.aio's INTERNAL
            await set_up.wait()
            source = _pieces(data).__aiter__()
            while True:
                try:
                    piece = await source.__anext__()
                except StopAsyncIteration:
                    break
                except Exception as exc:
                    raise _SourceError() from exc
                for req in packets.feed(piece):
                    await window.acquire()
                    await call.write(req)
            await window.acquire()
            await call.write(packets.finish())
            await call.done_writing()

        sender = asyncio.create_task(send())
        try:
            while not tracker.done:
                reading = asyncio.ensure_future(call.read())
                waiting: set[asyncio.Future[Any]] = {reading}
                if not sender.done():
                    waiting.add(sender)
                done, _ = await asyncio.wait(
                    waiting, timeout=self.ack_timeout_s, return_when=asyncio.FIRST_COMPLETED
                )
                if sender in done and isinstance(sender.exception(), _SourceError):
                    reading.cancel()
                    cause = sender.exception().__cause__  # type: ignore[union-attr]
                    assert cause is not None
                    raise cause
                if not done:
                    reading.cancel()
                    tracker.on_error(TimeoutError())
                    break
                if reading not in done:
                    await asyncio.wait({reading}, timeout=self.ack_timeout_s)
                    if not reading.done():
                        reading.cancel()
                        tracker.on_error(TimeoutError())
                        break
                try:
                    ack = reading.result()
                except (grpc.RpcError, asyncio.InvalidStateError) as exc:
                    tracker.on_error(exc)
                    break
                if ack is grpc.aio.EOF:
                    tracker.on_end()
                else:
                    over = tracker.on_ack(ack)
                    if tracker.set_up:
                        set_up.set()
                    if ack.seqno > 0 and not ack.failed:
                        window.release()
                        if on_ack is not None:
                            on_ack(tracker.acked_length)
                    if over:
                        break
        finally:
            if not sender.done():
                sender.cancel()
            call.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        return tracker.outcome()

    # -- reads ----------------------------------------------------------------------------------
    async def iter_block(
        self,
        address: str,
        block_id: int,
        gen: int,
        offset: int = 0,
        length: int | None = None,
        *,
        token: bytes = b"",
    ) -> AsyncGenerator[bytes, None]:
        """Bytes ``[offset, offset + length)`` of ``blk_<block_id>_<gen>`` at ``address``, in
        pieces (``length`` None: to the end; a range past the end is cut there). ``token``:
        the READ token a master signed for the block."""
        views = self.iter_block_views(address, block_id, gen, offset, length, token=token)
        try:
            async for view in views:
                yield bytes(view)
        finally:
            await views.aclose()

    async def iter_block_views(
        self,
        address: str,
        block_id: int,
        gen: int,
        offset: int = 0,
        length: int | None = None,
        *,
        token: bytes = b"",
    ) -> AsyncGenerator[memoryview, None]:
        """:meth:`iter_block` without a copy: each piece is a read-only view of the reply
        message that carried it (checked like every piece: its CRC32C is taken over the
        message in place, ``crc32c_tail``). For a reader that joins pieces anyway: one copy
        (the join) instead of two."""
        if length == 0:
            return
        token = self._token(token, block_id, gen, Access.READ)
        req = pb.ReadRequest(
            block_id=block_id, gen=gen, offset=offset, length=length or 0, token=token
        )
        call = self._channels.read_block(address)(req, metadata=request_metadata())
        position = offset
        try:
            while True:
                try:
                    reply = await asyncio.wait_for(call.read(), self.ack_timeout_s)
                except (grpc.RpcError, TimeoutError) as exc:
                    raise error_of(exc, address) from None
                if reply is grpc.aio.EOF:
                    return
                at, start, end, crc = read_response_fields(reply)
                if at != position or (self.verify_reads and _data_crc(reply, start, end) != crc):
                    raise ChecksumMismatch(
                        block_id, position, f"read reply from {address} failed its check"
                    )
                position += end - start
                yield memoryview(reply)[start:end]
        finally:
            call.cancel()

    async def read_block(
        self,
        address: str,
        block_id: int,
        gen: int,
        offset: int = 0,
        length: int | None = None,
        *,
        token: bytes = b"",
    ) -> bytes:
        """:meth:`iter_block`, joined."""
        blocks = self.iter_block_views(address, block_id, gen, offset, length, token=token)
        parts = [p async for p in blocks]
        return b"".join(parts)

    async def block_checksum(
        self, address: str, block_id: int, gen: int, length: int, *, token: bytes = b""
    ) -> BlockDigest:
        """The digest of bytes ``[0, length)`` of ``blk_<block_id>_<gen>`` at ``address`` (MD5
        of its chunks' CRC32Cs and their combined CRC32C, from the sidecar:
        ``keelfs.datapath.file_checksum``)."""
        token = self._token(token, block_id, gen, Access.READ)
        request = pb.BlockChecksumRequest(block_id=block_id, gen=gen, length=length, token=token)
        reply = await self._unary(address, "BlockChecksum", request)
        return BlockDigest(reply.bytes_per_crc, reply.crc_count, reply.md5, reply.crc32c, length)

    # -- reports and commands -------------------------------------------------------------------
    async def _unary(self, address: str, method: str, request: Any) -> Any:
        stub = self._channels.stub(address)
        try:
            return await getattr(stub, method)(
                request, timeout=self.call_timeout_s, metadata=request_metadata()
            )
        except grpc.RpcError as exc:
            raise error_of(exc, address) from None

    async def block_info(self, address: str, block_id: int) -> list[ReplicaInfo]:
        """The replicas of ``block_id`` at ``address`` (raises ``NotFound`` when none)."""
        reply = await self._unary(address, "BlockInfo", pb.BlockInfoRequest(block_id=block_id))
        return [replica_from_pb(r) for r in reply.replicas]

    async def list_blocks(self, address: str) -> list[ReplicaInfo]:
        call = self._channels.stub(address).ListBlocks(
            pb.ListBlocksRequest(), timeout=self.call_timeout_s, metadata=request_metadata()
        )
        out: list[ReplicaInfo] = []
        try:
            async for batch in call:
                out.extend(replica_from_pb(r) for r in batch.replicas)
        except grpc.RpcError as exc:
            raise error_of(exc, address) from None
        return out

    async def delete_blocks(
        self,
        address: str,
        blocks: Sequence[int | tuple[int, int]],
        shard_id: str,
        epoch: int,
        tokens: Sequence[bytes] = (),
    ) -> list[DeleteResult]:
        """Delete replicas: ``blocks`` holds block ids (any stamp) or ``(block_id, gen)``
        (only a replica stamped ``gen`` or older); ``tokens`` the DELETE token of each."""
        pairs = [(b, 0) if isinstance(b, int) else b for b in blocks]
        tokens = [*tokens, *[b""] * (len(pairs) - len(tokens))]
        tokens = [
            self._token(t, b, g, Access.DELETE, (shard_id, epoch))
            for t, (b, g) in zip(tokens, pairs, strict=False)
        ]
        refs = [
            pb.BlockRef(block_id=block_id, gen=gen, token=token)
            for (block_id, gen), token in zip(pairs, tokens, strict=False)
        ]
        req = pb.DeleteBlocksRequest(fence=pb.Fence(shard_id=shard_id, epoch=epoch), blocks=refs)
        reply = await self._unary(address, "DeleteBlocks", req)
        return [DeleteResult(r.block_id, _OUTCOME[r.outcome], r.gen) for r in reply.results]

    async def replicate_block(
        self,
        address: str,
        block_id: int,
        gen: int,
        targets: Sequence[str | Target],
        shard_id: str,
        epoch: int,
        *,
        timeout_s: float | None = None,
        token: bytes = b"",
    ) -> WriteResult:
        """Have the chunk server at ``address`` copy its finalized replica to ``targets``
        (``token``: REPLICATE | WRITE, with the fence)."""
        modes = Access.REPLICATE | Access.WRITE
        req = pb.ReplicateBlockRequest(
            token=self._token(token, block_id, gen, modes, (shard_id, epoch)),
            fence=pb.Fence(shard_id=shard_id, epoch=epoch),
            block_id=block_id,
            gen=gen,
            targets=[t.to_pb() for t in targets_of(targets)],
        )
        stub = self._channels.stub(address)
        try:
            reply = await stub.ReplicateBlock(req, timeout=timeout_s, metadata=request_metadata())
        except grpc.RpcError as exc:
            raise error_of(exc, address) from None
        nodes = tuple(NodeResult.from_pb(n) for n in reply.nodes)
        return WriteResult(block_id, gen, reply.length, True, nodes)

    async def server_info(self, address: str) -> ServerStatus:
        return ServerStatus.from_pb(
            await self._unary(address, "ServerInfo", pb.ServerInfoRequest())
        )


class ChunkClient:
    """The synchronous twin of :class:`AsyncChunkClient` (same options, same methods). It runs
    the asyncio client on a private event-loop thread; thread-safe. ``close()`` when done."""

    def __init__(self, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="keelfs-chunk-client", daemon=True
        )
        self._thread.start()
        self._aio: AsyncChunkClient = self._run(self._make(options))

    @staticmethod
    async def _make(options: dict[str, Any]) -> AsyncChunkClient:
        return AsyncChunkClient(**options)  # grpc.aio objects must be made on their loop

    def _run(self, coro: Awaitable[T]) -> T:
        if self._loop.is_closed():
            raise Unavailable("the chunk client is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()  # type: ignore[arg-type]

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self._aio.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> ChunkClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write_block(
        self,
        pipeline: Sequence[str | Target],
        block_id: int,
        gen: int,
        data: Iterable[bytes] | bytes,
        shard_id: str,
        epoch: int,
        **options: Any,
    ) -> WriteResult:
        return self._run(
            self._aio.write_block(pipeline, block_id, gen, data, shard_id, epoch, **options)
        )

    def iter_block(
        self,
        address: str,
        block_id: int,
        gen: int,
        offset: int = 0,
        length: int | None = None,
        *,
        token: bytes = b"",
    ) -> Iterator[bytes]:
        pieces = self._aio.iter_block(address, block_id, gen, offset, length, token=token)
        try:
            while True:
                try:
                    yield self._run(pieces.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            if not self._loop.is_closed():
                self._run(pieces.aclose())

    def read_block(
        self,
        address: str,
        block_id: int,
        gen: int,
        offset: int = 0,
        length: int | None = None,
        *,
        token: bytes = b"",
    ) -> bytes:
        return self._run(self._aio.read_block(address, block_id, gen, offset, length, token=token))

    def block_checksum(
        self, address: str, block_id: int, gen: int, length: int, *, token: bytes = b""
    ) -> BlockDigest:
        return self._run(self._aio.block_checksum(address, block_id, gen, length, token=token))

    def block_info(self, address: str, block_id: int) -> list[ReplicaInfo]:
        return self._run(self._aio.block_info(address, block_id))

    def list_blocks(self, address: str) -> list[ReplicaInfo]:
        return self._run(self._aio.list_blocks(address))

    def delete_blocks(
        self,
        address: str,
        blocks: Sequence[int | tuple[int, int]],
        shard_id: str,
        epoch: int,
        tokens: Sequence[bytes] = (),
    ) -> list[DeleteResult]:
        return self._run(self._aio.delete_blocks(address, blocks, shard_id, epoch, tokens))

    def replicate_block(
        self,
        address: str,
        block_id: int,
        gen: int,
        targets: Sequence[str | Target],
        shard_id: str,
        epoch: int,
        *,
        timeout_s: float | None = None,
        token: bytes = b"",
    ) -> WriteResult:
        return self._run(
            self._aio.replicate_block(
                address, block_id, gen, targets, shard_id, epoch, timeout_s=timeout_s, token=token
            )
        )

    def server_info(self, address: str) -> ServerStatus:
        return self._run(self._aio.server_info(address))


def write_block(
    pipeline: Sequence[str | Target],
    block_id: int,
    gen: int,
    data_iter: Iterable[bytes] | bytes,
    shard: str,
    epoch: int,
    **options: Any,
) -> WriteResult:
    """One write with a throw-away :class:`ChunkClient` (see ``AsyncChunkClient.write_block``)."""
    with ChunkClient() as client:
        return client.write_block(pipeline, block_id, gen, data_iter, shard, epoch, **options)


def read_block(
    address: str,
    block_id: int,
    gen: int,
    offset: int = 0,
    length: int | None = None,
    *,
    token: bytes = b"",
) -> bytes:
    """One read with a throw-away :class:`ChunkClient` (``token``: READ, see ``iter_block``)."""
    with ChunkClient() as client:
        return client.read_block(address, block_id, gen, offset, length, token=token)
