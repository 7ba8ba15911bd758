"""``keelfs bench data``: the data path, end to end, on one machine.

One shard × 3 masters (co-hosted with the config group: 3 processes) and 3 chunk servers, each a
real process on 127.0.0.1, replicas fsynced when finalized, replication 3. From this process,
one :class:`~keelfs.client.AsyncClient`:

1. **large files**: ``large_mib`` MiB written as one file (64 MiB blocks through the 3-server
   pipeline), then read back whole: MB/s each way (MB = 10^6 bytes, as the targets are stated);
   the MD5 of what was read is compared with what was written.
2. **small files**: ``small_count`` files of ``small_kib`` KiB created with ``concurrency`` in
   flight (each: create, allocate a block, write it through the pipeline, close), then read back
   with the same concurrency: files per second each way.
3. **write stall at failover**: small files are written one after another while the shard's
   leader is killed (kill -9); the stall is the longest gap between two acknowledged writes
   (the time to elect a new leader and for the client to find it). Measured ``trials`` times.

Every process is killed by pid when the run ends, whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keelfs.bench.common import CpuByGroup, SmallFiles, Summary, machine
from keelfs.bench.stall import write_stall
from keelfs.client import AsyncClient
from keelfs.errors import KeelError
from keelfs.server.metacluster import MetaCluster

if TYPE_CHECKING:
    from keelfs.server.chunkservers import LocalChunkServers

__all__ = [
    "DataBenchResult",
    "cluster_meter",
    "large_file",
    "run",
    "small_files",
    "started_cluster",
]

MB = 1_000_000


@dataclass
class DataBenchResult:
    large_mib: int
    write_mb_s: float
    read_mb_s: float
    large_md5_ok: bool
    small_kib: int
    small_count: int
    concurrency: int
    small_writes_s: float
    small_reads_s: float
    small_failed: int
    stall_s: list[float]
    machine: dict[str, object]
    small_write_cpu_us: dict[str, float] = field(default_factory=dict)
    small_read_cpu_us: dict[str, float] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        stall = Summary.of(self.stall_s).as_dict(digits=3)
        return {
            "bench": "data",
            "replication": 3,
            "fsync": True,
            "large_mib": self.large_mib,
            "large_write_mb_s": round(self.write_mb_s, 1),
            "large_read_mb_s": round(self.read_mb_s, 1),
            "large_md5_ok": self.large_md5_ok,
            "small_kib": self.small_kib,
            "small_count": self.small_count,
            "concurrency": self.concurrency,
            "small_writes_s": round(self.small_writes_s, 1),
            "small_reads_s": round(self.small_reads_s, 1),
            "small_failed": self.small_failed,
            "small_write_cpu_us": self.small_write_cpu_us,
            "small_read_cpu_us": self.small_read_cpu_us,
            "failover_write_stall_s": stall,
            "machine": self.machine,
        }


async def large_file(fs: AsyncClient, mib: int) -> tuple[float, float, bool]:
    """(write MB/s, read MB/s, intact): hashing is done outside the timed parts. Also the
    keelfs column of ``keelfs bench compare``."""
    piece = os.urandom(1 << 20)
    digest = hashlib.md5()
    for _ in range(mib):
        digest.update(piece)
    t0 = time.perf_counter()
    async with await fs.open("/bench/large", "wb", overwrite=True) as w:
        for _ in range(mib):
            await w.write(piece)
    wrote = time.perf_counter() - t0
    parts: list[bytes] = []
    t0 = time.perf_counter()
    async with await fs.open("/bench/large", "rb") as r:
        while True:
            data = await r.read(8 << 20)
            if not data:
                break
            parts.append(data)
    read = time.perf_counter() - t0
    got = hashlib.md5()
    for data in parts:
        got.update(data)
    size = mib << 20
    return size / wrote / MB, size / read / MB, got.digest() == digest.digest()


async def small_files(
    fs: AsyncClient, count: int, kib: int, concurrency: int, meter: CpuByGroup | None = None
) -> SmallFiles:
    """``count`` files of ``kib`` KiB written then read with ``concurrency`` in flight."""
    data = os.urandom(kib << 10)
    sem = asyncio.Semaphore(concurrency)
    failed = 0

    async def put(i: int) -> None:
        nonlocal failed
        async with sem:
            try:
                await fs.write_bytes(f"/bench/small/f{i}", data, overwrite=True)
            except KeelError:
                failed += 1

    async def get(i: int) -> None:
        nonlocal failed
        async with sem:
            try:
                if await fs.read_bytes(f"/bench/small/f{i}") != data:
                    failed += 1
            except KeelError:
                failed += 1

    await fs.mkdir("/bench/small", parents=True)
    cpu0 = meter.reading() if meter else {}
    t0 = time.perf_counter()
    await asyncio.gather(*(put(i) for i in range(count)))
    writes = count / (time.perf_counter() - t0)
    cpu1 = meter.reading() if meter else {}
    t0 = time.perf_counter()
    await asyncio.gather(*(get(i) for i in range(count)))
    reads = count / (time.perf_counter() - t0)
    cpu2 = meter.reading() if meter else {}
    result = SmallFiles(writes, reads, failed)
    if meter:
        result.write_cpu_us = meter.per_op_us(cpu0, cpu1, count)
        result.read_cpu_us = meter.per_op_us(cpu1, cpu2, count)
    return result


def cluster_meter(cluster: MetaCluster, servers: LocalChunkServers, shard: str) -> CpuByGroup:
    """The groups keelfs's CPU per operation is told by: this process (the client), the
    leader of ``shard`` when the meter is made, the other masters, the chunk servers."""
    leader = cluster.leader(shard)
    return CpuByGroup(
        {
            "client": [os.getpid()],
            "shard leader": [cluster.pid(leader)],
            "other masters": [cluster.pid(i) for i in cluster.running() if i != leader],
            "chunk servers": servers.pids(),
        }
    )


@contextlib.contextmanager
def started_cluster(
    root: Path, *, tls: bool = False
) -> Iterator[tuple[MetaCluster, LocalChunkServers]]:
    """The cluster this benchmark measures (also keelfs's side of ``keelfs bench compare``):
    one shard x 3 masters co-hosted with the config group, and 3 chunk servers, under
    ``root`` (with ``tls``: certificates made there, every link mutual TLS); every process
    killed by pid when the block ends."""
    with MetaCluster(root, shards=("shard-1",), tls=tls) as cluster:
        yield cluster, cluster.start_chunk_servers(3)


def run(
    *,
    large_mib: int = 256,
    small_count: int = 2000,
    small_kib: int = 4,
    concurrency: int = 16,
    trials: int = 3,
    tmpdir: str | None = None,
    progress: Any = None,
    tls: bool = False,
) -> DataBenchResult:
    """See the module docstring; ``tls``: the cluster runs with mutual TLS everywhere."""

    def say(msg: str) -> None:
        if progress is not None:
            progress(msg)

    info = machine()
    with tempfile.TemporaryDirectory(prefix="keelfs-bench-data-", dir=tmpdir) as root:
        say("starting 3 masters (config group + shard-1) and 3 chunk servers")
        with started_cluster(Path(root), tls=tls) as (cluster, servers):
            result: dict[str, Any] = {}

            async def main() -> None:
                async with AsyncClient(
                    cluster.config_addresses, deadline=60.0, tls=cluster.client_tls
                ) as fs:
                    await fs.mkdir("/bench", parents=True)
                    say(f"large file: {large_mib} MiB")
                    result["large"] = await large_file(fs, large_mib)
                    say(f"small files: {small_count} x {small_kib} KiB, {concurrency} in flight")
                    meter = cluster_meter(cluster, servers, "shard-1")
                    result["small"] = await small_files(
                        fs, small_count, small_kib, concurrency, meter
                    )
                    stalls = []
                    for t in range(trials):
                        say(f"write stall at failover: trial {t + 1}/{trials}")
                        stalls.append((await write_stall(fs, cluster, "kill", t))[0])
                    result["stall"] = stalls

            asyncio.run(main())
    write_mb_s, read_mb_s, md5_ok = result["large"]
    small: SmallFiles = result["small"]
    return DataBenchResult(
        large_mib=large_mib,
        write_mb_s=write_mb_s,
        read_mb_s=read_mb_s,
        large_md5_ok=md5_ok,
        small_kib=small_kib,
        small_count=small_count,
        concurrency=concurrency,
        small_writes_s=small.writes_s,
        small_reads_s=small.reads_s,
        small_failed=small.failed,
        stall_s=result["stall"],
        machine=info,
        small_write_cpu_us=small.write_cpu_us,
        small_read_cpu_us=small.read_cpu_us,
    )
