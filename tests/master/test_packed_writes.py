"""Packed entries on real processes: many concurrent creates of one client share Raft
entries (``keelfs.meta.packs``), and a ``kill -9`` of the shard leader while packs are in
flight loses no acknowledged create and applies none twice (each retried create gets its
first reply from its session's cache, never ``ALREADY_EXISTS``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from keelfs.client import AsyncClient, OutcomeUnknown
from keelfs.errors import KeelError
from keelfs.server.metacluster import MetaCluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

MakeCluster = Callable[..., MetaCluster]
WRITERS = 64


class Load:
    """``WRITERS`` tasks of one ``AsyncClient`` creating unique files in ``directory``."""

    def __init__(self, fs: AsyncClient, directory: str) -> None:
        self.fs = fs
        self.directory = directory
        self.acked: set[str] = set()
        self.unknown: set[str] = set()
        self.violations: list[str] = []
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._run(w)) for w in range(WRITERS)]

    async def _run(self, w: int) -> None:
        i = 0
        while not self._stop.is_set():
            path = f"{self.directory}/w{w:02d}-{i:05d}"
            i += 1
            try:
                await self.fs.create(path)
            except OutcomeUnknown:
                self.unknown.add(path)
            except KeelError as exc:
                self.violations.append(f"{path}: {exc!r}")
            else:
                self.acked.add(path)

    async def more(self, n: int, timeout: float = 60.0) -> None:
        target = len(self.acked) + n
        deadline = time.monotonic() + timeout
        while len(self.acked) < target and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert len(self.acked) >= target, f"creates stalled at {len(self.acked)} (< {target})"

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


def _commit(cluster: MetaCluster, shard: str) -> int:
    return max(s.commit for s in cluster.group_statuses(shard).values())


def test_packed_creates_survive_a_kill9_of_the_shard_leader(make_cluster: MakeCluster) -> None:
    cluster = make_cluster()
    admin = cluster.client()
    admin.mkdir("/packed")
    shard = admin.shard_map().shard_for_path("/packed/x")

    async def main() -> tuple[int, set[str]]:
        async with AsyncClient(
            cluster.config_addresses, max_sessions=WRITERS, attempt_timeout=1.0
        ) as fs:
            load = Load(fs, "/packed")
            await load.more(50)  # sessions open, batches flowing
            # Packs are written only while every member's Raft link has said it reads them
            # (RaftAck.features): a link re-established under load leaves a short window of
            # single entries. So up to three windows of 300 creates; one must show packs.
            windows = []
            for _ in range(3):
                entries_before, acked_before = _commit(cluster, shard), len(load.acked)
                await load.more(300)
                entries = _commit(cluster, shard) - entries_before
                creates = len(load.acked) - acked_before
                windows.append((entries, creates))
                if entries < creates / 2:
                    break
            assert entries < creates / 2, f"(entries, creates) per window {windows}: no packs"

            victim = await asyncio.to_thread(cluster.leader, shard)
            retries = fs.stats["retries"]
            await asyncio.to_thread(cluster.kill9, victim)
            await load.more(300)  # progress under the new leader
            assert await asyncio.to_thread(cluster.leader, shard) != victim
            await load.stop()
            retried = fs.stats["retries"] - retries
            assert retried > 0, "no request was in flight to the killed leader"

            assert not load.violations, load.violations[:5]
            present = [e.path async for e in fs.ls("/packed")]
            assert len(present) == len(set(present))
            lost = load.acked - set(present)
            assert not lost, f"{len(lost)} acknowledged creates lost, e.g. {sorted(lost)[:5]}"
            extra = set(present) - load.acked - load.unknown
            assert not extra, f"files nobody created: {sorted(extra)[:5]}"
            print(f"acked {len(load.acked)}, unknown {len(load.unknown)}, {entries} entries "
                  f"for {creates} creates before the kill, {retried} retries after it, "
                  f"{fs.stats['unknown_outcomes']} unknown outcomes retried")  # fmt: skip
            return victim, set(present)

    victim, present = asyncio.run(main())
    cluster.restart(victim)  # the killed replica catches up to the same namespace
    members = cluster.members(shard)

    def same_everywhere() -> bool | None:
        seen = [cluster.entry_paths(i, shard) for i in members]
        return True if all(s >= present and s == seen[0] for s in seen) else None

    cluster.wait_for(same_everywhere, 30.0, "every replica to hold the same files")
