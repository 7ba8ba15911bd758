"""The writer's half of the WriteBlock protocol, without I/O, and the result types.

``proto/chunk.proto`` describes the pipeline. The sync and asyncio clients (and a chunk server
replicating a block) share these pieces and only move messages:

- :func:`header_request` opens the stream;
- :class:`Packetizer` cuts the caller's bytes (pieces of any size) into packets: whole chunks of
  ``packet_size`` bytes, each with its chunk CRCs, and a ``last`` packet (possibly empty);
- :class:`AckTracker` reads the acks and says when the write is over, and how:
  :meth:`AckTracker.outcome` returns the :class:`WriteResult` or raises.

A failure is reported as ``PipelineBroken`` (carrying the :class:`WriteResult`: which node
failed and why, and the length every node holds), except when the first node refused the
header itself (``Fenced``, ``StaleGeneration``, ...): that error is raised as it is.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from keelfs.datapath.checksums import CHUNK_SIZE, chunk_crcs
from keelfs.datapath.framing import encode_packet
from keelfs.datapath.wire import MAX_PACKET_BYTES, decode_node_error, error_of, pb
from keelfs.errors import InvalidArgument, KeelError, PipelineBroken, Unavailable

__all__ = [
    "DEFAULT_PACKET_SIZE",
    "AckTracker",
    "NodeResult",
    "NodeState",
    "Packetizer",
    "ServerStatus",
    "Target",
    "WriteResult",
    "header_request",
    "targets_of",
]

DEFAULT_PACKET_SIZE = 1 << 20


@dataclass(frozen=True, slots=True)
class Target:
    """A chunk server: its address, and optionally its id (echoed back in results)."""

    address: str
    server_id: str = ""

    def to_pb(self) -> Any:
        return pb.Target(address=self.address, server_id=self.server_id)


def targets_of(pipeline: Sequence[str | Target]) -> tuple[Target, ...]:
    out = tuple(t if isinstance(t, Target) else Target(t) for t in pipeline)
    if not out:
        raise InvalidArgument("a pipeline needs at least one chunk server", "pipeline")
    if len({t.address for t in out}) != len(out):
        raise InvalidArgument("a chunk server appears twice in the pipeline", "pipeline")
    return out


class NodeState(enum.Enum):
    OK = "ok"
    FAILED = "failed"
    UNKNOWN = "unknown"
    """Behind a failed node: its fate is not known."""


_NODE_STATE = {pb.NODE_OK: NodeState.OK, pb.NODE_FAILED: NodeState.FAILED}


@dataclass(frozen=True, slots=True)
class NodeResult:
    address: str
    server_id: str
    state: NodeState
    length: int = 0
    """OK: the bytes of the replica the node had written when it answered."""
    error: KeelError | None = None
    """FAILED: why."""

    @classmethod
    def from_pb(cls, msg: Any) -> NodeResult:
        return cls(
            msg.address,
            msg.server_id,
            _NODE_STATE.get(msg.state, NodeState.UNKNOWN),
            msg.length,
            decode_node_error(msg.error),
        )

    def describe(self) -> str:
        why = f" ({self.error.code}: {self.error.message})" if self.error else ""
        return f"{self.address} {self.state.value}{why}"


@dataclass(frozen=True, slots=True)
class WriteResult:
    block_id: int
    gen: int
    length: int
    """Every OK node holds bytes [0, length) (the whole replica when ``finalized``)."""
    finalized: bool
    nodes: tuple[NodeResult, ...]
    """One per pipeline node, in pipeline order."""

    @property
    def failed(self) -> tuple[NodeResult, ...]:
        return tuple(n for n in self.nodes if n.state is NodeState.FAILED)

    @property
    def survivors(self) -> tuple[NodeResult, ...]:
        """The nodes that still hold the acknowledged bytes (for pipeline recovery)."""
        return tuple(n for n in self.nodes if n.state is NodeState.OK)


@dataclass(frozen=True, slots=True)
class ServerStatus:
    """A chunk server's identity and usage (``ServerInfo``)."""

    server_id: str
    address: str
    rack: str
    capacity_bytes: int
    available_bytes: int
    used_bytes: int
    finalized: int
    being_written: int
    corrupt: int
    epochs: dict[str, int]

    @classmethod
    def from_pb(cls, msg: Any) -> ServerStatus:
        return cls(
            msg.server_id,
            msg.address,
            msg.rack,
            msg.capacity_bytes,
            msg.available_bytes,
            msg.used_bytes,
            msg.finalized,
            msg.being_written,
            msg.corrupt,
            dict(msg.epochs),
        )


def header_request(
    block_id: int,
    gen: int,
    shard_id: str,
    epoch: int,
    downstream: Sequence[Target],
    *,
    chunk_size: int = CHUNK_SIZE,
    offset: int = 0,
    token: bytes = b"",
) -> Any:
    """The first message of a WriteBlock stream (``downstream``: the nodes after the first)."""
    return pb.WriteRequest(
        header=pb.WriteHeader(
            block_id=block_id,
            gen=gen,
            fence=pb.Fence(shard_id=shard_id, epoch=epoch),
            targets=[t.to_pb() for t in downstream],
            chunk_size=chunk_size,
            offset=offset,
            token=token,
        )
    )


