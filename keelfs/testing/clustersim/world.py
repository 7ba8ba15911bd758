"""One simulated run: build the cluster, run workload and nemesis, heal, check.

``run_seed(seed, params)`` is the whole of it; everything it does is decided by ``seed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from keelfs.errors import AlreadyExists, KeelError, NotFound
from keelfs.testing.clustersim.checks import Violation, check_final
from keelfs.testing.clustersim.chunks import ChunkFleet, DataWorkload
from keelfs.testing.clustersim.cluster import SimCluster, wait_until
from keelfs.testing.clustersim.loop import SimLoop, deterministic_gc, virtual_clock
from keelfs.testing.clustersim.nemesis import Nemesis
from keelfs.testing.clustersim.workload import NamespaceWorkload

__all__ = ["Params", "SeedResult", "run_seed", "run_seed_args"]

SHARDS: dict[str, tuple[int, ...]] = {"shard-1": (1, 2, 3), "shard-2": (1, 2, 3)}


@dataclass
class Params:
    seconds: float = 8.0
    """Virtual seconds of workload under faults (then healing and the final checks)."""
    ns_clients: int = 3
    writers: int = 2
    chunk_servers: int = 4
    faults: bool = True


@dataclass
class SeedResult:
    seed: int
    error: str | None
    digest: str
    virtual_s: float
    wall_s: float
    faults: dict[str, int] = field(default_factory=dict)
    ops: int = 0
    trace: list[str] = field(default_factory=list)


class World:
    def __init__(self, seed: int, params: Params, keep_trace: bool) -> None:
        self.seed = seed
        self.params = params
        self.rng = random.Random(seed)
        self.faults: Counter[str] = Counter()
        self.lines: list[str] = []
        self.keep_trace = keep_trace
        self._digest = hashlib.sha256()
        self.root = Path(tempfile.mkdtemp(prefix=f"clustersim-{seed}-", dir=_tmpfs()))
        self.cluster = SimCluster(self.root, self.rng, SHARDS, self.trace, self.faults)
        self.removed = False
        self.violations: list[str] = []
        """Invariants found broken while the run went on (checked again at the end)."""
        self.fleet = ChunkFleet(
            self.cluster, self.root / "chunks", params.chunk_servers, self.trace, self.violations
        )

    def trace(self, line: str) -> None:
        loop = asyncio.get_running_loop()
        stamped = f"{loop.time():10.4f} {line}"
        self._digest.update(stamped.encode())
        if self.keep_trace:
            self.lines.append(stamped)

    @property
    def digest(self) -> str:
        return self._digest.hexdigest()[:16]

    async def setup(self) -> None:
        c = self.cluster
        c.network.set_faults(delay=0.001, jitter=0.004)
        for node_id in sorted({i for ids in SHARDS.values() for i in ids} | set(c.CONFIG_NODES)):
            await c.start(node_id)
        admin = self.admin = c.client(deadline=20.0, attempt_timeout=1.0)
        for shard, members in SHARDS.items():

            async def add(shard: str = shard, members: tuple[int, ...] = members) -> bool:
                try:
                    await admin.add_shard(shard, list(members))
                except AlreadyExists:
                    pass
                except NotFound:
                    return False
                return True

            while not await add():
                await asyncio.sleep(0.1)
        await admin.format()
        m = await admin.shard_map()
        dirs: dict[str, str] = {}
        for i in range(64):
            dirs.setdefault(m.shard_for_directory(f"/d{i}"), f"/d{i}")
        if len(dirs) < 2:
            raise RuntimeError("no two directories on different shards")
        self.a, self.b = dirs["shard-1"], dirs["shard-2"]
        self.big = "/big"
        self.data_dirs = [f"/w{i}" for i in range(4)]
        for d in (self.a, self.b, self.big, *self.data_dirs):
            await admin.mkdir(d)
        self.fleet.start()
        self.trace(f"setup done: {self.a} on shard-1, {self.b} on shard-2")

    async def main(self) -> None:
        await self.setup()
        loop = asyncio.get_running_loop()
        until = loop.time() + self.params.seconds
        ns = self.ns = NamespaceWorkload(self.a, self.b, loop.time, self.trace)
        tasks = [
            asyncio.create_task(
                ns.client_loop(
                    c,
                    self.cluster.client(deadline=5.0, attempt_timeout=0.5),
                    random.Random(self.rng.getrandbits(64)),
                    until,
                )
            )
            for c in range(self.params.ns_clients)
        ]
        data = self.data = DataWorkload(self.fleet, self.data_dirs, self.big, self.trace)
        for c in range(self.params.writers):
            writer = self.cluster.client(deadline=5.0, attempt_timeout=0.5)
            wrng = random.Random(self.rng.getrandbits(64))
            tasks.append(asyncio.create_task(data.writer_loop(c, writer, wrng, until)))
        if self.params.faults:
            nemesis = Nemesis(
                self.cluster,
                random.Random(self.rng.getrandbits(64)),
                self.faults,
                self.trace,
                extra={
                    "corrupt": self.corrupt,
                    "reshard": self.reshard,
                    "chunk_down": self.chunk_down,
                },
            )
            tasks.append(asyncio.create_task(nemesis.run(until)))
        tasks.append(asyncio.create_task(self._watch(until)))
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
        await self.heal()
        await ns.final_stats(self.admin, timeout=30.0)
        await check_final(self)

    async def _watch(self, until: float) -> None:
        """Fail the run as soon as an invariant checked on the way broke (the trace then ends
        right after it)."""
        loop = asyncio.get_running_loop()
        while loop.time() < until:
            if self.violations:
                raise Violation("; ".join(self.violations[:3]))
            await asyncio.sleep(0.05)

    async def corrupt(self) -> None:
        """Flip a byte of a replica on one chunk server (one that has a good copy elsewhere)."""
        server = self.rng.choice(self.fleet.servers)
        server.corrupt_one(self.rng)

    async def chunk_down(self) -> None:
        """A chunk server down for up to twice the masters' ``chunk_dead_after_s``."""
        server = self.rng.choice(self.fleet.servers)
        await server.outage(self.rng.uniform(0.5, 6.0))

    async def reshard(self) -> None:
        """Add a shard (three new masters) the first time, remove it the second; later
        calls do nothing. The request's outcome may be unknown: the map says what happened."""
        c = self.cluster
        loop = asyncio.get_running_loop()
        if "shard-3" not in c.shards:
            c.shards["shard-3"] = (4, 5, 6)
            for node_id in (4, 5, 6):
                await c.start(node_id)
            deadline = loop.time() + 5.0
            while loop.time() < deadline:
                try:
                    await self.admin.add_shard("shard-3", [4, 5, 6], deadline=2.0)
                except NotFound:  # a new master has not registered yet
                    await asyncio.sleep(0.2)
                    continue
                except KeelError as exc:
                    self.trace(f"  add shard-3: {exc!r}")
                break
            self.trace("  added shard-3")
        elif not self.removed:
            try:
                if (await self.admin.shard_map(deadline=2.0)).resharding:
                    return  # the add is still moving directories: remove it later
            except KeelError:
                return
            self.removed = True
            try:
                await self.admin.remove_shard("shard-3", deadline=3.0)
            except KeelError as exc:
                self.trace(f"  remove shard-3: {exc!r}")
            self.trace("  removed shard-3")

    async def heal(self) -> None:
        c = self.cluster
        loop = asyncio.get_running_loop()
        assert isinstance(loop, SimLoop)
        for node_id in loop.paused:
            loop.resume(node_id)
        c.network.heal()
        c.network.set_faults(drop_rate=0.0, delay=0.001, jitter=0.004)
        for node_id in sorted(c.down):
            await c.start(node_id)
        self.trace("healed")
        for group in ("config", *sorted(c.shards)):
            await wait_until(partial(c.leader_of, group), 30.0, f"no leader of {group}")


