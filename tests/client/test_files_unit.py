"""Pieces of ``keelfs.client.files`` without processes: where a pipeline attempt resumes in the
current block's buffered bytes, and the modes ``open`` takes."""

from __future__ import annotations

import asyncio

import pytest

from keelfs.client.files import _Block, check_mode
from keelfs.errors import InvalidArgument


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
    assert not check_mode("rb") and not check_mode("r")
    for bad in ("a", "r+", "rt", "x", ""):
        with pytest.raises(InvalidArgument):
            check_mode(bad)
