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
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn

import grpc

from keelfs.errors import InvalidArgument
from keelfs.rpc import grpc_errors
from keelfs.rpc.access import ACCESS, Access
from keelfs.rpc.pb import meta_pb2 as pb

__all__ = ["MAX_BATCH_ITEMS", "BATCHABLE", "Aborted", "ItemContext", "error_reply", "serve_batch"]

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


class Aborted(Exception):
    """How ``ItemContext.abort`` ends one item's handler: the status its own RPC ends with."""

    def __init__(self, code: grpc.StatusCode, message: str, trailers: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.trailers = trailers


class ItemContext:
    """The servicer context one batch item sees: the batch's deadline and caller, and an
    ``abort`` that ends only this item."""

    def __init__(self, parent: Any) -> None:
        self._parent = parent

    def time_remaining(self) -> float | None:
        remaining: float | None = self._parent.time_remaining()
        return remaining

    # who is calling, and from where: the batch's (``keelfs.master.callers``, the audit log)
    def invocation_metadata(self) -> Any:
        return self._parent.invocation_metadata()

    def auth_context(self) -> Any:
        return self._parent.auth_context()

    def peer(self) -> Any:
        return self._parent.peer()

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()
    ) -> NoReturn:
        raise Aborted(code, details, trailing_metadata)


def error_reply(code: grpc.StatusCode, message: str, trailers: Any) -> pb.BatchItemReply:
    """The item reply of a handler that ended with ``code``, ``message`` and ``trailers``."""
    error = ""
    for key, value in trailers or ():
        if key == grpc_errors.ERROR_KEY:
            error = value if isinstance(value, str) else bytes(value).decode("ascii", "replace")
    return pb.BatchItemReply(status=code.value[0], message=message, error=error)


async def _one(servicer: Any, item: pb.BatchItem, context: Any) -> pb.BatchItemReply:
    request_type = BATCHABLE.get(item.method)
    if request_type is None:
        err = InvalidArgument(f"{item.method!r} cannot be batched", "method")
        return error_reply(
            grpc_errors.status_of(err),
            err.message,
            ((grpc_errors.ERROR_KEY, grpc_errors.encode_error(err)),),
        )
    try:
        request = request_type.FromString(item.request)
    except Exception as exc:  # DecodeError: a broken client
        err = InvalidArgument(f"unreadable {item.method} request in batch: {exc}", "request")
        return error_reply(
            grpc_errors.status_of(err),
            err.message,
            ((grpc_errors.ERROR_KEY, grpc_errors.encode_error(err)),),
        )
    try:
        reply = await getattr(servicer, item.method)(request, ItemContext(context))
    except Aborted as aborted:
        return error_reply(aborted.code, aborted.message, aborted.trailers)
    return pb.BatchItemReply(reply=reply.SerializeToString())


ServeTogether = Callable[
    [Any, Sequence[pb.BatchItem], Any, Callable[[pb.BatchItem], Awaitable[pb.BatchItemReply]]],
    Awaitable[list[pb.BatchItemReply]],
]
"""How a servicer serves some items of a batch together (``keelfs.master.batch_creates``):
``(servicer, items, context, alone)`` -> the replies of all ``items`` in order, running
``alone`` (the item's own handler) for each item it does not take."""


async def serve_batch(
    servicer: Any, request: pb.BatchRequest, context: Any, together: ServeTogether | None = None
) -> pb.BatchReply:
    """Every item of ``request`` served as its own RPC would be, concurrently; with
    ``together``, the items it takes are served by it (each still answered as its own RPC
    would answer it)."""
    items = request.items
    if len(items) > MAX_BATCH_ITEMS:
        err = InvalidArgument(f"batch of {len(items)} items (at most {MAX_BATCH_ITEMS})", "items")
        await grpc_errors.abort(context, err)

    def alone(item: pb.BatchItem) -> Awaitable[pb.BatchItemReply]:
        return _one(servicer, item, context)

    if together is not None and len(items) > 1:
        return pb.BatchReply(items=await together(servicer, items, context, alone))
    replies = await asyncio.gather(*(alone(item) for item in items))
    return pb.BatchReply(items=replies)
