"""Directory quotas on a sharded namespace, as HDFS has them.

A quota on directory Q limits its subtree: ``names``, the files and directories in it, Q itself
included (HDFS's name quota), and ``space``, the bytes of its files times their replication
(HDFS's space quota; a block being written counts whole, ``block_size`` x replication, from
when it is allocated, as HDFS reserves it, and the file's actual length once closed).

The subtree of Q is spread over the shards (an entry lives on the shard of its parent
directory), so the usage of Q is a sum over shards. Each shard keeps, in its replicated store,
in the same write as the records they count:

    \\x01qL <Q>                    Q's limits {"n": names|null, "s": space|null, "v": version}:
                                  on EVERY shard (a set is proposed on each)
    \\x01qU <Q>                    [names, space] of the entries under Q (and Q's own entry)
                                  that THIS shard holds: exact, derived from every write of
                                  an entry (:func:`usage_writes`, through ``_derived``), so
                                  creates, deletes, renames, transactions and resharding moves
                                  all count alike
    \\x01qR <Q> \\x00 <shard>       the usage another shard last reported for Q

A command that adds names or space under Q (create, mkdir, add_block, complete, set
replication, rename, a transaction's part) is refused with ``QuotaExceeded`` when this shard's
exact usage plus the other shards' last reports plus what it adds passes the limit
(:func:`check`). Each shard's leader reports its usage to the other shards about every second
(``keelfs.master.quota_service``). What is guaranteed:

- with the subtree on one shard (or the others holding nothing under Q), exact: the limit is
  never passed;
- in general the usage may pass the limit by at most what the OTHER shards admitted under Q
  since their last report reached this shard (each shard checks against its own exact count),
  i.e. a bounded overshoot while several shards write under Q at once, caught up within a
  report interval; and by what undecided cross-shard transactions bring in (checked at
  prepare, counted when applied);
- a resharding move counts the records it copies on the new shard as soon as they are written
  and on the old one until it drops them: during a move the usage is over-counted (stricter,
  never looser), exact again when the move ends.

Quotas are directory attributes keyed by path: a directory with a quota (or an ancestor of
one) cannot be renamed or deleted until the quota is cleared (``keelfs.master``): moving the
quota with it would need every shard changed atomically. A quota on ``/`` is not supported.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from keelfs.errors import QuotaExceeded
from keelfs.meta import paths
from keelfs.meta.kvstore import Txn, prefix_end
from keelfs.meta.records import Inode, decode_cached

__all__ = [
    "Limits",
    "Usage",
    "check",
    "clear_reports",
    "deltas",
    "inode_usage",
    "limits",
    "local_usage",
    "reported_usage",
    "roots_above",
    "set_limits",
    "usage_writes",
]

LIMIT = b"\x01qL"
USAGE = b"\x01qU"
REPORT = b"\x01qR"
_ENTRY = b"E"


class _Reader(Protocol):
    def get(self, key: bytes) -> bytes | None: ...
    def scan(self, start: bytes, end: bytes) -> Iterable[tuple[bytes, bytes]]: ...


@dataclass(frozen=True, slots=True)
class Limits:
    """A directory's quota: None is no limit of that kind. ``version`` orders sets."""

    names: int | None
    space: int | None
    version: int

    @property
    def active(self) -> bool:
        return self.names is not None or self.space is not None

    def encode(self) -> bytes:
        return json.dumps({"n": self.names, "s": self.space, "v": self.version}).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Limits:
        body = json.loads(raw)
        return cls(body["n"], body["s"], int(body["v"]))


@dataclass(frozen=True, slots=True)
class Usage:
    names: int = 0
    space: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.names + other.names, self.space + other.space)

    def __sub__(self, other: Usage) -> Usage:
        return Usage(self.names - other.names, self.space - other.space)

    def encode(self) -> bytes:
        return json.dumps([self.names, self.space]).encode()

    @classmethod
    def decode(cls, raw: bytes | None) -> Usage:
        if raw is None:
            return cls()
        names, space = json.loads(raw)
        return cls(int(names), int(space))


def _b(text: str) -> bytes:
    return text.encode("utf-8")


def inode_usage(inode: Inode | None) -> Usage:
    """What one entry counts: a name, and a file's space (a block being written counts
    ``block_size`` whole, as HDFS reserves it)."""
    if inode is None:
        return Usage()
    if inode.is_dir:
        return Usage(1, 0)
    if inode.under_construction and inode.blocks:
        written = sum(b.length for b in inode.blocks[:-1])
        return Usage(1, (written + inode.block_size) * inode.replication)
    return Usage(1, inode.length * inode.replication)


def limits(kv: _Reader) -> dict[str, Limits]:
    """Every active quota this shard knows: directory -> limits."""
    out: dict[str, Limits] = {}
    for key, raw in kv.scan(LIMIT, prefix_end(LIMIT)):
        found = Limits.decode(raw)
        if found.active:
            out[key[len(LIMIT) :].decode()] = found
    return out


