"""What one master asks of another: the internal RPCs of cross-shard transactions, resharding
moves and orphan collection (``TxnPrepare``/``TxnFinish``/``TxnStatus``, ``IssueTxnIds``,
``Move``/``MoveRead``, ``BlocksKnown``, ``SealRing``, ``ListDir`` with records), and the
block-token keys (``FetchBlockKeys``).

They are not part of the public client: an application has no business preparing a
transaction or reading a move's pages. ``PeerClient`` is the client library's
``AsyncClient`` (the same routing by shard map, leader hints, retries and deadlines) with these
verbs added; each master holds one (``MetaNode.internal``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from keelfs.client import AsyncClient
from keelfs.client._core import CONFIG_ROUTE, Op, Route
from keelfs.client._ops import get_quota, namespace_op, norm, snapshot_view
from keelfs.errors import NotFound
from keelfs.meta.records import FileInfo
from keelfs.meta.shardmap import BlockKey
from keelfs.rpc.pb import meta_pb2 as pb
from keelfs.rpc.wire import file_info_from_pb

__all__ = ["PeerClient"]


# -- the requests ------------------------------------------------------------------------------
def issue_txn_ids(count: int) -> Op:
    build = lambda h: pb.IssueTxnIdsRequest(header=h, count=count)  # noqa: E731
    return Op("Config", "IssueTxnIds", CONFIG_ROUTE, build, True, False)


def txn_prepare(group: str, txn_id: int, coordinator: str, part: str) -> Op:
    def build(h: pb.RequestHeader) -> pb.TxnPrepareRequest:
        return pb.TxnPrepareRequest(
            header=h, group=group, txn_id=txn_id, coordinator=coordinator, part=part
        )

    return namespace_op("TxnPrepare", Route("shard", group), build, write=True, session=False)


def txn_finish(group: str, txn_id: int, commit: bool) -> Op:
    build = lambda h: pb.TxnFinishRequest(header=h, group=group, txn_id=txn_id, commit=commit)  # noqa: E731
    return namespace_op("TxnFinish", Route("shard", group), build, write=True, session=False)


def txn_status(group: str, txn_id: int) -> Op:
    build = lambda h: pb.TxnStatusRequest(header=h, group=group, txn_id=txn_id)  # noqa: E731
    return namespace_op("TxnStatus", Route("shard", group), build, write=False, session=False)


def blocks_known(group: str, block_ids: Sequence[int]) -> Op:
    def build(h: pb.RequestHeader) -> pb.BlocksKnownRequest:
        return pb.BlocksKnownRequest(header=h, group=group, block_ids=list(block_ids))

    return namespace_op("BlocksKnown", Route("shard", group), build, write=True, session=False)


def fetch_block_keys() -> Op:
    build = lambda h: pb.FetchBlockKeysRequest()  # noqa: E731
    return Op("Config", "FetchBlockKeys", CONFIG_ROUTE, build, any_member=True)


def seal_ring() -> Op:
    build = lambda h: pb.SealRingRequest(header=h)  # noqa: E731
    return Op("Config", "SealRing", CONFIG_ROUTE, build, True, False)


def move_command(group: str, op: str, args: str) -> Op:
    build = lambda h: pb.MoveRequest(header=h, group=group, op=op, args=args)  # noqa: E731
    return namespace_op("Move", Route("shard", group), build, write=True, session=False)


def move_read(group: str, txn_id: int, start_after: bytes | None, limit: int) -> Op:
    def build(h: pb.RequestHeader) -> pb.MoveReadRequest:
        req = pb.MoveReadRequest(header=h, group=group, txn_id=txn_id, limit=limit)
        if start_after is not None:
            req.start_after = start_after
        return req

    return namespace_op("MoveRead", Route("shard", group), build, write=True, session=False)


def list_records(path: str, start_after: str | None, limit: int = 1000) -> Op:
    """A page of directory ``path`` with the stored records, from its shard's leader."""

    def build(h: pb.RequestHeader) -> pb.ListDirRequest:
        req = pb.ListDirRequest(header=h, path=path, limit=limit, records=True)
        if start_after is not None:
            req.start_after = start_after
        return req

    return namespace_op("ListDir", Route("dir", path), build, write=True, session=False)


