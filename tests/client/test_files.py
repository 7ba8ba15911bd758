"""The data path through the client library, on real processes (3 masters, 4 chunk servers):
files written with ``open(path, "wb")`` and read back with ``open(path, "rb")``, compared by
MD5, at the sizes that matter (empty, one byte, one block exactly, several blocks and a short
one), with ranged reads across block boundaries, the sync and asyncio clients, ``put``/``get``
and ``hflush``."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
from pathlib import Path
from typing import Any

import pytest

from keelfs.client import AsyncClient
from keelfs.errors import (
    AlreadyExists,
    InvalidArgument,
    IsADirectory,
    NotFound,
    PermissionDenied,
)
from keelfs.meta.records import MAX_INLINE_BYTES
from keelfs.tls.certs import issue_client
from keelfs.tls.credentials import TlsSettings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

MiB = 1 << 20
BLOCK = MiB


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.fixture(scope="module")
def fs(data_cluster: Any) -> Any:
    c, _ = data_cluster
    client = c.client()
    client.mkdir("/f", parents=True)
    return client


@pytest.mark.parametrize(
    "size",
    [0, 1, 65_535, BLOCK, BLOCK + 1, int(5.5 * BLOCK)],
    ids=["empty", "1B", "chunk-1", "1block", "1block+1", "5.5blocks"],
)
def test_round_trip(fs: Any, size: int) -> None:
    data = os.urandom(size)
    path = f"/f/rt-{size}"
    with fs.open(path, "wb", block_size=BLOCK) as f:
        # pieces of odd sizes, so that writes straddle packets and blocks
        at, steps = 0, [1, 7, 70_000, 3 * MiB, 65_536, MiB - 1]
        while at < size:
            n = min(steps[0], size - at)
            steps.append(steps.pop(0))
            assert f.write(data[at : at + n]) == n
            at += n
        assert f.tell() == size
    info = fs.stat(path)
    assert not info.under_construction and info.length == size
    # up to the inline limit the data is kept in the file's record: no block
    assert len(info.blocks) == (0 if size <= MAX_INLINE_BYTES else -(-size // BLOCK))
    assert all(b.length == BLOCK for b in info.blocks[:-1])
    got = fs.read_bytes(path)
    assert md5(got) == md5(data)


def test_ranged_reads_across_block_boundaries(fs: Any) -> None:
    data = os.urandom(3 * BLOCK + 12_345)
    fs.write_bytes("/f/ranged", data, block_size=BLOCK)
    with fs.open("/f/ranged", "rb") as f:
        assert f.length == len(data) and f.seekable()
        for start, n in [
            (0, 10),
            (BLOCK - 5, 10),  # across the first boundary
            (BLOCK, BLOCK),  # exactly one block
            (BLOCK - 1, 2 * BLOCK + 2),  # spans a whole block and two boundaries
            (3 * BLOCK + 12_000, 1000),  # past the end: cut
            (len(data), 10),  # at the end: empty
        ]:
            assert f.seek(start) == start
            assert f.read(n) == data[start : start + n]
            assert f.tell() == min(len(data), start + n)
        f.seek(-100, io.SEEK_END)
        assert f.read() == data[-100:]
        f.seek(10)
        f.seek(5, io.SEEK_CUR)
        buf = bytearray(20)
        assert f.readinto(buf) == 20 and bytes(buf) == data[15:35]
        # a buffered reader on top works as usual
    with io.BufferedReader(fs.open("/f/ranged", "rb"), buffer_size=100_000) as b:
        b.seek(BLOCK - 3)
        assert b.read(6) == data[BLOCK - 3 : BLOCK + 3]


def test_put_and_get_report_progress(fs: Any, tmp_path: Path) -> None:
    data = os.urandom(int(9.5 * MiB))
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    seen: list[int] = []
    assert fs.put(src, "/f/put", block_size=4 * BLOCK, progress=seen.append) == len(data)
    assert seen and seen[-1] == len(data) and seen == sorted(seen)
    dst = tmp_path / "dst.bin"
    got: list[int] = []
    assert fs.get("/f/put", dst, progress=got.append) == len(data)
    assert got[-1] == len(data)
    assert md5(dst.read_bytes()) == md5(data)
    assert not (tmp_path / "dst.bin.part").exists()
    assert [b.length for b in fs.stat("/f/put").blocks] == [4 * MiB, 4 * MiB, int(1.5 * MiB)]


def test_hflush_makes_bytes_visible_before_close(fs: Any) -> None:
    first, second = os.urandom(300_000), os.urandom(200_000)
    with fs.open("/f/hflush", "wb", block_size=BLOCK) as f:
        f.write(first)
        f.hflush()
        info = fs.stat("/f/hflush")
        assert info.under_construction and info.length == len(first)
        assert fs.read_bytes("/f/hflush") == first
        f.write(second)
    assert fs.read_bytes("/f/hflush") == first + second
    # an hflush with nothing new before close leaves an empty last block: still readable
    with fs.open("/f/hflush2", "wb", block_size=BLOCK) as f:
        f.write(first)
        f.hflush()
    assert fs.read_bytes("/f/hflush2") == first
    assert fs.stat("/f/hflush2").length == len(first)


def test_hflush_at_a_block_boundary_makes_the_full_block_visible(fs: Any) -> None:
    """A write that ends exactly at a block's end finishes that block, but its length reaches
    the masters only with the next block (or the close): hflush there must record it."""
    data = os.urandom(BLOCK)
    with fs.open("/f/hflush-boundary", "wb", block_size=BLOCK) as f:
        f.write(data)
        f.hflush()
        info = fs.stat("/f/hflush-boundary")
        assert info.under_construction and info.length == len(data)
        assert md5(fs.read_bytes("/f/hflush-boundary")) == md5(data)
        f.hflush()  # nothing new: nothing more to do
        assert fs.stat("/f/hflush-boundary").length == len(data)
        f.write(b"tail")
    assert md5(fs.read_bytes("/f/hflush-boundary")) == md5(data + b"tail")


def test_fsync_and_overwrite(fs: Any) -> None:
    fs.write_bytes("/f/ow", b"old contents", fsync=True)
    with pytest.raises(AlreadyExists):
        fs.open("/f/ow", "wb")
    fs.write_bytes("/f/ow", b"new", overwrite=True, fsync=True)
    assert fs.read_bytes("/f/ow") == b"new"


def test_bad_modes_and_paths(fs: Any) -> None:
    with pytest.raises(InvalidArgument):
        fs.open("/f/x", "a+")
    with pytest.raises(NotFound):
        fs.open("/f/x", "ab")  # append: to an existing file
    with pytest.raises(InvalidArgument):
        fs.open("/f/x", "r+")
    with pytest.raises(NotFound):
        fs.open("/f/missing", "rb")
    with pytest.raises(IsADirectory):
        fs.open("/f", "rb")
    with pytest.raises(NotFound):
        fs.open("/nodir/x", "wb")
    f = fs.open("/f/closed", "wb")
    f.close()
    with pytest.raises(ValueError):
        f.write(b"x")
    f.close()  # twice is fine


def test_async_client_round_trip(data_cluster: Any, tmp_path: Path) -> None:
    c, _ = data_cluster
    data = os.urandom(int(4.5 * BLOCK))  # over datapath.memory.HUGE_JOIN_MIN

    async def main() -> None:
        async with AsyncClient(c.config_addresses, tls=c.client_tls) as afs:
            await afs.mkdir("/af", parents=True)
            async with await afs.open("/af/a", "wb", block_size=BLOCK) as w:
                for i in range(0, len(data), 300_000):
                    await w.write(data[i : i + 300_000])
                assert w.tell() == len(data)
            assert md5(await afs.read_bytes("/af/a")) == md5(data)
            async with await afs.open("/af/a", "rb") as r:
                r.seek(BLOCK - 10)
                assert await r.read(20) == data[BLOCK - 10 : BLOCK + 10]
                # readinto copies the pieces straight into the caller's buffer: across block
                # boundaries, into a view of a larger buffer, and cut at the end of the file
                buf = bytearray(2 * BLOCK + 100)
                r.seek(BLOCK // 2)
                assert await r.readinto(memoryview(buf)[50:-50]) == 2 * BLOCK
                assert buf[50:-50] == data[BLOCK // 2 : BLOCK // 2 + 2 * BLOCK]
                assert buf[:50] == bytes(50) and buf[-50:] == bytes(50)
                assert r.tell() == BLOCK // 2 + 2 * BLOCK
                r.seek(len(data) - 7)
                assert await r.readinto(buf) == 7 and buf[:7] == data[-7:]
                assert await r.readinto(buf) == 0
                # a read large enough to be joined on huge pages (datapath.memory.join_fresh)
                r.seek(3)
                whole = await r.read()
                assert type(whole) is bytes and whole == data[3:]
            assert await afs.write_bytes("/af/b", b"") == 0
            assert await afs.read_bytes("/af/b") == b""
            src = tmp_path / "a.bin"
            src.write_bytes(data)
            assert await afs.put(src, "/af/c", block_size=BLOCK) == len(data)
            assert await afs.get("/af/c", tmp_path / "c.bin") == len(data)
            assert md5((tmp_path / "c.bin").read_bytes()) == md5(data)

    asyncio.run(main())


def test_a_small_file_is_read_whole_from_its_metadata_alone(data_cluster: Any) -> None:
    """``read_bytes`` of an inline file takes its content from the reply that found it: no
    reader, no chunk client (made only for a file in blocks)."""
    c, _ = data_cluster

    async def main() -> None:
        async with AsyncClient(c.config_addresses, tls=c.client_tls) as afs:
            await afs.mkdir("/whole", parents=True)
            small = os.urandom(MAX_INLINE_BYTES)
            await afs.write_bytes("/whole/small", small)
            await afs.write_bytes("/whole/empty", b"")
            assert await afs.read_bytes("/whole/small") == small
            assert await afs.read_bytes("/whole/empty") == b""
            assert afs._chunks is None, "an inline file needs no chunk server"
            with pytest.raises(IsADirectory):
                await afs.read_bytes("/whole")
            large = os.urandom(MAX_INLINE_BYTES + 1)
            await afs.write_bytes("/whole/large", large)
            assert await afs.read_bytes("/whole/large") == large

    asyncio.run(main())


def test_closing_the_client_aborts_the_writers_left_open(data_cluster: Any) -> None:
    """A writer its caller never closed stops with the client: its lease renewal does not
    outlive the client ("client is closed" errors, "Task was destroyed but it is pending")."""
    c, _ = data_cluster

    async def main() -> tuple[bool, list[asyncio.Task[Any]]]:
        afs = AsyncClient(c.config_addresses, tls=c.client_tls)
        await afs.mkdir("/left", parents=True)
        w = await afs.open("/left/open", "wb", block_size=BLOCK)
        await w.write(b"x" * 1000)
        await afs.close()
        renewing = [
            t for t in asyncio.all_tasks() if not t.done() and "_renew" in repr(t.get_coro())
        ]
        return w.closed, renewing

    closed, renewing = asyncio.run(main())
    assert closed and renewing == []


# -- small files inline in their metadata record ----------------------------------------------
LIMIT = MAX_INLINE_BYTES


@pytest.mark.parametrize(
    "size", [1, LIMIT - 1, LIMIT, LIMIT + 1], ids=["1B", "below", "at", "above"]
)
def test_small_files_are_kept_inline_up_to_the_limit(fs: Any, tmp_path: Path, size: int) -> None:
    """write_bytes, put and open("wb") all keep a file of at most the limit in its record (no
    blocks; read back with no chunk server) and write a larger one in blocks, identically."""
    data = os.urandom(size)
    inline = size <= LIMIT
    src = tmp_path / "small.bin"
    src.write_bytes(data)
    with fs.open(f"/f/inl-open-{size}", "wb", block_size=BLOCK) as f:
        f.write(data[:7])
        assert fs.stat(f"/f/inl-open-{size}").under_construction  # Create at open, as before
        f.write(data[7:])
    fs.write_bytes(f"/f/inl-bytes-{size}", data, block_size=BLOCK)
    got: list[int] = []
    assert fs.put(src, f"/f/inl-put-{size}", block_size=BLOCK, progress=got.append) == size
    assert got[-1] == size
    for how in ("open", "bytes", "put"):
        path = f"/f/inl-{how}-{size}"
        info = fs.stat(path)
        assert info.length == size and not info.under_construction
        assert (info.blocks == ()) is inline, (how, info.blocks)
        assert md5(fs.read_bytes(path)) == md5(data)
        with fs.open(path, "rb") as r:  # ranged and sequential reads as for a block file
            r.seek(size // 2)
            assert r.read(100) == data[size // 2 : size // 2 + 100]
            assert r.read() == data[size // 2 + 100 :]
        assert fs.get(path, tmp_path / "out.bin") == size
        assert md5((tmp_path / "out.bin").read_bytes()) == md5(data)
    # listings carry the length, never the data
    [listed] = [e for e in fs.ls("/f") if e.path == f"/f/inl-bytes-{size}"]
    assert listed.length == size and listed.data is None


def test_an_inline_file_is_overwritten_and_deleted_as_any_file(fs: Any) -> None:
    fs.write_bytes("/f/inl-ow", b"x" * (LIMIT + 10), block_size=BLOCK)
    assert len(fs.stat("/f/inl-ow").blocks) == 1
    with pytest.raises(AlreadyExists):
        fs.write_bytes("/f/inl-ow", b"small")
    fs.write_bytes("/f/inl-ow", b"small", overwrite=True)
    assert fs.read_bytes("/f/inl-ow") == b"small" and fs.stat("/f/inl-ow").blocks == ()
    fs.write_bytes("/f/inl-ow", b"y" * (LIMIT + 1), overwrite=True, block_size=BLOCK)
    assert fs.read_bytes("/f/inl-ow") == b"y" * (LIMIT + 1)
    assert fs.delete("/f/inl-ow").files == 1


def test_hflush_before_the_limit_writes_blocks(fs: Any) -> None:
    """What an hflush made visible is in blocks: the writer holds nothing back after it."""
    with fs.open("/f/inl-hflush", "wb", block_size=BLOCK) as f:
        f.write(b"visible")
        f.hflush()
        assert fs.read_bytes("/f/inl-hflush") == b"visible"
        f.write(b" and more")
    assert fs.read_bytes("/f/inl-hflush") == b"visible and more"
    assert len(fs.stat("/f/inl-hflush").blocks) >= 1


def _user_client(c: Any, user: str) -> Any:
    """A client acting as ``user``: named in its requests, or (the TLS tier) in its
    certificate, where the masters take the caller from."""
    if c.tls_dir is None:
        return c.client(user=user)
    issue_client(c.tls_dir, user, overwrite=True)
    return c.client(user=user, tls=TlsSettings.for_user(c.tls_dir, user))


def test_another_user_cannot_write_inline_in_a_private_directory(data_cluster: Any) -> None:
    c, _ = data_cluster
    root, alice, bob = c.client(), _user_client(c, "alice"), _user_client(c, "bob")
    root.mkdir("/inl-home/alice", parents=True)
    root.chown("/inl-home/alice", "alice")
    alice.chmod("/inl-home/alice", 0o700)
    alice.write_bytes("/inl-home/alice/mine", b"alice's")
    with pytest.raises(PermissionDenied):
        bob.write_bytes("/inl-home/alice/x", b"bob's")
    with pytest.raises(PermissionDenied):
        bob.write_bytes("/inl-home/alice/mine", b"bob's", overwrite=True)
    with pytest.raises(PermissionDenied):
        bob.read_bytes("/inl-home/alice/mine")
    assert alice.read_bytes("/inl-home/alice/mine") == b"alice's"
    assert [e.name for e in root.ls("/inl-home/alice")] == ["mine"]


def test_a_user_who_reaches_a_file_but_may_not_read_it_stats_it_and_gets_no_content(
    data_cluster: Any,
) -> None:
    """A reader's GetFileInfo checks READ once and hands the content (an inline file's) or
    the READ tokens (a file of blocks) only after it: stat without READ shows no content."""
    c, _ = data_cluster
    root, alice, bob = c.client(), _user_client(c, "alice"), _user_client(c, "bob")
    root.mkdir("/inl-open/alice", parents=True)
    root.chown("/inl-open/alice", "alice")
    alice.chmod("/inl-open/alice", 0o755)
    alice.write_bytes("/inl-open/alice/small", b"alice's secret")
    with alice.open("/inl-open/alice/big", "wb") as f:
        f.write(b"x" * (MAX_INLINE_BYTES + 1))
    for name in ("small", "big"):
        alice.chmod(f"/inl-open/alice/{name}", 0o600)
        assert bob.stat(f"/inl-open/alice/{name}").length > 0
        with pytest.raises(PermissionDenied):
            bob.read_bytes(f"/inl-open/alice/{name}")
    assert alice.read_bytes("/inl-open/alice/small") == b"alice's secret"
    assert len(alice.read_bytes("/inl-open/alice/big")) == MAX_INLINE_BYTES + 1


def test_an_acknowledged_inline_write_survives_the_shard_leader_killed(data_cluster: Any) -> None:
    """The data is in the Raft entry, on a majority before the reply: kill -9 the leader at
    once after the acknowledgement, and the new leader serves it."""
    c, _ = data_cluster
    fs = c.client()
    fs.mkdir("/inl-kill", parents=True)
    data = {f"/inl-kill/f{i}": os.urandom(1000 + i * 4000) for i in range(8)}
    killed = c.leader("shard-1")
    try:
        for path, content in data.items():
            fs.write_bytes(path, content)
        c.kill9(killed)
        assert c.leader("shard-1", exclude=(killed,)) != killed
        for path, content in data.items():
            assert fs.read_bytes(path) == content
            assert fs.stat(path).blocks == ()
    finally:
        c.restart(killed)
