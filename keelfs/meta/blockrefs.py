"""Which blocks a data shard's namespace references: an index kept with every write.

Deleting an orphan block (reported by a chunk server, referenced by no file) is only safe on an
authoritative answer that NO shard references it (DESIGN §2.12). A walk's memory is not such
an answer: a file renamed into a shard whose walk has not reached it yet looks unreferenced.
So each shard's state machine keeps, in the same RocksDB write as the change itself, a reverse
index from every block to the records that reference it:

    B <u64 block id> <record key>      empty; one per (block, referencing record)

A record references a block when it is:

- an entry ``E...`` holding a file whose block list names it (moved-in copies of a resharding
  move count as soon as they are written, hidden or not: they are records of this store);
- a transaction record ``T...`` that is not decided yet, for every file record in any of its
  parts (a participant's prepared record holds the file that will land here; a coordinator's
  pending record the parts it hands out). A decided record has applied its own part here (or
  kept the original), so it no longer needs to hold anything;
- a snapshot's copy ``S...`` of an entry holding such a file (``keelfs.meta.snapshots``).

Besides the index, ``\\x01blockrefs-gained`` counts the times a block went from unreferenced to
referenced here by anything but ``AddBlock`` of a new block (a rename or a move bringing a file
in). The orphan collector reads every shard twice and requires every shard's count unchanged in
between: a reference that travelled from a shard read late to a shard read early is then seen
(see ``keelfs.master.orphans``).

The index is replicated state (it is in snapshots and derived deterministically from the
records), so every replica holds the same one. A store written before the index existed is
indexed once when opened, and a restored snapshot is indexed again (``ensure``).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Iterator, Mapping
from typing import Protocol

from keelfs.meta.kvstore import KVStore, prefix_end

__all__ = [
    "GAINED",
    "INDEX",
    "ensure",
    "gained",
    "held_by_snapshots",
    "index_writes",
    "referenced",
    "refs_of",
]

INDEX = b"B"
GAINED = b"\x01blockrefs-gained"
VERSION = b"\x00blockrefs-version"
"""This replica's marker that its store is indexed (local: never in a snapshot)."""
_VERSION_1 = b"1"
_ENTRY = b"E"
_TXN = b"T"
_COPY = b"S"
"""A snapshot's copy of a record (``keelfs.meta.snapshots``): references its file's blocks."""
_U64 = struct.Struct(">Q")
_REF_AT = len(INDEX) + _U64.size
"""Where, in an index key, the referencing record's key begins (after the block id)."""
_INODE_FILE = "f"
"""``keelfs.meta.records``' kind code of a file (an inode record is a JSON list)."""


class _Reader(Protocol):
    def get(self, key: bytes) -> bytes | None: ...
    def scan(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]: ...


def _block_prefix(block_id: int) -> bytes:
    return INDEX + _U64.pack(block_id)


def _inode_blocks(record: str | bytes) -> set[int]:
    text = record.decode() if isinstance(record, bytes) else record
    if "[[" not in text:
        return set()  # no block list entry (``[[id, gen, length], ...]``): nothing to decode
    body = json.loads(text)
    if body[1] != _INODE_FILE:
        return set()
    return {int(b[0]) for b in body[9]}


def refs_of(key: bytes, value: bytes | None) -> set[int]:
    """The blocks that the record ``key`` with ``value`` references (see the module doc)."""
    if value is None:
        return set()
    kind = key[:1]
    if kind in (_ENTRY, _COPY):
        return _inode_blocks(value)
    if kind == _TXN:
        body = json.loads(value)
        if body["state"] in ("committed", "aborted"):
            return set()
        out: set[int] = set()
        for part in [body["part"], *body["parts"].values()]:
            for _kind, _path, record in json.loads(part):
                if record:
                    out |= _inode_blocks(record)
        return out
    return set()


def index_writes(
    before: _Reader, writes: Mapping[bytes, bytes | None], fresh: Iterable[int] = ()
) -> dict[bytes, bytes | None]:
    """The index changes that go with ``writes`` (staged over the state ``before``);
    ``fresh``: block ids new to the whole cluster in this apply (``AddBlock``), which do not
    count as gained."""
    out: dict[bytes, bytes | None] = {}
    added: set[int] = set()
    for key, value in writes.items():
        kind = key[:1]
        if kind not in (_ENTRY, _TXN, _COPY):
            continue
        old, new = refs_of(key, before.get(key)), refs_of(key, value)
        for block_id in old - new:
            out[_block_prefix(block_id) + key] = None
        for block_id in new - old:
            out[_block_prefix(block_id) + key] = b""
            added.add(block_id)
    newly = added - set(fresh)
    gained_now = sum(1 for b in newly if not _any(before, b))
    if gained_now:
        out[GAINED] = _U64.pack(gained(before) + gained_now)
    return out


def _any(kv: _Reader, block_id: int) -> bool:
    prefix = _block_prefix(block_id)
    return next(iter(kv.scan(prefix, prefix_end(prefix))), None) is not None


def referenced(kv: _Reader, block_ids: Iterable[int]) -> set[int]:
    """Those of ``block_ids`` that a record of this store references."""
    return {b for b in block_ids if _any(kv, b)}


def held_by_snapshots(kv: _Reader, block_id: int) -> bool:
    """Whether a snapshot's copy of a record here references ``block_id``."""
    prefix = _block_prefix(block_id) + _COPY
    return next(iter(kv.scan(prefix, prefix_end(prefix))), None) is not None


def held_by_snapshots_after(
    before: _Reader, changes: Mapping[bytes, bytes | None], block_ids: Iterable[int]
) -> set[int]:
    """Those of ``block_ids`` a snapshot's copy references in the state ``before`` with the
    index ``changes`` of :func:`index_writes` applied (one pass over ``changes``: only a
    snapshot being taken or dropped changes copies' entries, so they are usually none)."""
    ids = set(block_ids)
    copies: dict[int, dict[bytes, bytes | None]] = {}  # block id -> its copies' index changes
    for key, value in changes.items():
        if key.startswith(INDEX) and key[_REF_AT : _REF_AT + 1] == _COPY:
            block_id = _U64.unpack_from(key, len(INDEX))[0]
            if block_id in ids:
                copies.setdefault(block_id, {})[key] = value
    return {block_id for block_id in ids if _copy_refs(before, copies.get(block_id, {}), block_id)}


def _copy_refs(before: _Reader, changed: Mapping[bytes, bytes | None], block_id: int) -> bool:
    if any(value is not None for value in changed.values()):
        return True
    prefix = _block_prefix(block_id) + _COPY
    return any(
        changed.get(bytes(k), b"") is not None for k, _ in before.scan(prefix, prefix_end(prefix))
    )


def gained(kv: _Reader) -> int:
    raw = kv.get(GAINED)
    return 0 if raw is None else int(_U64.unpack(raw)[0])


def ensure(store: KVStore, *, restored: bool = False) -> None:
    """Index a store written before the index existed, or just ``restored`` from a snapshot
    (which may come from a member that kept none): derived from the records alone, so every
    replica builds the same index."""
    if not restored and store.get(VERSION) == _VERSION_1:
        return
    batch: dict[bytes, bytes | None] = {}
    for prefix in (_ENTRY, _TXN, _COPY):
        for key, value in store.scan(prefix, prefix_end(prefix)):
            for block_id in refs_of(key, value):
                batch[_block_prefix(block_id) + bytes(key)] = b""
            if len(batch) >= 10_000:
                store.write(batch)
                batch = {}
    batch[VERSION] = _VERSION_1
    store.write(batch)
