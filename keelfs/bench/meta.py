"""``keelfs bench meta``: the metadata service with real processes, fsync on.

A :class:`~keelfs.server.metacluster.MetaCluster` in the ``separate`` layout (3 config servers, 3
masters per shard, one role per process, every Raft write synced) on 127.0.0.1, driven over
gRPC by ``clients`` worker processes (``python -m keelfs.bench.meta --worker JSON``), each an
:class:`~keelfs.client.AsyncClient` with its share of ``concurrency`` operations in flight (and
as many client sessions). Workers live for the whole cluster and take commands on stdin (one
JSON line each); a timed command makes them warm up, print ``READY`` and wait for a common start
time on stdin, so that every worker starts together; each command ends with one JSON line of
results. The phases, one shard first:

1. **creates**: each worker creates files in its own 8 directories (``/bench/w<k>/d<j>``,
   made beforehand), after a warm-up of ``max(50, its concurrency)`` creates that opens its
   sessions, for ``seconds``: files created per second, latency (p50, p99), failures, and the
   CPU use of every process (``/proc/<pid>/stat``, % of one core: shard leader and followers,
   config servers, client workers).
2. **stats**: the workers ``stat`` random files they created, linearizable (read barrier on the
   leader) for ``seconds``; then again with ``stale_ok``: no read barrier, and any member may
   answer, but the client still sends it to the leader it knows, so this is the leader's read
   path without the barrier rather than reads spread over the followers.
3. **list**: the workers fill ``/bench/list`` with ``list_entries`` files, then this process
   lists it whole (every page, ``list_page`` entries a page) three times with a
   :class:`~keelfs.client.Client`: best and median time, entries per second.
4. **fill + memory**: the workers create files (``/bench/fill/dNN/``) until the shard holds
   ``fill`` files (those of the earlier phases included), and the resident set size
   (``VmRSS``) of each master is read before and after: bytes per file is the growth divided
   by the files added. It includes everything a master grows by while it fills (RocksDB
   memtables and block cache, the Raft log kept in memory, gRPC buffers), so small fills
   overstate it. Filling takes ``fill`` / creates per second: on 2 cores at about 1,100
   creates/s, 100,000 files (the default) take a minute and a half, the targeted 1,000,000 a
   quarter of an hour or more. When the earlier phases already made ``fill`` files there is
   no fill (``fill_skipped`` says why).
5. **restart**: all three masters of the shard are killed (SIGKILL) and started again at once
   (each from its data directory); from just before the first start, the time until every
   one printed ``READY`` and until a linearizable ``stat`` of a known file succeeded (polled
   from this process). Then 100 random files of the fill are checked to exist.
6. **two shards**: a fresh cluster with two shards (3 config servers, 6 masters) and the
   creates phase again, the workers' 32 directories spread over both shards by the ring.

Every process is killed by pid when the run ends, whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import queue
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keelfs.bench.common import Summary, cpu_seconds, machine
from keelfs.client import AsyncClient, Client
from keelfs.errors import AlreadyExists, KeelError
from keelfs.server.layout import ADMIN_USER
from keelfs.server.metacluster import MetaCluster
from keelfs.tls.credentials import TlsSettings

__all__ = ["MetaBenchResult", "run"]

TARGET_CREATES = 6_000
TARGET_STATS = 10_000
TARGET_BYTES_PER_FILE = 200
TARGET_RESTART_S = 5.0

DIRS_PER_WORKER = 8
FILL_DIRS = 64
_START_DELAY = 0.2  # seconds between the last READY and the common start

Progress = Callable[[str], None]


# ---------------------------------------------------------------------------------------------
# results


@dataclass
class Throughput:
    op: str
    ops: int
    failed: int
    seconds: float
    clients: int
    concurrency: int
    latency_ms: Summary
    cpu_percent: dict[str, float] = field(default_factory=dict)
    """CPU use during the run, % of one core, per process (``leader-<id>``,
    ``follower-<id>``, ``config-<id>``, ``client-<k>``)."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ops_per_second(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else 0.0

    def as_json(self) -> dict[str, Any]:
        lat = self.latency_ms.as_dict(digits=3)
        return {
            "op": self.op,
            "ops": self.ops,
            "failed": self.failed,
            "seconds": round(self.seconds, 3),
            "ops_per_second": round(self.ops_per_second, 1),
            "clients": self.clients,
            "concurrency": self.concurrency,
            "p50_ms": lat["p50"],
            "p99_ms": lat["p99"],
            "max_ms": lat["max"],
            "cpu_percent": self.cpu_percent,
            **self.extra,
        }


