"""One node's part of a WriteBlock pipeline (the protocol is described in proto/chunk.proto).

For one stream, four asyncio tasks share a queue of :class:`_Pending` packets:

- the *receiver* reads packets from upstream, checks their framing and CRCs (so corrupt data
  goes no further, and the failure names the first node that received it), forwards each one
  downstream, and queues it for the disk and for the acker;
- the *disk* task writes them in order (``ReplicaWriter.write`` in a worker thread) and
  finalizes after the last one;
- the *downstream reader* matches the next node's acks to the packets;
- the *acker* (the RPC's own task) acknowledges each packet upstream once it is written here
  AND acknowledged downstream, in order.

At most ``window`` packets are between the receiver and the acker, which bounds the memory a
stream holds and pushes back on the writer through gRPC flow control.

Failures. If the downstream breaks (its call fails, it sends a failure ack, it stops acking for
``ack_timeout_s``) or this node fails (disk error, bad checksum, bad framing), the acker sends one
failure ack (the last packet every node acknowledged, and a NodeResult per node saying which
failed and why). The node then discards whatever upstream still sends until upstream closes
its side or cancels (at most ``ack_timeout_s``): ending the RPC under upstream's writes would
make grpc.aio report those writes' failure (INTERNAL) instead of the failure ack. The replica
here stays BEING_WRITTEN for pipeline recovery; when the stream breaks before any byte was
written, it is discarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from keelfs.chunk.fencing import EpochTable
from keelfs.chunk.store import BlockStore
from keelfs.chunk.writer import ReplicaWriter, check_packet
from keelfs.datapath.framing import RawPacket, decode_packet
from keelfs.datapath.protocol import Target
from keelfs.datapath.replica import check_block_id, check_gen
from keelfs.datapath.tokens import Access, TokenVerifier
from keelfs.datapath.wire import MAX_PACKET_BYTES, AsyncChannels, error_of, internal_error, pb
from keelfs.errors import InvalidArgument, KeelError, Unavailable
from keelfs.rpc.grpc_errors import encode_error
from keelfs.runtime.requests import request_metadata

__all__ = ["PipelineConfig", "WriteSpec", "serve_write"]

log = logging.getLogger("keelfs.chunk.pipeline")


@dataclass(frozen=True)
class PipelineConfig:
    ack_timeout_s: float = 60.0
    """Longest wait for the next node's setup ack or packet ack before declaring it failed."""
    window: int = 32
    """Packets received and not yet acknowledged, per stream."""
    fsync_on_close: bool = True


@dataclass(frozen=True)
class WriteSpec:
    """A checked ``WriteHeader``."""

    block_id: int
    gen: int
    shard_id: str
    epoch: int
    targets: tuple[Target, ...]
    chunk_size: int
    offset: int
    token: bytes = b""

    @classmethod
    def from_pb(cls, header: Any) -> WriteSpec:
        check_block_id(header.block_id)
        check_gen(header.gen)
        if not header.HasField("fence"):
            raise InvalidArgument("a write needs a fence (shard id and epoch)", "fence")
        targets = tuple(Target(t.address, t.server_id) for t in header.targets)
        if any(not t.address for t in targets):
            raise InvalidArgument("a pipeline target without an address", "targets")
        return cls(
            header.block_id,
            header.gen,
            header.fence.shard_id,
            header.fence.epoch,
            targets,
            header.chunk_size or 65536,
            header.offset,
            header.token,
        )

    def downstream_header(self) -> Any:
        """The header this node sends to the next one: the same, minus that node."""
        return pb.WriteRequest(
            header=pb.WriteHeader(
                block_id=self.block_id,
                gen=self.gen,
                fence=pb.Fence(shard_id=self.shard_id, epoch=self.epoch),
                targets=[t.to_pb() for t in self.targets[1:]],
                chunk_size=self.chunk_size,
                offset=self.offset,
                token=self.token,
            )
        )


_NOT_A_PACKET = RawPacket(0, 0, memoryview(b""), b"", False, False)


class _DownstreamFailed(Exception):
    """A packet's downstream ack will never come."""


