"""Pieces of ``keelfs.client.files`` without processes: where a pipeline attempt resumes in the
current block's buffered bytes, the modes ``open`` takes, and a writer whose lease is gone."""

from __future__ import annotations

import asyncio

import pytest

from keelfs.client.files import AsyncFileWriter, _Block, check_mode
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
    assert not check_mode("rb") and not check_mode("r")
    for bad in ("a", "r+", "rt", "x", ""):
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
