"""A metadata cluster of real processes on 127.0.0.1 (tests, benchmarks, a local cluster).

::

    with MetaCluster(tmp_path) as cluster:      # starts, registers, adds shards, formats
        fs = cluster.client()                   # a keelfs.client.Client (closed by stop_all)
        fs.mkdir("/a")
        leader = cluster.leader("shard-1")
        cluster.kill9(leader)
        cluster.restart(leader)                 # same id, addresses and data

The processes are laid out by ``keelfs.server.layout`` (as ``keelfs local-cluster`` lays out
its own), in one of its two metadata layouts (``layout=``):

- ``"cohosted"`` (default): 3 ``keelfs master --config-member`` processes, each hosting a
  config-group member and a member of every shard: ids 1..3. Light enough for two cores;
  killing a process kills one member of every group.
- ``"separate"``: one role per process as in production: 3 ``keelfs config-server`` (ids
  1..3) and 3 ``keelfs master`` per shard (ids ``10*k+1..10*k+3`` for the k-th shard).

Every node gets two fixed ports (Raft and client API), kept across restarts. Processes run in
their own session, stdout (``READY``) and stderr (logs) go to ``root/n<id>/``, and every one is
killed by pid in ``stop_all()`` (and by ``keelfs.runtime.processes``' ``atexit`` safety net).
Chunk servers (``start_chunk_servers``) are ``cs<i>`` of the same layout, in ``root/cs<i>/``.

With ``network=`` (a created ``NetnsNetwork`` with ``gateway=True``; root only) every node runs
in its own network namespace (``ip netns exec``), with its Raft address at ``<ip>:7000`` and its
client address at ``<ip>:7001`` on the namespaces' bridge; the test process reaches them over
the network's gateway port. Client addresses are TCP, not unix sockets, because masters reach
each other through them (transaction prepares and decisions, the config group): a partition
must cut those too. ``cut(a, b)``/``uncut(a, b)`` and ``isolate(id)``/``heal()`` partition the
nodes from each other, never from the test process::

    with NetnsNetwork([], "10.78.0", gateway=True) as net:
        with MetaCluster(tmp_path, layout="separate", network=net) as cluster:
            cluster.cut(cluster.leader("shard-1"), cluster.leader("shard-2"))
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from keelfs.client import Client
from keelfs.errors import AlreadyExists, NotFound
from keelfs.runtime.netns import NetnsNetwork
from keelfs.runtime.processes import (
    ClusterError,
    Launcher,
    hard_kill,
    read_ready_line,
    spawn_tracked,
    wait_until,
)
from keelfs.server.layout import (
    ADMIN_USER,
    Layout,
    LoopbackAddresses,
    NetnsAddresses,
    ProcessSpec,
    metadata_layout,
)
from keelfs.tls.credentials import TlsSettings, open_channel

if TYPE_CHECKING:
    from keelfs.meta.transactions import TxnRecord
    from keelfs.rpc.pb import meta_pb2 as pb
    from keelfs.server.chunkservers import LocalChunkServers

__all__ = ["MetaCluster"]

T = TypeVar("T")


class _ReadOnlyStore:
    """The read half of ``KVStore`` over an open ``Rdict`` (raw mode)."""

    def __init__(self, db: Any) -> None:
        self._db = db

    def get(self, key: bytes) -> bytes | None:
        raw = self._db.get(key)
        return None if raw is None else bytes(raw)

    def scan(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        it = self._db.iter()
        it.seek(start)
        while it.valid():
            key = bytes(it.key())
            if key >= end:
                return
            yield key, bytes(it.value())
            it.next()


@dataclass
class _NetnsMetadata(NetnsAddresses):
    """Metadata nodes in their namespaces; chunk servers on 127.0.0.1 of the test's own."""

    _loopback: LoopbackAddresses = field(default_factory=LoopbackAddresses)
    """One allocator for all the chunk servers (never the same port twice)."""

    def chunk(self, name: str) -> str:
        return self._loopback.chunk(name)


TLS_TIER_VARIABLE = "KEELFS_TEST_TLS"
"""Set to ``1``, clusters made without an explicit ``tls=`` run with mutual TLS: the test
suite's TLS tier (``scripts/check`` runs a subset so), existing tests unchanged."""


def tls_by_default() -> bool:
    """Whether a cluster not told otherwise runs with mutual TLS (``$KEELFS_TEST_TLS``)."""
    return os.environ.get(TLS_TIER_VARIABLE, "") not in ("", "0")