class PeerClient(AsyncClient):
    """An ``AsyncClient`` with the masters' internal verbs."""

    async def dir_record(self, path: str, *, deadline: float | None = None) -> str:
        """Directory ``path``'s stored self-record, read on its shard's leader."""
        reply = await self._run(list_records(path, None, limit=1), deadline)
        return str(reply.dir_record)

    async def entry_record(self, path: str, *, deadline: float | None = None) -> str:
        """``path``'s stored entry record ("" when there is none), read on its shard's
        leader after a barrier."""
        path = norm(path)
        build = lambda h: pb.GetFileInfoRequest(header=h, path=path, record=True)  # noqa: E731
        op = namespace_op("GetFileInfo", Route("entry", path), build, write=True, session=False)
        try:
            reply = await self._run(op, deadline)
        except NotFound:
            return ""
        return str(reply.record)

    async def issue_txn_ids(self, count: int, *, deadline: float | None = None) -> int:
        """The first of ``count`` fresh cluster-wide transaction ids."""
        reply = await self._run(issue_txn_ids(count), deadline)
        return int(reply.first)

    async def txn_prepare(
        self, group: str, txn_id: int, coordinator: str, part: str, *, deadline: float | None = None
    ) -> pb.TxnReply:
        return await self._run(txn_prepare(group, txn_id, coordinator, part), deadline)

    async def txn_finish(
        self, group: str, txn_id: int, commit: bool, *, deadline: float | None = None
    ) -> pb.TxnReply:
        return await self._run(txn_finish(group, txn_id, commit), deadline)

    async def list_records(
        self, path: str, *, deadline: float | None = None
    ) -> tuple[str, list[tuple[FileInfo, str]]]:
        """Directory ``path``'s self-record and every entry with its stored record, read on
        its shard's leader (what a master needs to build a transaction over a subtree)."""
        out: list[tuple[FileInfo, str]] = []
        cursor: str | None = None
        dir_record = ""
        while True:
            reply = await self._run(list_records(path, cursor), deadline)
            dir_record = reply.dir_record
            for entry, record in zip(reply.entries, reply.records, strict=True):
                out.append((file_info_from_pb(entry), record))
            if not reply.HasField("cursor"):
                return dir_record, out
            cursor = reply.cursor

    async def blocks_known(
        self, group: str, block_ids: Sequence[int], *, deadline: float | None = None
    ) -> tuple[list[int], int]:
        """Which of ``block_ids`` a record of shard ``group`` references (read linearizably
        on its leader), and the shard's count of references that arrived from elsewhere
        (``keelfs.master.orphans`` says why both)."""
        reply = await self._run(blocks_known(group, block_ids), deadline)
        return [int(b) for b in reply.known], int(reply.gained)

    async def fetch_block_keys(self, *, deadline: float | None = None) -> list[BlockKey]:
        """The block-token keys from the config group (``keelfs.master.block_keys``)."""
        reply = await self._run(fetch_block_keys(), deadline)
        return [BlockKey(k.key_id, k.secret, k.active_ms, k.expires_ms) for k in reply.keys]

    async def seal_ring(self, *, deadline: float | None = None) -> int:
        """Mark the namespace as existing (``Format`` does it): shards added or removed from
        now on move their directories."""
        return int((await self._run(seal_ring(), deadline)).map_version)

    async def move_command(
        self, group: str, op: str, args: dict[str, Any], *, deadline: float | None = None
    ) -> dict[str, Any]:
        """Propose a resharding move command on shard ``group`` (its leader); its result."""
        body = json.dumps(args, separators=(",", ":"))
        reply = await self._run(move_command(group, op, body), deadline)
        return dict(json.loads(reply.result))

    async def get_quota_view(
        self, path: str, shard: str, deadline: float | None = None
    ) -> pb.GetQuotaReply:
        """``path``'s quota as shard ``shard`` sees it (``GetQuota``)."""
        reply: pb.GetQuotaReply = await self._run(get_quota(path, shard), deadline)
        return reply

    async def snapshot_view(
        self, path: str, name: str, to: str, shard: str, deadline: float | None = None
    ) -> dict[str, Any]:
        """Shard ``shard``'s part of ``path``'s snapshots (``Snapshot`` "view")."""
        reply: pb.SnapshotReply = await self._run(snapshot_view(path, name, to, shard), deadline)
        return dict(json.loads(reply.json))

    async def move_read(
        self,
        group: str,
        txn_id: int,
        start_after: bytes | None = None,
        limit: int = 1000,
        *,
        deadline: float | None = None,
    ) -> list[tuple[bytes, bytes]]:
        """A page of the records in move ``txn_id``'s ranges on shard ``group`` (its leader)."""
        reply = await self._run(move_read(group, txn_id, start_after, limit), deadline)
        return list(zip(reply.keys, reply.values, strict=True))

    async def txn_status(
        self, group: str, txn_id: int, *, deadline: float | None = None
    ) -> pb.TxnReply:
        return await self._run(txn_status(group, txn_id), deadline)
