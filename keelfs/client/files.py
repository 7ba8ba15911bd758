"""File data: the writer and reader behind ``Client.open`` / ``AsyncClient.open``.

::

    with fs.open("/data/log", "wb", block_size=8 << 20) as f:   # Client (synchronous)
        f.write(b"...")
    with fs.open("/data/log", "rb") as f:
        f.seek(100)
        head = f.read(10)

    async with await afs.open("/data/log", "wb") as f:            # AsyncClient
        await f.write(b"...")

Writing (:class:`AsyncFileWriter`; :class:`FileWriter` is its ``io`` twin)
-------------------------------------------------------------------------
``Create`` gives the client's session the file's writer lease; every later metadata call of the
writer (``AllocateBlock``, ``RecoverPipeline``, ``RenewLease``, ``Complete``) uses that session
(``Op.pin_session``). The file is written a block at a time: the first byte of a block
allocates it (``AllocateBlock`` with the previous block's final length) and opens its pipeline
(``keelfs.datapath.client.AsyncChunkClient.write_block``), which streams the bytes as they are
written, packet by packet, while the caller goes on writing. A block is finished when it is
full (its last packet finalizes every replica) before the next one starts. The current block's
bytes stay in memory until every node has finalized it, so a writer holds at most one block
plus the pieces of one ``write`` call (the synchronous twin adds one packet of its own).

A broken pipeline (``PipelineBroken``: a chunk server died, a checksum failed at a hop, a node
stopped answering) is repaired at once, while the caller keeps writing: ``RecoverPipeline``
with the survivors (``keep``) and the failed nodes (``exclude``) gives a new generation stamp
and a pipeline. When that pipeline is exactly survivors, their replicas are continued from the
length every node acknowledged (``offset``); when it has fresh servers (which hold nothing), the
block is re-sent from its start under the new stamp, so that it has its full replication again
at once. A refusal of the pipeline's header (``Fenced`` after a shard leader change,
``StaleGeneration``, ...) is repaired the same way, with a fresh stamp and epoch; a first node
that has no room for the block (``ResourceExhausted``: its disk reservation) is excluded as a
failed one is, so that another server takes its place. After
``max_recoveries`` failed attempts for one block the write fails (the writer is then broken:
every call raises; the file stays under construction until its lease expires and the masters
recover it).

Chunk servers need no master in the middle of a block: a write in progress goes on while the
shard's leader fails over; only ``AllocateBlock``, ``RecoverPipeline`` and ``Complete`` need a
leader, and the client core retries them through ``NOT_LEADER`` and ``UNAVAILABLE``
(exactly-once: they carry the lease session's sequence numbers).

``close()`` finishes the last block and sends ``Complete`` with its final length; the masters
answer ``UNAVAILABLE`` ("replicas") until the chunk servers have reported the minimum number of
replicas, and the client core retries that within the deadline. While a writer is open it
renews its lease in the background every ``lease_renew_s`` (a third of the masters' default
lease TTL).

Durability:

- ``flush()`` hands buffered bytes to the pipeline; it does not wait.
- ``hflush()``: every byte written so far is acknowledged by every node of the pipeline and
  visible to readers. The chunk protocol carries whole checksum chunks except in a block's last
  packet, so ``hflush`` ends the current block there (every replica is finalized at its current
  length) and allocates the next one, which records the length on the masters: a reader that
  opens the file afterwards sees those bytes. Each ``hflush`` therefore costs a (short) block.
  At an exact block boundary the full block is already finalized, and ``hflush`` allocates
  the next block only to record its length; with nothing written since the last ``hflush``
  it does nothing.
- ``fsync=True`` (``open``): each block's last packet is fsynced on every node before its ack
  (``write_block(sync=True)``), so a closed file survives a power loss of every chunk server.
  Chunk servers fsync finalized replicas anyway unless run with ``--no-fsync-on-close``.

Small files: data inline in the metadata record
-----------------------------------------------
A file of at most ``MAX_INLINE_BYTES`` (64 KiB, ``keelfs.meta.records``) written whole keeps
its bytes in its metadata record instead of in a block: one Raft write of the shard, fsynced
on a majority of its masters before the reply (the durability of every metadata write, and
at least that of ``fsync=True``), no chunk server involved. Which calls do it:

- ``write_bytes`` and ``put`` (so ``keelfs put`` and fsspec's ``pipe``) of at most the limit:
  ``CreateInline``, one RPC that creates the file complete with its data; nothing is under
  construction at any moment and no lease is taken. Larger ones take the block path below.
- ``open(path, "wb")`` keeps its semantics: ``Create`` at open (the writer lease; the file
  is visible, under construction and empty, as before). The writer holds back the first
  bytes instead of allocating a block at the first byte; closing it with at most the limit
  written, no ``hflush`` made, sends them with the close (``Complete`` with ``inline_data``:
  two Raft writes in all, no pipeline). The first write past the limit, or an ``hflush``,
  allocates the first block and streams what was held back: from then on it is the block
  path, byte for byte what it was.

An inline file has no blocks (``stat`` shows its length and ``blocks == ()``); overwrite,
delete and rename are unchanged. A reader gets its bytes with ``GetFileInfo`` (the masters
send them only to a reader with ``READ``, never in listings) and calls no chunk server.

Reading (:class:`AsyncFileReader`; :class:`FileReader`)
-------------------------------------------------------
``open(path, "rb")`` fetches the file's blocks with their replica locations (``GetFileInfo``,
nearest first). Reads stream byte ranges of each block from its first location; the chunk
client verifies every reply's CRC32C (and the chunk server checks the stored checksums). On any
failure the read goes on from the same byte on the next replica; a replica that failed a
checksum (``ChecksumMismatch``, ``CorruptReplica``) is reported to the shard
(``ReportBadReplica``, in the background). When every replica of a block failed, the locations
are fetched again once (the masters may have re-replicated it meanwhile); after that the read
raises the last error. Reads need no master once the file is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from keelfs.client import _ops as ops
from keelfs.datapath.client import AsyncChunkClient
from keelfs.datapath.memory import join_fresh
from keelfs.datapath.protocol import DEFAULT_PACKET_SIZE, Target, WriteResult
from keelfs.errors import (
    ChecksumMismatch,
    CorruptReplica,
    InvalidArgument,
    IsADirectory,
    KeelError,
    LeaseConflict,
    PipelineBroken,
    ResourceExhausted,
    Unavailable,
)
from keelfs.meta.namespace import DEFAULT_LEASE_TTL_MS
from keelfs.meta.records import MAX_INLINE_BYTES, FileInfo
from keelfs.rpc.pb import meta_pb2 as pb
from keelfs.rpc.wire import file_info_from_pb

if TYPE_CHECKING:
    from keelfs.client.aio import AsyncClient

__all__ = [
    "MAX_INLINE_BYTES",
    "AsyncFileReader",
    "AsyncFileWriter",
    "Progress",
]

log = logging.getLogger(__name__)

_REFETCHES = 6
"""Location lookups a read makes for one block before it gives up (about 3 s in all)."""
T = TypeVar("T")

Progress = Callable[[int], None]
"""``progress(done)``: bytes transferred so far (``put``/``get``)."""

LEASE_RENEW_S = DEFAULT_LEASE_TTL_MS / 3000
MAX_RECOVERIES = 8
"""Pipeline attempts of one block before the write fails."""
MAX_UNACKED = 16 * DEFAULT_PACKET_SIZE
"""Bytes of the current block written but not yet acknowledged by every node before ``write``
waits (the pipeline's window)."""
TRANSFER_PIECE = 4 << 20
"""Bytes per piece of ``put``/``get``/``read_bytes``."""
_READ_MODES = ("r", "rb")
_WRITE_MODES = ("w", "wb")
_APPEND_MODES = ("a", "ab")


def check_mode(mode: str) -> bool:
    """True for a write or append mode, False for a read mode (binary only)."""
    if mode in _READ_MODES:
        return False
    if mode in _WRITE_MODES or mode in _APPEND_MODES:
        return True
    raise InvalidArgument(f"mode {mode!r}: use 'rb', 'wb' or 'ab' (files are binary)", "mode")


def is_append(mode: str) -> bool:
    return mode in _APPEND_MODES


# -- writing ------------------------------------------------------------------------------------
@dataclass(eq=False)
class _Block:
    """The block being written: its identity, pipeline and every byte written to it so far."""

    block_id: int
    gen: int
    shard: str
    epoch: int
    pipeline: list[Target]
    start: int
    """Its offset in the file."""
    token: bytes = b""
    """The WRITE token the master signed for this stamp (every node of the pipeline checks it)."""
    pieces: list[bytes] = field(default_factory=list)
    size: int = 0
    sealed: bool = False
    """No more bytes come: the attempt's last packet finalizes the replicas."""
    acked: int = 0
    """Bytes every node of the current attempt's pipeline acknowledged."""
    attempts: int = 0
    task: asyncio.Task[WriteResult] | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when bytes are added, the block is sealed or an ack arrives."""

    def servers(self) -> dict[str, str]:
        return {t.address: t.server_id for t in self.pipeline}

    async def source(self, at: int) -> AsyncIterator[bytes]:
        """Bytes ``[at, ...)`` of the block as they are written, until it is sealed."""
        i, skip = 0, at
        while i < len(self.pieces) and skip >= len(self.pieces[i]):
            skip -= len(self.pieces[i])
            i += 1
        while True:
            while i < len(self.pieces):
                piece = self.pieces[i]
                i += 1
                if skip:
                    piece, skip = piece[skip:], 0
                if piece:
                    yield piece
            if self.sealed:
                return
            self.changed.clear()
            await self.changed.wait()


class AsyncFileWriter:
    """A file being written (see the module docstring). Make it with ``AsyncClient.open``."""

    def __init__(
        self,
        fs: AsyncClient,
        chunks: AsyncChunkClient,
        path: str,
        *,
        group: str,
        session_id: int,
        block_size: int,
        fsync: bool = False,
        lease_renew_s: float = LEASE_RENEW_S,
        max_recoveries: int = MAX_RECOVERIES,
        max_unacked: int = MAX_UNACKED,
        on_ack: Progress | None = None,
        inline_limit: int = MAX_INLINE_BYTES,
    ) -> None:
        self.path = path
        self.group = group
        self.session_id = session_id
        self.block_size = block_size
        self.fsync = fsync
        self.max_recoveries = max_recoveries
        self.max_unacked = max_unacked
        self.on_ack = on_ack
        """Called (on the event loop) with the bytes of the file every node acknowledged."""
        self.recoveries = 0
        """Pipeline recoveries so far (all blocks)."""
        self.resumed = 0
        """Recoveries that continued the survivors' replicas (the others re-sent the block)."""
        self._failed_servers: set[str] = set()
        """Chunk servers that failed in this writer's pipelines: not asked for again (the
        masters take a while to declare a dead server dead)."""
        self._acked_before = 0
        """Bytes of the finished blocks."""
        self._fs = fs
        self._chunks = chunks
        self._position = 0
        self._block: _Block | None = None
        self._last_length: int | None = None
        """Final length of the last finished block (None: no block yet)."""
        self._closed = False
        self._broken: BaseException | None = None
        self._inline_limit = min(inline_limit, MAX_INLINE_BYTES)
        self._held: bytearray | None = bytearray() if self._inline_limit > 0 else None
        """The bytes held back while the file may still close inline (None: it may not, a
        block has been or is being written; see the module docstring)."""
        self._renewer = (
            asyncio.create_task(self._renew(lease_renew_s)) if lease_renew_s > 0 else None
        )

    # -- the io-like surface --------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    def tell(self) -> int:
        return self._position

    @property
    def acked(self) -> int:
        """Bytes of the file every node of the pipeline acknowledged so far."""
        block = self._block
        return block.start + block.acked if block is not None else self._acked_before

    @property
    def pipeline(self) -> list[Target]:
        """The current block's pipeline (empty between blocks): for tests and tools."""
        return list(self._block.pipeline) if self._block is not None else []

    async def write(self, data: bytes | bytearray | memoryview) -> int:
        """Append ``data``; returns its length. Waits while the pipeline is behind by more
        than ``max_unacked`` bytes, and at each block's end until the block is finalized."""
        self._check_usable()
        view = memoryview(data).cast("B")
        n = len(view)
        held = self._held
        if held is not None:
            if len(held) + n <= self._inline_limit:
                held += view
                self._position += n
                return n
            self._held = None  # past the limit: the block path, from the first byte
            if held:
                self._position -= len(held)
                await self._write_blocks(memoryview(held))
        await self._write_blocks(view)
        return n

    async def _write_blocks(self, view: memoryview) -> None:
        n, off = len(view), 0
        try:
            while off < n:
                if self._block is None:
                    await self._start_block()
                block = self._block
                assert block is not None
                take = min(n - off, self.block_size - block.size)
                block.pieces.append(bytes(view[off : off + take]))
                block.size += take
                block.changed.set()
                off += take
                self._position += take
                if block.size >= self.block_size:
                    await self._finish_block()
                else:
                    await self._keep_up(block)
        except BaseException as exc:
            self._break(exc)
            raise

    async def flush(self) -> None:
        """Bytes written are already handed to the pipeline: nothing to do."""
        self._check_usable()

    async def hflush(self) -> None:
        """Wait until every byte written so far is finalized on every node of the pipeline
        and recorded on the masters (see the module docstring).

        A block is finished by the write that fills it, but its length reaches the masters
        only with the next ``AllocateBlock`` (or ``Complete``): when the last write ended
        exactly at a block's end, there is no current block, and the next one is allocated
        here all the same, or readers would see that block as empty."""
        self._check_usable()
        held, self._held = self._held, None  # what is visible is in blocks from now on
        if held:
            self._position -= len(held)
            await self._write_blocks(memoryview(held))
        try:
            if self._block is not None and self._block.size > 0:
                await self._finish_block()
            if self._block is None and self._last_length is not None:
                await self._start_block()
        except BaseException as exc:
            self._break(exc)
            raise

    async def close(self) -> None:
        """Finish the last block and close the file (``Complete``). A broken writer is
        only aborted: its file stays under construction until the masters recover it."""
        if self._closed:
            return
        if self._broken is not None:
            await self.abort()
            return
        try:
            if self._block is not None:
                await self._finish_block()
            if self._held:  # never past the limit: the bytes go with the close
                op = ops.complete(self.path, self.session_id, inline_data=bytes(self._held))
            else:
                op = ops.complete(self.path, self.session_id, self._last_length)
            await self._fs._run(op, None)
            self._fs._core.writers.pop(self.path, None)
        except BaseException as exc:
            self._break(exc)
            await self.abort()
            raise
        finally:
            self._closed = True
            self._fs.open_writers.discard(self)
            await self._stop_renewer()

    async def abort(self) -> None:
        """Stop writing without closing the file (its lease lapses; the masters recover it)."""
        self._closed = True
        self._held = None
        self._fs.open_writers.discard(self)
        block, self._block = self._block, None
        if block is not None and block.task is not None and not block.task.done():
            block.task.cancel()
            await asyncio.gather(block.task, return_exceptions=True)
        await self._stop_renewer()

    async def __aenter__(self) -> AsyncFileWriter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- blocks ---------------------------------------------------------------------------------
    def _check_usable(self) -> None:
        if self._broken is not None:
            raise Unavailable(
                "writer broken", message=f"{self.path}: an earlier write failed: {self._broken}"
            )
        if self._closed:
            raise ValueError("I/O operation on closed file")

    def _break(self, exc: BaseException) -> None:
        """The writer cannot go on: later calls raise, and its lease is no longer renewed
        (it lapses, and the masters recover the file)."""
        if self._broken is None:
            self._broken = exc
        if self._renewer is not None and self._renewer is not asyncio.current_task():
            self._renewer.cancel()

    async def _start_block(self) -> None:
        exclude = sorted(self._failed_servers)
        op = ops.allocate_block(self.path, self._last_length, exclude, self.session_id)
        reply = await self._fs._run(op, None)
        self._block = _Block(
            block_id=reply.block.block_id,
            gen=reply.block.gen_stamp,
            shard=reply.shard,
            epoch=reply.epoch,
            pipeline=_targets(reply.block.locations),
            start=self._position,
            token=reply.block.token,
        )
        self._attempt(self._block, 0)

    def _attempt(self, block: _Block, offset: int) -> None:
        """Start writing ``block`` through its pipeline from ``offset``."""
        block.attempts += 1
        block.acked = offset

        def acked(length: int) -> None:
            block.acked = length
            block.changed.set()
            if self.on_ack is not None:
                self.on_ack(block.start + length)

        block.task = asyncio.create_task(
            self._chunks.write_block(
                block.pipeline,
                block.block_id,
                block.gen,
                block.source(offset),
                block.shard,
                block.epoch,
                offset=offset,
                sync=self.fsync,
                on_ack=acked,
                token=block.token,
            )
        )
        block.task.add_done_callback(lambda _: block.changed.set())

    async def _keep_up(self, block: _Block) -> None:
        """Let the pipeline run; repair it if it broke; wait while it is far behind."""
        await asyncio.sleep(0)
        while True:
            task = block.task
            assert task is not None
            if task.done():
                if task.cancelled() or task.exception() is None:
                    return  # (cannot finish before the block is sealed)
                await self._recover(block, task.exception())  # type: ignore[arg-type]
                continue
            if block.size - block.acked <= self.max_unacked:
                return
            block.changed.clear()
            await block.changed.wait()

    async def _finish_block(self) -> None:
        block = self._block
        assert block is not None
        block.sealed = True
        block.changed.set()
        while True:
            task = block.task
            assert task is not None
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                if not task.cancelled():
                    raise  # we are cancelled, not the write
                raise Unavailable(f"{self.path}: block {block.block_id}: write cancelled") from None
            except KeelError as exc:
                await self._recover(block, exc)
                continue
            break
        self._last_length = block.size
        self._acked_before = block.start + block.size
        self._block = None

    async def _recover(self, block: _Block, exc: BaseException) -> None:
        """A new stamp and pipeline for ``block`` after ``exc``, and the next attempt."""
        if not isinstance(exc, KeelError):
            raise exc
        if block.attempts >= self.max_recoveries:
            raise exc
        self.recoveries += 1
        ids = block.servers()
        if isinstance(exc, PipelineBroken) and exc.result is not None:
            keep = [n.server_id or ids.get(n.address, "") for n in exc.result.survivors]
            exclude = [n.server_id or ids.get(n.address, "") for n in exc.result.failed]
            acked = exc.acked_length
        elif isinstance(exc, ResourceExhausted) and block.pipeline:
            # the first node refused the block (its disk is down to its reservation): it is
            # left out as a failed one is, or the masters would hand it out again (a node
            # behind it refusing breaks the pipeline, and is failed, above)
            first, *rest = block.pipeline
            keep, exclude, acked = [t.server_id for t in rest], [first.server_id], 0
        else:  # the header was refused (a stale epoch or stamp, ...): the nodes are fine
            keep, exclude, acked = [t.server_id for t in block.pipeline], [], 0
        keep, exclude = [k for k in keep if k], [e for e in exclude if e]
        self._failed_servers.update(exclude)
        log.info(
            "%s: block %d: pipeline recovery %d after: %s (keep %s, exclude %s)",
            self.path,
            block.block_id,
            block.attempts,
            exc,
            keep,
            exclude,
        )
        if block.attempts > 1:
            await asyncio.sleep(min(1.0, 0.05 * 2**block.attempts))
        op = ops.recover_pipeline(self.path, block.block_id, keep, exclude, self.session_id)
        reply = await self._fs._run(op, None)
        block.gen = reply.block.gen_stamp
        block.shard, block.epoch = reply.shard, reply.epoch
        block.token = reply.block.token
        block.pipeline = _targets(reply.block.locations)
        fresh = [t for t in block.pipeline if t.server_id not in keep]
        if not fresh and acked:
            self.resumed += 1
        self._attempt(block, 0 if fresh else acked)

    async def _renew(self, every: float) -> None:
        """Renew the lease every ``every`` seconds until closed. A shard that answers "not
        renewed" no longer holds a lease of this session (it expired, or the file moved to
        another shard): it cannot come back, so the writer breaks (its next call says so)
        instead of renewing nothing for ever."""
        op = ops.renew_lease(self.group, self.session_id)
        while True:
            await asyncio.sleep(every)
            try:
                reply = await self._fs._run(op, every)
            except KeelError as exc:
                log.warning("%s: lease renewal failed: %s", self.path, exc)
                continue
            if not reply.renewed:
                log.warning("%s: the writer lease is gone; this writer stops", self.path)
                self._break(
                    LeaseConflict(
                        self.path,
                        "",
                        message=f"{self.path}: the writer lease was lost (expired, or the "
                        "file moved to another shard); write it again",
                    )
                )
                return

    async def _stop_renewer(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
            self._renewer = None


def _targets(locations: Any) -> list[Target]:
    return [Target(loc.address, loc.server_id) for loc in locations]


# -- reading ------------------------------------------------------------------------------------
@dataclass(eq=False)
class _Located:
    block_id: int
    gen: int
    length: int
    start: int
    locations: list[tuple[str, str]]
    """(server id, address), nearest first."""
    token: bytes = b""
    """The READ token the master signed (expired or missing: every replica refuses, and the
    reader asks for the locations, and a token, again)."""


def _located(info: pb.FileInfo) -> list[_Located]:
    out, start = [], 0
    for b in info.blocks:
        locations = [(loc.server_id, loc.address) for loc in b.locations]
        out.append(_Located(b.block_id, b.gen_stamp, b.length, start, locations, b.token))
        start += b.length
    return out


_EMPTY = memoryview(b"")


class AsyncFileReader:
    """A file opened for reading (see the module docstring). Make it with ``AsyncClient.open``."""

    def __init__(
        self, fs: AsyncClient, chunks: AsyncChunkClient, path: str, info: pb.FileInfo
    ) -> None:
        self.path = path
        self._fs = fs
        self._chunks = chunks
        self._blocks = _located(info)
        self._inline: bytes | None = info.inline_data if info.HasField("inline_data") else None
        """An inline file's content (it has no blocks: no chunk server is called)."""
        self.length = (
            len(self._inline) if self._inline is not None else sum(b.length for b in self._blocks)
        )
        self._position = 0
        self._closed = False
        self._reports: set[asyncio.Task[Any]] = set()
        self.bad_replicas: list[tuple[str, int, int]] = []
        """(server id, block id, gen stamp) of every replica this reader found corrupt."""
        self.failovers = 0
        """Reads that went on from another replica."""
        # the stream a sequential reader goes on with (see _sequential)
        self._stream: AsyncGenerator[memoryview, None] | None = None
        self._stream_at = -1
        self._leftover = _EMPTY
        self._reading = asyncio.Lock()  # one read at a time goes on with the stream

    @property
    def closed(self) -> bool:
        return self._closed

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            position = offset
        elif whence == os.SEEK_CUR:
            position = self._position + offset
        elif whence == os.SEEK_END:
            position = self.length + offset
        else:
            raise InvalidArgument(f"whence {whence}", "whence")
        if position < 0:
            raise InvalidArgument(f"negative position {position}", "offset")
        self._position = position
        return position

    async def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes from the current position (all the rest if negative)."""
        self._check_open()
        start = self._position
        end = self.length if size is None or size < 0 else min(self.length, start + size)
        if end <= start:
            return b""
        if self._inline is not None:
            self._position = end
            return self._inline[start:end]
        async with self._reading:
            parts = [piece async for piece in self._sequential(start, end)]
        self._position = end
        if len(parts) == 1:
            return bytes(parts[0])
        # a new buffer the caller keeps: on huge pages when large (datapath.memory)
        return join_fresh(parts, sum(len(p) for p in parts))

    async def _sequential(self, start: int, end: int) -> AsyncIterator[memoryview]:
        """Bytes ``[start, end)`` like :meth:`iter_range`, but from one stream per block that
        stays open between calls: a read that starts where the last one stopped goes on with
        it (no new call to the chunk server, and the server has been reading ahead meanwhile).
        Any other position drops it."""
        if start != self._stream_at:
            await self._drop_stream()
        position = start
        try:
            while position < end:
                if not self._leftover:
                    if self._stream is None:
                        self._stream = self._block_stream(position)
                        if self._stream is None:
                            break
                    try:
                        self._leftover = await anext(self._stream)
                    except StopAsyncIteration:
                        self._stream = None
                        continue
                piece, n = self._leftover, min(len(self._leftover), end - position)
                self._leftover = piece[n:] if n < len(piece) else _EMPTY
                position += n
                self._stream_at = position
                yield piece if n == len(piece) else piece[:n]
        except BaseException:
            await self._drop_stream()
            raise

    def _block_stream(self, position: int) -> AsyncGenerator[memoryview, None] | None:
        """The rest of the block holding byte ``position`` (None past the end)."""
        for index, b in enumerate(self._blocks):
            if b.start <= position < b.start + b.length:
                lo = position - b.start
                return self._block_range(index, lo, b.length - lo)
        return None

    async def _drop_stream(self) -> None:
        stream, self._stream = self._stream, None
        self._stream_at = -1
        self._leftover = _EMPTY
        if stream is not None:
            await stream.aclose()

    async def readinto(self, buffer: bytearray | memoryview) -> int:
        """Up to ``len(buffer)`` bytes from the current position into ``buffer``; how many.
        Each piece is copied from the received message straight into ``buffer`` (no result
        ``bytes`` in between: one copy, into memory the caller already has)."""
        self._check_open()
        into = memoryview(buffer).cast("B")
        start = self._position
        end = min(self.length, start + len(into))
        if end <= start:
            return 0
        if self._inline is not None:
            into[: end - start] = self._inline[start:end]
            self._position = end
            return end - start
        done = 0
        async with self._reading:
            async for piece in self._sequential(start, end):
                into[done : done + len(piece)] = piece
                done += len(piece)
        self._position = start + done
        return done

    async def iter_range(self, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes ``[start, end)`` of the file in pieces (as the chunk servers send them); does
        not move the position."""
        views = self.iter_views(start, end)
        try:
            async for view in views:
                yield bytes(view)
        finally:
            await views.aclose()

    async def iter_views(self, start: int, end: int) -> AsyncGenerator[memoryview, None]:
        """:meth:`iter_range` without a copy: read-only views of the received messages (for a
        caller that writes or joins them at once)."""
        self._check_open()
        end = min(end, self.length)
        if self._inline is not None:
            if start < end:
                yield memoryview(self._inline)[start:end]
            return
        for index, b in enumerate(self._blocks):
            if b.start + b.length <= start or b.length == 0:
                continue
            if b.start >= end:
                break
            lo = max(start, b.start) - b.start
            hi = min(end, b.start + b.length) - b.start
            async for piece in self._block_range(index, lo, hi - lo):
                yield piece

    async def _block_range(
        self, index: int, offset: int, length: int
    ) -> AsyncGenerator[memoryview, None]:
        b = self._blocks[index]
        failed: set[str] = set()
        refetches = 0
        last: KeelError | None = None
        while length > 0:
            candidates = [loc for loc in b.locations if loc[1] not in failed]
            if not candidates:
                # every replica failed, or none is known yet: a block just written (or
                # hflushed) is located once its servers' reports reach the masters, within a
                # heartbeat; ask again a few times before giving up
                if refetches == _REFETCHES:
                    raise last or Unavailable(
                        f"{self.path}: block {b.block_id} has no live replica"
                    )
                if refetches:
                    await asyncio.sleep(min(0.05 * 2**refetches, 1.0))
                refetches += 1
                await self._refetch()
                b = self._blocks[index]
                bad = {sid for sid, block_id, _ in self.bad_replicas if block_id == b.block_id}
                failed = {address for sid, address in b.locations if sid in bad}
                continue
            server_id, address = candidates[0]
            try:
                async for piece in self._chunks.iter_block_views(
                    address, b.block_id, b.gen, offset, length, token=b.token
                ):
                    offset += len(piece)
                    length -= len(piece)
                    yield piece
                if length > 0:
                    raise Unavailable(
                        f"{address}: replica of block {b.block_id} ended {length} bytes early"
                    )
            except KeelError as exc:
                last = exc
                failed.add(address)
                self.failovers += 1
                log.info("%s: block %d at %s: %s", self.path, b.block_id, address, exc)
                if isinstance(exc, ChecksumMismatch | CorruptReplica):
                    self._report(server_id, b, exc)

    def _report(self, server_id: str, b: _Located, exc: KeelError) -> None:
        self.bad_replicas.append((server_id, b.block_id, b.gen))
        op = ops.report_bad_replica(self.path, server_id, b.block_id, b.gen, str(exc))

        async def send() -> None:
            try:
                await self._fs._run(op, 5.0)
            except KeelError as err:
                log.warning("%s: could not report a bad replica: %s", self.path, err)

        task = asyncio.create_task(send())
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)

    async def _refetch(self) -> None:
        reply = await self._fs._run(ops.stat(self.path, False, read=True), None)
        fresh = {b.block_id: b for b in _located(reply.info)}
        for b in self._blocks:
            new = fresh.get(b.block_id)
            if new is not None:
                b.gen, b.locations, b.token = new.gen, new.locations, new.token

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("I/O operation on closed file")

    async def close(self) -> None:
        """Close; waits (briefly) for the bad-replica reports to go out."""
        self._closed = True
        await self._drop_stream()
        if self._reports:
            await asyncio.wait(set(self._reports), timeout=5.0)

    async def __aenter__(self) -> AsyncFileReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# -- the verbs, for AsyncClient -----------------------------------------------------------------
async def _info_to_read(fs: AsyncClient, path: str) -> pb.FileInfo:
    """What a reader of ``path`` starts from (an inline file's content with it)."""
    reply = await fs._run(ops.stat(path, False, read=True), None)
    if reply.info.kind == pb.DIRECTORY:
        raise IsADirectory(reply.info.path)
    info: pb.FileInfo = reply.info
    return info


async def open_reader(fs: AsyncClient, chunks: AsyncChunkClient, path: str) -> AsyncFileReader:
    info = await _info_to_read(fs, path)
    return AsyncFileReader(fs, chunks, info.path, info)


async def read_whole(fs: AsyncClient, chunks: Callable[[], AsyncChunkClient], path: str) -> bytes:
    """The whole content of ``path`` (``AsyncClient.read_bytes``): an inline file's straight
    from the reply that found it, with no reader made around it (what a reader would return:
    reading small files is mostly this); any other through a reader (``chunks()`` is called
    only then)."""
    info = await _info_to_read(fs, path)
    if info.HasField("inline_data"):
        return info.inline_data
    async with AsyncFileReader(fs, chunks(), info.path, info) as r:
        return await r.read()


async def open_writer(
    fs: AsyncClient,
    chunks: AsyncChunkClient,
    path: str,
    *,
    replication: int | None = None,
    block_size: int | None = None,
    overwrite: bool = False,
    fsync: bool = False,
    lease_renew_s: float = LEASE_RENEW_S,
    append: bool = False,
    inline: bool = True,
    mode: int | None = None,
) -> AsyncFileWriter:
    """``open(path, "wb")`` (``append``: ``"ab"``, ``open_appender``); ``inline``: False
    to write even a small file in blocks; ``mode``: the new file's permission bits (None:
    the cluster's default)."""
    if append:
        return await open_appender(fs, chunks, path, fsync=fsync, lease_renew_s=lease_renew_s)
    info = await fs.create(
        path,
        overwrite=overwrite,
        mode=mode,
        replication=replication or 0,
        block_size=block_size or 0,
    )
    group, session_id = fs._core.writers[info.path]
    writer = AsyncFileWriter(
        fs,
        chunks,
        info.path,
        group=group,
        session_id=session_id,
        block_size=info.block_size,
        fsync=fsync,
        lease_renew_s=lease_renew_s,
        inline_limit=MAX_INLINE_BYTES if inline else 0,
    )
    fs.open_writers.add(writer)
    return writer


async def concat_blocks_ready(
    fs: AsyncClient, chunks: AsyncChunkClient, target: str, sources: list[str]
) -> bool:
    """Before a retried ``Concat``, which the state machine refused for mixing files in
    blocks with inline ones: rewrite each inline source in blocks (the target's block size
    and replication; a source's content is unchanged, and it is removed by the concat
    anyway). False when there is nothing to rewrite (the refusal stands: an inline target,
    or no file in blocks at all)."""
    infos = [(await fs._run(ops.stat(p, False), None)).info for p in [target, *sources]]
    head, rest = infos[0], infos[1:]
    if not any(i.blocks for i in infos) or (not head.blocks and head.length):
        return False
    small = [i for i in rest if not i.blocks and i.length]
    for info in small:
        async with await open_reader(fs, chunks, info.path) as r:
            data = await r.read()
        w = await open_writer(
            fs,
            chunks,
            info.path,
            replication=head.replication,
            block_size=head.block_size,
            overwrite=True,
            inline=False,
        )
        try:
            await w.write(data)
        except BaseException:
            await w.abort()
            raise
        await w.close()
    return bool(small)


async def open_appender(
    fs: AsyncClient,
    chunks: AsyncChunkClient,
    path: str,
    *,
    fsync: bool = False,
    lease_renew_s: float = LEASE_RENEW_S,
) -> AsyncFileWriter:
    """``open(path, "ab")``: ``Append`` (the writer lease, as ``Create`` gives it), then a
    writer positioned at the file's end (``keelfs.meta.file_edits``). A file in blocks gets
    new blocks after its own. A file without blocks (inline, or empty) is written as a new
    one whose first bytes are its old content: it closes inline if the whole still fits,
    else they go into its first block (the record keeps them until that block is)."""
    reply = await fs._run(ops.append(path), None)
    info = file_info_from_pb(reply.info)
    fs._core.writers[info.path] = (reply.reply.group, info.lease_holder)
    held = b""
    if not info.blocks:
        try:
            current = await fs._run(ops.stat(info.path, False, read=True), None)
        except BaseException:
            await fs._run(ops.complete(info.path, info.lease_holder), None)  # as it was
            raise
        held = current.info.inline_data if current.info.HasField("inline_data") else b""
    writer = AsyncFileWriter(
        fs,
        chunks,
        info.path,
        group=reply.reply.group,
        session_id=info.lease_holder,
        block_size=info.block_size,
        fsync=fsync,
        lease_renew_s=lease_renew_s,
        inline_limit=0 if info.blocks else MAX_INLINE_BYTES,
    )
    writer._position = writer._acked_before = info.length
    if writer._held is not None:
        writer._held += held
    fs.open_writers.add(writer)
    return writer


async def finish_truncate(
    fs: AsyncClient, chunks: AsyncChunkClient, info: FileInfo, length: int
) -> None:
    """The rest of a truncate inside a block (``keelfs.meta.file_edits``): ``Truncate`` left
    ``info``'s file under construction with this client's lease; the kept bytes of the cut
    block are read and written as one new block, and ``Complete`` splices it in. On failure
    the writer is aborted: lease recovery then leaves the file as it was."""
    start = 0
    for block in info.blocks:
        if start + block.length > length:
            break
        start += block.length
    reader = await open_reader(fs, chunks, info.path)
    try:
        kept = b"".join([piece async for piece in reader.iter_range(start, length)])
    finally:
        await reader.close()
    writer = AsyncFileWriter(
        fs,
        chunks,
        info.path,
        group=fs._core.writers[info.path][0],
        session_id=info.lease_holder,
        block_size=info.block_size,
        inline_limit=0,
    )
    writer._position = writer._acked_before = start
    try:
        await writer.write(kept)
    except BaseException:
        await writer.abort()
        raise
    await writer.close()


async def write_inline(
    fs: AsyncClient,
    path: str,
    data: bytes,
    *,
    replication: int | None = None,
    block_size: int | None = None,
    overwrite: bool = False,
    mode: int | None = None,
) -> None:
    """Create file ``path`` complete, holding ``data`` (at most ``MAX_INLINE_BYTES``) in its
    metadata record: one ``CreateInline`` (see the module docstring); ``mode``: its
    permission bits (None: the cluster's default)."""
    op = ops.create_inline(path, data, overwrite, mode, "", "", replication or 0, block_size or 0)
    await fs._run(op, None)


async def put_async(
    fs: AsyncClient,
    chunks: AsyncChunkClient,
    local: str | os.PathLike[str],
    remote: str,
    progress: Progress | None,
    **options: Any,
) -> int:
    """Copy local file ``local`` to ``remote``; the bytes copied. A file of at most
    ``MAX_INLINE_BYTES`` goes inline (one ``CreateInline``). On failure the remote file
    is left under construction (aborted) and the error raised."""
    done = 0
    with open(local, "rb") as src:  # noqa: ASYNC230 (local reads go to a thread below)
        head = await asyncio.to_thread(src.read, MAX_INLINE_BYTES + 1)
        if len(head) <= MAX_INLINE_BYTES:
            inline = {k: v for k, v in options.items() if k != "fsync"}  # Raft fsyncs it
            await write_inline(fs, remote, head, **inline)
            if progress is not None:
                progress(len(head))
            return len(head)
        w = await open_writer(fs, chunks, remote, **options)
        try:
            piece = head
            while True:
                if not piece:
                    piece = await asyncio.to_thread(src.read, TRANSFER_PIECE)
                if not piece:
                    break
                await w.write(piece)
                done += len(piece)
                piece = b""
                if progress is not None:
                    progress(done)
        except BaseException:
            await w.abort()
            raise
        await w.close()
    return done


async def get_async(
    fs: AsyncClient,
    chunks: AsyncChunkClient,
    remote: str,
    local: str | os.PathLike[str],
    progress: Progress | None,
) -> int:
    """Copy ``remote`` to local file ``local`` (written as ``local.part`` and renamed into
    place when complete); the bytes copied."""
    r = await open_reader(fs, chunks, remote)
    part = f"{os.fspath(local)}.part"
    done = 0
    try:
        with open(part, "wb") as dst:  # noqa: ASYNC230
            gathered: list[memoryview] = []
            size = 0
            async for piece in r.iter_views(0, r.length):
                gathered.append(piece)
                size += len(piece)
                if size >= TRANSFER_PIECE or done + size == r.length:
                    await asyncio.to_thread(dst.write, b"".join(gathered))
                    done += size
                    gathered, size = [], 0
                    if progress is not None:
                        progress(done)
        os.replace(part, local)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(part)
        raise
    finally:
        await r.close()
    return done
