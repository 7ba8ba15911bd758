"""``keelfs bench txn``: renames within a shard and across shards (2PC), fsync on.

One :class:`~keelfs.server.metacluster.MetaCluster` in the ``separate`` layout with two shards (3
config servers, 3 masters per shard, one role per process, every Raft write synced) on
127.0.0.1, driven over gRPC by ``clients`` worker processes (``python -m keelfs.bench.txn
--worker JSON``, the pattern of ``keelfs bench meta``: commands on stdin, a ``READY`` after the
warm-up, a common start time, one JSON line of results), each an
:class:`~keelfs.client.AsyncClient` with its share of ``concurrency`` renames in flight. The
phases:

1. **same-shard renames**: two directories ``a`` and ``b`` whose children live on the same
   shard; every in-flight slot owns one file (created and completed beforehand in ``a``) and
   renames it ``a -> b -> a ...`` for ``seconds``, after a warm-up of one round trip per slot.
   A rename is one Raft command on that shard's leader (the other shard stays idle).
2. **cross-shard renames**: the same with ``a`` and ``b`` whose children live on different
   shards: every rename is a two-phase-commit transaction (``keelfs.master.transactions``),
   coordinated by the source's shard, so the load alternates between both leaders.

   For both: renames per second, latency (p50, p99, max), failures, files not found where
   their worker put them after the run, and the CPU use of every process (% of one core:
   shard leaders and followers, config servers, client workers).
3. **cross-shard directory moves**: this process builds a directory with ``tree_files``
   files in :data:`TREE_DIRS` subdirectories chosen so that, under both of its names, the
   subtree spans both shards, and renames it back and forth ``tree_moves`` times (one
   transaction over every record of the subtree each time): moves per second, entries
   (directories and files) moved per second, latency (p50, p99, max); then the tree is listed
   to check that nothing was lost.

4. **online resharding** (``keelfs.bench.reshard``): ``reshard_files`` files in
   ``reshard_dirs`` directories, then a third shard added while a probe keeps creating files:
   records moved per second and the longest a create waited on a moving directory.

Not measured: how long one file is unavailable during a cross-shard rename.

Every process is killed by pid when the run ends, whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from keelfs.bench.common import Summary, machine
from keelfs.bench.meta import Throughput, _cluster, _CpuMeter, _leaders, _server_roles, _Workers
from keelfs.bench.reshard import ReshardResult, add_shard_under_load
from keelfs.client import AsyncClient, Client
from keelfs.errors import KeelError
from keelfs.meta import paths
from keelfs.meta.shardmap import ShardMap
from keelfs.server.metacluster import MetaCluster

__all__ = ["ReshardResult", "TreeResult", "TxnBenchResult", "run"]

SHARDS = ("shard-1", "shard-2")
TREE_DIRS = 4
"""Subdirectories of the moved tree (its files are spread over them)."""
_START_DELAY = 0.2  # seconds between the last READY and the common start

Progress = Callable[[str], None]


# ---------------------------------------------------------------------------------------------
# results


@dataclass
class TreeResult:
    files: int
    directories: int
    """Directories of the tree, its top included."""
    moves: int
    failed: int
    seconds: float
    latency_ms: Summary
    shards: dict[str, list[str]]
    """Name of the tree -> the shards its directories' children live on."""
    listed_files: int
    """Files found in the tree after the last move."""

    @property
    def entries(self) -> int:
        return self.files + self.directories

    @property
    def moves_per_second(self) -> float:
        return self.moves / self.seconds if self.seconds > 0 else 0.0

    @property
    def entries_per_second(self) -> float:
        return self.moves * self.entries / self.seconds if self.seconds > 0 else 0.0

    def as_json(self) -> dict[str, Any]:
        lat = self.latency_ms.as_dict(digits=3)
        return {
            "files": self.files,
            "directories": self.directories,
            "entries": self.entries,
            "moves": self.moves,
            "failed": self.failed,
            "seconds": round(self.seconds, 3),
            "moves_per_second": round(self.moves_per_second, 2),
            "entries_per_second": round(self.entries_per_second, 1),
            "p50_ms": lat["p50"],
            "p99_ms": lat["p99"],
            "max_ms": lat["max"],
            "shards": self.shards,
            "listed_files": self.listed_files,
        }


