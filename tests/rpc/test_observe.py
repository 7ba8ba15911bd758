"""The observing server interceptor in process: every call counted by method and status code
(OK, an abort's code, UNKNOWN for an exception, streams too), and the caller's request id
visible to the handler and only to it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from keelfs.rpc.observe import RPC_SECONDS, ObservingInterceptor, status_name
from keelfs.runtime.requests import REQUEST_ID, request_metadata, request_scope

SEEN: list[str | None] = []


async def echo(request: bytes, context: Any) -> bytes:
    SEEN.append(REQUEST_ID.get())
    return request


async def refuse(request: bytes, context: Any) -> bytes:
    await context.abort(grpc.StatusCode.NOT_FOUND, "no")
    raise AssertionError("unreachable")


async def crash(request: bytes, context: Any) -> bytes:
    raise RuntimeError("bug")


async def count_to(request: bytes, context: Any) -> AsyncIterator[bytes]:
    for i in range(int(request)):
        yield str(i).encode()


def count(node: str, method: str, code: str) -> float:
    for metric in RPC_SECONDS.collect():
        for s in metric.samples:
            labels = s.labels
            if s.name.endswith("_count") and labels == {
                "node": node,
                "method": method,
                "code": code,
            }:
                return s.value
    return 0.0


async def _exercise() -> None:
    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(echo),
        "Refuse": grpc.unary_unary_rpc_method_handler(refuse),
        "Crash": grpc.unary_unary_rpc_method_handler(crash),
        "Count": grpc.unary_stream_rpc_method_handler(count_to),
    }
    server = grpc.aio.server(interceptors=[ObservingInterceptor("t1")])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("x.v1.Svc", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            echo_call = channel.unary_unary("/x.v1.Svc/Echo")
            with request_scope("rid-1"):
                assert await echo_call(b"a", metadata=request_metadata()) == b"a"
            assert await echo_call(b"b", metadata=request_metadata()) == b"b"
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await channel.unary_unary("/x.v1.Svc/Refuse")(b"")
            assert refused.value.code() is grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.aio.AioRpcError) as crashed:
                await channel.unary_unary("/x.v1.Svc/Crash")(b"")
            assert crashed.value.code() is grpc.StatusCode.UNKNOWN
            replies = [r async for r in channel.unary_stream("/x.v1.Svc/Count")(b"3")]
            assert replies == [b"0", b"1", b"2"]
    finally:
        await server.stop(None)


def test_calls_are_counted_by_method_and_code() -> None:
    before = {
        key: count("t1", *key)
        for key in (("Svc/Echo", "OK"), ("Svc/Refuse", "NOT_FOUND"), ("Svc/Crash", "UNKNOWN"))
    }
    stream_before = count("t1", "Svc/Count", "OK")
    SEEN.clear()
    asyncio.run(_exercise())
    assert count("t1", "Svc/Echo", "OK") == before[("Svc/Echo", "OK")] + 2
    assert count("t1", "Svc/Refuse", "NOT_FOUND") == before[("Svc/Refuse", "NOT_FOUND")] + 1
    assert count("t1", "Svc/Crash", "UNKNOWN") == before[("Svc/Crash", "UNKNOWN")] + 1
    assert count("t1", "Svc/Count", "OK") == stream_before + 1
    assert SEEN == ["rid-1", None]  # the id of the call that carried one, and only there


def test_status_names() -> None:
    assert status_name(None) == "OK"
    assert status_name(grpc.StatusCode.NOT_FOUND) == "NOT_FOUND"
    assert status_name(5) == "NOT_FOUND"
