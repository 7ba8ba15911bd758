"""Snapshots of a directory (HDFS-style, read-only, ``dir/.snapshot/<name>/...``).

The design. A directory's subtree is spread over the shards (an entry lives on the shard of
its parent directory's hash: ``keelfs.meta.shard_records``), so a snapshot is taken on every
shard, each copying its own records under the directory:

- **Snapshottable directories** and the **list of snapshots** are kept on every shard (like
  quotas), proposed there by the master that serves the request
  (``keelfs.master.snapshot_service``)::

      \\x01nA <dir>                         the directory is snapshottable ({} JSON)
      \\x01nN <dir> \\x01 <name>              snapshot ``name`` of ``dir``: {"created": ms}

- **Copies**: ``SnapshotTake`` copies, in ONE apply, every namespace record of this shard at
  or under the directory (its entries ``E...`` and self-records ``D...``) to::

      S <dir> \\x01 <name> \\x01 <the record's key>   the record as it was

  (``\\x01`` cannot occur in a path.) A copy stays on the shard of the path it was taken from,
  so the ring places ``dir/.snapshot/name/a/b`` as it placed ``dir/a/b`` then
  (``keelfs.meta.paths.live_path``), and reads go through a view of the store that shows the
  copies in place of the live records of the subtree (``SnapshotView``): stat, list, du and
  the block locations of a file in a snapshot run the ordinary code on that view, permission
  checks included (as the records were, and the live ancestors above the directory).

- **Blocks** (DESIGN §2.12): a copy references its file's blocks like an entry does
  (``keelfs.meta.blockrefs`` indexes ``S`` records), so the orphan collector never takes them;
  and a delete, overwrite or truncate of the live file never queues a block that a copy here
  still references (``blockrefs.held_by_snapshots``, in ``ShardRecords._derive``). Dropping a
  snapshot deletes its copies only: blocks nothing references any more become orphans, which
  the orphan collector deletes after asking every shard (a copy's block may still be
  referenced by a live file that has since moved to another shard, so the drop cannot queue
  it). A file that moved to another shard after the snapshot and is deleted there is covered
  by the block layer asking the other shards before it deletes queued blocks of a shard that
  holds snapshots (``keelfs.master.replication``).

Why copies rather than copy-on-write diffs: records are placed by path on many shards, and a
copy keeps each shard's snapshot a plain, self-contained set of records that one apply writes
(so a shard has all of its part or none), that a Raft snapshot carries like any record, and
that reads serve with the code they already have. The cost is the metadata of the subtree
once per snapshot (no data is copied); a shard refuses a part of more than
``MAX_RECORDS_PER_SHARD`` records.

What a snapshot across shards guarantees: each shard's part is the state of that shard at one
point of its log, and no transaction was locking a record of the subtree there at that point
(a take waits, ``UNAVAILABLE`` "locked", until it is decided); the parts of different shards
are taken one after another, not at one instant. So a change made while the snapshot is being
taken may be in the parts of some shards and not others; a cross-shard rename during it may
show the moved entry in both places or in neither. A snapshot is listed (``complete``) only
once every shard of the map holds its part; a create that failed half-way is finished by
running it again (the shards that hold their part keep it) or removed by ``snapshot delete``.

Quotas: the copies are not counted in any quota (HDFS counts the space a snapshot holds in the
quota of the directory; here the copies are metadata only, and the blocks they hold are
counted only while a live file holds them too).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol, Self

from keelfs.errors import AlreadyExists, InvalidArgument, NotFound, ResourceExhausted
from keelfs.meta import paths
from keelfs.meta.commands import SnapshotAllow, SnapshotDrop, SnapshotRename, SnapshotTake
from keelfs.meta.kvstore import Txn, prefix_end
from keelfs.meta.machine import Context
from keelfs.meta.records import FileInfo, Listing, decode_cached
from keelfs.meta.shard_records import (
    ShardRecords,
    _b,
    _entry_key,
    _self_key,
    _subtree_entry_ranges,
    _subtree_self_range,
)

__all__ = [
    "ALLOWED",
    "COPY",
    "MAX_RECORDS_PER_SHARD",
    "REGISTRY",
    "SnapshotSteps",
    "SnapshotView",
    "refuse_snapshottable",
]

ALLOWED = b"\x01nA"
REGISTRY = b"\x01nN"
COPY = b"S"
_SEP = b"\x01"
MAX_RECORDS_PER_SHARD = 100_000
"""The most records one shard copies for one snapshot (one apply writes them all)."""


class _Reader(Protocol):
    def get(self, key: bytes) -> bytes | None: ...
    def scan(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]: ...


def _allowed_key(root: str) -> bytes:
    return ALLOWED + _b(root)


def _registry_prefix(root: str) -> bytes:
    return REGISTRY + _b(root) + _SEP


def _registry_key(root: str, name: str) -> bytes:
    return _registry_prefix(root) + _b(name)


def copy_prefix(root: str, name: str) -> bytes:
    """The key prefix of every copy of snapshot ``name`` of ``root`` on a shard."""
    return COPY + _b(root) + _SEP + _b(name) + _SEP


def _in_tree(root: str, path: str) -> bool:
    return path == root or paths.is_ancestor(root, path)


def _record_path(key: bytes) -> str | None:
    """The path of namespace record ``key`` (an entry or a self-record), None otherwise."""
    kind = key[:1]
    if kind == b"D":
        return key[1:].decode()
    if kind == b"E":
        parent, _, name = key[1:].partition(b"\x00")
        return paths.join(parent.decode(), name.decode())
    return None


def _range_dir(start: bytes) -> str | None:
    """The directory a scan of namespace records starting at ``start`` lists: the children
    (``E<dir>\\0``...) or everything deeper (``E<dir>/``, ``D<dir>/``)."""
    kind = start[:1]
    if kind not in (b"D", b"E"):
        return None
    body = start[1:].partition(b"\x00")[0].decode()
    if body.endswith("/") and body != "/":
        body = body[:-1]
    return body or "/"


def live_records(kv: _Reader, root: str) -> Iterator[tuple[bytes, bytes]]:
    """Every namespace record of this store at or under ``root``."""
    for key in (_entry_key(root) if root != paths.ROOT else None, _self_key(root)):
        if key is None:
            continue
        value = kv.get(key)
        if value is not None:
            yield key, value
    for start, end in [*_subtree_entry_ranges(root), _subtree_self_range(root)]:
        if root == paths.ROOT and start[:1] == b"D":
            start, end = b"D/", prefix_end(b"D/")
            yield from ((k, v) for k, v in kv.scan(start, end) if k != _self_key(root))
            continue
        yield from kv.scan(start, end)


def refuse_snapshottable(kv: _Reader, path: str, what: str) -> None:
    """``InvalidArgument`` if ``path`` is or holds a snapshottable directory: one with
    snapshots cannot go (as HDFS), and none can move or go while snapshottable, since its
    snapshots and its mark are kept by its path on every shard. Checked by the master before
    it plans a delete or rename, and again by the shard's apply (``Delete``, ``Rename``, a
    transaction's removing steps), so an ``allow`` racing a rename either lands first (the
    rename is refused) or finds the directory gone (``keelfs.master.snapshot_service``)."""
    path = paths.normalize(path)
    for key, _ in kv.scan(ALLOWED, prefix_end(ALLOWED)):
        root = key[len(ALLOWED) :].decode()
        if not _in_tree(path, root):
            continue
        prefix = _registry_prefix(root)
        if next(iter(kv.scan(prefix, prefix_end(prefix))), None) is not None:
            raise InvalidArgument(
                f"cannot {what} {path}: {root} has snapshots "
                f"(keelfs snapshot delete {root} NAME for each first)",
                "path",
            )
        raise InvalidArgument(
            f"cannot {what} {path}: {root} is snapshottable "
            f"(keelfs admin disallow-snapshot {root} first)",
            "path",
        )


class SnapshotView:
    """The store as snapshot ``name`` of ``root`` shows it: namespace records at or under
    ``root`` are the snapshot's copies, everything else (the ancestors above ``root``) the
    live store. Read-only."""

    def __init__(self, store: _Reader, root: str, name: str) -> None:
        self._store = store
        self._root = root
        self._prefix = copy_prefix(root, name)

    def _mapped(self, path: str | None) -> bool:
        return path is not None and _in_tree(self._root, path)

    def get(self, key: bytes) -> bytes | None:
        if self._mapped(_record_path(key)):
            return self._store.get(self._prefix + key)
        return self._store.get(key)

    def scan(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        if not self._mapped(_range_dir(start)):
            yield from self._store.scan(start, end)
            return
        cut = len(self._prefix)
        for key, value in self._store.scan(self._prefix + start, self._prefix + end):
            yield key[cut:], value


def _in_snapshot(snap: paths.SnapshotPath, live: str) -> str:
    """The snapshot path of a record read at ``live`` through ``snap``'s view."""
    base = paths.join(snap.root, paths.SNAPSHOT_DIR)
    assert snap.name is not None
    base = paths.join(base, snap.name)
    rest = live[len(snap.root) :] if snap.root != paths.ROOT else live
    return base if rest in ("", "/") else base + rest


