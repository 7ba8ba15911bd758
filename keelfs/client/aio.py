"""``AsyncClient``: the ``grpc.aio`` twin of :class:`keelfs.client.Client`.

Same verbs and options, as coroutines (``ls`` is an async iterator); the routing, retries and
sessions are the same plans (``keelfs.client._core``) driven with ``await``. Create and use it
on one event loop, and ``await close()`` (or ``async with``) when done.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import weakref
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, Literal, overload

import grpc

from keelfs.client import _ops as ops
from keelfs.client import checksums, files, trash
from keelfs.client._core import Call, Core, Op, Plan, Sleep, WaitSession, log_call
from keelfs.client.batching import BATCHED_METHODS, Batcher
from keelfs.client.identity import ACTING_FOR, aio_interceptors, default_user
from keelfs.datapath.client import AsyncChunkClient
from keelfs.datapath.file_checksum import FileChecksum
from keelfs.errors import InvalidArgument, NotFound
from keelfs.meta.records import ContentSummary, FileInfo
from keelfs.meta.shardmap import ShardMap
from keelfs.rpc.channels import METADATA_CHANNEL_OPTIONS
from keelfs.rpc.pb import meta_pb2 as pb
from keelfs.rpc.pb import meta_pb2_grpc as _pb_grpc
from keelfs.rpc.wire import file_info_from_pb, summary_from_pb
from keelfs.tls.credentials import TlsSettings, open_aio_channel

__all__ = ["AsyncClient"]

pb_grpc: Any = _pb_grpc
_STUBS = {"Config": "ConfigStub", "Namespace": "NamespaceStub", "Node": "NodeStub"}


async def _session_freed(wait: WaitSession) -> None:
    """Until ``wait.pool`` has a session (or room for one) again, or ``wait.timeout`` passed:
    woken by the pool when one is returned (``SessionPool.notify_when_free``)."""
    loop = asyncio.get_running_loop()
    freed: asyncio.Future[None] = loop.create_future()

    def wake() -> bool:
        if freed.done():
            return False
        if _running_loop() is loop:
            freed.set_result(None)
        else:  # returned by another thread
            loop.call_soon_threadsafe(_set_unless_done, freed)
        return True

    wait.pool.notify_when_free(wake, wait.pin)
    try:
        await asyncio.wait_for(freed, wait.timeout)
    except TimeoutError:
        pass
    finally:
        if freed.cancelled():  # timed out or cancelled (wait_for cancels it): never woken
            wait.pool.forget_waker(wake)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _set_unless_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class AsyncClient:
    """See :class:`keelfs.client.Client` for the options and the verbs' meaning."""

    def __init__(
        self,
        config_servers: str | Iterable[str],
        *,
        deadline: float = 30.0,
        attempt_timeout: float = 2.0,
        max_sessions: int = 16,
        spread_reads: bool = True,
        batching: bool = True,
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
        self._channels: dict[str, Any] = {}
        self._stubs: dict[tuple[str, str], Any] = {}
        self._batching = batching
        self._batchers: dict[str, Batcher] = {}
        self._closed = False
        self._chunks: AsyncChunkClient | None = None
        self.open_writers: weakref.WeakSet[Any] = weakref.WeakSet()
        """Writers opened through this client and not closed yet (``close`` aborts them)."""

    @classmethod
    def _sharing(cls, core: Core, user: str | None = None) -> AsyncClient:
        """An ``AsyncClient`` on ``core`` (another client's sessions, leases and caches): how
        the synchronous ``Client`` runs its data path (``keelfs.client.sync_files.IOThread``)."""
        client = cls(core.config_addresses, batching=False, user=user)
        client._core = core
        return client

    # -- driving plans ------------------------------------------------------------------------
    def _stub(self, address: str, service: str) -> Any:
        if self._closed:
            raise RuntimeError("client is closed")
        stub = self._stubs.get((address, service))
        if stub is None:
            channel = self._channels.get(address)
            if channel is None:
                channel = open_aio_channel(
                    address,
                    self._core.tls,
                    METADATA_CHANNEL_OPTIONS,
                    interceptors=aio_interceptors(self.user),
                )
                self._channels[address] = channel
            stub = self._stubs[(address, service)] = getattr(pb_grpc, _STUBS[service])(channel)
        return stub

    async def _drive(self, plan: Plan) -> Any:
        try:
            action = next(plan)
            while True:
                result: Any = None
                if isinstance(action, Call):
                    result = await self._call(action)
                    log_call(action, result)
                elif isinstance(action, Sleep):
                    await asyncio.sleep(action.seconds)
                elif isinstance(action, WaitSession):
                    await _session_freed(action)
                action = plan.send(result)
        except StopIteration as stop:
            return stop.value
        finally:
            plan.close()

    async def _call(self, call: Call) -> Any:
        """The reply of ``call``, or the ``grpc.RpcError`` it failed with."""
        batchable = call.service == "Namespace" and call.method in BATCHED_METHODS
        # a call acting for another caller goes alone: a batch carries one caller
        if self._batching and batchable and ACTING_FOR.get() is None:
            batcher = self._batchers.get(call.address)
            if batcher is None:
                address = call.address
                batcher = Batcher(lambda: self._stub(address, "Namespace"))
                self._batchers[address] = batcher
            return await batcher.call(call.method, call.request, call.timeout)
        method = getattr(self._stub(call.address, call.service), call.method)
        try:
            return await method(call.request, timeout=call.timeout)
        except grpc.RpcError as err:
            return err

    async def _run(self, op: Op, deadline: float | None) -> Any:
        return await self._drive(self._core.plan(op, deadline))

    # -- namespace ----------------------------------------------------------------------------
    async def mkdir(
        self,
        path: str,
        *,
        parents: bool = False,
        mode: int | None = None,
        owner: str = "",
        group: str = "",
        deadline: float | None = None,
    ) -> list[str]:
        reply = await self._run(ops.mkdir(path, parents, mode, owner, group), deadline)
        return list(reply.created)

    async def create(
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
        op = ops.create(path, overwrite, mode, owner, group, replication, block_size)
        reply = await self._run(op, deadline)
        info = file_info_from_pb(reply.info)
        self._core.writers[info.path] = (reply.reply.group, info.lease_holder)
        return info

    async def complete(self, path: str, *, deadline: float | None = None) -> FileInfo:
        path = ops.norm(path)
        _, session_id = self._core.writers.get(path, ("", 0))
        reply = await self._run(ops.complete(path, session_id), deadline)
        self._core.writers.pop(path, None)
        return file_info_from_pb(reply.info)

    async def truncate(self, path: str, length: int, *, deadline: float | None = None) -> FileInfo:
        """Shorten file ``path`` to ``length`` bytes (``InvalidArgument`` past its end,
        ``LeaseConflict`` while it is written). Returns when done: a cut inside a block
        copies the kept bytes of that block into a new one first (``keelfs.meta.file_edits``)."""
        reply = await self._run(ops.truncate(path, length), deadline)
        info = file_info_from_pb(reply.info)
        if not info.under_construction:
            return info
        self._core.writers[info.path] = (reply.reply.group, info.lease_holder)
        try:
            await files.finish_truncate(self, self._chunk_client(), info, length)
        finally:
            self._core.writers.pop(info.path, None)
        return await self.stat(info.path, deadline=deadline)

    async def concat(
        self, target: str, sources: Sequence[str], *, deadline: float | None = None
    ) -> FileInfo:
        """Append the blocks of ``sources`` (in order) to ``target`` and remove the sources,
        atomically (metadata only; every path's entry on one shard, e.g. one directory).
        A small source kept inline is first rewritten in blocks when the others are in
        blocks (``files.concat_blocks_ready``)."""
        op = ops.concat(target, list(sources))
        try:
            reply = await self._run(op, deadline)
        except InvalidArgument as exc:
            if "inline" not in str(exc):
                raise
            ready = await files.concat_blocks_ready(
                self, self._chunk_client(), target, list(sources)
            )
            if not ready:
                raise
            reply = await self._run(ops.concat(target, list(sources)), deadline)
        return file_info_from_pb(reply.info)

    async def stat(
        self,
        path: str,
        *,
        stale_ok: bool = False,
        read: bool = False,
        deadline: float | None = None,
    ) -> FileInfo:
        """``path``'s ``FileInfo``; ``read``: a reader's stat (refused without READ on a
        file), with an inline file's content, so that its ``version`` is exact (what
        ``rename(expect=...)`` compares)."""
        return file_info_from_pb(
            (await self._run(ops.stat(path, stale_ok, read=read), deadline)).info
        )

    async def exists(
        self, path: str, *, stale_ok: bool = False, deadline: float | None = None
    ) -> bool:
        try:
            await self.stat(path, stale_ok=stale_ok, deadline=deadline)
        except NotFound:
            return False
        return True

    async def ls(
        self,
        path: str,
        *,
        page_size: int = 1000,
        stale_ok: bool = False,
        deadline: float | None = None,
    ) -> AsyncIterator[FileInfo]:
        path = ops.norm(path)
        cursor: str | None = None
        while True:
            try:
                reply = await self._run(ops.list_dir(path, cursor, page_size, stale_ok), deadline)
            except NotFound:
                if cursor is not None:
                    raise
                info = await self.stat(path, stale_ok=stale_ok, deadline=deadline)
                if info.is_dir:
                    raise
                yield info
                return
            for entry in reply.entries:
                yield file_info_from_pb(entry)
            if not reply.HasField("cursor"):
                return
            cursor = reply.cursor

    async def list_page(
        self,
        path: str,
        start_after: str | None = None,
        limit: int = 1000,
        *,
        stale_ok: bool = False,
        deadline: float | None = None,
    ) -> list[FileInfo]:
        """One page of directory ``path``: at most ``limit`` (up to 10,000) entries in name
        order, after the name ``start_after`` (None: from the first). What a paging caller
        that keeps its place by name uses (WebHDFS's ``LISTSTATUS_BATCH``)."""
        op = ops.list_dir(path, start_after, limit, stale_ok)
        reply = await self._run(op, deadline)
        return [file_info_from_pb(entry) for entry in reply.entries]

    async def delete(
        self, path: str, *, recursive: bool = False, deadline: float | None = None
    ) -> ops.DeleteResult:
        return ops.delete_result(await self._run(ops.delete(path, recursive), deadline))

    async def server_defaults(self, *, deadline: float | None = None) -> ops.ServerDefaults:
        """What the masters tell clients to follow: the trash interval (0: no trash)."""
        return ops.server_defaults_result(await self._run(ops.server_defaults(), deadline))

    async def move_to_trash(self, path: str) -> str | None:
        """Move ``path`` (a file or a whole directory) into this client's user's trash,
        ``/.Trash/<user>/Current/<path>``, with one rename (atomic; a taken name gets the
        time appended), as ``keelfs rm`` does (``keelfs.client.trash``). Returns where it
        went, or None when nothing was moved: the trash is off on the cluster, or ``path``
        is in the trash already (delete it then, as HDFS's ``rm`` does). ``delete`` itself
        never uses the trash (as HDFS's ``FileSystem.delete``). The user is who the masters
        take this client for (with TLS, its certificate's user: ``server_defaults().user``)."""
        defaults = await self.server_defaults()
        if defaults.trash_interval_ms == 0:
            return None
        steps = trash.move_steps(defaults.user or self.user, path, trash.now_ms)
        result: str | None = await trash.run_async(self, steps)
        return result

    async def expunge(self, *, immediate: bool = False) -> list[str]:
        """Empty this user's trash as ``keelfs expunge`` (HDFS's ``-expunge``): checkpoints
        older than the trash interval are deleted, then ``Current`` becomes a new checkpoint;
        ``immediate``: everything in the trash is deleted at once. Returns the checkpoints
        deleted."""
        defaults = await self.server_defaults()
        home = trash.home(defaults.user or self.user)
        steps = trash.expunge_steps(home, defaults.trash_interval_ms, trash.now_ms(), immediate)
        deleted: list[str] = await trash.run_async(self, steps)
        return deleted

    async def set_quota(
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
        await self._run(ops.set_quota(path, names, space, clear), deadline)

    async def clear_quota(self, path: str, *, deadline: float | None = None) -> None:
        """Remove both of ``path``'s quotas (superusers)."""
        await self._run(ops.set_quota(path, None, None, True), deadline)

    async def quota(self, path: str, *, deadline: float | None = None) -> ops.QuotaSummary:
        """``path``'s quota: its limits and what its subtree uses, summed over the shards."""
        m = self._core.shard_map or await self.shard_map()
        replies = [
            await self._run(ops.get_quota(path, shard), deadline) for shard in sorted(m.shards)
        ]
        return ops.quota_summary(path, replies)

    # -- snapshots (keelfs.meta.snapshots; docs/data.md, "Snapshots") ------------------------
    async def allow_snapshot(self, path: str, *, deadline: float | None = None) -> None:
        """Make directory ``path`` snapshottable (its owner or a superuser; HDFS's
        ``dfsadmin -allowSnapshot``). Snapshottable directories do not nest."""
        await self._run(ops.snapshot("allow", path), deadline)

    async def disallow_snapshot(self, path: str, *, deadline: float | None = None) -> None:
        """Make ``path`` not snapshottable; refused while it has snapshots."""
        await self._run(ops.snapshot("disallow", path), deadline)

    async def create_snapshot(
        self, path: str, name: str | None = None, *, deadline: float | None = None
    ) -> str:
        """Take snapshot ``name`` (default ``sYYYYMMDD-HHMMSS.mmm``, as HDFS) of snapshottable
        directory ``path`` (its owner or a superuser); returns where it is read,
        ``path/.snapshot/name``. ``AlreadyExists`` if it exists; running it again after a
        failure finishes the snapshot."""
        chosen = name or ops.default_snapshot_name(time.time())
        reply = await self._run(ops.snapshot("create", path, chosen), deadline)
        return str(json.loads(reply.json)["path"])

    async def delete_snapshot(self, path: str, name: str, *, deadline: float | None = None) -> None:
        """Delete snapshot ``name`` of ``path``; the blocks only it held are released."""
        await self._run(ops.snapshot("delete", path, name), deadline)

    async def rename_snapshot(
        self, path: str, name: str, new_name: str, *, deadline: float | None = None
    ) -> str:
        """Rename snapshot ``name`` of ``path`` to ``new_name`` (its owner or a superuser;
        HDFS's ``renameSnapshot``); returns where it is read now. ``AlreadyExists`` if
        ``new_name`` is taken; running it again after a failure finishes the rename."""
        reply = await self._run(ops.snapshot("rename", path, name, new_name), deadline)
        return str(json.loads(reply.json)["path"])

    async def list_snapshots(
        self, path: str, *, deadline: float | None = None
    ) -> list[ops.SnapshotInfo]:
        """The snapshots of directory ``path``, by name (HDFS's ``lsSnapshot``)."""
        return ops.snapshot_infos(path, await self._run(ops.snapshot("list", path), deadline))

    async def snapshottable_directories(self, *, deadline: float | None = None) -> list[str]:
        """Every snapshottable directory (HDFS's ``lsSnapshottableDir``)."""
        reply = await self._run(ops.snapshot("list", ""), deadline)
        return [str(p) for p in json.loads(reply.json)]

    async def snapshot_diff(
        self, path: str, from_name: str, to_name: str, *, deadline: float | None = None
    ) -> list[dict[str, str]]:
        """What changed under ``path`` from snapshot ``from_name`` to ``to_name`` ("." for
        the live tree), as HDFS's ``snapshotDiff``: ``{"type": "+"|"-"|"M"|"R", "path"[,
        "to"]}`` with paths relative to ``path`` (``./a``)."""
        reply = await self._run(ops.snapshot("diff", path, from_name, to_name), deadline)
        return list(json.loads(reply.json)["diff"])

    async def rename(
        self,
        src: str,
        dst: str,
        *,
        overwrite: bool = False,
        expect: str = "",
        deadline: float | None = None,
    ) -> None:
        """Move ``src`` to ``dst``; ``overwrite``: replacing a file there; ``expect`` (with
        ``overwrite``): only if ``dst`` is the file of that version (``FileInfo.version``
        of a reader's stat; ``NotFound`` if there is none, ``AlreadyExists`` if it is
        another), a compare-and-replace in one metadata command."""
        await self._run(ops.rename(src, dst, overwrite, expect), deadline)

    async def set_replication(
        self, path: str, replication: int, *, deadline: float | None = None
    ) -> FileInfo:
        reply = await self._run(ops.set_replication(path, replication), deadline)
        return file_info_from_pb(reply.info)

    async def set_times(
        self,
        path: str,
        *,
        mtime: int | None = None,
        atime: int | None = None,
        deadline: float | None = None,
    ) -> FileInfo:
        return file_info_from_pb(
            (await self._run(ops.set_times(path, mtime, atime), deadline)).info
        )

    async def chmod(self, path: str, mode: int, *, deadline: float | None = None) -> FileInfo:
        return file_info_from_pb((await self._run(ops.chmod(path, mode), deadline)).info)

    async def set_acl(
        self, path: str, spec: str | Sequence[str], *, deadline: float | None = None
    ) -> FileInfo:
        """Replace the ACL's scopes that ``spec`` names (HDFS's ``setAcl``, ``setfacl --set``):
        ``"user::rwx,user:bob:r-x,group::r-x,other::---"``; the owner or a superuser. The
        answer: the new attributes (``acl``; ``mode``'s group bits are the mask)."""
        return file_info_from_pb(
            (await self._run(ops.acl_change("set", path, spec), deadline)).info
        )

    async def modify_acl_entries(
        self, path: str, spec: str | Sequence[str], *, deadline: float | None = None
    ) -> FileInfo:
        """Add these entries or change their permissions (``setfacl -m``)."""
        return file_info_from_pb(
            (await self._run(ops.acl_change("modify", path, spec), deadline)).info
        )

    async def remove_acl_entries(
        self, path: str, spec: str | Sequence[str], *, deadline: float | None = None
    ) -> FileInfo:
        """Remove these entries (``setfacl -x``; no permissions: ``"user:bob"``)."""
        return file_info_from_pb(
            (await self._run(ops.acl_change("remove_entries", path, spec), deadline)).info
        )

    async def remove_default_acl(self, path: str, *, deadline: float | None = None) -> FileInfo:
        """Remove every default entry (``setfacl -k``)."""
        return file_info_from_pb(
            (await self._run(ops.acl_change("remove_default", path), deadline)).info
        )

    async def remove_acl(self, path: str, *, deadline: float | None = None) -> FileInfo:
        """Remove every entry beyond the mode (``setfacl -b``)."""
        return file_info_from_pb((await self._run(ops.acl_change("remove", path), deadline)).info)

    async def acl_status(self, path: str, *, deadline: float | None = None) -> ops.AclStatus:
        """``path``'s ACL (HDFS's ``getAclStatus``, ``getfacl``): anyone who may reach it."""
        return ops.AclStatus.of(await self.stat(path, deadline=deadline))

    async def chown(
        self,
        path: str,
        owner: str | None = None,
        group: str | None = None,
        *,
        deadline: float | None = None,
    ) -> FileInfo:
        return file_info_from_pb((await self._run(ops.chown(path, owner, group), deadline)).info)

    async def du(self, path: str, *, deadline: float | None = None) -> ContentSummary:
        path = ops.norm(path)
        m = self._core.shard_map or await self.shard_map()
        if len(m.shards) == 1:
            reply = await self._run(ops.content_summary(path, False), deadline)
            return summary_from_pb(reply.summary)
        info = await self.stat(path, deadline=deadline)
        if not info.is_dir:
            return ContentSummary(info.length, 1, 0, info.length * info.replication)
        length = files = dirs = space = 0
        stack = [path]
        while stack:
            directory = stack.pop()
            dirs += 1
            async for e in self.ls(directory, deadline=deadline):
                if e.is_dir:
                    stack.append(e.path)
                else:
                    files += 1
                    length += e.length
                    space += e.length * e.replication
        return ContentSummary(length, files, dirs, space)

    async def shard_content_summary(self, path: str, *, stale_ok: bool = False) -> ContentSummary:
        return summary_from_pb((await self._run(ops.content_summary(path, stale_ok), None)).summary)

    async def format(self, *, deadline: float | None = None) -> bool:
        return bool((await self._run(ops.format_root(), deadline)).created)

    async def keep_alive(self, *, deadline: float | None = None) -> int:
        n = 0
        for pool in self._core.pools():
            for s in pool.idle():
                await self._run(ops.keep_alive(s.group, s.session_id), deadline)
                pool.kept_alive(s)
                n += 1
        return n

    async def renew_lease(self, shard_id: str, *, deadline: float | None = None) -> bool:
        renewed = False
        for group, session_id in set(self._core.writers.values()):
            if group == shard_id:
                op = ops.renew_lease(shard_id)
                pinned = Op(op.service, op.method, op.route, op.build, True, True, session_id)
                renewed |= bool((await self._run(pinned, deadline)).renewed)
        return renewed

    # -- file data (keelfs.client.files) -------------------------------------------------------
    def _chunk_client(self) -> AsyncChunkClient:
        if self._closed:
            raise RuntimeError("client is closed")
        if self._chunks is None:
            self._chunks = AsyncChunkClient(tls=self._core.tls)
        return self._chunks

    @overload
    async def open(
        self,
        path: str,
        mode: Literal["rb", "r"] = "rb",
        *,
        replication: int | None = None,
        block_size: int | None = None,
        overwrite: bool = False,
        fsync: bool = False,
    ) -> files.AsyncFileReader: ...

    @overload
    async def open(
        self,
        path: str,
        mode: Literal["wb", "w", "ab", "a"],
        *,
        replication: int | None = None,
        block_size: int | None = None,
        overwrite: bool = False,
        fsync: bool = False,
    ) -> files.AsyncFileWriter: ...

    async def open(
        self,
        path: str,
        mode: str = "rb",
        *,
        replication: int | None = None,
        block_size: int | None = None,
        overwrite: bool = False,
        fsync: bool = False,
    ) -> files.AsyncFileReader | files.AsyncFileWriter:
        """Open file ``path`` for reading (``"rb"``), create it for writing (``"wb"``:
        exclusive unless ``overwrite``; ``replication``, ``block_size``: None for the
        cluster's defaults; ``fsync``: each block's last packet is fsynced on every node), or
        append to it (``"ab"``: an existing file, with a writer lease as for ``"wb"``).
        ``async with await fs.open(...) as f``. See ``keelfs.client.files``."""
        if files.check_mode(mode):
            return await files.open_writer(
                self,
                self._chunk_client(),
                path,
                replication=replication,
                block_size=block_size,
                overwrite=overwrite,
                fsync=fsync,
                append=files.is_append(mode),
            )
        return await files.open_reader(self, self._chunk_client(), path)

    async def read_bytes(self, path: str) -> bytes:
        """The whole content of file ``path``."""
        return await files.read_whole(self, self._chunk_client, path)

    async def write_bytes(
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
            await files.write_inline(
                self,
                path,
                data,
                replication=replication,
                block_size=block_size,
                overwrite=overwrite,
            )
            return len(data)
        w = await files.open_writer(
            self,
            self._chunk_client(),
            path,
            replication=replication,
            block_size=block_size,
            overwrite=overwrite,
            fsync=fsync,
        )
        try:
            await w.write(data)
        except BaseException:
            await w.abort()
            raise
        await w.close()
        return len(data)

    async def put(
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
        """Copy local file ``local`` to ``remote``; ``progress(bytes_done)`` after each piece.
        Returns the bytes copied."""
        return await files.put_async(
            self,
            self._chunk_client(),
            local,
            remote,
            progress,
            replication=replication,
            block_size=block_size,
            overwrite=overwrite,
            fsync=fsync,
        )

    async def get(
        self,
        remote: str,
        local: str | os.PathLike[str],
        *,
        progress: files.Progress | None = None,
    ) -> int:
        """Copy file ``remote`` to local file ``local`` (complete or not at all)."""
        return await files.get_async(self, self._chunk_client(), remote, local, progress)

    async def checksum(self, path: str, *, mode: str = "MD5MD5CRC") -> FileChecksum:
        """File ``path``'s ``MD5-of-MD5-of-CRC32C`` checksum (HDFS's, as WebHDFS gives it), or
        with ``mode="COMPOSITE_CRC"`` its ``COMPOSITE-CRC32C``, from the chunk servers' stored
        CRCs, the data unread (``keelfs.client.checksums``)."""
        return await checksums.file_checksum(self, self._chunk_client(), path, mode)

    # -- config -------------------------------------------------------------------------------
    async def shard_map(self, *, deadline: float | None = None) -> ShardMap:
        m = await self._drive(self._core.refresh_plan(deadline))
        assert m is not None
        return m

    async def fetch_shard_map(
        self,
        since_version: int | None = None,
        *,
        stale_ok: bool = False,
        deadline: float | None = None,
    ) -> tuple[ShardMap, dict[int, str]] | None:
        reply = await self.fetch_map_reply(since_version, stale_ok=stale_ok, deadline=deadline)
        if reply.unchanged:
            return None
        m = self._core.shard_map
        assert m is not None
        return m, {int(k): v for k, v in reply.nodes.items()}

    async def fetch_map_reply(
        self,
        since_version: int | None = None,
        *,
        stale_ok: bool = False,
        deadline: float | None = None,
    ) -> pb.FetchShardMapReply:
        """FetchShardMap's reply as it came (the map is installed here as by
        ``fetch_shard_map``): with the chunk servers' administrative states too."""
        reply: pb.FetchShardMapReply = await self._drive(
            self._core.fetch_map_plan(since_version, stale_ok, deadline)
        )
        return reply

    async def add_shard(
        self, shard_id: str, members: Sequence[int], *, deadline: float | None = None
    ) -> int:
        version = int((await self._run(ops.add_shard(shard_id, members), deadline)).map_version)
        await self.shard_map()
        return version

    async def remove_shard(self, shard_id: str, *, deadline: float | None = None) -> int:
        version = int((await self._run(ops.remove_shard(shard_id), deadline)).map_version)
        await self.shard_map()
        return version

    async def register_chunk_server(
        self, server_id: str, address: str, rack: str, *, deadline: float | None = None
    ) -> None:
        """Add (or update) a chunk server in the config group's registry."""
        await self._run(ops.register_chunk_server(server_id, address, rack), deadline)

    async def chunk_servers(self, *, deadline: float | None = None) -> list[dict[str, str]]:
        """The registered chunk servers (id, address, rack)."""
        reply = await self._run(ops.list_chunk_servers(), deadline)
        return [
            {"server_id": s.server_id, "address": s.address, "rack": s.rack} for s in reply.servers
        ]

    async def register_master(
        self, node_id: int, address: str, *, deadline: float | None = None
    ) -> int:
        reply = await self._run(ops.register_master(node_id, address), deadline)
        return int(reply.map_version)

    async def nodes(self) -> dict[int, str]:
        if self._core.shard_map is None:
            await self.shard_map()
        return self._core.nodes

    # -- administration -----------------------------------------------------------------------
    async def status(self, address: str, *, timeout: float = 2.0) -> pb.StatusReply:
        """``Node.Status`` of one metadata node (one attempt; raises ``grpc.RpcError``)."""
        reply: pb.StatusReply = await self._stub(address, "Node").Status(
            pb.StatusRequest(), timeout=timeout
        )
        return reply

    @property
    def stats(self) -> dict[str, int]:
        return dict(self._core.stats)

    async def close(self) -> None:
        """Close the client. Writers still open are aborted first (their files stay under
        construction until their leases lapse and the masters recover them)."""
        for writer in list(self.open_writers):
            await writer.abort()
        self._closed = True
        batchers, self._batchers = self._batchers, {}
        for batcher in batchers.values():
            await batcher.close()
        chunks, self._chunks = self._chunks, None
        if chunks is not None:
            await chunks.close()
        channels, self._channels, self._stubs = self._channels, {}, {}
        for channel in channels.values():
            await channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
