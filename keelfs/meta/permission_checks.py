"""The permission checks of a data shard's commands and reads, over its records.

The rules (HDFS's ``FSPermissionChecker``) and the traverse guards are explained in
``keelfs.meta.principals``. Every check here needs only records of this shard: an operation
on ``path`` reads the self-record of ``path``'s parent, which lives where ``path``'s entry
does (DESIGN §2.5). A superuser is never checked, and nothing is even read for one, so the
commands of a caller-less envelope behave exactly as before permissions existed.

Denials come before "no such file": a caller who may not look into a directory learns
nothing about what it holds.
"""

from __future__ import annotations

from keelfs.errors import Unavailable
from keelfs.meta import paths
from keelfs.meta.kvstore import Txn, prefix_end
from keelfs.meta.principals import (
    EXECUTE,
    READ,
    STICKY,
    WRITE,
    Caller,
    Guard,
    allows,
    denied,
    depth,
    describe,
    guard_of,
    guards_below,
    with_guard,
)
from keelfs.meta.ranges import FROZEN, INCOMING
from keelfs.meta.records import Inode, decode_cached
from keelfs.meta.shard_records import (
    ShardRecords,
    _children_prefix,
    _entry_path,
    _first,
    _Reader,
    _self_key,
    _subtree_entry_ranges,
    _subtree_self_range,
)

__all__ = ["PermissionChecks"]

ALL = READ | WRITE | EXECUTE


