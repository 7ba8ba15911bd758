"""Real-process clusters of the replicated KV server (``keelfs.runtime.server``), for the Raft
layer's benchmarks (``keelfs bench raft|failover|idle``) and tests: kill -9, SIGSTOP, restarts.

::

    with ProcessCluster(tmp_path, n=3) as cluster:       # starts 3 OS processes, waits READY
        client = cluster.client()                        # a KVClient over every node
        client.put("k", "v")
        old = cluster.leader()
        cluster.kill9(old)
        cluster.restart(old)                             # same id, addresses and data
        cluster.restart(2, wipe=True)                    # empty data dir: re-joins (snapshot)

Every node gets two fixed 127.0.0.1 ports (Raft and client API), picked free at construction
and kept across restarts. Processes run in their own session; stdout (for the ``READY`` line)
and stderr (logs) go to files under ``tmpdir/nN/``. Everything the cluster started is killed
by pid in ``stop_all()`` (called by ``__exit__``), and by an ``atexit`` hook as a safety net.

:func:`netns_cluster` puts each node in its own network namespace (root only) with
``keelfs.runtime.netns.NetnsNetwork``; nodes then serve clients on unix sockets, which the test
process reaches from the root namespace.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from keelfs.runtime.client import KVClient
from keelfs.runtime.netns import NetnsNetwork
from keelfs.runtime.processes import (
    ClusterError,
    Launcher,
    free_ports,
    hard_kill,
    spawn_tracked,
    wait_until,
)

__all__ = ["NodeSpec", "ProcessCluster"]

T = TypeVar("T")


@dataclass
class NodeSpec:
    node_id: int
    raft_address: str
    client_address: str
    directory: Path

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def log_path(self) -> Path:
        return self.directory / "stderr.log"


@dataclass
class _Running:
    proc: subprocess.Popen[bytes]
    stopped: bool = False
    ready: dict[str, Any] = field(default_factory=dict)


class ProcessCluster(Launcher):
    """``n`` server processes forming one KV Raft group; see the module docstring.

    ``server_args`` are appended to every server command line (e.g. ``--snapshot-every``).
    """

    def __init__(
        self,
        tmpdir: str | os.PathLike[str],
        n: int = 3,
        *,
        tick_ms: float = 15.0,
        election_tick: int = 10,
        server_args: tuple[str, ...] = (),
        netns: NetnsNetwork | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.root = Path(tmpdir)
        self.n = n
        self.tick_ms = tick_ms
        self.election_tick = election_tick
        self.server_args = tuple(server_args)
        self.netns = netns
        self.start_timeout = start_timeout
        self.nodes: dict[int, NodeSpec] = {}
        self._running: dict[int, _Running] = {}
        self._clients: list[KVClient] = []
        for i in range(1, n + 1):
            self._define(i)

    # -- layout -----------------------------------------------------------------------------
    def _define(self, node_id: int) -> NodeSpec:
        directory = self.root / f"n{node_id}"
        directory.mkdir(parents=True, exist_ok=True)
        if self.netns is not None:
            raft = f"{self.netns.ip(node_id)}:7000"
            client = f"unix:{self.netns.socket_dir / f'n{node_id}.sock'}"
        else:
            raft_port, client_port = free_ports(2)
            raft = f"127.0.0.1:{raft_port}"
            client = f"127.0.0.1:{client_port}"
        spec = self.nodes[node_id] = NodeSpec(node_id, raft, client, directory)
        return spec

    def peers_arg(self, ids: list[int] | None = None) -> str:
        ids = sorted(self.nodes) if ids is None else ids
        return ",".join(f"{i}={self.nodes[i].raft_address}" for i in ids)

    @property
    def client_addresses(self) -> list[str]:
        return [self.nodes[i].client_address for i in sorted(self.nodes)]

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> ProcessCluster:
        """Bootstrap every defined node (``--peers``) and wait until all are READY."""
        peers = self.peers_arg()
        for i in sorted(self.nodes):
            self._spawn(i, ["--peers", peers])
        for i in sorted(self.nodes):
            self._await_ready(i)
        return self

    def _command(self, node_id: int, extra: list[str]) -> list[str]:
        spec = self.nodes[node_id]
        cmd = [
            sys.executable,
            "-m",
            "keelfs.runtime.server",
            "--id",
            str(node_id),
            "--listen",
            spec.raft_address,
            "--client-listen",
            spec.client_address,
            "--data",
            str(spec.data_dir),
            "--tick-ms",
            str(self.tick_ms),
            "--election-tick",
            str(self.election_tick),
            *self.server_args,
            *extra,
        ]
        if self.netns is not None:
            cmd = [*self.netns.exec_prefix(node_id), *cmd]
        return cmd

    def _spawn(self, node_id: int, extra: list[str]) -> None:
        if node_id in self._running and self._running[node_id].proc.poll() is None:
            raise ClusterError(f"node {node_id} is already running")
        spec = self.nodes[node_id]
        out = spec.directory / "stdout.log"
        proc = spawn_tracked(
            self._command(node_id, extra), out, spec.log_path, banner=f"start {' '.join(extra)}"
        )
        self._running[node_id] = _Running(proc)

    def _await_ready(self, node_id: int) -> dict[str, Any]:
        run = self._running[node_id]
        out = self.nodes[node_id].directory / "stdout.log"
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            for line in out.read_text(errors="replace").splitlines():
                if line.startswith("READY "):
                    run.ready = json.loads(line[len("READY ") :])
                    return run.ready
            if run.proc.poll() is not None:
                raise ClusterError(
                    f"node {node_id} exited with {run.proc.returncode} before READY:\n"
                    + self.log_tail(node_id)
                )
            time.sleep(0.02)
        raise ClusterError(
            f"node {node_id} not READY in {self.start_timeout} s\n{self.log_tail(node_id)}"
        )

    def add_node(self, node_id: int | None = None) -> NodeSpec:
        """Define and start a new, empty node with ``--join`` (then call ``AddMember``)."""
        node_id = node_id if node_id is not None else max(self.nodes) + 1
        members = sorted(self.nodes)
        spec = self._define(node_id)
        self._spawn(node_id, ["--join", "--peers", self.peers_arg([*members, node_id])])
        self._await_ready(node_id)
        return spec

    def add_node_via(self, member: int, node_id: int | None = None) -> NodeSpec:
        """Start a new, empty node that joins by naming one member (``--join-via``)."""
        node_id = node_id if node_id is not None else max(self.nodes) + 1
        via = self.nodes[member].client_address
        spec = self._define(node_id)
        self._spawn(node_id, ["--join-via", via])
        self._await_ready(node_id)
        return spec

    def kill9(self, node_id: int) -> None:
        run = self._running.get(node_id)
        if run is None:
            return
        hard_kill(run.proc)
        del self._running[node_id]

    def terminate(self, node_id: int, timeout: float = 10.0) -> int:
        """SIGTERM and wait; returns the exit status (SIGKILL after ``timeout``)."""
        run = self._running.get(node_id)
        if run is None:
            return 0
        if run.stopped:
            self.sigcont(node_id)
        run.proc.send_signal(signal.SIGTERM)
        try:
            rc = run.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            hard_kill(run.proc)
            rc = run.proc.returncode
        hard_kill(run.proc)  # exited: forgets it
        del self._running[node_id]
        return rc

    def sigstop(self, node_id: int) -> None:
        run = self._running[node_id]
        run.proc.send_signal(signal.SIGSTOP)
        run.stopped = True

    def sigcont(self, node_id: int) -> None:
        run = self._running[node_id]
        run.proc.send_signal(signal.SIGCONT)
        run.stopped = False

    def restart(self, node_id: int, wipe: bool = False) -> dict[str, Any]:
        """Kill -9 ``node_id`` if running, then start it again with the same id and addresses.

        Without ``wipe`` it restarts from its data directory with no ``--peers`` (sticky
        membership). With ``wipe`` the node lost its disk, and Raft's rule for that is followed:
        it is removed from the group, started empty with ``--join`` and added back (as a learner
        caught up by the leader, by InstallSnapshot once the log is compacted, then promoted).
        Re-using it in place would be unsafe (it forgot its votes and the entries it
        acknowledged) and would not even work: the leader's progress still records the old
        match index, so it reads the empty node's rejections as stale and never backs up.
        """
        self.kill9(node_id)
        spec = self.nodes[node_id]
        if not wipe:
            self._spawn(node_id, [])
            return self._await_ready(node_id)
        admin = self._admin()
        admin.remove_member(node_id)
        shutil.rmtree(spec.data_dir, ignore_errors=True)
        self._spawn(node_id, ["--join", "--peers", self.peers_arg()])
        ready = self._await_ready(node_id)
        admin.add_member(node_id, spec.raft_address)
        return ready

    def stop_all(self) -> None:
        """Kill every process this cluster started (SIGKILL, by pid) and close clients."""
        for client in self._clients:
            with contextlib.suppress(Exception):
                client.close()
        self._clients = []
        for node_id in list(self._running):
            self.kill9(node_id)

    # -- observation ------------------------------------------------------------------------
    def running(self) -> list[int]:
        """Ids of started processes that were not killed (stopped ones included)."""
        return sorted(i for i, r in self._running.items() if r.proc.poll() is None)

    def is_stopped(self, node_id: int) -> bool:
        run = self._running.get(node_id)
        return run is not None and run.stopped

    def pid(self, node_id: int) -> int:
        return self._running[node_id].proc.pid

    def client(self, node_ids: list[int] | None = None, **kwargs: Any) -> KVClient:
        """A ``KVClient`` over the given nodes' client addresses (default: all), closed by
        ``stop_all``."""
        ids = sorted(self.nodes) if node_ids is None else node_ids
        c = KVClient([self.nodes[i].client_address for i in ids], **kwargs)
        self._clients.append(c)
        return c

    def _admin(self) -> KVClient:
        if not self._clients:
            self.client()
        return self._clients[0]

    def status(self, node_id: int, timeout: float = 2.0) -> dict[str, Any]:
        """``Status`` of one node (raises ``grpc.RpcError`` if it does not answer)."""
        return self._admin().status(self.nodes[node_id].client_address, timeout=timeout)

    def group_status(self, node_id: int, timeout: float = 2.0) -> dict[str, Any]:
        st: dict[str, Any] = self.status(node_id, timeout)["groups"]["kv"]
        return st

    def statuses(self, timeout: float = 1.0) -> dict[int, dict[str, Any]]:
        """Group status of every running, not stopped node that answers."""
        out: dict[int, dict[str, Any]] = {}
        for i in self.running():
            if self.is_stopped(i):
                continue
            try:
                out[i] = self.group_status(i, timeout)
            except Exception:
                continue
        return out

    def leader(self, timeout: float = 15.0, exclude: tuple[int, ...] = ()) -> int:
        """Wait for a leader among the running, not stopped nodes (not in ``exclude``) that a
        majority of the answering voters agree on; return its id."""

        def probe() -> int | None:
            sts = {i: s for i, s in self.statuses().items() if i not in exclude}
            leaders = [(s["term"], i) for i, s in sts.items() if s["state"] == "leader"]
            if not leaders:
                return None
            term, lead = max(leaders)
            voters = sts[lead]["voters"]
            agree = sum(1 for s in sts.values() if s["leader"] == lead and s["term"] == term)
            return lead if agree * 2 > len(voters) else None

        return self.wait_for(probe, timeout, f"no leader within {timeout} s")

    def wait_for(self, probe: Callable[[], T | None], timeout: float, what: str) -> T:
        """``runtime.processes.wait_until``, every node's state in the error."""
        return wait_until(probe, timeout, what, lambda: f"; statuses: {self._brief()}")

    def _brief(self) -> str:
        parts = []
        for i, s in sorted(self.statuses(0.5).items()):
            parts.append(
                f"n{i}:{s['state']} t{s['term']} lead={s['leader']} "
                f"commit={s['commit']} applied={s['applied']} voters={s['voters']}"
            )
        return "; ".join(parts) or "(none answered)"

    def log_tail(self, node_id: int, lines: int = 40) -> str:
        path = self.nodes[node_id].log_path
        if not path.exists():
            return "(no log)"
        text = path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


@contextlib.contextmanager
def netns_cluster(
    tmpdir: str | os.PathLike[str], n: int = 3, **kwargs: Any
) -> Iterator[tuple[ProcessCluster, NetnsNetwork]]:
    """A :class:`ProcessCluster` whose nodes live in their own network namespaces."""
    with (
        NetnsNetwork(list(range(1, n + 1))) as net,
        ProcessCluster(tmpdir, n, netns=net, **kwargs) as cluster,
    ):
        yield cluster, net
