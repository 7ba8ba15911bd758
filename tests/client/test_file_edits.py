"""Append, truncate and concat on real processes (3 masters, 4 chunk servers): content read
back identical (MD5) after appends across block boundaries and to inline files, a truncate
inside a block then an append, a concat; concurrent appenders; the shard leader killed (-9)
in the middle of an append and of a truncate; Parquet through pyarrow's fsspec handler."""

from __future__ import annotations

import asyncio
import hashlib
import os
from typing import Any

import pytest

from keelfs.client import AsyncClient, files
from keelfs.client import _ops as ops
from keelfs.errors import InvalidArgument, IsADirectory, LeaseConflict, NotFound
from keelfs.meta.records import MAX_INLINE_BYTES
from keelfs.rpc.wire import file_info_from_pb

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

BS = 64 * 1024
"""The smallest block size: appends and cuts cross block boundaries with little data."""


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.fixture(scope="module")
def fs(data_cluster: Any) -> Any:
    c, _ = data_cluster
    client = c.client()
    client.mkdir("/ed", parents=True)
    return client


def write(fs: Any, path: str, data: bytes) -> None:
    with fs.open(path, "wb", block_size=BS) as f:
        f.write(data)


def append(fs: Any, path: str, data: bytes, piece: int = 50_000) -> None:
    with fs.open(path, "ab") as f:
        for i in range(0, len(data), piece):
            f.write(data[i : i + piece])


# -- append ---------------------------------------------------------------------------------
def test_appends_across_block_boundaries_read_back_identical(fs: Any) -> None:
    first, second, third = os.urandom(100_000), os.urandom(200_001), os.urandom(7)
    write(fs, "/ed/a", first)
    append(fs, "/ed/a", second)
    append(fs, "/ed/a", third)
    whole = first + second + third
    assert md5(fs.read_bytes("/ed/a")) == md5(whole)
    info = fs.stat("/ed/a")
    assert info.length == len(whole) and not info.under_construction
    # the old blocks as they were, the appended bytes in new blocks after them
    assert [b.length for b in info.blocks] == [BS, 100_000 - BS, BS, BS, BS, 200_001 - 3 * BS, 7]
    with fs.open("/ed/a", "rb") as f:  # a ranged read across an old and a new block
        f.seek(99_990)
        assert f.read(20) == whole[99_990:100_010]


def test_append_to_an_inline_file_stays_inline_then_moves_into_blocks(fs: Any) -> None:
    head = os.urandom(1000)
    fs.write_bytes("/ed/small", head)
    append(fs, "/ed/small", b"tail")
    assert fs.read_bytes("/ed/small") == head + b"tail"
    assert fs.stat("/ed/small").blocks == ()  # still inline: it fits
    more = os.urandom(MAX_INLINE_BYTES + 10)
    append(fs, "/ed/small", more)
    whole = head + b"tail" + more
    assert md5(fs.read_bytes("/ed/small")) == md5(whole)
    info = fs.stat("/ed/small")
    assert info.blocks != () and info.length == len(whole)


def test_append_with_the_asyncio_client(data_cluster: Any) -> None:
    c, _ = data_cluster
    data = os.urandom(150_000)

    async def main() -> bytes:
        async with AsyncClient(c.config_addresses, tls=c.client_tls) as afs:
            async with await afs.open("/ed/aio", "wb", block_size=BS) as w:
                await w.write(data[:70_000])
            async with await afs.open("/ed/aio", "ab") as w:
                assert w.tell() == 70_000
                await w.write(data[70_000:])
            return await afs.read_bytes("/ed/aio")

    assert md5(asyncio.run(main())) == md5(data)


def test_append_bad_input(fs: Any) -> None:
    with pytest.raises(NotFound):
        fs.open("/ed/missing", "ab")
    with pytest.raises(IsADirectory):
        fs.open("/ed", "ab")


