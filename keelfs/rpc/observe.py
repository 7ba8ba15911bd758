"""The observing server interceptor of every keelfs gRPC server: how long each call took, by
method and status code, and the request id it carries.

:class:`ObservingInterceptor` (first in ``server_interceptors``, so that calls the access check
refuses are counted too) wraps each method's handler once; per call it

- puts the call's ``x-keelfs-request-id`` (``keelfs.runtime.requests``) into ``REQUEST_ID`` for
  the handler, so that every log line the handler writes, and every call it makes to another
  server, carries the id;
- when the call is done, observes its duration in :data:`RPC_SECONDS` with the labels ``node``
  (the server's node id or chunk server id), ``method`` (``Service/Method``) and ``code``
  (``OK``, ``NOT_FOUND``, ...), and logs one DEBUG line on ``keelfs.rpc.requests``:
  ``<method> <code> <ms> ms`` (with the request id, as every line under one).

:data:`RPC_SECONDS` is one process-wide histogram outside any registry: a process's
``/metrics`` registry (``keelfs.web.metrics``) registers it, so it appears wherever the process
serves metrics, and costs one observation per call where it does not.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
from prometheus_client import Histogram

from keelfs.rpc.handlers import Behavior, WrappingInterceptor, rewrapped
from keelfs.runtime.requests import REQUEST_ID, request_id_from_metadata

__all__ = [
    "RPC_BUCKETS",
    "RPC_SECONDS",
    "ObservingInterceptor",
    "status_name",
]

log = logging.getLogger("keelfs.rpc.requests")

RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

RPC_SECONDS = Histogram(
    "keelfs_rpc_server_seconds",
    "gRPC calls served, by method and status code: time from the call's arrival to its end",
    ["node", "method", "code"],
    buckets=RPC_BUCKETS,
    registry=None,
)


def status_name(code: Any) -> str:
    """``OK``, ``NOT_FOUND``, ... of a status as gRPC's asyncio context reports it (a
    ``grpc.StatusCode``, its number, or None for a call that set none: OK)."""
    if code is None:
        return "OK"
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    for member in grpc.StatusCode:
        if member.value[0] == code:
            return str(member.name)
    return str(code)


def _method_label(full: str) -> str:
    """``/keelfs.meta.v1.Namespace/Create`` -> ``Namespace/Create``."""
    service, _, method = full.rpartition("/")
    return f"{service.rpartition('.')[2]}/{method}"


class _Outcome:
    """How one call ended where its context does not say: a handler that raised (not an
    abort, which sets the context's code) ends UNKNOWN, as gRPC answers it; a cancelled one
    CANCELLED."""

    __slots__ = ("code",)

    def __init__(self) -> None:
        self.code: str | None = None

    def raised(self, exc: BaseException) -> None:
        self.code = "CANCELLED" if isinstance(exc, asyncio.CancelledError) else "UNKNOWN"

    def code_of(self, context: Any) -> str:
        set_code = context.code()
        if set_code is not None or self.code is None:
            return status_name(set_code)
        return self.code


class ObservingInterceptor(WrappingInterceptor):
    """See the module docstring; ``node`` is the label of the server's node."""

    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def _start(self, label: str, context: Any) -> _Outcome:
        """Take the call's request id and arrange for its observation when it is done."""
        rid = request_id_from_metadata(context.invocation_metadata())
        if rid is not None:
            REQUEST_ID.set(rid)  # this call's own task: its context alone
        outcome = _Outcome()
        histogram = RPC_SECONDS
        node = self.node
        t0 = time.perf_counter()

        def done(ctx: Any) -> None:
            seconds = time.perf_counter() - t0
            code = outcome.code_of(ctx)
            histogram.labels(node, label, code).observe(seconds)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s %s %.1f ms", label, code, seconds * 1000, extra={"request_id": rid})

        context.add_done_callback(done)
        return outcome

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        label = _method_label(method)
        start = self._start

        def unary(behavior: Behavior) -> Behavior:
            async def observed(request: Any, context: Any) -> Any:
                outcome = start(label, context)
                try:
                    reply = behavior(request, context)
                    return (await reply) if inspect.isawaitable(reply) else reply
                except BaseException as exc:
                    outcome.raised(exc)
                    raise

            return observed

        def stream(behavior: Behavior) -> Behavior:
            if inspect.iscoroutinefunction(behavior):
                return unary(behavior)  # writes through context.write

            async def observed(request: Any, context: Any) -> AsyncIterator[Any]:
                outcome = start(label, context)
                try:
                    replies = behavior(request, context)
                    if inspect.isasyncgen(replies):
                        async for reply in replies:
                            yield reply
                    else:
                        for reply in replies:
                            yield reply
                except BaseException as exc:
                    outcome.raised(exc)
                    raise

            return observed

        return rewrapped(handler, unary, stream)