@dataclass
class TxnBenchResult:
    clients: int
    concurrency: int
    seconds: float
    same_shard: Throughput
    cross_shard: Throughput
    tree: TreeResult
    reshard: ReshardResult | None
    machine: dict[str, object]

    def as_json(self) -> dict[str, Any]:
        same, cross = self.same_shard, self.cross_shard
        ratio = (
            round(cross.ops_per_second / same.ops_per_second, 3)
            if same.ops_per_second > 0
            else None
        )
        return {
            "bench": "txn",
            "fsync": True,
            "layout": "separate",
            "shards": len(SHARDS),
            "clients": self.clients,
            "concurrency": self.concurrency,
            "seconds": self.seconds,
            "same_shard": same.as_json(),
            "cross_shard": cross.as_json(),
            "cross_over_same_throughput": ratio,
            "tree_move": self.tree.as_json(),
            "resharding": None if self.reshard is None else self.reshard.as_json(),
            "machine": self.machine,
        }


# ---------------------------------------------------------------------------------------------
# worker processes (parent side)


class _RenameWorkers(_Workers):
    """The client processes of ``keelfs bench meta`` (same plumbing), running this module's
    worker: each owns one file per rename slot and moves it between two directories."""

    def __init__(self, addresses: list[str], n: int, concurrency: int) -> None:
        super().__init__(addresses, n, concurrency, module="keelfs.bench.txn")

    def renames(
        self, name: str, tag: str, a: str, b: str, seconds: float, meter_pids: dict[str, int]
    ) -> Throughput:
        """Every worker creates its files in ``a`` and warms up, then all rename them between
        ``a`` and ``b`` from a common start for ``seconds``."""
        for k in range(self.n):
            self._send(k, {"cmd": "renames", "tag": tag, "dirs": [a, b], "seconds": seconds})
        for k in range(self.n):
            line = self._next(k, 120.0)
            if line != "READY":
                raise RuntimeError(f"client worker {k} did not warm up: {line!r}")
        start_at = time.monotonic() + _START_DELAY
        for k in range(self.n):
            self._send(k, start_at)
        meter = _CpuMeter(meter_pids | self.pids())
        time.sleep(max(0.0, start_at - time.monotonic()))
        meter.start()
        results = [self._result(k, seconds + 120.0) for k in range(self.n)]
        cpu = meter.stop()
        lat = [x for r in results for x in r["latencies_ms"]]
        return Throughput(
            op=name,
            ops=sum(r["ops"] for r in results),
            failed=sum(r["failed"] for r in results),
            seconds=max(r["end"] for r in results) - min(r["start"] for r in results),
            clients=self.n,
            concurrency=self.concurrency,
            latency_ms=Summary.of(lat),
            cpu_percent=cpu,
            extra={
                "warmup_ops": sum(r["warmup_ops"] for r in results),
                "files": sum(r["files"] for r in results),
                "misplaced": sum(r["misplaced"] for r in results),
            },
        )


def _txn_cluster(tmpdir: str | None) -> contextlib.AbstractContextManager[MetaCluster]:
    return _cluster(SHARDS, tmpdir, prefix="keelfs-bench-txn-")


@contextlib.contextmanager
def _workers(addresses: list[str], n: int, concurrency: int) -> Iterator[_RenameWorkers]:
    w = _RenameWorkers(addresses, n, concurrency)
    try:
        yield w
    finally:
        w.close()


# ---------------------------------------------------------------------------------------------
# placement


def _named(m: ShardMap, parent: str, prefix: str, accept: Callable[[str], bool]) -> str:
    """The first ``parent/<prefix><n>`` that ``accept`` takes."""
    for i in range(10_000):
        p = paths.join(parent, f"{prefix}{i}")
        if accept(p):
            return p
    raise RuntimeError(f"no name {parent}/{prefix}<n> fits")


def _pair(m: ShardMap, parent: str, *, same_shard: bool) -> tuple[str, str]:
    """Two directories under ``parent`` whose children live on the same shard or not."""
    a = _named(m, parent, "a", lambda p: True)
    sa = m.shard_for_directory(a)
    b = _named(m, parent, "b", lambda p: (m.shard_for_directory(p) == sa) == same_shard)
    return a, b


