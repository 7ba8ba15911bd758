"""Consistent hashing with virtual nodes: which shard owns a directory's entries.

Each shard is placed at ``vnodes`` points of a 64-bit ring; a key belongs to the shard of the
first point at or clockwise after the key's hash. The key of a path is its parent directory
(``keelfs.meta.paths.routing_key``), so all entries of one directory share a shard.

Hashes are BLAKE2b (8-byte digests, personalised separately for keys and points) of the UTF-8
bytes: stable across processes, machines and Python versions, unlike ``hash()``, which is
salted per process. Every member of every group must compute the same owner, forever, because
the owner is what the data was placed by.

Why virtual nodes: with one point per shard, the arcs (and so the load) differ by large factors,
and a new shard takes keys from a single neighbour. With ``v`` points each, a shard's share is
the sum of ``v`` arcs (relative spread about ``1/sqrt(v)``), and a new shard takes a little from
every shard. Adding or removing a shard only changes the owner of keys on the arcs that end at
the points added or removed: ``changed_ranges``/``moved_keys`` name exactly those, which is what
online resharding moves.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass

from keelfs.errors import InvalidArgument, Unavailable
from keelfs.meta.paths import routing_key

__all__ = [
    "DEFAULT_VNODES",
    "HASH_MAX",
    "HashRange",
    "HashRing",
    "changed_ranges",
    "key_hash",
    "moved_keys",
]

DEFAULT_VNODES = 64
HASH_MAX = 2**64 - 1
MAX_VNODES = 4096


def key_hash(key: str) -> int:
    """The ring position of ``key`` (a directory path), in ``0 .. HASH_MAX``."""
    digest = hashlib.blake2b(
        key.encode("utf-8", "surrogatepass"), digest_size=8, person=b"keelfs-key"
    ).digest()
    return int.from_bytes(digest, "big")


def _vnode_hash(shard_id: str, i: int) -> int:
    data = shard_id.encode("utf-8", "surrogatepass") + b"\x00" + str(i).encode()
    digest = hashlib.blake2b(data, digest_size=8, person=b"keelfs-vnode").digest()
    return int.from_bytes(digest, "big")


@dataclass(frozen=True, slots=True)
class HashRange:
    """The hashes ``first .. last`` (both inclusive) that move from ``old`` to ``new``."""

    first: int
    last: int
    old: str
    new: str

    def covers(self, h: int) -> bool:
        return self.first <= h <= self.last


class HashRing:
    """An immutable ring of ``shards``, each at ``vnodes`` points."""

    __slots__ = ("_owners", "_points", "shards", "vnodes")

    def __init__(self, shards: Iterable[str], vnodes: int = DEFAULT_VNODES) -> None:
        ids = sorted(shards)
        if len(set(ids)) != len(ids):
            raise InvalidArgument("duplicate shard id in ring", argument="shards")
        if not 1 <= vnodes <= MAX_VNODES:
            raise InvalidArgument(f"vnodes must be 1..{MAX_VNODES}", argument="vnodes")
        self.shards: tuple[str, ...] = tuple(ids)
        self.vnodes = vnodes
        # ties (two shards at one point) go to the smaller shard id: bisect_left finds it first
        placed = sorted((_vnode_hash(s, i), s) for s in ids for i in range(vnodes))
        self._points = [p for p, _ in placed]
        self._owners = [s for _, s in placed]

    def __len__(self) -> int:
        return len(self.shards)

    def owner_of_hash(self, h: int) -> str:
        if not self._points:
            raise Unavailable("the shard map has no shards")
        i = bisect_left(self._points, h)
        return self._owners[i if i < len(self._points) else 0]

    def lookup(self, key: str) -> str:
        """The shard owning ``key`` (a directory path: the routing key, not a file path)."""
        return self.owner_of_hash(key_hash(key))

    def shard_for_path(self, path: str) -> str:
        """The shard holding ``path``'s entry: the owner of its parent directory."""
        return self.lookup(routing_key(path))

    def points(self) -> list[tuple[int, str]]:
        """Every (point, shard), in ring order."""
        return list(zip(self._points, self._owners, strict=True))

    def shares(self) -> dict[str, float]:
        """Fraction of the hash space each shard owns."""
        out = dict.fromkeys(self.shards, 0.0)
        prev = self._points[-1] - (HASH_MAX + 1) if self._points else 0
        for p, s in zip(self._points, self._owners, strict=True):
            out[s] += (p - prev) / (HASH_MAX + 1)
            prev = p
        return out


def changed_ranges(old: HashRing, new: HashRing) -> list[HashRange]:
    """The hash ranges whose owner differs between ``old`` and ``new``, merged, in hash order.

    Between two consecutive points of either ring, both rings have one owner each, so checking
    each elementary arc at its upper end is exact. The arc that wraps past ``HASH_MAX`` comes
    out as two ranges (its end and its start)."""
    if not old.shards:
        return []  # nothing was owned, so nothing moves
    if not new.shards:
        raise InvalidArgument("the new ring has no shards to move to", argument="new")
    points = sorted(set(old._points) | set(new._points))
    arcs: list[tuple[int, int]] = [(0, points[0])]
    arcs += [(lo + 1, hi) for lo, hi in zip(points, points[1:], strict=False)]
    if points[-1] < HASH_MAX:
        arcs.append((points[-1] + 1, HASH_MAX))
    out: list[HashRange] = []
    for first, last in arcs:
        a, b = old.owner_of_hash(last), new.owner_of_hash(last)
        if a == b:
            continue
        if out and out[-1].last + 1 == first and (out[-1].old, out[-1].new) == (a, b):
            out[-1] = HashRange(out[-1].first, last, a, b)
        else:
            out.append(HashRange(first, last, a, b))
    return out


def moved_keys(old: HashRing, new: HashRing, keys: Iterable[str]) -> dict[str, tuple[str, str]]:
    """For each key (directory path) whose owner changes: (old owner, new owner)."""
    out: dict[str, tuple[str, str]] = {}
    for key in keys:
        h = key_hash(key)
        a, b = old.owner_of_hash(h), new.owner_of_hash(h)
        if a != b:
            out[key] = (a, b)
    return out
