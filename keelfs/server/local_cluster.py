"""``keelfs local-cluster up|down|status``: a production-shaped cluster on 127.0.0.1.

One role per process, laid out by ``keelfs.server.layout`` as the test fixtures' separate
layout is: 3 config servers (node ids 1..3), 2 shards of 3 masters each (``shard-1``:
11..13, ``shard-2``: 21..23) and ``chunk_servers`` chunk servers (``cs0``...), each started by
its ``keelfs`` role command (``keelfs config-server``, ``master``, ``chunkserver``). Unlike
``MetaCluster``
(a test fixture that kills its processes when the test ends) the processes are **daemons**:
each runs in its own session, detached from the terminal, and outlives the command.

Everything lives under ``--dir``::

    cluster.json        the state file: every process's pid, its start time (so that a reused
                        pid is never taken for ours), addresses, command line and directory
    n<id>/, cs<i>/      each process's data/, stdout.log (its READY line), stderr.log (logs)

``up`` bootstraps the groups (``--peers``), adds both shards to the map, formats the
namespace and starts the chunk servers, writing the state file after every process it starts
(a failed ``up`` is cleaned up by ``down``). With a state file whose processes are all gone
(after ``down``), ``up`` restarts the same nodes on the same addresses and data, without
``--peers`` (membership is sticky); with some of them running (one was killed, or stopped by
``stop``), ``up`` starts the others alone, the same way. ``stop NODE`` stops one process
(SIGTERM, or SIGKILL at once with ``kill``: a crash) and ``restart NODE`` stops it and starts
it again, for trying failures by hand. ``down`` sends SIGTERM to exactly the recorded pids, then
SIGKILL to any still alive after a grace period; ``--wipe`` also removes the directory.
``status`` asks every metadata node for its ``Node.Status`` and names each group's leader.

With ``netns`` (root only) every process runs in its own network namespace
(``keelfs.runtime.netns.NetnsNetwork``) on a private /24 (``10.2xx.y``, one no route of the host
uses), all joined by a bridge, with a gateway link into the host's namespace through which
clients there reach them: metadata nodes at ``<ip>:7000`` (Raft) and ``<ip>:7001``, chunk
servers at ``<ip>:7001``; there is no dashboard (it serves on loopback only, which would be
the namespace's own). ``keelfs chaos`` can then partition them. The state file records the
network (its tag, subnet and each process's address on it) before anything is created, so
``down`` deletes every namespace and link of it even after ``up`` crashed half-way. Its
addresses are not loopback: without ``tls`` its processes start ``--insecure`` (the namespaces
are private to this host).

With ``tls`` every process runs with mutual TLS: ``up`` makes ``<dir>/certs`` (``keelfs
certs``: the two CAs, a certificate per process naming its addresses, an ``admin`` user's) and
records it in the state file and in the record the CLI finds the cluster by, so that ``keelfs
ls /`` or ``keelfs admin status`` present the admin certificate without being told.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from keelfs.errors import AlreadyExists, NotFound
from keelfs.runtime.netns import NetnsError, NetnsNetwork, free_subnet
from keelfs.runtime.processes import ClusterError, read_ready_line, spawn, wait_until
from keelfs.server.layout import (
    ADMIN_USER,
    Addresses,
    Layout,
    LoopbackAddresses,
    NetnsAddresses,
    ProcessSpec,
    metadata_layout,
    peers_arg,
)
from keelfs.tls.credentials import TlsSettings

__all__ = [
    "SHARDS",
    "STATE_FILE",
    "LocalClusterError",
    "NetworkRecord",
    "ProcessRecord",
    "State",
    "cluster_status",
    "down",
    "find_process",
    "load_state",
    "network_of",
    "restart_process",
    "stop_process",
    "up",
]

STATE_FILE = "cluster.json"
CERTS_DIR = "certs"
"""With ``tls``: the ``keelfs certs`` directory inside the cluster's directory."""
SHARDS = ("shard-1", "shard-2")
_START_TIMEOUT_S = 60.0
_TERM_GRACE_S = 10.0
_CHUNK_HOST_BASE = 100
"""A chunk server ``cs<i>`` is host ``100 + i`` of a netns cluster's /24 (masters: their id)."""
_NETNS_SUBNETS = range(200, 250)
"""``10.x.y`` with x here: apart from the tests' networks (10.77/10.78, 10.100-199)."""

T = TypeVar("T")


class LocalClusterError(RuntimeError):
    """The cluster could not be started, stopped or read (the message says which node)."""