class SnapshotSteps(ShardRecords):
    """The snapshot commands (``snapshot_allow``, ``snapshot_take``, ``snapshot_drop``) and
    the reads through ``.snapshot`` paths (see the module doc). The reads of live paths it
    runs over a snapshot's view are the namespace's (``ShardStateMachine``)."""

    if TYPE_CHECKING:

        def _live_stat(self, path: str, **kwargs: Any) -> FileInfo: ...
        def _live_access(self, path: str, access: int, **kwargs: Any) -> FileInfo: ...
        def _live_list(
            self, path: str, start_after: str | None, limit: int, **kw: Any
        ) -> Listing: ...

    # -- reads -------------------------------------------------------------------------------
    def snapshottable(self) -> list[str]:
        """Every snapshottable directory (as this shard knows them)."""
        return [
            k[len(ALLOWED) :].decode() for k, _ in self._store.scan(ALLOWED, prefix_end(ALLOWED))
        ]

    def is_snapshottable(self, root: str) -> bool:
        return self._store.get(_allowed_key(paths.normalize(root))) is not None

    def snapshots(self, root: str) -> list[dict[str, Any]]:
        """The snapshots of ``root`` whose part this shard holds: ``{"name", "created"}``."""
        prefix = _registry_prefix(paths.normalize(root))
        out: list[dict[str, Any]] = []
        for key, raw in self._store.scan(prefix, prefix_end(prefix)):
            out.append({"name": key[len(prefix) :].decode(), **json.loads(raw)})
        return out

    def refuse_snapshottable(self, kv: _Reader | None, path: str, what: str) -> None:
        """``refuse_snapshottable`` over ``kv`` (default: the store)."""
        refuse_snapshottable(self._store if kv is None else kv, path, what)

    def has_snapshots(self) -> bool:
        return next(iter(self._store.scan(REGISTRY, prefix_end(REGISTRY))), None) is not None

    def snapshot_records(self, root: str, name: str | None) -> dict[str, str]:
        """The entries of snapshot ``name`` of ``root`` this shard holds (None: the live
        ones), path -> record: what a diff compares."""
        root = paths.normalize(root)
        if name is not None:
            self._require_snapshot(root, name)
            kv: _Reader = SnapshotView(self._store, root, name)
        else:
            kv = self._store
        out: dict[str, str] = {}
        for key, value in live_records(kv, root):
            if key[:1] == b"E":
                path = _record_path(key)
                assert path is not None
                out[path] = bytes(value).decode()
        return out

    def _require_snapshot(self, root: str, name: str) -> dict[str, Any]:
        raw = self._store.get(_registry_key(root, name))
        if raw is None:
            raise NotFound(
                paths.join(paths.join(root, paths.SNAPSHOT_DIR), name),
                "snapshot",
                message=f"{root} has no snapshot {name!r}",
            )
        body: dict[str, Any] = json.loads(raw)
        return body

    def _view(self, snap: paths.SnapshotPath) -> Self:
        """This state machine reading through ``snap``'s view (a shallow copy: reads only)."""
        assert snap.name is not None
        self._require_snapshot(snap.root, snap.name)
        clone = copy.copy(self)
        clone._store = SnapshotView(self._store, snap.root, snap.name)  # type: ignore[assignment]
        return clone

    def _snapshot_dir_info(self, snap: paths.SnapshotPath, **reach: Any) -> FileInfo:
        """``root/.snapshot`` itself: a read-only directory with ``root``'s attributes."""
        if not self.is_snapshottable(snap.root):
            raise NotFound(
                paths.join(snap.root, paths.SNAPSHOT_DIR),
                "path",
                message=f"{snap.root} is not snapshottable",
            )
        live = self._live_stat(snap.root, **reach)
        return replace(live, path=paths.join(snap.root, paths.SNAPSHOT_DIR))

    def snapshot_stat(self, snap: paths.SnapshotPath, **kwargs: Any) -> FileInfo:
        if snap.name is None:
            return self._snapshot_dir_info(snap, caller=kwargs.get("caller"))
        info: FileInfo = self._view(snap)._live_stat(snap.live, **kwargs)
        return _frozen(info, _in_snapshot(snap, snap.live))

    def snapshot_access(self, snap: paths.SnapshotPath, access: int, **kwargs: Any) -> FileInfo:
        if snap.name is None:
            return self._snapshot_dir_info(snap, caller=kwargs.get("caller"))
        view = self._view(snap)
        info: FileInfo = view._live_access(snap.live, access, **kwargs)
        return _frozen(info, _in_snapshot(snap, snap.live))

    def snapshot_list(
        self, snap: paths.SnapshotPath, start_after: str | None, limit: int, **kwargs: Any
    ) -> Listing:
        if snap.name is None:
            self._snapshot_dir_info(snap, caller=kwargs.get("caller"))
            names = [s["name"] for s in self.snapshots(snap.root)]
            names = [n for n in names if start_after is None or _b(n) > _b(start_after)]
            out: list[FileInfo] = []
            for name in names[:limit]:
                one = paths.SnapshotPath(snap.root, name, snap.root)
                view = self._view(one)
                record = view._store.get(_self_key(snap.root))
                if record is None:
                    continue
                out.append(
                    _frozen(decode_cached(record).info(snap.root), _in_snapshot(one, snap.root))
                )
            cursor = out[-1].name if len(names) > limit and out else None
            return Listing(tuple(out), cursor)
        listing = self._view(snap)._live_list(snap.live, start_after, limit, **kwargs)
        entries = tuple(_frozen(e, _in_snapshot(snap, e.path)) for e in listing.entries)
        return Listing(entries, listing.cursor)

    # -- commands ------------------------------------------------------------------------------
    def _op_snapshot_allow(self, txn: Txn, cmd: SnapshotAllow, ctx: Context) -> Any:
        root = paths.normalize(cmd.path)
        key = _allowed_key(root)
        if not cmd.allow:
            if txn.get(key) is None:
                return {"changed": False}
            prefix = _registry_prefix(root)
            count = sum(1 for _ in txn.scan(prefix, prefix_end(prefix)))
            if count:
                raise InvalidArgument(
                    f"{root} has {count} snapshot(s): delete them before disallowing snapshots",
                    "path",
                )
            txn.delete(key)
            return {"changed": True}
        if txn.get(key) is not None:
            return {"changed": False}
        for other, _ in txn.scan(ALLOWED, prefix_end(ALLOWED)):
            other_root = other[len(ALLOWED) :].decode()
            if _in_tree(other_root, root) or _in_tree(root, other_root):
                raise InvalidArgument(
                    f"{root} cannot be snapshottable: {other_root} is, and snapshottable "
                    "directories may not nest (as in HDFS)",
                    "path",
                )
        txn.put(key, b"{}")
        return {"changed": True}

    def _op_snapshot_take(self, txn: Txn, cmd: SnapshotTake, ctx: Context) -> Any:
        root = paths.normalize(cmd.path)
        if txn.get(_allowed_key(root)) is None:
            raise InvalidArgument(
                f"{root} is not snapshottable (keelfs admin allow-snapshot {root})", "path"
            )
        key = _registry_key(root, cmd.name)
        existing = txn.get(key)
        if existing is not None:
            return {"taken": False, **json.loads(existing)}
        self._check_unlocked(txn, root, parent=False)
        self._check_subtree_unlocked(txn, root)
        prefix = copy_prefix(root, cmd.name)
        copied = 0
        for live_key, value in list(live_records(txn, root)):
            copied += 1
            if copied > MAX_RECORDS_PER_SHARD:
                raise ResourceExhausted(
                    "snapshot records",
                    MAX_RECORDS_PER_SHARD,
                    message=f"a snapshot of {root} would copy more than "
                    f"{MAX_RECORDS_PER_SHARD} records on one shard",
                )
            txn.put(prefix + live_key, value)
        txn.put(key, json.dumps({"created": cmd.created}).encode())
        return {"taken": True, "created": cmd.created, "records": copied}

    def _op_snapshot_drop(self, txn: Txn, cmd: SnapshotDrop, ctx: Context) -> Any:
        root = paths.normalize(cmd.path)
        key = _registry_key(root, cmd.name)
        prefix = copy_prefix(root, cmd.name)
        dropped = 0
        for copy_key, _ in list(txn.scan(prefix, prefix_end(prefix))):
            txn.delete(copy_key)
            dropped += 1
        found = txn.get(key) is not None
        txn.delete(key)
        return {"dropped": found, "records": dropped}

    def _op_snapshot_rename(self, txn: Txn, cmd: SnapshotRename, ctx: Context) -> Any:
        """Move the part's registry entry and copies to the new name, in one apply. The
        copies' keys change, so the block index follows them in the same write (it is
        derived from the records): the blocks they hold stay referenced throughout."""
        root = paths.normalize(cmd.path)
        old_key, new_key = _registry_key(root, cmd.name), _registry_key(root, cmd.new_name)
        entry = txn.get(old_key)
        if entry is None:
            return {"renamed": False}
        if txn.get(new_key) is not None:
            raise AlreadyExists(
                paths.join(paths.join(root, paths.SNAPSHOT_DIR), cmd.new_name),
                "snapshot",
                message=f"{root} has a snapshot {cmd.new_name!r} already",
            )
        old_prefix, new_prefix = copy_prefix(root, cmd.name), copy_prefix(root, cmd.new_name)
        moved = 0
        for copy_key, value in list(txn.scan(old_prefix, prefix_end(old_prefix))):
            txn.delete(copy_key)
            txn.put(new_prefix + copy_key[len(old_prefix) :], value)
            moved += 1
        txn.delete(old_key)
        txn.put(new_key, entry)
        return {"renamed": True, "records": moved}


