"""What a chunk server says about a replica: :class:`ReplicaInfo`, and the id rules."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from keelfs.errors import InvalidArgument

__all__ = [
    "MAX_UINT64",
    "DeleteOutcome",
    "DeleteResult",
    "ReplicaInfo",
    "ReplicaState",
    "check_block_id",
    "check_gen",
    "check_shard_id",
]

MAX_UINT64 = (1 << 64) - 1
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


class ReplicaState(enum.Enum):
    FINALIZED = "finalized"
    """Complete and immutable: in block reports, served to readers."""
    BEING_WRITTEN = "being_written"
    """A pipeline is writing it, or broke while writing it (kept for pipeline recovery until a
    newer stamp takes it over, a DeleteBlocks removes it, it expires, or the server restarts)."""


@dataclass(frozen=True, slots=True)
class ReplicaInfo:
    block_id: int
    gen: int
    length: int
    """FINALIZED: the block's length; BEING_WRITTEN: the bytes written so far."""
    state: ReplicaState
    shard_id: str
    """The shard whose write created the replica."""
    chunk_size: int
    corrupt: bool = False

    @property
    def name(self) -> str:
        return f"blk_{self.block_id}_{self.gen}"

    def describe(self) -> str:
        flag = " corrupt" if self.corrupt else ""
        return f"{self.name} {self.state.value} {self.length}B {self.shard_id}{flag}"


def check_block_id(block_id: int) -> int:
    if not 0 < block_id <= MAX_UINT64:
        raise InvalidArgument(f"block id {block_id} out of range 1..2^64-1", "block_id")
    return block_id


def check_gen(gen: int) -> int:
    if not 0 < gen <= MAX_UINT64:
        raise InvalidArgument(f"generation stamp {gen} out of range 1..2^64-1", "gen")
    return gen


def check_shard_id(shard_id: str) -> str:
    """1-64 of ``[A-Za-z0-9._-]``, starting alphanumeric (the master's rule for ids)."""
    if not _ID.match(shard_id):
        raise InvalidArgument(f"shard id {shard_id!r} is not a valid id", "shard_id")
    return shard_id


class DeleteOutcome(enum.Enum):
    DELETED = "deleted"
    NOT_FOUND = "not_found"
    KEPT_NEWER = "kept_newer"
    """The replica's stamp is newer than the one the delete named."""


@dataclass(frozen=True, slots=True)
class DeleteResult:
    block_id: int
    outcome: DeleteOutcome
    gen: int = 0
    """The stamp of the replica deleted or kept (0 when none)."""
