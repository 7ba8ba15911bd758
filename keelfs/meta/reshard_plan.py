"""The config group's record of a resharding under way: which hash ranges move where.

``AddShard``/``RemoveShard`` on a live namespace compute the ranges whose owner differs between
the old and the new ring (``keelfs.meta.ring.changed_ranges``) and group them into *moves*:
ranges with the same source and target (adjacent or not), at most ``RANGES_PER_MOVE`` per
move, so that one move freezes a bounded part of the namespace and the map changes in steps.
Each move is then driven (``keelfs.master.resharding``) through ``pending`` -> ``switched``
(the decision: its ranges belong to the target from ShardMap ``version`` on) -> ``done`` (both
shards applied it, the source dropped its copies). ``txn_id`` is the move's current attempt:
an attempt that is not the recorded one, or that never switched, is aborted (presumed abort).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from keelfs.meta.ring import HashRing, changed_ranges

__all__ = ["DONE", "PENDING", "RANGES_PER_MOVE", "SWITCHED", "Move", "ReshardPlan"]

PENDING = "pending"
SWITCHED = "switched"
DONE = "done"
RANGES_PER_MOVE = 16


@dataclass(frozen=True, slots=True)
class Move:
    ranges: tuple[tuple[int, int], ...]
    source: str
    target: str
    state: str = PENDING
    txn_id: int = 0
    version: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "ranges": [list(r) for r in self.ranges],
            "source": self.source,
            "target": self.target,
            "state": self.state,
            "txn_id": self.txn_id,
            "version": self.version,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Move:
        return cls(
            tuple((int(f), int(la)) for f, la in d["ranges"]),
            str(d["source"]),
            str(d["target"]),
            str(d["state"]),
            int(d["txn_id"]),
            int(d["version"]),
        )


@dataclass(frozen=True, slots=True)
class ReshardPlan:
    """Adding (``kind`` "add") or removing ``shard``: the ring ``target`` and the moves."""

    kind: str
    shard: str
    target: tuple[str, ...]
    moves: tuple[Move, ...]

    @classmethod
    def build(
        cls, kind: str, shard: str, old: tuple[str, ...], new: tuple[str, ...], vnodes: int
    ) -> ReshardPlan:
        by_pair: dict[tuple[str, str], list[tuple[int, int]]] = {}
        for r in changed_ranges(HashRing(old, vnodes), HashRing(new, vnodes)):
            by_pair.setdefault((r.old, r.new), []).append((r.first, r.last))
        moves: list[Move] = []
        for (source, target), ranges in sorted(by_pair.items()):
            for i in range(0, len(ranges), RANGES_PER_MOVE):
                moves.append(Move(tuple(ranges[i : i + RANGES_PER_MOVE]), source, target))
        return cls(kind, shard, tuple(sorted(new)), tuple(moves))

    def with_move(self, index: int, move: Move) -> ReshardPlan:
        moves = list(self.moves)
        moves[index] = move
        return replace(self, moves=tuple(moves))

    @property
    def finished(self) -> bool:
        return all(m.state == DONE for m in self.moves)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "shard": self.shard,
            "target": list(self.target),
            "moves": [m.to_dict() for m in self.moves],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReshardPlan:
        return cls(
            str(d["kind"]),
            str(d["shard"]),
            tuple(str(s) for s in d["target"]),
            tuple(Move.from_dict(m) for m in d["moves"]),
        )

    def encode(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes) -> ReshardPlan:
        return cls.from_dict(json.loads(raw))