def test_a_second_appender_gets_lease_conflict(data_cluster: Any, fs: Any) -> None:
    c, _ = data_cluster
    other = c.client()
    write(fs, "/ed/race", b"0" * 1000)
    with fs.open("/ed/race", "ab") as f:
        f.write(b"1" * 10)
        with pytest.raises(LeaseConflict):
            other.open("/ed/race", "ab")
        with pytest.raises(LeaseConflict):
            other.truncate("/ed/race", 10)
    writing = fs.open("/ed/race2", "wb")
    try:
        with pytest.raises(LeaseConflict):
            other.open("/ed/race2", "ab")  # a file being written
    finally:
        writing.close()
    append(other, "/ed/race", b"2" * 10)  # once closed, anyone may
    assert fs.read_bytes("/ed/race") == b"0" * 1000 + b"1" * 10 + b"2" * 10


# -- truncate -------------------------------------------------------------------------------
def test_truncate_inside_a_block_then_read_and_append(fs: Any) -> None:
    data = os.urandom(3 * BS + 500)
    write(fs, "/ed/t", data)
    info = fs.truncate("/ed/t", BS + 1234)
    assert info.length == BS + 1234 and not info.under_construction
    assert md5(fs.read_bytes("/ed/t")) == md5(data[: BS + 1234])
    assert [b.length for b in fs.stat("/ed/t").blocks] == [BS, 1234]
    append(fs, "/ed/t", b"after")  # usable again at once
    assert fs.read_bytes("/ed/t") == data[: BS + 1234] + b"after"
    fs.truncate("/ed/t", BS)  # a boundary: metadata only
    assert md5(fs.read_bytes("/ed/t")) == md5(data[:BS])
    fs.truncate("/ed/t", 0)
    assert fs.read_bytes("/ed/t") == b"" and fs.stat("/ed/t").blocks == ()


def test_truncate_bad_input(fs: Any) -> None:
    fs.write_bytes("/ed/tb", b"0123456789")
    with pytest.raises(InvalidArgument):
        fs.truncate("/ed/tb", 11)  # HDFS refuses to grow a file
    with pytest.raises(InvalidArgument):
        fs.truncate("/ed/tb", -1)
    with pytest.raises(NotFound):
        fs.truncate("/ed/nope", 0)
    fs.truncate("/ed/tb", 4)
    assert fs.read_bytes("/ed/tb") == b"0123"


# -- concat ---------------------------------------------------------------------------------
def test_concat_then_read(fs: Any) -> None:
    parts = [os.urandom(n) for n in (BS + 10, 3, 2 * BS)]
    for i, part in enumerate(parts):
        write(fs, f"/ed/c{i}", part)
    info = fs.concat("/ed/c0", ["/ed/c1", "/ed/c2"])
    assert info.length == sum(len(p) for p in parts)
    assert md5(fs.read_bytes("/ed/c0")) == md5(b"".join(parts))
    assert not fs.exists("/ed/c1") and not fs.exists("/ed/c2")
    with pytest.raises(NotFound):
        fs.concat("/ed/c0", ["/ed/c1"])
    with pytest.raises(InvalidArgument):
        fs.concat("/ed/c0", ["/ed/c0"])
    append(fs, "/ed/c0", b"!")
    assert fs.read_bytes("/ed/c0")[-1:] == b"!"


# -- the shard leader killed -----------------------------------------------------------------
def test_the_shard_leader_killed_in_the_middle_of_an_append(data_cluster: Any, fs: Any) -> None:
    c, _ = data_cluster
    old, new = os.urandom(150_000), os.urandom(400_000)
    write(fs, "/ed/kill-a", old)
    killed = c.leader("shard-1")
    try:
        with fs.open("/ed/kill-a", "ab") as f:
            f.write(new[:150_000])
            c.kill9(killed)
            f.write(new[150_000:])  # next blocks and the close: a new leader
        assert c.leader("shard-1") != killed
        assert md5(fs.read_bytes("/ed/kill-a")) == md5(old + new)
        info = fs.stat("/ed/kill-a")
        assert info.length == len(old + new) and not info.under_construction
    finally:
        c.restart(killed)


