"""Fences of a directory tree moved across shards in steps (``keelfs.master.tree_move``): the
records each shard keeps, and what they forbid.

A tree too large for one transaction is moved in steps: every shard records a *fence* for the
move (source ``src``, target ``dst``), the records are copied to their new shards under the
final names while the fence hides them, one transaction switches the top entry and every
shard's fence at once, then each shard drops the records left behind. A fence's state says
which side is live::

    copying    src live (read-only), dst being filled: hidden from readers
    switched   dst live, src left behind: hidden until dropped here
    aborted    src live, dst copies left behind: hidden until dropped here

and *no change* is accepted under a side that is not live, nor under either side while
copying (``src`` and ``dst`` themselves included): ``Unavailable`` with reason "locked", which
the master re-proposes until the fence is gone or the request's time is up. Only the move's
own commands write there (staging, the switch transaction's parts, the drops). Readers of a
hidden path wait the same way (``lock_holder``), and the paths strictly below ``src`` also
wait while the switch transaction holds ``src`` locked here (prepared, not yet decided): a
reader never sees the old tree on one shard after the new one on another.

Keys::

    F <u64 move id>   an active fence (JSON, :class:`Fence`)
    f <u64 move id>   a settled move (empty): its commands are refused here from then on
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

from keelfs.errors import Unavailable
from keelfs.meta import paths
from keelfs.meta.kvstore import Txn, prefix_end

__all__ = [
    "ABORTED",
    "COPYING",
    "SWITCHED",
    "Fence",
    "active",
    "fence_below",
    "hidden_by",
    "load",
    "save",
    "settled",
    "under",
    "write_error",
]

ACTIVE = b"F"
SETTLED = b"f"
COPYING = "copying"
SWITCHED = "switched"
ABORTED = "aborted"
_U64 = struct.Struct(">Q")


@dataclass(frozen=True)
class Fence:
    move_id: int
    src: str
    dst: str
    state: str
    coordinator: str
    shards: tuple[str, ...] = ()
    """The coordinator's record only: every shard fenced for the move (it settles them)."""

    def encode(self) -> bytes:
        body = [self.move_id, self.src, self.dst, self.state, self.coordinator, self.shards]
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Fence:
        move_id, src, dst, state, coordinator, shards = json.loads(raw)
        return cls(int(move_id), src, dst, state, coordinator, tuple(shards))

    def evolve(self, state: str) -> Fence:
        return Fence(self.move_id, self.src, self.dst, state, self.coordinator, self.shards)

    @property
    def left_behind(self) -> str | None:
        """The path whose records are dropped here (None while copying)."""
        return {SWITCHED: self.src, ABORTED: self.dst}.get(self.state)

    def to_dict(self) -> dict[str, Any]:
        return {
            "move_id": self.move_id,
            "src": self.src,
            "dst": self.dst,
            "state": self.state,
            "coordinator": self.coordinator,
            "shards": list(self.shards),
        }


def under(path: str, top: str) -> bool:
    """Whether ``path`` is ``top`` or below it."""
    return path == top or paths.is_ancestor(top, path)


def _key(prefix: bytes, move_id: int) -> bytes:
    return prefix + _U64.pack(move_id)


def load(kv: Any, move_id: int) -> Fence | None:
    raw = kv.get(_key(ACTIVE, move_id))
    return None if raw is None else Fence.decode(raw)


def settled(kv: Any, move_id: int) -> bool:
    return kv.get(_key(SETTLED, move_id)) is not None


def save(txn: Txn, fence: Fence) -> None:
    txn.put(_key(ACTIVE, fence.move_id), fence.encode())


def settle(txn: Txn, move_id: int) -> None:
    """The move is over here: its fence goes, and a tombstone refuses its late commands."""
    txn.delete(_key(ACTIVE, move_id))
    txn.put(_key(SETTLED, move_id), b"")


def active(kv: Any) -> list[Fence]:
    """Every active fence here (usually none: one scan of an empty key range)."""
    return [Fence.decode(raw) for _, raw in kv.scan(ACTIVE, prefix_end(ACTIVE))]


def write_error(kv: Any, path: str, *, exempt: frozenset[int] = frozenset()) -> Unavailable | None:
    """The error for a change of ``path`` under a fence (None: allowed). ``exempt``: moves
    whose own steps these are."""
    for f in active(kv):
        if f.move_id in exempt:
            continue
        if (f.state != ABORTED and under(path, f.src)) or (
            f.state != SWITCHED and under(path, f.dst)
        ):
            return _moving(path, f)
    return None


def fence_below(kv: Any, directory: str) -> Unavailable | None:
    """The error for removing or moving ``directory`` whole while a fence is in it."""
    for f in active(kv):
        if under(f.src, directory) or under(f.dst, directory):
            return _moving(directory, f)
    return None


def hidden_by(kv: Any, path: str, locked_by: Any) -> int:
    """The move (or switch transaction) a reader of ``path`` must wait for, 0 for none:
    paths strictly below a side that is not live here, and below ``src`` while the switch
    transaction holds ``src`` locked. ``locked_by``: ``transactions.locked_by``."""
    for f in active(kv):
        below_src, below_dst = paths.is_ancestor(f.src, path), paths.is_ancestor(f.dst, path)
        if not (below_src or below_dst):
            continue
        if below_dst and f.state != SWITCHED:
            return f.move_id
        if below_src and f.state == SWITCHED:
            return f.move_id
        if f.state == COPYING:
            holder = int(locked_by(kv, f.src))
            if holder:
                return holder
    return 0


def _moving(path: str, f: Fence) -> Unavailable:
    return Unavailable(
        "locked",
        message=f"{path} is in a directory tree being moved ({f.src} -> {f.dst}, move "
        f"{f.move_id}); retry when the move is over",
    )
