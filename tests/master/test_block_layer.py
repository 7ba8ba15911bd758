"""The masters' block layer with real chunk servers: placement, minimum replicas on close,
re-replication after a chunk server dies, deletion of deleted files' blocks and of orphans,
and fencing of a deposed leader's epoch. Files are written here block by block through the
raw RPCs (AllocateBlock, the chunk pipeline, Complete), the way the client's writer does,
with the block access tokens the masters sign; a chunk request without one is refused."""

from __future__ import annotations

import hashlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from keelfs.chunk.keys import wait_for_keys
from keelfs.client import Client
from keelfs.client._core import Op, Route
from keelfs.datapath.client import ChunkClient
from keelfs.datapath.tokens import Access, TokenSigner
from keelfs.errors import Fenced, PermissionDenied
from keelfs.rpc.pb import meta_pb2 as pb
from keelfs.server.metacluster import MetaCluster
from keelfs.testing.tiers import starts_processes

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

BLOCK = 1 << 20
LEASE_TTL_S = 3.0


@pytest.fixture(scope="module")
@starts_processes
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("blocks")
    c = MetaCluster(
        root,
        shards=("shard-1",),
        node_args=("--chunk-dead-after", "2", "--lease-ttl-ms", str(int(LEASE_TTL_S * 1000))),
    )
    with c:
        servers = c.start_chunk_servers(
            4, "--no-fsync-on-close", "--scan-interval-s", "1", "--scan-rate-mb", "64"
        )
        yield c, servers


def _pinned(method: str, path: str, build: Any, session: int) -> Op:
    return Op("Namespace", method, Route("entry", path), build, True, True, session)


def write_file(
    fs: Client, chunks: ChunkClient, path: str, data: bytes, replication: int = 3
) -> Any:
    """Create ``path`` and write ``data`` in blocks of ``BLOCK`` bytes; the closed FileInfo."""
    info = fs.create(path, replication=replication, block_size=BLOCK)
    sid = info.lease_holder
    previous: int | None = None
    for start in range(0, len(data), BLOCK):
        piece = data[start : start + BLOCK]

        def alloc(h: pb.RequestHeader, prev: int | None = previous) -> pb.AllocateBlockRequest:
            req = pb.AllocateBlockRequest(header=h, path=path)
            if prev is not None:
                req.previous_length = prev
            return req

        reply = fs._run(_pinned("AllocateBlock", path, alloc, sid), None)
        pipeline = [loc.address for loc in reply.block.locations]
        assert len(pipeline) == replication
        assert len({loc.server_id for loc in reply.block.locations}) == replication
        block = reply.block
        assert block.token, "AllocateBlock hands out a write token"
        chunks.write_block(
            pipeline, block.block_id, block.gen_stamp, piece, reply.shard, reply.epoch,
            token=block.token,
        )  # fmt: skip
        previous = len(piece)

    def complete(h: pb.RequestHeader) -> pb.CompleteRequest:
        req = pb.CompleteRequest(header=h, path=path)
        if previous is not None:
            req.last_length = previous
        return req

    return fs._run(_pinned("Complete", path, complete, sid), None)


def located(fs: Client, path: str) -> list[pb.BlockInfo]:
    return list(fs._run(_info_op(path), None).info.blocks)


def _info_op(path: str) -> Op:
    return Op(
        "Namespace",
        "GetFileInfo",
        Route("entry", path),
        lambda h: pb.GetFileInfoRequest(header=h, path=path),
    )


def read_file(fs: Client, chunks: ChunkClient, path: str) -> bytes:
    out = b""
    for b in located(fs, path):
        assert b.locations, f"block {b.block_id} has no live replica"
        address = b.locations[0].address
        out += chunks.read_block(address, b.block_id, b.gen_stamp, 0, b.length, token=b.token)
    return out


def keys_signer(servers: Any) -> TokenSigner:
    """A signer with the keys chunk server 0 learned from the masters (what a test needs to
    plant a block or send a command of its own: a client gets no keys)."""
    return TokenSigner(wait_for_keys(servers.data_dir(0)))


