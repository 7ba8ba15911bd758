"""The chunk server's own errors, in the one ``keelfs.errors`` tree::

    KeelError
    ├── RetryableError
    │   └── PipelineBroken      PIPELINE_BROKEN    block_id, acked_length, failed, reason
    └── OperationError
        ├── Fenced              FENCED             shard_id, epoch, current_epoch
        ├── StaleGeneration     STALE_GENERATION   block_id, gen, replica_gen
        ├── CorruptReplica      CORRUPT_REPLICA    block_id, gen, offset, reason
        └── ChecksumMismatch    CHECKSUM_MISMATCH  block_id, offset, reason

Besides these the chunk server answers with the general ``NotFound`` (kind ``replica``),
``AlreadyExists`` (kind ``replica``), ``InvalidArgument`` and ``Unavailable``.

``CorruptReplica`` is about data at rest (a stored checksum does not match what the disk
returns: the replica is marked corrupt and no longer served); ``ChecksumMismatch`` about data in
flight (a packet or a read reply whose checksum does not match its bytes).

Importing this module registers the codes, so that ``KeelError.from_details`` rebuilds them.
"""

from __future__ import annotations

from typing import Any

from keelfs.errors import OperationError, RetryableError

__all__ = [
    "ChecksumMismatch",
    "CorruptReplica",
    "Fenced",
    "PipelineBroken",
    "StaleGeneration",
]


class Fenced(OperationError):
    """``shard_id`` sent ``epoch`` but this chunk server has already seen ``current_epoch`` from
    that shard: the sender is a deposed leader (or replays an old command). Nothing was done."""

    code = "FENCED"
    detail_fields = ("shard_id", "epoch", "current_epoch")

    def __init__(
        self, shard_id: str = "", epoch: int = 0, current_epoch: int = 0, *, message: str = ""
    ) -> None:
        super().__init__(
            message
            or f"fenced: shard {shard_id} epoch {epoch} is older than epoch {current_epoch}",
            shard_id=shard_id,
            epoch=epoch,
            current_epoch=current_epoch,
        )

    @property
    def current_epoch(self) -> int:
        return int(self.details["current_epoch"] or 0)


class StaleGeneration(OperationError):
    """The replica of ``block_id`` here has stamp ``replica_gen``, not the ``gen`` asked for (to
    read it), or a newer one than ``gen`` (to write it). A stale stamp is never served."""

    code = "STALE_GENERATION"
    detail_fields = ("block_id", "gen", "replica_gen")

    def __init__(
        self, block_id: int = 0, gen: int = 0, replica_gen: int = 0, *, message: str = ""
    ) -> None:
        super().__init__(
            message or f"block {block_id}: generation stamp {gen} asked, replica has {replica_gen}",
            block_id=block_id,
            gen=gen,
            replica_gen=replica_gen,
        )


class CorruptReplica(OperationError):
    """The stored replica failed a check at ``offset`` (a chunk's CRC32C, or its files disagree
    on the length). It is marked corrupt, reported, and never served again."""

    code = "CORRUPT_REPLICA"
    detail_fields = ("block_id", "gen", "offset", "reason")

    def __init__(
        self,
        block_id: int = 0,
        gen: int = 0,
        offset: int = 0,
        reason: str = "",
        *,
        message: str = "",
    ) -> None:
        super().__init__(
            message or f"replica {block_id}_{gen} is corrupt at offset {offset}: {reason}",
            block_id=block_id,
            gen=gen,
            offset=offset,
            reason=reason,
        )


class ChecksumMismatch(OperationError):
    """Bytes that arrived at ``offset`` of ``block_id`` do not match the CRC32C sent with them."""

    code = "CHECKSUM_MISMATCH"
    detail_fields = ("block_id", "offset", "reason")

    def __init__(
        self, block_id: int = 0, offset: int = 0, reason: str = "", *, message: str = ""
    ) -> None:
        super().__init__(
            message or f"block {block_id}: checksum mismatch at offset {offset}: {reason}",
            block_id=block_id,
            offset=offset,
            reason=reason,
        )


class PipelineBroken(RetryableError):
    """A write pipeline lost nodes: ``failed`` lists their addresses, every node still holds
    bytes ``[0, acked_length)``. Retry with a new pipeline and a new generation stamp (from
    ``acked_length`` on the survivors, or from 0). ``result`` (not sent on the wire) is the
    :class:`keelfs.chunk.protocol.WriteResult` with each node's state and error."""

    code = "PIPELINE_BROKEN"
    detail_fields = ("block_id", "acked_length", "failed", "reason")
    result: Any = None  # also when rebuilt by ``KeelError.from_details``

    def __init__(
        self,
        block_id: int = 0,
        acked_length: int = 0,
        failed: list[str] | None = None,
        reason: str = "",
        *,
        message: str = "",
        result: Any = None,
    ) -> None:
        failed = list(failed or [])
        super().__init__(
            message
            or f"block {block_id}: pipeline broken at {', '.join(failed) or '?'} after "
            f"{acked_length} bytes: {reason}",
            block_id=block_id,
            acked_length=acked_length,
            failed=failed,
            reason=reason,
        )
        self.result = result

    @property
    def acked_length(self) -> int:
        return int(self.details["acked_length"] or 0)

    @property
    def failed(self) -> list[str]:
        return list(self.details["failed"] or [])
