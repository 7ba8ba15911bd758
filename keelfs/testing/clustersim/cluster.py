"""The simulated metadata cluster: real ``MetaNode`` s wired to in-process networks.

``SimMetaNode`` is ``keelfs.master.node.MetaNode`` with its outside-world seams filled in:
its Raft host talks over a ``LocalNetwork`` endpoint and draws election timeouts from the
simulation's rng, its shards' state machines live in memory (rebuilt from the Raft log and
snapshot on restart, as the config group's always are), its servicers are registered on the
``RpcNet`` instead of a gRPC server, and its internal client calls other nodes through the
``RpcNet`` too. The Raft log is the real ``RocksEngine``, in a directory on tmpfs, whose
unsynced writes are held back until the next synced one (``_lose_unsynced_on_crash``), so that
a crash loses them as a power cut would.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import random
import shutil
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from keelfs.client._core import Call
from keelfs.master.node import MetaNode, NodeConfig
from keelfs.master.peers import PeerClient
from keelfs.meta.namespace import ShardStateMachine
from keelfs.raft.messages import Message
from keelfs.runtime.host import HostConfig, RaftHost
from keelfs.testing.clustersim.loop import NODE
from keelfs.testing.clustersim.rpc import RpcNet
from keelfs.transport.base import OnMessages, Transport
from keelfs.transport.local import LocalNetwork

__all__ = ["SimClient", "SimCluster", "SimMetaNode"]


class SimClient(PeerClient):
    """The real ``AsyncClient`` (routing, retries, sessions; with the masters' internal verbs:
    ``keelfs.master.peers``) with its calls made in-process
    from node ``origin`` (0: a client outside every node)."""

    def __init__(self, rpc: RpcNet, origin: int, seeds: Iterable[str], **kwargs: Any) -> None:
        super().__init__(list(seeds), batching=False, **kwargs)
        self._rpc = rpc
        self._origin = origin

    async def _call(self, call: Call) -> Any:
        return await self._rpc.invoke(self._origin, call)

    async def close(self) -> None:
        self._closed = True


class SimMetaNode(MetaNode):
    def __init__(self, config: NodeConfig, cluster: SimCluster) -> None:
        super().__init__(config)
        self.cluster = cluster
        self.unsynced: list[Any] = []
        """Writes the Raft host has made but not synced yet (lost if the node crashes)."""
        # placement breaks ties between equal chunk servers at random: seeded here
        self.chunks._rng = random.Random(cluster.rng.getrandbits(64))

    def _raft_host(self) -> RaftHost:
        cfg = self.config
        rng = random.Random(self.cluster.rng.getrandbits(64))
        host = RaftHost(cfg.node_id, cfg.data_dir, self._transport, cfg.host, rng=rng)
        self.unsynced = _lose_unsynced_on_crash(host)
        return host

    def _transport(self, on_messages: OnMessages) -> Transport:
        transport = self.cluster.network.add(self.node_id, on_messages)
        # a message arrives in this node's context (NODE), so that it waits while the node
        # is paused, as it would in a stopped process's socket
        arrive, ctx = transport._arrive, contextvars.copy_context()
        loop = asyncio.get_running_loop()

        def arrive_here(group_id: str, msg: Message) -> None:
            loop.call_soon(arrive, group_id, msg, context=ctx)

        transport._arrive = arrive_here  # type: ignore[method-assign]
        return transport

    def _shard_state_machine(self, shard_id: str) -> ShardStateMachine:
        cfg = self.config
        return ShardStateMachine(
            None,
            shard_id=shard_id,
            session_ttl_ms=cfg.session_ttl_ms,
            lease_ttl_ms=cfg.lease_ttl_ms,
            txn_retention_ms=cfg.txn_retention_ms,
        )

    async def _serve(self, servicers: dict[str, Any]) -> None:
        self.cluster.rpc.serve(self.client_address, self.node_id, servicers)

    def _internal_client(self, seeds: list[str]) -> PeerClient:
        return SimClient(self.cluster.rpc, self.node_id, seeds, deadline=10.0, attempt_timeout=2.0)


LEASE_TTL_MS = 3_000
"""Short, so that files whose writer died are recovered within a run (the simulated writers
do not renew their leases: a write that takes longer is not acknowledged)."""


def _lose_unsynced_on_crash(host: RaftHost) -> list[Any]:
    """Model the page cache: a write the runtime does not sync (a hard state that moved only
    the commit index) reaches the disk with the next synced write, and is lost if the node
    crashes before (its caches saw it at once, as reads of a page-cache write would). Without
    this, RocksDB's WAL would keep it: a process crash loses nothing, only a power cut does."""
    engine = host.engine
    write = engine._write
    unsynced: list[Any] = []

    def write_as_a_disk_would(wb: Any, sync: bool = True) -> None:
        if not sync:
            unsynced.append(wb)
            return
        for earlier in unsynced:
            write(earlier, False)
        unsynced.clear()
        write(wb, True)

    engine._write = write_as_a_disk_would  # type: ignore[method-assign]
    return unsynced