@dataclass
class ProcessRecord:
    name: str
    """``n<id>`` for a metadata node, ``cs<i>`` for a chunk server."""
    role: str
    """``config``, ``master`` or ``chunk``."""
    command: list[str]
    directory: str
    address: str
    """Client address (metadata nodes) or data-path address (chunk servers)."""
    node_id: int = 0
    raft_address: str = ""
    groups: list[str] = field(default_factory=list)
    http: str = ""
    pid: int = 0
    start_time: str = ""
    """The kernel's start time of ``pid`` (``/proc/<pid>/stat``): a recycled pid differs."""

    def alive(self) -> bool:
        return self.pid > 0 and _start_time(self.pid) == self.start_time


@dataclass
class NetworkRecord:
    """The network namespaces of a cluster started with ``netns`` (see the module docstring)."""

    tag: str
    subnet: str
    hosts: dict[str, int]
    """Process name -> its host number on the /24 (and in its namespace's name)."""
    namespaces: list[str] = field(default_factory=list)
    """Every namespace by name, the hub first (for the reader; ``down`` derives them)."""
    gateway_link: str = ""
    """The link in the host's namespace (its address is ``<subnet>.254``)."""


@dataclass
class State:
    directory: str
    processes: list[ProcessRecord] = field(default_factory=list)
    network: NetworkRecord | None = None
    tls_dir: str = ""
    """The ``keelfs certs`` directory of a cluster started with ``tls`` (every process runs
    with it; clients present its admin user's certificate); empty: no TLS."""

    def client_tls(self) -> TlsSettings | None:
        """What a client of this cluster dials with: the admin user's certificate."""
        if not self.tls_dir:
            return None
        return TlsSettings.for_user(Path(self.tls_dir), ADMIN_USER)

    def save(self) -> None:
        path = Path(self.directory) / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)

    @property
    def meta(self) -> list[ProcessRecord]:
        return [p for p in self.processes if p.role != "chunk"]

    @property
    def config_addresses(self) -> list[str]:
        return [p.address for p in self.processes if p.role == "config"]

    def alive(self) -> list[ProcessRecord]:
        return [p for p in self.processes if p.alive()]


def _start_time(pid: int) -> str | None:
    """Field 22 of ``/proc/<pid>/stat`` (None: no such process, or a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return fields[19]


def load_state(directory: Path) -> State | None:
    path = directory / STATE_FILE
    if not path.exists():
        return None
    try:
        raw = json.loads(path.read_text())
        procs = [ProcessRecord(**p) for p in raw["processes"]]
        network = NetworkRecord(**raw["network"]) if raw.get("network") else None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LocalClusterError(f"{path} is not a local-cluster state file: {exc}") from None
    return State(str(directory), procs, network, str(raw.get("tls_dir", "")))


def network_of(state: State) -> NetnsNetwork | None:
    """The namespaces of a cluster started with ``netns`` (None without), to partition its
    processes or remove them; nothing is created or changed."""
    net = state.network
    if net is None:
        return None
    return NetnsNetwork(sorted(net.hosts.values()), net.subnet, net.tag, gateway=True)


# ---------------------------------------------------------------------------------------------
# layout


def _new_network(chunk_servers: int) -> NetworkRecord:
    """A network for a new netns cluster: a fresh tag, a free subnet, every process's host."""
    if chunk_servers > 252 - _CHUNK_HOST_BASE:
        raise LocalClusterError(f"--netns allows at most {252 - _CHUNK_HOST_BASE} chunk servers")
    hosts = {f"n{i}": i for i in (1, 2, 3)}
    hosts |= {f"n{10 * k + j}": 10 * k + j for k in range(1, len(SHARDS) + 1) for j in (1, 2, 3)}
    hosts |= {f"cs{i}": _CHUNK_HOST_BASE + i for i in range(chunk_servers)}
    try:
        subnet = free_subnet(second=_NETNS_SUBNETS)
    except NetnsError as exc:
        raise LocalClusterError(str(exc)) from None
    net = NetnsNetwork(sorted(hosts.values()), subnet, gateway=True)  # a fresh tag
    return NetworkRecord(net.tag, subnet, hosts, net.namespaces(), net.gateway_link)


