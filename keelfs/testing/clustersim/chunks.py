"""Simulated chunk servers, the writers' data path, and the data invariants.

What is simplified, honestly:

- a chunk server's block store is in memory (``SimChunkServer.replicas``): one finalized
  replica per block with its bytes and a CRC-32 of them, the checksum semantics of
  ``keelfs.chunk.store`` in one number (corruption flips a byte and leaves the checksum, so
  the next scan or read finds it). Replicas are written whole (no packets, no partial
  replicas, no hflush) and finalized at once; chunk servers do not crash (their replicas
  would survive anyway): a server can be down for a while (``outage``: no heartbeats, reads
  or writes; back up, it reports everything again), which makes the masters re-replicate
  and then trim the excess;
- its epoch fencing is the real ``keelfs.chunk.fencing.EpochTable`` (a file per server);
- its reporting is ``keelfs.chunk.reporting.Reporter``'s protocol, rewritten small: a
  ``ChunkHeartbeat`` to every member of every shard of the map (fetched, stale-ok, by its own
  client) every ``HEARTBEAT_S`` and ``EAGER_S`` after a change; a full report the first time,
  when a master asks, and after a failed heartbeat to it; the commands in the replies
  (delete, replicate, verify) run one at a time, each admitted by its block access tokens
  (``keelfs.datapath.tokens``, with the keys the heartbeat replies carry) and then its fence.
  A token refused for any reason but a key the server has not heard of yet (right after the
  start) is a violation: the masters signed something that does not match what they sent. A
  verify
  checks the replica at once: corrupt, it is reported corrupt; good, the next heartbeats
  carry a ``verified`` note with the command's token (and the replica remembers when);
- a writer creates a file, asks ``AllocateBlock`` for each block, writes the replicas to the
  pipeline's servers directly (fenced by the reply's shard and epoch) and calls ``Complete``
  with the last block's length; or, like a writer that hflushed and died, allocates one more
  block (which records the last one's length, as ``hflush`` does) and never completes the
  file (the data is acknowledged: lease recovery must close the file with all of it). A
  pipeline with a server that refuses is abandoned (the file
  is not acknowledged): no ``RecoverPipeline``.

Invariants: **no referenced block loses its last good replica** — checked by the chunk server
at the moment it executes a delete: if the most advanced member of some shard references the
block (``ShardStateMachine.referenced_blocks``), another server must hold a good replica of it
at this stamp or newer; and **every acknowledged file reads back** with its content at the end.

One exception, two independent failures: the masters trim an excess replica only after every
replica they keep was verified by its server since the trim was decided, so a good replica
may still go as the last one if each other copy rotted *after* its last verification (the
nemesis flipped a byte between the verify and the delete). The nemesis flips a byte only
where another good copy exists, so that takes two flips in that short window. Such a block is
counted (``lost_to_rot_after_verify``, the run's fault ``blocks_lost_to_rot_after_verify``)
and its file is not read back (it cannot be). It is excused only when every other copy is
either that, or one its server had already found corrupt and reported (no trim relies on
such a copy); another copy rotted and never verified since makes the delete a violation: the
trim relied on an unverified replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from keelfs.chunk.fencing import EpochTable
from keelfs.client import _ops as ops
from keelfs.client._core import Call
from keelfs.datapath.tokens import Access, BlockKey, KeyRing, TokenVerifier
from keelfs.errors import (
    Fenced,
    KeelError,
    LeaseConflict,
    NotFound,
    PermissionDenied,
    RetryableError,
)
from keelfs.rpc.pb import meta_pb2 as pb
from keelfs.testing.clustersim.cluster import SimClient, SimCluster

__all__ = ["ChunkFleet", "DataWorkload", "SimChunkServer"]

HEARTBEAT_S = 0.5
EAGER_S = 0.02
SCAN_S = 1.0
BLOCK_SIZE = 64 * 1024
HFLUSH_AND_DIE = 0.15
"""Of the files written, those whose writer stops after its last hflush (no Complete)."""


_COMMAND_ACCESS = {"delete": Access.DELETE, "replicate": Access.REPLICATE, "verify": Access.READ}


class ServerDown(Exception):
    """The chunk server is down: a write to it fails (the pipeline is broken)."""


@dataclass
class StoredReplica:
    block_id: int
    gen: int
    data: bytearray
    checksum: int
    shard: str
    corrupt: bool = False
    """Found corrupt by a scan, a read or a verify (and reported)."""
    verified_at: float | None = None
    """When a master's verify command last found it good (virtual time)."""
    rotted_at: float | None = None
    """When the nemesis flipped one of its bytes (virtual time)."""

    def rotted_after_verify(self) -> bool:
        return (
            self.verified_at is not None
            and self.rotted_at is not None
            and self.rotted_at > self.verified_at
        )

    def good(self) -> bool:
        return not self.corrupt and zlib.crc32(self.data) == self.checksum


