"""What the runtime needs from a replicated state machine (hashicorp/raft's FSM, narrowed)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable


class StateMachine(Protocol):
    def apply(self, index: int, data: bytes) -> Any:
        """Apply one committed entry; the return value resolves the proposer's future.

        Must be deterministic: every member applies the same entries in the same order and
        must reach the same state. Entries with empty ``data`` (leaders' no-ops) are not passed.
        A command that must be refused is answered in the return value; an exception is fatal:
        the node stops with that entry not applied (``RaftGroup._apply_failed``), so it must
        leave no trace of the entry in the state.
        """
        ...

    def applied_index(self) -> int:
        """The last index reflected in the state (survives restarts if the state is durable)."""
        ...

    def snapshot(self) -> bytes:
        """An image of the state as of ``applied_index()``."""
        ...

    def restore(self, data: bytes, index: int) -> None:
        """Replace the whole state with ``data`` (from ``snapshot()``), taken at ``index``."""
        ...


@runtime_checkable
class StreamingStateMachine(StateMachine, Protocol):
    """Optional capability: snapshot images streamed in chunks, never whole in memory.

    The runtime prefers these methods when a state machine has them (a namespace of millions
    of files must not become one bytes object).
    """

    def snapshot_chunks(self) -> Iterator[bytes]:
        """The state as of ``applied_index()`` at the call, in chunks."""
        ...

    def restore_chunks(self, chunks: Iterable[bytes] | None, index: int) -> None:
        """Replace the state from a stream of ``snapshot_chunks()`` (None: the empty state)."""
        ...


@runtime_checkable
class PackingStateMachine(StateMachine, Protocol):
    """Optional capability: one entry carrying the data of many proposals.

    The proposals a leader queues in one round that their proposers marked packable
    (``RaftGroup.propose(..., packable=True)``) are handed to ``pack``, which says which
    entries carry them; ``apply`` of an entry that carries several returns a ``list`` with one
    result per proposal, in order (any other value answers each of them).
    """

    def pack(self, items: Sequence[bytes]) -> list[tuple[int, bytes]]:
        """The entries carrying ``items`` in order: ``(how many items, entry data)`` each,
        covering every item once; an entry for one item may be that item itself."""
        ...
