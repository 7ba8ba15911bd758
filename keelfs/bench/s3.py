"""``keelfs bench s3``: keelfs's S3 gateway, and with a peer SeaweedFS's, under one boto3
workload.

keelfs: the cluster of ``keelfs bench data`` (one shard x 3 masters co-hosted with the config
group, 3 chunk servers, replication 3, replicas fsynced) and one ``keelfs s3`` process.
SeaweedFS (``peer="seaweedfs"``): 3 masters, 3 volume servers (replication ``002``: a copy on
each, as ``keelfs bench compare`` runs it) and a filer with its embedded S3 gateway. Everything
on 127.0.0.1; every process killed by pid when its side is done.

The same workload against each endpoint, from this process, path-style SigV4 requests:

1. **small objects**: ``small_count`` objects of ``small_kib`` KiB PUT, then GET, by
   ``concurrency`` threads (a boto3 client each, made before the clock starts): objects/s.
2. **large object**: one object of ``large_mib`` MiB as a multipart upload of ``part_mib`` MiB
   parts (``streams`` parts in flight), then one streamed GET: MB/s each way (MB = 10^6 bytes).
3. **listing**: ``ListObjectsV2`` of the small objects' prefix (``small_count`` keys, 1,000 a
   page), ``list_runs`` times: keys/s and pages/s of the median run.

Every byte read is checked (each small object against what was written, the large object's MD5,
each listing's keys); a mismatch counts as a failure, reported beside the figures. The load of
the machine is measured before and during each side (other processes' cores): this machine is
shared and its figures are only comparable when those stay low.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import math
import os
import statistics
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from keelfs.runtime.processes import ClusterError, hard_kill, read_ready_line, spawn_tracked

__all__ = ["S3Figures", "S3Result", "measure", "rows", "run"]

MB = 1_000_000
BUCKET = "bench"
ACCESS_KEY = "AKIAKEELFSBENCH00001"
SECRET_KEY = "keelfs-bench-secret/000000000000000000001"


@dataclass
class S3Figures:
    """One endpoint's figures (NaN: not measured)."""

    small_puts_s: float = math.nan
    small_gets_s: float = math.nan
    large_put_mb_s: float = math.nan
    large_get_mb_s: float = math.nan
    list_keys_s: float = math.nan
    list_pages_s: float = math.nan
    failed: int = 0
    """Small objects not stored or read back wrong, plus a large object or listing that was."""
    foreign_cpu_cores: float = math.nan
    """Cores other processes used while this side ran."""

    def as_json(self) -> dict[str, Any]:
        return {
            k: (None if isinstance(v, float) and math.isnan(v) else round(v, 2))
            for k, v in asdict(self).items()
        }


@dataclass
class S3Result:
    peer: str | None
    small_count: int
    small_kib: int
    concurrency: int
    large_mib: int
    part_mib: int
    streams: int
    list_runs: int
    load: dict[str, Any]
    keelfs: S3Figures = field(default_factory=S3Figures)
    seaweedfs: S3Figures = field(default_factory=S3Figures)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "bench": "s3",
            "peer": self.peer,
            "small_count": self.small_count,
            "small_kib": self.small_kib,
            "concurrency": self.concurrency,
            "large_mib": self.large_mib,
            "part_mib": self.part_mib,
            "streams": self.streams,
            "list_runs": self.list_runs,
            "load": self.load,
            "keelfs": self.keelfs.as_json(),
        }
        if self.peer is not None:
            out["seaweedfs"] = self.seaweedfs.as_json()
        return out