@dataclass
class ListResult:
    entries: int
    listed: int
    page_size: int
    runs_s: list[float]

    @property
    def best_s(self) -> float:
        return min(self.runs_s)

    @property
    def median_s(self) -> float:
        return statistics.median(self.runs_s)

    @property
    def entries_per_second(self) -> float:
        return self.listed / self.best_s if self.best_s > 0 else 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "entries": self.entries,
            "listed": self.listed,
            "page_size": self.page_size,
            "runs_s": [round(s, 4) for s in self.runs_s],
            "best_s": round(self.best_s, 4),
            "median_s": round(self.median_s, 4),
            "entries_per_second": round(self.entries_per_second),
        }


@dataclass
class FillResult:
    files_before: int
    files_after: int
    created: int
    failed: int
    seconds: float
    rss_before: dict[int, int]
    """Master node id -> VmRSS in bytes before the fill."""
    rss_after: dict[int, int]
    roles: dict[int, str]
    """Master node id -> ``leader`` or ``follower`` (when the fill began)."""
    leader_changed: bool = False

    @property
    def files_added(self) -> int:
        return self.files_after - self.files_before

    def bytes_per_file(self) -> dict[int, float | None]:
        n = self.files_added
        return {
            i: (self.rss_after[i] - self.rss_before[i]) / n if n > 0 else None
            for i in self.rss_before
            if i in self.rss_after
        }

    @property
    def max_bytes_per_file(self) -> float | None:
        values = [v for v in self.bytes_per_file().values() if v is not None]
        return max(values) if values else None

    @property
    def creates_per_second(self) -> float:
        return self.created / self.seconds if self.seconds > 0 else 0.0

    def as_json(self) -> dict[str, Any]:
        per_file = self.bytes_per_file()
        return {
            "files_before": self.files_before,
            "files_after": self.files_after,
            "files_added": self.files_added,
            "failed": self.failed,
            "seconds": round(self.seconds, 3),
            "creates_per_second": round(self.creates_per_second, 1),
            "masters": {
                str(i): {
                    "role": self.roles.get(i, "?"),
                    "rss_before_bytes": self.rss_before[i],
                    "rss_after_bytes": self.rss_after.get(i),
                    "bytes_per_file": _round(per_file.get(i)),
                }
                for i in sorted(self.rss_before)
            },
            "max_bytes_per_file": _round(self.max_bytes_per_file),
            "leader_changed": self.leader_changed,
            "target_bytes_per_file": TARGET_BYTES_PER_FILE,
        }


def _round(x: float | None) -> int | None:
    return None if x is None else round(x)


@dataclass
class RestartResult:
    files: int
    ready_s: dict[int, float]
    """Master node id -> seconds from before the first start until it printed READY."""
    first_stat_s: float
    sampled: int
    verified: int

    @property
    def all_ready_s(self) -> float:
        return max(self.ready_s.values())

    def as_json(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "all_ready_s": round(self.all_ready_s, 3),
            "first_stat_s": round(self.first_stat_s, 3),
            "ready_s": {str(i): round(s, 3) for i, s in sorted(self.ready_s.items())},
            "sampled": self.sampled,
            "verified": self.verified,
            "target_s": TARGET_RESTART_S,
        }


@dataclass
class MetaBenchResult:
    clients: int
    concurrency: int
    seconds: float
    creates: Throughput
    stats: Throughput
    stats_stale: Throughput
    listing: ListResult
    fill: FillResult | None
    fill_skipped: str
    """Why there was no fill ("" if there was one)."""
    restart: RestartResult
    two_shards: Throughput | None
    machine: dict[str, object]

    def as_json(self) -> dict[str, Any]:
        creates = self.creates.as_json() | {"target_ops_per_second": TARGET_CREATES}
        stats = self.stats.as_json() | {"target_ops_per_second": TARGET_STATS}
        return {
            "bench": "meta",
            "fsync": True,
            "layout": "separate",
            "clients": self.clients,
            "concurrency": self.concurrency,
            "seconds": self.seconds,
            "creates": creates,
            "stats": stats,
            "stats_stale": self.stats_stale.as_json(),
            "list": self.listing.as_json(),
            "fill": None if self.fill is None else self.fill.as_json(),
            "fill_skipped": self.fill_skipped or None,
            "restart": self.restart.as_json(),
            "two_shards": None if self.two_shards is None else self.two_shards.as_json(),
            "machine": self.machine,
        }


