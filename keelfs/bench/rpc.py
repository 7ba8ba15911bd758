"""``keelfs bench rpc``: what one exchange (a message each way) costs in CPU, through gRPC in
Python and through a plain asyncio stream, on loopback, with or without mutual TLS.

Why this benchmark: every remaining gap of issue [10] (creates, stats, small files) was traced
to per-message cost — a 4 KiB write costs the masters ~1,900 µs of CPU, most of it in the Raft
transport's gRPC streams and the client's unary ``Batch`` calls, not in applying the command.
This measures that floor on its own, against the alternative a transport could be built on, so
that the decision rests on a figure anyone can reproduce. The server is a separate process (as
a peer is); CPU is each process's own (``getrusage``), per exchange.

Modes: a gRPC unary call (16 in flight, as a client's batches); a gRPC bidirectional stream
pipelined (writer and reader at once, as the Raft transport's streams) and one message at a
time; an asyncio stream of length-prefixed frames, pipelined and one at a time.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import resource
import struct
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

import grpc

from keelfs.tls.certs import init_authorities, issue_node
from keelfs.tls.credentials import (
    TlsSettings,
    add_port,
    channel_credentials,
    client_ssl_context,
    server_ssl_context,
)

__all__ = ["RpcRow", "run_rpc"]

_SERVICE = "keelfs.bench.Echo"
_FRAME = struct.Struct("!I")
_CPU_ASK = b"?"
"""A request the servers answer with their process's CPU seconds so far."""
_UNARY_IN_FLIGHT = 16


@dataclass(frozen=True)
class RpcRow:
    mode: str
    exchanges: int
    seconds: float
    client_us: float
    """Client process CPU per exchange, µs."""
    server_us: float

    @property
    def per_second(self) -> float:
        return self.exchanges / self.seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "seconds": round(self.seconds, 3),
            "client_us": round(self.client_us, 1),
            "server_us": round(self.server_us, 1),
            "per_second": round(self.per_second),
        }


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _answer(message: bytes) -> bytes:
    return repr(_cpu()).encode() if message == _CPU_ASK else message


