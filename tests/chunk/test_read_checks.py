"""The read reply's CRC32C checked by the client, in process: a chunk server whose reply is
damaged after it was encoded (on the wire, past the server's own check against the stored
chunk CRCs) must be refused with ``ChecksumMismatch`` (``AsyncFileReader`` then fails over to
another replica and reports this one: tests/client/test_data_faults.py). The CRC a reply
carries is the one the server took when it checked the piece (``ReplicaReader.piece_crc``)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import google_crc32c
import grpc
import pytest

from keelfs.datapath.client import AsyncChunkClient
from keelfs.datapath.framing import encode_read_response
from keelfs.errors import ChecksumMismatch

_SERVICE = "keelfs.chunk.v1.ChunkServer"
PIECE = 1 << 20


def payload(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


async def _serve(replies: Callable[[], list[bytes]]) -> tuple[Any, str]:
    """A ReadBlock that answers ``replies()`` whatever is asked (a chunk server's bytes)."""

    async def read_block(request: bytes, context: Any) -> AsyncIterator[bytes]:
        for reply in replies():
            yield reply

    handler = grpc.unary_stream_rpc_method_handler(
        read_block, request_deserializer=None, response_serializer=None
    )
    server = grpc.aio.server()
    service = grpc.method_handlers_generic_handler(_SERVICE, {"ReadBlock": handler})
    server.add_generic_rpc_handlers((service,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


def _replies(data: bytes, damage: int | None = None) -> list[bytes]:
    """``data`` in 1 MiB replies, each with its CRC32C; ``damage``: flip that byte of the data
    after its reply was encoded."""
    out = []
    for at in range(0, len(data), PIECE):
        piece = data[at : at + PIECE]
        reply = bytearray(encode_read_response(at, piece, google_crc32c.value(piece)))
        if damage is not None and at <= damage < at + len(piece):
            reply[len(reply) - len(piece) + damage - at] ^= 0x10
        out.append(bytes(reply))
    return out


async def _read(address: str) -> bytes:
    async with AsyncChunkClient() as client:
        return await client.read_block(address, 1, 1, token=b"t")


@pytest.mark.parametrize("damage", [None, 5, PIECE + 70_000, 3 * PIECE - 1])
def test_a_reply_damaged_on_the_wire_is_refused(damage: int | None) -> None:
    data = payload(3 * PIECE, seed=1)

    async def main() -> None:
        server, address = await _serve(lambda: _replies(data, damage))
        try:
            if damage is None:
                assert await _read(address) == data
            else:
                with pytest.raises(ChecksumMismatch) as exc:
                    await _read(address)
                assert exc.value.details["offset"] == damage // PIECE * PIECE
        finally:
            await server.stop(None)

    asyncio.run(main())