def _frozen(info: FileInfo, path: str) -> FileInfo:
    """``info`` shown at snapshot ``path`` (a copy holds no lease)."""
    return replace(info, path=path, lease_holder=0, lease_user="")


CURRENT = "."
"""The name that stands for the live tree in a diff (HDFS's ``snapshotDiff dir s0 .``)."""


def _same_content(a: str, b: str) -> bool:
    """Whether two entry records hold the same file content (a moved file keeps its blocks
    or its inline bytes; a new file never has the blocks of another)."""
    ra, rb = json.loads(a), json.loads(b)
    if ra[1] != "f" or rb[1] != "f":
        return False
    if ra[9]:
        return bool(ra[9] == rb[9])
    inline_a = ra[14] if len(ra) > 14 else None
    inline_b = rb[14] if len(rb) > 14 else None
    return inline_a is not None and inline_a == inline_b and len(inline_a) >= 8


def _relative(root: str, path: str) -> str:
    rest = path[len(root) :] if root != paths.ROOT else path
    return "." if rest in ("", "/") else "." + rest


def _subtree(records: dict[str, str], top: str) -> dict[str, str]:
    return {p[len(top) :]: r for p, r in records.items() if paths.is_ancestor(top, p)}


def diff(root: str, before: dict[str, str], after: dict[str, str]) -> list[dict[str, str]]:
    """HDFS's snapshot diff report of ``root`` from the entries ``before`` to ``after``
    (path -> record, every shard's together): ``{"type": "+"|"-"|"M"|"R", "path"[, "to"]}``
    with paths relative to ``root`` (``./a``), sorted by path.

    There are no inode numbers to follow a rename by, so a rename is recognised by content:
    a file that disappeared and one that appeared with the same non-empty block list (or the
    same inline bytes), or a directory that disappeared and one that appeared with the same
    entries below it (at least one). What a renamed directory holds is not listed again;
    anything else is ``-`` and ``+``. ``M``: the record changed (content, attributes, or for
    a directory its entries)."""
    gone = sorted(set(before) - set(after))
    new = sorted(set(after) - set(before))
    out: list[dict[str, str]] = []
    covered: set[str] = set()
    claimed: set[str] = set()
    for old in gone:
        if any(paths.is_ancestor(c, old) for c in covered):
            continue
        for cand in new:
            if cand in claimed or any(paths.is_ancestor(c, cand) for c in claimed):
                continue
            moved = _same_content(before[old], after[cand])
            if not moved and json.loads(before[old])[1] == "d":
                below = _subtree(before, old)
                moved = bool(below) and below == _subtree(after, cand)
            if moved:
                out.append({"type": "R", "path": _relative(root, old), "to": _relative(root, cand)})
                covered.add(old)
                claimed.add(cand)
                break
    for old in gone:
        if old not in covered and not any(paths.is_ancestor(c, old) for c in covered):
            out.append({"type": "-", "path": _relative(root, old)})
    for cand in new:
        if cand not in claimed and not any(paths.is_ancestor(c, cand) for c in claimed):
            out.append({"type": "+", "path": _relative(root, cand)})
    for path in sorted(set(before) & set(after)):
        if before[path] != after[path]:
            out.append({"type": "M", "path": _relative(root, path)})
    out.sort(key=lambda e: (e["path"], e["type"]))
    return out