class _Stopped(Exception):
    """A packet was not written because the downstream had failed."""


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    future.set_exception(exc)
    future.exception()  # retrieved: after a failure the acker stops looking at later packets


@dataclass(slots=True)
class _Pending:
    seqno: int
    end: int
    last: bool
    sync: bool
    data: memoryview | None
    crcs: bytes | None
    written: asyncio.Future[int]
    down: asyncio.Future[Any] | None = None


@dataclass
class _Stream:
    context: Any
    spec: WriteSpec
    writer: ReplicaWriter
    store: BlockStore
    me: Target
    channels: AsyncChannels
    config: PipelineConfig
    call: Any = None
    down_nodes: list[Any] = field(default_factory=list)
    """The downstream part of the failure ack, once the downstream failed."""
    down_failed: bool = False
    broken: bool = False
    """A failure ack was sent: the receiver discards what upstream still sends."""
    finalized: bool = False
    pending: asyncio.Queue[_Pending | None] = field(default_factory=asyncio.Queue)
    disk: asyncio.Queue[_Pending] = field(default_factory=asyncio.Queue)
    by_seqno: dict[int, _Pending] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.pending = asyncio.Queue(maxsize=self.config.window)

    # -- results ----------------------------------------------------------------------------
    def _me(self, error: KeelError | None = None) -> Any:
        if error is None:
            return pb.NodeResult(
                address=self.me.address,
                server_id=self.me.server_id,
                state=pb.NODE_OK,
                length=self.writer.length,
            )
        return pb.NodeResult(
            address=self.me.address,
            server_id=self.me.server_id,
            state=pb.NODE_FAILED,
            error=encode_error(error),
        )

    def _unknown(self, targets: Sequence[Target]) -> list[Any]:
        return [
            pb.NodeResult(address=t.address, server_id=t.server_id, state=pb.NODE_UNKNOWN)
            for t in targets
        ]

    def _fail_downstream(self, exc: BaseException | None, nodes: Sequence[Any] = ()) -> None:
        """The next node (or one behind it) failed: remember how, and release every packet
        waiting for its ack."""
        if self.down_failed:
            return
        self.down_failed = True
        if nodes:
            self.down_nodes = list(nodes)
        else:
            first = self.spec.targets[0]
            err = error_of(exc or Unavailable("stream ended"), first.address)
            self.down_nodes = [
                pb.NodeResult(
                    address=first.address,
                    server_id=first.server_id,
                    state=pb.NODE_FAILED,
                    error=encode_error(err),
                ),
                *self._unknown(self.spec.targets[1:]),
            ]
        for p in self.by_seqno.values():
            if p.down is not None and not p.down.done():
                _fail(p.down, _DownstreamFailed())
        log.warning(
            "block %d: downstream failed: %s",
            self.spec.block_id,
            [(n.address, n.state, n.error) for n in self.down_nodes],
        )

    async def _send_failure(self, seqno: int, length: int, mine: Any, rest: list[Any]) -> None:
        self.broken = True
        await self.context.write(
            pb.WriteAck(seqno=seqno, length=length, failed=True, nodes=[mine, *rest])
        )

    # -- set-up -----------------------------------------------------------------------------
    async def setup(self) -> bool:
        """Open the downstream and send the setup ack; False when the pipeline already broke."""
        if not self.spec.targets:
            await self.context.write(
                pb.WriteAck(seqno=0, length=self.spec.offset, nodes=[self._me()])
            )
            return True
        first = self.spec.targets[0]
        try:
            self.call = self.channels.write_block(first.address)(metadata=request_metadata())
            await self.call.write(self.spec.downstream_header().SerializeToString())
            ack = await asyncio.wait_for(self.call.read(), self.config.ack_timeout_s)
            if ack is grpc.aio.EOF:
                raise Unavailable(f"{first.address} ended the stream before its setup ack")
        except Exception as exc:
            self._fail_downstream(exc)
            await self._send_failure(0, self.spec.offset, self._me(), self.down_nodes)
            return False
        if ack.failed:
            self._fail_downstream(None, ack.nodes)
            await self._send_failure(0, self.spec.offset, self._me(), self.down_nodes)
            return False
        await self.context.write(
            pb.WriteAck(seqno=0, length=self.spec.offset, nodes=[self._me(), *ack.nodes])
        )
        return True

    # -- the four tasks ----------------------------------------------------------------------
    async def receive(self) -> None:
        seqno, offset = 1, self.spec.offset
        cs = self.spec.chunk_size
        loop = asyncio.get_running_loop()
        refused = False  # a packet was refused: read on until upstream closes, discarding
        while True:
            raw = await self.context.read()
            if raw is grpc.aio.EOF:
                if not (self.broken or refused):
                    await self.pending.put(None)
                return
            if self.broken or refused:
                continue
            error: KeelError | None = None
            try:
                p = decode_packet(raw) or _NOT_A_PACKET
            except InvalidArgument as exc:
                p, error = _NOT_A_PACKET, exc
            data, crcs = p.data, p.crcs
            if error is not None:
                pass
            elif p is _NOT_A_PACKET:
                error = InvalidArgument("expected a packet", "packet")
            elif p.seqno != seqno or p.offset != offset:
                error = InvalidArgument(
                    f"packet {p.seqno} at offset {p.offset}: expected {seqno} at {offset}",
                    "packet",
                )
            elif len(data) > MAX_PACKET_BYTES or (not p.last and (not data or len(data) % cs)):
                error = InvalidArgument(
                    f"packet {p.seqno} has {len(data)} bytes: at most {MAX_PACKET_BYTES}, a "
                    "whole number of chunks unless it is the last",
                    "packet",
                )
            else:
                try:
                    check_packet(self.spec.block_id, offset, data, crcs, cs)
                except KeelError as exc:
                    error = exc
            entry = _Pending(
                seqno, offset + len(data), p.last, p.sync, data, crcs, loop.create_future()
            )
            if error is not None:
                _fail(entry.written, error)
                await self.pending.put(entry)
                refused = True
                continue
            if self.call is not None:
                entry.down = loop.create_future()
                self.by_seqno[seqno] = entry
            await self.pending.put(entry)
            if self.broken:
                continue
            if self.call is not None and not self.down_failed:
                try:
                    await self.call.write(raw)  # the same bytes: a packet is the same at every hop
                except Exception as exc:
                    self._fail_downstream(exc)
            self.disk.put_nowait(entry)
            if p.last:
                return
            seqno, offset = seqno + 1, entry.end

    async def drain(self, receiver: asyncio.Task[None]) -> None:
        """After a failure ack: let the receiver discard upstream's messages until it closes."""
        if self.call is not None:
            self.call.cancel()  # unblocks a forward in progress
        while not self.pending.empty():  # unblocks a receiver waiting for room
            self.pending.get_nowait()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(receiver), self.config.ack_timeout_s)

    async def write_to_disk(self) -> None:
        failure: BaseException | None = None
        while True:
            entry = await self.disk.get()
            data, crcs = entry.data, entry.crcs
            entry.data = entry.crcs = None
            if failure is None and (self.down_failed or self.broken):
                # never write on, let alone finalize, once the pipeline broke: the replica
                # stays being-written for recovery (with at least what was acknowledged)
                failure = _Stopped()
            if failure is None:
                try:
                    assert data is not None and crcs is not None
                    length = await asyncio.to_thread(
                        self.writer.write, data, crcs, sync=entry.sync, verified=True
                    )
                    if entry.last:
                        await asyncio.to_thread(self.writer.finalize, self.config.fsync_on_close)
                except Exception as exc:
                    failure = exc
            if failure is None:
                entry.written.set_result(length)
            else:
                _fail(entry.written, failure)
            if entry.last:
                return

    async def read_downstream(self) -> None:
        try:
            while True:
                ack = await self.call.read()
                if ack is grpc.aio.EOF:
                    raise Unavailable(f"{self.spec.targets[0].address} ended the stream")
                if ack.failed:
                    self._fail_downstream(None, ack.nodes)
                    return
                entry = self.by_seqno.get(ack.seqno)
                if entry is None or entry.down is None or entry.down.done():
                    raise Unavailable(f"unexpected ack {ack.seqno} from downstream")
                entry.down.set_result(ack)
                if ack.finalized:
                    return
        except Exception as exc:
            self._fail_downstream(exc)

    async def acknowledge(self) -> None:
        acked_seqno, acked_length = 0, self.spec.offset
        timeout = self.config.ack_timeout_s
        while True:
            entry = await self.pending.get()
            if entry is None:
                return  # upstream closed its side without the last packet
            try:
                await entry.written
            except _Stopped:
                await self._send_failure(acked_seqno, acked_length, self._me(), self.down_nodes)
                return
            except Exception as exc:
                if isinstance(exc, KeelError):
                    err = exc
                    log.warning("block %d: %s", self.spec.block_id, exc)
                else:
                    err = internal_error(exc)
                    log.exception("block %d: local write failed", self.spec.block_id)
                await self._send_failure(
                    acked_seqno, acked_length, self._me(err), self._unknown(self.spec.targets)
                )
                return
            down_ack = None
            if entry.down is not None:
                try:
                    down_ack = await asyncio.wait_for(asyncio.shield(entry.down), timeout)
                except _DownstreamFailed:
                    pass
                except TimeoutError:
                    self._fail_downstream(
                        Unavailable(f"no ack from downstream within {timeout:.0f} s")
                    )
                if down_ack is None:
                    await self._send_failure(acked_seqno, acked_length, self._me(), self.down_nodes)
                    return
            ack = pb.WriteAck(seqno=entry.seqno, length=entry.end)
            if entry.last:
                ack.finalized = True
                ack.nodes.append(self._me())
                if down_ack is not None:
                    ack.nodes.extend(down_ack.nodes)
            await self.context.write(ack)
            self.by_seqno.pop(entry.seqno, None)
            acked_seqno, acked_length = entry.seqno, entry.end
            if entry.last:
                self.finalized = True
                return


