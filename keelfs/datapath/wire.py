"""Where the chunk server meets gRPC: status codes, message limits, proto <-> record conversions,
and the pool of channels a node or client keeps to other chunk servers.

Errors travel as everywhere in keelfs (``keelfs.rpc.grpc_errors``): the gRPC status is a
coarse category and the trailing metadata ``keelfs-error`` holds the ``KeelError``'s details;
:func:`abort` is the server side, :func:`error_of` the client side (it also names the gRPC-level
failures that carry no trailer: a connection lost, a deadline).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import grpc

from keelfs.datapath.replica import ReplicaInfo, ReplicaState
from keelfs.errors import (
    KeelError,
    Unavailable,
)
from keelfs.rpc.channels import MIN_CONNECT_TIMEOUT_MS
from keelfs.rpc.grpc_errors import (
    abort,
    decode_error,
    error_from_rpc,
    internal_error,
    status_of,
)
from keelfs.rpc.pb import chunk_pb2 as pb
from keelfs.rpc.pb import chunk_pb2_grpc as _pb_grpc
from keelfs.tls.credentials import TlsSettings, open_aio_channel

__all__ = [
    "GRPC_OPTIONS",
    "MAX_MESSAGE_BYTES",
    "MAX_PACKET_BYTES",
    "AsyncChannels",
    "abort",
    "decode_node_error",
    "error_of",
    "internal_error",
    "pb",
    "pb_grpc",
    "replica_from_pb",
    "replica_to_pb",
    "status_of",
]

log = logging.getLogger("keelfs.datapath.wire")

pb_grpc: Any = _pb_grpc  # generated, untyped

MAX_PACKET_BYTES = 4 << 20
"""Largest ``Packet.data`` (the default packet is 1 MiB)."""
MAX_MESSAGE_BYTES = MAX_PACKET_BYTES + (256 << 10)
"""gRPC message limit both ways: a largest packet with its checksums and framing."""

GRPC_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_metadata_size", 64 << 10),
]
"""Options of the chunk server and of every channel to one."""
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    *GRPC_OPTIONS,
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", MIN_CONNECT_TIMEOUT_MS),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.use_local_subchannel_pool", 1),
]


def error_of(exc: BaseException, address: str) -> KeelError:
    """What a failed call to the chunk server at ``address`` means, as a ``KeelError``: the
    server's refusal, or ``Unavailable`` for a gRPC-level failure."""
    if isinstance(exc, KeelError):
        return exc
    if isinstance(exc, grpc.RpcError):
        refused = error_from_rpc(exc)
        if refused is not None:
            return refused
        code = exc.code() if hasattr(exc, "code") else None
        name = code.name if code is not None else "UNKNOWN"
        details = exc.details() if hasattr(exc, "details") else ""
        return Unavailable(f"{address}: {name}: {details}")
    if isinstance(exc, TimeoutError):
        return Unavailable(f"{address}: no answer in time")
    return Unavailable(f"{address}: {type(exc).__name__}: {exc}")


def decode_node_error(raw: str) -> KeelError | None:
    """``NodeResult.error`` (the ``keelfs-error`` JSON) back into a ``KeelError``."""
    return decode_error(raw) if raw else None


_STATE_TO_PB = {
    ReplicaState.FINALIZED: pb.REPLICA_FINALIZED,
    ReplicaState.BEING_WRITTEN: pb.REPLICA_BEING_WRITTEN,
}
_STATE_FROM_PB = {v: k for k, v in _STATE_TO_PB.items()}


def replica_to_pb(info: ReplicaInfo) -> Any:
    return pb.Replica(
        block_id=info.block_id,
        gen=info.gen,
        length=info.length,
        state=_STATE_TO_PB[info.state],
        corrupt=info.corrupt,
        shard_id=info.shard_id,
        chunk_size=info.chunk_size,
    )


def replica_from_pb(msg: Any) -> ReplicaInfo:
    return ReplicaInfo(
        block_id=msg.block_id,
        gen=msg.gen,
        length=msg.length,
        state=_STATE_FROM_PB[msg.state],
        shard_id=msg.shard_id,
        chunk_size=msg.chunk_size,
        corrupt=msg.corrupt,
    )


_WRITE_BLOCK = "/keelfs.chunk.v1.ChunkServer/WriteBlock"
_READ_BLOCK = "/keelfs.chunk.v1.ChunkServer/ReadBlock"


class AsyncChannels:
    """One ``grpc.aio`` channel per chunk-server address, shared by every call to it.

    :meth:`stub` is the generated stub; :meth:`write_block` and :meth:`read_block` are the two
    data-path methods with their data-carrying messages left as bytes (``keelfs.datapath.framing``).
    """

    def __init__(
        self,
        options: Iterable[tuple[str, Any]] = CHANNEL_OPTIONS,
        *,
        tls: TlsSettings | None = None,
    ) -> None:
        self._options = list(options)
        self._tls = tls
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, tuple[Any, Any, Any]] = {}

    def _get(self, address: str) -> tuple[Any, Any, Any]:
        stubs = self._stubs.get(address)
        if stubs is None:
            channel = open_aio_channel(address, self._tls, self._options)
            self._channels[address] = channel
            stubs = self._stubs[address] = (
                pb_grpc.ChunkServerStub(channel),
                channel.stream_stream(
                    _WRITE_BLOCK,
                    request_serializer=None,
                    response_deserializer=pb.WriteAck.FromString,
                ),
                channel.unary_stream(
                    _READ_BLOCK,
                    request_serializer=pb.ReadRequest.SerializeToString,
                    response_deserializer=None,
                ),
            )
        return stubs

    def stub(self, address: str) -> Any:
        return self._get(address)[0]

    def write_block(self, address: str) -> Any:
        """WriteBlock taking serialized ``WriteRequest`` bytes."""
        return self._get(address)[1]

    def read_block(self, address: str) -> Any:
        """ReadBlock answering serialized ``ReadResponse`` bytes."""
        return self._get(address)[2]

    async def close(self) -> None:
        channels = list(self._channels.values())
        self._channels.clear()
        self._stubs.clear()
        for channel in channels:
            try:
                await channel.close()
            except Exception:  # closing is best effort
                log.debug("closing a channel failed", exc_info=True)
