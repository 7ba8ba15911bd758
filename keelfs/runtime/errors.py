"""Errors a caller of the runtime sees. All are retryable, against another node or later.

``NotLeader`` and a plain ``RuntimeUnavailable`` mean the request was certainly not applied;
``OutcomeUnknown`` means a proposal may or may not have been (or may still be) applied.
"""

from __future__ import annotations


class RuntimeUnavailable(Exception):
    """Retryable: no leader yet, queue full, leadership changed under the request, timeout."""


class NotLeader(RuntimeUnavailable):
    """This member does not lead its group; ``leader_id``/``leader_address`` may know better."""

    def __init__(self, group_id: str, leader_id: int, leader_address: str | None) -> None:
        where = f"node {leader_id} at {leader_address}" if leader_id else "unknown"
        super().__init__(f"not the leader of {group_id}; leader: {where}")
        self.group_id = group_id
        self.leader_id = leader_id
        self.leader_address = leader_address


class OutcomeUnknown(RuntimeUnavailable):
    """A proposal was handed to Raft but its fate is unknown (timeout, shutdown, snapshot).

    Retrying a non-idempotent command after this may apply it twice."""


class ApplyFailed(Exception):
    """Applying a committed entry raised: this node stopped rather than diverge (not retryable
    here; the process must exit, and a restart applies the entry again)."""