def replica_files(servers: Any, block_id: int) -> list[Path]:
    found = []
    for i in range(len(servers.addresses)):
        found += [p for p in servers.data_dir(i).rglob(f"blk_{block_id}_*") if p.is_file()]
    return found


def test_blocks_are_placed_replicated_and_located(cluster: Any) -> None:
    c, servers = cluster
    fs = c.client()
    fs.mkdir("/data", parents=True)
    data = os.urandom(int(2.5 * BLOCK))
    with ChunkClient(tls=c.client_tls) as chunks:
        info = write_file(fs, chunks, "/data/a", data)
        assert not info.info.under_construction and info.info.length == len(data)
        blocks = located(fs, "/data/a")
        assert [b.length for b in blocks] == [BLOCK, BLOCK, len(data) - 2 * BLOCK]
        c.wait_for(
            lambda: all(len(located(fs, "/data/a")[i].locations) == 3 for i in range(3)),
            10,
            "replicas not all reported",
        )
        assert hashlib.md5(read_file(fs, chunks, "/data/a")).digest() == hashlib.md5(data).digest()


def test_a_dead_chunk_servers_blocks_are_re_replicated(cluster: Any) -> None:
    c, servers = cluster
    fs = c.client()
    fs.mkdir("/rr", parents=True)
    data = os.urandom(2 * BLOCK)
    with ChunkClient(tls=c.client_tls) as chunks:
        write_file(fs, chunks, "/rr/f", data)
        c.wait_for(
            lambda: all(len(b.locations) == 3 for b in located(fs, "/rr/f")), 10, "not reported"
        )
        victim_id = located(fs, "/rr/f")[0].locations[0].server_id
        victim = next(i for i, r in enumerate(servers.ready) if r["server_id"] == victim_id)
        servers.kill9(victim)
        try:

            def healed() -> bool:
                blocks = located(fs, "/rr/f")
                return all(
                    len(b.locations) == 3
                    and victim_id not in {loc.server_id for loc in b.locations}
                    for b in blocks
                )

            c.wait_for(healed, 60, "blocks were not re-replicated to 3 live servers")
            got = read_file(fs, chunks, "/rr/f")
            assert hashlib.md5(got).digest() == hashlib.md5(data).digest()
        finally:
            servers.restart(victim)


def test_deleted_files_lose_their_blocks_and_orphans_are_removed(cluster: Any) -> None:
    c, servers = cluster
    fs = c.client()
    fs.mkdir("/del", parents=True)
    with ChunkClient(tls=c.client_tls) as chunks:
        write_file(fs, chunks, "/del/f", os.urandom(BLOCK + 10))
        ids = [b.block_id for b in located(fs, "/del/f")]
        c.wait_for(lambda: all(len(replica_files(servers, b)) >= 3 for b in ids), 10, "no files")
        fs.delete("/del/f")
        c.wait_for(
            lambda: all(not replica_files(servers, b) for b in ids),
            30,
            "blocks of a deleted file are still on disk",
        )
        # an orphan: a block no file references, written straight to a chunk server
        orphan = 987_654_321
        term = c.status(c.leader("shard-1")).groups["shard-1"].term
        token = keys_signer(servers).sign(orphan, 1, Access.WRITE, "shard-1", term)
        chunks.write_block(
            [servers.addresses[0]], orphan, 1, b"x" * 1000, "shard-1", term, token=token
        )
        assert replica_files(servers, orphan)
        c.wait_for(lambda: not replica_files(servers, orphan), 60, "the orphan was not removed")


