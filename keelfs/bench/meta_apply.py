"""``keelfs bench apply`` and ``keelfs bench raft-meta``: CPU per create of the metadata path
without gRPC or client processes.

``apply``: one RocksDB ``ShardStateMachine`` (one replica's apply) fed encoded entries of K
creates each (``keelfs.meta.packs``; K=1: one plain entry per create), sessions taking turns
round-robin and the leader clock one millisecond further per entry. The figure is the process
CPU per create, warm-up left out.

``raft-meta``: three ``RaftHost``s in one process over ``LocalNetwork``, each with a RocksDB
``ShardStateMachine``; W proposers on the leader each create files one after the other. The
figure is the process CPU per create, so it is the leader's and both followers' apply plus all
the Raft, log and transport work, with packing on (the default) or off.

Both set the shard up through its real commands (``MkdirSelf``, ``RegisterSession``, ``Mkdir``),
as a master formatting a shard and clients opening sessions would.
"""

from __future__ import annotations

import asyncio
import functools
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keelfs.bench.common import machine
from keelfs.meta import packs
from keelfs.meta.commands import (
    Command,
    Create,
    Envelope,
    Mkdir,
    MkdirSelf,
    RegisterSession,
    Result,
)
from keelfs.meta.namespace import ShardStateMachine
from keelfs.runtime import HostConfig, RaftGroup, RaftHost
from keelfs.transport.local import LocalNetwork

_T0 = 1_700_000_000_000
"""The leader clock (ms) the apply bench starts from."""
_WARMUP_CREATES = 400
_DIR = "/d"


@dataclass
class ApplyRun:
    pack: int
    creates: int
    entries: int
    cpu_seconds: float
    wall_seconds: float

    @property
    def cpu_us_per_create(self) -> float:
        return self.cpu_seconds / self.creates * 1e6 if self.creates else 0.0


@dataclass
class ApplyBenchResult:
    sessions: int
    runs: list[ApplyRun]
    machine: dict[str, object]


def _check(outcome: Result | list[Result], what: str) -> list[Any]:
    """The values of an applied entry's results; a failed command stops the bench (its figure
    would be the cost of an error, not of a create)."""
    results = outcome if isinstance(outcome, list) else [outcome]
    for r in results:
        if not r.ok:
            raise RuntimeError(f"{what} failed: {r.error}")
    return [r.value for r in results]


class _Shard:
    """One shard replica fed consecutive entries, as the runtime applies them."""

    def __init__(self, path: Path) -> None:
        self.sm = ShardStateMachine(path, shard_id="shard-1")
        self.index = self.sm.applied_index()
        self.now = _T0

    def entry(self, data: bytes, what: str) -> list[Any]:
        self.index += 1
        return _check(self.sm.apply(self.index, data), what)

    def command(self, cmd: Command, session: int = 0, seq: int = 0) -> Any:
        return self.entry(Envelope(cmd, self.now, session, seq).encode(), cmd.op)[0]

    def session(self) -> int:
        # derived from the entry's index, so that the run is the same each time
        chosen = f"{(self.index + 1) * 0x9E3779B97F4A7C15_F39CC0605CEDC835 % 2**128:032x}"
        return int(self.command(RegisterSession(chosen))["session_id"])


