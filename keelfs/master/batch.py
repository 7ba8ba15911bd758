"""Serving ``Namespace.Batch``: many namespace RPCs in one call.

Why: a Python gRPC server spends more CPU per unary call (its own and the event loop's) than
the rest of a metadata operation, and requests that arrive one call at a time tend to land in
different Raft rounds. The client library therefore coalesces requests that are concurrent
anyway (see ``keelfs.client.batching``); here each item is run through the very handler its
own RPC would reach, with a context of its own, so routing, sessions, exactly-once and error
reporting are unchanged. The items run concurrently: their proposals join the same Raft round.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, NoReturn

import grpc

from keelfs.errors import InvalidArgument
from keelfs.rpc import grpc_errors
from keelfs.rpc.access import ACCESS, Access
from keelfs.rpc.pb import meta_pb2 as pb

__all__ = ["MAX_BATCH_ITEMS", "BATCHABLE", "serve_batch"]

log = logging.getLogger("keelfs.master")

MAX_BATCH_ITEMS = 1024

_SERVICE = pb.DESCRIPTOR.services_by_name["Namespace"]
BATCHABLE: dict[str, type[Any]] = {
    m.name: getattr(pb, m.input_type.name)
    for m in _SERVICE.methods
    if m.name != "Batch" and ACCESS.get(f"/{_SERVICE.full_name}/{m.name}") is Access.CLIENT
}
"""Method name → request message class, for every Namespace RPC a batch may carry: client
methods only (``keelfs.rpc.access``), as the access check runs on ``Batch`` itself, not on
its items; an internal or admin method inside a batch is refused as unbatchable."""


class _Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, message: str, trailers: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.trailers = trailers


class ItemContext:
    """The servicer context one batch item sees: the batch's deadline, and an ``abort`` that
    ends only this item."""

    def __init__(self, parent: Any) -> None:
        self._parent = parent

    def time_remaining(self) -> float | None:
        remaining: float | None = self._parent.time_remaining()
        return remaining

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()
    ) -> NoReturn:
        raise _Aborted(code, details, trailing_metadata)


def _error_reply(code: grpc.StatusCode, message: str, trailers: Any) -> pb.BatchItemReply:
    error = ""
    for key, value in trailers or ():
        if key == grpc_errors.ERROR_KEY:
            error = value if isinstance(value, str) else bytes(value).decode("ascii", "replace")
    return pb.BatchItemReply(status=code.value[0], message=message, error=error)


async def _one(servicer: Any, item: pb.BatchItem, context: Any) -> pb.BatchItemReply:
    request_type = BATCHABLE.get(item.method)
    if request_type is None:
        err = InvalidArgument(f"{item.method!r} cannot be batched", "method")
        return _error_reply(
            grpc_errors.status_of(err),
            err.message,
            ((grpc_errors.ERROR_KEY, grpc_errors.encode_error(err)),),
        )
    try:
        request = request_type.FromString(item.request)
    except Exception as exc:  # DecodeError: a broken client
        err = InvalidArgument(f"unreadable {item.method} request in batch: {exc}", "request")
        return _error_reply(
            grpc_errors.status_of(err),
            err.message,
            ((grpc_errors.ERROR_KEY, grpc_errors.encode_error(err)),),
        )
    try:
        reply = await getattr(servicer, item.method)(request, ItemContext(context))
    except _Aborted as aborted:
        return _error_reply(aborted.code, aborted.message, aborted.trailers)
    return pb.BatchItemReply(reply=reply.SerializeToString())


async def serve_batch(servicer: Any, request: pb.BatchRequest, context: Any) -> pb.BatchReply:
    if len(request.items) > MAX_BATCH_ITEMS:
        err = InvalidArgument(
            f"batch of {len(request.items)} items (at most {MAX_BATCH_ITEMS})", "items"
        )
        await grpc_errors.abort(context, err)
    replies = await asyncio.gather(*(_one(servicer, item, context) for item in request.items))
    return pb.BatchReply(items=replies)