def raft_address(node_id: int) -> str:
    return f"local://{node_id}"


def client_address(node_id: int) -> str:
    return f"n{node_id}:7001"


class SimCluster:
    """Metadata nodes by id, started, crashed and restarted on the running ``SimLoop``."""

    CONFIG_NODES = (1, 2, 3)

    def __init__(
        self,
        root: Path,
        rng: random.Random,
        shards: dict[str, tuple[int, ...]],
        trace: Callable[[str], None],
        faults: Counter[str],
    ) -> None:
        self.root = root
        self.rng = rng
        self.network = LocalNetwork(random.Random(rng.getrandbits(64)))
        self.rpc = RpcNet(self.network)
        self.trace = trace
        self.faults = faults
        self.shards = dict(shards)
        """shard id -> its member node ids (shards added later included)."""
        self.configs: dict[int, NodeConfig] = {}
        self.nodes: dict[int, SimMetaNode] = {}
        """The running nodes."""
        self.down: set[int] = set()

    # -- layout -------------------------------------------------------------------------------
    def _groups_of(self, node_id: int) -> tuple[bool, tuple[str, ...]]:
        config = node_id in self.CONFIG_NODES
        shards = tuple(sorted(s for s, ids in self.shards.items() if node_id in ids))
        return config, shards

    def _config(self, node_id: int) -> NodeConfig:
        config, shards = self._groups_of(node_id)
        peers_of = set(self.CONFIG_NODES) if config else set()
        for s in shards:
            peers_of |= set(self.shards[s])
        return NodeConfig(
            node_id=node_id,
            listen=raft_address(node_id),
            client_listen=client_address(node_id),
            data_dir=self.root / f"n{node_id}",
            peers={i: raft_address(i) for i in sorted(peers_of)},
            config_member=config,
            shards=shards,
            config_servers=tuple(client_address(i) for i in self.CONFIG_NODES),
            host=HostConfig(
                tick_ms=15.0, election_tick=10, snapshot_every=400, keep_after_snapshot=50
            ),
            min_replicas=1,
            chunk_dead_after_s=3.0,
            lease_ttl_ms=LEASE_TTL_MS,
        )

    @property
    def config_addresses(self) -> list[str]:
        return [client_address(i) for i in self.CONFIG_NODES]

    def client(self, **kwargs: Any) -> SimClient:
        return SimClient(self.rpc, 0, self.config_addresses, **kwargs)

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self, node_id: int) -> None:
        cfg = self.configs.get(node_id)
        if cfg is None:
            cfg = self.configs[node_id] = self._config(node_id)
        ctx = contextvars.copy_context()
        ctx.run(NODE.set, node_id)  # the node's tasks run (and are paused) as this node
        node = ctx.run(SimMetaNode, cfg, self)
        self.nodes[node_id] = node
        self.down.discard(node_id)
        await asyncio.get_running_loop().create_task(node.start(), context=ctx)
        self.network.connect_all()

    async def crash(self, node_id: int) -> None:
        """Kill the node: its RPC handlers stop where they are, its Raft state stays as it was
        last written (what was synced survives), everything in memory is lost."""
        node = self.nodes.pop(node_id)
        self.down.add(node_id)
        if node.unsynced:
            self.faults["unsynced_writes_lost"] += len(node.unsynced)
            node.unsynced.clear()
        self.rpc.crash(node.client_address)
        await node.stop()

    async def stop_all(self) -> None:
        for node_id in sorted(self.nodes):
            with contextlib.suppress(Exception):
                await self.crash(node_id)
        shutil.rmtree(self.root, ignore_errors=True)

    def member(self, node_id: int, group: str) -> Any:
        """Node ``node_id``'s member of ``group`` ("config" or a shard id), or None."""
        node = self.nodes[node_id]
        return node.config_member if group == "config" else node.shards.get(group)

    def leader_of(self, group: str) -> int | None:
        for node_id in sorted(self.nodes):
            member = self.member(node_id, group)
            if member is not None and member.group.is_leader:
                return node_id
        return None

    def members(self, group: str) -> list[Any]:
        found = (self.member(node_id, group) for node_id in sorted(self.nodes))
        return [m for m in found if m is not None]


async def wait_until(
    probe: Callable[[], Any], timeout: float, what: str, step: float = 0.05
) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = probe()
        if value:
            return value
        if loop.time() >= deadline:
            raise TimeoutError(f"{what} (after {timeout:.0f} s of simulated time)")
        await asyncio.sleep(step)
