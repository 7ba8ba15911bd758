"""Chunk server data path: MB/s of one block written through a pipeline of 3 chunk servers and
read back from one.

Three ``keelfs chunkserver`` processes on 127.0.0.1 (fsync on finalize, as in production,
unless ``--no-fsync``); this process is the client (``AsyncChunkClient``). The write is timed
from the first byte handed to the client to the final ack (every replica finalized: written,
fsync'ed, renamed); the read streams the whole replica from the first server, checksums
checked on the server and again on the client. The data is one random MiB repeated (the client
still checksums every packet). CPU use of every process during each phase shows which one
limits. MB here is 10^6 bytes.

    python -m keelfs.bench.chunk [--block-mib 256] [--packet-kib 1024] [--no-fsync] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from keelfs.bench.common import cpu_seconds
from keelfs.chunk.keys import provision_key
from keelfs.chunk.memory import tune_malloc
from keelfs.datapath.client import AsyncChunkClient
from keelfs.datapath.tokens import TokenSigner
from keelfs.server.chunkservers import LocalChunkServers

__all__ = ["ChunkBenchResult", "Phase", "main", "run"]

_MIB = 1 << 20


@dataclass
class Phase:
    bytes: int
    seconds: float
    cpu_percent: dict[str, float] = field(default_factory=dict)
    """CPU use during the phase, % of one core, per process (client, cs0, cs1, cs2)."""

    @property
    def mb_per_second(self) -> float:
        return self.bytes / self.seconds / 1e6 if self.seconds else 0.0


@dataclass
class ChunkBenchResult:
    block_mib: int
    packet_kib: int
    replicas: int
    fsync: bool
    write: Phase
    read: Phase
    cpus: int = field(default_factory=lambda: os.cpu_count() or 1)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["bench"] = "chunk"
        out["write"]["mb_per_second"] = round(self.write.mb_per_second, 1)
        out["read"]["mb_per_second"] = round(self.read.mb_per_second, 1)
        return out


def _cpu(pids: dict[str, int]) -> dict[str, float]:
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


async def _phases(
    servers: LocalChunkServers,
    block_bytes: int,
    packet_size: int,
    replicas: int,
    signer: TokenSigner,
) -> tuple[Phase, Phase]:
    pids = {"client": os.getpid(), **{f"cs{i}": servers.pid(i) for i in range(replicas)}}
    unit = os.urandom(_MIB)

    async def data() -> AsyncIterator[bytes]:
        left = block_bytes
        while left > 0:
            yield unit if left >= _MIB else unit[:left]
            left -= _MIB

    # the servers run without masters: this process holds their block key and signs tokens
    async with AsyncChunkClient(packet_size=packet_size, signer=signer) as client:
        # warm-up: connections, threads, code paths
        await client.write_block(servers.addresses, 1, 1, unit, "bench", 1)
        await client.read_block(servers.addresses[0], 1, 1)
        cpu0, t0 = _cpu(pids), time.perf_counter()
        result = await client.write_block(servers.addresses, 2, 1, data(), "bench", 1)
        t1, cpu1 = time.perf_counter(), _cpu(pids)
        got = 0
        async for piece in client.iter_block(servers.addresses[0], 2, 1):
            got += len(piece)
        t2, cpu2 = time.perf_counter(), _cpu(pids)
    if result.length != block_bytes or got != block_bytes:
        raise RuntimeError(f"wrote {result.length} and read {got} of {block_bytes} bytes")

    def phase(a: dict[str, float], b: dict[str, float], seconds: float) -> Phase:
        cpu = {k: round(100 * (b[k] - a[k]) / seconds, 1) for k in a}
        return Phase(block_bytes, round(seconds, 4), cpu)

    return phase(cpu0, cpu1, t1 - t0), phase(cpu1, cpu2, t2 - t1)


def run(
    block_mib: int = 256,
    packet_kib: int = 1024,
    *,
    fsync: bool = True,
    replicas: int = 3,
    tmpdir: str | None = None,
) -> ChunkBenchResult:
    args = () if fsync else ("--no-fsync-on-close",)
    with tempfile.TemporaryDirectory(prefix="keelfs-bench-chunk-", dir=tmpdir) as tmp:
        servers = LocalChunkServers(
            Path(tmp), replicas, server_args=(*args, "--scan-interval-s", "0")
        )
        signer = TokenSigner(provision_key(servers.data_dir(i) for i in range(replicas)))
        with servers:
            write, read = asyncio.run(
                _phases(servers, block_mib * _MIB, packet_kib * 1024, replicas, signer)
            )
    return ChunkBenchResult(block_mib, packet_kib, replicas, fsync, write, read)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m keelfs.bench.chunk", description=__doc__)
    p.add_argument("--block-mib", type=int, default=256)
    p.add_argument("--packet-kib", type=int, default=1024)
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--no-fsync", action="store_true", help="servers skip fsync on finalize")
    p.add_argument("--tmpdir", default=None, help="where the servers' data directories go")
    p.add_argument("--json", action="store_true", help="print only the JSON result")
    ns = p.parse_args(argv)
    tune_malloc()  # this process is the client
    result = run(
        ns.block_mib, ns.packet_kib, fsync=not ns.no_fsync, replicas=ns.replicas, tmpdir=ns.tmpdir
    )
    out = result.as_dict()
    if not ns.json:
        w, r = result.write, result.read
        print(
            f"write {ns.block_mib} MiB x{ns.replicas} replicas: {w.mb_per_second:.0f} MB/s "
            f"({w.seconds:.2f} s, cpu% {w.cpu_percent})"
        )
        print(
            f"read  {ns.block_mib} MiB from one server: {r.mb_per_second:.0f} MB/s "
            f"({r.seconds:.2f} s, cpu% {r.cpu_percent})"
        )
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
