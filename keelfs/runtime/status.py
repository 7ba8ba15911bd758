"""What one Raft group looks like on one node (``RaftGroup.status()``), typed.

The metadata nodes answer ``Node.Status`` with it (``keelfs.rpc.wire.group_status_to_pb``),
the dashboard and ``keelfs admin status`` show it, and the metrics read it. A member's *lag*
is defined here once (:func:`lag`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["GroupStatus", "MemberProgress", "lag"]


def lag(leader_last_index: int, match: int) -> int:
    """A member's lag: the entries its leader holds that it has not acknowledged yet (the
    leader's last log index minus the member's ``match``; 0 for the leader itself).

    Only a leader knows it, from one consistent view of its own log and its followers'
    acknowledgements; comparing indexes reported by different nodes at different moments
    (commit here, applied there) would mix clocks."""
    return max(0, leader_last_index - match)


@dataclass(frozen=True, slots=True)
class MemberProgress:
    """What a leader knows of one member's log."""

    state: str
    """``probe``, ``replicate`` or ``snapshot``."""
    match: int
    """The highest index known replicated on the member."""
    next: int
    """The next index the leader sends it."""
    lag: int
    """See :func:`lag`."""


@dataclass(frozen=True, slots=True)
class GroupStatus:
    group: str
    id: int
    """This node."""
    state: str
    """This node's role: ``leader``, ``follower``, ``candidate`` or ``pre_candidate``."""
    term: int
    leader: int
    """The leader this node knows of; 0: none."""
    commit: int
    applied: int
    last_index: int
    voters: list[int]
    learners: list[int]
    members: dict[int, str]
    """Node id -> Raft address, as this node knows them."""
    snapshot_index: int
    first_index: int
    snapshots_installed: int
    proposals_lost: int
    removed: bool
    progress: dict[int, MemberProgress] = field(default_factory=dict)
    """On the leader only: every member's progress (its own included)."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (string keys), for ``/raft/state`` and the KV demo server."""
        out = asdict(self)
        out["members"] = {str(k): v for k, v in sorted(self.members.items())}
        out["progress"] = {str(k): asdict(v) for k, v in sorted(self.progress.items())}
        return out