def _tree_layout(m: ShardMap, parent: str) -> tuple[str, str, list[str]]:
    """Two names of the tree and the names of its subdirectories, such that under each of the
    two names the subdirectories' children live on both shards."""
    src, dst = paths.join(parent, "t0"), paths.join(parent, "t1")
    shards = set(m.shards)
    for i in range(10_000):
        names = [f"s{i + j}" for j in range(TREE_DIRS)]
        if all(
            {m.shard_for_directory(paths.join(top, s)) for s in names} == shards
            for top in (src, dst)
        ):
            return src, dst, names
    raise RuntimeError("no subdirectory names span both shards")


# ---------------------------------------------------------------------------------------------
# phases


def _timed_renames(
    w: _RenameWorkers,
    cluster: MetaCluster,
    name: str,
    tag: str,
    pair: tuple[str, str],
    seconds: float,
    m: ShardMap,
) -> Throughput:
    leaders = _leaders(cluster)
    a, b = pair
    t = w.renames(name, tag, a, b, seconds, _server_roles(cluster, leaders))
    t.extra["leader_changed"] = _leaders(cluster) != leaders
    t.extra["dirs"] = {a: m.shard_for_directory(a), b: m.shard_for_directory(b)}
    return t


def _tree_moves(fs: Client, m: ShardMap, parent: str, files: int, moves: int) -> TreeResult:
    src, dst, subdirs = _tree_layout(m, parent)
    fs.mkdir(parent, parents=True)
    fs.mkdir(src)
    for s in subdirs:
        fs.mkdir(paths.join(src, s))
    for i in range(files):
        p = paths.join(paths.join(src, subdirs[i % len(subdirs)]), f"f{i:05d}")
        fs.create(p)
        fs.complete(p)
    here, there = src, dst
    lat: list[float] = []
    failed = 0
    t0 = time.perf_counter()
    for _ in range(moves):
        t = time.perf_counter()
        try:
            fs.rename(here, there)
        except KeelError:
            failed += 1
            if not fs.exists(there):
                continue
        else:
            lat.append((time.perf_counter() - t) * 1000)
        here, there = there, here
    seconds = time.perf_counter() - t0
    listed = sum(
        1 for s in subdirs for e in fs.ls(paths.join(here, s), deadline=60.0) if not e.is_dir
    )
    return TreeResult(
        files=files,
        directories=1 + len(subdirs),
        moves=len(lat),
        failed=failed,
        seconds=seconds,
        latency_ms=Summary.of(lat),
        shards={
            top: sorted(
                {m.shard_for_directory(top)}
                | {m.shard_for_directory(paths.join(top, s)) for s in subdirs}
            )
            for top in (src, dst)
        },
        listed_files=listed,
    )


def run(
    *,
    seconds: float = 10.0,
    clients: int = 2,
    concurrency: int = 16,
    tree_files: int = 50,
    tree_moves: int = 10,
    reshard_files: int = 5000,
    reshard_dirs: int = 100,
    tmpdir: str | None = None,
    progress: Progress | None = None,
) -> TxnBenchResult:
    """See the module docstring."""

    def say(msg: str) -> None:
        if progress is not None:
            progress(msg)

    info = machine()
    say("starting 3 config servers + 2 shards x 3 masters")
    with _txn_cluster(tmpdir) as cluster:
        admin = cluster.client(deadline=60.0)
        m = admin.shard_map()
        same_pair = _pair(m, "/bench/same", same_shard=True)
        cross_pair = _pair(m, "/bench/cross", same_shard=False)
        for d in (*same_pair, *cross_pair):
            admin.mkdir(d, parents=True, deadline=60.0)
        with _workers(cluster.config_addresses, clients, concurrency) as w:
            say(f"same-shard renames: {w.n} clients, {concurrency} in flight, {seconds:g} s")
            same = _timed_renames(w, cluster, "rename, same shard", "s", same_pair, seconds, m)
            say(f"same-shard renames: {same.ops_per_second:,.0f}/s")
            say(f"cross-shard renames: {w.n} clients, {concurrency} in flight, {seconds:g} s")
            cross = _timed_renames(w, cluster, "rename, cross shard", "x", cross_pair, seconds, m)
            say(f"cross-shard renames: {cross.ops_per_second:,.0f}/s")
        say(f"tree moves: {tree_files} files in {TREE_DIRS} subdirectories, {tree_moves} moves")
        tree = _tree_moves(admin, m, "/bench/tree", tree_files, tree_moves)
        say(f"tree moves: {tree.moves_per_second:,.1f}/s, {tree.entries_per_second:,.0f} entries/s")
        reshard = None
        if reshard_files:
            say(f"resharding: {reshard_files} files in {reshard_dirs} directories, add shard-3")
            reshard = add_shard_under_load(cluster, reshard_files, reshard_dirs)
            say(
                f"resharding: {reshard.records_moved} records in {reshard.seconds:.1f} s, "
                f"longest create {reshard.probe_ms.max:.0f} ms"
            )
    return TxnBenchResult(
        clients=same.clients,
        concurrency=concurrency,
        seconds=seconds,
        same_shard=same,
        cross_shard=cross,
        tree=tree,
        reshard=reshard,
        machine=info,
    )