class PermissionChecks(ShardRecords):
    """Permission checks and traverse-guard upkeep shared by ``ShardStateMachine``'s
    commands and reads."""

    @staticmethod
    def _check_record(caller: Caller, path: str, record: Inode, access: int) -> None:
        """``caller`` may pass every ancestor of ``path`` (the guards in ``record``, the
        record of ``path``) and has ``access`` on ``path`` itself."""
        if caller.superuser:
            return
        if record.guards:
            ancestors = paths.ancestors(path)
            for guard in record.guards:
                if not allows(caller, guard.owner, guard.group, guard.mode, EXECUTE, guard.acl):
                    where = ancestors[guard.depth] if guard.depth < len(ancestors) else path
                    raise denied(caller, where, guard.owner, guard.group, guard.mode, "EXECUTE")
        if not allows(caller, record.owner, record.group, record.mode, access, record.acl):
            raise denied(caller, path, record.owner, record.group, record.mode, describe(access))

    def _check_dir(self, kv: _Reader, caller: Caller, directory: str, access: int) -> None:
        """``caller`` reaches ``directory`` and has ``access`` on it (its self-record here)."""
        if not caller.superuser:
            self._check_record(caller, directory, self._require_dir(kv, directory), access)

    def _check_reach(self, kv: _Reader, caller: Caller, path: str, access: int = 0) -> None:
        """``caller`` may reach ``path`` (``x`` on its parent and every ancestor) and has
        ``access`` on the parent as well (``WRITE``: to add or remove an entry)."""
        if path != paths.ROOT:
            self._check_dir(kv, caller, paths.parent(path), access | EXECUTE)

    @staticmethod
    def _check_inode(caller: Caller, path: str, inode: Inode, access: int) -> None:
        """``caller`` has ``access`` on ``path`` itself (reaching it is checked apart)."""
        if not allows(caller, inode.owner, inode.group, inode.mode, access, inode.acl):
            raise denied(caller, path, inode.owner, inode.group, inode.mode, describe(access))

    @staticmethod
    def _check_owner(caller: Caller, path: str, inode: Inode, what: str) -> None:
        if not caller.superuser and caller.user != inode.owner:
            raise denied(caller, path, inode.owner, inode.group, inode.mode, what)

    def _check_sticky(self, kv: _Reader, caller: Caller, path: str, inode: Inode) -> None:
        """In a directory with the sticky bit, only the owner of an entry or of the directory
        may remove or rename the entry."""
        if caller.superuser or path == paths.ROOT:
            return
        parent = paths.parent(path)
        record = self._require_dir(kv, parent)
        if record.mode & STICKY and caller.user not in (inode.owner, record.owner):
            raise denied(caller, path, inode.owner, inode.group, inode.mode, "STICKY")

    def _check_subtree_access(self, kv: _Reader, caller: Caller, directory: str) -> None:
        """A recursive delete: ``rwx`` on ``directory`` and on every directory below it here
        that is not empty (HDFS's ``subAccess`` ALL, empty directories ignored). The records
        below that another shard holds are that shard's to check (``_subtree`` refuses a
        subtree that is not all here)."""
        if caller.superuser:
            return
        record = self._require_dir(kv, directory)
        if _first(kv, *_children(directory)) is not None:
            self._check_inode(caller, directory, record, ALL)
        for start, end in _subtree_entry_ranges(directory):
            for key, raw in kv.scan(start, end):
                inode = Inode.decode(raw)
                path = _entry_path(key)
                if inode.is_dir and _first(kv, *_children(path)) is not None:
                    self._check_inode(caller, path, inode, ALL)

    @staticmethod
    def _ownership(caller: Caller, owner: str, group: str, parent: Inode) -> tuple[str, str]:
        """Owner and group of a new file or directory: the caller's user and the parent's
        group (HDFS); only a superuser may name others (the request's ``owner``/``group``)."""
        if caller.superuser:
            return owner, group
        return caller.user, parent.group

    @staticmethod
    def _child_guards(directory: str, record: Inode) -> tuple[Guard, ...]:
        """The traverse guards of a new directory in ``directory`` (whose record is given)."""
        return guards_below(
            record.guards, directory, record.owner, record.group, record.mode, record.acl
        )

    # -- keeping the guards ----------------------------------------------------------------------
    @staticmethod
    def _guard_of(directory: str, inode: Inode) -> Guard | None:
        return guard_of(directory, inode.owner, inode.group, inode.mode, inode.acl)

    def _respread(self, txn: Txn, directory: str, old: Inode, new: Inode) -> int:
        """After a chmod, chown or ACL change of ``directory`` (``old`` -> ``new``): its guard
        in every directory record below it here, if that guard changed."""
        before, after = self._guard_of(directory, old), self._guard_of(directory, new)
        if before == after:
            return 0
        return self._spread_guard(txn, directory, after)

    def _spread_guard(self, txn: Txn, directory: str, guard: Guard | None) -> int:
        """Set (``None``: drop) the guard of ``directory`` in every directory record below it
        on this shard, entries and self-records; the number of records changed.

        Refused ("locked", the master retries) while a transaction locks something below
        ``directory`` (its records were read with the old guards) or while a move of hash
        ranges is under way here: an incoming range's records read as absent and would be
        missed, and a frozen one's may not change."""
        self._check_subtree_unlocked(txn, directory)
        moving = [r for r in self.ranges if r.state in (FROZEN, INCOMING)]
        if moving:
            raise Unavailable(
                "locked",
                message=f"hash ranges are moving (move {moving[0].txn_id}); retry the change "
                f"of {directory}'s permissions",
            )
        at = depth(directory)
        changed = 0
        spans = [_self_records_below(directory), *_subtree_entry_ranges(directory)]
        for start, end in spans:
            for key, raw in list(txn.scan(start, end)):
                inode = Inode.decode(raw)
                if not inode.is_dir:
                    continue
                guards = with_guard(inode.guards, at, guard)
                if guards != inode.guards:
                    txn.put(key, inode.evolve(guards=guards).encode())
                    changed += 1
        return changed

    def _self_record_here(self, kv: _Reader, directory: str) -> Inode | None:
        raw = kv.get(_self_key(directory))
        return None if raw is None else decode_cached(raw)


def _self_records_below(directory: str) -> tuple[bytes, bytes]:
    """The self-records of the directories strictly below ``directory`` (the root's too)."""
    if directory == paths.ROOT:
        return _self_key(paths.ROOT) + b"\x00", prefix_end(_self_key(paths.ROOT))
    return _subtree_self_range(directory)


def _children(directory: str) -> tuple[bytes, bytes]:
    prefix = _children_prefix(directory)
    return prefix, prefix_end(prefix)
