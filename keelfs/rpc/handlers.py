"""What the server interceptors share: a method handler whose behaviour is wrapped, its codec
kept (``keelfs.rpc.access`` guards calls, ``keelfs.rpc.observe`` times them).

grpc's asyncio server hands an interceptor the method's handler; wrapping means building a new
handler of the same kind around the wrapped behaviour, with the same (de)serializers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

__all__ = ["Behavior", "rewrapped"]

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
