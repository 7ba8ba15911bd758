"""The resharding phase of ``keelfs bench txn``: a shard added to a running cluster under load.

On the bench's cluster (3 config servers, 2 shards x 3 masters, fsync on), this fills
``dirs`` directories with ``files`` files in all, starts three more masters forming a third
shard, and adds it (``AddShard``: the config group's leader moves every hash range the new
ring gives it, ``keelfs.master.resharding``). Meanwhile a probe thread creates a file in each
directory in turn and times every create: the longest create is the longest a client waited on
a moving directory (writes wait from a move's freeze until both shards settled it).
Reported: records moved, seconds from AddShard to the final map, records moved per second, the
longest freeze the driver saw, the probe's longest and median create, and whether every file
is still there (listing every directory through the final map).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass
from typing import Any

from keelfs.bench.common import Summary
from keelfs.client import AsyncClient
from keelfs.errors import KeelError
from keelfs.server.metacluster import MetaCluster

__all__ = ["ReshardResult", "add_shard_under_load"]

_FILL_IN_FLIGHT = 64


@dataclass
class ReshardResult:
    files: int
    dirs: int
    seconds: float
    records_moved: int
    moves: int
    longest_freeze_s: float
    probe_ms: Summary
    probe_failed: int
    files_after: int
    map_versions: int

    @property
    def records_per_second(self) -> float:
        return self.records_moved / self.seconds if self.seconds > 0 else 0.0

    def as_json(self) -> dict[str, Any]:
        probe = self.probe_ms.as_dict(digits=1)
        return {
            "files": self.files,
            "dirs": self.dirs,
            "seconds": round(self.seconds, 3),
            "records_moved": self.records_moved,
            "records_per_second": round(self.records_per_second, 1),
            "moves": self.moves,
            "map_versions": self.map_versions,
            "longest_freeze_ms": round(self.longest_freeze_s * 1000, 1),
            "probe_creates": probe["n"],
            "probe_p50_ms": probe["p50"],
            "probe_max_ms": probe["max"],
            "probe_failed": self.probe_failed,
            "files_after": self.files_after,
        }


async def _fill(addresses: list[str], dirs: list[str], files: int) -> None:
    async with AsyncClient(addresses, deadline=60.0) as fs:
        for d in dirs:
            await fs.mkdir(d, parents=True)
        todo = [f"{dirs[i % len(dirs)]}/f{i}" for i in range(files)]
        sem = asyncio.Semaphore(_FILL_IN_FLIGHT)

        async def one(path: str) -> None:
            async with sem:
                await fs.create(path)
                await fs.complete(path)

        await asyncio.gather(*(one(p) for p in todo))


class _Probe(threading.Thread):
    def __init__(self, cluster: MetaCluster, dirs: list[str]) -> None:
        super().__init__(daemon=True)
        self.fs = cluster.client(deadline=60.0)
        self.dirs = dirs
        self.latencies_ms: list[float] = []
        self.failed = 0
        self.created = 0
        self._halt = threading.Event()

    def run(self) -> None:
        n = 0
        while not self._halt.is_set():
            path = f"{self.dirs[n % len(self.dirs)]}/probe{n}"
            n += 1
            t0 = time.perf_counter()
            try:
                self.fs.create(path)
            except KeelError:
                self.failed += 1
                continue
            self.latencies_ms.append((time.perf_counter() - t0) * 1000)
            self.created += 1
            with contextlib.suppress(KeelError):  # its directory moved in between: the file
                self.fs.complete(path)  # stays, unclosed (its lease did not move)

    def stop(self) -> None:
        self._halt.set()
        self.join(60)


def add_shard_under_load(cluster: MetaCluster, files: int, dirs: int) -> ReshardResult:
    admin = cluster.client(deadline=60.0)
    names = [f"/bench/reshard/d{i}" for i in range(dirs)]
    asyncio.run(_fill(cluster.config_addresses, names, files))
    new = cluster.start_shard("shard-3")
    before = admin.shard_map().version
    probe = _Probe(cluster, names)
    probe.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    admin.add_shard("shard-3", new)
    final = cluster.wait_resharded(timeout=600)
    seconds = time.monotonic() - t0
    time.sleep(0.5)
    probe.stop()
    statuses = [cluster.status(i).resharding for i in cluster.members("config")]
    listed = 0
    for d in names:
        listed += sum(1 for e in admin.ls(d) if e.name.startswith("f"))
    return ReshardResult(
        files=files,
        dirs=dirs,
        seconds=seconds,
        records_moved=sum(s.records_moved for s in statuses),
        moves=sum(s.moves_done for s in statuses),
        longest_freeze_s=max(s.longest_freeze_s for s in statuses),
        probe_ms=Summary.of(probe.latencies_ms),
        probe_failed=probe.failed,
        files_after=listed,
        map_versions=final - before,
    )
