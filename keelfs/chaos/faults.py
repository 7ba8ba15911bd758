"""The faults of ``keelfs chaos``, on a schedule drawn from the run's seed.

============  ==================================================================================
kind          what it does
============  ==================================================================================
``kill``      ``kill -9`` a master, config server or chunk server; start it again 1-5 s later
``stop``      ``SIGSTOP`` one (a frozen node: its peers see silence, not a closed socket);
              ``SIGCONT`` 1-4 s later
``restart``   ``SIGTERM`` one, then start it again at once (a rolling restart)
``transfer``  move a group's leadership (config or a shard) to another voter
``reshard``   remove the last shard of the map, then add it back with the same masters, under
              load (two full resharding plans)
``partition`` either isolate one process (its link to the bridge down: nobody reaches it, not
              even the clients) or split the processes into two sides that cannot reach each
              other (every pair across dropped, silently; clients still reach both sides);
              healed 1-5 s later. Only for a cluster started with ``keelfs local-cluster up
              --netns``, and as root
============  ==================================================================================

``kill``, ``stop`` and ``restart`` need the processes: the state file of ``keelfs
local-cluster`` (``--cluster-dir``) names each one's pid and command line, and a restart runs
it exactly as ``local-cluster up`` does (``keelfs.server.local_cluster.restart_process``).
At most one process of each group (and one chunk server) is down or frozen at a time, so
every group keeps a majority (an isolated process counts as down). Half the process faults
and isolations pick the group's leader.

Partitions need each process in its own network namespace (``--netns``): in the host's one, no
link between two processes could be cut without also cutting the client's. One partition is in
place at a time. :meth:`FaultInjector.heal` (also run when the run is interrupted) heals the
whole network as the namespaces show it, whatever this run remembers; so does the start of a
run, in case an earlier one was killed before it could heal.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from keelfs.errors import AlreadyExists, NotLeader
from keelfs.rpc import grpc_errors
from keelfs.rpc.pb import meta_pb2 as pb
from keelfs.rpc.pb import meta_pb2_grpc as _pb_grpc
from keelfs.rpc.wire import CONFIG_GROUP
from keelfs.runtime.netns import NetnsNetwork
from keelfs.server.local_cluster import ProcessRecord, State, network_of, restart_process
from keelfs.tls.credentials import TlsSettings, open_channel

pb_grpc: Any = _pb_grpc  # generated, untyped

__all__ = [
    "ALL_FAULTS",
    "FaultInjector",
    "NETWORK_FAULTS",
    "PROCESS_FAULTS",
    "partitions_unavailable",
]

PROCESS_FAULTS = ("kill", "stop", "restart")
ADMIN_FAULTS = ("transfer", "reshard")
NETWORK_FAULTS = ("partition",)
ALL_FAULTS = (*PROCESS_FAULTS, *ADMIN_FAULTS, *NETWORK_FAULTS)


def partitions_unavailable(state: State | None) -> str:
    """Why partitions cannot be injected into this cluster ("" if they can)."""
    if state is None:
        return (
            "not injected: needs --cluster-dir of a cluster started with "
            "`keelfs local-cluster up --netns` (each process in its own network namespace)"
        )
    if state.network is None:
        return (
            "not injected: this local cluster runs every process in the host's network "
            "namespace (no link between two of them can be cut); start it with "
            "`keelfs local-cluster up --netns` (root) to partition it"
        )
    if os.geteuid() != 0:
        return "not injected: changing the cluster's network namespaces needs root"
    return ""


_RESHARD_TIMEOUT_S = 180.0


@dataclass
class _Down:
    record: ProcessRecord
    how: str  # "killed", "stopped" or "isolated"
    until: float


@dataclass
class _Split:
    pairs: list[tuple[int, int]]
    """Host numbers of every pair cut apart (one on each side)."""
    until: float


@dataclass
class FaultLog:
    started: float
    counts: Counter[str] = field(default_factory=Counter)
    events: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def event(self, kind: str, target: str, detail: str = "") -> None:
        with self._lock:
            self.events.append(
                {"t": round(time.monotonic() - self.started, 2), "kind": kind, "target": target}
                | ({"detail": detail} if detail else {})
            )

    def injected(self, kind: str) -> None:
        with self._lock:
            self.counts[kind] += 1

    def error(self, kind: str, target: str, exc: BaseException | str) -> None:
        message = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        with self._lock:
            self.errors.append(
                {
                    "t": round(time.monotonic() - self.started, 2),
                    "kind": kind,
                    "target": target,
                    "error": message,
                }
            )


class FaultInjector:
    """Injects the enabled faults until ``stop`` is set, then :meth:`heal` undoes them."""

    def __init__(
        self,
        kinds: tuple[str, ...],
        rng: random.Random,
        admin: Any,
        config_addresses: list[str],
        state: State | None,
        log: FaultLog,
        *,
        every_s: tuple[float, float] = (1.5, 4.0),
        progress: Callable[[str], None] = lambda _: None,
        tls: TlsSettings | None = None,
    ) -> None:
        """``tls``: what the injector's own calls (leadership transfers) present, as ``admin``
        does (None: plain channels)."""
        self.kinds = kinds
        self.tls = tls
        self.rng = rng
        self.admin = admin
        """A client used for leadership and shard changes (apart from the workload's)."""
        self.config_addresses = config_addresses
        self.state = state
        self.log = log
        self.every_s = every_s
        self.progress = progress
        self.down: dict[str, _Down] = {}
        self.crashed: list[str] = []
        """Processes found dead that no fault killed (reported, and restarted by heal)."""
        self._admin_threads: dict[str, threading.Thread] = {}
        self._removed: tuple[str, list[int]] | None = None
        """A shard removed by ``reshard`` and not yet added back."""
        self._give_up_at = float("inf")
        """When waits for resharding stop (set by :meth:`heal`)."""
        self.network: NetnsNetwork | None = None
        if state is not None and "partition" in kinds:
            self.network = network_of(state)
        self._split: _Split | None = None
        self._heal_network()  # an earlier run may have been killed before it healed

    # -- the schedule ---------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """The first faults cover every enabled kind once (in an order drawn from the seed),
        so that even a short run sees each; then each is drawn at random."""
        first = list(self.kinds)
        self.rng.shuffle(first)
        next_at = time.monotonic() + self.rng.uniform(*self.every_s) / 2
        while not stop.is_set():
            self._end_due(time.monotonic())
            if time.monotonic() >= next_at:
                kind = first.pop(0) if first else self.rng.choice(self.kinds)
                try:
                    self._inject(kind)
                except Exception as exc:
                    self.log.error(kind, "", exc)
                next_at = time.monotonic() + self.rng.uniform(*self.every_s)
            stop.wait(0.1)

    def _inject(self, kind: str) -> None:
        if kind in PROCESS_FAULTS:
            self._process_fault(kind)
        elif kind == "transfer":
            self._in_background(kind, self._transfer)
        elif kind == "reshard":
            self._in_background(kind, self._reshard)
        elif kind == "partition":
            self._partition()

    # -- process faults -------------------------------------------------------------------------
    @staticmethod
    def _group_of(p: ProcessRecord) -> str:
        return p.groups[0] if p.groups else p.role

    def _pick(self) -> ProcessRecord | None:
        assert self.state is not None
        # a group with a member down (ours, or one that died on its own) is left alone
        busy = {self._group_of(d.record) for d in self.down.values()}
        busy |= {self._group_of(p) for p in self.state.processes if not p.alive()}
        candidates = [
            p for p in self.state.processes if p.alive() and self._group_of(p) not in busy
        ]
        if not candidates:
            return None
        target = self.rng.choice(candidates)
        if target.role != "chunk" and self.rng.random() < 0.5:
            leader = self._leader(self._group_of(target), candidates)
            if leader is not None:
                target = leader
        return target

    def _leader(self, group: str, candidates: list[ProcessRecord]) -> ProcessRecord | None:
        """The member of ``group`` that some member names as leader, if it is a candidate."""
        members = [p for p in candidates if group in p.groups]
        for p in members:
            try:
                st = self.admin.status(p.address, timeout=1.0)
            except Exception:
                continue
            g = st.groups.get(group)
            leader = g.leader if g is not None else None
            return next((q for q in members if q.node_id == leader), None)
        return None

    def _process_fault(self, kind: str) -> None:
        p = self._pick()
        if p is None:
            self.log.error(kind, "", "no process to fault (every group has one down)")
            return
        if kind == "kill":
            _signal(p, signal.SIGKILL)
            _wait_gone(p, 10.0)
            self.down[p.name] = _Down(p, "killed", time.monotonic() + self.rng.uniform(1, 5))
        elif kind == "stop":
            _signal(p, signal.SIGSTOP)
            self.down[p.name] = _Down(p, "stopped", time.monotonic() + self.rng.uniform(1, 4))
        else:
            _signal(p, signal.SIGTERM)
            if not _wait_gone(p, 10.0):
                _signal(p, signal.SIGKILL)
                _wait_gone(p, 5.0)
            self._start(kind, p)
        self.log.injected(kind)
        self.log.event(kind, p.name, f"{p.role} {','.join(p.groups)}".strip())
        self.progress(f"fault: {kind} {p.name} ({p.role})")

    # -- partitions -----------------------------------------------------------------------------
    def _host(self, p: ProcessRecord) -> int:
        assert self.state is not None and self.state.network is not None
        return self.state.network.hosts[p.name]

    def _partition(self) -> None:
        if self.network is None:
            return
        if self._split is not None or any(d.how == "isolated" for d in self.down.values()):
            self.log.error("partition", "", "skipped: a partition is in place")
            return
        if self.rng.random() < 0.5:
            self._isolate(self.network)
        else:
            self._split_in_two(self.network)

    def _isolate(self, net: NetnsNetwork) -> None:
        p = self._pick()
        if p is None:
            self.log.error("partition", "", "no process to isolate (every group has one down)")
            return
        seconds = self.rng.uniform(1, 5)
        net.isolate(self._host(p))
        self.down[p.name] = _Down(p, "isolated", time.monotonic() + seconds)
        self.log.injected("partition")
        detail = f"isolate {p.role} {','.join(p.groups)}".strip() + f" for {seconds:.1f} s"
        self.log.event("partition", p.name, detail)
        self.progress(f"fault: partition: isolate {p.name} ({p.role}) for {seconds:.1f} s")

    def _split_in_two(self, net: NetnsNetwork) -> None:
        assert self.state is not None
        names = [p.name for p in self.state.processes]
        self.rng.shuffle(names)
        cut_at = self.rng.randint(1, len(names) - 1)
        side_a, side_b = sorted(names[:cut_at]), sorted(names[cut_at:])
        assert self.state.network is not None
        hosts = self.state.network.hosts
        pairs = [(hosts[a], hosts[b]) for a in side_a for b in side_b]
        seconds = self.rng.uniform(1, 5)
        self._split = _Split([], time.monotonic() + seconds)
        for a, b in pairs:  # recorded one by one: a failure half-way still heals what was cut
            self._split.pairs.append((a, b))
            net.cut(a, b)
        self.log.injected("partition")
        detail = f"split {' '.join(side_a)} | {' '.join(side_b)} for {seconds:.1f} s"
        self.log.event("partition", "split", detail)
        self.progress(f"fault: partition: {detail}")

    def _end_split(self, now: float, *, all_: bool = False) -> None:
        split, net = self._split, self.network
        if split is None or net is None or (now < split.until and not all_):
            return
        try:
            for a, b in split.pairs:
                net.uncut(a, b)
        except Exception as exc:
            self.log.error("partition", "split", exc)
            split.until = now + 2.0  # try again, not at every tick (heal() heals it all)
            return
        self._split = None

    def _reconnect(self, p: ProcessRecord) -> bool:
        assert self.network is not None
        try:
            self.network.heal(self._host(p))
        except Exception as exc:
            self.log.error("partition", p.name, exc)
            return False
        return True

    def _heal_network(self) -> None:
        """Undo every partition, as the namespaces show them (not only what this run did)."""
        if self.network is None:
            return
        try:
            self.network.heal_all()
        except Exception as exc:
            self.log.error("heal", "network", exc)
        self._split = None
        for name, d in list(self.down.items()):
            if d.how == "isolated":
                del self.down[name]

    def _start(self, kind: str, p: ProcessRecord) -> bool:
        assert self.state is not None
        try:
            restart_process(self.state, p.name)
        except Exception as exc:
            self.log.error(kind, p.name, exc)
            return False
        return True

    def _end_due(self, now: float, *, all_: bool = False) -> None:
        self._end_split(now, all_=all_)
        for name, d in list(self.down.items()):
            if not all_ and now < d.until:
                continue
            if d.how == "stopped":
                _signal(d.record, signal.SIGCONT)
                del self.down[name]
            elif d.how == "isolated":
                if self._reconnect(d.record) or all_:
                    del self.down[name]
                else:
                    d.until = now + 2.0
            elif self._start("kill", d.record) or all_:
                del self.down[name]
            else:
                d.until = now + 2.0  # try again, not at every tick

    # -- admin faults ---------------------------------------------------------------------------
    def _in_background(self, kind: str, body: Callable[[], None]) -> None:
        """Leadership and shard changes wait on the cluster: they run beside the process
        faults, one of each kind at a time (another while one runs is skipped)."""
        running = self._admin_threads.get(kind)
        if running is not None and running.is_alive():
            self.log.error(kind, "", f"skipped: the previous {kind} is still running")
            return

        def guarded() -> None:
            try:
                body()
            except Exception as exc:
                self.log.error(kind, "", exc)

        thread = threading.Thread(target=guarded, name=f"chaos-{kind}", daemon=True)
        self._admin_threads[kind] = thread
        thread.start()

    def _transfer(self) -> None:
        m = self.admin.shard_map()
        group = self.rng.choice([CONFIG_GROUP, *sorted(m.shards)])
        members = self.config_addresses if group == CONFIG_GROUP else m.shards[group].values()
        addresses = list(members)
        self.rng.shuffle(addresses)
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline:
            reply = _transfer_on(list(addresses), group, self.tls)
            if reply is not None:
                self.log.injected("transfer")
                detail = f"node {reply.previous} -> node {reply.leader}"
                self.log.event("transfer", group, detail)
                self.progress(f"fault: transfer {group} leadership, {detail}")
                return
            time.sleep(0.2)
        self.log.error("transfer", group, "no leader accepted the transfer in 15 s")

    def _reshard(self) -> None:
        m = self.admin.shard_map()
        if m.resharding or len(m.shards) < 2:
            self.log.error("reshard", "", "skipped: resharding under way or a single shard")
            return
        shard = sorted(m.shards)[-1]
        members = sorted(int(n) for n in m.shards[shard])
        self._removed = (shard, members)
        self.log.injected("reshard")
        self.log.event("reshard", shard, f"remove-shard, then add-shard with {members}")
        self.progress(f"fault: reshard: removing {shard}")
        self.admin.remove_shard(shard)
        self._wait_resharded(shard)
        self.progress(f"fault: reshard: adding {shard} back ({members})")
        self._add_back()

    def _add_back(self) -> None:
        if self._removed is None:
            return
        shard, members = self._removed
        with contextlib.suppress(AlreadyExists):
            self.admin.add_shard(shard, members)
        self._removed = None
        self._wait_resharded(shard)

    def _wait_resharded(self, shard: str) -> None:
        started = time.monotonic()
        deadline = min(started + _RESHARD_TIMEOUT_S, self._give_up_at)
        while self.admin.shard_map().resharding:
            if time.monotonic() >= min(deadline, self._give_up_at):
                waited = time.monotonic() - started
                raise TimeoutError(f"resharding ({shard}) not done after {waited:.0f} s")
            time.sleep(0.3)

    # -- healing --------------------------------------------------------------------------------
    def heal(self, timeout: float) -> None:
        """Undo every fault within ``timeout``: SIGCONT the frozen, start the killed and any
        process that died on its own (named in :attr:`crashed`), let a running reshard finish
        and add a removed shard back."""
        self._give_up_at = time.monotonic() + timeout
        self._heal_network()
        ours = set(self.down)
        self._end_due(time.monotonic(), all_=True)
        if self.state is not None:
            for p in self.state.processes:
                if not p.alive():
                    if p.name not in ours:
                        self.crashed.append(p.name)
                        self.log.error("crash", p.name, "found dead (no fault killed it)")
                    self._start("heal", p)
        for kind, thread in self._admin_threads.items():
            thread.join(max(0.0, self._give_up_at - time.monotonic()))
            if thread.is_alive():
                self.log.error("heal", kind, f"the {kind} still runs after {timeout:g} s")
        if self._removed is not None:
            shard = self._removed[0]
            try:
                self._add_back()
            except Exception as exc:
                self.log.error("heal", shard, exc)


def _transfer_on(addresses: list[str], group: str, tls: TlsSettings | None) -> Any:
    """``Node.TransferLeader`` of ``group`` (to the most up-to-date other voter) on the first
    of ``addresses`` that leads it, following ``NOT_LEADER`` hints; None if none did."""
    tried: set[str] = set()
    while addresses:
        address = addresses.pop(0)
        if address in tried:
            continue
        tried.add(address)
        with open_channel(address, tls) as channel:
            stub: Any = pb_grpc.NodeStub(channel)
            try:
                return stub.TransferLeader(
                    pb.TransferLeaderRequest(group=group, target=0), timeout=5.0
                )
            except grpc.RpcError as err:
                keel = grpc_errors.error_from_rpc(err)
                if isinstance(keel, NotLeader) and keel.leader_address:
                    addresses.insert(0, keel.leader_address)
    return None


def _signal(p: ProcessRecord, sig: signal.Signals) -> None:
    if p.alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, sig)


def _wait_gone(p: ProcessRecord, timeout: float) -> bool:
    """Wait for ``p`` to exit (reaping it when this process started it)."""
    deadline = time.monotonic() + timeout
    while p.alive():
        with contextlib.suppress(ChildProcessError):
            os.waitpid(p.pid, os.WNOHANG)
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(p.pid, os.WNOHANG)
    return True
