"""One function per verb: its argument checks, the ``Op`` it sends, and how its reply reads.

Both clients call these, so a verb means the same thing in ``Client`` and ``AsyncClient``.
Paths are checked here, before anything is sent (``keelfs.meta.paths``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from keelfs.client._core import CONFIG_ROUTE, Op, Route
from keelfs.errors import InvalidArgument
from keelfs.meta import acls, paths
from keelfs.meta.acls import AclEntry
from keelfs.meta.commands import MAX_INT, check_mode, check_range
from keelfs.meta.principals import check_principal
from keelfs.meta.records import MAX_INLINE_BYTES, FileInfo
from keelfs.rpc.pb import meta_pb2 as pb
from keelfs.rpc.wire import session_id_to_pb

__all__ = ["AclStatus", "DeleteResult", "QuotaSummary", "ServerDefaults", "SnapshotInfo", "norm"]


@dataclass(frozen=True, slots=True)
class AclStatus:
    """A path's ACL (HDFS's ``AclStatus``): owner, group, mode (with an ACL its group bits are
    the mask), and the entries beyond the mode (``group::`` and the named ones, then the
    default ones; none: the mode alone)."""

    path: str
    owner: str
    group: str
    mode: int
    entries: tuple[AclEntry, ...]

    @property
    def sticky(self) -> bool:
        return bool(self.mode & 0o1000)

    @classmethod
    def of(cls, info: FileInfo) -> AclStatus:
        return cls(info.path, info.owner, info.group, info.mode, info.acl)

    def logical(self) -> list[AclEntry]:
        """Every entry, the base ones from the mode included (what ``getfacl`` prints)."""
        return acls.logical(self.mode, self.entries)


@dataclass(frozen=True, slots=True)
class DeleteResult:
    """What a delete removed (on the shard that held it)."""

    files: int
    directories: int
    blocks: int


@dataclass(frozen=True, slots=True)
class ServerDefaults:
    """What the masters tell clients to follow (HDFS's ``FsServerDefaults``)."""

    trash_interval_ms: int
    """How long the trash keeps what ``rm`` moved there; 0: no trash (``rm`` deletes)."""
    default_replication: int
    user: str = ""
    """Who the masters take this client for (with TLS: its certificate's user)."""


@dataclass(frozen=True, slots=True)
class QuotaSummary:
    """A directory's quota (HDFS's ``count -q``): the limits (None: none of that kind) and
    what its subtree uses, summed over the shards (each read linearizably, one after the
    other: not one instant across shards)."""

    path: str
    names_limit: int | None
    space_limit: int | None
    names_used: int
    space_used: int

    @property
    def names_remaining(self) -> int | None:
        return None if self.names_limit is None else self.names_limit - self.names_used

    @property
    def space_remaining(self) -> int | None:
        return None if self.space_limit is None else self.space_limit - self.space_used


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """One snapshot of a directory (``keelfs.meta.snapshots``)."""

    name: str
    path: str
    """Where it is read: ``dir/.snapshot/name``."""
    created: int
    """When it was taken (ms since the epoch, the master's clock)."""
    complete: bool
    """Whether every shard holds its part (a create that failed half-way leaves an incomplete
    one: run the same create again, or delete it)."""


def norm(path: str, argument: str = "path") -> str:
    try:
        return paths.normalize(path)
    except InvalidArgument as exc:
        exc.details["argument"] = argument
        raise


def _principals(owner: str | None, group: str | None) -> None:
    """Owner and group names are checked here too: one that is not valid UTF-8 could not even
    be encoded into a request."""
    if owner:
        check_principal(owner, "owner")
    if group:
        check_principal(group, "group")


def _entry(path: str) -> Route:
    return Route("entry", path)


def namespace_op(
    method: str,
    route: Route,
    build: object,
    *,
    write: bool,
    session: bool,
    any_member: bool = False,
    fresh: bool = False,
) -> Op:
    """The ``Op`` of a ``Namespace`` RPC (the masters' internal verbs use it too:
    ``keelfs.master.peers``)."""
    return Op("Namespace", method, route, build, write, session, any_member=any_member,  # type: ignore[arg-type]
              fresh=fresh)  # fmt: skip


def mkdir(path: str, parents: bool, mode: int | None, owner: str, group: str) -> Op:
    path = norm(path)
    if mode is not None:
        check_mode(mode)
    _principals(owner, group)

    def build(h: pb.RequestHeader) -> pb.MkdirRequest:
        req = pb.MkdirRequest(header=h, path=path, owner=owner, group=group, parents=parents)
        if mode is not None:
            req.mode = mode
        return req

    return namespace_op("Mkdir", _entry(path), build, write=True, session=True)


def create(
    path: str,
    overwrite: bool,
    mode: int | None,
    owner: str,
    group: str,
    replication: int,
    block_size: int,
) -> Op:
    path = norm(path)
    if mode is not None:
        check_mode(mode)
    if replication:
        check_range(replication, 1, 512, "replication")
    if block_size:
        check_range(block_size, 1, MAX_INT, "block_size")
    _principals(owner, group)

    def build(h: pb.RequestHeader) -> pb.CreateRequest:
        req = pb.CreateRequest(
            header=h,
            path=path,
            owner=owner,
            group=group,
            replication=replication,
            block_size=block_size,
            overwrite=overwrite,
        )
        if mode is not None:
            req.mode = mode
        return req

    return namespace_op("Create", _entry(path), build, write=True, session=True)


def create_inline(
    path: str,
    data: bytes,
    overwrite: bool,
    mode: int | None,
    owner: str,
    group: str,
    replication: int,
    block_size: int,
) -> Op:
    """``CreateInline``: file ``path`` created complete with ``data`` (at most
    ``MAX_INLINE_BYTES``) in its record, in one write."""
    create(path, overwrite, mode, owner, group, replication, block_size)  # the same checks
    path = norm(path)
    if len(data) > MAX_INLINE_BYTES:
        raise InvalidArgument(f"inline data is at most {MAX_INLINE_BYTES} bytes", "data")

    def build(h: pb.RequestHeader) -> pb.CreateInlineRequest:
        req = pb.CreateInlineRequest(
            header=h,
            path=path,
            owner=owner,
            group=group,
            replication=replication,
            block_size=block_size,
            overwrite=overwrite,
            data=bytes(data),
        )
        if mode is not None:
            req.mode = mode
        return req

    return namespace_op("CreateInline", _entry(path), build, write=True, session=True)


def complete(
    path: str, pin: int, last_length: int | None = None, inline_data: bytes | None = None
) -> Op:
    """Close ``path`` on the lease holder's session ``pin``; ``last_length`` is the final
    length of its last block (None: the file has no block); ``inline_data``: the whole
    content of a file that has no block, kept in its record (``CompleteInline``)."""
    path = norm(path)
    if inline_data is not None and len(inline_data) > MAX_INLINE_BYTES:
        raise InvalidArgument(f"inline data is at most {MAX_INLINE_BYTES} bytes", "data")

    def build(h: pb.RequestHeader) -> pb.CompleteRequest:
        req = pb.CompleteRequest(header=h, path=path)
        if last_length is not None:
            req.last_length = last_length
        if inline_data is not None:
            req.inline_data = bytes(inline_data)
        return req

    return Op("Namespace", "Complete", _entry(path), build, True, True, pin)


def renew_lease(shard_id: str, pin: int = 0) -> Op:
    """Extend the writer leases of a session on ``shard_id`` (``pin``: that session)."""
    build = lambda h: pb.RenewLeaseRequest(header=h, group=shard_id)  # noqa: E731
    return Op("Namespace", "RenewLease", Route("shard", shard_id), build, True, True, pin)


# -- the block layer (the writer's lease session ``pin``; keelfs.client.files) --------------------
def allocate_block(path: str, previous_length: int | None, exclude: Sequence[str], pin: int) -> Op:
    """A new last block for ``path`` (leader, lease holder): its id, stamp, pipeline, epoch."""
    path = norm(path)

    def build(h: pb.RequestHeader) -> pb.AllocateBlockRequest:
        req = pb.AllocateBlockRequest(header=h, path=path, exclude=list(exclude))
        if previous_length is not None:
            req.previous_length = previous_length
        return req

    return Op("Namespace", "AllocateBlock", _entry(path), build, True, True, pin, replayable=False)


def recover_pipeline(
    path: str, block_id: int, keep: Sequence[str], exclude: Sequence[str], pin: int
) -> Op:
    """A new generation stamp and pipeline (``keep`` + fresh servers) for the last block."""
    path = norm(path)

    def build(h: pb.RequestHeader) -> pb.RecoverPipelineRequest:
        return pb.RecoverPipelineRequest(
            header=h, path=path, block_id=block_id, keep=list(keep), exclude=list(exclude)
        )

    return Op(
        "Namespace", "RecoverPipeline", _entry(path), build, True, True, pin, replayable=False
    )


def report_bad_replica(path: str, server_id: str, block_id: int, gen_stamp: int, reason: str) -> Op:
    """Tell the shard of ``path`` (its leader when known) that a replica failed its checks."""
    path = norm(path)

    def build(h: pb.RequestHeader) -> pb.ReportBadReplicaRequest:
        return pb.ReportBadReplicaRequest(
            server_id=server_id, block_id=block_id, gen_stamp=gen_stamp, reason=reason[:500]
        )

    return namespace_op("ReportBadReplica", _entry(path), build, write=False, session=False)


def keep_alive(group: str, session_id: int) -> Op:
    service = "Config" if group == "config" else "Namespace"
    route = CONFIG_ROUTE if group == "config" else Route("shard", group)
    build = lambda h: pb.KeepAliveRequest(group=group, session_id=session_id_to_pb(session_id))  # noqa: E731
    return Op(service, "KeepAlive", route, build, True, False)


def stat(path: str, stale_ok: bool, read: bool = False) -> Op:
    """``GetFileInfo``; ``read``: a reader's, refused without READ on the file.

    Reads go to any member of the shard (the one this client reads from,
    ``Core._spread``), fresh ones too unless the client sends those to the leader
    (``Core.spread_reads`` off): without ``stale_ok`` a follower answers after a ReadIndex
    barrier (it asks the leader for its commit index, confirmed by a quorum, and waits until
    it has applied that far), so the answer is as linearizable as the leader's, and the
    shard's members share the reads instead of the leader serving them all."""
    path = norm(path)
    build = lambda h: pb.GetFileInfoRequest(header=h, path=path, stale_ok=stale_ok, read=read)  # noqa: E731
    return namespace_op(
        "GetFileInfo", _entry(path), build, write=False, session=False, any_member=True,
        fresh=not stale_ok,
    )  # fmt: skip


def list_dir(path: str, start_after: str | None, limit: int, stale_ok: bool) -> Op:
    path = norm(path)
    check_range(limit, 1, 10_000, "limit")

    def build(h: pb.RequestHeader) -> pb.ListDirRequest:
        req = pb.ListDirRequest(header=h, path=path, limit=limit, stale_ok=stale_ok)
        if start_after is not None:
            req.start_after = start_after
        return req

    return namespace_op(
        "ListDir", Route("dir", path), build, write=False, session=False, any_member=True,
        fresh=not stale_ok,
    )  # fmt: skip


def content_summary(path: str, stale_ok: bool) -> Op:
    path = norm(path)
    build = lambda h: pb.ContentSummaryRequest(header=h, path=path, stale_ok=stale_ok)  # noqa: E731
    return namespace_op(
        "ContentSummary", _entry(path), build, write=False, session=False, any_member=True,
        fresh=not stale_ok,
    )  # fmt: skip


def delete(path: str, recursive: bool) -> Op:
    path = norm(path)
    build = lambda h: pb.DeleteRequest(header=h, path=path, recursive=recursive)  # noqa: E731
    return namespace_op("Delete", _entry(path), build, write=True, session=True)


def rename(src: str, dst: str, overwrite: bool, expect: str = "") -> Op:
    src, dst = norm(src, "src"), norm(dst, "dst")
    build = lambda h: pb.RenameRequest(  # noqa: E731
        header=h, src=src, dst=dst, overwrite=overwrite, expect=expect
    )
    return namespace_op("Rename", _entry(src), build, write=True, session=True)


def set_replication(path: str, replication: int) -> Op:
    path = norm(path)
    check_range(replication, 1, 512, "replication")
    build = lambda h: pb.SetReplicationRequest(header=h, path=path, replication=replication)  # noqa: E731
    return namespace_op("SetReplication", _entry(path), build, write=True, session=True)


def set_times(path: str, mtime: int | None, atime: int | None) -> Op:
    path = norm(path)
    if mtime is None and atime is None:
        raise InvalidArgument("set_times needs mtime or atime", "mtime")

    def build(h: pb.RequestHeader) -> pb.SetTimesRequest:
        req = pb.SetTimesRequest(header=h, path=path)
        if mtime is not None:
            req.mtime = check_range(mtime, 0, MAX_INT, "mtime")
        if atime is not None:
            req.atime = check_range(atime, 0, MAX_INT, "atime")
        return req

    return namespace_op("SetTimes", _entry(path), build, write=True, session=True)


def chmod(path: str, mode: int) -> Op:
    path = norm(path)
    check_mode(mode)
    build = lambda h: pb.SetPermissionRequest(header=h, path=path, mode=mode)  # noqa: E731
    return namespace_op("SetPermission", _entry(path), build, write=True, session=True)


def chown(path: str, owner: str | None, group: str | None) -> Op:
    path = norm(path)
    if owner is None and group is None:
        raise InvalidArgument("chown needs owner or group", "owner")
    if owner is not None:
        check_principal(owner, "owner")
    if group is not None:
        check_principal(group, "group")

    def build(h: pb.RequestHeader) -> pb.SetOwnerRequest:
        req = pb.SetOwnerRequest(header=h, path=path)
        if owner is not None:
            req.owner = owner
        if group is not None:
            req.group = group
        return req

    return namespace_op("SetOwner", _entry(path), build, write=True, session=True)


ACL_METHODS = {
    "set": ("SetAcl", True),
    "modify": ("ModifyAclEntries", True),
    "remove_entries": ("RemoveAclEntries", False),
    "remove_default": ("RemoveDefaultAcl", None),
    "remove": ("RemoveAcl", None),
}
"""What each ACL change sends: its RPC, and whether its spec has permissions (None: no spec)."""


def acl_change(action: str, path: str, spec: str | Sequence[str] = ()) -> Op:
    """An ACL change (``ACL_METHODS``); ``spec``: a comma-separated ACL spec or its entries,
    checked here (``keelfs.meta.acls.parse_spec``)."""
    path = norm(path)
    method, with_perm = ACL_METHODS[action]
    entries: list[str] = []
    if with_perm is not None:
        parsed = acls.parse_spec(spec, with_perm=with_perm)
        if not parsed:
            raise InvalidArgument(f"{method} needs ACL entries", "acl")
        entries = [e.to_text(with_perm=with_perm) for e in parsed]
    build = lambda h: pb.AclRequest(header=h, path=path, entries=entries)  # noqa: E731
    return namespace_op(method, _entry(path), build, write=True, session=True)


def append(path: str) -> Op:
    """``Append``: reopen ``path`` for appending, the writer lease held by the session."""
    path = norm(path)
    build = lambda h: pb.AppendRequest(header=h, path=path)  # noqa: E731
    return namespace_op("Append", _entry(path), build, write=True, session=True)


def truncate(path: str, length: int) -> Op:
    """``Truncate``: shorten ``path`` to ``length`` bytes."""
    path = norm(path)
    check_range(length, 0, MAX_INT, "length")
    build = lambda h: pb.TruncateRequest(header=h, path=path, length=length)  # noqa: E731
    return namespace_op("Truncate", _entry(path), build, write=True, session=True)


def concat(target: str, sources: Sequence[str]) -> Op:
    """``Concat``: the blocks of ``sources`` appended to ``target``, the sources removed."""
    target = norm(target, "target")
    normal = [norm(s, "sources") for s in sources]
    if not normal:
        raise InvalidArgument("concat needs at least one source", "sources")
    if target in normal:
        raise InvalidArgument(f"{target} is the target of the concat", "sources")
    if len(set(normal)) != len(normal):
        raise InvalidArgument("a source is named twice", "sources")
    build = lambda h: pb.ConcatRequest(header=h, target=target, sources=normal)  # noqa: E731
    return namespace_op("Concat", _entry(target), build, write=True, session=True)


def format_root() -> Op:
    build = lambda h: pb.FormatRequest(header=h)  # noqa: E731
    return namespace_op("Format", _entry(paths.ROOT), build, write=True, session=False)


def add_shard(shard_id: str, members: Sequence[int]) -> Op:
    build = lambda h: pb.AddShardRequest(header=h, shard_id=shard_id, members=list(members))  # noqa: E731
    return Op("Config", "AddShard", CONFIG_ROUTE, build, True, True)


def remove_shard(shard_id: str) -> Op:
    build = lambda h: pb.RemoveShardRequest(header=h, shard_id=shard_id)  # noqa: E731
    return Op("Config", "RemoveShard", CONFIG_ROUTE, build, True, True)


def register_master(node_id: int, address: str) -> Op:
    build = lambda h: pb.RegisterMasterRequest(header=h, node_id=node_id, address=address)  # noqa: E731
    return Op("Config", "RegisterMaster", CONFIG_ROUTE, build, True, False)


def register_chunk_server(server_id: str, address: str, rack: str) -> Op:
    def build(h: pb.RequestHeader) -> pb.RegisterChunkServerRequest:
        return pb.RegisterChunkServerRequest(
            header=h, server_id=server_id, address=address, rack=rack
        )

    return Op("Config", "RegisterChunkServer", CONFIG_ROUTE, build, True, False)


def list_chunk_servers() -> Op:
    build = lambda h: pb.ListChunkServersRequest()  # noqa: E731
    return Op("Config", "ListChunkServers", CONFIG_ROUTE, build, False, False)


def delete_result(reply: pb.DeleteReply) -> DeleteResult:
    return DeleteResult(reply.files, reply.directories, reply.blocks)


def server_defaults() -> Op:
    """``GetServerDefaults``, from any member of the shard holding ``/``."""
    build = lambda h: pb.ServerDefaultsRequest(header=h)  # noqa: E731
    return namespace_op(
        "GetServerDefaults", _entry(paths.ROOT), build, write=False, session=False,
        any_member=True,
    )  # fmt: skip


def server_defaults_result(reply: pb.ServerDefaultsReply) -> ServerDefaults:
    return ServerDefaults(reply.trash_interval_ms, reply.default_replication, reply.user)


def set_quota(path: str, names: int | None, space: int | None, clear: bool) -> Op:
    """``SetQuota`` (superusers): the master sets it on every shard."""
    path = norm(path)
    if names is not None:
        check_range(names, 1, MAX_INT, "names")
    if space is not None:
        check_range(space, 0, MAX_INT, "space")
    if not clear and names is None and space is None:
        raise InvalidArgument("give a names or space quota (or clear it)", "names")

    def build(h: pb.RequestHeader) -> pb.SetQuotaRequest:
        req = pb.SetQuotaRequest(header=h, path=path, clear=clear)
        if names is not None:
            req.names = names
        if space is not None:
            req.space = space
        return req

    return namespace_op("SetQuota", _entry(path), build, write=False, session=False)


def get_quota(path: str, shard_id: str) -> Op:
    """``GetQuota`` of ``path`` as shard ``shard_id`` sees it (any member, linearizable)."""
    path = norm(path)
    build = lambda h: pb.GetQuotaRequest(header=h, path=path, group=shard_id)  # noqa: E731
    return Op("Namespace", "GetQuota", Route("shard", shard_id), build, False, False,
              any_member=True)  # fmt: skip


def quota_summary(path: str, replies: list[pb.GetQuotaReply]) -> QuotaSummary:
    """The shards' views of ``path``'s quota summed: the limits as the first shard has them."""
    views = [json.loads(r.json) for r in replies]
    first = views[0] if views else {"names": None, "space": None}
    names = sum(int(v["here"][0]) for v in views)
    space = sum(int(v["here"][1]) for v in views)
    return QuotaSummary(norm(path), first["names"], first["space"], names, space)


def default_snapshot_name(now: float) -> str:
    """HDFS's default snapshot name: ``s`` and the local time, ``s20260412-151029.033``."""
    import time

    millis = int(now * 1000) % 1000
    return time.strftime("s%Y%m%d-%H%M%S", time.localtime(now)) + f".{millis:03d}"


def snapshot(action: str, path: str, name: str = "", to: str = "") -> Op:
    """``Snapshot``: one of the snapshot actions, served by any master (which fans out to
    the shards): ``allow``, ``disallow``, ``create``, ``delete``, ``list``, ``diff``."""
    path = norm(path) if path else ""
    for value, argument in ((name, "name"), (to, "to")):
        if value and value != ".":
            try:
                paths.validate_name(value)
            except InvalidArgument as exc:
                exc.details["argument"] = argument
                raise
    build = lambda h: pb.SnapshotRequest(  # noqa: E731
        header=h, action=action, path=path, name=name, to=to
    )
    return namespace_op("Snapshot", _entry(path or paths.ROOT), build, write=False, session=False)


def snapshot_view(path: str, name: str, to: str, shard_id: str) -> Op:
    """Shard ``shard_id``'s part of ``path``'s snapshots (any member, linearizable): the
    masters' fan-out."""
    path = norm(path) if path else ""
    build = lambda h: pb.SnapshotRequest(  # noqa: E731
        header=h, action="view", path=path, name=name, to=to, group=shard_id
    )
    return Op("Namespace", "Snapshot", Route("shard", shard_id), build, False, False,
              any_member=True)  # fmt: skip


def snapshot_infos(directory: str, reply: pb.SnapshotReply) -> list[SnapshotInfo]:
    base = paths.join(norm(directory), paths.SNAPSHOT_DIR)
    return [
        SnapshotInfo(s["name"], paths.join(base, s["name"]), int(s["created"]), s["complete"])
        for s in json.loads(reply.json)
    ]
