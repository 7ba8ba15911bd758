"""The gRPC handlers of ``keelfs.chunk.v1.ChunkServer`` (proto/chunk.proto).

Each handler translates: proto in, a call on the node's parts (store, pipeline, command
executor), proto out; a ``KeelError`` becomes the RPC's status and ``keelfs-error`` trailer
(``keelfs.datapath.wire.abort``), anything else is logged as a bug and answered ``INTERNAL``.

:func:`add_to_server` registers the handlers as the generated ``add_ChunkServerServicer_to_server``
would, except that WriteBlock's requests and ReadBlock's replies stay bytes, encoded and decoded
by ``keelfs.datapath.framing`` (the data path's messages never become protobuf objects).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import grpc

from keelfs.chunk.commands import DeleteBlocks, Fence, ReplicateBlock
from keelfs.chunk.pipeline import serve_write
from keelfs.chunk.reader import ReplicaReader
from keelfs.datapath.checksums import CHUNK_SIZE
from keelfs.datapath.file_checksum import BlockDigest, block_digest
from keelfs.datapath.framing import encode_read_response
from keelfs.datapath.protocol import Target
from keelfs.datapath.replica import DeleteOutcome
from keelfs.datapath.tokens import Access
from keelfs.datapath.wire import abort, internal_error, pb, pb_grpc, replica_to_pb
from keelfs.errors import InvalidArgument, KeelError, NotFound

if TYPE_CHECKING:
    from keelfs.chunk.node import ChunkNode
    from keelfs.chunk.store import BlockStore

__all__ = ["READ_REPLY_SIZE", "ChunkServicer", "add_to_server"]

log = logging.getLogger("keelfs.chunk.service")

READ_REPLY_SIZE = (4 << 20) - CHUNK_SIZE
"""Data per ReadBlock reply: 63 chunks of the default 64 KiB (as many whole chunks as fit, at
least one; ``ReplicaReader``'s 1 MiB pieces for every other reader).

Why so large: a reply costs far more than its bytes on both ends (gRPC's per-message work, its
receive-side assembly of the message, the asyncio hops to hand it over), and with 1 MiB
replies that cost was about a quarter of the CPU per MiB of both the client and the chunk
server (measured: docs/benchmarks.md, "Large reads in 4 MiB replies"; replies of 8 and 16 MiB
measured slower again on the client). Why not 4 MiB exactly: a reply with its few bytes of
framing then stays within gRPC's default receive limit of 4 MiB, so a client that opens its
channel with the default options reads it (keelfs's own clients accept ``MAX_MESSAGE_BYTES``).
The cost: a read stream holds two pieces (the one sent, the one read ahead), 8 MiB, not 2."""

_OUTCOME = {
    DeleteOutcome.DELETED: pb.DELETED,
    DeleteOutcome.NOT_FOUND: pb.DELETE_NOT_FOUND,
    DeleteOutcome.KEPT_NEWER: pb.KEPT_NEWER,
}


def _fence(msg: Any, has_fence: bool) -> Fence:
    if not has_fence:
        raise InvalidArgument("a command needs a fence (shard id and epoch)", "fence")
    return Fence(msg.shard_id, msg.epoch)


def _failure(exc: Exception, what: str) -> KeelError:
    if isinstance(exc, KeelError):
        return exc
    log.exception("%s failed", what)
    return internal_error(exc)


def _next_reply(reader: ReplicaReader) -> bytes | None:
    """The next piece as a serialized ``ReadResponse``, with the CRC32C taken when it was
    verified (no second pass): a whole piece was read straight into its reply
    (``ReplicaReader.piece_reply``), a piece cut inside a chunk is framed here."""
    piece = reader.read_piece()
    if piece is None:
        return None
    if reader.piece_reply is not None:
        return reader.piece_reply
    return encode_read_response(piece[0], piece[1], reader.piece_crc)


def _block_digest(store: BlockStore, block_id: int, gen: int, length: int) -> BlockDigest:
    """From the sidecar, in a worker thread (a 64 MiB block's CRC combination takes ~25 ms)."""
    chunk_size, crcs = store.block_crcs(block_id, gen, length)
    return block_digest(crcs, chunk_size, length)


class ChunkServicer(pb_grpc.ChunkServerServicer):
    def __init__(self, node: ChunkNode) -> None:
        self.node = node

    async def WriteBlock(self, request_iterator: Any, context: Any) -> None:
        node = self.node
        try:
            await serve_write(
                context,
                store=node.store,
                epochs=node.epochs,
                tokens=node.tokens,
                me=Target(node.address, node.server_id),
                channels=node.channels,
                config=node.pipeline_config,
            )
            return
        except Exception as exc:
            err = _failure(exc, "WriteBlock")
        await abort(context, err)

    async def ReadBlock(self, request: Any, context: Any) -> AsyncIterator[Any]:
        store = self.node.store
        try:
            self.node.tokens.check(request.token, request.block_id, request.gen, Access.READ)
            reader = await asyncio.to_thread(
                store.open_reader,
                request.block_id,
                request.gen,
                request.offset,
                request.length or None,
                piece_size=READ_REPLY_SIZE,
                framed=True,
            )
        except Exception as exc:
            await abort(context, _failure(exc, "ReadBlock"))
        error: KeelError | None = None
        ahead: asyncio.Future[bytes | None] | None = None
        try:
            # one piece read ahead, in a worker thread, while the previous one is sent
            ahead = asyncio.ensure_future(asyncio.to_thread(_next_reply, reader))
            while (reply := await ahead) is not None:
                ahead = asyncio.ensure_future(asyncio.to_thread(_next_reply, reader))
                yield reply
        except Exception as exc:
            error = _failure(exc, "ReadBlock")
        finally:
            if ahead is not None and not ahead.done():
                ahead.cancel()
            await asyncio.to_thread(reader.close)  # waits for a read still running
        if error is not None:
            await abort(context, error)

    async def BlockInfo(self, request: Any, context: Any) -> Any:
        replicas = self.node.store.replicas(request.block_id)
        if not replicas:
            await abort(context, NotFound(f"blk_{request.block_id}", "replica"))
        return pb.BlockInfoResponse(replicas=[replica_to_pb(r) for r in replicas])

    async def ListBlocks(self, request: Any, context: Any) -> AsyncIterator[Any]:
        size = request.batch_size or 1000
        report = self.node.store.block_report()
        for i in range(0, len(report), size):
            yield pb.ListBlocksResponse(replicas=[replica_to_pb(r) for r in report[i : i + size]])

    async def DeleteBlocks(self, request: Any, context: Any) -> Any:
        try:
            command = DeleteBlocks(
                _fence(request.fence, request.HasField("fence")),
                tuple((b.block_id, b.gen) for b in request.blocks),
                tuple(b.token for b in request.blocks),
            )
            results = await self.node.executor.execute(command)
            return pb.DeleteBlocksResponse(
                results=[
                    pb.DeleteResult(block_id=r.block_id, outcome=_OUTCOME[r.outcome], gen=r.gen)
                    for r in results
                ]
            )
        except Exception as exc:
            err = _failure(exc, "DeleteBlocks")
        await abort(context, err)

    async def ReplicateBlock(self, request: Any, context: Any) -> Any:
        try:
            command = ReplicateBlock(
                _fence(request.fence, request.HasField("fence")),
                request.block_id,
                request.gen,
                tuple(Target(t.address, t.server_id) for t in request.targets),
                request.token,
            )
            result = await self.node.executor.execute(command)
            nodes = [
                pb.NodeResult(
                    address=n.address, server_id=n.server_id, state=pb.NODE_OK, length=n.length
                )
                for n in result.nodes
            ]
            return pb.ReplicateBlockResponse(length=result.length, nodes=nodes)
        except Exception as exc:
            err = _failure(exc, "ReplicateBlock")
        await abort(context, err)

    async def BlockChecksum(self, request: Any, context: Any) -> Any:
        try:
            self.node.tokens.check(request.token, request.block_id, request.gen, Access.READ)
            digest = await asyncio.to_thread(
                _block_digest, self.node.store, request.block_id, request.gen, request.length
            )
            return pb.BlockChecksumResponse(
                bytes_per_crc=digest.bytes_per_crc,
                crc_count=digest.crc_count,
                md5=digest.md5,
                crc32c=digest.crc32c,
            )
        except Exception as exc:
            err = _failure(exc, "BlockChecksum")
        await abort(context, err)

    async def ServerInfo(self, request: Any, context: Any) -> Any:
        st = self.node.status()
        return pb.ServerInfoResponse(
            server_id=st.server_id,
            address=st.address,
            rack=st.rack,
            capacity_bytes=st.capacity_bytes,
            available_bytes=st.available_bytes,
            used_bytes=st.used_bytes,
            finalized=st.finalized,
            being_written=st.being_written,
            corrupt=st.corrupt,
            epochs=st.epochs,
        )


_SERVICE = "keelfs.chunk.v1.ChunkServer"


def add_to_server(servicer: ChunkServicer, server: Any) -> None:
    """Serve ``servicer`` on ``server`` (see the module docstring)."""

    def encode(cls: Any) -> Callable[[Any], bytes] | None:
        return None if cls is None else cls.SerializeToString

    def decode(cls: Any) -> Callable[[bytes], Any] | None:
        return None if cls is None else cls.FromString

    unary, server_stream = grpc.unary_unary_rpc_method_handler, grpc.unary_stream_rpc_method_handler
    # method: (kind, request class, reply class); None: raw bytes
    table: dict[str, tuple[Callable[..., Any], Any, Any]] = {
        "WriteBlock": (grpc.stream_stream_rpc_method_handler, None, pb.WriteAck),
        "ReadBlock": (server_stream, pb.ReadRequest, None),
        "BlockInfo": (unary, pb.BlockInfoRequest, pb.BlockInfoResponse),
        "ListBlocks": (server_stream, pb.ListBlocksRequest, pb.ListBlocksResponse),
        "DeleteBlocks": (unary, pb.DeleteBlocksRequest, pb.DeleteBlocksResponse),
        "ReplicateBlock": (unary, pb.ReplicateBlockRequest, pb.ReplicateBlockResponse),
        "ServerInfo": (unary, pb.ServerInfoRequest, pb.ServerInfoResponse),
        "BlockChecksum": (unary, pb.BlockChecksumRequest, pb.BlockChecksumResponse),
    }
    handlers = {
        name: kind(
            getattr(servicer, name),
            request_deserializer=decode(request),
            response_serializer=encode(reply),
        )
        for name, (kind, request, reply) in table.items()
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(_SERVICE, handlers),))
    server.add_registered_method_handlers(_SERVICE, handlers)
