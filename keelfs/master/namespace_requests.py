"""The ``Namespace`` RPCs' requests decoded into what a master acts on, and checked.

Each function turns one request message into the state machine command it asks for (or its
arguments), applying the defaults ``proto/meta.proto`` documents for unset fields, and refuses
bad input (``INVALID_ARGUMENT``/``INVALID_PATH``: paths through ``keelfs.meta.paths``,
argument ranges through each command's ``validate()``) before anything is routed or proposed.
"""

from __future__ import annotations

from keelfs.errors import InvalidArgument
from keelfs.meta import commands, paths
from keelfs.meta.commands import (
    DEFAULT_BLOCK_SIZE,
    Append,
    Command,
    Concat,
    Create,
    CreateInline,
    Delete,
    QuotaReport,
    Rename,
    SetOwner,
    SetPermission,
    SetQuota,
    SetReplication,
    SetTimes,
    SetTraverseGuard,
    SnapshotAllow,
    SnapshotDrop,
    SnapshotRename,
    SnapshotTake,
    Truncate,
    check_path,
)
from keelfs.meta.namespace import MAX_LIST_LIMIT
from keelfs.meta.principals import DEFAULT_GROUP, Caller
from keelfs.rpc.pb import meta_pb2 as pb

__all__ = [
    "DEFAULT_LIST_LIMIT",
    "append",
    "concat",
    "truncate",
    "create",
    "create_inline",
    "delete",
    "list_dir",
    "mkdir_attributes",
    "move",
    "path",
    "rename",
    "set_owner",
    "set_permission",
    "set_replication",
    "set_times",
]

DEFAULT_LIST_LIMIT = 1000
"""Entries in a ListDir page when the request sets no ``limit``."""


def path(value: str, argument: str = "path", *, read: bool = False) -> str:
    """``value`` as a normal absolute path; ``INVALID_PATH`` naming ``argument`` if it is not
    (or, unless ``read``, if it is under a snapshot: those are read-only)."""
    return check_path(value, argument, read=read)


def mkdir_attributes(request: pb.MkdirRequest, caller: Caller) -> tuple[int, str, str]:
    """The new directory's ``(mode, owner, group)``, defaults filled in: the owner is the
    caller (the state machine honours another ``owner`` only from a superuser)."""
    mode = request.mode if request.HasField("mode") else 0o755
    return mode, request.owner or caller.user, request.group or DEFAULT_GROUP


def create(
    request: pb.CreateRequest, default_replication: int, caller: Caller, normal: str
) -> Command:
    return Create(
        normal,
        request.mode if request.HasField("mode") else 0o644,
        request.owner or caller.user,
        request.group or DEFAULT_GROUP,
        request.replication or default_replication,
        request.block_size or DEFAULT_BLOCK_SIZE,
        request.overwrite,
    )


def create_inline(
    request: pb.CreateInlineRequest, default_replication: int, caller: Caller, normal: str
) -> Command:
    """``Create``'s defaults; the data is checked against the inline limit by the command."""
    return CreateInline.of(
        normal,
        request.data,
        mode=request.mode if request.HasField("mode") else 0o644,
        owner=request.owner or caller.user,
        group=request.group or DEFAULT_GROUP,
        replication=request.replication or default_replication,
        block_size=request.block_size or DEFAULT_BLOCK_SIZE,
        overwrite=request.overwrite,
    )


def set_replication(request: pb.SetReplicationRequest, normal: str) -> Command:
    return SetReplication(normal, request.replication)


def set_times(request: pb.SetTimesRequest, normal: str) -> Command:
    return SetTimes(
        normal,
        request.mtime if request.HasField("mtime") else None,
        request.atime if request.HasField("atime") else None,
    )


def set_permission(request: pb.SetPermissionRequest, normal: str) -> Command:
    return SetPermission(normal, request.mode)


def set_owner(request: pb.SetOwnerRequest, normal: str) -> Command:
    return SetOwner(
        normal,
        request.owner if request.HasField("owner") else None,
        request.group if request.HasField("group") else None,
    )


def append(request: pb.AppendRequest, normal: str) -> Command:
    return Append(normal)


def truncate(request: pb.TruncateRequest, normal: str) -> Command:
    return Truncate(normal, request.length)


def concat(request: pb.ConcatRequest) -> Concat:
    command = Concat(
        path(request.target, "target"), tuple(path(s, "sources") for s in request.sources)
    )
    command.validate()
    return command


def delete(request: pb.DeleteRequest) -> Delete:
    command = Delete(path(request.path), request.recursive)
    command.validate()
    return command


def rename(request: pb.RenameRequest) -> Rename:
    command = Rename(
        path(request.src, "src"), path(request.dst, "dst"), request.overwrite, request.expect
    )
    command.validate()
    return command


def list_dir(request: pb.ListDirRequest) -> tuple[str, str | None, int]:
    """``(path, start_after, limit)`` of a ListDir: the directory, the name the page starts
    after (None: from the first), and at most how many entries."""
    normal = path(request.path, read=True)
    start_after = request.start_after if request.HasField("start_after") else None
    limit = request.limit or DEFAULT_LIST_LIMIT
    if limit > MAX_LIST_LIMIT:
        raise InvalidArgument(f"limit must be in 1..{MAX_LIST_LIMIT}, not {limit}", "limit")
    if start_after is not None:
        paths.validate_name(start_after)
    return normal, start_after, limit


def move(request: pb.MoveRequest) -> Command:
    """The command a peer's ``Move`` carries: a resharding step (``move_*``), the
    ``set_traverse_guard`` a master sends every shard after a chmod or chown of a directory
    (``keelfs.master.guards``), or a quota's ``set_quota``/``quota_report``
    (``keelfs.master.quota_service``), or a snapshot's ``snapshot_allow``/``snapshot_take``/
    ``snapshot_drop``/``snapshot_rename`` (``keelfs.master.snapshot_service``)."""
    allowed = (
        SetTraverseGuard.op,
        SetQuota.op,
        QuotaReport.op,
        SnapshotAllow.op,
        SnapshotTake.op,
        SnapshotDrop.op,
        SnapshotRename.op,
    )
    if not (request.op.startswith("move_") or request.op in allowed):
        raise InvalidArgument(f"{request.op!r} is not a move command", "op")
    return commands.decode_command(request.op, request.args, commands.SHARD_COMMANDS)
