"""Reads only, and what they cost in CPU: ``keelfs bench reads`` (``python -m keelfs.bench.reads``).

The cluster of ``keelfs bench data`` (3 masters co-hosted with the config group, 3 chunk
servers, replication 3). One large file is written, then read back whole ``large_reads``
times in 8 MiB calls; ``small_count`` small files are written, then all read back
``small_rounds`` times with ``concurrency`` in flight. Besides MB/s and files/s it reports the
CPU time each read cost: of this process (the client) and of every process of the cluster
(from ``/proc``, user + system). On a machine shared with other work, wall-clock figures move
with the load; CPU per read moves much less, which makes it the figure to compare two trees
by (``PYTHONPATH=<tree> python -m keelfs.bench.reads``, alternately). Every byte read is
compared with what was written.

    python -m keelfs.bench.reads [--large-mib 256] [--large-reads 3] [--small-count 1000]
                                 [--small-rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from keelfs.bench.common import CpuByGroup, machine
from keelfs.bench.data import MB, cluster_meter, started_cluster
from keelfs.client import AsyncClient

__all__ = ["main", "run"]

_PIECE = 1 << 20


class _Meter:
    """Wall and CPU time (client, cluster) of one timed part."""

    def __init__(self, cpu: CpuByGroup) -> None:
        self.cpu = cpu

    def __enter__(self) -> _Meter:
        self.wall, self._cpu = time.perf_counter(), self.cpu.reading()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        spent = self.cpu.spent(self._cpu, self.cpu.reading())
        self.client = spent.pop("client")
        self.cluster = sum(spent.values())


async def _large(fs: AsyncClient, cpu: CpuByGroup, mib: int, reads: int) -> list[dict[str, float]]:
    piece = os.urandom(_PIECE)
    async with await fs.open("/bench/large", "wb", overwrite=True) as w:
        for _ in range(mib):
            await w.write(piece)
    out: list[dict[str, float]] = []
    for _ in range(reads):
        parts: list[bytes] = []
        with _Meter(cpu) as m:
            async with await fs.open("/bench/large", "rb") as r:
                while data := await r.read(8 << 20):
                    parts.append(data)
        whole = b"".join(parts)
        if len(whole) != mib * _PIECE or any(
            whole[i : i + _PIECE] != piece for i in range(0, len(whole), _PIECE)
        ):
            raise RuntimeError("the large file read back differs from what was written")
        out.append(
            {
                "mb_s": round(mib * _PIECE / m.wall / MB, 1),
                "client_cpu_ms": round(m.client * 1000),
                "cluster_cpu_ms": round(m.cluster * 1000),
            }
        )
    return out


async def _small(
    fs: AsyncClient, cpu: CpuByGroup, count: int, rounds: int, kib: int, concurrency: int
) -> list[dict[str, float]]:
    data = os.urandom(kib << 10)
    sem = asyncio.Semaphore(concurrency)
    await fs.mkdir("/bench/small", parents=True)

    async def put(i: int) -> None:
        async with sem:
            await fs.write_bytes(f"/bench/small/f{i}", data, overwrite=True)

    async def get(i: int) -> bool:
        async with sem:
            return await fs.read_bytes(f"/bench/small/f{i}") == data

    await asyncio.gather(*(put(i) for i in range(count)))
    out: list[dict[str, float]] = []
    for _ in range(rounds):
        with _Meter(cpu) as m:
            same = await asyncio.gather(*(get(i) for i in range(count)))
        if not all(same):
            raise RuntimeError("a small file read back differs from what was written")
        out.append(
            {
                "reads_s": round(count / m.wall),
                "client_cpu_us": round(m.client / count * 1e6),
                "cluster_cpu_us": round(m.cluster / count * 1e6),
            }
        )
    return out


def run(
    *,
    large_mib: int = 256,
    large_reads: int = 3,
    small_count: int = 1000,
    small_rounds: int = 3,
    small_kib: int = 4,
    concurrency: int = 16,
    tmpdir: str | None = None,
) -> dict[str, Any]:
    """See the module docstring: one dict per timed read (large) or round (small)."""
    info = machine()
    with (
        tempfile.TemporaryDirectory(prefix="keelfs-bench-reads-", dir=tmpdir) as root,
        started_cluster(Path(root)) as (cluster, servers),
    ):

        async def main() -> dict[str, Any]:
            async with AsyncClient(
                cluster.config_addresses, deadline=60.0, tls=cluster.client_tls
            ) as fs:
                await fs.mkdir("/bench", parents=True)
                cpu = cluster_meter(cluster, servers, "shard-1")
                large = await _large(fs, cpu, large_mib, large_reads)
                small = await _small(fs, cpu, small_count, small_rounds, small_kib, concurrency)
                return {"large": large, "small": small}

        result = asyncio.run(main())
    result["load_at_end"] = round(os.getloadavg()[0], 2)
    return {
        "bench": "reads",
        "large_mib": large_mib,
        "small_kib": small_kib,
        "small_count": small_count,
        **result,
        "machine": info,
    }


def _median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows) if rows else 0.0


def summary(result: dict[str, Any]) -> list[str]:
    """The two lines a run is read by: medians of MB/s, files/s and CPU per read."""
    large, small = result["large"], result["small"]
    return [
        f"large file {result['large_mib']} MiB read {len(large)}x: median "
        f"{_median(large, 'mb_s'):.0f} MB/s, client CPU {_median(large, 'client_cpu_ms'):.0f} ms,"
        f" cluster CPU {_median(large, 'cluster_cpu_ms'):.0f} ms per read",
        f"{result['small_count']} small files read {len(small)}x: median "
        f"{_median(small, 'reads_s'):.0f}/s, CPU per read: client "
        f"{_median(small, 'client_cpu_us'):.0f} us, "
        f"cluster {_median(small, 'cluster_cpu_us'):.0f} us",
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m keelfs.bench.reads", description=__doc__)
    p.add_argument("--large-mib", type=int, default=256)
    p.add_argument("--large-reads", type=int, default=3)
    p.add_argument("--small-count", type=int, default=1000)
    p.add_argument("--small-rounds", type=int, default=3)
    p.add_argument("--json", action="store_true")
    ns = p.parse_args(argv)
    result = run(
        large_mib=ns.large_mib,
        large_reads=ns.large_reads,
        small_count=ns.small_count,
        small_rounds=ns.small_rounds,
    )
    for line in summary(result):
        print(line)
    if ns.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
