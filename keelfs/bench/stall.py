"""``keelfs bench stall``: how long a writer of small files stops when the shard leader dies
or freezes.

The cluster of ``keelfs bench data`` (one shard × 3 masters co-hosting the config group, 3 chunk
servers, real processes on 127.0.0.1, fsync on). One :class:`~keelfs.client.AsyncClient` writes
4 KiB files one after another; each trial then

- ``kill``: SIGKILLs the process leading shard-1 (connections to it break at once), or
- ``stop``: SIGSTOPs it (its connections stay open and silent: the client learns nothing from
  them, only from time passing or from the other members),

keeps writing for ``window`` seconds, and takes the **stall**: the longest gap between two
acknowledged writes. The old leader is then restarted (``kill``) or continued (``stop``) and
the cluster settles before the next trial. The figure the issue sets is the p99 over trials.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keelfs.bench.common import Summary, machine
from keelfs.client import AsyncClient
from keelfs.errors import KeelError
from keelfs.server.metacluster import MetaCluster

__all__ = ["MODES", "StallResult", "run", "write_stall"]

MODES = ("kill", "stop")
SMALL_FILE = b"s" * 4096


@dataclass
class StallResult:
    trials: int
    stalls: dict[str, list[float]] = field(default_factory=dict)
    failed_writes: dict[str, int] = field(default_factory=dict)
    machine: dict[str, object] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "bench": "stall",
            "trials": self.trials,
            "stall_s": {
                mode: {**Summary.of(s).as_dict(digits=3), "all": [round(x, 3) for x in s]}
                for mode, s in self.stalls.items()
            },
            "failed_writes": self.failed_writes,
            "machine": self.machine,
        }


async def write_stall(
    fs: AsyncClient, cluster: MetaCluster, mode: str, trial: int, window: float = 3.0
) -> tuple[float, int]:
    """One trial: the longest gap between acknowledged writes around a ``mode`` fault of the
    shard-1 leader, and how many writes failed (each is retried by the loop, as a user
    would: a failure is not a gap's end)."""
    stop = asyncio.Event()
    acked: list[float] = []
    failed = 0
    directory = f"/bench/stall-{mode}{trial}"

    async def writer() -> None:
        nonlocal failed
        i = 0
        while not stop.is_set():
            try:
                await fs.write_bytes(f"{directory}/f{i}", SMALL_FILE)
            except KeelError:
                failed += 1
                continue
            acked.append(time.perf_counter())
            i += 1

    await fs.mkdir(directory, parents=True)
    task = asyncio.create_task(writer())
    try:
        await asyncio.sleep(1.0)
        victim = await asyncio.to_thread(cluster.leader, "shard-1")
        fault = cluster.kill9 if mode == "kill" else cluster.sigstop
        await asyncio.to_thread(fault, victim)
        await asyncio.sleep(window)
    finally:
        stop.set()
        await task
    if mode == "kill":
        await asyncio.to_thread(cluster.restart, victim)
    else:
        await asyncio.to_thread(cluster.sigcont, victim)
    await asyncio.to_thread(cluster.leader, "shard-1")
    gaps = [b - a for a, b in zip(acked, acked[1:], strict=False)]
    return (max(gaps) if gaps else float("nan")), failed


def run(
    *,
    modes: tuple[str, ...] = MODES,
    trials: int = 10,
    window: float = 3.0,
    tmpdir: str | None = None,
    progress: Any = None,
    tls: bool = False,
) -> StallResult:
    """See the module docstring."""
    from keelfs.bench.data import started_cluster

    def say(msg: str) -> None:
        if progress is not None:
            progress(msg)

    result = StallResult(trials=trials, machine=machine())
    with tempfile.TemporaryDirectory(prefix="keelfs-bench-stall-", dir=tmpdir) as root:
        say("starting 3 masters (config group + shard-1) and 3 chunk servers")
        with started_cluster(Path(root), tls=tls) as (cluster, _servers):

            async def main() -> None:
                async with AsyncClient(
                    cluster.config_addresses, deadline=60.0, tls=cluster.client_tls
                ) as fs:
                    for mode in modes:
                        stalls, failed = [], 0
                        for t in range(trials):
                            say(f"{mode}: trial {t + 1}/{trials}")
                            stall, n = await write_stall(fs, cluster, mode, t, window)
                            stalls.append(stall)
                            failed += n
                        result.stalls[mode] = stalls
                        result.failed_writes[mode] = failed

            asyncio.run(main())
    return result