def _report(r: StoredReplica) -> pb.ReplicaReport:
    return pb.ReplicaReport(block_id=r.block_id, gen_stamp=r.gen, length=len(r.data), shard=r.shard)


class SimChunkServer:
    def __init__(self, fleet: ChunkFleet, index: int) -> None:
        self.fleet = fleet
        self.index = index
        self.server_id = f"cs-{index}"
        self.address = f"c{index}:9000"
        self.node_id = 100 + index
        self.replicas: dict[int, StoredReplica] = {}
        self.keys = KeyRing()
        self.tokens = TokenVerifier(self.keys)
        directory = fleet.root / self.server_id
        directory.mkdir(parents=True, exist_ok=True)
        self.epochs = EpochTable(directory / "epochs.json")
        self.client = SimClient(
            fleet.cluster.rpc,
            self.node_id,
            fleet.cluster.config_addresses,
            deadline=2.0,
            attempt_timeout=1.0,
        )
        self._added: list[StoredReplica] = []
        self._removed: list[StoredReplica] = []
        self._corrupt: list[StoredReplica] = []
        self._verified: list[pb.VerifiedReplica] = []
        self._known: set[str] = set()
        self._needs_full: set[str] = set()
        self._changed = asyncio.Event()
        self._commands: asyncio.Queue[pb.ChunkCommand] = asyncio.Queue()
        self._masters: list[str] = []
        self._map_version = -1
        self.down = False

    # -- the store ----------------------------------------------------------------------------
    def store(
        self, block_id: int, gen: int, data: bytes, shard: str, epoch: int, token: bytes
    ) -> None:
        """Write a finalized replica with a WRITE ``token`` (``PermissionDenied`` without a
        valid one), fenced by ``(shard, epoch)`` (``Fenced`` if older)."""
        if self.down:
            raise ServerDown(self.server_id)
        self.check_token(token, block_id, gen, Access.WRITE, (shard, epoch))
        self.epochs.admit(shard, epoch)
        old = self.replicas.get(block_id)
        if old is not None and old.gen > gen:
            raise ValueError(f"blk_{block_id}: have stamp {old.gen} > {gen}")
        r = StoredReplica(block_id, gen, bytearray(data), zlib.crc32(data), shard)
        self.replicas[block_id] = r
        self._added.append(r)
        self._changed.set()

    def check_token(
        self, token: bytes, block_id: int, gen: int, mode: Access, fence: tuple[str, int]
    ) -> None:
        try:
            self.tokens.check(token, block_id, gen, mode, fence)
        except PermissionDenied as exc:
            self.fleet.refused(self, exc)
            raise

    def read(self, block_id: int, gen: int) -> bytes | None:
        r = self.replicas.get(block_id)
        if self.down or r is None or r.gen != gen:
            return None
        if not r.good():
            self._found_corrupt(r)
            return None
        return bytes(r.data)

    def _found_corrupt(self, r: StoredReplica) -> None:
        if not r.corrupt:
            r.corrupt = True
            self._corrupt.append(r)
            self._changed.set()
            self.fleet.trace(f"{self.server_id}: blk_{r.block_id}_{r.gen} found corrupt")

    def corrupt_one(self, rng: random.Random) -> bool:
        """Flip a byte of a replica that has a good copy elsewhere (never the last good one:
        that would be data loss by the nemesis, not by the system)."""
        choices = [
            r
            for _, r in sorted(self.replicas.items())
            if r.good() and r.data and self.fleet.good_copies(r.block_id, r.gen, self) > 0
        ]
        if not choices:
            return False
        r = rng.choice(choices)
        r.data[rng.randrange(len(r.data))] ^= 0xFF
        r.rotted_at = asyncio.get_running_loop().time()
        self.fleet.trace(f"{self.server_id}: corrupted blk_{r.block_id}_{r.gen}")
        return True

    # -- commands -----------------------------------------------------------------------------
    async def outage(self, seconds: float) -> None:
        """The server is down for ``seconds`` (its replicas stay on its disk, as do its
        epochs): no heartbeats, no reads or writes, the commands it had not run are lost.
        Back up, it sends every master a full report again."""
        self.down = True
        self.fleet.trace(f"{self.server_id}: down")
        while not self._commands.empty():
            self._commands.get_nowait()
        await asyncio.sleep(seconds)
        self._known.clear()
        self._needs_full.clear()
        self._added, self._removed, self._corrupt, self._verified = [], [], [], []
        self.down = False
        self._changed.set()
        self.fleet.trace(f"{self.server_id}: up")

    async def _execute_loop(self) -> None:
        while True:
            command = await self._commands.get()
            if self.down:
                continue
            try:
                await self._execute(command)
            except Fenced as exc:
                self.fleet.stats["fenced"] += 1
                self.fleet.trace(f"{self.server_id}: refused {command.kind}: {exc}")
            except PermissionDenied:
                pass  # counted (and judged) by check_token

    async def _execute(self, command: pb.ChunkCommand) -> None:
        mode = _COMMAND_ACCESS.get(command.kind, Access(0))
        tokens = [*command.block_tokens, *[b""] * len(command.blocks)]
        for b, token in zip(command.blocks, tokens, strict=False):
            self.check_token(token, b.block_id, b.gen_stamp, mode, (command.shard, command.epoch))
        self.epochs.admit(command.shard, command.epoch)
        if command.kind == "delete":
            for b in command.blocks:
                r = self.replicas.get(b.block_id)
                if r is None or (b.gen_stamp and r.gen > b.gen_stamp):
                    continue
                self.fleet.check_delete(self, r, command)
                self.fleet.trace(
                    f"{self.server_id}: delete blk_{r.block_id}_{r.gen} "
                    f"({command.shard}@{command.epoch})"
                )
                del self.replicas[b.block_id]
                self._removed.append(r)
                self.fleet.stats["deleted"] += 1
            self._changed.set()
        elif command.kind == "replicate":
            await self._replicate(command)
        elif command.kind == "verify":
            self._verify(command)

    def _verify(self, command: pb.ChunkCommand) -> None:
        """Check the replicas now (``keelfs.chunk.commands.VerifyBlock``): a corrupt one is
        reported corrupt, a good one noted verified for the masters, with the token."""
        for b in command.blocks:
            r = self.replicas.get(b.block_id)
            if r is None or r.gen != b.gen_stamp or r.corrupt:
                continue  # gone, another stamp, or already reported corrupt
            if not r.good():
                self._found_corrupt(r)
                continue
            r.verified_at = asyncio.get_running_loop().time()
            self._verified.append(
                pb.VerifiedReplica(block_id=r.block_id, gen_stamp=r.gen, token=command.token)
            )
            self.fleet.trace(f"{self.server_id}: verified blk_{r.block_id}_{r.gen}")
        self._changed.set()

    async def _replicate(self, command: pb.ChunkCommand) -> None:
        for b, token in zip(command.blocks, command.block_tokens, strict=False):
            data = self.read(b.block_id, b.gen_stamp)
            if data is None:
                continue
            await asyncio.sleep(0.01 + len(data) / 200e6)
            for t in command.targets:
                target = self.fleet.by_id.get(t.server_id)
                if target is None:
                    continue
                with contextlib.suppress(Fenced, ValueError, ServerDown, PermissionDenied):
                    target.store(b.block_id, b.gen_stamp, data, command.shard, command.epoch, token)
                    self.fleet.stats["replicated"] += 1

    # -- reporting ----------------------------------------------------------------------------
    async def run(self) -> None:
        worker = asyncio.create_task(self._execute_loop())
        try:
            loop = asyncio.get_running_loop()
            next_round = next_scan = 0.0
            while True:
                if self.down:
                    await asyncio.sleep(HEARTBEAT_S)
                    continue
                now = loop.time()
                if now >= next_scan:
                    for _, r in sorted(self.replicas.items()):
                        if not r.corrupt and not r.good():
                            self._found_corrupt(r)
                    next_scan = now + SCAN_S
                if self._changed.is_set() or now >= next_round:
                    self._changed.clear()
                    await self._round()
                    next_round = now + HEARTBEAT_S
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), HEARTBEAT_S)
                await asyncio.sleep(EAGER_S)
        finally:
            worker.cancel()

    async def _refresh_masters(self) -> None:
        with contextlib.suppress(KeelError):
            since = self._map_version if self._map_version >= 0 else None
            fetched = await self.client.fetch_shard_map(since, stale_ok=True, deadline=1.0)
            if fetched is not None:
                m = fetched[0]
                self._map_version = m.version
                self._masters = sorted({a for ms in m.shards.values() for a in ms.values()})

    async def _round(self) -> None:
        await self._refresh_masters()
        added, self._added = self._added, []
        removed, self._removed = self._removed, []
        corrupt, self._corrupt = self._corrupt, []
        verified, self._verified = self._verified, []
        base: dict[str, Any] = dict(
            server_id=self.server_id,
            address=self.address,
            rack="",
            capacity=1 << 40,
            used=sum(len(r.data) for r in self.replicas.values()),
            load=0,
        )
        full = [_report(r) for _, r in sorted(self.replicas.items()) if r.good()]
        corrupt_reports = [_report(r) for r in corrupt]

        async def beat(address: str) -> None:
            if address not in self._known or address in self._needs_full:
                req = pb.ChunkHeartbeatRequest(
                    full_report=True,
                    replicas=full,
                    corrupt=corrupt_reports,
                    verified=verified,
                    **base,
                )
            else:
                req = pb.ChunkHeartbeatRequest(
                    replicas=[_report(r) for r in added if self.replicas.get(r.block_id) is r],
                    removed=[_report(r) for r in removed],
                    corrupt=corrupt_reports,
                    verified=verified,
                    **base,
                )
            call = Call(address, "Namespace", "ChunkHeartbeat", req, 1.0)
            reply = await self.fleet.cluster.rpc.invoke(self.node_id, call)
            if isinstance(reply, grpc.RpcError):
                self._needs_full.add(address)
                return
            self._known.add(address)
            if req.full_report:
                self._needs_full.discard(address)
            if reply.want_full_report:
                self._needs_full.add(address)
            self.keys.update(
                BlockKey(k.key_id, k.secret, k.active_ms, k.expires_ms) for k in reply.block_keys
            )
            for command in reply.commands:
                self._commands.put_nowait(command)

        await asyncio.gather(*(beat(a) for a in self._masters))