# ---------------------------------------------------------------------------------------------
# worker processes (child side)


async def _renames(fs: AsyncClient, index: int, concurrency: int, cmd: dict[str, Any]) -> Any:
    a, b = cmd["dirs"]
    dirs = (str(a), str(b))
    names = [f"w{index}{cmd['tag']}{i:04d}" for i in range(concurrency)]
    where = [0] * concurrency  # the file of slot i is in dirs[where[i]]

    async def make(i: int) -> None:
        path = paths.join(dirs[0], names[i])
        await fs.create(path)
        await fs.complete(path)

    async def move(i: int) -> None:
        src = paths.join(dirs[where[i]], names[i])
        dst = paths.join(dirs[1 - where[i]], names[i])
        try:
            await fs.rename(src, dst)
        except KeelError:
            with contextlib.suppress(KeelError):  # where is it now?
                if await fs.exists(dst):
                    where[i] = 1 - where[i]
            raise
        where[i] = 1 - where[i]

    async def warm(i: int) -> None:
        await make(i)
        await move(i)
        await move(i)

    await asyncio.gather(*(warm(i) for i in range(concurrency)))
    print("READY", flush=True)
    start_at = float(await asyncio.to_thread(sys.stdin.readline))
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    stop_at = start_at + float(cmd["seconds"])
    lat: list[float] = []
    failed = 0

    async def loop(i: int) -> None:
        nonlocal failed
        while time.monotonic() < stop_at:
            t = time.perf_counter()
            try:
                await move(i)
            except KeelError:
                failed += 1
            else:
                lat.append(round((time.perf_counter() - t) * 1000, 3))

    t0, c0 = time.monotonic(), time.process_time()
    await asyncio.gather(*(loop(i) for i in range(concurrency)))
    t1, c1 = time.monotonic(), time.process_time()

    async def misplaced(i: int) -> bool:
        return not await fs.exists(paths.join(dirs[where[i]], names[i]))

    lost = await asyncio.gather(*(misplaced(i) for i in range(concurrency)))
    return {
        "ops": len(lat),
        "failed": failed,
        "warmup_ops": 2 * concurrency,
        "files": concurrency,
        "misplaced": sum(lost),
        "start": t0,
        "end": t1,
        "cpu": c1 - c0,
        "latencies_ms": lat,
    }


async def _worker(spec: dict[str, Any]) -> None:
    concurrency = int(spec["concurrency"])
    index = int(spec["index"])
    async with AsyncClient(
        spec["addresses"], deadline=60.0, attempt_timeout=10.0, max_sessions=concurrency
    ) as fs:
        while True:
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line:
                return
            cmd = json.loads(line)
            if cmd["cmd"] == "exit":
                return
            if cmd["cmd"] != "renames":
                raise ValueError(f"unknown command {cmd['cmd']!r}")
            out = await _renames(fs, index, concurrency, cmd)
            print(json.dumps(out), flush=True)


def _worker_main(spec_json: str) -> int:
    """A client process of ``run``: commands on stdin, one JSON result line each on stdout."""
    asyncio.run(_worker(json.loads(spec_json)))
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="client process of keelfs bench txn (internal)")
    ap.add_argument("--worker", required=True, help="JSON spec")
    sys.exit(_worker_main(ap.parse_args().worker))
