"""Majority arithmetic over a set of voters (single-server membership changes need no joint
configurations, so one majority is all there is)."""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Mapping


class VoteResult(enum.Enum):
    PENDING = 0
    WON = 1
    LOST = 2


def majority(n: int) -> int:
    return n // 2 + 1


def committed_index(voters: Collection[int], match: Callable[[int], int]) -> int:
    """The largest index that a majority of ``voters`` has acknowledged.

    An empty configuration commits nothing, so it returns 0 (a leader removed from a
    configuration with no voters left cannot make progress, and must not pretend to).
    """
    if not voters:
        return 0
    acked = sorted((match(v) for v in voters), reverse=True)
    return acked[majority(len(acked)) - 1]


def vote_result(voters: Collection[int], votes: Mapping[int, bool]) -> VoteResult:
    """WON once a majority granted, LOST once a majority can no longer grant."""
    if not voters:
        return VoteResult.WON
    granted = rejected = 0
    for v in voters:
        got = votes.get(v)
        if got is True:
            granted += 1
        elif got is False:
            rejected += 1
    need = majority(len(voters))
    if granted >= need:
        return VoteResult.WON
    if len(voters) - rejected < need:
        return VoteResult.LOST
    return VoteResult.PENDING


def has_quorum(voters: Collection[int], members: Collection[int]) -> bool:
    """Do ``members`` (e.g. recently active peers) include a majority of ``voters``?"""
    return sum(1 for v in voters if v in members) >= majority(len(voters)) if voters else False
