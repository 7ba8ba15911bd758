"""Many hosts, for real: three "hosts", each a network namespace with its own 10.x address on
a bridge, each running a config server, a master of shard-1 and a chunk server, as three
machines of a small production cluster would (docs/deploy.md). Every process listens on its
host's address, never loopback: host 1's on the IP itself, hosts 2 and 3's on the wildcard
``0.0.0.0`` with ``--advertise`` naming the IP (the container or NAT case). Mutual TLS
everywhere, certificates from ``keelfs.tls.certs`` naming each host's IP.

The user journey, every file's MD5 checked at the end: put/get; kill -9 every process of host
3 (a machine lost), put/get; start host 3's processes again on their data (it rejoins), cut
host 2 off the network (its bridge port down), put/get; reconnect it, wait until its master
has caught up, put/get, and read every file back.

Root only (network namespaces): it skips elsewhere, and FAILS under ``CI=true``
(``keelfs.testing.environment``). Every process and namespace is removed whatever happens
(the fixture's finalizer); only addresses inside the namespaces made here are used.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from keelfs.client import Client
from keelfs.errors import AlreadyExists, NotFound
from keelfs.runtime.netns import NetnsNetwork, free_subnet
from keelfs.runtime.processes import hard_kill, read_ready_line, spawn_tracked, wait_until
from keelfs.testing.environment import cannot_run
from keelfs.tls.certs import init_authorities, issue_client, issue_node
from keelfs.tls.credentials import TlsSettings

pytestmark = [pytest.mark.process, pytest.mark.timeout(300)]

HOSTS = (1, 2, 3)
SHARD = "shard-1"
CONFIG_RAFT, CONFIG_CLIENT = 7000, 7001
MASTER_RAFT, MASTER_CLIENT = 7010, 7011
CHUNK = 7021
WILDCARD_HOSTS = (2, 3)
"""Hosts whose processes listen on 0.0.0.0 and advertise their IP (host 1: on the IP)."""


@dataclass
class Proc:
    name: str
    host: int
    command: list[str]
    directory: Path
    popen: subprocess.Popen[bytes] | None = None


@dataclass
class Hosts:
    """The three hosts' network and processes (see the module docstring)."""

    net: NetnsNetwork
    root: Path
    certs: Path
    procs: dict[str, Proc] = field(default_factory=dict)

    def ip(self, host: int) -> str:
        return self.net.ip(host)

    @property
    def config_addresses(self) -> list[str]:
        return [f"{self.ip(h)}:{CONFIG_CLIENT}" for h in HOSTS]

    def client(self) -> Client:
        tls = TlsSettings.for_user(self.certs, "admin")
        return Client(self.config_addresses, deadline=60.0, tls=tls)

    # -- processes -------------------------------------------------------------------------------
    def _listen(self, host: int, port: int) -> list[str]:
        if host in WILDCARD_HOSTS:
            return [f"0.0.0.0:{port}", "--advertise", self.ip(host)]
        return [f"{self.ip(host)}:{port}"]

    def define(self) -> None:
        cfg = ",".join(self.config_addresses)
        config_peers = ",".join(f"{h}={self.ip(h)}:{CONFIG_RAFT}" for h in HOSTS)
        master_peers = ",".join(f"{10 + h}={self.ip(h)}:{MASTER_RAFT}" for h in HOSTS)
        common = ["--tls-dir", str(self.certs), "--log-level", "WARNING"]
        for h in HOSTS:
            raft = ["--raft-listen", f"{'0.0.0.0' if h in WILDCARD_HOSTS else self.ip(h)}:"]
            self._add(
                f"n{h}", h, ["config-server", "--id", str(h), "--peers", config_peers,
                             "--listen", *self._listen(h, CONFIG_CLIENT),
                             raft[0], raft[1] + str(CONFIG_RAFT), "--config-servers", cfg,
                             *common],
            )  # fmt: skip
            self._add(
                f"n{10 + h}", h, ["master", "--id", str(10 + h), "--shard", SHARD,
                                  "--peers", master_peers,
                                  "--listen", *self._listen(h, MASTER_CLIENT),
                                  raft[0], raft[1] + str(MASTER_RAFT),
                                  "--config-servers", cfg, "--chunk-dead-after", "3", *common],
            )  # fmt: skip
            self._add(
                f"cs{h}", h, ["chunkserver", "--server-id", f"cs{h}",
                              "--listen", *self._listen(h, CHUNK), "--config-servers", cfg,
                              "--scan-interval-s", "0", *common],
            )  # fmt: skip

    def _add(self, name: str, host: int, args: list[str]) -> None:
        command = [*self.net.exec_prefix(host), sys.executable, "-m", "keelfs.cli.main", *args]
        self.procs[name] = Proc(name, host, command, self.root / name)

    def start(self, names: list[str], *, first: bool = True) -> None:
        for name in names:
            p = self.procs[name]
            p.directory.mkdir(parents=True, exist_ok=True)
            command = p.command if first else _without_peers(p.command)
            command = [*command, "--data", str(p.directory / "data")]
            p.popen = spawn_tracked(
                command, p.directory / "stdout.log", p.directory / "stderr.log", banner=name
            )
        for name in names:
            p = self.procs[name]
            wait_until(lambda p=p: self._ready(p), 60.0, f"{name} did not start")

    def _ready(self, p: Proc) -> dict[str, Any] | None:
        assert p.popen is not None
        if p.popen.poll() is not None:
            log = (p.directory / "stderr.log").read_text(errors="replace")[-3000:]
            raise AssertionError(f"{p.name} exited with {p.popen.returncode}:\n{log}")
        return read_ready_line(p.directory / "stdout.log")

    def on_host(self, host: int) -> list[str]:
        return [name for name, p in self.procs.items() if p.host == host]

    def exit_codes(self, host: int) -> list[int | None]:
        """The exit status of each process of ``host`` (None: running)."""
        return [p.popen.poll() for p in self.procs.values() if p.host == host and p.popen]

    def kill_host(self, host: int) -> None:
        """kill -9 every process of ``host``, as a machine that lost power."""
        for name in self.on_host(host):
            p = self.procs[name]
            if p.popen is not None:
                os.kill(p.popen.pid, signal.SIGKILL)
                p.popen.wait(timeout=10)

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.popen is not None:
                hard_kill(p.popen)