def _layout(
    directory: Path,
    chunk_servers: int,
    http_port: int,
    network: NetworkRecord | None = None,
    tls: bool = False,
) -> State:
    state = State(str(directory), network=network)
    net = network_of(state)
    loopback = LoopbackAddresses()
    addresses: Addresses = loopback
    if net is not None and network is not None:
        addresses = NetnsAddresses(net.ip, network.hosts.__getitem__)
    layout = Layout(directory, addresses)
    metadata_layout(layout, SHARDS)
    layout.add_chunk_servers(chunk_servers)
    if http_port >= 0 and net is None:  # netns: no dashboard (it listens on loopback only)
        layout.node(1).http = f"127.0.0.1:{http_port}" if http_port else loopback.http()
    if tls:
        layout.issue_certificates(directory / CERTS_DIR)
        state.tls_dir = str(directory / CERTS_DIR)
    for spec in layout.processes.values():
        command = layout.command(spec)
        if net is not None and network is not None:
            command = [*net.exec_prefix(network.hosts[spec.name]), *command]
        state.processes.append(_record(spec, command))
    return state


def _record(spec: ProcessSpec, command: list[str]) -> ProcessRecord:
    return ProcessRecord(
        spec.name,
        spec.role,
        command,
        str(spec.directory),
        spec.client_address,
        spec.node_id,
        spec.raft_address,
        list(spec.groups),
        spec.http,
    )


def _peers(state: State, p: ProcessRecord) -> str:
    """``--peers`` of a first start (as ``Layout.peers``, from the records)."""
    return peers_arg(p.groups, ((q.node_id, q.groups, q.raft_address) for q in state.meta))


# ---------------------------------------------------------------------------------------------
# processes


def _spawn(p: ProcessRecord, extra: list[str]) -> None:
    """Start ``p`` as a daemon: its own session, no terminal, output to its log files."""
    directory = Path(p.directory)
    directory.mkdir(parents=True, exist_ok=True)
    proc = spawn(
        [*p.command, *extra],
        directory / "stdout.log",
        directory / "stderr.log",
        banner=f"local-cluster start {' '.join(extra)}",
    )
    p.pid = proc.pid
    # the Popen object is dropped on purpose: the process must outlive this command. Its
    # start time identifies it from now on (a zombie until this command exits reads as gone).
    p.start_time = _start_time(proc.pid) or ""


def _ready(p: ProcessRecord, deadline: float) -> dict[str, Any]:
    stdout = Path(p.directory) / "stdout.log"
    while True:
        ready = read_ready_line(stdout)
        if ready is not None:
            return ready
        if not p.alive():
            raise LocalClusterError(f"{p.name} exited before READY:\n{_log_tail(p)}")
        if time.monotonic() >= deadline:
            raise LocalClusterError(f"{p.name} not READY in time:\n{_log_tail(p)}")
        time.sleep(0.05)


def _log_tail(p: ProcessRecord, lines: int = 20) -> str:
    path = Path(p.directory) / "stderr.log"
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _wait_for(probe: Callable[[], T | None], deadline: float, what: str) -> T:
    """``runtime.processes.wait_until`` by ``deadline`` (monotonic), as this module's error."""
    try:
        return wait_until(probe, max(0.0, deadline - time.monotonic()), what)
    except ClusterError as exc:
        raise LocalClusterError(str(exc)) from None


def _set_up(state: State, deadline: float) -> None:
    """Add both shards to the map (each once its masters registered) and format: idempotent."""
    from keelfs.client import Client

    with Client(state.config_addresses, deadline=10.0, tls=state.client_tls()) as admin:
        for shard in SHARDS:
            members = [p.node_id for p in state.meta if shard in p.groups]

            def add(shard: str = shard, members: list[int] = members) -> bool:
                if shard in admin.shard_map().shards:
                    return True
                try:
                    admin.add_shard(shard, members, deadline=5.0)
                except AlreadyExists:
                    pass
                except NotFound:
                    return False  # a member has not registered yet
                return True

            _wait_for(add, deadline, f"could not add {shard} to the shard map")
        _wait_for(lambda: admin.format(deadline=10.0) or True, deadline, "format failed")


def _chunks_reported(state: State, deadline: float) -> None:
    """Wait until every shard leader counts every chunk server live and fully reported."""
    ids = {p.name for p in state.processes if p.role == "chunk"}

    def probe() -> bool:
        st = cluster_status(state)
        for shard in SHARDS:
            leader = st["groups"].get(shard, {}).get("leader")
            node = st["nodes"].get(f"n{leader}") if leader else None
            if node is None:
                return False
            servers = node.chunk_servers
            if not all(i in servers and servers[i].live and servers[i].reported for i in ids):
                return False
        return True

    _wait_for(probe, deadline, "chunk servers did not report to every shard leader")


