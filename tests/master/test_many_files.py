"""A shard holding many files survives its masters' restarts and loses nothing.

``KEELFS_MANY_FILES`` sets the number of files (default 20,000 to keep the suite quick; 100,000
is a longer run worth doing after a change to the state machine's storage);
``KEELFS_MANY_FILES_ARGS`` adds master flags.
Snapshots are taken every 5,000 entries, so a restarted master recovers from its RocksDB state
(the applied index is kept with it), its snapshot and the log tail. First the leader of the
fullest shard is killed and restarted and must serve everything itself; then all three
processes are killed at once and restarted.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Callable

import pytest
from helpers import call_raw, stub

from keelfs.client import AsyncClient
from keelfs.rpc.pb import meta_pb2 as pb
from keelfs.server.metacluster import MetaCluster

pytestmark = pytest.mark.slow

N_FILES = int(os.environ.get("KEELFS_MANY_FILES", "20000"))
DIRS = 4


def _populate(cluster: MetaCluster, n: int) -> float:
    async def main() -> float:
        async with AsyncClient(cluster.config_addresses, max_sessions=128) as fs:
            await fs.mkdir("/many", parents=True)
            for d in range(DIRS):
                await fs.mkdir(f"/many/d{d}")
            todo = iter(range(n))

            async def worker() -> None:
                for i in todo:
                    await fs.create(f"/many/d{i % DIRS}/f{i:07d}")

            t0 = time.monotonic()
            await asyncio.gather(*(worker() for _ in range(128)))
            return time.monotonic() - t0

    return asyncio.run(main())


def _count_on(cluster: MetaCluster, node: int, directory: str) -> int:
    """Entries of ``directory`` as ``node`` itself holds them (stale-ok reads, no barrier)."""
    ns = stub(cluster, node)
    n, cursor = 0, None
    while True:
        req = pb.ListDirRequest(path=directory, limit=10_000, stale_ok=True)
        if cursor is not None:
            req.start_after = cursor
        page = call_raw(ns.ListDir, req)
        n += len(page.entries)
        if not page.HasField("cursor"):
            return n
        cursor = page.cursor


@pytest.mark.timeout(max(300, N_FILES // 40))
def test_restarted_masters_serve_every_file(make_cluster: Callable[..., MetaCluster]) -> None:
    # Long session and lease lifetimes: this test is about restarts, and past one lifetime of
    # continuous writes the state machine's expiry scans slow down with every command (RocksDB
    # tombstones pile up in keelfs.meta's expiry indexes).
    args = ["--snapshot-every", "5000", "--keep-log", "1000"]
    args += ["--session-ttl-ms", "3600000", "--lease-ttl-ms", "1800000"]
    cluster = make_cluster(node_args=(*args, *os.environ.get("KEELFS_MANY_FILES_ARGS", "").split()))
    elapsed = _populate(cluster, N_FILES)
    print(f"\ncreated {N_FILES} files in {elapsed:.1f} s ({N_FILES / elapsed:.0f}/s)")
    fs = cluster.client(deadline=60.0)
    m = fs.shard_map()
    expected = {f"/many/d{d}": N_FILES // DIRS + (d < N_FILES % DIRS) for d in range(DIRS)}
    by_shard = Counter({m.shard_for_directory(d): 0 for d in expected})
    for d, n in expected.items():
        by_shard[m.shard_for_directory(d)] += n
    fullest = by_shard.most_common(1)[0][0]

    # 1. the fullest shard's leader dies and comes back: it serves all of it from its own state
    victim = cluster.leader(fullest)
    cluster.kill9(victim)
    t0 = time.monotonic()
    cluster.restart(victim)
    ready = time.monotonic() - t0
    leader = cluster.leader(fullest)
    target = cluster.status(leader).groups[fullest].commit
    cluster.wait_for(
        lambda: cluster.status(victim).groups[fullest].applied >= target,
        60,
        "the restarted master did not catch up",
    )
    caught_up = time.monotonic() - t0
    for d, n in expected.items():
        if m.shard_for_directory(d) == fullest:
            assert _count_on(cluster, victim, d) == n
    print(f"one master: READY in {ready:.1f} s, caught up in {caught_up:.1f} s")

    # 2. every process dies at once; all come back
    for node in sorted(cluster.nodes):
        cluster.kill9(node)
    t0 = time.monotonic()
    for node in sorted(cluster.nodes):
        cluster.restart(node)
    fs2 = cluster.client(deadline=60.0)
    assert fs2.stat("/many").is_dir
    serving = time.monotonic() - t0
    for d, n in expected.items():
        names = [e.name for e in fs2.ls(d, page_size=10_000)]
        assert len(names) == n and names == sorted(names)
    total = fs2.du("/many")
    assert (total.file_count, total.directory_count) == (N_FILES, 1 + DIRS)
    st = cluster.status(1).groups
    snapshots = {g: s.snapshot_index for g, s in st.items()}
    print(f"all masters: serving again {serving:.1f} s after the restart; snapshots {snapshots}")
    assert any(i > 0 for g, i in snapshots.items() if g != "config")