def _without_peers(command: list[str]) -> list[str]:
    """A restart's command: membership is on disk, no ``--peers``."""
    i = command.index("--peers") if "--peers" in command else -1
    return command if i < 0 else command[:i] + command[i + 2 :]


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[Hosts]:
    ok, why = NetnsNetwork.available(gateway=True)
    if not ok:
        cannot_run(f"needs network namespaces (root, iproute2): {why}")
    net = NetnsNetwork(list(HOSTS), free_subnet(), gateway=True)
    certs = tmp_path / "certs"
    cluster = Hosts(net, tmp_path, certs)
    try:
        net.create()
        init_authorities(certs)
        for h in HOSTS:  # each node's certificate names its host's IP, what others dial
            issue_node(certs, "config", h, [net.ip(h)])
            issue_node(certs, "master", 10 + h, [net.ip(h)])
            issue_node(certs, "chunkserver", f"cs{h}", [net.ip(h)])
        issue_client(certs, "admin", admin=True)
        cluster.define()
        yield cluster
    finally:
        cluster.stop_all()
        net.destroy()
    assert not net.leftovers()


# -- the journey's steps --------------------------------------------------------------------------


def set_up(cluster: Hosts) -> None:
    with cluster.client() as admin:

        def add() -> bool:
            if SHARD in admin.shard_map().shards:
                return True
            try:
                admin.add_shard(SHARD, [11, 12, 13], deadline=5.0)
            except AlreadyExists:
                pass
            except NotFound:
                return False  # a master has not registered yet
            return True

        wait_until(add, 60.0, f"could not add {SHARD}")
        wait_until(lambda: admin.format(deadline=10.0) or True, 60.0, "format failed")


def chunk_servers_seen(cluster: Hosts, live: set[str]) -> None:
    """Wait until the shard leader counts exactly ``live`` as live, each fully reported, at
    the addresses they advertise."""
    want = {f"cs{h}": f"{cluster.ip(h)}:{CHUNK}" for h in HOSTS}

    def probe() -> bool:
        with cluster.client() as c:
            for h in HOSTS:
                try:
                    st = c.status(f"{cluster.ip(h)}:{MASTER_CLIENT}", timeout=2.0)
                except Exception:  # noqa: BLE001  # a host that is down or cut off
                    continue
                if st.groups[SHARD].state != "leader":
                    continue
                servers = st.chunk_servers
                seen = {i for i, s in servers.items() if s.live and s.reported}
                return seen == live and all(servers[i].address == want[i] for i in live)
        return False

    wait_until(probe, 60.0, f"the shard leader does not see {sorted(live)} live")