async def serve_write(
    context: Any,
    *,
    store: BlockStore,
    epochs: EpochTable,
    tokens: TokenVerifier,
    me: Target,
    channels: AsyncChannels,
    config: PipelineConfig,
) -> None:
    """Serve one WriteBlock stream on a ``grpc.aio`` context (read/write API). Raises a
    ``KeelError`` when the header is refused (the caller aborts the RPC with it): its token
    must allow WRITE on the block at its stamp under its fence, checked before the fence
    touches the epoch table or anything is created."""
    raw = await context.read()
    if raw is grpc.aio.EOF:
        raise InvalidArgument("a WriteBlock stream starts with a header", "header")
    try:
        first = pb.WriteRequest.FromString(raw)
    except DecodeError:
        raise InvalidArgument("malformed header", "header") from None
    if first.WhichOneof("kind") != "header":
        raise InvalidArgument("a WriteBlock stream starts with a header", "header")
    spec = WriteSpec.from_pb(first.header)
    tokens.check(spec.token, spec.block_id, spec.gen, Access.WRITE, (spec.shard_id, spec.epoch))
    await epochs.admit_async(spec.shard_id, spec.epoch)
    writer = await asyncio.to_thread(
        store.create, spec.block_id, spec.gen, spec.shard_id, spec.chunk_size, spec.offset
    )
    stream = _Stream(context, spec, writer, store, me, channels, config)
    tasks: list[asyncio.Task[None]] = []
    try:
        if not await stream.setup():
            return  # nothing was sent after the header: no write to race the end
        receiver = asyncio.create_task(stream.receive())
        tasks.append(receiver)
        tasks.append(asyncio.create_task(stream.write_to_disk()))
        if stream.call is not None:
            tasks.append(asyncio.create_task(stream.read_downstream()))
        await stream.acknowledge()
        if stream.broken:
            await stream.drain(receiver)
    finally:
        for task in tasks:
            task.cancel()
        if stream.call is not None:
            stream.call.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*tasks, return_exceptions=True)
        if not stream.finalized:
            await asyncio.shield(asyncio.to_thread(_abandon, store, writer, spec.offset))


def _abandon(store: BlockStore, writer: ReplicaWriter, offset: int) -> None:
    if writer.length == 0 and offset == 0:
        store.discard(writer)
    else:
        writer.abandon()
