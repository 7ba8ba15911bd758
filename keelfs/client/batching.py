"""Coalescing concurrent namespace calls into ``Namespace.Batch`` RPCs (asyncio client).

A master spends more CPU on each unary gRPC call than on the metadata operation inside it, so
many small concurrent requests are cheaper as one call. Per master address, at most
``max_inflight`` calls are outstanding; a request that finds a free slot leaves on the next
turn of the event loop (together with whatever else was issued in the same turn), and requests
that arrive while every slot is busy wait for the next free one and leave together. With no
concurrency nothing waits: a lone request goes out as its own unary RPC, exactly as before.

Each item of a batch reports back what its own RPC would have: the reply message, or an
:class:`ItemError` (a ``grpc.RpcError`` carrying the item's status and ``keelfs-error``
trailer), or, when the batch call itself failed in gRPC, that call's error, which means for a
write exactly what it would have meant for a unary call (outcome unknown unless never sent).
The client's retry logic (``keelfs.client._core``) cannot tell the difference.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from keelfs.rpc.access import ACCESS, Access
from keelfs.rpc.grpc_errors import ERROR_KEY
from keelfs.rpc.pb import meta_pb2 as pb

__all__ = ["BATCHED_METHODS", "Batcher", "ItemError"]

_NAMESPACE = pb.DESCRIPTOR.services_by_name["Namespace"]
BATCHED_METHODS: frozenset[str] = frozenset(
    m.name
    for m in _NAMESPACE.methods
    if m.name not in ("Batch", "ListDir")  # listings are large: one page per call
    and ACCESS.get(f"/{_NAMESPACE.full_name}/{m.name}") is Access.CLIENT
)
"""Namespace RPCs the asyncio client sends through a :class:`Batcher`: client methods only
(a master refuses internal ones inside a ``Batch``; the masters' ``PeerClient`` sends those
one call each)."""

_REPLY_TYPES: dict[str, type[Any]] = {
    m.name: getattr(pb, m.output_type.name)
    for m in pb.DESCRIPTOR.services_by_name["Namespace"].methods
}
_STATUS = {s.value[0]: s for s in grpc.StatusCode}

MAX_ITEMS = 256
MAX_BATCH_BYTES = 1 << 20
ITEM_FRAMING_BYTES = 32
"""What a ``BatchItem`` adds around its request in the ``BatchRequest`` (the method's name,
three tags and lengths: at most ~26 bytes): counted per item, so that a batch filled to
``MAX_BATCH_BYTES`` (inline writes make items of up to 64 KiB) stays within the masters'
limit on the whole message (``keelfs.rpc.wire.MAX_REQUEST_BYTES``)."""


class ItemError(grpc.RpcError):
    """One batch item's failure, shaped like the ``grpc.aio.AioRpcError`` of its own call."""

    def __init__(self, status: int, message: str, error: str) -> None:
        super().__init__(message)
        self._code = _STATUS.get(status, grpc.StatusCode.UNKNOWN)
        self._message = message
        self._error = error

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._message

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return ((ERROR_KEY, self._error),) if self._error else ()


@dataclass
class _Pending:
    method: str
    request: Any
    timeout: float
    future: asyncio.Future[Any]


class Batcher:
    """The batching queue of one master address. ``stub()`` returns its Namespace stub."""

    def __init__(self, stub: Callable[[], Any], max_inflight: int = 4) -> None:
        self._stub = stub
        self._max_inflight = max_inflight
        self._queue: list[_Pending] = []
        self._inflight = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.calls = 0
        """Calls sent (batches and lone requests), for statistics."""

    async def call(self, method: str, request: Any, timeout: float) -> Any:
        """The reply of ``method`` for ``request``, or the ``grpc.RpcError`` it failed with."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append(_Pending(method, request, timeout, future))
        self._schedule()
        return await future

    def _schedule(self) -> None:
        if self._queue and not self._scheduled and self._inflight < self._max_inflight:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        while self._queue and self._inflight < self._max_inflight:
            items: list[_Pending] = []
            size = 0
            while self._queue and len(items) < MAX_ITEMS:
                nxt = self._queue[0]
                if nxt.future.done():  # its caller gave up (cancelled) before it left
                    self._queue.pop(0)
                    continue
                size += nxt.request.ByteSize() + ITEM_FRAMING_BYTES
                if items and size > MAX_BATCH_BYTES:
                    break
                items.append(self._queue.pop(0))
            if not items:
                return
            self._inflight += 1
            task = asyncio.ensure_future(self._send(items))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, items: list[_Pending]) -> None:
        try:
            self.calls += 1
            if len(items) == 1:
                one = items[0]
                try:
                    result = await getattr(self._stub(), one.method)(
                        one.request, timeout=one.timeout
                    )
                except grpc.RpcError as err:
                    result = err
                _resolve(one.future, result)
                return
            batch = pb.BatchRequest(
                items=[
                    pb.BatchItem(method=p.method, request=p.request.SerializeToString())
                    for p in items
                ]
            )
            try:
                reply = await self._stub().Batch(batch, timeout=max(p.timeout for p in items))
            except grpc.RpcError as err:
                for p in items:
                    _resolve(p.future, err)
                return
            for p, r in zip(items, reply.items, strict=False):
                if r.status == 0:
                    _resolve(p.future, _REPLY_TYPES[p.method].FromString(r.reply))
                else:
                    _resolve(p.future, ItemError(r.status, r.message, r.error))
            for p in items[len(reply.items) :]:  # a server that answered short: a bug there
                _resolve(p.future, ItemError(13, "batch reply is missing this item", ""))
        except BaseException as exc:
            for p in items:
                if not p.future.done():
                    p.future.set_exception(exc)
            raise
        finally:
            self._inflight -= 1
            self._schedule()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)