def up(
    directory: Path,
    *,
    chunk_servers: int = 3,
    http_port: int = 0,
    netns: bool = False,
    tls: bool = False,
    progress: Callable[[str], None] = lambda _: None,
) -> State:
    """Start the cluster (see the module docstring); returns its state once it serves.

    ``netns`` and ``tls`` apply to a new cluster; a stopped one restarts as it was laid out."""
    directory = directory.resolve()
    state = load_state(directory)
    if state is not None and netns and state.network is None:
        raise LocalClusterError(
            f"the local cluster in {directory} was created without --netns (its processes "
            "listen on 127.0.0.1): start it without --netns, or `down --wipe` it first"
        )
    if state is not None and tls and not state.tls_dir:
        raise LocalClusterError(
            f"the local cluster in {directory} was created without --tls: start it without "
            "--tls, or `down --wipe` it first"
        )
    if state is not None and state.alive():
        return _start_stopped(state, progress)
    first = state is None
    if state is None:
        if chunk_servers < 1:
            raise LocalClusterError("a local cluster needs at least one chunk server")
        if netns:
            _check_netns_possible()
            if http_port > 0:
                raise LocalClusterError(
                    "no dashboard with --netns: it listens on loopback only, which would be "
                    "n1's own namespace (leave --http-port out, or give -1)"
                )
        directory.mkdir(parents=True, exist_ok=True)
        network = _new_network(chunk_servers) if netns else None
        state = _layout(directory, chunk_servers, http_port, network, tls)
        state.save()  # the network is on record before any of it exists
    if state.network is not None:
        _check_netns_possible()
        progress(f"creating {len(state.network.hosts)} network namespaces")
        _create_network(state)
    deadline = time.monotonic() + _START_TIMEOUT_S
    progress(f"{'starting' if first else 'restarting'} {len(state.meta)} metadata nodes")
    for p in state.meta:
        _spawn(p, ["--peers", _peers(state, p)] if first else [])
        state.save()
    for p in state.meta:
        _ready(p, deadline)
    progress("adding shard-1 and shard-2 to the map, formatting")
    _set_up(state, deadline)
    chunks = [p for p in state.processes if p.role == "chunk"]
    progress(f"starting {len(chunks)} chunk servers")
    for p in chunks:
        _spawn(p, [])
        state.save()
    for p in chunks:
        _ready(p, deadline)
    _chunks_reported(state, deadline)
    return state


def _start_stopped(state: State, progress: Callable[[str], None]) -> State:
    """``up`` on a cluster some of whose processes run: start the others again as they were
    (same command, addresses and data, no ``--peers``), metadata nodes first, and wait until
    the cluster serves. The network of a netns cluster is left as it is (running processes
    are attached to it)."""
    stopped = [p for p in state.processes if not p.alive()]
    if not stopped:
        progress("every process is running: nothing to start")
        return state
    if state.network is not None:
        _check_netns_possible()
    progress(f"restarting {len(stopped)} stopped processes: {' '.join(p.name for p in stopped)}")
    deadline = time.monotonic() + _START_TIMEOUT_S
    for role_is_meta in (True, False):
        batch = [p for p in stopped if (p.role != "chunk") == role_is_meta]
        for p in batch:
            _spawn(p, [])
            state.save()
        for p in batch:
            _ready(p, deadline)
        if role_is_meta:
            _set_up(state, deadline)  # idempotent: finishes a first `up` that died half-way
    _chunks_reported(state, deadline)
    return state


def _check_netns_possible() -> None:
    if os.geteuid() != 0:
        raise LocalClusterError("--netns needs root (it creates network namespaces)")
    if shutil.which("ip") is None:
        raise LocalClusterError("--netns needs iproute2's `ip` command, which is not installed")


def _create_network(state: State) -> None:
    """Create the recorded namespaces afresh (removing any left by a crashed ``up``)."""
    net = network_of(state)
    assert net is not None
    net.remove_all()
    try:
        net.create()
    except NetnsError as exc:
        net.remove_all()
        raise LocalClusterError(f"cannot create the network namespaces: {exc}") from None


def restart_process(state: State, name: str, *, timeout: float = _START_TIMEOUT_S) -> ProcessRecord:
    """Start the recorded process ``name`` again as ``up`` restarts a stopped cluster (same
    command, addresses and data, no ``--peers``), record its new pid in the state file and
    wait for its READY line. For ``keelfs chaos``, which kills and restarts single nodes."""
    p = find_process(state, name)
    if p.alive():
        raise LocalClusterError(f"{name} is running (pid {p.pid})")
    _spawn(p, [])
    state.save()
    _ready(p, time.monotonic() + timeout)
    return p


