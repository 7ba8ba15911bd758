"""Which hash ranges a shard is moving out, has moved out, or is taking in (online resharding).

The ring says which shard owns a directory (``keelfs.meta.ring``); while the ring changes, a
shard's state machine must know better than any master's cached map, because a proposal routed
by an old map may be applied after its directory has moved. So each data shard keeps, in its
own Raft log, the state of every hash range a move has touched:

- ``frozen``: a move out of this shard is copying the range: its records may be read but not
  changed (a change is refused as "locked" and re-proposed by the master until the move ends);
- ``moved``: the range belongs to ``peer`` since ShardMap ``version``: anything about it is
  answered with ``REDIRECT``, and its leftover records are invisible until dropped;
- ``incoming``: a move into this shard is copying the range here: nothing may read or change
  it until the move commits (then the state is removed: the range is simply owned).

``RangeTable`` is the pure interval map (a later setting of a range replaces whatever older
settings it overlaps); ``keelfs.meta.namespace`` persists it and consults it on every record.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from keelfs.errors import InvalidArgument
from keelfs.meta.ring import HASH_MAX

__all__ = ["FROZEN", "INCOMING", "MOVED", "RangeState", "RangeTable", "pairs", "texts"]

FROZEN = "frozen"
MOVED = "moved"
INCOMING = "incoming"
_STATES = (FROZEN, MOVED, INCOMING)


@dataclass(frozen=True, slots=True)
class RangeState:
    """The hashes ``first .. last`` (inclusive) are ``state`` because of move ``txn_id``;
    ``peer`` is the other shard of that move; ``version`` the ShardMap version that made a
    ``moved`` range the peer's (0 otherwise)."""

    first: int
    last: int
    state: str
    txn_id: int
    peer: str
    version: int = 0

    def covers(self, h: int) -> bool:
        return self.first <= h <= self.last

    def to_list(self) -> list[object]:
        return [self.first, self.last, self.state, self.txn_id, self.peer, self.version]

    @classmethod
    def from_list(cls, v: Sequence[object]) -> RangeState:
        first, last, state, txn_id, peer, version = v
        return cls(int(first), int(last), str(state), int(txn_id), str(peer), int(version))  # type: ignore[call-overload]


def _is_hash(text: str) -> bool:
    """1-20 ASCII decimal digits (``str.isdigit`` also takes "²" and "١", which ``int``
    refuses or reads as other digits)."""
    return 0 < len(text) <= 20 and text.isascii() and text.isdigit()


def pairs(items: Sequence[str]) -> list[tuple[int, int]]:
    """``["first:last", ...]`` (how commands carry ranges: hashes exceed JSON's signed 64-bit
    integers) as checked (first, last) pairs."""
    if not items:
        raise InvalidArgument("ranges must not be empty", "ranges")
    out: list[tuple[int, int]] = []
    for item in items:
        first_s, sep, last_s = str(item).partition(":")
        if not (sep and _is_hash(first_s) and _is_hash(last_s)):
            raise InvalidArgument(f"bad hash range {item!r} (want first:last)", "ranges")
        first, last = int(first_s), int(last_s)
        if not 0 <= first <= last <= HASH_MAX:
            raise InvalidArgument(f"bad hash range {first}..{last}", "ranges")
        out.append((first, last))
    return out


def texts(ranges: Iterable[tuple[int, int]]) -> tuple[str, ...]:
    """The inverse of ``pairs``."""
    return tuple(f"{first}:{last}" for first, last in ranges)


class RangeTable:
    """Non-overlapping ``RangeState`` intervals sorted by ``first`` (immutable)."""

    __slots__ = ("_firsts", "_items")

    def __init__(self, items: Iterable[RangeState] = ()) -> None:
        self._items = sorted(items, key=lambda r: r.first)
        self._firsts = [r.first for r in self._items]
        for a, b in zip(self._items, self._items[1:], strict=False):
            if a.last >= b.first:
                raise ValueError(f"overlapping ranges {a} and {b}")

    def __bool__(self) -> bool:
        return bool(self._items)

    def __iter__(self) -> Iterator[RangeState]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def lookup(self, h: int) -> RangeState | None:
        """The setting covering hash ``h``, if any."""
        i = bisect_right(self._firsts, h) - 1
        if i >= 0 and self._items[i].covers(h):
            return self._items[i]
        return None

    def with_state(
        self, first: int, last: int, state: str, txn_id: int, peer: str, version: int = 0
    ) -> RangeTable:
        """This table with ``first .. last`` set to the given state (overlapped parts of older
        settings are cut away)."""
        if state not in _STATES:
            raise ValueError(f"unknown range state {state!r}")
        kept = self.without(first, last)._items
        return RangeTable([*kept, RangeState(first, last, state, txn_id, peer, version)])

    def without(self, first: int, last: int) -> RangeTable:
        """This table with nothing set for ``first .. last``."""
        out: list[RangeState] = []
        for r in self._items:
            if r.last < first or r.first > last:
                out.append(r)
                continue
            if r.first < first:
                out.append(RangeState(r.first, first - 1, r.state, r.txn_id, r.peer, r.version))
            if r.last > last:
                out.append(RangeState(last + 1, r.last, r.state, r.txn_id, r.peer, r.version))
        return RangeTable(out)

    def of_txn(self, txn_id: int) -> list[RangeState]:
        return [r for r in self._items if r.txn_id == txn_id]

    def encode(self) -> bytes:
        return json.dumps([r.to_list() for r in self._items], separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes | None) -> RangeTable:
        return cls() if not raw else cls(RangeState.from_list(v) for v in json.loads(raw))