class ChunkFleet:
    def __init__(
        self,
        cluster: SimCluster,
        root: Path,
        count: int,
        trace: Callable[[str], None],
        violations: list[str],
    ) -> None:
        self.cluster = cluster
        self.root = root
        self.trace = trace
        self.violations = violations
        self.servers = [SimChunkServer(self, i) for i in range(1, count + 1)]
        self.by_id = {s.server_id: s for s in self.servers}
        self.stats: dict[str, int] = {
            "deleted": 0,
            "replicated": 0,
            "fenced": 0,
            "token_refused": 0,
        }
        self.lost_to_rot_after_verify: set[int] = set()
        """Blocks whose last good replica was trimmed while every other copy had rotted since
        its last verification (see the module doc)."""
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(s.run()) for s in self.servers]

    def stop(self) -> None:
        for t in self._tasks:
            t.cancel()

    def refused(self, server: SimChunkServer, exc: PermissionDenied) -> None:
        """``server`` refused a token: a key it has not heard of yet is the start's race (the
        first key signs at once); anything else means a master signed the wrong thing."""
        self.stats["token_refused"] += 1
        self.trace(f"{server.server_id}: token refused: {exc}")
        if "unknown key" not in str(exc):
            self.violations.append(f"{server.server_id} refused a master's token: {exc}")

    def good_copies(self, block_id: int, gen: int, besides: SimChunkServer) -> int:
        return sum(r.good() for r in self._other_copies(block_id, gen, besides))

    def _other_copies(
        self, block_id: int, gen: int, besides: SimChunkServer
    ) -> list[StoredReplica]:
        """The replicas of ``block_id`` at ``gen`` or newer on servers but ``besides``."""
        out = []
        for s in self.servers:
            r = s.replicas.get(block_id)
            if s is not besides and r is not None and r.gen >= gen:
                out.append(r)
        return out

    def referenced_by(self, block_id: int) -> list[str]:
        """The shards whose most advanced member references ``block_id`` now."""
        out = []
        for shard in sorted(self.cluster.shards):
            members = self.cluster.members(shard)
            if not members:
                continue
            newest = max(members, key=lambda m: m.group.applied_index())
            if newest.sm.referenced_blocks([block_id]):
                out.append(shard)
        return out

    def check_delete(self, server: SimChunkServer, r: StoredReplica, command: Any) -> None:
        if not r.good():
            return
        shards = self.referenced_by(r.block_id)
        others = self._other_copies(r.block_id, r.gen, server)
        if not shards or any(o.good() for o in others):
            return
        if any(o.rotted_after_verify() for o in others) and all(
            o.rotted_after_verify() or o.corrupt for o in others
        ):
            # every copy kept was verified good since the trim was decided, and rotted
            # after that: two independent failures (see the module doc)
            self.lost_to_rot_after_verify.add(r.block_id)
            self.trace(f"blk_{r.block_id}_{r.gen}: last good replica trimmed (rot after verify)")
        else:
            self.violations.append(
                f"{server.server_id} deletes blk_{r.block_id}_{r.gen}, its last good replica, "
                f"while {shards} reference it (command from {command.shard}@{command.epoch})"
            )

    def read_block(self, block: pb.BlockInfo) -> bytes | None:
        for loc in block.locations:
            server = self.by_id.get(loc.server_id)
            if server is not None:
                data = server.read(block.block_id, block.gen_stamp)
                if data is not None:
                    return data
        return None


