"""Batched namespace calls (``Namespace.Batch`` and the asyncio client's ``Batcher``) against
real processes: concurrent requests travel together, each item keeps its own outcome, and a
broken batch is refused item by item or as a whole, never half-applied by accident."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from keelfs.client import AsyncClient
from keelfs.client.batching import ITEM_FRAMING_BYTES, MAX_BATCH_BYTES, Batcher
from keelfs.errors import AlreadyExists, InvalidPath, NotFound
from keelfs.master.batch import MAX_BATCH_ITEMS
from keelfs.meta.records import MAX_INLINE_BYTES
from keelfs.rpc.grpc_errors import error_from_rpc
from keelfs.rpc.pb import meta_pb2 as pb
from keelfs.rpc.pb import meta_pb2_grpc as pb_grpc
from keelfs.rpc.wire import MAX_REQUEST_BYTES
from keelfs.server.metacluster import MetaCluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def _batch_calls(fs: AsyncClient) -> int:
    return sum(b.calls for b in fs._batchers.values())


def test_concurrent_creates_travel_in_batches_and_keep_their_own_outcomes(
    cluster: MetaCluster,
) -> None:
    async def main() -> None:
        async with AsyncClient(cluster.config_addresses, max_sessions=64) as fs:
            await fs.mkdir("/batch")
            for taken in ("/batch/taken-0", "/batch/taken-1"):
                await fs.create(taken)
                await fs.complete(taken)
            before = _batch_calls(fs)
            names = [f"/batch/f{i}" for i in range(60)] + ["/batch/taken-0", "/batch/taken-1"]
            results = await asyncio.gather(
                *(fs.create(name) for name in names), return_exceptions=True
            )
            calls = _batch_calls(fs) - before
            assert 0 < calls < len(names) // 2, f"{calls} calls for {len(names)} concurrent creates"
            for name, result in zip(names, results, strict=True):
                if "taken" in name:
                    assert isinstance(result, AlreadyExists), (name, result)
                else:
                    assert not isinstance(result, BaseException), (name, result)
                    assert result.path == name
            infos = await asyncio.gather(*(fs.stat(n) for n in names))
            assert [i.path for i in infos] == names
            listed = [e.name async for e in fs.ls("/batch")]
            assert listed == sorted(n.rsplit("/", 1)[1] for n in names)
            missing = await asyncio.gather(
                fs.stat("/batch/nope"), fs.stat("/batch/f1"), return_exceptions=True
            )
            assert isinstance(missing[0], NotFound) and missing[1].path == "/batch/f1"

    asyncio.run(main())


def test_batching_off_sends_one_call_per_request(cluster: MetaCluster) -> None:
    async def main() -> None:
        async with AsyncClient(cluster.config_addresses, batching=False) as fs:
            await fs.mkdir("/unbatched")
            await asyncio.gather(*(fs.create(f"/unbatched/f{i}") for i in range(10)))
            assert fs._batchers == {}
            assert len([e async for e in fs.ls("/unbatched")]) == 10

    asyncio.run(main())


def _raw_batch(cluster: MetaCluster, items: list[pb.BatchItem]) -> pb.BatchReply:
    """Send ``items`` as one Batch to the shard's leader. An item answered UNAVAILABLE (the
    lead moved while it was read: the client library retries those) sends the batch again to
    the leader found then; every caller's items are reads or refused, so sending twice is
    harmless."""
    shard = cluster.admin().shard_map().shard_for_path("/x")
    unavailable = grpc.StatusCode.UNAVAILABLE.value[0]
    for _ in range(5):
        address = cluster.nodes[cluster.leader(shard)].client_address
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.NamespaceStub(channel)
            reply: pb.BatchReply = stub.Batch(pb.BatchRequest(items=items), timeout=10)
        if all(item.status != unavailable for item in reply.items):
            break
    return reply


def test_bad_items_are_refused_one_by_one(cluster: MetaCluster) -> None:
    cluster.admin().mkdir("/raw", parents=True)
    good = pb.GetFileInfoRequest(path="/raw").SerializeToString()
    items = [
        pb.BatchItem(method="GetFileInfo", request=good),
        pb.BatchItem(method="Batch", request=b""),
        pb.BatchItem(method="NoSuchRpc", request=b""),
        pb.BatchItem(method="GetFileInfo", request=b"\xff\xff\xff"),
        pb.BatchItem(
            method="GetFileInfo", request=pb.GetFileInfoRequest(path="raw/rel").SerializeToString()
        ),
    ]
    reply = _raw_batch(cluster, items)
    assert len(reply.items) == len(items)
    first = reply.items[0]
    assert first.status == 0
    assert pb.FileInfoReply.FromString(first.reply).info.path == "/raw"
    for item in reply.items[1:4]:
        assert item.status == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert '"code":"INVALID_ARGUMENT"' in item.error
    assert '"code":"INVALID_PATH"' in reply.items[4].error


def test_an_oversized_batch_is_refused_whole(cluster: MetaCluster) -> None:
    name = "/raw-too-many"
    create = pb.MkdirRequest(path=name).SerializeToString()
    items = [pb.BatchItem(method="Mkdir", request=create)] * (MAX_BATCH_ITEMS + 1)
    with pytest.raises(grpc.RpcError) as info:
        _raw_batch(cluster, items)
    err = error_from_rpc(info.value)
    assert err is not None and err.code == "INVALID_ARGUMENT"
    assert not cluster.admin().exists(name)


def test_client_side_bad_path_never_reaches_a_batch(cluster: MetaCluster) -> None:
    async def main() -> None:
        async with AsyncClient(cluster.config_addresses) as fs:
            results = await asyncio.gather(
                fs.create("relative"), fs.create("/ok-batch-path"), return_exceptions=True
            )
            assert isinstance(results[0], InvalidPath)
            assert not isinstance(results[1], BaseException)

    asyncio.run(main())


def test_a_batch_of_inline_writes_stays_under_the_masters_request_limit() -> None:
    """Inline writes make items of up to 64 KiB: a batch filled to the client's byte budget
    must still be a request the masters accept (their limit is on the whole message, the
    per-item framing included)."""
    sent: list[pb.BatchRequest] = []

    class Stub:
        async def Batch(self, batch: pb.BatchRequest, timeout: float) -> pb.BatchReply:  # noqa: N802
            sent.append(batch)
            ok = pb.FileInfoReply().SerializeToString()
            return pb.BatchReply(items=[pb.BatchItemReply(reply=ok) for _ in batch.items])

        async def CreateInline(self, request: Any, timeout: float) -> pb.FileInfoReply:  # noqa: N802
            return pb.FileInfoReply()

    def request(size: int) -> pb.CreateInlineRequest:
        return pb.CreateInlineRequest(path="/d/f", data=b"x" * size)

    full = [request(MAX_INLINE_BYTES) for _ in range(15)]
    counted = sum(r.ByteSize() + ITEM_FRAMING_BYTES for r in full)  # as the client counts
    room = MAX_BATCH_BYTES - counted - ITEM_FRAMING_BYTES  # the last item fills it exactly
    last = request(room - (request(room).ByteSize() - room))
    assert counted + last.ByteSize() + ITEM_FRAMING_BYTES == MAX_BATCH_BYTES

    async def main() -> None:
        batcher = Batcher(lambda: Stub())
        await asyncio.gather(*(batcher.call("CreateInline", r, 5.0) for r in [*full, last]))

    asyncio.run(main())
    assert sent and all(b.ByteSize() <= MAX_REQUEST_BYTES for b in sent), [
        b.ByteSize() for b in sent
    ]
