"""A chunk server's heartbeats and block reports to every master, and the commands they bring.

DESIGN §2.8: a chunk server reports to **every member of every shard**, not only to leaders, so
that a newly elected master knows where every block is at once. The :class:`Reporter`:

1. registers the server with the config group (``RegisterChunkServer``; retried until it
   succeeds) and learns the masters from the ShardMap (every shard's members), refreshed on
   in the background (a round never waits for it);
2. every ``interval_s`` (and sooner, ``eager_s`` after a replica was finalized, deleted or
   found corrupt, so that a writer's ``Complete`` is not held up for a whole interval) sends
   each master a ``ChunkHeartbeat``: capacity, use and load, plus a **full** block report the
   first time, whenever that master asks (``want_full_report``: it restarted, or heard
   nothing from this server for a while), after a failed heartbeat to it, or when it was left
   out of the rounds meanwhile (its shard left the map): it may have missed increments; else
   the **increments** since. Each master has its own lane: a heartbeat to one master that
   is slow or frozen (SIGSTOP: its connection stays open and silent) holds back nothing
   sent to the others — while it is on its way, that master's increments wait in its lane
   and go with its next heartbeat. (A round used to wait for every master's answer, so one
   frozen master delayed every other master's news of a finalized replica by the whole RPC
   timeout, and writers' ``Complete`` waited with it.)
3. learns the block-token keys the replies carry (``ChunkNode.learn_keys``: the only way keys
   reach a chunk server, as HDFS DataNodes get block keys from the NameNode);
4. executes the commands in the replies (``ChunkNode.execute``: each block's token checked,
   fenced by the shard's epoch, so a deposed leader's commands are refused), one at a time
   per server, in the background. A
   ``verify`` (a master will trim other replicas of a block and keep this one) re-reads the
   replica now: found good, the next round tells every master so (``verified``, with the
   command's token); found corrupt, it is reported corrupt like the scanner's findings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import grpc

from keelfs.chunk.commands import DeleteBlocks, Fence, ReplicateBlock, VerifyBlock
from keelfs.chunk.events import EventKind
from keelfs.chunk.node import ChunkNode
from keelfs.datapath.protocol import Target
from keelfs.datapath.replica import ReplicaInfo, ReplicaState
from keelfs.datapath.tokens import BlockKey
from keelfs.errors import KeelError
from keelfs.meta.shardmap import ShardMap
from keelfs.rpc.channels import MIN_CONNECT_TIMEOUT_MS
from keelfs.rpc.pb import meta_pb2 as mpb
from keelfs.rpc.pb import meta_pb2_grpc as mpb_grpc
from keelfs.runtime.lifecycle import keep_running
from keelfs.tls.credentials import open_aio_channel

__all__ = ["Reporter"]

log = logging.getLogger("keelfs.chunk.reporting")

_MASTER_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 << 20),
    # a restarted master hears from this server within a second or two, not after gRPC's
    # default reconnect backoff (up to two minutes): until then it cannot tell this server
    # from a dead one, and waits for it before dropping a block nobody reports
    # (``ChunkRegistry.complete``)
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", MIN_CONNECT_TIMEOUT_MS),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
MAX_LANE_REPORTS = 100_000
"""Increments owed to one master past which they are dropped for a full report instead (a
master that has not answered for that long needs one anyway)."""


@dataclass
class _Lane:
    """What one master is owed: the increments since its last heartbeat that got through,
    and the heartbeat on its way to it, if any."""

    added: list[mpb.ReplicaReport] = field(default_factory=list)
    removed: list[mpb.ReplicaReport] = field(default_factory=list)
    corrupt: list[mpb.ReplicaReport] = field(default_factory=list)
    verified: list[mpb.VerifiedReplica] = field(default_factory=list)
    sending: asyncio.Task[None] | None = None
    full_mark: int = 0
    """The master's full-report mark when the full report on its way was taken (see
    ``Reporter._want_full``)."""

    def owe(
        self,
        added: list[mpb.ReplicaReport],
        removed: list[mpb.ReplicaReport],
        corrupt: list[mpb.ReplicaReport],
        verified: list[mpb.VerifiedReplica],
    ) -> None:
        self.added += added
        self.removed += removed
        self.corrupt += corrupt
        self.verified += verified

    def busy(self) -> bool:
        return self.sending is not None and not self.sending.done()

    def size(self) -> int:
        return len(self.added) + len(self.removed)

    def owes(self) -> bool:
        return bool(self.added or self.removed or self.corrupt or self.verified)

    def take(self, *, full: bool) -> mpb.ChunkHeartbeatRequest:
        """The heartbeat carrying what is owed (a full report replaces the increments)."""
        req = mpb.ChunkHeartbeatRequest(corrupt=self.corrupt, verified=self.verified)
        if not full:
            req.replicas.extend(self.added)
            req.removed.extend(self.removed)
        self.added, self.removed, self.corrupt, self.verified = [], [], [], []
        return req


def _report(info: ReplicaInfo) -> mpb.ReplicaReport:
    return mpb.ReplicaReport(
        block_id=info.block_id, gen_stamp=info.gen, length=info.length, shard=info.shard_id
    )


class Reporter:
    def __init__(
        self,
        node: ChunkNode,
        config_servers: list[str],
        *,
        interval_s: float = 1.0,
        eager_s: float = 0.01,
        rpc_timeout_s: float = 2.0,
    ) -> None:
        from keelfs.client import AsyncClient  # the metadata client

        self.node = node
        self.meta = AsyncClient(
            config_servers, deadline=5.0, attempt_timeout=2.0, tls=node.config.tls
        )
        self.interval_s = interval_s
        self.eager_s = eager_s
        self.rpc_timeout_s = rpc_timeout_s
        self.registered = False
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._map: ShardMap | None = None
        self._needs_full: set[str] = set()
        self._full_marks: dict[str, int] = {}
        """Per master, how many times a full report was asked for: a full report that was
        taken before the last ask does not answer it (``_want_full``)."""
        self._known: set[str] = set()
        self._last_round: set[str] = set()
        """The masters the last round reported to."""
        self._lanes: dict[str, _Lane] = {}
        self._map_refresh: asyncio.Task[None] | None = None
        self._commands: asyncio.Queue[mpb.ChunkCommand] = asyncio.Queue()
        self._verified: list[mpb.VerifiedReplica] = []
        """Replicas verified good on a master's request since the last round."""
        self.stats = {"heartbeats": 0, "failures": 0, "commands": 0, "refused": 0}

    async def run(self) -> None:
        # restarted if a command fails in a way not foreseen: a worker that died unseen would
        # leave every later delete, replication and verify undone, heartbeats going on
        worker = asyncio.create_task(
            keep_running("chunk commands", self._execute_commands), name="chunk-commands"
        )
        try:
            await self._register()
            next_full_round = 0.0
            loop = asyncio.get_running_loop()
            pending: list[Any] = []
            while True:
                batch = self.node.take_events()
                pending.extend(batch.events)
                now = loop.time()
                if batch.overflowed:
                    self._want_full(self._known)
                if pending or self._verified or now >= next_full_round or self._owed():
                    events, pending = pending, []
                    await self._round(events)
                    next_full_round = now + self.interval_s
                await asyncio.sleep(self.eager_s)
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
            await self.close()

    async def close(self) -> None:
        tasks = [lane.sending for lane in self._lanes.values() if lane.sending is not None]
        if self._map_refresh is not None:
            tasks.append(self._map_refresh)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        with contextlib.suppress(Exception):
            await self.meta.close()

    async def _register(self) -> None:
        delay = 0.05
        while True:
            try:
                await self.meta.register_chunk_server(
                    self.node.server_id, self.node.address, self.node.config.rack
                )
            except KeelError as exc:
                log.info("registration with the config group failed (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            self.registered = True
            log.info("registered chunk server %s at %s", self.node.server_id, self.node.address)
            return

    def _want_full(self, addresses: Any) -> None:
        """Send these masters a full report next (the events since their last one may be
        lost to them); a full report already on its way, taken before, does not count."""
        for address in addresses:
            self._needs_full.add(address)
            self._full_marks[address] = self._full_marks.get(address, 0) + 1

    def _owed(self) -> bool:
        """A lane holds increments and nothing is on its way to its master: they go now, not
        with the next round's events or the next interval."""
        return any(lane.owes() and not lane.busy() for lane in self._lanes.values())

    async def _masters(self) -> list[str]:
        """Every shard's members, by the ShardMap known now. The map is refreshed in the
        background, one fetch at a time (a member of the config group that is frozen must not
        hold up the round); before the first map arrives, the round waits for it."""
        if self._map_refresh is None or self._map_refresh.done():
            self._map_refresh = asyncio.create_task(self._refresh_map(), name="chunk-map")
        if self._map is None:
            await asyncio.shield(self._map_refresh)
        if self._map is None:
            return []
        return sorted({a for members in self._map.shards.values() for a in members.values()})

    async def _refresh_map(self) -> None:
        since = self._map.version if self._map is not None else None
        with contextlib.suppress(KeelError):
            fetched = await self.meta.fetch_shard_map(since, stale_ok=True, deadline=2.0)
            if fetched is not None:
                self._map = fetched[0]

    def _stub(self, address: str) -> Any:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = open_aio_channel(
                address, self.node.config.tls, _MASTER_CHANNEL_OPTIONS
            )
        return mpb_grpc.NamespaceStub(channel)

    async def _round(self, events: list[Any]) -> None:
        masters = await self._masters()
        if not masters:
            return
        st = self.node.status()
        base = mpb.ChunkHeartbeatRequest(
            server_id=st.server_id,
            address=st.address,
            rack=st.rack,
            capacity=st.capacity_bytes,
            used=st.used_bytes,
            load=st.being_written,
        )
        added = [
            _report(e.replica)
            for e in events
            if e.kind is EventKind.FINALIZED and e.replica.state is ReplicaState.FINALIZED
        ]
        removed = [_report(e.replica) for e in events if e.kind is EventKind.DELETED]
        corrupt = [_report(e.replica) for e in events if e.kind is EventKind.CORRUPT]
        verified, self._verified = self._verified, []
        full: list[mpb.ReplicaReport] | None = None
        # a master this server did not report to last round (its shard left the map and came
        # back, say) missed the increments meanwhile: it gets a full report again
        self._want_full(self._known - self._last_round)
        self._last_round = set(masters)
        for gone in set(self._lanes) - self._last_round:
            lane = self._lanes.pop(gone)
            if lane.sending is not None:
                lane.sending.cancel()
        for address in masters:
            lane = self._lanes.setdefault(address, _Lane())
            lane.owe(added, removed, corrupt, verified)
            if lane.size() > MAX_LANE_REPORTS:
                self._want_full((address,))
            if lane.busy():
                continue  # its last heartbeat is still on its way: these wait in its lane
            wants_full = address not in self._known or address in self._needs_full
            req = lane.take(full=wants_full)
            if wants_full:
                lane.full_mark = self._full_marks.get(address, 0)
                if full is None:
                    full = [
                        _report(r)
                        for r in self.node.block_report()
                        if r.state is ReplicaState.FINALIZED and not r.corrupt
                    ]
                req.full_report = True
                req.replicas.extend(full)
            req.MergeFrom(base)
            lane.sending = asyncio.create_task(self._send(address, req), name="heartbeat")
        await asyncio.sleep(0)  # let the heartbeats start

    async def _send(self, address: str, req: mpb.ChunkHeartbeatRequest) -> None:
        try:
            reply = await self._stub(address).ChunkHeartbeat(req, timeout=self.rpc_timeout_s)
        except grpc.RpcError as exc:
            self.stats["failures"] += 1
            self._want_full((address,))  # it may miss these increments: start over there
            log.debug("heartbeat to %s failed: %s", address, exc.code())
            return
        self.stats["heartbeats"] += 1
        self._known.add(address)
        if reply.want_full_report:
            self._want_full((address,))
        elif req.full_report:
            lane = self._lanes.get(address)
            if lane is not None and lane.full_mark == self._full_marks.get(address, 0):
                self._needs_full.discard(address)  # nobody asked for another since
        if reply.block_keys:
            keys = [
                BlockKey(k.key_id, k.secret, k.active_ms, k.expires_ms) for k in reply.block_keys
            ]
            try:
                await self.node.learn_keys(keys)
            except OSError as exc:
                log.warning("could not keep the block keys: %s", exc)
        for command in reply.commands:
            self._commands.put_nowait(command)

    async def _verify(
        self, fence: Fence, block_id: int, gen: int, token: int, access: bytes
    ) -> None:
        """Verify one replica; a good one is noted for the next round. A corrupt one raises
        ``CorruptReplica`` after the store marked it (its CORRUPT event is the report)."""
        await self.node.execute(VerifyBlock(fence, block_id, gen, access))
        self._verified.append(mpb.VerifiedReplica(block_id=block_id, gen_stamp=gen, token=token))

    async def _execute_commands(self) -> None:
        while True:
            cmd = await self._commands.get()
            fence = Fence(cmd.shard, cmd.epoch)
            # a block without its token gets b"" (refused)
            tokens = [*cmd.block_tokens, *[b""] * (len(cmd.blocks) - len(cmd.block_tokens))]
            try:
                if cmd.kind == "delete":
                    blocks = tuple((b.block_id, b.gen_stamp) for b in cmd.blocks)
                    await self.node.execute(DeleteBlocks(fence, blocks, tuple(tokens)))
                elif cmd.kind == "replicate":
                    targets = tuple(Target(t.address, t.server_id) for t in cmd.targets)
                    for b, access in zip(cmd.blocks, tokens, strict=False):
                        await self.node.execute(
                            ReplicateBlock(fence, b.block_id, b.gen_stamp, targets, access)
                        )
                elif cmd.kind == "verify":
                    for b, access in zip(cmd.blocks, tokens, strict=False):
                        await self._verify(fence, b.block_id, b.gen_stamp, cmd.token, access)
                else:
                    log.warning("unknown command %r from a master", cmd.kind)
                    continue
                self.stats["commands"] += 1
            except KeelError as exc:
                self.stats["refused"] += 1
                log.info("command %s from %s@%d not done: %s", cmd.kind, cmd.shard, cmd.epoch, exc)