def test_chunk_servers_act_only_on_the_masters_tokens(cluster: Any, tmp_path: Path) -> None:
    """Issue [9]: with the tokens the masters sign, files go in and out through the client
    library; without one, or with a token for another block or stamp, a chunk server reads
    nothing and deletes nothing."""
    c, servers = cluster
    fs = c.client()
    fs.mkdir("/tok", parents=True)
    data = os.urandom(BLOCK + 100)
    (tmp_path / "in").write_bytes(data)
    fs.put(str(tmp_path / "in"), "/tok/f")
    fs.put(str(tmp_path / "in"), "/tok/g")
    fs.get("/tok/f", str(tmp_path / "out"))
    assert (tmp_path / "out").read_bytes() == data
    [first], [second] = located(fs, "/tok/f"), located(fs, "/tok/g")
    assert first.token and second.token and first.locations
    holder = first.locations[0].address
    with ChunkClient(tls=c.client_tls) as chunks:
        for token in (b"", second.token):
            with pytest.raises(PermissionDenied):
                chunks.read_block(holder, first.block_id, first.gen_stamp, token=token)
        with pytest.raises(PermissionDenied):
            chunks.read_block(holder, first.block_id, first.gen_stamp + 1, token=first.token)
        term = c.status(c.leader("shard-1")).groups["shard-1"].term
        ref = [(first.block_id, first.gen_stamp)]
        with ChunkClient(tls=_as_a_master(c)) as master:
            for tokens in ([], [first.token]):  # none, and a READ token
                with pytest.raises(PermissionDenied):
                    master.delete_blocks(holder, ref, "shard-1", term, tokens)
        assert read_file(fs, chunks, "/tok/f") == data


def _as_a_master(c: MetaCluster) -> Any:
    """What a shard-1 master presents (None without TLS): deletes are for metadata nodes."""
    return c.master_tls(c.members("shard-1")[0])


def test_a_deposed_leaders_epoch_is_refused(cluster: Any) -> None:
    c, servers = cluster
    fs = c.client()
    fs.mkdir("/fence", parents=True)
    with ChunkClient(tls=c.client_tls) as chunks:
        write_file(fs, chunks, "/fence/f", b"y" * 100)
        for _ in range(3):
            # (the leader found may have just handed over, as earlier tests of the module
            # move leaders: then no new term follows the freeze, and the fence has nothing
            # to refuse; freeze the one that leads then)
            old = c.leader("shard-1")
            old_term = c.status(old).groups["shard-1"].term
            c.sigstop(old)
            try:
                new = c.leader("shard-1", exclude=(old,))
            finally:
                c.sigcont(old)
            if c.status(new).groups["shard-1"].term > old_term:
                break
        else:
            pytest.fail("freezing the shard leader never led to a new term")
        # the new leader's writes carry its epoch to the chunk servers...
        for i in range(3):
            write_file(fs, chunks, f"/fence/g{i}", b"z" * 100)
        block = located(fs, "/fence/f")[0]
        holder = block.locations[0].address
        # ... so a command in the old leader's epoch is refused and changes nothing
        ref = [(block.block_id, block.gen_stamp)]
        token = keys_signer(servers).sign(*ref[0], Access.DELETE, "shard-1", old_term)
        with ChunkClient(tls=_as_a_master(c)) as master, pytest.raises(Fenced):
            master.delete_blocks(holder, ref, "shard-1", old_term, [token])
        assert read_file(fs, chunks, "/fence/f") == b"y" * 100


def test_a_corrupt_replica_is_found_by_the_scanner_and_replaced(cluster: Any) -> None:
    c, servers = cluster
    fs = c.client()
    fs.mkdir("/rot", parents=True)
    data = os.urandom(BLOCK)
    with ChunkClient(tls=c.client_tls) as chunks:
        write_file(fs, chunks, "/rot/f", data)
        c.wait_for(
            lambda: len(located(fs, "/rot/f")[0].locations) == 3, 10, "replicas not reported"
        )
        block = located(fs, "/rot/f")[0]
        bad_id = block.locations[0].server_id
        bad = next(i for i, r in enumerate(servers.ready) if r["server_id"] == bad_id)
        (replica,) = servers.data_dir(bad).rglob(f"blk_{block.block_id}_*.data")
        raw = bytearray(replica.read_bytes())
        raw[1000] ^= 0xFF  # a flipped byte on disk; nobody reads the block
        replica.write_bytes(bytes(raw))

        def replaced() -> bool:
            holders = {loc.server_id for loc in located(fs, "/rot/f")[0].locations}
            return len(holders) == 3 and bad_id not in holders

        c.wait_for(replaced, 60, "the corrupt replica was not replaced")
        c.wait_for(lambda: not replica.exists(), 30, "the corrupt replica is still on disk")
        assert read_file(fs, chunks, "/rot/f") == data


