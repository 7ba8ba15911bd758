"""Orphan deletion never touches a block a file references.

The pattern that lost data: write files in a small staging directory, rename them into a big
directory that lives on another shard. The old shard no longer references the blocks (the
replicas still carry its tag) and used to ask the new shard, which answered from its block
walk; a walk of a big shard takes several ticks, so a file renamed in behind the walk's cursor
was "unknown" and the old shard deleted every replica. On the unfixed code this test lost the
renamed files' replicas within a few seconds ("replicas of ... deleted").

Since then an orphan is deleted only on every shard's linearizable answer from its block index
(``keelfs.master.orphans``). The test also plants a real orphan (a block written straight to a
chunk server, referenced by nothing) and requires it to go during the same window: the
collector ran, and it told the two apart.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path
from typing import Any

import pytest

from keelfs.chunk.keys import wait_for_keys
from keelfs.client import AsyncClient
from keelfs.datapath.client import ChunkClient
from keelfs.datapath.tokens import Access, TokenSigner
from keelfs.server.metacluster import MetaCluster

pytestmark = [pytest.mark.slow, pytest.mark.process, pytest.mark.timeout(300)]

BIG_FILES = int(os.environ.get("KEELFS_ORPHAN_TEST_FILES", "6000"))
RENAMED = 6
WATCH_S = 25.0


def _dirs_on_two_shards(m: Any) -> tuple[str, list[str]]:
    """A big directory on one shard and staging directories whose entries are on the other."""
    big = "/big"
    target = m.shard_for_directory(big)
    staging = [f"/stage{i}" for i in range(200) if m.shard_for_directory(f"/stage{i}") != target]
    assert len(staging) >= RENAMED, "the ring put every staging directory on one shard"
    return big, staging[:RENAMED]


def _populate(cluster: MetaCluster, big: str, n: int) -> None:
    async def main() -> None:
        async with AsyncClient(cluster.config_addresses, max_sessions=64) as fs:
            await fs.mkdir(big, parents=True)
            todo = iter(range(n))

            async def worker() -> None:
                for i in todo:
                    path = f"{big}/f{i:07d}"
                    await fs.create(path)
                    await fs.complete(path)

            await asyncio.gather(*(worker() for _ in range(64)))

    asyncio.run(main())


def _replica_files(servers: Any, block_id: int) -> list[Path]:
    """The finalized replicas of ``block_id`` on disk (their ``.data`` files)."""
    found: list[Path] = []
    for i in range(len(servers.addresses)):
        found += list((servers.data_dir(i) / "finalized").rglob(f"blk_{block_id}_*.data"))
    return found


def test_files_renamed_into_a_big_directory_on_another_shard_keep_their_blocks(
    tmp_path: Path,
) -> None:
    cluster = MetaCluster(
        tmp_path, shards=("shard-1", "shard-2"), node_args=("--chunk-dead-after", "10")
    )
    with cluster:
        servers = cluster.start_chunk_servers(3, "--no-fsync-on-close")
        fs = cluster.client()
        big, staging = _dirs_on_two_shards(fs.shard_map())
        _populate(cluster, big, BIG_FILES)

        written: dict[str, tuple[str, list[int]]] = {}
        for i, directory in enumerate(staging):
            fs.mkdir(directory, parents=True)
            data = os.urandom(256 << 10)
            fs.write_bytes(f"{directory}/part", data, replication=3)
            blocks = [b.block_id for b in fs.stat(f"{directory}/part").blocks]
            # "a-" sorts before every "f..." name: behind a walk's cursor as soon as it starts
            written[f"{big}/a-{i}"] = (hashlib.md5(data).hexdigest(), blocks)
        every_block = [b for _, blocks in written.values() for b in blocks]
        cluster.wait_for(
            lambda: all(len(_replica_files(servers, b)) == 3 for b in every_block),
            30,
            "replicas not all written",
        )

        # a real orphan, tagged with the staging shard: the collector must remove it
        orphan = 987_000_001
        stage_shard = fs.shard_map().shard_for_directory(staging[0])
        term = cluster.status(cluster.leader(stage_shard)).groups[stage_shard].term
        # planted with a token of its own, signed with the keys the chunk server learned
        signer = TokenSigner(wait_for_keys(servers.data_dir(0)))
        token = signer.sign(orphan, 1, Access.WRITE, stage_shard, term)
        with ChunkClient() as chunks:
            chunks.write_block(
                [servers.addresses[0]], orphan, 1, b"x" * 1000, stage_shard, term, token=token
            )
        assert _replica_files(servers, orphan)

        for (dst, _), directory in zip(written.items(), staging, strict=True):
            fs.rename(f"{directory}/part", dst)  # a cross-shard transaction each
            time.sleep(0.4)  # spread over the walks' ticks

        deadline = time.monotonic() + WATCH_S
        orphan_gone = False
        while time.monotonic() < deadline:
            for dst, (_, blocks) in written.items():
                for b in blocks:
                    have = len(_replica_files(servers, b))
                    assert have == 3, f"replicas of block {b} of {dst} deleted ({have} left)"
            orphan_gone = orphan_gone or not _replica_files(servers, orphan)
            time.sleep(0.25)
        assert orphan_gone, "the planted orphan was never deleted: the collector did not run"
        for dst, (digest, _) in written.items():
            assert hashlib.md5(fs.read_bytes(dst)).hexdigest() == digest, dst