def roots_above(path: str, roots: Mapping[str, object]) -> list[str]:
    """The quota directories whose subtree holds ``path`` (``path`` itself included)."""
    if not roots:
        return []
    return [a for a in [*paths.ancestors(path)[1:], path] if a in roots]


def _entry_path(key: bytes) -> str:
    parent, _, name = key[len(_ENTRY) :].partition(b"\x00")
    return paths.join(parent.decode(), name.decode())


def _decoded(raw: bytes | None) -> Inode | None:
    return None if raw is None else decode_cached(raw)


def deltas(
    before: _Reader, writes: Mapping[bytes, bytes | None], roots: Mapping[str, object]
) -> dict[str, Usage]:
    """What ``writes`` (over the state ``before``) change under each quota directory."""
    out: dict[str, Usage] = {}
    if not roots:
        return out
    for key, raw in writes.items():
        if not key.startswith(_ENTRY):
            continue
        path = _entry_path(key)
        above = roots_above(path, roots)
        if not above:
            continue
        old = before.get(key)
        if old == raw:
            continue
        change = inode_usage(_decoded(raw)) - inode_usage(_decoded(old))
        if change == Usage():
            continue
        for root in above:
            out[root] = out.get(root, Usage()) + change
    return out


def local_usage(kv: _Reader, root: str) -> Usage:
    """What this shard holds under ``root`` (as of ``kv``)."""
    return Usage.decode(kv.get(USAGE + _b(root)))


def reported_usage(kv: _Reader, root: str) -> dict[str, Usage]:
    """The other shards' last reports for ``root``: shard -> usage."""
    prefix = REPORT + _b(root) + b"\x00"
    return {
        key[len(prefix) :].decode(): Usage.decode(raw)
        for key, raw in kv.scan(prefix, prefix_end(prefix))
    }


def usage_writes(
    before: _Reader, writes: Mapping[bytes, bytes | None], roots: Mapping[str, object]
) -> dict[bytes, bytes]:
    """The counters (``\\x01qU``) after ``writes``: added to the same atomic write."""
    out: dict[bytes, bytes] = {}
    for root, change in deltas(before, writes, roots).items():
        key = USAGE + _b(root)
        current = Usage.decode(writes.get(key, before.get(key)))
        out[key] = (current + change).encode()
    return out


def check(kv: _Reader, changes: Mapping[str, Usage], roots: Mapping[str, Limits]) -> None:
    """``QuotaExceeded`` if ``changes`` (what a command adds under each quota directory)
    would pass a limit, counting this shard exactly (``kv``: the state before the command)
    and the others as last reported."""
    for root, change in sorted(changes.items()):
        limit = roots.get(root)
        if limit is None or (change.names <= 0 and change.space <= 0):
            continue
        used = local_usage(kv, root)
        for other in reported_usage(kv, root).values():
            used = used + other
        if change.names > 0 and limit.names is not None and used.names + change.names > limit.names:
            raise QuotaExceeded(root, "names", limit.names, used.names, change.names)
        if change.space > 0 and limit.space is not None and used.space + change.space > limit.space:
            raise QuotaExceeded(root, "space", limit.space, used.space, change.space)


def set_limits(txn: Txn, root: str, new: Limits, subtree: Iterable[tuple[bytes, bytes]]) -> bool:
    """Record ``new`` for ``root`` unless a newer version is recorded; a fresh quota counts
    what this shard holds under ``root`` (``subtree``: its entries here, the root's own
    included). False: an older set, ignored."""
    key = LIMIT + _b(root)
    raw = txn.get(key)
    old = None if raw is None else Limits.decode(raw)
    if old is not None and old.version > new.version:
        return False
    txn.put(key, new.encode())
    usage_key = USAGE + _b(root)
    if not new.active:
        txn.delete(usage_key)
        clear_reports(txn, root)
    elif old is None or not old.active:
        total = Usage()
        for _, value in subtree:
            total = total + inode_usage(decode_cached(value))
        txn.put(usage_key, total.encode())
    return True


def clear_reports(txn: Txn, root: str) -> None:
    prefix = REPORT + _b(root) + b"\x00"
    for key, _ in list(txn.scan(prefix, prefix_end(prefix))):
        txn.delete(key)


def record_report(
    txn: Txn, shard: str, usage: Mapping[str, Usage], roots: Mapping[str, object]
) -> int:
    """Keep ``shard``'s report for each quota directory in it that is known here (a report
    may name only some: the one a new quota's first exchange is about). The number kept."""
    kept = 0
    for root, got in usage.items():
        if root not in roots:
            continue
        key = REPORT + _b(root) + b"\x00" + _b(shard)
        if got == Usage():
            txn.delete(key)
        else:
            txn.put(key, got.encode())
        kept += 1
    return kept