@dataclass
class ExpectedFile:
    paths: list[str]
    data: bytes
    maybe_gone: bool = False


@dataclass
class DataWorkload:
    """Writers of small files (one or two blocks), renames into a large shared directory,
    recursive deletes of a writer's directory, and setrep; tracks what was acknowledged."""

    fleet: ChunkFleet
    dirs: list[str]
    big: str
    trace: Callable[[str], None]
    files: dict[str, ExpectedFile] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)
    _n: int = 0

    def _count(self, key: str) -> None:
        self.stats[key] = self.stats.get(key, 0) + 1

    async def writer_loop(self, c: int, fs: SimClient, rng: random.Random, until: float) -> None:
        loop = asyncio.get_running_loop()
        mine = [d for i, d in enumerate(self.dirs) if i % 2 == c % 2]
        while loop.time() < until:
            r = rng.random()
            try:
                if r < 0.6 or not self.files:
                    await self._write(fs, rng, rng.choice(mine), c)
                elif r < 0.75:
                    await self._rename_into_big(fs, rng, c)
                elif r < 0.85:
                    await self._setrep(fs, rng)
                else:
                    await self._delete_tree(fs, rng.choice(mine))
            except RetryableError as exc:
                self._count("unavailable")
                self.trace(f"data c{c}: {type(exc).__name__}")
            except (LeaseConflict, NotFound) as exc:
                # the write lost its lease (expired while it was slow; or its directory moved
                # to another shard, where the lease does not follow it): not acknowledged
                self._count("lease_lost")
                self.trace(f"data c{c}: {exc!r}")
            await asyncio.sleep(rng.uniform(0.0, 0.1))

    async def _write(self, fs: SimClient, rng: random.Random, directory: str, c: int) -> None:
        self._n += 1
        path = f"{directory}/f{c}-{self._n}"
        size = rng.choice([BLOCK_SIZE + rng.randrange(1, 3000), rng.randrange(1, 3000)])
        data = rng.randbytes(16) * (size // 16) + rng.randbytes(size % 16)
        try:
            await fs.create(path, replication=rng.choice([1, 2, 3]), block_size=BLOCK_SIZE)
        except NotFound:
            with contextlib.suppress(KeelError):
                await fs.mkdir(directory, parents=True)
            return
        _, pin = fs._core.writers.get(path, ("", 0))
        pieces = [data[i : i + BLOCK_SIZE] for i in range(0, len(data), BLOCK_SIZE)]
        previous: int | None = None
        for piece in pieces:
            reply = await fs._run(ops.allocate_block(path, previous, [], pin), None)
            block = reply.block
            where = [loc.server_id for loc in block.locations]
            self.trace(f"data {path}: blk_{block.block_id}_{block.gen_stamp} to {where}")
            for loc in block.locations:
                server = self.fleet.by_id[loc.server_id]
                try:
                    server.store(
                        block.block_id, block.gen_stamp, piece, reply.shard, reply.epoch,
                        block.token,
                    )  # fmt: skip
                except (Fenced, ValueError, ServerDown, PermissionDenied) as exc:
                    self._count("pipeline_failed")
                    self.trace(f"data {path}: pipeline refused: {exc}")
                    return
            previous = len(piece)
        if rng.random() < HFLUSH_AND_DIE:
            # every block written to all its replicas, and (as the real writer's hflush does)
            # the next block allocated, which records the last one's length on the masters:
            # what hflush acknowledges. The writer then dies: lease recovery must close the
            # file with all of it (the empty block it allocated last may go).
            await fs._run(ops.allocate_block(path, previous, [], pin), None)
            fs._core.writers.pop(path, None)
            self.files[path] = ExpectedFile([path], data)
            self._count("hflushed")
            self.trace(f"data hflushed {path} ({len(data)} bytes), writer gone")
            return
        await fs._run(ops.complete(path, pin, previous), None)
        fs._core.writers.pop(path, None)
        self.files[path] = ExpectedFile([path], data)
        self._count("written")
        self.trace(f"data wrote {path} ({len(data)} bytes)")

    def _pick_file(self, rng: random.Random) -> tuple[str, ExpectedFile] | None:
        known = sorted((k, f) for k, f in self.files.items() if len(f.paths) == 1)
        return rng.choice(known) if known else None

    async def _rename_into_big(self, fs: SimClient, rng: random.Random, c: int) -> None:
        picked = self._pick_file(rng)
        if picked is None:
            return
        key, f = picked
        src = f.paths[0]
        dst = f"{self.big}/{src.strip('/').replace('/', '-')}"
        if src == dst:
            return
        try:
            await fs.rename(src, dst)
        except RetryableError:
            f.paths.append(dst)  # either name: the outcome is unknown
            raise
        except KeelError as exc:
            self.trace(f"data rename {src} -> {dst}: {exc!r}")
            return
        f.paths = [dst]
        self._count("renamed")
        self.trace(f"data renamed {src} -> {dst}")

    async def _setrep(self, fs: SimClient, rng: random.Random) -> None:
        picked = self._pick_file(rng)
        if picked is None:
            return
        _, f = picked
        with contextlib.suppress(NotFound):
            await fs.set_replication(f.paths[0], rng.choice([1, 2, 3]))
            self._count("setrep")

    async def _delete_tree(self, fs: SimClient, directory: str) -> None:
        under = [
            f for f in self.files.values() if any(p.startswith(directory + "/") for p in f.paths)
        ]
        try:
            await fs.delete(directory, recursive=True)
        except NotFound:
            return
        except RetryableError:
            for f in under:
                f.maybe_gone = True
            raise
        for f in under:
            f.paths = [p for p in f.paths if not p.startswith(directory + "/")]
        self.files = {k: f for k, f in self.files.items() if f.paths}
        self._count("tree_deleted")
        self.trace(f"data deleted {directory} ({len(under)} files)")
        with contextlib.suppress(KeelError):
            await fs.mkdir(directory, parents=True)

    async def check_readable(self, fs: SimClient, timeout: float) -> list[str]:
        """Every acknowledged file, at one of its names, reads back with its content."""
        loop = asyncio.get_running_loop()
        problems: list[str] = []
        for key, f in sorted(self.files.items()):
            deadline = loop.time() + timeout
            while True:
                problem = await self._check_file(fs, f)
                if problem is None or loop.time() >= deadline:
                    break
                await asyncio.sleep(0.5)
            if problem is not None:
                problems.append(f"{key}: {problem}")
        return problems

    async def _check_file(self, fs: SimClient, f: ExpectedFile) -> str | None:
        found: list[pb.FileInfo] = []
        for path in f.paths:
            try:
                reply = await fs._run(ops.stat(path, False), 5.0)
            except NotFound:
                continue
            except RetryableError as exc:
                return f"{path}: {exc!r}"
            found.append(reply.info)
        if not found:
            return None if f.maybe_gone else f"acknowledged file is gone (names {f.paths})"
        if len(found) > 1:
            return f"acknowledged file exists under {len(found)} names {f.paths}"
        info = found[0]
        if info.under_construction:
            return "still open (its writer is gone: lease recovery should close it)"
        if info.length != len(f.data):
            return f"closed with {info.length} bytes, {len(f.data)} acknowledged"
        data = b""
        if any(b.block_id in self.fleet.lost_to_rot_after_verify for b in found[0].blocks):
            return None  # two independent failures (see ChunkFleet.check_delete)
        for block in found[0].blocks:
            piece = self.fleet.read_block(block)
            if piece is None:
                where = [loc.server_id for loc in block.locations]
                return f"block {block.block_id}_{block.gen_stamp} has no good replica at {where}"
            data += piece
        if data != f.data:
            return f"content differs ({len(data)} bytes read, {len(f.data)} written)"
        return None
