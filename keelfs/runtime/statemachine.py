"""What the runtime needs from a replicated state machine (hashicorp/raft's FSM, narrowed)."""

from __future__ import annotations

from typing import Any, Protocol


class StateMachine(Protocol):
    def apply(self, index: int, data: bytes) -> Any:
        """Apply one committed entry; the return value resolves the proposer's future.

        Must be deterministic: every member applies the same entries in the same order and
        must reach the same state. Entries with empty ``data`` (leaders' no-ops) are not passed.
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
