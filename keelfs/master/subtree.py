"""Building transactions over a directory subtree that spans shards (move or delete).

A directory ``D``'s self-record and its children's entries live on ``D``'s own shard; its own
entry on its parent's shard. Moving ``D`` to ``D'`` moves every record of every directory in
the subtree to the shard that owns the new path; deleting it removes them. The master reads
the subtree first (:func:`walk`, linearizable reads of the stored records), then writes steps
that CHECK every record is still exactly what it read (``entry``/``self``: a child added or
removed changes the directory's self-record, an attribute change the entry) and CHANGE them.
Anything that changed in between makes a shard refuse its part, the transaction aborts and
the client's retry reads again. The whole transaction is one log entry on the coordinator, so
a subtree is limited to what fits in one (:data:`MAX_ENTRIES` records; a move also
:data:`MAX_RECORD_BYTES` of them: inline files carry their data in their records, which the
new shard must get).
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any

from keelfs.errors import InvalidArgument, LeaseConflict
from keelfs.meta.principals import Guard, depth, rebase
from keelfs.meta.records import Inode
from keelfs.meta.shardmap import ShardMap
from keelfs.meta.transactions import Step, record_digest

__all__ = [
    "MAX_ENTRIES",
    "TreeTooLarge",
    "MAX_RECORD_BYTES",
    "DirRecords",
    "delete_parts",
    "move_parts",
    "regarded",
    "walk",
]

MAX_ENTRIES = 2_000
"""Records a cross-shard subtree operation may touch (one command carries them all); a
recursive delete of more goes in steps (``keelfs.master.tree_delete``)."""
MAX_RECORD_BYTES = 384 * 1024
"""Bytes of stored records a cross-shard subtree move may carry: its transaction holds each
record once (written on the new shard; the old shard checks a digest, ``entry_digest``) with
~300 bytes of steps per record besides (paths, digest), and its first entry must stay under
the 1 MiB command limit (``keelfs.meta.commands.MAX_COMMAND_BYTES``). Plain records are ~100
bytes (2,000 of them: ~200 KB); an inline file's is up to ~88 KB. A delete carries digests
only: :data:`MAX_ENTRIES` bounds it."""


class TreeTooLarge(InvalidArgument):
    """A subtree of more than :data:`MAX_ENTRIES` records (or, moving, :data:`MAX_RECORD_BYTES`
    of them): a move goes on in steps (``keelfs.master.tree_move``), a recursive delete too
    (``keelfs.master.tree_delete``)."""


@dataclass(frozen=True)
class DirRecords:
    path: str
    self_record: str
    children: tuple[tuple[str, str, bool], ...]
    """(path, stored record, is a directory) of every child."""


async def walk(client: Any, top: str, *, moving: bool, bounded: bool = True) -> list[DirRecords]:
    """Every directory of the subtree at ``top`` with its records, parents before children.
    ``client``: the master's internal ``AsyncClient``. ``moving``: refuse files being
    written (their leases are kept by path and stay on their shard); a delete takes them.
    ``bounded``: refuse a subtree too large for one transaction (:class:`TreeTooLarge`); a
    move in steps reads a fenced tree of any size (``keelfs.master.tree_move``)."""
    out: list[DirRecords] = []
    pending = deque([top])
    count = size = 0
    while pending:
        directory = pending.popleft()
        self_record, entries = await client.list_records(directory)
        children = []
        for info, record in entries:
            if moving and info.under_construction:
                raise LeaseConflict(
                    info.path,
                    info.lease_user,
                    message=f"{info.path} is open for writing: close it first",
                )
            children.append((info.path, record, info.is_dir))
            if info.is_dir:
                pending.append(info.path)
        count += 1 + len(children)
        if moving:  # the records are written on the new shard; checks carry digests only
            size += len(self_record) + sum(len(record) for _, record, _ in children)
        if bounded:
            _check_fits(top, count, size)
        out.append(DirRecords(directory, self_record, tuple(children)))
    return out


def _check_fits(top: str, count: int, size: int) -> None:
    """:class:`TreeTooLarge` once what was read of ``top`` exceeds one transaction."""
    if size > MAX_RECORD_BYTES:
        raise TreeTooLarge(
            f"{top} holds more than {MAX_RECORD_BYTES} bytes of records spread over "
            "shards (small files keep their data in them): too large to move in one "
            "transaction",
            "path",
        )
    if count > MAX_ENTRIES:
        raise TreeTooLarge(
            f"{top} holds more than {MAX_ENTRIES} entries spread over shards: too large "
            "to move or delete in one transaction",
            "path",
        )


def _moved(path: str, src: str, dst: str) -> str:
    return dst + path[len(src) :]


def move_parts(
    m: ShardMap,
    dirs: list[DirRecords],
    src: str,
    dst: str,
    dst_guards: tuple[Guard, ...] = (),
) -> dict[str, list[Step]]:
    """Per shard, the steps that move the subtree ``src`` (walked into ``dirs``) to ``dst``
    (its top entry excluded: the caller moves that, its record through :func:`regarded`).
    Every directory record is written with its traverse guards of the new place
    (``dst_guards``: those of a new directory in ``dst``'s parent)."""
    parts: dict[str, list[Step]] = defaultdict(list)
    for d in dirs:
        old, new = m.shard_for_directory(d.path), m.shard_for_directory(_moved(d.path, src, dst))
        parts[old].append(Step("self", d.path, d.self_record))
        parts[old].append(Step("del_self", d.path))
        moved_self = regarded(d.self_record, src, dst, dst_guards)
        parts[new].append(Step("put_self", _moved(d.path, src, dst), moved_self))
        for path, record, is_dir in d.children:
            check = Step("entry_digest", path, record_digest(record))
            parts[old] += [check, Step("del_entry", path)]
            moved = regarded(record, src, dst, dst_guards) if is_dir else record
            parts[new].append(Step("put_entry", _moved(path, src, dst), moved))
    return dict(parts)


def regarded(record: str, src: str, dst: str, dst_guards: tuple[Guard, ...]) -> str:
    """A directory record of the subtree moved from ``src`` to ``dst``, with its guards
    rebased there (``keelfs.meta.principals.rebase``; the same-shard rename does the same)."""
    inode = Inode.decode(record.encode())
    guards = rebase(inode.guards, depth(src), depth(dst), dst_guards)
    if guards == inode.guards:
        return record
    return inode.evolve(guards=guards).encode().decode()


def delete_parts(m: ShardMap, dirs: list[DirRecords]) -> tuple[dict[str, list[Step]], int, int]:
    """Per shard, the steps that delete the walked subtree (its top entry excluded); the
    numbers of files and directories below the top."""
    parts: dict[str, list[Step]] = defaultdict(list)
    files = subdirs = 0
    for d in dirs:
        shard = m.shard_for_directory(d.path)
        parts[shard] += [Step("self", d.path, d.self_record), Step("del_self", d.path)]
        for path, record, is_dir in d.children:
            parts[shard].append(Step("entry_digest", path, record_digest(record)))
            # a file's entry goes with its blocks queued and its lease dropped
            parts[shard].append(Step("del_entry" if is_dir else "replace", path))
            if is_dir:
                subdirs += 1
            else:
                files += 1
    return dict(parts), files, subdirs