def _tmpfs() -> str | None:
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() else None


Scenario = Callable[["World"], Awaitable[None]]


def run_seed(
    seed: int,
    params: Params | None = None,
    keep_trace: bool = False,
    scenario: Scenario | None = None,
    log_level: int | None = None,
) -> SeedResult:
    """Run ``seed``: the workload under faults, then the checks (``World.main``), or what
    ``scenario`` does with the world (a test's own story on the same simulated cluster).
    Whatever the run raised is the result's ``error``. ``log_level``: keelfs's own log
    records of that level and above go into the kept trace, stamped with virtual time (they
    are left out of the digest, so a seed's digest is the same with or without them)."""
    params = params or Params()
    started = time.perf_counter()
    loop = SimLoop()
    world = World(seed, params, keep_trace)
    _route_logs(world, loop, log_level if keep_trace else None)
    error: str | None = None
    state = random.getstate()
    random.seed(seed)
    try:
        with virtual_clock(loop), deterministic_gc():
            try:
                loop.run_until_complete((scenario or World.main)(world))
            except Violation as exc:
                error = str(exc)
            except Exception as exc:  # noqa: BLE001  # a crash of the run fails this seed
                error = f"{type(exc).__name__}: {exc}"
                if keep_trace:
                    world.lines.append(traceback.format_exc())
            finally:
                virtual_s = loop.time()
                for node_id in loop.paused:
                    loop.resume(node_id)
                lost = world.fleet.lost_to_rot_after_verify
                if lost:
                    world.faults["blocks_lost_to_rot_after_verify"] = len(lost)
                with contextlib.suppress(Exception):
                    loop.run_until_complete(world.cluster.stop_all())
                _cancel_all(loop)
                loop.close()
    finally:
        random.setstate(state)
    ops = len(world.ns.rec.history()) if hasattr(world, "ns") else 0
    return SeedResult(
        seed,
        error,
        world.digest,
        virtual_s,
        time.perf_counter() - started,
        dict(world.faults),
        ops,
        world.lines,
    )


class _TraceHandler(logging.Handler):
    def __init__(self, world: World, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.world, self.loop = world, loop

    def emit(self, record: logging.LogRecord) -> None:
        self.world.lines.append(
            f"{self.loop.time():10.4f}   log {record.name}: {record.getMessage()}"
        )


def _route_logs(world: World, loop: asyncio.AbstractEventLoop, level: int | None) -> None:
    """Silence keelfs's logs (a simulated crash is not news), or send them into the trace."""
    logger = logging.getLogger("keelfs")
    for h in [h for h in logger.handlers if isinstance(h, _TraceHandler)]:
        logger.removeHandler(h)
    if level is None:
        logger.setLevel(logging.CRITICAL)
        return
    logger.setLevel(level)
    logger.addHandler(_TraceHandler(world, loop))


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = asyncio.all_tasks(loop)
    for t in tasks:
        t.cancel()
    if tasks:
        with contextlib.suppress(Exception):
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


def run_seed_args(args: tuple[int, float, bool]) -> SeedResult:
    """``run_seed(seed, Params(seconds, faults))`` for a worker pool (a picklable callable
    defined outside ``__main__``: spawned workers import it by name)."""
    seed, seconds, faults = args
    return run_seed(seed, Params(seconds=seconds, faults=faults))
