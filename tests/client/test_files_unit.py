"""Pieces of ``keelfs.client.files`` without processes: where a pipeline attempt resumes in the
current block's buffered bytes, the modes ``open`` takes, and a writer whose lease is gone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from keelfs.client.files import AsyncFileReader, AsyncFileWriter, _Block, check_mode, is_append
from keelfs.errors import InvalidArgument, KeelError
from keelfs.rpc.pb import meta_pb2 as pb


def _block(pieces: list[bytes]) -> _Block:
    b = _Block(block_id=1, gen=1, shard="s", epoch=1, pipeline=[], start=0)
    b.pieces = list(pieces)
    b.size = sum(map(len, pieces))
    return b


@pytest.mark.parametrize("at", [0, 1, 3, 4, 5, 9, 10])
def test_a_source_resumes_at_any_offset(at: int) -> None:
    async def main() -> bytes:
        b = _block([b"abc", b"d", b"efghij"])
        b.sealed = True
        return b"".join([p async for p in b.source(at)])

    assert asyncio.run(main()) == b"abcdefghij"[at:]


def test_a_source_follows_bytes_written_later_until_sealed() -> None:
    async def main() -> bytes:
        b = _block([b"ab"])
        out: list[bytes] = []

        async def consume() -> None:
            out.extend([p async for p in b.source(1)])

        task = asyncio.create_task(consume())
        await asyncio.sleep(0)
        for piece in (b"cd", b"", b"e"):
            b.pieces.append(piece)
            b.changed.set()
            await asyncio.sleep(0)
        b.sealed = True
        b.changed.set()
        await task
        return b"".join(out)

    assert asyncio.run(main()) == b"bcde"


def test_modes() -> None:
    assert check_mode("wb") and check_mode("w")
    assert check_mode("ab") and check_mode("a") and is_append("ab") and not is_append("wb")
    assert not check_mode("rb") and not check_mode("r")
    for bad in ("a+", "r+", "rt", "x", ""):
        with pytest.raises(InvalidArgument):
            check_mode(bad)


class _LeaseGone:
    """An ``AsyncClient`` stand-in whose shard no longer holds the writer's lease."""

    def __init__(self) -> None:
        self.renewals = 0
        self.open_writers: set[object] = set()

    async def _run(self, op: object, deadline: object) -> object:
        self.renewals += 1
        return pb.RenewLeaseReply(renewed=False)


def test_a_writer_whose_lease_is_gone_stops_renewing_and_says_why() -> None:
    async def main() -> tuple[int, BaseException | None, bool]:
        fs = _LeaseGone()
        w = AsyncFileWriter(
            fs,  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]
            "/d/f",
            group="shard-1",
            session_id=7,
            block_size=1 << 20,
            lease_renew_s=0.01,
        )
        await asyncio.sleep(0.2)  # time for many renewals, were it still renewing
        assert w._renewer is not None
        done = w._renewer.done()
        try:
            await w.write(b"x")
        except KeelError as exc:
            return fs.renewals, exc, done
        return fs.renewals, None, done

    renewals, error, stopped = asyncio.run(main())
    assert renewals == 1 and stopped
    assert error is not None and "lease was lost" in str(error)


class _Chunks:
    """A stand-in chunk client over in-memory blocks: records every stream it opens."""

    def __init__(self, blocks: dict[int, bytes], piece: int) -> None:
        self.blocks = blocks
        self.piece = piece
        self.calls: list[tuple[int, int, int | None]] = []

    async def iter_block(
        self, address: str, block_id: int, gen: int, offset: int, length: int | None, **_: Any
    ) -> AsyncGenerator[bytes, None]:
        self.calls.append((block_id, offset, length))
        data = self.blocks[block_id][offset : None if length is None else offset + length]
        for i in range(0, len(data), self.piece):
            await asyncio.sleep(0)  # a reply in flight: other tasks run meanwhile
            yield data[i : i + self.piece]

    async def iter_block_views(
        self, address: str, block_id: int, gen: int, offset: int, length: int | None, **_: Any
    ) -> AsyncGenerator[memoryview, None]:
        """As the real client: views of the messages (here of the pieces)."""
        async for piece in self.iter_block(address, block_id, gen, offset, length):
            yield memoryview(piece)


def _reader(blocks: dict[int, bytes], piece: int) -> tuple[AsyncFileReader, _Chunks]:
    info = pb.FileInfo(path="/f")
    for block_id, data in blocks.items():
        b = info.blocks.add(block_id=block_id, gen_stamp=1, length=len(data))
        b.locations.add(server_id="s1", address="a1")
    chunks = _Chunks(blocks, piece)
    return AsyncFileReader(None, chunks, "/f", info), chunks  # type: ignore[arg-type]


def test_sequential_reads_go_on_with_one_stream_per_block() -> None:
    blocks = {1: bytes(range(256)) * 4, 2: bytes(range(255, -1, -1)) * 3}
    whole = blocks[1] + blocks[2]

    async def main() -> tuple[list[bytes], list[tuple[int, int, int | None]]]:
        r, chunks = _reader(blocks, piece=100)
        got = []
        while piece := await r.read(37):
            got.append(piece)
        await r.close()
        return got, chunks.calls

    got, calls = asyncio.run(main())
    assert b"".join(got) == whole
    assert all(type(p) is bytes for p in got)
    assert calls == [(1, 0, 1024), (2, 0, 768)]


def test_reads_and_ranges_hand_out_bytes_not_views_of_the_messages() -> None:
    """The reader joins views of the received messages; what it returns is ``bytes`` (a read
    of exactly one piece, several pieces, a range), equal to the file's content."""
    blocks = {1: bytes(range(256)) * 4, 2: bytes(range(255, -1, -1)) * 3}
    whole = blocks[1] + blocks[2]

    async def main() -> tuple[list[bytes], list[bytes]]:
        r, _ = _reader(blocks, piece=100)
        reads = [await r.read(100), await r.read(350), await r.read()]
        ranged = [p async for p in r.iter_range(950, 1200)]
        await r.close()
        return reads, ranged

    reads, ranged = asyncio.run(main())
    assert [type(p) for p in reads + ranged] == [bytes] * (len(reads) + len(ranged))
    assert b"".join(reads) == whole and b"".join(ranged) == whole[950:1200]


def test_a_seek_drops_the_stream_and_reads_from_the_new_position() -> None:
    blocks = {1: bytes(range(256)) * 4}

    async def main() -> tuple[list[bytes], list[tuple[int, int, int | None]]]:
        r, chunks = _reader(blocks, piece=100)
        first = await r.read(50)
        r.seek(500)
        second = await r.read(10)
        r.seek(60)  # the stream stopped at 510: not here
        third = await r.read(10)
        fourth = await r.read(10)
        await r.close()
        return [first, second, third, fourth], chunks.calls

    got, calls = asyncio.run(main())
    data = blocks[1]
    assert got == [data[:50], data[500:510], data[60:70], data[70:80]]
    assert calls == [(1, 0, 1024), (1, 500, 524), (1, 60, 964)]


def test_concurrent_reads_of_one_reader_each_get_their_range() -> None:
    blocks = {1: bytes(range(256)) * 4}

    async def main() -> list[bytes]:
        r, _ = _reader(blocks, piece=100)

        async def at(offset: int) -> bytes:
            r.seek(offset)
            return await r.read(300)

        got = await asyncio.gather(at(0), at(300), at(600))
        await r.close()
        return list(got)

    data = blocks[1]
    assert asyncio.run(main()) == [data[:300], data[300:600], data[600:900]]
