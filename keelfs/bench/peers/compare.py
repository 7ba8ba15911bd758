"""``keelfs bench compare seaweedfs``: keelfs and SeaweedFS measured in one run, same shapes.

1. The machine's load before anything starts: the 1-minute load average and the CPU cores
   other processes use over a short sample (:class:`CpuMeter`). With 2 cores, anything well
   above 0 makes every figure of the run pessimistic, for both systems.
2. keelfs as ``keelfs bench data`` runs it (3 masters, 3 chunk servers, replication 3, fsync on
   finalize, one ``AsyncClient``): a large file written and read, then small files with 16 in
   flight (``keelfs.bench.data``).
3. SeaweedFS 4.48 (3 masters, 3 volume servers, replication 002): the same work from a Python
   client (``keelfs.bench.peers.seaweedfs``), then ``weed benchmark``, its own Go client, for
   the small files and for 4 MiB files.

Each cluster runs alone (the other is stopped), and each phase records how much CPU other
processes took meanwhile. The ratio is keelfs's figure over SeaweedFS's.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keelfs.bench.common import SmallFiles, cpu_seconds

__all__ = ["CompareResult", "CpuMeter", "Row", "rows", "run"]

_HZ = os.sysconf("SC_CLK_TCK")


def _machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (``/proc/stat``: all but idle and iowait)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = v[:7]
    steal = v[7] if len(v) > 7 else 0
    return (user + nice + system + irq + softirq + steal) / _HZ


def _own_seconds(pids: Iterable[int]) -> float:
    """CPU seconds of this process, its waited-for children, and ``pids``."""
    t = os.times()
    total = t.user + t.system + t.children_user + t.children_system
    for pid in pids:
        # one that exited: its CPU is no longer in the machine's total either
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += cpu_seconds(pid)
    return total


@dataclass
class CpuMeter:
    """How many cores processes that are not ours used between :meth:`start` and
    :meth:`stop` (ours: this process, its children, the servers whose pids are given)."""

    pids: Callable[[], list[int]] = list
    _t0: float = 0.0
    _busy0: float = 0.0
    _own0: float = 0.0

    def start(self) -> CpuMeter:
        self._t0 = time.monotonic()
        self._busy0 = _machine_busy_seconds()
        self._own0 = _own_seconds(self.pids())
        return self

    def stop(self) -> float:
        elapsed = time.monotonic() - self._t0
        busy = _machine_busy_seconds() - self._busy0
        own = _own_seconds(self.pids()) - self._own0
        return round(max(0.0, busy - own) / elapsed, 2) if elapsed > 0 else math.nan


@dataclass
class Figures:
    """One system's figures (NaN where not measured)."""

    large_write_mb_s: float = math.nan
    large_read_mb_s: float = math.nan
    small_writes_s: float = math.nan
    small_reads_s: float = math.nan
    failed: int = 0
    intact: bool = True
    foreign_cpu_cores: float = math.nan
    write_cpu_us: dict[str, float] = field(default_factory=dict)
    """CPU per small write, µs, per group of processes (servers' groups, ``client``)."""
    read_cpu_us: dict[str, float] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        def r(x: float) -> float | None:
            return None if math.isnan(x) else round(x, 1)

        return {
            "large_write_mb_s": r(self.large_write_mb_s),
            "large_read_mb_s": r(self.large_read_mb_s),
            "small_writes_s": r(self.small_writes_s),
            "small_reads_s": r(self.small_reads_s),
            "failed": self.failed,
            "intact": self.intact,
            "foreign_cpu_cores": None
            if math.isnan(self.foreign_cpu_cores)
            else self.foreign_cpu_cores,
            "small_write_cpu_us": self.write_cpu_us,
            "small_read_cpu_us": self.read_cpu_us,
        }

    def take_small(self, small: SmallFiles) -> None:
        self.small_writes_s, self.small_reads_s = small.writes_s, small.reads_s
        self.failed = small.failed
        self.write_cpu_us, self.read_cpu_us = small.write_cpu_us, small.read_cpu_us


@dataclass
class CompareResult:
    large_mib: int
    chunk_mib: int
    streams: int
    small_kib: int
    small_count: int
    go_count: int
    concurrency: int
    seaweedfs_fsync: bool
    load: dict[str, Any]
    keelfs: Figures = field(default_factory=Figures)
    seaweed_py: Figures = field(default_factory=Figures)
    seaweed_go: Figures = field(default_factory=Figures)

    def as_json(self) -> dict[str, Any]:
        return {
            "bench": "compare",
            "peer": "seaweedfs",
            "peer_version": "4.48",
            "replication": 3,
            "keelfs_fsync": True,
            "seaweedfs_fsync": self.seaweedfs_fsync,
            "large_mib": self.large_mib,
            "seaweedfs_chunk_mib": self.chunk_mib,
            "seaweedfs_large_streams": self.streams,
            "small_kib": self.small_kib,
            "small_count": self.small_count,
            "go_small_count": self.go_count,
            "concurrency": self.concurrency,
            "load": self.load,
            "keelfs": self.keelfs.as_json(),
            "seaweedfs_python": self.seaweed_py.as_json(),
            "seaweedfs_go": self.seaweed_go.as_json(),
            "ratios": {
                name: {"vs_python": _ratio(k, py), "vs_go": _ratio(k, go)}
                for name, k, py, go in _workloads(self)
            },
        }