# ---------------------------------------------------------------------------------------------
# measuring processes


def rss_bytes(pid: int) -> int:
    """Resident set size of one process (``VmRSS`` of ``/proc/<pid>/status``)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS for pid {pid}")


class _CpuMeter:
    """CPU seconds of a set of processes between ``start()`` and ``stop()``, as % of a core."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._t0 = 0.0
        self._c0: dict[str, float] = {}

    def start(self) -> None:
        self._c0 = {}
        for k, p in self.pids.items():
            with contextlib.suppress(OSError, ValueError):
                self._c0[k] = cpu_seconds(p)
        self._t0 = time.monotonic()

    def stop(self) -> dict[str, float]:
        wall = max(1e-9, time.monotonic() - self._t0)
        out: dict[str, float] = {}
        for k, p in self.pids.items():
            with contextlib.suppress(OSError, ValueError, KeyError):
                out[k] = round(100 * (cpu_seconds(p) - self._c0[k]) / wall, 1)
        return out


def _leaders(cluster: MetaCluster) -> dict[str, int]:
    return {shard: cluster.leader(shard) for shard in cluster.shard_ids}


def _server_roles(cluster: MetaCluster, leaders: dict[str, int]) -> dict[str, int]:
    """Process label -> pid for every server of ``cluster``, given each shard's leader."""
    roles: dict[str, int] = {}
    for shard, lead in leaders.items():
        roles[f"leader-{lead}"] = cluster.pid(lead)
        for i in cluster.members(shard):
            if i != lead:
                roles[f"follower-{i}"] = cluster.pid(i)
    for i in cluster.members("config"):
        roles[f"config-{i}"] = cluster.pid(i)
    return roles


# ---------------------------------------------------------------------------------------------
# worker processes (parent side)