def test_a_dead_writers_file_is_closed_by_lease_recovery(cluster: Any) -> None:
    """The writer wrote one whole block and half of a second, then vanished (its lease is not
    renewed): the leader settles the last block's length from the replicas and closes it."""
    c, servers = cluster
    fs = c.client()
    fs.mkdir("/lost", parents=True)
    with ChunkClient(tls=c.client_tls) as chunks:
        info = fs.create("/lost/f", block_size=BLOCK)
        sid = info.lease_holder
        lengths = [BLOCK, BLOCK // 2]
        previous: int | None = None
        for n in lengths:

            def alloc(h: pb.RequestHeader, prev: int | None = previous) -> Any:
                req = pb.AllocateBlockRequest(header=h, path="/lost/f")
                if prev is not None:
                    req.previous_length = prev
                return req

            reply = fs._run(_pinned("AllocateBlock", "/lost/f", alloc, sid), None)
            pipeline = [loc.address for loc in reply.block.locations]
            chunks.write_block(
                pipeline, reply.block.block_id, 1, b"q" * n, reply.shard, reply.epoch,
                token=reply.block.token,
            )  # fmt: skip
            previous = n
        # no Complete, no RenewLease: the lease expires after 3 s of log time

        def closed() -> bool:
            got = fs.stat("/lost/f")
            return not got.under_construction

        c.wait_for(closed, 60, "the file was not recovered")
        got = fs.stat("/lost/f")
        assert got.length == BLOCK + BLOCK // 2
        assert read_file(fs, chunks, "/lost/f") == b"q" * (BLOCK + BLOCK // 2)


def test_a_finalized_last_block_survives_lease_recovery_by_masters_that_just_restarted(
    cluster: Any,
) -> None:
    """The writer finished a whole block (every replica finalized: what an hflush at a block's
    end leaves) and vanished before its length reached the masters. Then every master
    restarts while the chunk servers are paused: the new leader has no report from any of
    them. Lease recovery must wait for their full reports and settle the block from them,
    not drop it because nobody reported it."""
    c, servers = cluster
    fs = c.client()
    fs.mkdir("/restart", parents=True)
    path, data = "/restart/f", os.urandom(BLOCK)
    with ChunkClient(tls=c.client_tls) as chunks:
        info = fs.create(path, block_size=BLOCK)

        def alloc(h: pb.RequestHeader) -> pb.AllocateBlockRequest:
            return pb.AllocateBlockRequest(header=h, path=path)

        reply = fs._run(_pinned("AllocateBlock", path, alloc, info.lease_holder), None)
        lease_end = time.monotonic() + LEASE_TTL_S  # never renewed from here on
        pipeline = [loc.address for loc in reply.block.locations]
        chunks.write_block(
            pipeline, reply.block.block_id, 1, data, reply.shard, reply.epoch,
            token=reply.block.token,
        )  # fmt: skip
        c.wait_for(lambda: len(located(fs, path)[0].locations) == 3, 10, "replicas unreported")
    paused = [servers.pid(i) for i in range(len(servers.addresses))]
    masters = c.running()
    try:
        for pid in paused:
            os.kill(pid, signal.SIGSTOP)
        for node_id in masters:
            c.kill9(node_id)
        time.sleep(max(0.0, lease_end - time.monotonic()))  # the lease ends while they are down
        for node_id in masters:
            c.restart(node_id)
        c.wait_for(lambda: fs.stat(path).lease_holder == 0, 30, "the lease did not expire")
        # the leader now recovers the lease at its next maintenance tick: with no server
        # heard from, it must leave the file open
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and fs.stat(path).under_construction:
            time.sleep(0.05)
        assert fs.stat(path).under_construction
    finally:
        for pid in paused:
            os.kill(pid, signal.SIGCONT)
    c.wait_for(lambda: not fs.stat(path).under_construction, 60, "the file was not recovered")
    assert fs.stat(path).length == BLOCK
    with ChunkClient(tls=c.client_tls) as chunks:
        assert read_file(fs, chunks, path) == data