def _ratio(ours: float, theirs: float) -> float | None:
    if math.isnan(ours) or math.isnan(theirs) or theirs <= 0:
        return None
    return round(ours / theirs, 2)


def _workloads(r: CompareResult) -> list[tuple[str, float, float, float]]:
    """(name, keelfs, SeaweedFS Python, SeaweedFS Go) per workload."""
    k, py, go = r.keelfs, r.seaweed_py, r.seaweed_go
    return [
        ("large_write_mb_s", k.large_write_mb_s, py.large_write_mb_s, go.large_write_mb_s),
        ("large_read_mb_s", k.large_read_mb_s, py.large_read_mb_s, go.large_read_mb_s),
        ("small_writes_s", k.small_writes_s, py.small_writes_s, go.small_writes_s),
        ("small_reads_s", k.small_reads_s, py.small_reads_s, go.small_reads_s),
    ]


@dataclass(frozen=True)
class Row:
    workload: str
    keelfs: str
    seaweed_py: str
    seaweed_go: str
    ratio: str


def _figure(x: float, digits: int) -> str:
    return "-" if math.isnan(x) else f"{x:,.{digits}f}"


def _ratios(k: float, py: float, go: float) -> str:
    """``keelfs/Python · keelfs/Go``; ``-`` for a side that was not measured."""
    ratios = (_ratio(k, theirs) for theirs in (py, go))
    return " · ".join("-" if x is None else f"{x:.2f}" for x in ratios)


def rows(r: CompareResult) -> list[Row]:
    """The table: one row per workload, figures as text, and the ratios keelfs / SeaweedFS's
    Python client · keelfs / SeaweedFS's Go benchmark; then the failures of each."""
    labels = {
        "large_write_mb_s": f"write {r.large_mib} MiB (MB/s)",
        "large_read_mb_s": f"read {r.large_mib} MiB (MB/s)",
        "small_writes_s": f"{r.small_kib} KiB files written/s, {r.concurrency} in flight",
        "small_reads_s": f"{r.small_kib} KiB files read/s, {r.concurrency} in flight",
    }
    digits = {"large_write_mb_s": 1, "large_read_mb_s": 1, "small_writes_s": 0, "small_reads_s": 0}
    return [
        Row(
            labels[name],
            _figure(k, digits[name]),
            _figure(py, digits[name]),
            _figure(go, digits[name]),
            _ratios(k, py, go),
        )
        for name, k, py, go in _workloads(r)
    ] + [
        Row(
            f"CPU per {r.small_kib} KiB {what}, µs: servers + client",
            _cpu(getattr(r.keelfs, key)),
            _cpu(getattr(r.seaweed_py, key)),
            "-",
            _ratios(_servers_cpu(getattr(r.keelfs, key)), _servers_cpu(getattr(r.seaweed_py, key)),
                    math.nan),
        )
        for what, key in (("write", "write_cpu_us"), ("read", "read_cpu_us"))
    ] + [Row("failures (lost or wrong data)", _failures(r.keelfs), _failures(r.seaweed_py),
             _failures(r.seaweed_go), "-")]  # fmt: skip


def _servers_cpu(groups: dict[str, float]) -> float:
    return sum(v for k, v in groups.items() if k != "client") if groups else math.nan


def _cpu(groups: dict[str, float]) -> str:
    """``servers + client`` µs per operation; ``-`` where not measured."""
    if not groups:
        return "-"
    return f"{_servers_cpu(groups):,.0f} + {groups.get('client', math.nan):,.0f}"


def _failures(f: Figures) -> str:
    return str(f.failed) + ("" if f.intact else ", large file CORRUPT")