def _apply_one(tmp: Path, creates: int, pack: int, sessions: int) -> ApplyRun:
    shard = _Shard(tmp / f"pack-{pack}")
    try:
        shard.command(MkdirSelf("/"))
        sids = [shard.session() for _ in range(sessions)]
        shard.command(Mkdir(_DIR))
        seqs = dict.fromkeys(sids, 0)
        warmup = -(-_WARMUP_CREATES // pack) * pack
        entries: list[bytes] = []
        for at in range(0, warmup + creates, pack):
            shard.now += 1
            items = []
            for i in range(at, min(at + pack, warmup + creates)):
                sid = sids[i % sessions]
                seqs[sid] += 1
                cmd = Create(f"{_DIR}/f{i}", replication=3)
                items.append(Envelope(cmd, shard.now, sid, seqs[sid]).encode())
            entries.append(items[0] if len(items) == 1 else packs.pack(items))
        warm_entries = warmup // pack
        for data in entries[:warm_entries]:
            shard.entry(data, "create")
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for data in entries[warm_entries:]:
            shard.entry(data, "create")
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        return ApplyRun(pack, creates, len(entries) - warm_entries, cpu, wall)
    finally:
        shard.sm.close()


def run_apply(
    creates: int = 6400, pack_sizes: Sequence[int] = (1, 16, 64), sessions: int = 64
) -> ApplyBenchResult:
    """Apply CPU per create for each pack size in ``pack_sizes``, each on a fresh replica."""
    if creates < 1 or sessions < 1 or any(k < 1 for k in pack_sizes):
        raise ValueError("creates, sessions and pack sizes must be at least 1")
    if any(k > packs.MAX_PACK_ITEMS for k in pack_sizes):
        raise ValueError(f"a pack holds at most {packs.MAX_PACK_ITEMS} commands")
    info = machine()
    with tempfile.TemporaryDirectory(prefix="keelfs-bench-apply-") as tmp:
        runs = [_apply_one(Path(tmp), creates, k, sessions) for k in pack_sizes]
    return ApplyBenchResult(sessions, runs, info)


@dataclass
class RaftMetaResult:
    creates: int
    writers: int
    packed: bool
    entries: int
    synced_rounds: int
    cpu_seconds: float
    wall_seconds: float
    machine: dict[str, object]

    @property
    def cpu_us_per_create(self) -> float:
        return self.cpu_seconds / self.creates * 1e6 if self.creates else 0.0

    @property
    def creates_per_second(self) -> float:
        return self.creates / self.wall_seconds if self.wall_seconds else 0.0


_PEERS = {1: "local:1", 2: "local:2", 3: "local:3"}
_WARMUP_PER_WRITER = 20


async def _leader(hosts: dict[int, RaftHost], deadline_s: float = 60.0) -> RaftGroup:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while loop.time() < end:
        for h in hosts.values():
            if h.groups["s"].is_leader:
                return h.groups["s"]
        await asyncio.sleep(0.01)
    raise RuntimeError(f"no shard leader after {deadline_s:.0f} s")


async def _raft_meta(tmp: Path, creates: int, writers: int, pack: bool) -> RaftMetaResult:
    info = machine()
    net = LocalNetwork()
    # no quiescing, a long election timeout: nothing but the creates happens during the run
    cfg = HostConfig(
        quiesce_after_ticks=0, election_tick=100, request_timeout=30, pack_proposals=pack
    )
    hosts: dict[int, RaftHost] = {}
    sms: list[ShardStateMachine] = []
    try:
        for i in _PEERS:
            hosts[i] = RaftHost(i, tmp / f"n{i}", functools.partial(net.add, i), cfg)
            await hosts[i].start()
            sms.append(ShardStateMachine(tmp / f"sm{i}", shard_id="s"))
            hosts[i].open_group("s", sms[-1], _PEERS)
        group = await _leader(hosts)

        async def propose(cmd: Command, session: int = 0, seq: int = 0) -> Any:
            data = Envelope(cmd, int(time.time() * 1000), session, seq).encode()
            return _check(await group.propose(data, 30, packable=True), cmd.op)[0]

        await propose(MkdirSelf("/"))
        await propose(Mkdir(_DIR))
        sids = [int((await propose(RegisterSession.fresh()))["session_id"]) for _ in range(writers)]

        async def writer(w: int, lo: int, hi: int) -> None:
            for k in range(lo, hi):
                await propose(Create(f"{_DIR}/w{w}-{k}", replication=3), sids[w], k + 1)

        per = -(-creates // writers)
        await asyncio.gather(*(writer(w, 0, _WARMUP_PER_WRITER) for w in range(writers)))
        entries0 = group.sm.applied_index()
        rounds0 = group.host.rounds
        cpu0, wall0 = time.process_time(), time.perf_counter()
        end = _WARMUP_PER_WRITER + per
        await asyncio.gather(*(writer(w, _WARMUP_PER_WRITER, end) for w in range(writers)))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        return RaftMetaResult(
            creates=per * writers,
            writers=writers,
            packed=pack,
            entries=group.sm.applied_index() - entries0,
            synced_rounds=group.host.rounds - rounds0,
            cpu_seconds=cpu,
            wall_seconds=wall,
            machine=info,
        )
    finally:
        for h in hosts.values():
            await h.stop()
        for sm in sms:
            sm.close()


def run_raft_meta(creates: int = 6400, writers: int = 64, pack: bool = True) -> RaftMetaResult:
    """CPU per create through Raft and three replicas' apply, ``writers`` creates in flight
    (``creates`` rounded up to a multiple of ``writers``)."""
    if creates < 1 or writers < 1:
        raise ValueError("creates and writers must be at least 1")
    with tempfile.TemporaryDirectory(prefix="keelfs-bench-raft-meta-") as tmp:
        return asyncio.run(_raft_meta(Path(tmp), creates, writers, pack))
