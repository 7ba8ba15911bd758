"""``Client``: the synchronous keelfs metadata client (thread-safe; share one per process)."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal, overload

import grpc

from keelfs.client import _ops as ops
from keelfs.client import checksums, files, sync_files, trash
from keelfs.client._core import Call, Core, Op, Plan, Sleep, WaitSession, log_call
from keelfs.client.identity import default_user, with_user
from keelfs.datapath.file_checksum import FileChecksum
from keelfs.errors import NotFound
from keelfs.meta.records import ContentSummary, FileInfo
from keelfs.meta.shardmap import ShardMap
from keelfs.rpc.channels import METADATA_CHANNEL_OPTIONS
from keelfs.rpc.pb import meta_pb2 as pb
from keelfs.rpc.pb import meta_pb2_grpc as _pb_grpc
from keelfs.rpc.wire import file_info_from_pb, summary_from_pb
from keelfs.tls.credentials import TlsSettings, open_channel

__all__ = ["Client"]

pb_grpc: Any = _pb_grpc  # generated, untyped

_STUBS = {"Config": "ConfigStub", "Namespace": "NamespaceStub", "Node": "NodeStub"}


class Client:
    """The keelfs metadata client; every verb raises the ``keelfs.errors`` tree.

    ``config_servers``: the client address of ANY config server (or several, comma-separated
    or as a list); the client learns the rest, the ShardMap and each group's leader from there.

    ==================  =========  ============================================================
    option              default    meaning
    ==================  =========  ============================================================
    ``deadline``        30 s       a verb's total time, retries included (per-call ``deadline``
                                   overrides it)
    ``attempt_timeout`` 2 s        one RPC attempt (a frozen node costs at most this much)
    ``max_sessions``    16         client sessions per group, i.e. concurrent writes per shard
    ``batching``        on         (``AsyncClient`` only) concurrent requests to one master
                                   travel together in ``Batch`` RPCs (``keelfs.client.batching``)
    ``spread_reads``    on         fresh (linearizable) reads go to one member of the shard
                                   this client picked, where a follower answers after a
                                   ReadIndex round trip (less leader CPU when many clients
                                   read); off: to the leader (faster for a lone client).
                                   ``stale_ok`` reads go to that member either way
    ==================  =========  ============================================================

    Writes are exactly-once across retries and failovers (sessions, see ``keelfs.client._core``).
    """

    def __init__(
        self,
        config_servers: str | Iterable[str],
        *,
        deadline: float = 30.0,
        attempt_timeout: float = 2.0,
        max_sessions: int = 16,
        spread_reads: bool = True,
        user: str | None = None,
        tls: TlsSettings | None = None,
    ) -> None:
        seeds = config_servers.split(",") if isinstance(config_servers, str) else config_servers
        self._core = Core(
            seeds,
            deadline=deadline,
            attempt_timeout=attempt_timeout,
            max_sessions=max_sessions,
            tls=tls,
            spread_reads=spread_reads,
        )
        self.user = user if user is not None else default_user()
        """Who this client says it is without TLS (``keelfs.client.identity``)."""
        self._channels: dict[str, grpc.Channel] = {}
        self._stubs: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._io: sync_files.IOThread | None = None

    # -- driving plans ------------------------------------------------------------------------
    def _stub(self, address: str, service: str) -> Any:
        with self._lock:
            if self._closed:
                raise RuntimeError("client is closed")
            stub = self._stubs.get((address, service))
            if stub is None:
                channel = self._channels.get(address)
                if channel is None:
                    channel = open_channel(address, self._core.tls, METADATA_CHANNEL_OPTIONS)
                    channel = with_user(channel, self.user)
                    self._channels[address] = channel
                stub = self._stubs[(address, service)] = getattr(pb_grpc, _STUBS[service])(channel)
            return stub

    def _drive(self, plan: Plan) -> Any:
        try:
            action = next(plan)
            while True:
                result: Any = None
                if isinstance(action, Call):
                    method = getattr(self._stub(action.address, action.service), action.method)
                    try:
                        result = method(action.request, timeout=action.timeout)
                    except grpc.RpcError as err:
                        result = err
                    log_call(action, result)
                elif isinstance(action, Sleep):
                    time.sleep(action.seconds)
                elif isinstance(action, WaitSession):
                    with action.pool.cond:
                        action.pool.cond.wait(action.timeout)
                action = plan.send(result)
        except StopIteration as stop:
            return stop.value
        finally:
            plan.close()

    def _run(self, op: Op, deadline: float | None) -> Any:
        return self._drive(self._core.plan(op, deadline))

    # -- namespace ----------------------------------------------------------------------------
    def mkdir(
        self,
        path: str,
        *,
        parents: bool = False,
        mode: int | None = None,
        owner: str = "",
        group: str = "",
        deadline: float | None = None,
    ) -> list[str]:
        """Create directory ``path`` (``parents``: and missing ancestors; then an existing
        directory is success). Returns the directories created."""
        reply = self._run(ops.mkdir(path, parents, mode, owner, group), deadline)
        return list(reply.created)

    def create(
        self,
        path: str,
        *,
        overwrite: bool = False,
        mode: int | None = None,
        owner: str = "",
        group: str = "",
        replication: int = 0,
        block_size: int = 0,
        deadline: float | None = None,
    ) -> FileInfo:
        """Create file ``path`` (exclusive unless ``overwrite``), under construction with this
        client's writer lease; ``complete`` closes it."""
        op = ops.create(path, overwrite, mode, owner, group, replication, block_size)
        reply = self._run(op, deadline)
        info = file_info_from_pb(reply.info)
        self._core.writers[info.path] = (reply.reply.group, info.lease_holder)
        return info

    def complete(self, path: str, *, deadline: float | None = None) -> FileInfo:
        """Close a file this client created (releases its writer lease)."""
        path = ops.norm(path)
        _, session_id = self._core.writers.get(path, ("", 0))
        reply = self._run(ops.complete(path, session_id), deadline)
        self._core.writers.pop(path, None)
        return file_info_from_pb(reply.info)

    def stat(
        self,
        path: str,
        *,
        stale_ok: bool = False,
        read: bool = False,
        deadline: float | None = None,
    ) -> FileInfo:
        """``AsyncClient.stat`` (``read``: a reader's, with an inline file's content)."""
        return file_info_from_pb(self._run(ops.stat(path, stale_ok, read=read), deadline).info)

    def exists(self, path: str, *, stale_ok: bool = False, deadline: float | None = None) -> bool:
        try:
            self.stat(path, stale_ok=stale_ok, deadline=deadline)
        except NotFound:
            return False
        return True

    def ls(
        self,
        path: str,
        *,
        page_size: int = 1000,
        stale_ok: bool = False,
        deadline: float | None = None,
    ) -> Iterator[FileInfo]:
        """The entries of directory ``path`` sorted by name, fetched a page at a time (a file
        lists as itself). Each page is one linearizable read unless ``stale_ok``."""
        path = ops.norm(path)
        cursor: str | None = None
        while True:
            try:
                reply = self._run(ops.list_dir(path, cursor, page_size, stale_ok), deadline)
            except NotFound:
                if cursor is not None:
                    raise
                info = self.stat(path, stale_ok=stale_ok, deadline=deadline)
                if info.is_dir:
                    raise
                yield info
                return
            for entry in reply.entries:
                yield file_info_from_pb(entry)
            if not reply.HasField("cursor"):
                return
            cursor = reply.cursor

    def delete(
        self, path: str, *, recursive: bool = False, deadline: float | None = None
    ) -> ops.DeleteResult:
        return ops.delete_result(self._run(ops.delete(path, recursive), deadline))

    def server_defaults(self, *, deadline: float | None = None) -> ops.ServerDefaults:
        """What the masters tell clients to follow: the trash interval (0: no trash)."""
        return ops.server_defaults_result(self._run(ops.server_defaults(), deadline))

    def move_to_trash(self, path: str) -> str | None:
        """Move ``path`` (a file or a whole directory) into this client's user's trash,
        ``/.Trash/<user>/Current/<path>``, with one rename (atomic; a taken name gets the
        time appended), as ``keelfs rm`` does (``keelfs.client.trash``). Returns where it
        went, or None when nothing was moved: the trash is off on the cluster, or ``path``
        is in the trash already (delete it then, as HDFS's ``rm`` does). ``delete`` itself
        never uses the trash (as HDFS's ``FileSystem.delete``). The user is who the masters
        take this client for (with TLS, its certificate's user: ``server_defaults().user``)."""
        defaults = self.server_defaults()
        if defaults.trash_interval_ms == 0:
            return None
        steps = trash.move_steps(defaults.user or self.user, path, trash.now_ms)
        result: str | None = trash.run_sync(self, steps)
        return result

    def expunge(self, *, immediate: bool = False) -> list[str]:
        """Empty this user's trash as ``keelfs expunge`` (HDFS's ``-expunge``): checkpoints
        older than the trash interval are deleted, then ``Current`` becomes a new checkpoint;
        ``immediate``: everything in the trash is deleted at once. Returns the checkpoints
        deleted."""
        defaults = self.server_defaults()
        home = trash.home(defaults.user or self.user)
        steps = trash.expunge_steps(home, defaults.trash_interval_ms, trash.now_ms(), immediate)
        deleted: list[str] = trash.run_sync(self, steps)
        return deleted

    def set_quota(
        self,
        path: str,
        *,
        names: int | None = None,
        space: int | None = None,
        deadline: float | None = None,
    ) -> None:
        """Set directory ``path``'s quota (superusers; HDFS's ``dfsadmin -setQuota`` and
        ``-setSpaceQuota``): ``names`` files and directories in its subtree, itself included;
        ``space`` bytes times replication. A limit left None is removed. Past it, a create,
        mkdir, block allocation, close, replication raise or rename into the directory fails
        with ``QuotaExceeded`` (docs/concepts.md, "Quotas", for what is exact)."""
        clear = names is None and space is None
        self._run(ops.set_quota(path, names, space, clear), deadline)

    def clear_quota(self, path: str, *, deadline: float | None = None) -> None:
        """Remove both of ``path``'s quotas (superusers)."""
        self._run(ops.set_quota(path, None, None, True), deadline)

    def quota(self, path: str, *, deadline: float | None = None) -> ops.QuotaSummary:
        """``path``'s quota: its limits and what its subtree uses, summed over the shards."""
        m = self._core.shard_map or self.shard_map()
        replies = [self._run(ops.get_quota(path, shard), deadline) for shard in sorted(m.shards)]
        return ops.quota_summary(path, replies)

    # -- snapshots (keelfs.meta.snapshots; docs/data.md, "Snapshots") ------------------------
    def allow_snapshot(self, path: str, *, deadline: float | None = None) -> None:
        """Make directory ``path`` snapshottable (its owner or a superuser; HDFS's
        ``dfsadmin -allowSnapshot``). Snapshottable directories do not nest."""
        self._run(ops.snapshot("allow", path), deadline)

    def disallow_snapshot(self, path: str, *, deadline: float | None = None) -> None:
        """Make ``path`` not snapshottable; refused while it has snapshots."""
        self._run(ops.snapshot("disallow", path), deadline)

    def create_snapshot(
        self, path: str, name: str | None = None, *, deadline: float | None = None
    ) -> str:
        """Take snapshot ``name`` (default ``sYYYYMMDD-HHMMSS.mmm``, as HDFS) of snapshottable
        directory ``path`` (its owner or a superuser); returns where it is read,
        ``path/.snapshot/name``. ``AlreadyExists`` if it exists; running it again after a
        failure finishes the snapshot."""
        chosen = name or ops.default_snapshot_name(time.time())
        reply = self._run(ops.snapshot("create", path, chosen), deadline)
        return str(json.loads(reply.json)["path"])

    def delete_snapshot(self, path: str, name: str, *, deadline: float | None = None) -> None:
        """Delete snapshot ``name`` of ``path``; the blocks only it held are released."""
        self._run(ops.snapshot("delete", path, name), deadline)

    def rename_snapshot(
        self, path: str, name: str, new_name: str, *, deadline: float | None = None
    ) -> str:
        """Rename snapshot ``name`` of ``path`` to ``new_name`` (its owner or a superuser;
        HDFS's ``renameSnapshot``); returns where it is read now. ``AlreadyExists`` if
        ``new_name`` is taken; running it again after a failure finishes the rename."""
        reply = self._run(ops.snapshot("rename", path, name, new_name), deadline)
        return str(json.loads(reply.json)["path"])

    def list_snapshots(self, path: str, *, deadline: float | None = None) -> list[ops.SnapshotInfo]:
        """The snapshots of directory ``path``, by name (HDFS's ``lsSnapshot``)."""
        return ops.snapshot_infos(path, self._run(ops.snapshot("list", path), deadline))

    def snapshottable_directories(self, *, deadline: float | None = None) -> list[str]:
        """Every snapshottable directory (HDFS's ``lsSnapshottableDir``)."""
        reply = self._run(ops.snapshot("list", ""), deadline)
        return [str(p) for p in json.loads(reply.json)]

    def snapshot_diff(
        self, path: str, from_name: str, to_name: str, *, deadline: float | None = None
    ) -> list[dict[str, str]]:
        """What changed under ``path`` from snapshot ``from_name`` to ``to_name`` ("." for
        the live tree), as HDFS's ``snapshotDiff``: ``{"type": "+"|"-"|"M"|"R", "path"[,
        "to"]}`` with paths relative to ``path`` (``./a``)."""
        reply = self._run(ops.snapshot("diff", path, from_name, to_name), deadline)
        return list(json.loads(reply.json)["diff"])

    def rename(
        self,
        src: str,
        dst: str,
        *,
        overwrite: bool = False,
        expect: str = "",
        deadline: float | None = None,
    ) -> None:
        """``AsyncClient.rename`` (``expect``: compare-and-replace)."""
        self._run(ops.rename(src, dst, overwrite, expect), deadline)

    def truncate(self, path: str, length: int, *, deadline: float | None = None) -> FileInfo:
        """Shorten file ``path`` to ``length`` bytes: ``AsyncClient.truncate``."""
        io_thread = self._io_thread()
        return io_thread.run(io_thread.fs.truncate(path, length, deadline=deadline))

    def concat(
        self, target: str, sources: Sequence[str], *, deadline: float | None = None
    ) -> FileInfo:
        """Append the blocks of ``sources`` to ``target`` and remove the sources, atomically:
        ``AsyncClient.concat``."""
        io_thread = self._io_thread()
        return io_thread.run(io_thread.fs.concat(target, list(sources), deadline=deadline))

    def set_replication(
        self, path: str, replication: int, *, deadline: float | None = None
    ) -> FileInfo:
        return file_info_from_pb(self._run(ops.set_replication(path, replication), deadline).info)

    def set_times(
        self,
        path: str,
        *,
        mtime: int | None = None,
        atime: int | None = None,
        deadline: float | None = None,
    ) -> FileInfo:
        """Set modification and/or access time (ms since the epoch)."""
        return file_info_from_pb(self._run(ops.set_times(path, mtime, atime), deadline).info)

    def chmod(self, path: str, mode: int, *, deadline: float | None = None) -> FileInfo:
        return file_info_from_pb(self._run(ops.chmod(path, mode), deadline).info)

    def set_acl(
        self, path: str, spec: str | Sequence[str], *, deadline: float | None = None
    ) -> FileInfo:
        """Replace the ACL's scopes that ``spec`` names (HDFS's ``setAcl``, ``setfacl --set``):
        ``"user::rwx,user:bob:r-x,group::r-x,other::---"``; the owner or a superuser. The
        answer: the new attributes (``acl``; ``mode``'s group bits are the mask)."""
        return file_info_from_pb(self._run(ops.acl_change("set", path, spec), deadline).info)

    def modify_acl_entries(
        self, path: str, spec: str | Sequence[str], *, deadline: float | None = None
    ) -> FileInfo:
        """Add these entries or change their permissions (``setfacl -m``)."""
        return file_info_from_pb(self._run(ops.acl_change("modify", path, spec), deadline).info)

    def remove_acl_entries(
        self, path: str, spec: str | Sequence[str], *, deadline: float | None = None
    ) -> FileInfo:
        """Remove these entries (``setfacl -x``; no permissions: ``"user:bob"``)."""
        return file_info_from_pb(
            self._run(ops.acl_change("remove_entries", path, spec), deadline).info
        )

    def remove_default_acl(self, path: str, *, deadline: float | None = None) -> FileInfo:
        """Remove every default entry (``setfacl -k``)."""
        return file_info_from_pb(self._run(ops.acl_change("remove_default", path), deadline).info)

    def remove_acl(self, path: str, *, deadline: float | None = None) -> FileInfo:
        """Remove every entry beyond the mode (``setfacl -b``)."""
        return file_info_from_pb(self._run(ops.acl_change("remove", path), deadline).info)

    def acl_status(self, path: str, *, deadline: float | None = None) -> ops.AclStatus:
        """``path``'s ACL (HDFS's ``getAclStatus``, ``getfacl``): anyone who may reach it."""
        return ops.AclStatus.of(self.stat(path, deadline=deadline))

    def chown(
        self,
        path: str,
        owner: str | None = None,
        group: str | None = None,
        *,
        deadline: float | None = None,
    ) -> FileInfo:
        return file_info_from_pb(self._run(ops.chown(path, owner, group), deadline).info)

    def du(self, path: str, *, deadline: float | None = None) -> ContentSummary:
        """Totals under ``path``. A directory's entries spread over every shard, so this walks
        the tree (one ListDir per page per directory); with one shard it is one request."""
        path = ops.norm(path)
        m = self._core.shard_map or self.shard_map()
        if len(m.shards) == 1:
            return summary_from_pb(self._run(ops.content_summary(path, False), deadline).summary)
        info = self.stat(path, deadline=deadline)
        if not info.is_dir:
            return ContentSummary(info.length, 1, 0, info.length * info.replication)
        length = files = dirs = space = 0
        stack = [path]
        while stack:
            directory = stack.pop()
            dirs += 1
            for e in self.ls(directory, deadline=deadline):
                if e.is_dir:
                    stack.append(e.path)
                else:
                    files += 1
                    length += e.length
                    space += e.length * e.replication
        return ContentSummary(length, files, dirs, space)

    def shard_content_summary(self, path: str, *, stale_ok: bool = False) -> ContentSummary:
        """The ContentSummary RPC as is: what the shard holding ``path``'s entry has under it."""
        return summary_from_pb(self._run(ops.content_summary(path, stale_ok), None).summary)

    def format(self, *, deadline: float | None = None) -> bool:
        """Create the root directory if the cluster has none (True if it did). Idempotent."""
        return bool(self._run(ops.format_root(), deadline).created)

    def keep_alive(self, *, deadline: float | None = None) -> int:
        """Keep every idle session of this client alive; returns how many were renewed."""
        n = 0
        for pool in self._core.pools():
            for s in pool.idle():
                self._run(ops.keep_alive(s.group, s.session_id), deadline)
                pool.kept_alive(s)
                n += 1
        return n

    def renew_lease(self, shard_id: str, *, deadline: float | None = None) -> bool:
        """Extend the writer leases this client's sessions hold on ``shard_id``."""
        renewed = False
        for group, session_id in set(self._core.writers.values()):
            if group == shard_id:
                op = ops.renew_lease(shard_id)
                pinned = Op(op.service, op.method, op.route, op.build, True, True, session_id)
                renewed |= bool(self._run(pinned, deadline).renewed)
        return renewed

    # -- file data (keelfs.client.files) -------------------------------------------------------
    def _io_thread(self) -> sync_files.IOThread:
        with self._lock:
            if self._closed:
                raise RuntimeError("client is closed")
            if self._io is None:
                self._io = sync_files.IOThread(self._core, self.user)
            return self._io

    @overload
    def open(
        self,
        path: str,
        mode: Literal["rb", "r"] = "rb",
        *,
        replication: int | None = None,
        block_size: int | None = None,
        overwrite: bool = False,
        fsync: bool = False,
    ) -> sync_files.FileReader: ...

    @overload
    def open(
        self,
        path: str,
        mode: Literal["wb", "w", "ab", "a"],
        *,
        replication: int | None = None,
        block_size: int | None = None,
        overwrite: bool = False,
        fsync: bool = False,
    ) -> sync_files.FileWriter: ...

    def open(
        self,
        path: str,
        mode: str = "rb",
        *,
        replication: int | None = None,
        block_size: int | None = None,
        overwrite: bool = False,
        fsync: bool = False,
    ) -> sync_files.FileReader | sync_files.FileWriter:
        """Open file ``path`` for reading (``"rb"``: a seekable ``io.RawIOBase``) or create it
        for writing (``"wb"``: an ``io.BufferedIOBase``; exclusive unless ``overwrite``;
        ``replication``, ``block_size``: None for the cluster's defaults; ``fsync``: each
        block's last packet is fsynced on every node), or append to an existing file
        (``"ab"``: the same writer, positioned at its end). Use it in a ``with`` block;
        closing a writer completes the file. See ``keelfs.client.files`` (durability,
        failures)."""
        io_thread = self._io_thread()
        if files.check_mode(mode):
            writer = io_thread.run(
                files.open_writer(
                    io_thread.fs,
                    io_thread.chunks,
                    path,
                    replication=replication,
                    block_size=block_size,
                    overwrite=overwrite,
                    fsync=fsync,
                    append=files.is_append(mode),
                )
            )
            return sync_files.FileWriter(io_thread, writer)
        reader = io_thread.run(files.open_reader(io_thread.fs, io_thread.chunks, path))
        return sync_files.FileReader(io_thread, reader)

    def read_bytes(self, path: str) -> bytes:
        """The whole content of file ``path``."""
        with self.open(path, "rb") as f:
            return f.read()

    def write_bytes(
        self,
        path: str,
        data: bytes,
        *,
        overwrite: bool = False,
        replication: int | None = None,
        block_size: int | None = None,
        fsync: bool = False,
    ) -> int:
        """Create file ``path`` holding ``data`` (closed when this returns). At most
        ``MAX_INLINE_BYTES`` are kept in the file's metadata record, in one write
        (``keelfs.client.files``: small files)."""
        if len(data) <= files.MAX_INLINE_BYTES:
            io_thread = self._io_thread()
            io_thread.run(
                files.write_inline(
                    io_thread.fs,
                    path,
                    data,
                    replication=replication,
                    block_size=block_size,
                    overwrite=overwrite,
                )
            )
            return len(data)
        f = self.open(
            path,
            "wb",
            overwrite=overwrite,
            replication=replication,
            block_size=block_size,
            fsync=fsync,
        )
        try:
            f.write(data)
        except BaseException:
            f.abort()
            raise
        f.close()
        return len(data)

    def put(
        self,
        local: str | os.PathLike[str],
        remote: str,
        *,
        overwrite: bool = False,
        replication: int | None = None,
        block_size: int | None = None,
        fsync: bool = False,
        progress: files.Progress | None = None,
    ) -> int:
        """Copy local file ``local`` to ``remote``; ``progress(bytes_done)`` after each piece
        (in this thread). Returns the bytes copied. On failure the remote file is left under
        construction (its lease lapses) and the error raised. A file of at most
        ``MAX_INLINE_BYTES`` goes inline (``keelfs.client.files``: small files)."""
        done = 0
        with open(local, "rb") as src:
            head = src.read(files.MAX_INLINE_BYTES + 1)
            if len(head) <= files.MAX_INLINE_BYTES:
                self.write_bytes(
                    remote,
                    head,
                    overwrite=overwrite,
                    replication=replication,
                    block_size=block_size,
                )
                if progress is not None:
                    progress(len(head))
                return len(head)
            f = self.open(
                remote,
                "wb",
                overwrite=overwrite,
                replication=replication,
                block_size=block_size,
                fsync=fsync,
            )
            try:
                f.write(head)
                done += len(head)
                if progress is not None:
                    progress(done)
                while piece := src.read(files.TRANSFER_PIECE):
                    f.write(piece)
                    done += len(piece)
                    if progress is not None:
                        progress(done)
            except BaseException:
                f.abort()
                raise
            f.close()
        return done

    def get(
        self,
        remote: str,
        local: str | os.PathLike[str],
        *,
        progress: files.Progress | None = None,
    ) -> int:
        """Copy file ``remote`` to local file ``local`` (written as ``local.part`` and renamed
        into place when complete); ``progress(bytes_done)`` after each piece (in this thread)."""
        part = f"{os.fspath(local)}.part"
        done = 0
        try:
            with self.open(remote, "rb") as src, open(part, "wb") as dst:
                while piece := src.read(files.TRANSFER_PIECE):
                    dst.write(piece)
                    done += len(piece)
                    if progress is not None:
                        progress(done)
            os.replace(part, local)
        except BaseException:
            if os.path.exists(part):
                os.unlink(part)
            raise
        return done

    def checksum(self, path: str, *, mode: str = "MD5MD5CRC") -> FileChecksum:
        """File ``path``'s ``MD5-of-MD5-of-CRC32C`` checksum (HDFS's, as WebHDFS gives it), or
        with ``mode="COMPOSITE_CRC"`` its ``COMPOSITE-CRC32C``, from the chunk servers' stored
        CRCs, the data unread (``keelfs.client.checksums``)."""
        io_thread = self._io_thread()
        coro = checksums.file_checksum(io_thread.fs, io_thread.chunks, path, mode)
        return io_thread.run(coro)

    # -- config -------------------------------------------------------------------------------
    def shard_map(self, *, deadline: float | None = None) -> ShardMap:
        """The current ShardMap, fetched linearizably (and cached)."""
        m = self._drive(self._core.refresh_plan(deadline))
        assert m is not None
        return m

    def fetch_shard_map(
        self,
        since_version: int | None = None,
        *,
        stale_ok: bool = False,
        deadline: float | None = None,
    ) -> tuple[ShardMap, dict[int, str]] | None:
        """FetchShardMap as is: None when ``since_version`` is current, else (map, registry)."""
        reply = self._drive(self._core.fetch_map_plan(since_version, stale_ok, deadline))
        if reply.unchanged:
            return None
        m = self._core.shard_map
        assert m is not None
        return m, {int(k): v for k, v in reply.nodes.items()}

    def add_shard(
        self, shard_id: str, members: Sequence[int], *, deadline: float | None = None
    ) -> int:
        """Add a shard served by registered nodes; returns the new map version."""
        version = int(self._run(ops.add_shard(shard_id, members), deadline).map_version)
        self.shard_map()
        return version

    def remove_shard(self, shard_id: str, *, deadline: float | None = None) -> int:
        version = int(self._run(ops.remove_shard(shard_id), deadline).map_version)
        self.shard_map()
        return version

    def register_master(self, node_id: int, address: str, *, deadline: float | None = None) -> int:
        return int(self._run(ops.register_master(node_id, address), deadline).map_version)

    def nodes(self) -> dict[int, str]:
        """The node registry as last fetched (node id -> client address)."""
        if self._core.shard_map is None:
            self.shard_map()
        return self._core.nodes

    # -- administration -----------------------------------------------------------------------
    def status(self, address: str, *, timeout: float = 2.0) -> pb.StatusReply:
        """``Node.Status`` of one metadata node (one attempt; raises ``grpc.RpcError``)."""
        reply: pb.StatusReply = self._stub(address, "Node").Status(
            pb.StatusRequest(), timeout=timeout
        )
        return reply

    @property
    def stats(self) -> dict[str, int]:
        """Counters: calls, retries, unknown outcomes, redirects."""
        return dict(self._core.stats)

    def close(self) -> None:
        with self._lock:
            io_thread, self._io = self._io, None
        if io_thread is not None:
            io_thread.close()
        with self._lock:
            self._closed = True
            channels, self._channels, self._stubs = self._channels, {}, {}
        for channel in channels.values():
            channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