def test_the_shard_leader_killed_in_the_middle_of_a_truncate(data_cluster: Any) -> None:
    """Killed between the truncate's first step (the file under construction, the cut
    recorded) and the copy of the kept bytes: the client's next calls reach the new leader,
    and the file ends cut where asked."""
    c, _ = data_cluster
    data = os.urandom(2 * BS + 300)
    cut = BS + 77
    killed: list[int] = []

    async def main() -> bytes:
        async with AsyncClient(c.config_addresses, tls=c.client_tls) as afs:
            async with await afs.open("/ed/kill-t", "wb", block_size=BS) as w:
                await w.write(data)
            reply = await afs._run(ops.truncate("/ed/kill-t", cut), None)
            info = file_info_from_pb(reply.info)
            assert info.under_construction
            afs._core.writers[info.path] = (reply.reply.group, info.lease_holder)
            killed.append(c.leader("shard-1"))
            await asyncio.to_thread(c.kill9, killed[0])
            await files.finish_truncate(afs, afs._chunk_client(), info, cut)
            assert not (await afs.stat("/ed/kill-t")).under_construction
            return await afs.read_bytes("/ed/kill-t")

    try:
        assert md5(asyncio.run(main())) == md5(data[:cut])
    finally:
        if killed:
            c.restart(killed[0])


# -- pyarrow --------------------------------------------------------------------------------
def test_parquet_through_pyarrow_fsspec_handler(data_cluster: Any) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from pyarrow import fs as pafs

    from keelfs.fsspec import KeelFileSystem

    c, _ = data_cluster
    keel = KeelFileSystem(c.config_addresses[0], skip_instance_cache=True)
    try:
        handler = pafs.PyFileSystem(pafs.FSSpecHandler(keel))
        handler.create_dir("/ed/pq")
        table = pa.table({"n": list(range(10_000)), "s": [f"row {i}" for i in range(10_000)]})
        pq.write_table(table, "/ed/pq/t.parquet", filesystem=handler)
        assert pq.read_table("/ed/pq/t.parquet", filesystem=handler).equals(table)
        with handler.open_append_stream("/ed/pq/log") as out:  # fsspec "ab": created
            out.write(b"one\n")
        with handler.open_append_stream("/ed/pq/log") as out:
            out.write(b"two\n")
        with handler.open_input_stream("/ed/pq/log") as src:
            assert src.read() == b"one\ntwo\n"
        keel.truncate("/ed/pq/log", 3)
        assert keel.cat_file("/ed/pq/log") == b"one"
    finally:
        keel.close()


def test_rights_of_another_user(data_cluster: Any, fs: Any) -> None:
    """Append and truncate need ``w`` on the file, concat ``w`` on the target and ``r`` on
    the sources: another user is refused and nothing changes."""
    from keelfs.errors import PermissionDenied
    from keelfs.tls.certs import issue_client
    from keelfs.tls.credentials import TlsSettings

    c, _ = data_cluster

    def as_user(user: str) -> Any:
        if c.tls_dir is None:
            return c.client(user=user)
        issue_client(c.tls_dir, user, overwrite=True)
        return c.client(user=user, tls=TlsSettings.for_user(c.tls_dir, user))

    alice, bob = as_user("alice"), as_user("bob")
    fs.mkdir("/ed/shared", parents=True)
    fs.chmod("/ed/shared", 0o777)
    write(alice, "/ed/shared/mine", b"a" * 100_000)  # 0644: bob may read, not write
    write(bob, "/ed/shared/bobs", b"b" * 70_000)
    with pytest.raises(PermissionDenied):
        bob.open("/ed/shared/mine", "ab")
    with pytest.raises(PermissionDenied):
        bob.truncate("/ed/shared/mine", 5)
    with pytest.raises(PermissionDenied):
        bob.concat("/ed/shared/mine", ["/ed/shared/bobs"])
    assert fs.read_bytes("/ed/shared/mine") == b"a" * 100_000
    bob.concat("/ed/shared/bobs", ["/ed/shared/mine"])  # r on the source, w on the dir
    assert fs.read_bytes("/ed/shared/bobs") == b"b" * 70_000 + b"a" * 100_000
