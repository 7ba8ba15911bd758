"""What the server interceptors share: a method handler whose behaviour is wrapped, its codec
kept (``keelfs.rpc.access`` guards calls, ``keelfs.rpc.observe`` times them).

grpc's asyncio server hands an interceptor the method's handler; wrapping means building a new
handler of the same kind around the wrapped behaviour, with the same (de)serializers."""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

__all__ = ["Behavior", "WrappingInterceptor", "rewrapped"]

Behavior = Callable[..., Any]
"""A handler's behaviour: ``(request or request iterator, context)`` → reply, awaitable,
or (for a streaming reply) an iterator."""


def rewrapped(
    handler: grpc.RpcMethodHandler,
    unary: Callable[[Behavior], Behavior],
    stream: Callable[[Behavior], Behavior],
) -> grpc.RpcMethodHandler:
    """``handler`` with its behaviour passed through ``unary`` (one reply) or ``stream``
    (a stream of replies)."""
    h: Any = handler
    codec = {
        "request_deserializer": h.request_deserializer,
        "response_serializer": h.response_serializer,
    }
    if h.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(unary(h.unary_unary), **codec)
    if h.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(stream(h.unary_stream), **codec)
    if h.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(unary(h.stream_unary), **codec)
    return grpc.stream_stream_rpc_method_handler(stream(h.stream_stream), **codec)


class WrappingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc,unused-ignore]  # untyped grpc
    """A server interceptor that wraps each method's handler (:meth:`_wrap`), once per method:
    the wrapped handler is kept and reused while grpc hands over the same handler."""

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    @abc.abstractmethod
    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """``handler`` wrapped as this interceptor wraps it (``rewrapped``)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler  # gRPC answers UNIMPLEMENTED
        method: str = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped
