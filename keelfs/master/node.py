"""``MetaNode``: one metadata process hosting config-group and/or data-shard Raft members.

Shape (as ``keelfs.runtime.server``): one ``RaftHost`` whose ``GrpcTransport`` listens on
the Raft address, and a second gRPC server on the client address for the metadata API
(``proto/meta.proto``): ``Config`` when the node holds a config-group member, ``Namespace``
when it holds data-shard members, ``Node`` (status) always. Both role commands,
``keelfs config-server`` and ``keelfs master``, build one of these; a process
may host a config member and several shards' members at once (multi-raft: one host, one
transport, one synced write per round for all of them).

What a node keeps besides its groups:

- **the ShardMap**, as last fetched from the config group (its own member or the
  ``--config-servers``): polled every ``map_refresh_s`` with the cheap ``since_version`` form
  (a stale-ok read, so the poll does not wake a quiet config group), and re-fetched
  linearizably, at once, when a request carries a NEWER map version than the node knows;
- **its registration**: at start it records its client address in the config group's node
  registry (``RegisterMaster``), retrying until that succeeds; config servers register too, so
  that a follower can name the config leader's client address in ``NOT_LEADER``;
- **an internal** ``PeerClient`` (``keelfs.master.peers``) for what one master asks of another
  (transactions, moves, orphan checks, cross-shard mkdir).

Node ids must be unique among ALL metadata nodes (config servers and masters): the registry
is keyed by node id. Time: every command is wrapped in an ``Envelope`` stamped, when it is
proposed, with the log time this node's member reckons (``LogClock``: the log's own time
carried forward by this node's monotonic clock, never a jump to its wall clock); nothing
reads a clock inside ``apply``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from keelfs import failpoints
from keelfs.client.trash import DEFAULT_TRASH_INTERVAL_MS
from keelfs.errors import InvalidArgument, KeelError, NotFound, NotLeader, Redirect, Unavailable
from keelfs.master.audit import AuditLog
from keelfs.master.block_keys import BlockKeys
from keelfs.master.block_service import DEFAULT_MIN_REPLICAS
from keelfs.master.blocks import DEFAULT_DEAD_AFTER_S, ChunkRegistry
from keelfs.master.callers import DEFAULT_SUPERUSER_GROUP, Callers
from keelfs.master.config_service import ConfigServicer
from keelfs.master.guards import GuardSpreader
from keelfs.master.member import LogClock, Member, StructureLock, now_ms
from keelfs.master.namespace_service import NamespaceServicer
from keelfs.master.node_service import NodeServicer
from keelfs.master.peers import PeerClient
from keelfs.master.quota_service import QuotaReporter
from keelfs.master.replication import ReplicationMonitor
from keelfs.master.resharding import Resharder
from keelfs.master.transactions import DEFAULT_PREPARE_TIMEOUT_MS, TxnManager
from keelfs.master.trash_emptier import TrashEmptier
from keelfs.master.tree_delete import TreeDeletes
from keelfs.master.tree_move import TreeMoves
from keelfs.meta import paths
from keelfs.meta.commands import (
    DEFAULT_REPLICATION,
    MAX_COMMAND_BYTES,
    Command,
    Envelope,
    Result,
)
from keelfs.meta.machine import DEFAULT_SESSION_TTL_MS
from keelfs.meta.namespace import (
    DEFAULT_LEASE_TTL_MS,
    DEFAULT_TXN_RETENTION_MS,
    ShardStateMachine,
)
from keelfs.meta.principals import Caller
from keelfs.meta.ranges import FROZEN, MOVED
from keelfs.meta.ring import DEFAULT_VNODES
from keelfs.meta.sessions import DEFAULT_MAX_SESSIONS_PER_USER
from keelfs.meta.shard_records import DEFAULT_MAX_LEASES_PER_SESSION, DEFAULT_MAX_OPEN_TXNS
from keelfs.meta.shardmap import ConfigStateMachine, ServerAdminState, ShardMap
from keelfs.rpc.access import server_interceptors
from keelfs.rpc.addresses import advertised_address, split_advertise
from keelfs.rpc.pb import meta_pb2 as pb
from keelfs.rpc.wire import (
    CONFIG_GROUP,
    MAX_REQUEST_BYTES,
    check_header,
    group_status_to_pb,
    session_id_from_pb,
    shard_map_from_pb,
)
from keelfs.runtime.group import RaftGroup
from keelfs.runtime.host import HostConfig, RaftHost
from keelfs.runtime.lifecycle import keep_running
from keelfs.storage.format import check_data_format
from keelfs.tls.credentials import Authenticator, TlsSettings, add_port
from keelfs.transport.base import OnMessages, Transport
from keelfs.transport.grpc_transport import GrpcTransport, GrpcTransportConfig

__all__ = [
    "LogClock",
    "Member",
    "MetaNode",
    "NodeConfig",
    "NodeFailed",
    "StructureLock",
    "now_ms",
]

log = logging.getLogger("keelfs.master")


_LOCK_POLL_S = 0.005
_LOCK_POLL_MAX_S = 0.1


def without_failpoints(servicer: Any) -> Any:
    """``servicer`` with ``Node.SetFailpoint`` answered ``UNIMPLEMENTED`` — as gRPC answers a
    method nobody serves — unless this process started with failpoints enabled
    (``KEELFS_FAILPOINTS``): a production process exposes no way to make it crash."""
    if failpoints.ENABLED:
        return servicer

    async def absent(request: Any, context: Any) -> Any:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "SetFailpoint: this process did not start with KEELFS_FAILPOINTS",
        )

    servicer.SetFailpoint = absent
    return servicer


class NodeFailed(Exception):
    """The Raft runtime of this node died; the process exits with status 1 (fail-stop)."""


DEFAULT_MAX_CONCURRENT_RPCS = 4096
"""Enough for many clients' calls at once (each long-poll or stream holds one); a bound on
the memory a flood of calls can take."""


@dataclass
class NodeConfig:
    node_id: int
    listen: str
    data_dir: Path
    client_listen: str = ""
    """Empty: the host of ``listen`` with its port + 1 (0 if ``listen`` asks for any port)."""
    advertise: str = ""
    """The client address others are told, ``HOST`` or ``HOST:PORT`` (``keelfs.rpc.addresses``):
    registered with the config group, in ``Status`` and leader hints; its host also stands
    for the Raft address's. Empty: the address listened on."""
    raft_advertise: str = ""
    """The Raft address ``Status`` reports, ``HOST`` or ``HOST:PORT``; empty: the host of
    ``advertise`` with the Raft port (peers dial what ``--peers``/``add-member`` told them)."""
    raft_stream_port: int | None = 0
    """Port of the Raft transport's framed streams on ``listen``'s host (0: any free one,
    told to peers at every handshake); None: none, every link over gRPC."""
    peers: dict[int, str] | None = None
    """Raft addresses of every initial member, for groups bootstrapped by this start."""
    config_member: bool = False
    shards: tuple[str, ...] = ()
    config_servers: tuple[str, ...] = ()
    """Client addresses of config servers (any subset; more are learned from them)."""
    host: HostConfig = field(default_factory=HostConfig)
    session_ttl_ms: int = DEFAULT_SESSION_TTL_MS
    lease_ttl_ms: int = DEFAULT_LEASE_TTL_MS
    txn_prepare_timeout_ms: int = DEFAULT_PREPARE_TIMEOUT_MS
    txn_retention_ms: int = DEFAULT_TXN_RETENTION_MS
    min_replicas: int = DEFAULT_MIN_REPLICAS
    """Replicas every block of a file needs reported before ``Complete`` succeeds."""
    default_replication: int = DEFAULT_REPLICATION
    """Replication of a file created without one (the client sent 0): 3, or 1 for the
    all-in-one ``keelfs server`` with its single chunk server."""
    join: bool = False
    """Groups this node holds no member of start empty, waiting to be added (no ``peers``)."""
    chunk_dead_after_s: float = DEFAULT_DEAD_AFTER_S
    """A chunk server silent this long is dead: its replicas no longer count."""
    vnodes: int = DEFAULT_VNODES
    map_refresh_s: float = 1.0
    superuser_group: str = DEFAULT_SUPERUSER_GROUP
    """Members of this group are superusers (``keelfs.master.callers``)."""
    audit_log: Path | None = None
    """Where the audit log goes (``keelfs.master.audit``); None: nowhere."""
    max_concurrent_rpcs: int = DEFAULT_MAX_CONCURRENT_RPCS
    """Client calls in progress at once on the client address; more get RESOURCE_EXHAUSTED
    (the client backs off and retries: the call was never started)."""
    max_sessions_per_user: int = DEFAULT_MAX_SESSIONS_PER_USER
    """Replicated semantics of the shards (the same on every master)."""
    max_leases_per_session: int = DEFAULT_MAX_LEASES_PER_SESSION
    """Replicated semantics of the shards (the same on every master)."""
    max_open_txns: int = DEFAULT_MAX_OPEN_TXNS
    """Replicated semantics of the shards (the same on every master)."""
    trash_interval_ms: int = DEFAULT_TRASH_INTERVAL_MS
    """How long the trash keeps what ``rm`` moved there (``keelfs.client.trash``); 0: no
    trash. Clients learn it from ``GetServerDefaults``; the leader of the shard holding
    ``/.Trash``'s children empties it (``keelfs.master.trash_emptier``). The same on every
    master."""
    tls: TlsSettings | None = None
    """This node's TLS material (``keelfs.tls``): mutual TLS on both ports and every channel,
    the access classes of ``keelfs.rpc.access`` enforced. None: plain gRPC (loopback, or
    ``--insecure``)."""

    def client_address(self) -> str:
        if self.client_listen:
            return self.client_listen
        host, _, port = self.listen.rpartition(":")
        return f"{host}:{int(port) + 1 if int(port) else 0}"


