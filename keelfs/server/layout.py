"""The layout of a cluster of real processes: which process has which role, node id, groups,
addresses and directory, and the command line that starts it.

``keelfs local-cluster`` (``keelfs.server.local_cluster``) and the launchers the tests and
benchmarks use (``MetaCluster``, ``LocalChunkServers``) all describe their processes here and
start them from :meth:`Layout.command`, so that a process of a local cluster and one of a test
cluster are the same process. Two metadata layouts (:func:`metadata_layout`):

- **separate** (production's): 3 config servers, node ids 1..3; 3 masters per shard, ids
  ``10*k+1 .. 10*k+3`` for the k-th shard;
- **cohosted**: 3 masters, ids 1..3, each with a config-group member (``--config-member``) and
  a member of every shard (light enough for two cores).

Chunk servers are ``cs0``, ``cs1``, ... (their server id is their name). A metadata node ``n<id>``
and a chunk server ``cs<i>`` live in ``<root>/<name>/``: ``data/``, ``stdout.log`` (its ``READY``
line), ``stderr.log`` (its logs). Addresses come from an :class:`Addresses`: free ports on
127.0.0.1 (:class:`LoopbackAddresses`) or fixed ports on each process's address in its own
network namespace (:class:`NetnsAddresses`: Raft ``:7000``, client ``:7001``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from keelfs.runtime.processes import free_ports
from keelfs.server.security import is_loopback

__all__ = [
    "ADMIN_USER",
    "COMMANDS",
    "cert_name",
    "Addresses",
    "Layout",
    "LoopbackAddresses",
    "NetnsAddresses",
    "ProcessSpec",
    "metadata_layout",
    "peers_arg",
]

COMMANDS = {"config": "config-server", "master": "master", "chunk": "chunkserver"}
"""Role -> the ``keelfs`` command that runs it."""

ADMIN_USER = "admin"
"""The user whose certificate (an admin's) a TLS cluster's launcher issues for its clients."""

NETNS_RAFT_PORT = 7000
NETNS_CLIENT_PORT = 7001


@dataclass
class ProcessSpec:
    name: str
    """``n<id>`` for a metadata node, ``cs<i>`` for a chunk server."""
    role: str
    """``config``, ``master`` or ``chunk``."""
    directory: Path
    client_address: str
    """What clients connect to: the client API of a metadata node, the data path of a chunk
    server."""
    node_id: int = 0
    raft_address: str = ""
    groups: tuple[str, ...] = ()
    """Raft groups a metadata node hosts (``config`` and/or shard ids)."""
    http: str = ""
    """``--http-listen`` (empty: none)."""
    args: list[str] = field(default_factory=list)
    """More flags for its command (``--join``, tuning)."""

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def stdout_path(self) -> Path:
        return self.directory / "stdout.log"

    @property
    def log_path(self) -> Path:
        """Its stderr: the logs."""
        return self.directory / "stderr.log"


class Addresses(Protocol):
    def metadata(self, name: str, node_id: int) -> tuple[str, str]:
        """``(raft, client)`` of metadata node ``name``."""
        ...

    def chunk(self, name: str) -> str:
        """The data-path address of chunk server ``name``."""
        ...


class LoopbackAddresses:
    """Ports on 127.0.0.1 that were free when asked for, never the same one twice."""

    def __init__(self) -> None:
        self._given: set[int] = set()

    def _ports(self, n: int) -> list[int]:
        while True:
            ports = free_ports(n)
            if not self._given & set(ports):
                self._given.update(ports)
                return ports

    def metadata(self, name: str, node_id: int) -> tuple[str, str]:
        raft, client = self._ports(2)
        return f"127.0.0.1:{raft}", f"127.0.0.1:{client}"

    def chunk(self, name: str) -> str:
        return f"127.0.0.1:{self._ports(1)[0]}"

    def http(self) -> str:
        return f"127.0.0.1:{self._ports(1)[0]}"


@dataclass
class NetnsAddresses:
    """Fixed ports on each process's own address: ``ip(host_of(name))``."""

    ip: Callable[[int], str]
    host_of: Callable[[str], int]

    def metadata(self, name: str, node_id: int) -> tuple[str, str]:
        ip = self.ip(self.host_of(name))
        return f"{ip}:{NETNS_RAFT_PORT}", f"{ip}:{NETNS_CLIENT_PORT}"

    def chunk(self, name: str) -> str:
        return f"{self.ip(self.host_of(name))}:{NETNS_CLIENT_PORT}"


@dataclass
class Layout:
    """Every process of one cluster by name, in start order (config servers, masters,
    chunk servers)."""

    root: Path
    addresses: Addresses
    processes: dict[str, ProcessSpec] = field(default_factory=dict)
    python: str = sys.executable
    tls_dir: Path | None = None
    """A ``keelfs certs`` directory every process starts with (``--tls-dir``); None: no
    TLS. :meth:`issue_certificates` fills it."""

    # -- defining processes ---------------------------------------------------------------------
    def add_metadata(
        self, node_id: int, role: str, groups: Iterable[str], args: Iterable[str] = ()
    ) -> ProcessSpec:
        """Define metadata node ``n<node_id>`` (``config``: a config server; ``master``: a
        master, with a config-group member if ``groups`` holds ``config``)."""
        name = f"n{node_id}"
        raft, client = self.addresses.metadata(name, node_id)
        spec = ProcessSpec(
            name, role, self.root / name, client, node_id, raft, tuple(groups), args=list(args)
        )
        self.processes[name] = spec
        return spec

    def add_chunk_servers(self, n: int, args: Iterable[str] = ()) -> list[ProcessSpec]:
        """Define ``n`` more chunk servers (``cs<i>``, numbered on from those defined)."""
        first = len(self.chunks)
        specs = []
        for i in range(first, first + n):
            name = f"cs{i}"
            spec = ProcessSpec(
                name, "chunk", self.root / name, self.addresses.chunk(name), args=list(args)
            )
            self.processes[name] = spec
            specs.append(spec)
        return specs

    # -- reading it -------------------------------------------------------------------------------
    @property
    def meta(self) -> list[ProcessSpec]:
        return [p for p in self.processes.values() if p.role != "chunk"]

    @property
    def chunks(self) -> list[ProcessSpec]:
        return [p for p in self.processes.values() if p.role == "chunk"]

    def node(self, node_id: int) -> ProcessSpec:
        return self.processes[f"n{node_id}"]

    def members(self, group: str) -> list[int]:
        """Ids of the metadata nodes hosting a member of ``group``."""
        return sorted(p.node_id for p in self.meta if group in p.groups)

    @property
    def config_addresses(self) -> list[str]:
        return [self.node(i).client_address for i in self.members("config")]

    def peers(self, spec: ProcessSpec) -> str:
        """``--peers`` of ``spec``'s first start."""
        return peers_arg(spec.groups, ((p.node_id, p.groups, p.raft_address) for p in self.meta))

    def command(self, spec: ProcessSpec, extra: Iterable[str] = ()) -> list[str]:
        """The command line that runs ``spec``: its ``keelfs`` role command and flags, then
        ``spec.args`` and ``extra`` (a later flag wins over an earlier one)."""
        cmd = [self.python, "-m", "keelfs.cli.main", COMMANDS[spec.role]]
        cmd += ["--data", str(spec.data_dir), "--listen", spec.client_address]
        if spec.role == "chunk":
            cmd += ["--server-id", spec.name]
            if self.config_addresses:
                cmd += ["--config-servers", ",".join(self.config_addresses)]
        else:
            cmd += ["--id", str(spec.node_id), "--raft-listen", spec.raft_address]
            for shard in spec.groups:
                if shard != "config":
                    cmd += ["--shard", shard]
            if spec.role == "master" and "config" in spec.groups:
                cmd += ["--config-member"]
            others = [a for a in self.config_addresses if a != spec.client_address]
            if others:
                cmd += ["--config-servers", ",".join(others)]
        if spec.http:
            cmd += ["--http-listen", spec.http]
        if self.tls_dir is not None:
            cmd += ["--tls-dir", str(self.tls_dir)]
        elif not is_loopback(spec.client_address):  # private netns addresses, no TLS asked
            cmd += ["--insecure"]
        return [*cmd, *spec.args, *extra]

    def issue_certificates(self, directory: Path, admin: str = ADMIN_USER) -> None:
        """Make ``directory`` a ``keelfs certs`` directory for this cluster (the CAs unless
        there, a certificate for every process defined that lacks one, naming the hosts it
        listens on, and an admin user's), and start every process with it."""
        from keelfs.tls.certs import (
            PEER_CA,
            authority_files,
            init_authorities,
            issue_client,
            issue_node,
            node_files,
            user_files,
        )

        if not authority_files(directory, PEER_CA).cert.exists():
            init_authorities(directory)
        for spec in self.processes.values():
            role, node_id = cert_name(spec)
            if node_files(directory, role, node_id).cert.exists():
                continue
            hosts = {a.rpartition(":")[0] for a in (spec.client_address, spec.raft_address) if a}
            issue_node(directory, role, node_id, sorted(hosts | {"localhost"}))
        if not user_files(directory, admin).cert.exists():
            issue_client(directory, admin, admin=True)
        self.tls_dir = directory


_CERT_ROLES = {"config": "config", "master": "master", "chunk": "chunkserver"}


def cert_name(spec: ProcessSpec) -> tuple[str, str]:
    """``(role, id)`` of the certificate ``spec`` presents: a metadata node's Raft node id,
    a chunk server's server id (its name)."""
    if spec.role == "chunk":
        return "chunkserver", spec.name
    return _CERT_ROLES[spec.role], str(spec.node_id)


def peers_arg(groups: Iterable[str], nodes: Iterable[tuple[int, Iterable[str], str]]) -> str:
    """``--peers`` of a first start of a node hosting ``groups``: ``ID=RAFT,...`` of every
    node of ``nodes`` (id, groups, Raft address) sharing a group with it (each process's groups
    have the same members)."""
    wanted = set(groups)
    chosen = sorted((i, raft) for i, hosted, raft in nodes if wanted & set(hosted))
    return ",".join(f"{i}={raft}" for i, raft in chosen)


def metadata_layout(
    layout: Layout, shards: Iterable[str], *, cohosted: bool = False
) -> list[ProcessSpec]:
    """Define the metadata nodes of ``shards`` in ``layout`` (see the module docstring)."""
    shards = tuple(shards)
    if cohosted:
        return [layout.add_metadata(i, "master", ("config", *shards)) for i in (1, 2, 3)]
    specs = [layout.add_metadata(i, "config", ("config",)) for i in (1, 2, 3)]
    for k, shard in enumerate(shards, start=1):
        specs += [layout.add_metadata(10 * k + j, "master", (shard,)) for j in (1, 2, 3)]
    return specs