class Packetizer:
    """Cuts a stream of byte pieces into packets (see the module docstring), each a serialized
    ``WriteRequest`` (``keelfs.datapath.framing``)."""

    def __init__(
        self,
        packet_size: int = DEFAULT_PACKET_SIZE,
        chunk_size: int = CHUNK_SIZE,
        offset: int = 0,
        *,
        sync_last: bool = False,
    ) -> None:
        if packet_size < chunk_size or packet_size % chunk_size or packet_size > MAX_PACKET_BYTES:
            raise InvalidArgument(
                f"packet size {packet_size} must be a multiple of the chunk size {chunk_size} "
                f"and at most {MAX_PACKET_BYTES}",
                "packet_size",
            )
        self.packet_size = packet_size
        self.chunk_size = chunk_size
        self.offset = offset
        """Where the next packet starts in the block."""
        self.seqno = 0
        self._sync_last = sync_last
        self._buffer: list[bytes] = []
        self._buffered = 0

    def feed(self, piece: bytes | bytearray | memoryview) -> list[bytes]:
        """Packets made complete by ``piece``."""
        size = self.packet_size
        if not self._buffered and len(piece) == size:
            return [self._packet(bytes(piece))]
        out = []
        if len(piece):
            self._buffer.append(bytes(piece))
            self._buffered += len(piece)
        if self._buffered >= size:
            joined = b"".join(self._buffer)
            cut = len(joined) - len(joined) % size
            out = [self._packet(joined[i : i + size]) for i in range(0, cut, size)]
            rest = joined[cut:]
            self._buffer = [rest] if rest else []
            self._buffered = len(rest)
        return out

    def finish(self) -> bytes:
        """The last packet: whatever is buffered (possibly nothing), with ``last`` set."""
        data = b"".join(self._buffer)
        self._buffer, self._buffered = [], 0
        return self._packet(data, last=True)

    def _packet(self, data: bytes, last: bool = False) -> bytes:
        self.seqno += 1
        offset = self.offset
        self.offset += len(data)
        crcs = chunk_crcs(data, self.chunk_size)
        return encode_packet(
            self.seqno, offset, data, crcs, last=last, sync=last and self._sync_last
        )


class AckTracker:
    """Follows the acks of one WriteBlock stream (see the module docstring)."""

    def __init__(
        self, block_id: int, gen: int, pipeline: Sequence[Target], offset: int = 0
    ) -> None:
        self.block_id = block_id
        self.gen = gen
        self.pipeline = tuple(pipeline)
        self.acked_seqno = 0
        self.acked_length = offset
        self.set_up = False
        self.done = False
        self._result: WriteResult | None = None
        self._error: KeelError | None = None

    def on_ack(self, ack: Any) -> bool:
        """Take one ack; True when the write is over (finalized, or failed)."""
        if self.done:
            return True
        if ack.failed:
            self._fail([NodeResult.from_pb(n) for n in ack.nodes], ack.length)
        elif not self.set_up:
            if ack.seqno != 0:
                self._protocol_error(f"expected the setup ack, got seqno {ack.seqno}")
            self.set_up = True
        elif ack.seqno != self.acked_seqno + 1 or ack.length < self.acked_length:
            self._protocol_error(f"ack {ack.seqno} after {self.acked_seqno}")
        else:
            self.acked_seqno = ack.seqno
            self.acked_length = ack.length
            if ack.finalized:
                nodes = tuple(NodeResult.from_pb(n) for n in ack.nodes)
                self._result = WriteResult(self.block_id, self.gen, ack.length, True, nodes)
                self.done = True
        return self.done

    def on_error(self, exc: BaseException) -> None:
        """The stream to the first node failed. Before its setup ack with a refusal of its own:
        that refusal is the outcome; otherwise the first node counts as failed."""
        if self.done:
            return
        err = error_of(exc, self.pipeline[0].address)
        if not self.set_up and not err.retryable and err.code != "INTERNAL":
            self._error = err
            self.done = True
            return
        first = self.pipeline[0]
        nodes = [NodeResult(first.address, first.server_id, NodeState.FAILED, error=err)]
        nodes += [NodeResult(t.address, t.server_id, NodeState.UNKNOWN) for t in self.pipeline[1:]]
        self._fail(nodes, self.acked_length)

    def on_end(self) -> None:
        """The first node ended the stream."""
        if not self.done:
            self.on_error(Unavailable("the stream ended before the last ack"))

    def _protocol_error(self, what: str) -> None:
        self.on_error(Unavailable(f"{self.pipeline[0].address}: protocol error: {what}"))

    def _fail(self, nodes: list[NodeResult], length: int) -> None:
        result = WriteResult(self.block_id, self.gen, length, False, tuple(nodes))
        failed = result.failed
        reason = "; ".join(n.describe() for n in failed) or "unknown"
        self._result = result
        self._error = PipelineBroken(
            self.block_id, length, [n.address for n in failed], reason, result=result
        )
        self.done = True

    def outcome(self) -> WriteResult:
        """The finalized write's result; raises the failure (see the module docstring)."""
        if self._error is not None:
            raise self._error
        if self._result is None:
            raise Unavailable(f"block {self.block_id}: the write did not finish")
        return self._result