class MetaCluster(Launcher):
    def __init__(
        self,
        root: str | Path,
        *,
        layout: str = "cohosted",
        shards: Iterable[str] = ("shard-1", "shard-2"),
        tick_ms: float = 15.0,
        election_tick: int = 10,
        node_args: tuple[str, ...] = (),
        start_timeout: float = 30.0,
        network: NetnsNetwork | None = None,
        tls: bool | None = None,
    ) -> None:
        """``tls``: every process runs with mutual TLS from ``<root>/certs`` (made here, a
        certificate per process and an admin user's, which the clients present); unset, it
        follows ``$KEELFS_TEST_TLS`` (:func:`tls_by_default`: the suite's TLS tier)."""
        if tls is None:
            tls = tls_by_default()
        if layout not in ("cohosted", "separate"):
            raise ValueError(f"unknown layout {layout!r}")
        if network is not None and not network.gateway:
            raise ValueError("network= needs a NetnsNetwork with gateway=True")
        self.network = network
        self.root = Path(root)
        self.shard_ids = tuple(shards)
        self.tick_ms = tick_ms
        self.election_tick = election_tick
        self.node_args = tuple(node_args)
        self.start_timeout = start_timeout
        self.layout = Layout(self.root, self._addresses())
        """Which process has which id, addresses and directory (``keelfs.server.layout``)."""
        self.tls_dir: Path | None = self.root / "certs" if tls else None
        self.nodes: dict[int, ProcessSpec] = {}
        """Node id -> its process (``client_address``, ``raft_address``, ``data_dir``, ...)."""
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._stopped: set[int] = set()
        self._clients: list[Client] = []
        self._admin: Client | None = None
        self._chunk_servers: list[LocalChunkServers] = []
        self.http_addresses: dict[int, str] = {}
        """Node id -> ``--http-listen`` address, for nodes given one (``enable_http``)."""
        for spec in metadata_layout(self.layout, self.shard_ids, cohosted=layout == "cohosted"):
            self._define(spec)

    # -- layout -------------------------------------------------------------------------------
    def _addresses(self) -> LoopbackAddresses | _NetnsMetadata:
        network = self.network
        if network is None:
            return LoopbackAddresses()

        def host_of(name: str) -> int:  # a metadata node is host <id> of the network
            node_id = int(name[1:])
            if node_id not in network.node_ids:
                network.add_node(node_id)
            return node_id

        return _NetnsMetadata(network.ip, host_of)

    def _define(self, spec: ProcessSpec) -> ProcessSpec:
        spec.directory.mkdir(parents=True, exist_ok=True)
        self.nodes[spec.node_id] = spec
        self._certify()
        return spec

    def _certify(self) -> None:
        """With TLS, a certificate for every process defined so far."""
        if self.tls_dir is not None:
            self.layout.issue_certificates(self.tls_dir)

    @property
    def client_tls(self) -> TlsSettings | None:
        """What this cluster's clients dial with: the admin user's certificate (None: no
        TLS)."""
        if self.tls_dir is None:
            return None
        return TlsSettings.for_user(self.tls_dir, ADMIN_USER)

    def master_tls(self, node_id: int) -> TlsSettings | None:
        """What master ``node_id`` presents (its certificate made unless there; None: no TLS):
        for a test making a call only a master may make (``keelfs.rpc.access``), as that
        master, e.g. one registering itself."""
        if self.tls_dir is None:
            return None
        from keelfs.tls.certs import issue_node, node_files

        if not node_files(self.tls_dir, "master", node_id).cert.exists():
            issue_node(self.tls_dir, "master", node_id, ["localhost", "127.0.0.1"])
        return TlsSettings.for_node(self.tls_dir, "master", node_id)

    def add_master(self, node_id: int, shard: str, *args: str) -> ProcessSpec:
        """Define (not start) master ``node_id`` hosting a member of ``shard``; ``args`` are
        more flags for it (``--join``: an empty member waiting to be added)."""
        return self._define(self.layout.add_metadata(node_id, "master", (shard,), args))

    def members(self, group: str) -> list[int]:
        """Ids of the nodes hosting a member of ``group``."""
        return self.layout.members(group)

    @property
    def config_addresses(self) -> list[str]:
        return self.layout.config_addresses

    def _peers(self, node_id: int) -> str:
        return self.layout.peers(self.nodes[node_id])

    def _command(self, node_id: int, extra: list[str]) -> list[str]:
        flags = ["--tick-ms", str(self.tick_ms), "--election-tick", str(self.election_tick)]
        cmd = self.layout.command(self.nodes[node_id], [*flags, *self.node_args, *extra])
        if self.network is not None:
            cmd = [*self.network.exec_prefix(node_id), *cmd]
        return cmd

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self, *, setup: bool = True) -> MetaCluster:
        """Bootstrap every node (``--peers``), wait until all are READY, then (``setup``) add
        every shard to the map once its members registered, and format the namespace."""
        for i in sorted(self.nodes):
            self._spawn(i, ["--peers", self._peers(i)])
        for i in sorted(self.nodes):
            self._await_ready(i)
        if setup:
            self.setup()
        return self

    def setup(self, timeout: float = 60.0) -> None:
        admin = self.admin()
        for shard in self.shard_ids:
            members = self.members(shard)

            def add(shard: str = shard, members: list[int] = members) -> bool:
                try:
                    admin.add_shard(shard, members, deadline=5.0)
                except AlreadyExists:
                    pass
                except NotFound:
                    return False  # a member has not registered yet
                return True

            self.wait_for(add, timeout, f"could not add {shard}")
        self.wait_for(lambda: admin.format(deadline=10.0) or True, timeout, "format failed")
        version = admin.shard_map().version
        self.wait_for(
            lambda: all(self.status(i).map_version >= version for i in self.running()),
            timeout,
            "nodes did not learn the shard map",
        )

    def _spawn(self, node_id: int, extra: list[str]) -> None:
        proc = self._procs.get(node_id)
        if proc is not None and proc.poll() is None:
            raise ClusterError(f"node {node_id} is already running")
        spec = self.nodes[node_id]
        self._procs[node_id] = spawn_tracked(
            self._command(node_id, extra),
            spec.stdout_path,
            spec.log_path,
            f"start {' '.join(extra)}",
        )
        self._stopped.discard(node_id)

    def _await_ready(self, node_id: int) -> dict[str, Any]:
        proc = self._procs[node_id]
        spec = self.nodes[node_id]
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            ready = read_ready_line(spec.stdout_path)
            if ready is not None:
                return ready
            if proc.poll() is not None:
                raise ClusterError(
                    f"node {node_id} exited with {proc.returncode} before READY:\n"
                    + self.log_tail(node_id)
                )
            time.sleep(0.02)
        raise ClusterError(
            f"node {node_id} not READY in {self.start_timeout} s\n{self.log_tail(node_id)}"
        )

    def kill9(self, node_id: int) -> None:
        proc = self._procs.pop(node_id, None)
        if proc is not None:
            hard_kill(proc)
        self._stopped.discard(node_id)

    def terminate(self, node_id: int, timeout: float = 10.0) -> int:
        """SIGTERM and wait; returns the exit status (SIGKILL after ``timeout``)."""
        proc = self._procs.get(node_id)
        if proc is None:
            return 0
        if node_id in self._stopped:
            self.sigcont(node_id)
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = -9
        self.kill9(node_id)
        return rc

    def sigstop(self, node_id: int) -> None:
        self._procs[node_id].send_signal(signal.SIGSTOP)
        self._stopped.add(node_id)

    def sigcont(self, node_id: int) -> None:
        self._procs[node_id].send_signal(signal.SIGCONT)
        self._stopped.discard(node_id)

    def restart(self, node_id: int) -> dict[str, Any]:
        """Kill -9 ``node_id`` if running, then start it again from its data directory (same
        id and addresses, no ``--peers``: membership is sticky)."""
        self.kill9(node_id)
        self._spawn(node_id, [])
        return self._await_ready(node_id)

    def stop_all(self) -> None:
        """Kill every process this cluster started (SIGKILL, by pid) and close clients."""
        for client in self._clients:
            with contextlib.suppress(Exception):
                client.close()
        self._clients = []
        self._admin = None
        for node_id in list(self._procs):
            self.kill9(node_id)
        for servers in self._chunk_servers:
            servers.stop_all()
        self._chunk_servers = []

    # -- network partitions (``network=``) ---------------------------------------------------
    def _net(self) -> NetnsNetwork:
        if self.network is None:
            raise ClusterError("this cluster was not started with network=NetnsNetwork(...)")
        return self.network

    def cut(self, a: int, b: int) -> None:
        """Drop everything nodes ``a`` and ``b`` send each other (both ways, silently); both
        still reach, and are reached by, every other node and the test process."""
        self._net().cut(a, b)

    def uncut(self, a: int, b: int) -> None:
        self._net().uncut(a, b)

    def isolate(self, node_id: int, others: Iterable[int] | None = None) -> None:
        """Cut ``node_id`` from ``others`` (default: every other node); the test process still
        reaches it (its status, its logs' view of the world)."""
        for other in sorted(self.nodes) if others is None else others:
            if other != node_id:
                self.cut(node_id, other)

    def heal(self, node_id: int | None = None) -> None:
        """Undo every cut involving ``node_id`` (default: every cut)."""
        net = self._net()
        for pair in sorted(net.cuts(), key=sorted):
            if node_id is None or node_id in pair:
                self.uncut(*sorted(pair))

    def open_transactions(self, node_id: int, shard: str) -> list[TxnRecord]:
        """The transaction records still open (``ShardStateMachine.open_transactions``) in
        ``node_id``'s replica of ``shard``, as of what that replica applied."""
        from keelfs.meta import transactions as tx

        return self._read_replica(node_id, shard, tx.open_records)

    def entry_paths(self, node_id: int, shard: str) -> set[str]:
        """Every path with an entry record in ``node_id``'s replica of ``shard``."""

        def read(store: _ReadOnlyStore) -> set[str]:
            out: set[str] = set()
            for key, _ in store.scan(b"E", b"F"):
                parent, _, name = key[1:].partition(b"\x00")
                out.add(f"{parent.decode().rstrip('/')}/{name.decode()}")
            return out

        return self._read_replica(node_id, shard, read)

    def _read_replica(self, node_id: int, shard: str, read: Callable[[Any], T]) -> T:
        """``read`` over ``node_id``'s replica of ``shard`` as of what it applied: its RocksDB
        opened as a secondary instance, so the node may be running, stopped or dead."""
        from rocksdict import AccessType, Options, Rdict

        path = self.nodes[node_id].data_dir / "shards" / shard
        if not (path / "CURRENT").exists():
            raise ClusterError(f"node {node_id} holds no replica of {shard} at {path}")
        secondary = Path(tempfile.mkdtemp(prefix="secondary-", dir=self.nodes[node_id].directory))
        try:
            db = Rdict(
                str(path), Options(raw_mode=True), access_type=AccessType.secondary(str(secondary))
            )
            try:
                db.try_catch_up_with_primary()
                return read(_ReadOnlyStore(db))
            finally:
                db.close()
        finally:
            shutil.rmtree(secondary, ignore_errors=True)

    # -- clients and observation --------------------------------------------------------------
    def client(self, addresses: list[str] | None = None, **kwargs: Any) -> Client:
        """A ``Client`` given ``addresses`` (default: every config server), closed by
        ``stop_all``."""
        kwargs.setdefault("tls", self.client_tls)
        c = Client(addresses or self.config_addresses, **kwargs)
        self._clients.append(c)
        return c

    def admin(self) -> Client:
        if self._admin is None:
            self._admin = self.client(deadline=15.0)
        return self._admin

    def set_failpoint(self, node_id: int, name: str, action: str) -> None:
        """Arm failpoint ``name`` (``keelfs.failpoints``) in one node; its processes must have
        been started with ``KEELFS_FAILPOINTS`` in their environment."""
        from keelfs.rpc.pb import meta_pb2 as pb
        from keelfs.rpc.pb import meta_pb2_grpc as pb_grpc

        with open_channel(self.nodes[node_id].client_address, self.client_tls) as channel:
            stub: Any = pb_grpc.NodeStub(channel)
            stub.SetFailpoint(pb.SetFailpointRequest(name=name, action=action), timeout=5)

    def running(self) -> list[int]:
        return sorted(i for i, p in self._procs.items() if p.poll() is None)

    def pid(self, node_id: int) -> int:
        return self._procs[node_id].pid

    def status(self, node_id: int, timeout: float = 2.0) -> pb.StatusReply:
        """``Node.Status`` of one node (raises ``grpc.RpcError`` if it does not answer)."""
        return self.admin().status(self.nodes[node_id].client_address, timeout=timeout)

    def group_statuses(self, group: str, timeout: float = 1.0) -> dict[int, pb.GroupStatus]:
        """``group``'s status on every running, not stopped member that answers."""
        out: dict[int, pb.GroupStatus] = {}
        for i in self.members(group):
            if i not in self.running() or i in self._stopped:
                continue
            try:
                out[i] = self.status(i, timeout).groups[group]
            except Exception:
                continue
        return out

    def leader(self, group: str, timeout: float = 15.0, exclude: tuple[int, ...] = ()) -> int:
        """Wait for a leader of ``group`` that a majority of the answering members agree on."""

        def probe() -> int | None:
            sts = {i: s for i, s in self.group_statuses(group).items() if i not in exclude}
            leaders = [(s.term, i) for i, s in sts.items() if s.state == "leader"]
            if not leaders:
                return None
            term, lead = max(leaders)
            agree = sum(1 for s in sts.values() if s.leader == lead and s.term == term)
            return lead if agree * 2 > len(sts[lead].voters) else None

        return self.wait_for(probe, timeout, f"no leader of {group} within {timeout} s")

    def follower(self, group: str) -> int:
        lead = self.leader(group)
        return next(i for i in self.members(group) if i != lead and i in self.running())

    def wait_for(self, probe: Callable[[], T | None], timeout: float, what: str) -> T:
        """``runtime.processes.wait_until``: poll until ``probe`` answers; a failed
        ``assert`` in it is raised at once."""
        return wait_until(probe, timeout, what)

    def log_tail(self, node_id: int, lines: int = 40) -> str:
        path = self.nodes[node_id].log_path
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # -- online resharding --------------------------------------------------------------------
    def start_shard(self, shard: str, node_ids: Iterable[int] | None = None) -> list[int]:
        """Start three new master processes forming ``shard`` (a new Raft group; not yet in
        the map: ``add_shard`` puts it there) and wait until they are READY and registered."""
        ids = list(node_ids or [])
        if not ids:
            base = max(self.nodes) // 10 * 10 + 10
            ids = [base + 1, base + 2, base + 3]
        for i in ids:
            self.add_master(i, shard)
        self.shard_ids = (*self.shard_ids, shard)
        for i in ids:
            self._spawn(i, ["--peers", self._peers(i)])
        for i in ids:
            self._await_ready(i)
        admin = self.admin()

        def registered() -> bool:
            fetched = admin.fetch_shard_map()
            return fetched is not None and all(i in fetched[1] for i in ids)

        self.wait_for(registered, 30, f"{shard}'s masters did not register")
        return ids

    def wait_resharded(self, timeout: float = 120.0) -> int:
        """Wait until no resharding is under way; the final map version."""
        admin = self.admin()

        def done() -> int | None:
            m = admin.shard_map()
            return None if m.resharding else m.version

        return self.wait_for(done, timeout, "resharding did not finish")

    # -- chunk servers --------------------------------------------------------------------------
    def start_chunk_servers(
        self,
        n: int = 3,
        *args: str,
        wait_reported: bool = True,
        data_from: tuple[Path, ...] = (),
    ) -> LocalChunkServers:
        """Start ``n`` chunk server processes reporting to this cluster (stopped by
        ``stop_all``); with ``wait_reported``, wait until every shard leader has their full
        block reports (so that they are chosen for new blocks). ``data_from``: data
        directories of stopped chunk servers (of another cluster: a restored one's), copied in
        as the first ones' data, ids and replicas included."""
        from keelfs.server.chunkservers import LocalChunkServers

        servers = LocalChunkServers.in_layout(
            self.layout, n, server_args=("--heartbeat-interval-s", "0.5", *args)
        )
        for i, source in enumerate(data_from):
            shutil.copytree(source, servers.data_dir(i), symlinks=True)
        self._certify()
        self._chunk_servers.append(servers)
        servers.start()
        if wait_reported:
            ids = {r["server_id"] for r in servers.ready}
            self.wait_for(lambda: self.chunk_servers_reported(ids), 30, "chunk servers unreported")
        return servers

    def chunk_servers_reported(self, ids: set[str]) -> bool:
        """Whether every shard's leader counts ``ids`` as live, reported chunk servers."""
        for shard in self.shard_ids:
            st = self.status(self.leader(shard)).chunk_servers
            if not all(i in st and st[i].live and st[i].reported for i in ids):
                return False
        return True

    # -- HTTP (keelfs.web) --------------------------------------------------------------------
    def enable_http(self) -> dict[int, str]:
        """Give every node defined so far its own ``--http-listen`` port on 127.0.0.1 (call
        before ``start``; kept across restarts); returns node id -> ``HOST:PORT``, also kept
        in ``http_addresses``."""
        if self.network is not None:
            raise ClusterError("enable_http needs the 127.0.0.1 layout (no network=)")
        addresses = self.layout.addresses
        assert isinstance(addresses, LoopbackAddresses)
        pending = [i for i in sorted(self.nodes) if i not in self.http_addresses]
        for i in pending:
            # from the layout's own ports, never one already given to a node (a port drawn
            # apart could be a node's raft or client port not bound yet: a CI run's node
            # failed to start so, "address already in use")
            address = addresses.http()
            self.nodes[i].http = address
            self.http_addresses[i] = address
        return dict(self.http_addresses)