# -- the workload ----------------------------------------------------------------------------
def client(endpoint: str, pool: int = 10) -> Any:
    """A boto3 S3 client of ``endpoint``: path-style SigV4, no retries (a failure counts)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            signature_version="s3v4",
            retries={"max_attempts": 1},
            max_pool_connections=pool,
        ),
    )


def _in_threads(clients: list[Any], keys: list[str], op: Callable[[Any, str], bool]) -> int:
    """Run ``op(client, key)`` over ``keys`` with one thread per client, each taking the next
    key until none is left; the number of keys whose ``op`` failed or returned False."""
    it = iter(keys)
    lock = threading.Lock()
    failed = 0

    def worker(c: Any) -> None:
        nonlocal failed
        while True:
            with lock:
                key = next(it, None)
            if key is None:
                return
            try:
                ok = op(c, key)
            except Exception:  # noqa: BLE001 - any failed request counts, the run goes on
                ok = False
            if not ok:
                with lock:
                    failed += 1

    threads = [threading.Thread(target=worker, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return failed


def small_objects(clients: list[Any], count: int, kib: int, fig: S3Figures) -> list[str]:
    """PUT then GET ``count`` objects of ``kib`` KiB (each its own content) under ``small/``;
    the keys stored."""
    keys = [f"small/o{i:06d}" for i in range(count)]
    body = {k: k.encode().ljust(kib << 10, b"\x5a") for k in keys}

    def put(c: Any, key: str) -> bool:
        c.put_object(Bucket=BUCKET, Key=key, Body=body[key])
        return True

    def get(c: Any, key: str) -> bool:
        return bool(c.get_object(Bucket=BUCKET, Key=key)["Body"].read() == body[key])

    t0 = time.perf_counter()
    failed = _in_threads(clients, keys, put)
    fig.small_puts_s = count / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    failed += _in_threads(clients, keys, get)
    fig.small_gets_s = count / (time.perf_counter() - t0)
    fig.failed += failed
    return keys


def large_object(c: Any, mib: int, part_mib: int, streams: int, fig: S3Figures) -> None:
    """One multipart upload of ``mib`` MiB (each part differs: its number heads it), then one
    streamed GET; the MD5s are compared outside the timed parts."""
    base = os.urandom(part_mib << 20)
    parts = [struct.pack(">Q", n) + base[8:] for n in range(max(1, mib // part_mib))]
    key = "large/object"
    t0 = time.perf_counter()
    upload = c.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]

    def put(n: int) -> dict[str, Any]:
        done = c.upload_part(
            Bucket=BUCKET, Key=key, UploadId=upload, PartNumber=n + 1, Body=parts[n]
        )
        return {"PartNumber": n + 1, "ETag": done["ETag"]}

    with ThreadPoolExecutor(streams) as pool:
        etags = list(pool.map(put, range(len(parts))))
    c.complete_multipart_upload(
        Bucket=BUCKET, Key=key, UploadId=upload, MultipartUpload={"Parts": etags}
    )
    wrote = time.perf_counter() - t0
    got: list[bytes] = []
    t0 = time.perf_counter()
    stream = c.get_object(Bucket=BUCKET, Key=key)["Body"]
    while chunk := stream.read(8 << 20):
        got.append(chunk)
    read = time.perf_counter() - t0
    want = hashlib.md5()
    for p in parts:
        want.update(p)
    have = hashlib.md5()
    for chunk in got:
        have.update(chunk)
    size = len(parts) * (part_mib << 20)
    fig.large_put_mb_s, fig.large_get_mb_s = size / wrote / MB, size / read / MB
    if have.digest() != want.digest():
        fig.failed += 1


def listing(c: Any, keys: list[str], runs: int, fig: S3Figures) -> None:
    """``ListObjectsV2`` of ``small/`` to its end, ``runs`` times; the median run's keys/s and
    pages/s; a run that does not list exactly ``keys`` counts as a failure."""
    times, pages = [], 0
    for _ in range(runs):
        listed: list[str] = []
        pages = 0
        kwargs: dict[str, Any] = {"Bucket": BUCKET, "Prefix": "small/"}
        t0 = time.perf_counter()
        while True:
            page = c.list_objects_v2(**kwargs)
            pages += 1
            listed += [o["Key"] for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                break
            kwargs["ContinuationToken"] = page["NextContinuationToken"]
        times.append(time.perf_counter() - t0)
        if listed != keys:
            fig.failed += 1
    median = statistics.median(times)
    fig.list_keys_s, fig.list_pages_s = len(keys) / median, pages / median


def measure(endpoint: str, r: S3Result, fig: S3Figures, say: Callable[[str], None]) -> None:
    """The whole workload against ``endpoint`` (which must accept :data:`ACCESS_KEY`); the
    bucket is made first, retried until the gateway takes it (a filer still starting)."""
    admin = client(endpoint, pool=r.streams + 2)
    deadline = time.monotonic() + 60
    while True:
        try:
            admin.create_bucket(Bucket=BUCKET)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    clients = [client(endpoint, pool=2) for _ in range(r.concurrency)]
    say(f"  small objects: {r.small_count} x {r.small_kib} KiB, {r.concurrency} threads")
    keys = small_objects(clients, r.small_count, r.small_kib, fig)
    say(f"  large object: {r.large_mib} MiB, {r.part_mib} MiB parts, {r.streams} in flight")
    large_object(admin, r.large_mib, r.part_mib, r.streams, fig)
    say(f"  listing: {len(keys)} keys, {r.list_runs} runs")
    listing(admin, keys, r.list_runs, fig)


# -- the two sides ---------------------------------------------------------------------------
@contextlib.contextmanager
def keelfs_gateway(cluster: Any, root: Path) -> Iterator[tuple[str, int]]:
    """``keelfs s3`` on a free loopback port for ``cluster`` (simple mode; the key acts as the
    user running the benchmark, a superuser of the cluster): (endpoint, pid)."""
    credentials = root / "s3-credentials.json"
    credentials.write_text(
        json.dumps({"access_keys": {ACCESS_KEY: {"secret": SECRET_KEY, "user": getpass.getuser()}}})
    )
    cmd = [
        sys.executable, "-m", "keelfs.cli.main", "s3", "--listen", "127.0.0.1:0",
        "--cluster", ",".join(cluster.config_addresses), "--credentials", str(credentials),
        "--log-level", "WARNING",
    ]  # fmt: skip
    out, err = root / "s3.out", root / "s3.err"
    proc = spawn_tracked(cmd, out, err, "keelfs s3")
    try:
        deadline = time.monotonic() + 60
        ready = None
        while ready is None and time.monotonic() < deadline and proc.poll() is None:
            ready = read_ready_line(out)
            time.sleep(0.05)
        if ready is None:
            raise ClusterError(f"keelfs s3 did not start:\n{err.read_text()[-3000:]}")
        yield str(ready["s3_url"]), proc.pid
    finally:
        hard_kill(proc)


def _measure_keelfs(root: Path, r: S3Result, say: Callable[[str], None]) -> None:
    from keelfs.bench.data import started_cluster
    from keelfs.bench.peers.compare import CpuMeter

    say("keelfs: 3 masters (config group + shard-1), 3 chunk servers, one keelfs s3")
    with started_cluster(root) as (cluster, servers), keelfs_gateway(cluster, root) as (url, pid):

        def pids() -> list[int]:
            return (
                [cluster.pid(n) for n in cluster.running()]
                + [servers.pid(i) for i in range(3)]
                + [pid]
            )

        meter = CpuMeter(pids).start()
        measure(url, r, r.keelfs, say)
        r.keelfs.foreign_cpu_cores = meter.stop()


def _measure_seaweedfs(
    weed: Path | None, root: Path, r: S3Result, say: Callable[[str], None]
) -> None:
    from keelfs.bench.peers import seaweedfs as sw
    from keelfs.bench.peers.compare import CpuMeter

    binary = weed or sw.install(say=say)
    say("SeaweedFS: 3 masters, 3 volume servers, a filer with its S3 gateway")
    with sw.WeedCluster(binary, root) as cluster:
        url = sw.start_s3_gateway(cluster, ACCESS_KEY, SECRET_KEY)
        cluster.grow(BUCKET)  # S3 buckets are SeaweedFS collections: grown before the clock
        meter = CpuMeter(cluster.pids).start()
        measure(url, r, r.seaweedfs, say)
        r.seaweedfs.foreign_cpu_cores = meter.stop()


def run(
    *,
    peer: str | None = None,
    weed: Path | None = None,
    small_count: int = 2000,
    small_kib: int = 4,
    concurrency: int = 16,
    large_mib: int = 256,
    part_mib: int = 8,
    streams: int = 4,
    list_runs: int = 3,
    tmpdir: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> S3Result:
    """See the module docstring."""
    from keelfs.bench.peers.compare import machine_load

    def say(msg: str) -> None:
        if progress is not None:
            progress(msg)

    r = S3Result(
        peer=peer,
        small_count=small_count,
        small_kib=small_kib,
        concurrency=concurrency,
        large_mib=large_mib,
        part_mib=part_mib,
        streams=streams,
        list_runs=list_runs,
        load=machine_load(),
    )
    with tempfile.TemporaryDirectory(prefix="keelfs-bench-s3-", dir=tmpdir) as tmp:
        _measure_keelfs(Path(tmp) / "keelfs", r, say)
        if peer == "seaweedfs":
            _measure_seaweedfs(weed, Path(tmp) / "seaweedfs", r, say)
    r.load["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
    return r


# -- the table -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    workload: str
    keelfs: str
    seaweedfs: str
    ratio: str


def _fmt(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:,.1f}" if x < 100 else f"{x:,.0f}"


def rows(r: S3Result) -> list[Row]:
    """The table's rows: workload, both figures, keelfs / SeaweedFS."""
    k, s = r.keelfs, r.seaweedfs
    wanted = [
        (f"PUT {r.small_kib} KiB objects/s ({r.concurrency} threads)", "small_puts_s"),
        (f"GET {r.small_kib} KiB objects/s ({r.concurrency} threads)", "small_gets_s"),
        (f"PUT {r.large_mib} MiB multipart MB/s ({r.part_mib} MiB parts)", "large_put_mb_s"),
        (f"GET {r.large_mib} MiB MB/s", "large_get_mb_s"),
        (f"ListObjectsV2 keys/s ({r.small_count} keys)", "list_keys_s"),
        ("ListObjectsV2 pages/s", "list_pages_s"),
    ]
    out = []
    for name, attr in wanted:
        ours, theirs = getattr(k, attr), getattr(s, attr)
        ratio = "-" if math.isnan(theirs) or theirs == 0 else f"{ours / theirs:.2f}x"
        out.append(Row(name, _fmt(ours), _fmt(theirs), ratio))
    out.append(Row("failures (all bytes checked)", str(k.failed), str(s.failed), ""))
    out.append(
        Row("other processes' cores meanwhile", _fmt(k.foreign_cpu_cores),
            _fmt(s.foreign_cpu_cores), "")
    )  # fmt: skip
    return out