class MetaNode:
    def __init__(self, config: NodeConfig) -> None:
        if not config.config_member and not config.shards:
            raise ValueError("a node hosts the config group, some shards, or both")
        self.config = config
        self.node_id = config.node_id
        self.authenticator = None if config.tls is None else Authenticator(config.tls)
        """Who is calling (with TLS): identities bound to what requests claim."""
        self.client_address = config.client_address()
        self.host: RaftHost | None = None
        self.config_member: Member | None = None
        self.shards: dict[str, Member] = {}
        self.shard_map = ShardMap(0, {}, config.vnodes)
        self.nodes: dict[int, str] = {}
        """The node registry as last fetched (node id -> client address)."""
        self.registered = False
        self.internal: PeerClient = None  # type: ignore[assignment]  # made on the loop in start()
        self._server: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._refresh: asyncio.Task[None] | None = None
        self._map_changed = asyncio.Event()
        self.txns = TxnManager(self, prepare_timeout_ms=config.txn_prepare_timeout_ms)
        self.tree_deletes = TreeDeletes()
        self.tree_moves = TreeMoves(self)
        """Recursive deletes too large for one transaction, in steps (``cross_shard``)."""
        self.resharder = Resharder(self)
        self.chunks = ChunkRegistry(dead_after_s=config.chunk_dead_after_s)
        self.replication = ReplicationMonitor(self)
        self.block_keys = BlockKeys(self)
        self.callers = Callers(self.authenticator, superuser_group=config.superuser_group)
        """Who each request acts for (the certificate's user with TLS)."""
        self.audit = AuditLog(config.audit_log, config.node_id)
        self.guards = GuardSpreader(self)
        self.trash = TrashEmptier(self)
        self.quota_reports = QuotaReporter(self)

    # ------------------------------------------------------------------ lifecycle
    def _transport(self, on_messages: OnMessages) -> Transport:
        # Ping idle links every second: quiesced groups learn of a frozen or vanished leader
        # node from the link, since they exchange no Raft messages.
        tcfg = GrpcTransportConfig(
            keepalive_time_ms=1_000,
            keepalive_timeout_ms=1_000,
            stream_port=self.config.raft_stream_port,
        )
        return GrpcTransport(
            self.node_id, self.config.listen, on_messages, config=tcfg, tls=self.config.tls
        )

    @property
    def raft_address(self) -> str:
        assert self.host is not None
        transport = self.host.transport
        bound = transport.address if isinstance(transport, GrpcTransport) else self.config.listen
        cfg = self.config
        if cfg.raft_advertise:
            return advertised_address(cfg.raft_advertise, bound)
        if cfg.advertise:
            return advertised_address(split_advertise(cfg.advertise)[0], bound)
        return bound

    async def start(self) -> None:
        cfg = self.config
        host = self.host = self._raft_host()
        await host.start()
        if cfg.config_member:
            csm = ConfigStateMachine(
                None, vnodes=cfg.vnodes, session_ttl_ms=cfg.session_ttl_ms
            )  # small: in memory, rebuilt from the snapshot and the log on restart
            self.config_member = Member(CONFIG_GROUP, self._open(CONFIG_GROUP, csm), csm)
        for shard_id in cfg.shards:
            ssm = self._shard_state_machine(shard_id)
            self.shards[shard_id] = Member(shard_id, self._open(shard_id, ssm), ssm)
        servicers: dict[str, Any] = {"Node": without_failpoints(NodeServicer(self))}
        if self.config_member is not None:
            servicers["Config"] = ConfigServicer(self)
        if self.shards:
            servicers["Namespace"] = NamespaceServicer(self)
        await self._serve(servicers)
        seeds = list(cfg.config_servers)
        if self.config_member is not None and self.client_address not in seeds:
            seeds.insert(0, self.client_address)
        if not seeds:
            raise ValueError("a master needs --config-servers")
        self.internal = self._internal_client(seeds)
        loops: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("register", self._register_loop),
            ("shard-map", self._map_loop),
        ]
        if self.shards:
            loops += [
                ("keys", self.block_keys.refresh_loop),
                ("txn-recovery", self.txns.recovery_loop),
                ("tree-move-recovery", self.tree_moves.recovery_loop),
                ("replication", self.replication.loop),
                ("trash", self.trash.loop),
                ("quota-reports", self.quota_reports.loop),
            ]
        if self.config_member is not None:
            loops += [("resharding", self.resharder.loop), ("rotate", self.block_keys.rotate_loop)]
        # Each is restarted if it fails: the node serves on without them for a while, but one
        # that died unseen would stop its work for good (keelfs.runtime.lifecycle.keep_running).
        self._tasks = [
            asyncio.create_task(keep_running(f"node {self.node_id}: {name}", loop), name=name)
            for name, loop in loops
        ]

    # The parts of a node that touch the outside world, one method each, so that an in-process
    # simulation (keelfs.testing.clustersim) can run this same node over an in-memory network
    # with in-process calls: the Raft host (and through _transport its network), the state
    # machine of a shard, where the servicers are served, and the client for other nodes.
    def _raft_host(self) -> RaftHost:
        cfg = self.config
        check_data_format(cfg.data_dir)  # before anything in it is opened (docs/operations.md)
        return RaftHost(cfg.node_id, cfg.data_dir, self._transport, cfg.host)

    def _shard_state_machine(self, shard_id: str) -> ShardStateMachine:
        cfg = self.config
        return ShardStateMachine(
            cfg.data_dir / "shards" / shard_id,
            shard_id=shard_id,
            session_ttl_ms=cfg.session_ttl_ms,
            lease_ttl_ms=cfg.lease_ttl_ms,
            txn_retention_ms=cfg.txn_retention_ms,
            max_sessions_per_user=cfg.max_sessions_per_user,
            max_leases_per_session=cfg.max_leases_per_session,
            max_open_txns=cfg.max_open_txns,
        )

    async def _serve(self, servicers: dict[str, Any]) -> None:
        """Serve ``servicers`` (service name -> servicer) on the client address, with gRPC."""
        from keelfs.rpc.pb import meta_pb2_grpc

        server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
                ("grpc.max_send_message_length", 64 << 20),
            ],
            maximum_concurrent_rpcs=self.config.max_concurrent_rpcs,
            interceptors=server_interceptors(self.config.tls, str(self.node_id)),
        )
        grpc_mod: Any = meta_pb2_grpc
        for name, servicer in servicers.items():
            getattr(grpc_mod, f"add_{name}Servicer_to_server")(servicer, server)
        port = add_port(server, self.client_address, self.config.tls)
        bound = f"{self.client_address.rpartition(':')[0]}:{port}"
        self.client_address = advertised_address(self.config.advertise, bound)
        await server.start()
        self._server = server

    def _internal_client(self, seeds: list[str]) -> PeerClient:
        """The client this node asks other nodes with (``seeds``: config servers)."""
        # as the OS user running this master (a superuser, ``keelfs.master.callers``),
        # whatever $KEELFS_USER says
        return PeerClient(
            seeds,
            deadline=10.0,
            attempt_timeout=2.0,
            tls=self.config.tls,
            user=self.callers.process_user,
        )

    def _open(self, group_id: str, sm: Any) -> RaftGroup:
        host = self.host
        assert host is not None
        if group_id in host.engine.group_ids():
            return host.open_group(group_id, sm)
        peers = self.config.peers
        if not peers:
            if self.config.join:  # an empty member: the leader adds it (keelfs admin add-member)
                return host.open_group(group_id, sm)
            raise SystemExit(
                f"{self.config.data_dir} holds no member of {group_id}: pass --peers (bootstrap) "
                "or --join (wait to be added with keelfs admin add-member)"
            )
        return host.open_group(group_id, sm, peers)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks = []
        if self.internal is not None:
            with contextlib.suppress(Exception):
                await self.internal.close()
        if self._server is not None:
            await self._server.stop(0.2)
            self._server = None
        if self.host is not None:
            await self.host.stop()
            self.host = None
        self.audit.close()
        for m in self.shards.values():
            m.sm.close()

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        return self.host.tasks if self.host is not None else []

    def ready_info(self) -> dict[str, Any]:
        return {
            "id": self.node_id,
            "raft": self.raft_address,
            "client": self.client_address,
            "pid": os.getpid(),
            "data": str(self.config.data_dir),
            "config_member": self.config_member is not None,
            "shards": sorted(self.shards),
        }

    def status(self) -> pb.StatusReply:
        """This node's answer to ``Node.Status`` (see ``proto/meta.proto``)."""
        assert self.host is not None
        now = self.chunks.now()
        resharding = self.resharder.status()
        return pb.StatusReply(
            id=self.node_id,
            raft_address=self.raft_address,
            client_address=self.client_address,
            pid=os.getpid(),
            data_dir=str(self.config.data_dir),
            config_member=self.config_member is not None,
            shards=sorted(self.shards),
            groups={gid: group_status_to_pb(g.status()) for gid, g in self.host.groups.items()},
            map_version=self.shard_map.version,
            registered=self.registered,
            resharding=pb.ReshardingStatus(**resharding),
            chunk_servers={
                st.server_id: pb.ChunkServerStatus(
                    address=st.address,
                    rack=st.rack,
                    live=self.chunks.live(st.server_id),
                    reported=st.reported,
                    capacity=st.capacity,
                    used=st.used,
                    last_heartbeat_s_ago=round(now - st.last_seen, 3),
                )
                for st in self.chunks.servers.values()
            },
            blocks=len(self.chunks.replicas),
            replication=self.replication.stats,
            block_health={
                shard: pb.BlockHealth(**health) for shard, health in self.replication.health.items()
            },
            rounds=self.host.rounds,
            drain=self.replication.drain_status(),
        )

    # ------------------------------------------------------------------ background work
    async def _register_loop(self) -> None:
        delay = 0.05
        while True:
            try:
                await self.internal.register_master(self.node_id, self.client_address)
            except KeelError as exc:
                log.info("registration with the config group failed (%s); retrying", exc)
            else:
                self.registered = True
                log.info("registered node %d at %s", self.node_id, self.client_address)
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _map_loop(self) -> None:
        while True:
            with contextlib.suppress(KeelError):
                await self.refresh_map(linearizable=False)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._map_changed.wait(), self.config.map_refresh_s)
            self._map_changed.clear()

    def poke_map_refresh(self) -> None:
        """The map may have changed (a config write here): refresh soon."""
        self._map_changed.set()

    async def refresh_map(self, *, linearizable: bool) -> ShardMap:
        """Fetch the map if newer (concurrent callers share one linearizable fetch)."""
        if not linearizable:
            await self._fetch(stale_ok=True)
            return self.shard_map
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.create_task(self._fetch(stale_ok=False))
        await asyncio.shield(self._refresh)
        return self.shard_map

    async def _fetch(self, *, stale_ok: bool) -> None:
        reply = await self.internal.fetch_map_reply(
            since_version=self.shard_map.version, stale_ok=stale_ok, deadline=3.0
        )
        if reply.unchanged:
            return
        new_map = shard_map_from_pb(reply.map)
        nodes = {int(k): v for k, v in reply.nodes.items()}
        if new_map.version >= self.shard_map.version:
            # the chunk servers' administrative states travel with the map (each change of
            # them is a new map version): keelfs.master.blocks
            self.chunks.set_admin_states(
                ServerAdminState(a.server_id, a.state, a.until_ms, a.since_ms)
                for a in reply.server_states
            )
        if new_map.version > self.shard_map.version:
            log.info("shard map version %d -> %d", self.shard_map.version, new_map.version)
            self.shard_map = new_map
        self.nodes = dict(nodes)

    # ------------------------------------------------------------------ routing
    async def map_for(self, wanted: int) -> ShardMap:
        """The map to route by, at least as new as ``wanted`` (the client's version); with no
        shard in ours yet (just started), we ask the config group first."""
        if wanted > self.shard_map.version or not self.shard_map.shards:
            with contextlib.suppress(KeelError):
                await asyncio.wait_for(self.refresh_map(linearizable=True), 3.0)
            if wanted > self.shard_map.version or not self.shard_map.shards:
                raise Unavailable(
                    f"shard map version {wanted} is not known here yet "
                    f"(this node has {self.shard_map.version})"
                )
        return self.shard_map

    def redirect(self, m: ShardMap, path: str, owner: str) -> Redirect:
        addresses = {str(k): v for k, v in sorted(m.shards.get(owner, {}).items())}
        return Redirect(path, owner, m.version, addresses)

    async def route(self, header: pb.RequestHeader, path: str, *, by_directory: bool) -> Member:
        """The local member of the shard that must serve ``path``: the owner of its entry
        (its parent directory's shard), or with ``by_directory`` the owner of the directory
        itself (its self-record and children). ``REDIRECT`` if that is not here, or if the
        client's map is older than ours.

        A replay (``header.session_shard``, see ``keelfs.meta.commands.Envelope.replay``) is
        not routed by path: it goes to the shard whose session it carries, whatever the maps
        and ranges say, since only that shard's reply cache knows whether it applied."""
        check_header(header)
        if header.session_shard:
            return await self.shard_member(header, header.session_shard)
        m = await self.map_for(header.map_version)
        owner = m.shard_for_directory(path) if by_directory else m.shard_for_path(path)
        member = self.shards.get(owner)
        if member is None or (header.map_version and header.map_version < m.version):
            raise self.redirect(m, path, owner)
        await self.check_moves(member, path, by_directory, 3.0)
        return member

    def route_at_once(self, header: pb.RequestHeader, path: str) -> Member | None:
        """What ``route(header, path, by_directory=False)`` returns when it would neither
        wait nor refuse: the local member owning ``path``'s entry, the client's map as new as
        ours, no move of its directory under way here. None otherwise (a replay, a map to
        fetch first, a redirect, a move): the caller takes ``route`` then, which answers."""
        check_header(header)
        m = self.shard_map
        wanted = header.map_version
        if header.session_shard or not m.shards or (wanted and wanted != m.version):
            return None
        member = self.shards.get(m.shard_for_path(path))
        if member is None:
            return None
        state = member.sm.range_of(path if path == paths.ROOT else paths.parent(path))
        if state is not None and state.state != FROZEN:
            return None
        return member

    async def check_moves(
        self, member: Member, path: str, by_directory: bool, timeout: float
    ) -> None:
        """What this shard's own state says of ``path`` while shards are added or removed
        (``keelfs.meta.moves``): ``REDIRECT`` if its directory has moved away (whatever our
        map says), a wait while it is moving here. Called when routing, and by reads again
        after their barrier (a move may have committed in between)."""
        directory = path if by_directory or path == paths.ROOT else paths.parent(path)
        deadline = time.monotonic() + timeout
        delay = _LOCK_POLL_S
        while True:
            state = member.sm.range_of(directory)
            if state is None or state.state == FROZEN:
                return
            if state.state == MOVED:
                m = await self.map_for(state.version)
                owner = m.shard_for_directory(path) if by_directory else m.shard_for_path(path)
                raise self.redirect(m, path, owner)
            if deadline - time.monotonic() <= delay:
                raise Unavailable("locked", message=f"{directory} is moving to this shard; retry")
            await asyncio.sleep(delay)
            delay = min(delay * 2, _LOCK_POLL_MAX_S)

    async def shard_member(self, header: pb.RequestHeader, shard_id: str) -> Member:
        """The local member of ``shard_id`` (session RPCs name their shard)."""
        check_header(header)
        m = await self.map_for(header.map_version)
        member = self.shards.get(shard_id)
        if shard_id not in m.shards:
            if member is not None:  # hosted, but not (yet) in the map: serve it anyway
                return member
            raise NotFound(shard_id, "shard")
        if member is None:
            raise self.redirect(m, "", shard_id)
        return member

    def client_address_of(self, group_id: str, node_id: int) -> str | None:
        """A leader hint: the client address of ``node_id`` (a member of ``group_id``)."""
        if group_id == CONFIG_GROUP and self.config_member is not None:
            address = self.config_member.sm.masters().get(node_id)
            if address:
                return str(address)
        members = self.shard_map.shards.get(group_id, {})
        return members.get(node_id) or self.nodes.get(node_id)

    def for_clients(self, err: NotLeader) -> NotLeader:
        """``err`` as a client is told it: the Raft runtime names the leader by its Raft
        address (``raft_address``), which a client cannot call; the leader's client address
        takes its place (None when this node does not know it). Every servicer passes its
        ``NotLeader`` through here (``ServicerBase.serve``)."""
        if err.leader_address is not None or not err.leader_id:
            return err
        address = self.client_address_of(err.group_id, err.leader_id)
        return NotLeader(err.group_id, err.leader_id, address)

    # ------------------------------------------------------------------ proposing and reading
    async def propose(
        self,
        member: Member,
        command: Command,
        header: pb.RequestHeader | None,
        timeout: float,
        caller: Caller | None = None,
    ) -> tuple[Result, int, int]:
        """Validate ``command`` (stateless), wrap it with the log time (``LogClock``) and the
        request's session, replicate it, and return the state machine's ``Result`` and where it
        committed. Raises ``KeelError`` when it could not be applied (``NotLeader`` naming the
        leader's Raft address: see ``for_clients``). ``caller``: who the command acts for
        (None: the master itself, a superuser)."""
        command.validate()
        self.check_session(command, header)
        deadline = time.monotonic() + timeout
        packable = command.op in member.sm.packable_ops
        data = self.envelope(member, command, header, caller)
        outcome = await member.group.propose_entry(data, timeout, packable=packable)
        return await self.propose_while_locked(member, command, header, caller, deadline, outcome)

    @staticmethod
    def check_session(command: Command, header: pb.RequestHeader | None) -> None:
        """``InvalidArgument`` if ``command`` needs a client session and ``header`` has none."""
        sid = session_id_from_pb(header.session_id) if header else 0
        if command.needs_session and not sid:
            raise InvalidArgument(f"{command.op} must be sent in a client session", "session_id")

    @staticmethod
    def envelope(
        member: Member,
        command: Command,
        header: pb.RequestHeader | None,
        caller: Caller | None,
        now_ms: int | None = None,
    ) -> bytes:
        """The entry that proposes ``command`` on ``member`` now: wrapped with the log time
        (``now_ms``, else ``member.log_time()``), ``header``'s session and ``caller``.
        ``InvalidArgument`` if it is too large, ``NotLeader`` on a follower."""
        sid, seq = (session_id_from_pb(header.session_id), header.seq) if header else (0, 0)
        replay = header is not None and bool(header.session_shard)
        when = member.log_time() if now_ms is None else now_ms
        data = Envelope(command, when, sid, seq, replay, caller).encode()
        if len(data) > MAX_COMMAND_BYTES:
            raise InvalidArgument(f"command of {len(data)} bytes (at most {MAX_COMMAND_BYTES})")
        if not member.group.is_leader:
            raise member.group.not_leader_error()
        return data

    async def propose_while_locked(
        self,
        member: Member,
        command: Command,
        header: pb.RequestHeader | None,
        caller: Caller | None,
        deadline: float,
        outcome: tuple[Any, int, int],
    ) -> tuple[Result, int, int]:
        """``outcome``, a proposal's of ``command``; or, while a cross-shard transaction held
        its path (nothing was applied, nor the seq used up), the outcome of proposing it again
        once the transaction has had time to finish, until ``deadline``."""
        delay = _LOCK_POLL_S
        packable = command.op in member.sm.packable_ops
        while True:
            result, index, term = outcome
            assert isinstance(result, Result)
            if not _locked(result) or deadline - time.monotonic() <= delay:
                return result, index, term
            await asyncio.sleep(delay)
            delay = min(delay * 2, _LOCK_POLL_MAX_S)
            timeout = max(0.01, deadline - time.monotonic())
            data = self.envelope(member, command, header, caller)
            outcome = await member.group.propose_entry(data, timeout, packable=packable)

    async def wait_unlocked(self, member: Member, path: str, timeout: float) -> None:
        """Wait while a cross-shard transaction locks ``path`` on this member (its outcome is
        not applied here yet); ``Unavailable`` (reason "locked") if it outlasts ``timeout``."""
        deadline = time.monotonic() + timeout
        delay = _LOCK_POLL_S
        while True:
            holder = member.sm.lock_holder(path)
            if not holder:
                return
            if deadline - time.monotonic() <= delay:
                raise Unavailable(
                    "locked", message=f"{path} is locked by cross-shard transaction {holder}"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, _LOCK_POLL_MAX_S)

    async def read(self, member: Member, stale_ok: bool, timeout: float) -> None:
        """Linearizable unless ``stale_ok``: a ReadIndex barrier on this member (leader or
        follower), after which its applied state reflects every acknowledged write."""
        if stale_ok:
            return
        await member.group.read_barrier(timeout)

    def require_leader(self, member: Member) -> None:
        """This node leads ``member``'s group (its state may still lack writes acknowledged
        before its term: checks on that state before proposing use ``lead``)."""
        if not member.group.is_leader:
            raise member.group.not_leader_error()

    async def lead(self, member: Member, timeout: float) -> None:
        """This node leads ``member``'s group and its state holds every acknowledged write
        (``RaftGroup.lead``): checks a leader makes on its state before it proposes are sound
        then, not before (right after an election a writer's acknowledged ``Create`` may be
        in the new leader's log and not yet applied: its ``AllocateBlock`` found no file)."""
        await member.group.lead(timeout)

    def reply_info(self, member: Member, index: int = 0, term: int = 0) -> pb.ReplyInfo:
        g = member.group
        return pb.ReplyInfo(
            node_id=self.node_id,
            group=member.group_id,
            map_version=self.shard_map.version,
            term=term or g.node.raft.term,
            index=index or g.applied_index(),
            leader=g.is_leader,
        )


def _locked(result: Result) -> bool:
    return result.error is not None and result.error.get("reason") == "locked"
