"""Snapshots on the masters: the ``Snapshot`` RPC (the design: ``keelfs.meta.snapshots``).

Any master serves a request: it checks the caller's rights on the directory, then proposes the
change on every shard of its map, one after another (each shard's part is one apply there), or
asks every shard for its part of a read ("view") and joins the answers:

- ``allow``/``disallow``: ``SnapshotAllow`` on every shard;
- ``create``: ``SnapshotTake`` on every shard with one ``created`` stamp. Running it again
  with the same name finishes a create that failed half-way (a shard holding its part keeps
  it); a name every shard holds already is ``ALREADY_EXISTS``;
- ``delete``: ``SnapshotDrop`` on every shard;
- ``rename``: ``SnapshotRename`` on every shard (``to``: the new name). Running it again
  finishes a rename that failed half-way (a shard whose part has the new name already keeps
  it);
- ``list``: a snapshot is ``complete`` when every shard holds its part;
- ``diff``: each shard's entries of both sides, joined, then ``keelfs.meta.snapshots.diff``.

A snapshottable directory (or one holding one) cannot be deleted or renamed
(:func:`refuse_snapshot_roots`): its snapshots and its mark are kept by its path on every
shard.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from keelfs import failpoints
from keelfs.errors import (
    AlreadyExists,
    InvalidArgument,
    NotADirectory,
    NotFound,
    PermissionDenied,
)
from keelfs.master.member import now_ms
from keelfs.master.servicer import Audited
from keelfs.meta import paths, snapshots
from keelfs.meta.commands import SnapshotAllow, SnapshotDrop, SnapshotRename, SnapshotTake
from keelfs.meta.namespace import ShardStateMachine
from keelfs.meta.principals import READ, Caller, allows, denied
from keelfs.rpc.pb import meta_pb2 as pb

if TYPE_CHECKING:
    from keelfs.master.node import MetaNode

__all__ = ["SnapshotServiceMixin", "refuse_snapshot_roots"]

_ACTIONS = ("allow", "disallow", "create", "delete", "rename", "list", "diff", "view")


def refuse_snapshot_roots(sm: ShardStateMachine, path: str, what: str) -> None:
    """``InvalidArgument`` if ``path`` is or holds a snapshottable directory (the shard
    checks again when it applies: ``SnapshotSteps.refuse_snapshottable``)."""
    sm.refuse_snapshottable(None, path, what)


class SnapshotServiceMixin:
    """Mixed into ``NamespaceServicer`` (which provides ``node``, ``serve``, ``timeout``)."""

    node: MetaNode

    if TYPE_CHECKING:

        async def serve(self, context: Any, work: Any, audit: Any = None) -> Any: ...
        def caller(self, context: Any) -> Caller: ...
        def timeout(self, context: Any) -> float: ...

    async def Snapshot(self, request: pb.SnapshotRequest, context: Any) -> pb.SnapshotReply:  # noqa: N802
        caller = self.caller(context)
        if request.action == "view":
            return await self.serve(context, self._view(request, caller, context))

        async def work() -> pb.SnapshotReply:
            timeout = self.timeout(context)
            action = request.action
            if action not in _ACTIONS:
                raise InvalidArgument(f"unknown snapshot action {action!r}", "action")
            if action == "list" and not request.path:
                value: Any = await self._snapshottable(timeout)
            else:
                path = paths.normalize(request.path)
                value = await getattr(self, f"_snapshot_{action}")(
                    path, request.name, request.to, caller, timeout
                )
            return pb.SnapshotReply(json=json.dumps(value))

        change = request.action not in ("list", "diff")
        audit = Audited(f"snapshot:{request.action}", request.path, request.name or None, change)
        return await self.serve(context, work(), audit)

    # -- one shard's part ----------------------------------------------------------------------
    async def _view(
        self, request: pb.SnapshotRequest, caller: Caller, context: Any
    ) -> pb.SnapshotReply:
        if not caller.superuser:
            raise PermissionDenied(
                request.path, caller.user, message="snapshot views are for the masters"
            )
        member = await self.node.shard_member(request.header, request.group)
        await self.node.read(member, False, self.timeout(context))
        sm: ShardStateMachine = member.sm
        value: dict[str, Any] = {"snapshottable": sm.snapshottable()}
        if request.path:
            value["snapshots"] = sm.snapshots(request.path)
            for side, name in (("from", request.name), ("to", request.to)):
                if name:
                    value[side] = sm.snapshot_records(
                        request.path, None if name == snapshots.CURRENT else name
                    )
        return pb.SnapshotReply(json=json.dumps(value), info=self.node.reply_info(member))

    # -- helpers ---------------------------------------------------------------------------------
    def _shards(self) -> list[str]:
        return sorted(self.node.shard_map.shards)

    async def _views(
        self, path: str, timeout: float, name: str = "", to: str = ""
    ) -> list[dict[str, Any]]:
        internal = self.node.internal
        return [
            await internal.snapshot_view(path, name, to, shard, timeout) for shard in self._shards()
        ]

    async def _propose_everywhere(self, op: str, args: dict[str, Any], timeout: float) -> None:
        for shard in self._shards():
            await self.node.internal.move_command(shard, op, args, deadline=timeout)

    async def _directory(self, path: str, caller: Caller, timeout: float, owner: bool) -> None:
        """``path`` is a directory, and (``owner``) the caller owns it or is a superuser."""
        info = await self.node.internal.stat(path, deadline=timeout)
        if not info.is_dir:
            raise NotADirectory(path)
        if owner and not caller.superuser and caller.user != info.owner:
            raise PermissionDenied(
                path,
                caller.user,
                message=f"only the owner of {path} ({info.owner}) or a superuser may do that",
            )

    async def _listing(self, path: str, timeout: float) -> list[dict[str, Any]]:
        """``path``'s snapshots as the shards hold them: name, created, complete."""
        views = await self._views(path, timeout)
        seen: dict[str, dict[str, Any]] = {}
        for view in views:
            for snap in view["snapshots"]:
                entry = seen.setdefault(snap["name"], {**snap, "shards": 0})
                entry["shards"] += 1
        out = []
        for name in sorted(seen):
            entry = seen[name]
            out.append(
                {
                    "name": name,
                    "created": entry["created"],
                    "complete": entry.pop("shards") == len(views),
                }
            )
        return out

    # -- actions ---------------------------------------------------------------------------------
    async def _snapshottable(self, timeout: float) -> list[str]:
        views = await self._views("", timeout)
        return sorted({root for view in views for root in view["snapshottable"]})

    async def _snapshot_allow(
        self, path: str, name: str, to: str, caller: Caller, timeout: float
    ) -> dict[str, Any]:
        command = SnapshotAllow(path, True)
        command.validate()
        if self.node.shard_map.resharding:  # the config group refuses the reverse order
            raise InvalidArgument(
                f"cannot make {path} snapshottable while shards are being added or removed "
                "(snapshots do not move between shards): try again when it is done",
                "path",
            )
        await self._existing_or_unmark(path, caller, timeout, owner=True)
        await self._propose_everywhere(SnapshotAllow.op, command.args(), timeout)
        # a rename or delete of the directory that passed its checks before the mark reached
        # its shard: the directory is gone from here now, and the mark must go too
        await self._existing_or_unmark(path, caller, timeout, owner=False)
        return {"path": path}

    async def _existing_or_unmark(
        self, path: str, caller: Caller, timeout: float, *, owner: bool
    ) -> None:
        """``_directory``; where ``path`` is gone, first remove a mark an earlier attempt of
        an ``allow`` left there (it lost a race with a rename: the shards' checks refuse a
        rename once every shard has the mark, so the mark is there with no directory only
        while no snapshot can have been taken)."""
        try:
            await self._directory(path, caller, timeout, owner=owner)
        except (NotFound, NotADirectory):
            if path in await self._snapshottable(timeout):
                undo = SnapshotAllow(path, False)
                await self._propose_everywhere(SnapshotAllow.op, undo.args(), timeout)
            raise

    async def _snapshot_disallow(
        self, path: str, name: str, to: str, caller: Caller, timeout: float
    ) -> dict[str, Any]:
        try:
            await self._directory(path, caller, timeout, owner=True)
        except NotFound:
            # a mark left at a path whose directory is gone: a superuser may clear it
            if not caller.superuser or path not in await self._snapshottable(timeout):
                raise
        existing = await self._listing(path, timeout)
        if existing:
            raise InvalidArgument(
                f"{path} has {len(existing)} snapshot(s): delete them before disallowing",
                "path",
            )
        command = SnapshotAllow(path, False)
        await self._propose_everywhere(SnapshotAllow.op, command.args(), timeout)
        return {"path": path}

    async def _snapshot_create(
        self, path: str, name: str, to: str, caller: Caller, timeout: float
    ) -> dict[str, Any]:
        if not name:
            raise InvalidArgument("a snapshot needs a name", "name")
        await self._directory(path, caller, timeout, owner=True)
        existing = {s["name"]: s for s in await self._listing(path, timeout)}
        found = existing.get(name)
        if found is not None and found["complete"]:
            raise AlreadyExists(paths.join(paths.join(path, paths.SNAPSHOT_DIR), name))
        created = now_ms() if found is None else int(found["created"])
        command = SnapshotTake(path, name, created)
        command.validate()
        for shard in self._shards():
            await self.node.internal.move_command(
                shard, SnapshotTake.op, command.args(), deadline=timeout
            )
            failpoints.hit("snapshot.part_taken")
        return {
            "path": paths.join(paths.join(path, paths.SNAPSHOT_DIR), name),
            "name": name,
            "created": created,
        }

    async def _snapshot_delete(
        self, path: str, name: str, to: str, caller: Caller, timeout: float
    ) -> dict[str, Any]:
        if not name:
            raise InvalidArgument("which snapshot? give its name", "name")
        await self._directory(path, caller, timeout, owner=True)
        if name not in {s["name"] for s in await self._listing(path, timeout)}:
            raise NotFound(
                paths.join(paths.join(path, paths.SNAPSHOT_DIR), name),
                "snapshot",
                message=f"{path} has no snapshot {name!r}",
            )
        command = SnapshotDrop(path, name)
        command.validate()
        await self._propose_everywhere(SnapshotDrop.op, command.args(), timeout)
        return {"path": path, "name": name}

    async def _snapshot_rename(
        self, path: str, name: str, to: str, caller: Caller, timeout: float
    ) -> dict[str, Any]:
        """Rename snapshot ``name`` of ``path`` to ``to`` (HDFS's ``renameSnapshot``). A
        rename that stopped half-way leaves both names incomplete (each on some shards):
        running it again finishes it; a complete snapshot named ``to`` is never replaced."""
        command = SnapshotRename(path, name, to)
        command.validate()
        await self._directory(path, caller, timeout, owner=True)
        listing = {s["name"]: s for s in await self._listing(path, timeout)}
        where = paths.join(path, paths.SNAPSHOT_DIR)
        if name not in listing:
            raise NotFound(
                paths.join(where, name), "snapshot", message=f"{path} has no snapshot {name!r}"
            )
        target = listing.get(to)
        if target is not None and (
            target["complete"] or target["created"] != listing[name]["created"]
        ):
            raise AlreadyExists(
                paths.join(where, to), "snapshot", message=f"{path} has a snapshot {to!r} already"
            )
        for shard in self._shards():
            await self.node.internal.move_command(
                shard, SnapshotRename.op, command.args(), deadline=timeout
            )
            failpoints.hit("snapshot.part_renamed")
        return {"path": paths.join(where, to), "from": name, "name": to}

    async def _snapshot_list(
        self, path: str, name: str, to: str, caller: Caller, timeout: float
    ) -> list[dict[str, Any]]:
        await self._readable(path, caller, timeout)
        return await self._listing(path, timeout)

    async def _readable(self, path: str, caller: Caller, timeout: float) -> None:
        """``path`` is a directory the caller may read (HDFS asks read access of a diff)."""
        info = await self.node.internal.stat(path, deadline=timeout)
        if not info.is_dir:
            raise NotADirectory(path)
        if not allows(caller, info.owner, info.group, info.mode, READ, info.acl):
            raise denied(caller, path, info.owner, info.group, info.mode, "READ")

    async def _snapshot_diff(
        self, path: str, name: str, to: str, caller: Caller, timeout: float
    ) -> dict[str, Any]:
        if not name or not to:
            raise InvalidArgument("a diff needs two snapshots (or '.' for now)", "to")
        await self._readable(path, caller, timeout)
        listing = {s["name"]: s for s in await self._listing(path, timeout)}
        for side in (name, to):
            if side != snapshots.CURRENT and not listing.get(side, {}).get("complete"):
                raise NotFound(
                    paths.join(paths.join(path, paths.SNAPSHOT_DIR), side),
                    "snapshot",
                    message=f"{path} has no (complete) snapshot {side!r}",
                )
        before: dict[str, str] = {}
        after: dict[str, str] = {}
        for view in await self._views(path, timeout, name, to):
            before.update(view["from"])
            after.update(view["to"])
        return {"path": path, "from": name, "to": to, "diff": snapshots.diff(path, before, after)}