def find_process(state: State, name: str) -> ProcessRecord:
    """The recorded process ``name`` (``n11``, ``cs0``, ...); ``LocalClusterError`` naming
    the known ones otherwise."""
    p = next((q for q in state.processes if q.name == name), None)
    if p is None:
        known = " ".join(q.name for q in state.processes)
        raise LocalClusterError(f"no process {name!r} in {state.directory} (known: {known})")
    return p


def stop_process(
    state: State, name: str, *, kill: bool = False, grace_s: float = _TERM_GRACE_S
) -> bool:
    """Stop the recorded process ``name``: SIGTERM, then SIGKILL if still alive after
    ``grace_s`` (``kill``: SIGKILL at once, a crash). Whether it was running; the state file
    records it as stopped either way (``up`` or :func:`restart_process` starts it again)."""
    p = find_process(state, name)
    was_running = p.alive()
    if was_running:
        _terminate([p], grace_s=0.0 if kill else grace_s)
    p.pid, p.start_time = 0, ""
    state.save()
    return was_running


def _terminate(running: list[ProcessRecord], *, grace_s: float) -> None:
    """SIGTERM each of ``running`` (none with ``grace_s`` 0), SIGKILL those alive after
    ``grace_s``; ``LocalClusterError`` if any survives that."""
    if grace_s > 0:
        for p in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while any(p.alive() for p in running) and time.monotonic() < deadline:
            time.sleep(0.05)
    for p in running:
        if p.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while any(p.alive() for p in running) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [p.name for p in running if p.alive()]
    if left:
        raise LocalClusterError(f"still running after SIGKILL: {', '.join(left)}")


def down(directory: Path, *, wipe: bool = False, grace_s: float = _TERM_GRACE_S) -> list[str]:
    """Stop exactly the recorded processes (SIGTERM, SIGKILL after ``grace_s``); the names of
    those that were running. With ``wipe``, remove the directory too."""
    directory = directory.resolve()
    state = load_state(directory)
    if state is None:
        raise LocalClusterError(f"no local cluster in {directory} ({STATE_FILE} not found)")
    running = state.alive()
    _terminate(running, grace_s=grace_s)
    _remove_network(state)
    for p in state.processes:
        p.pid, p.start_time = 0, ""
    if wipe:
        shutil.rmtree(directory)
    else:
        state.save()
    return [p.name for p in running]


def _remove_network(state: State) -> None:
    """Delete every namespace and link of a netns cluster (idempotent: none is not an error)."""
    net = network_of(state)
    if net is None:
        return
    net.remove_all()
    left = net.leftovers()
    if left:
        raise LocalClusterError(f"could not remove {', '.join(left)} (`ip netns del` as root)")


def cluster_status(state: State, timeout: float = 2.0) -> dict[str, Any]:
    """Every process (alive or not) and every group's leader as the nodes report it
    (``keelfs.client.cluster_view``, as ``keelfs admin status`` sees them)."""
    from keelfs.client import Client
    from keelfs.client.cluster_view import NodeView, fold

    nodes: dict[str, Any] = {}  # process name -> its Node.Status (pb.StatusReply)
    answered: dict[int, NodeView] = {}
    processes: dict[str, dict[str, Any]] = {}
    with Client(
        state.config_addresses or ["127.0.0.1:1"], deadline=timeout, tls=state.client_tls()
    ) as client:
        for p in state.processes:
            alive = p.alive()
            processes[p.name] = {
                "role": p.role,
                "pid": p.pid if alive else None,
                "alive": alive,
                "address": p.address,
                "groups": p.groups,
                "http": p.http,
                "http_url": f"{'https' if state.tls_dir else 'http'}://{p.http}/" if p.http else "",
            }
            if not alive or p.role == "chunk":
                continue
            try:
                st = client.status(p.address, timeout=timeout)
            except Exception as exc:
                processes[p.name]["error"] = f"{type(exc).__name__}"
                continue
            nodes[p.name] = st
            answered[p.node_id] = NodeView(p.node_id, p.address, st)
    view = fold(answered)
    groups: dict[str, dict[str, Any]] = {}
    for gid in ("config", *SHARDS):
        g = view.groups.get(gid)
        members = {} if g is None else {i: m for i, m in g.members.items() if m.up}
        groups[gid] = {
            "leader": (g.leader if g else 0) or None,
            "term": g.term if g else 0,
            "members": {str(i): m.role for i, m in members.items()},
            "commit": g.commit if g else 0,
        }
    return {"directory": state.directory, "processes": processes, "groups": groups, "nodes": nodes}