class _Workers:
    """``n`` client processes sharing ``concurrency`` operations in flight, for one cluster
    (``python -m <module> --worker SPEC``: this module's worker, or another benchmark's)."""

    def __init__(
        self,
        addresses: list[str],
        n: int,
        concurrency: int,
        module: str = "keelfs.bench.meta",
        tls_dir: Path | None = None,
    ) -> None:
        self.n = max(1, min(n, concurrency))
        self.concurrency = concurrency
        self.procs: list[subprocess.Popen[bytes]] = []
        self._lines: list[queue.Queue[str | None]] = []
        self.progress: list[int] = []
        env = dict(os.environ)
        env["PYTHONPATH"] = (
            str(Path(__file__).resolve().parents[2]) + os.pathsep + env.get("PYTHONPATH", "")
        )
        env["PYTHONUNBUFFERED"] = "1"
        try:
            for k in range(self.n):
                share = concurrency // self.n + (k < concurrency % self.n)
                spec = {
                    "addresses": addresses,
                    "index": k,
                    "concurrency": share,
                    "tls_dir": str(tls_dir or ""),
                }
                proc = subprocess.Popen(
                    [sys.executable, "-m", module, "--worker", json.dumps(spec)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    env=env,
                    start_new_session=True,
                )
                self.procs.append(proc)
                lines: queue.Queue[str | None] = queue.Queue()
                self._lines.append(lines)
                self.progress.append(0)
                threading.Thread(target=self._reader, args=(k, proc, lines), daemon=True).start()
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _reader(k: int, proc: subprocess.Popen[bytes], lines: queue.Queue[str | None]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            lines.put(raw.decode(errors="replace").strip())
        lines.put(None)

    def pids(self) -> dict[str, int]:
        return {f"client-{k}": p.pid for k, p in enumerate(self.procs)}

    def dirs(self, k: int) -> list[str]:
        return [f"/bench/w{k}/d{j}" for j in range(DIRS_PER_WORKER)]

    def all_dirs(self) -> list[str]:
        return [d for k in range(self.n) for d in self.dirs(k)]

    def _send(self, k: int, obj: Any) -> None:
        stdin = self.procs[k].stdin
        assert stdin is not None
        stdin.write((json.dumps(obj) + "\n").encode())
        stdin.flush()

    def _next(self, k: int, timeout: float) -> str:
        """The worker's next line that is not a progress report."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines[k].get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"client worker {k} silent for {timeout:.0f} s") from None
            if line is None:
                rc = self.procs[k].wait()
                raise RuntimeError(f"client worker {k} exited with {rc}")
            if line.startswith("PROGRESS "):
                self.progress[k] = int(line.split()[1])
                continue
            if line:
                return line

    def _poll(self, k: int) -> dict[str, Any] | None:
        """The worker's result if it has sent it (progress reports are taken in passing)."""
        while True:
            try:
                line = self._lines[k].get_nowait()
            except queue.Empty:
                return None
            if line is None:
                rc = self.procs[k].wait()
                raise RuntimeError(f"client worker {k} exited with {rc}")
            if line.startswith("PROGRESS "):
                self.progress[k] = int(line.split()[1])
            elif line:
                out: dict[str, Any] = json.loads(line)
                return out

    def _result(self, k: int, timeout: float) -> dict[str, Any]:
        line = self._next(k, timeout)
        try:
            out: dict[str, Any] = json.loads(line)
        except json.JSONDecodeError:
            raise RuntimeError(f"client worker {k} said {line!r}") from None
        return out

    def timed(
        self, op: str, seconds: float, meter_pids: dict[str, int], *, stale_ok: bool = False
    ) -> Throughput:
        """Every worker warms up, then all run ``op`` from a common start for ``seconds``."""
        for k in range(self.n):
            cmd = {"cmd": "timed", "op": op, "seconds": seconds, "stale_ok": stale_ok}
            self._send(k, cmd | {"dirs": self.dirs(k)})
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
            op=op + (" (stale ok)" if stale_ok else ""),
            ops=sum(r["ops"] for r in results),
            failed=sum(r["failed"] for r in results),
            seconds=max(r["end"] for r in results) - min(r["start"] for r in results),
            clients=self.n,
            concurrency=self.concurrency,
            latency_ms=Summary.of(lat),
            cpu_percent=cpu,
            extra={"warmup_ops": sum(r["warmup_ops"] for r in results)},
        )

    def fill(
        self,
        prefix: str,
        start: int,
        stop: int,
        ndirs: int,
        progress: Progress | None = None,
        what: str = "",
    ) -> tuple[int, int, float]:
        """Create ``prefix[/dNN]/fNNNNNNNN`` for indices ``start..stop-1`` with every worker
        (worker ``k`` takes every ``n``-th index); returns (created, failed, seconds)."""
        self.progress = [0] * self.n
        t0 = time.monotonic()
        for k in range(self.n):
            indices = [start + k, stop, self.n]
            self._send(k, {"cmd": "fill", "prefix": prefix, "indices": indices, "ndirs": ndirs})
        results: list[dict[str, Any] | None] = [None] * self.n
        last_report = t0
        while any(r is None for r in results):
            for k in range(self.n):
                if results[k] is None:
                    results[k] = self._poll(k)
            now = time.monotonic()
            if progress is not None and now - last_report >= 10.0:
                last_report = now
                done = sum(self.progress)
                progress(
                    f"{what}: {done:,} / {stop - start:,} files, "
                    f"{done / (now - t0):,.0f}/s, {now - t0:.0f} s"
                )
            time.sleep(0.05)
        seconds = time.monotonic() - t0
        done_results = [r for r in results if r is not None]
        return (
            sum(r["ops"] for r in done_results),
            sum(r["failed"] for r in done_results),
            seconds,
        )

    def close(self) -> None:
        for k, p in enumerate(self.procs):
            if p.poll() is None:
                with contextlib.suppress(OSError, ValueError):
                    self._send(k, {"cmd": "exit"})
        deadline = time.monotonic() + 5.0
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                p.wait()
            for stream in (p.stdin, p.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        self.procs = []


@contextlib.contextmanager
def _cluster(
    shards: tuple[str, ...],
    tmpdir: str | None,
    prefix: str = "keelfs-bench-meta-",
    tls: bool = False,
) -> Iterator[MetaCluster]:
    """A started ``separate``-layout cluster in a temporary directory, killed and removed
    whatever happens (also used by ``keelfs bench txn``); ``tls``: mutual TLS everywhere."""
    with tempfile.TemporaryDirectory(prefix=prefix, dir=tmpdir) as tmp:
        cluster = MetaCluster(tmp, layout="separate", shards=shards, start_timeout=60.0, tls=tls)
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop_all()


@contextlib.contextmanager
def _workers(
    addresses: list[str], n: int, concurrency: int, tls_dir: Path | None = None
) -> Iterator[_Workers]:
    w = _Workers(addresses, n, concurrency, tls_dir=tls_dir)
    try:
        yield w
    finally:
        w.close()


def _timed_run(
    w: _Workers, cluster: MetaCluster, op: str, seconds: float, *, stale_ok: bool = False
) -> Throughput:
    """One timed run; CPU labels use the leaders at its start, and ``leader_changed`` says
    whether a shard's leader was another one at its end."""
    leaders = _leaders(cluster)
    t = w.timed(op, seconds, _server_roles(cluster, leaders), stale_ok=stale_ok)
    t.extra["leader_changed"] = _leaders(cluster) != leaders
    return t


def _mkdirs(fs: Client, dirs: list[str]) -> None:
    for d in dirs:
        fs.mkdir(d, parents=True, deadline=60.0)


def _fill_path(prefix: str, i: int, ndirs: int) -> str:
    return f"{prefix}/d{i % ndirs:02d}/f{i:08d}" if ndirs else f"{prefix}/f{i:08d}"


# ---------------------------------------------------------------------------------------------
# phases


def _list(fs: Client, directory: str, entries: int, page_size: int, runs: int) -> ListResult:
    times: list[float] = []
    listed = 0
    for _ in range(runs):
        t0 = time.perf_counter()
        listed = sum(1 for _ in fs.ls(directory, page_size=page_size, deadline=120.0))
        times.append(time.perf_counter() - t0)
        if listed != entries:
            raise RuntimeError(f"listed {listed} entries of {directory}, expected {entries}")
    return ListResult(entries, listed, page_size, times)


def _restart(
    cluster: MetaCluster, shard: str, files: int, sample: list[str], timeout: float = 120.0
) -> RestartResult:
    """Kill -9 every master of ``shard``, start them all at once, time READY and first stat."""
    masters = cluster.members(shard)
    probe = cluster.client(deadline=1.0, attempt_timeout=0.25)
    probe.stat(sample[0])  # the client knows the map and the file exists
    for i in masters:
        cluster.kill9(i)
    ready: dict[int, float] = {}
    errors: list[BaseException] = []

    def start(i: int) -> None:
        try:
            cluster.restart(i)
            ready[i] = time.monotonic() - t0
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    t0 = time.monotonic()
    threads = [threading.Thread(target=start, args=(i,), daemon=True) for i in masters]
    for t in threads:
        t.start()
    first_stat = float("nan")
    while time.monotonic() - t0 < timeout and not errors:
        try:
            probe.stat(sample[0], deadline=0.5)
        except KeelError:
            time.sleep(0.01)
            continue
        first_stat = time.monotonic() - t0
        break
    for t in threads:
        t.join(timeout=max(1.0, timeout - (time.monotonic() - t0)))
    if errors:
        raise errors[0]
    if first_stat != first_stat:
        raise RuntimeError(f"no successful stat within {timeout} s of the restart")
    fs = cluster.client(deadline=30.0)
    verified = 0
    for path in sample:
        with contextlib.suppress(KeelError):
            fs.stat(path)
            verified += 1
    return RestartResult(files, ready, first_stat, len(sample), verified)


def run(
    *,
    seconds: float = 10.0,
    clients: int = 4,
    concurrency: int = 64,
    list_entries: int = 10_000,
    list_page: int = 1_000,
    fill: int = 100_000,
    skip_fill: bool = False,
    skip_two_shards: bool = False,
    tmpdir: str | None = None,
    progress: Progress | None = None,
    tls: bool = False,
) -> MetaBenchResult:
    """See the module docstring; ``tls``: the clusters run with mutual TLS (the clients
    present an admin certificate), to measure what TLS costs."""

    def say(msg: str) -> None:
        if progress is not None:
            progress(msg)

    info = machine()
    files = 0
    two: Throughput | None = None
    fill_result: FillResult | None = None
    fill_skipped = "--skip-fill" if skip_fill else ""
    say("starting 3 config servers + 3 masters (shard-1)")
    with _cluster(("shard-1",), tmpdir, tls=tls) as cluster:
        admin = cluster.client(deadline=60.0)
        with _workers(cluster.config_addresses, clients, concurrency, cluster.tls_dir) as w:
            _mkdirs(admin, [*w.all_dirs(), "/bench/list"])
            _mkdirs(admin, [f"/bench/fill/d{j:02d}" for j in range(FILL_DIRS)])
            say(f"creates: {w.n} clients, {concurrency} in flight, {seconds:g} s")
            creates = _timed_run(w, cluster, "create", seconds)
            files += creates.ops + creates.extra["warmup_ops"]
            say(f"creates: {creates.ops_per_second:,.0f}/s")
            stats = _timed_run(w, cluster, "stat", seconds)
            say(f"stats: {stats.ops_per_second:,.0f}/s")
            stale = _timed_run(w, cluster, "stat", seconds, stale_ok=True)
            say(f"stats (stale ok): {stale.ops_per_second:,.0f}/s")
            created, failed, _ = w.fill("/bench/list", 0, list_entries, 0, progress, "list")
            if failed:
                raise RuntimeError(f"{failed} creates in /bench/list failed")
            files += list_entries
            listing = _list(admin, "/bench/list", list_entries, list_page, 3)
            say(f"list: {list_entries:,} entries in {listing.best_s:.3f} s (best of 3)")
            sample = [_fill_path("/bench/list", i, 0) for i in range(list_entries)]
            if not skip_fill and fill <= files:
                fill_skipped = f"the shard already held {files:,} files (--fill {fill:,})"
            if not fill_skipped:
                masters = cluster.members("shard-1")
                lead = cluster.leader("shard-1")
                time.sleep(1.0)
                before = {i: rss_bytes(cluster.pid(i)) for i in masters}
                say(f"fill: {files:,} -> {fill:,} files")
                added, failed, took = w.fill(
                    "/bench/fill", 0, fill - files, FILL_DIRS, progress, "fill"
                )
                time.sleep(1.0)
                after = {i: rss_bytes(cluster.pid(i)) for i in masters}
                fill_result = FillResult(
                    files_before=files,
                    files_after=files + added,
                    created=added,
                    failed=failed,
                    seconds=took,
                    rss_before=before,
                    rss_after=after,
                    roles={i: "leader" if i == lead else "follower" for i in masters},
                    leader_changed=cluster.leader("shard-1") != lead,
                )
                sample = [_fill_path("/bench/fill", i, FILL_DIRS) for i in range(added)]
                files += added
                top = fill_result.max_bytes_per_file
                say(
                    f"fill: {added:,} files in {took:.0f} s; "
                    f"max RSS growth {top or 0:,.0f} bytes/file"
                )
        rng = random.Random(1)
        picked = rng.sample(sample, min(100, len(sample)))
        say(f"restart: kill -9 the 3 masters of shard-1 holding {files:,} files")
        restart = _restart(cluster, "shard-1", files, picked)
        say(
            f"restart: all READY after {restart.all_ready_s:.2f} s, "
            f"first stat after {restart.first_stat_s:.2f} s"
        )
    if not skip_two_shards:
        say("two shards: starting 3 config servers + 6 masters")
        with (
            _cluster(("shard-1", "shard-2"), tmpdir, tls=tls) as cluster,
            _workers(cluster.config_addresses, clients, concurrency, cluster.tls_dir) as w,
        ):
            admin = cluster.client(deadline=60.0)
            _mkdirs(admin, w.all_dirs())
            m = admin.shard_map()
            spread = Counter(m.shard_for_directory(d) for d in w.all_dirs())
            two = _timed_run(w, cluster, "create", seconds)
            two.extra["shards"] = len(cluster.shard_ids)
            two.extra["dirs_per_shard"] = dict(sorted(spread.items()))
            say(f"two shards: {two.ops_per_second:,.0f} creates/s")
    return MetaBenchResult(
        clients=creates.clients,
        concurrency=concurrency,
        seconds=seconds,
        creates=creates,
        stats=stats,
        stats_stale=stale,
        listing=listing,
        fill=fill_result,
        fill_skipped=fill_skipped,
        restart=restart,
        two_shards=two,
        machine=info,
    )


# ---------------------------------------------------------------------------------------------
# worker processes (child side)


class _WorkerState:
    def __init__(self, fs: AsyncClient, index: int, concurrency: int) -> None:
        self.fs = fs
        self.index = index
        self.concurrency = concurrency
        self.created: list[str] = []
        self.counter = itertools.count()


async def _timed(state: _WorkerState, cmd: dict[str, Any]) -> dict[str, Any]:
    fs = state.fs
    dirs: list[str] = cmd["dirs"]
    stale_ok = bool(cmd.get("stale_ok", False))
    rng = random.Random(state.index)

    if cmd["op"] == "create":

        async def op() -> None:
            n = next(state.counter)
            path = f"{dirs[n % len(dirs)]}/c{n:08d}"
            await fs.create(path)
            state.created.append(path)

    elif cmd["op"] == "stat":
        names = state.created or dirs

        async def op() -> None:
            await fs.stat(rng.choice(names), stale_ok=stale_ok)

    else:
        raise ValueError(f"unknown op {cmd['op']!r}")

    warm = max(50, state.concurrency)
    todo = iter(range(warm))

    async def warm_one() -> None:
        for _ in todo:
            await op()

    await asyncio.gather(*(warm_one() for _ in range(state.concurrency)))
    print("READY", flush=True)
    start_at = float(await asyncio.to_thread(sys.stdin.readline))
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    stop_at = start_at + float(cmd["seconds"])
    lat: list[float] = []
    failed = 0

    async def loop() -> None:
        nonlocal failed
        while time.monotonic() < stop_at:
            t = time.perf_counter()
            try:
                await op()
            except KeelError:
                failed += 1
            else:
                lat.append(round((time.perf_counter() - t) * 1000, 3))

    t0, c0 = time.monotonic(), time.process_time()
    await asyncio.gather(*(loop() for _ in range(state.concurrency)))
    t1, c1 = time.monotonic(), time.process_time()
    return {
        "ops": len(lat),
        "failed": failed,
        "warmup_ops": warm,
        "start": t0,
        "end": t1,
        "cpu": c1 - c0,
        "latencies_ms": lat,
    }


async def _fill(state: _WorkerState, cmd: dict[str, Any]) -> dict[str, Any]:
    fs = state.fs
    start, stop, step = cmd["indices"]
    prefix: str = cmd["prefix"]
    ndirs = int(cmd["ndirs"])
    todo = iter(range(start, stop, step))
    done = failed = 0

    async def one() -> None:
        nonlocal done, failed
        for i in todo:
            try:
                await fs.create(_fill_path(prefix, i, ndirs))
            except AlreadyExists:  # an earlier attempt of unknown outcome succeeded
                done += 1
            except KeelError:
                failed += 1
            else:
                done += 1

    async def report() -> None:
        while True:
            await asyncio.sleep(1.0)
            print(f"PROGRESS {done}", flush=True)

    reporter = asyncio.create_task(report())
    t0 = time.monotonic()
    try:
        await asyncio.gather(*(one() for _ in range(state.concurrency)))
    finally:
        reporter.cancel()
    return {"ops": done, "failed": failed, "seconds": time.monotonic() - t0}


async def _worker(spec: dict[str, Any]) -> None:
    concurrency = int(spec["concurrency"])
    tls_dir = spec.get("tls_dir")
    tls = TlsSettings.for_user(Path(tls_dir), ADMIN_USER) if tls_dir else None
    async with AsyncClient(
        spec["addresses"],
        deadline=60.0,
        attempt_timeout=10.0,
        max_sessions=concurrency,
        tls=tls,
    ) as fs:
        state = _WorkerState(fs, int(spec["index"]), concurrency)
        while True:
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line:
                return
            cmd = json.loads(line)
            if cmd["cmd"] == "exit":
                return
            if cmd["cmd"] == "timed":
                out = await _timed(state, cmd)
            elif cmd["cmd"] == "fill":
                out = await _fill(state, cmd)
            else:
                raise ValueError(f"unknown command {cmd['cmd']!r}")
            print(json.dumps(out), flush=True)


def _worker_main(spec_json: str) -> int:
    """A client process of ``run``: commands on stdin, one JSON result line each on stdout."""
    asyncio.run(_worker(json.loads(spec_json)))
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="client process of keelfs bench meta (internal)")
    ap.add_argument("--worker", required=True, help="JSON spec")
    sys.exit(_worker_main(ap.parse_args().worker))
