"""Internal RPCs stay apart from clients: a ``Batch`` (whose access class is ``client``)
carries client methods only, so an internal method cannot ride inside one past the access
check; the client library batches only those; ``Node.SetFailpoint`` is not served by a
process started without ``KEELFS_FAILPOINTS``."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from keelfs import failpoints
from keelfs.client.batching import BATCHED_METHODS
from keelfs.master.batch import BATCHABLE, _one
from keelfs.master.node import without_failpoints
from keelfs.rpc.access import ACCESS, Access
from keelfs.rpc.pb import meta_pb2 as pb

NAMESPACE = "/keelfs.meta.v1.Namespace/"


def test_a_batch_carries_client_methods_only() -> None:
    assert BATCHABLE, "some methods are batchable"
    for method in BATCHABLE:
        assert ACCESS[NAMESPACE + method] is Access.CLIENT, method
    for internal in ("TxnPrepare", "TxnFinish", "Move", "MoveRead", "BlocksKnown",
                     "ChunkHeartbeat", "Format"):  # fmt: skip
        assert internal not in BATCHABLE
        assert internal not in BATCHED_METHODS
    assert set(BATCHABLE) >= BATCHED_METHODS


class _Context:
    def time_remaining(self) -> float:
        return 5.0


def test_an_internal_method_inside_a_batch_is_refused_unserved() -> None:
    class Servicer:
        async def TxnPrepare(self, request: Any, context: Any) -> Any:  # noqa: N802
            raise AssertionError("an internal method inside a Batch must not be served")

    item = pb.BatchItem(method="TxnPrepare", request=pb.TxnPrepareRequest().SerializeToString())
    reply = asyncio.run(_one(Servicer(), item, _Context()))
    assert reply.status == grpc.StatusCode.INVALID_ARGUMENT.value[0]


class _Aborted(Exception):
    pass


class _AbortingContext:
    code: grpc.StatusCode | None = None

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        self.code = code
        raise _Aborted(details)


def test_set_failpoint_is_not_served_without_failpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(failpoints, "ENABLED", False)

    class Servicer:
        async def SetFailpoint(self, request: Any, context: Any) -> Any:  # noqa: N802
            raise AssertionError("served")

    servicer = without_failpoints(Servicer())
    context = _AbortingContext()
    with pytest.raises(_Aborted):
        asyncio.run(servicer.SetFailpoint(pb.SetFailpointRequest(name="x"), context))
    assert context.code == grpc.StatusCode.UNIMPLEMENTED


def test_set_failpoint_is_served_with_failpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(failpoints, "ENABLED", True)

    class Servicer:
        async def SetFailpoint(self, request: Any, context: Any) -> Any:  # noqa: N802
            return "served"

    servicer = without_failpoints(Servicer())
    assert asyncio.run(servicer.SetFailpoint(pb.SetFailpointRequest(), None)) == "served"