# -- the server process --------------------------------------------------------------------------
async def _serve(tls: TlsSettings | None, ready: Queue[tuple[int, int]]) -> None:
    async def unary(request: bytes, _: Any) -> bytes:
        return _answer(request)

    async def stream(requests: Any, _: Any) -> Any:
        async for request in requests:
            yield _answer(request)

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                _SERVICE,
                {
                    "Unary": grpc.unary_unary_rpc_method_handler(unary),
                    "Stream": grpc.stream_stream_rpc_method_handler(stream),
                },
            ),
        )
    )
    grpc_port = add_port(server, "127.0.0.1:0", tls, clients=False)
    await server.start()

    async def frames(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (size,) = _FRAME.unpack(await reader.readexactly(_FRAME.size))
                reply = _answer(await reader.readexactly(size))
                writer.write(_FRAME.pack(len(reply)) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    ctx = server_ssl_context(tls, clients=False) if tls is not None else None
    streams = await asyncio.start_server(frames, "127.0.0.1", 0, ssl=ctx)
    ready.put((grpc_port, streams.sockets[0].getsockname()[1]))
    parent = os.getppid()
    while os.getppid() == parent:  # the benchmark's process gone (killed): so is its server
        await asyncio.sleep(0.5)


def _server_main(tls: TlsSettings | None, ready: Queue[tuple[int, int]]) -> None:
    asyncio.run(_serve(tls, ready))


# -- the client (this process) -----------------------------------------------------------------
Exchange = Callable[[bytes], Awaitable[bytes]]


async def _timed(
    mode: str, n: int, ask_server: Exchange, run: Callable[[], Awaitable[None]]
) -> RpcRow:
    server0 = float(await ask_server(_CPU_ASK))
    cpu0, t0 = _cpu(), time.perf_counter()
    await run()
    seconds, cpu1 = time.perf_counter() - t0, _cpu()
    server1 = float(await ask_server(_CPU_ASK))
    return RpcRow(mode, n, seconds, 1e6 * (cpu1 - cpu0) / n, 1e6 * (server1 - server0) / n)


async def _grpc_rows(address: str, tls: TlsSettings | None, n: int, message: bytes) -> list[RpcRow]:
    if tls is None:
        channel = grpc.aio.insecure_channel(address)
    else:
        channel = grpc.aio.secure_channel(address, channel_credentials(tls))
    async with channel:
        unary: Any = channel.unary_unary(f"/{_SERVICE}/Unary")
        for _ in range(200):  # warm: the connection, the first calls' allocations
            await unary(message)
        gate = asyncio.Semaphore(_UNARY_IN_FLIGHT)

        async def one() -> None:
            async with gate:
                await unary(message)

        async def unaries() -> None:
            await asyncio.gather(*(one() for _ in range(n)))

        rows = [await _timed(f"gRPC unary, {_UNARY_IN_FLIGHT} in flight", n, unary, unaries)]
        call: Any = channel.stream_stream(f"/{_SERVICE}/Stream")()

        async def ask(m: bytes) -> bytes:
            await call.write(m)
            reply: bytes = await call.read()
            return reply

        async def pipelined() -> None:
            async def write() -> None:
                for _ in range(n):
                    await call.write(message)

            async def read() -> None:
                for _ in range(n):
                    await call.read()

            await asyncio.gather(write(), read())

        async def lockstep() -> None:
            for _ in range(n):
                await ask(message)

        rows.append(await _timed("gRPC stream, pipelined", n, ask, pipelined))
        rows.append(await _timed("gRPC stream, one at a time", n, ask, lockstep))
        await call.done_writing()
        return rows


async def _stream_rows(port: int, tls: TlsSettings | None, n: int, message: bytes) -> list[RpcRow]:
    ctx = client_ssl_context(tls) if tls is not None else None
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1" if ctx else None
    )
    framed = _FRAME.pack(len(message)) + message

    async def receive() -> bytes:
        (size,) = _FRAME.unpack(await reader.readexactly(_FRAME.size))
        return await reader.readexactly(size)

    async def ask(m: bytes) -> bytes:
        writer.write(_FRAME.pack(len(m)) + m)
        return await receive()

    async def pipelined() -> None:
        async def write() -> None:
            for i in range(n):
                writer.write(framed)
                if i % 16 == 15:
                    await writer.drain()
            await writer.drain()

        async def read() -> None:
            for _ in range(n):
                await receive()

        await asyncio.gather(write(), read())

    async def lockstep() -> None:
        for _ in range(n):
            await ask(message)

    try:
        for _ in range(200):
            await ask(message)
        return [
            await _timed("asyncio stream, pipelined", n, ask, pipelined),
            await _timed("asyncio stream, one at a time", n, ask, lockstep),
        ]
    finally:
        writer.close()


def run_rpc(exchanges: int = 20_000, size: int = 2048, tls: bool = False) -> list[RpcRow]:
    """Each mode's row: ``exchanges`` messages of ``size`` bytes each way."""
    with tempfile.TemporaryDirectory(prefix="keelfs-bench-rpc-") as tmp:
        settings = None
        if tls:
            directory = Path(tmp) / "certs"
            init_authorities(directory)
            issue_node(directory, "master", 1, ["127.0.0.1"])
            settings = TlsSettings.for_node(directory, "master", 1)
        spawn = multiprocessing.get_context("spawn")  # no forked gRPC state
        ready: Queue[tuple[int, int]] = spawn.Queue()
        server = spawn.Process(target=_server_main, args=(settings, ready), daemon=True)
        server.start()
        try:
            grpc_port, stream_port = ready.get(timeout=60)
            message = b"x" * size

            async def main() -> list[RpcRow]:
                rows = await _grpc_rows(f"127.0.0.1:{grpc_port}", settings, exchanges, message)
                return rows + await _stream_rows(stream_port, settings, exchanges, message)

            return asyncio.run(main())
        finally:
            server.kill()
            server.join(10)