def put_get(cluster: Hosts, name: str, files: dict[str, str]) -> None:
    data = os.urandom(1_500_000)  # many packets, through a pipeline of 3
    path = f"/journey/{name}"
    with cluster.client() as fs:
        fs.mkdir("/journey", parents=True)
        fs.write_bytes(path, data, overwrite=True)
        assert hashlib.md5(fs.read_bytes(path)).hexdigest() == hashlib.md5(data).hexdigest()
    files[path] = hashlib.md5(data).hexdigest()


def every_file_intact(cluster: Hosts, files: dict[str, str]) -> None:
    with cluster.client() as fs:
        for path, md5 in files.items():
            assert hashlib.md5(fs.read_bytes(path)).hexdigest() == md5, path


def caught_up(cluster: Hosts, node_id: int) -> None:
    """Wait until master ``node_id`` has applied what the shard leader committed."""
    host = node_id - 10

    def probe() -> bool:
        with cluster.client() as c:
            mine = c.status(f"{cluster.ip(host)}:{MASTER_CLIENT}", timeout=2.0).groups[SHARD]
            for h in HOSTS:
                st = c.status(f"{cluster.ip(h)}:{MASTER_CLIENT}", timeout=2.0).groups[SHARD]
                if st.state == "leader":
                    return mine.applied >= st.commit
        return False

    wait_until(probe, 60.0, f"n{node_id} did not catch up")


# -- the test ------------------------------------------------------------------------------------


def test_three_hosts_survive_a_lost_host_and_a_cut_off_one(hosts: Hosts) -> None:
    cluster = hosts
    meta = [n for n in cluster.procs if n.startswith("n")]
    cluster.start(meta)
    for name in meta:  # what they listen on and what they tell others
        ready = read_ready_line(cluster.procs[name].directory / "stdout.log")
        assert ready is not None
        ip = cluster.ip(cluster.procs[name].host)
        assert ready["client"].startswith(f"{ip}:") and ready["raft"].startswith(f"{ip}:")
    set_up(cluster)
    with cluster.client() as admin:  # what the config group hands to clients: the IPs
        members = admin.shard_map().shards[SHARD]
        assert {int(i): a for i, a in members.items()} == {
            10 + h: f"{cluster.ip(h)}:{MASTER_CLIENT}" for h in HOSTS
        }

        def config_servers_registered() -> bool:  # each registers on its own after READY
            admin.shard_map()
            return all(h in admin.nodes() for h in HOSTS)

        wait_until(config_servers_registered, 60.0, "a config server never registered")
        nodes = admin.nodes()
        assert all(nodes[h] == f"{cluster.ip(h)}:{CONFIG_CLIENT}" for h in HOSTS), nodes
    cluster.start([f"cs{h}" for h in HOSTS])
    chunk_servers_seen(cluster, {"cs1", "cs2", "cs3"})
    files: dict[str, str] = {}
    put_get(cluster, "first", files)

    cluster.kill_host(3)  # a config server, a master and a chunk server at once
    assert cluster.exit_codes(3) == [-signal.SIGKILL] * 3
    put_get(cluster, "after-host-3-died", files)
    every_file_intact(cluster, files)

    cluster.start(cluster.on_host(3), first=False)  # the machine comes back: it rejoins
    chunk_servers_seen(cluster, {"cs1", "cs2", "cs3"})
    caught_up(cluster, 13)

    cluster.net.isolate(2)  # host 2 cut off: nobody reaches it, not even this client
    with cluster.client() as c, pytest.raises(grpc.RpcError):
        c.status(f"{cluster.ip(2)}:{MASTER_CLIENT}", timeout=1.0)
    put_get(cluster, "while-host-2-cut-off", files)
    assert cluster.exit_codes(2) == [None, None, None]  # cut off, not dead

    cluster.net.heal(2)
    caught_up(cluster, 12)
    chunk_servers_seen(cluster, {"cs1", "cs2", "cs3"})
    put_get(cluster, "after-host-2-rejoined", files)
    every_file_intact(cluster, files)