# -- the run ---------------------------------------------------------------------------------
def machine_load(sample_s: float = 2.0) -> dict[str, Any]:
    """The machine before anything starts: cores, load average, and the cores other
    processes used over ``sample_s`` seconds."""
    meter = CpuMeter().start()
    time.sleep(sample_s)
    return {
        "cpus": os.cpu_count(),
        "loadavg_1m_at_start": round(os.getloadavg()[0], 2),
        "foreign_cpu_cores_at_start": meter.stop(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }


def _measure_keelfs(root: Path, r: CompareResult, say: Callable[[str], None]) -> None:
    from keelfs.bench.data import cluster_meter, large_file, small_files, started_cluster
    from keelfs.client import AsyncClient

    say("keelfs: starting 3 masters (config group + shard-1) and 3 chunk servers")
    with started_cluster(root) as (cluster, servers):

        def pids() -> list[int]:
            return [cluster.pid(n) for n in cluster.running()] + [servers.pid(i) for i in range(3)]

        meter = CpuMeter(pids).start()

        async def main() -> None:
            async with AsyncClient(cluster.config_addresses, deadline=60.0) as fs:
                await fs.mkdir("/bench", parents=True)
                say(f"keelfs: large file, {r.large_mib} MiB")
                write, read, intact = await large_file(fs, r.large_mib)
                r.keelfs.large_write_mb_s, r.keelfs.large_read_mb_s = write, read
                r.keelfs.intact = intact
                say(f"keelfs: {r.small_count} x {r.small_kib} KiB, {r.concurrency} in flight")
                cpu = cluster_meter(cluster, servers, "shard-1")
                r.keelfs.take_small(
                    await small_files(fs, r.small_count, r.small_kib, r.concurrency, cpu)
                )

        asyncio.run(main())
        r.keelfs.foreign_cpu_cores = meter.stop()


def _measure_seaweedfs(
    weed: Path, root: Path, r: CompareResult, say: Callable[[str], None]
) -> None:
    from keelfs.bench.peers import seaweedfs as sw

    say("SeaweedFS: starting 3 masters and 3 volume servers (replication 002)")
    with sw.WeedCluster(weed, root) as cluster:
        meter = CpuMeter(cluster.pids).start()
        say(f"SeaweedFS (Python): {r.large_mib} MiB as {r.chunk_mib} MiB chunks")
        write, read, intact = asyncio.run(
            sw.large_file(
                cluster, r.large_mib, chunk_mib=r.chunk_mib, streams=r.streams,
                fsync=r.seaweedfs_fsync,
            )
        )  # fmt: skip
        r.seaweed_py.large_write_mb_s, r.seaweed_py.large_read_mb_s = write, read
        r.seaweed_py.intact = intact
        say(f"SeaweedFS (Python): {r.small_count} x {r.small_kib} KiB, {r.concurrency} in flight")
        small = asyncio.run(
            sw.small_files(
                cluster, r.small_count, r.small_kib, r.concurrency, fsync=r.seaweedfs_fsync,
                cpu=cluster.cpu_groups(),
            )
        )  # fmt: skip
        r.seaweed_py.take_small(small)
        r.seaweed_py.foreign_cpu_cores = meter.stop()

        meter = CpuMeter(cluster.pids).start()
        say(f"SeaweedFS (Go): weed benchmark, {r.go_count} x {r.small_kib} KiB, 16 clients")
        w, rd = sw.weed_benchmark(
            cluster, collection="gosmall", size=r.small_kib << 10, count=r.go_count,
            concurrency=r.concurrency, fsync=r.seaweedfs_fsync,
        )  # fmt: skip
        r.seaweed_go.small_writes_s, r.seaweed_go.small_reads_s = (
            w.requests_per_second,
            rd.requests_per_second,
        )
        failed = w.failed + rd.failed
        chunks = max(1, r.large_mib // r.chunk_mib)
        say(f"SeaweedFS (Go): weed benchmark, {chunks} x {r.chunk_mib} MiB, {r.streams} clients")
        w, rd = sw.weed_benchmark(
            cluster, collection="golarge", size=r.chunk_mib << 20, count=chunks,
            concurrency=r.streams, fsync=r.seaweedfs_fsync,
        )  # fmt: skip
        r.seaweed_go.large_write_mb_s, r.seaweed_go.large_read_mb_s = (
            w.mb_per_second,
            rd.mb_per_second,
        )
        r.seaweed_go.failed = failed + w.failed + rd.failed
        r.seaweed_go.foreign_cpu_cores = meter.stop()


def run(
    *,
    weed: Path | None = None,
    large_mib: int = 256,
    chunk_mib: int = 4,
    streams: int = 4,
    small_count: int = 2000,
    small_kib: int = 4,
    go_count: int = 10_000,
    concurrency: int = 16,
    seaweedfs_fsync: bool = False,
    tmpdir: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> CompareResult:
    """Measure both systems, one after the other, in this run (see the module docstring)."""
    from keelfs.bench.peers import seaweedfs as sw

    def say(msg: str) -> None:
        if progress is not None:
            progress(msg)

    weed = weed or sw.install(say=say)
    say("machine load: sampling other processes' CPU for 2 s")
    result = CompareResult(
        large_mib=large_mib,
        chunk_mib=chunk_mib,
        streams=streams,
        small_kib=small_kib,
        small_count=small_count,
        go_count=go_count,
        concurrency=concurrency,
        seaweedfs_fsync=seaweedfs_fsync,
        load=machine_load(),
    )
    with tempfile.TemporaryDirectory(prefix="keelfs-bench-compare-", dir=tmpdir) as tmp:
        _measure_keelfs(Path(tmp) / "keelfs", result, say)
        _measure_seaweedfs(weed, Path(tmp) / "seaweedfs", result, say)
    return result
