"""Shard leaders killed (-9) and frozen (SIGSTOP) under a concurrent client workload.

What must hold: no acknowledged operation is lost; every create of a unique name succeeds
exactly once (a create retried after a failover gets its first reply, never ALREADY_EXISTS);
and a recorded history of create/delete/rename/stat/list on a few names, taken while leaders
fail, is linearizable (``keelfs.testing.linearizability.FileNamespaceModel``).

Each test starts its own co-hosted cluster: 3 processes, each hosting a config member and a
member of both shards, so a killed shard leader also takes a config member and the other
shard's member down with it.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from keelfs.client import Client, OutcomeUnknown
from keelfs.errors import (
    AlreadyExists,
    KeelError,
    LeaseConflict,
    NotFound,
    Unavailable,
)
from keelfs.server.metacluster import MetaCluster
from keelfs.testing.linearizability import FileNamespaceModel, HistoryRecorder, check

pytestmark = pytest.mark.slow

MakeCluster = Callable[..., MetaCluster]


class Creators:
    """Threads creating unique files in ``directory``, each with its own client."""

    def __init__(self, cluster: MetaCluster, directory: str, threads: int = 3) -> None:
        self.directory = directory
        self.acked: set[str] = set()
        self.unknown: set[str] = set()
        self.violations: list[str] = []
        self.clients = [cluster.client(deadline=20.0, attempt_timeout=1.0) for _ in range(threads)]
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(t,), daemon=True) for t in range(threads)
        ]

    def _run(self, t: int) -> None:
        fs = self.clients[t]
        i = 0
        while not self._stop.is_set():
            path = f"{self.directory}/t{t}-{i:05d}"
            i += 1
            try:
                fs.create(path)
            except OutcomeUnknown:
                with self._lock:
                    self.unknown.add(path)
            except KeelError as exc:
                with self._lock:
                    self.violations.append(f"{path}: {exc!r}")
            else:
                with self._lock:
                    self.acked.add(path)

    def __enter__(self) -> Creators:
        for th in self._threads:
            th.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for th in self._threads:
            th.join(timeout=60)

    def count(self) -> int:
        with self._lock:
            return len(self.acked)

    def wait_for_more(self, n: int, timeout: float = 30.0) -> None:
        target = self.count() + n
        deadline = time.monotonic() + timeout
        while self.count() < target:
            assert time.monotonic() < deadline, f"creates stalled at {self.count()} (< {target})"
            time.sleep(0.02)

    def unknown_outcomes_retried(self) -> int:
        return sum(c.stats["unknown_outcomes"] for c in self.clients)

    def check(self, fs: Client) -> None:
        assert not self.violations, self.violations[:5]
        present = {e.path for e in fs.ls(self.directory)}
        lost = self.acked - present
        assert not lost, f"{len(lost)} acknowledged creates lost, e.g. {sorted(lost)[:5]}"
        extra = present - self.acked - self.unknown
        assert not extra, f"files nobody created: {sorted(extra)[:5]}"


def _directory_on(cluster: MetaCluster, fs: Client) -> tuple[str, str]:
    fs.mkdir("/load")
    return "/load", fs.shard_map().shard_for_path("/load/x")


@pytest.mark.timeout(120)
def test_kill9_shard_leader_during_creates(make_cluster: MakeCluster) -> None:
    cluster = make_cluster()
    fs = cluster.client()
    directory, shard = _directory_on(cluster, fs)
    with Creators(cluster, directory) as load:
        load.wait_for_more(60)
        victim = cluster.leader(shard)
        cluster.kill9(victim)
        load.wait_for_more(60)  # progress under the new leader
        assert cluster.leader(shard) != victim
        cluster.restart(victim)
        load.wait_for_more(60)
    load.check(fs)
    print(f"acked {len(load.acked)}, unknown {len(load.unknown)}, "
          f"retried after unknown outcome {load.unknown_outcomes_retried()}")  # fmt: skip


@pytest.mark.timeout(120)
def test_sigstop_shard_leader_during_creates(make_cluster: MakeCluster) -> None:
    cluster = make_cluster()
    fs = cluster.client()
    directory, shard = _directory_on(cluster, fs)
    with Creators(cluster, directory) as load:
        load.wait_for_more(60)
        victim = cluster.leader(shard)
        cluster.sigstop(victim)
        try:
            load.wait_for_more(60)  # a frozen leader is replaced
            assert cluster.leader(shard, exclude=(victim,)) != victim
        finally:
            cluster.sigcont(victim)
        load.wait_for_more(60)
    load.check(fs)
    # the thawed node serves again, and knows everything
    node_fs = Client(cluster.nodes[victim].client_address)
    try:
        assert {e.path for e in node_fs.ls(directory)} >= load.acked
    finally:
        node_fs.close()
    print(f"acked {len(load.acked)}, unknown {len(load.unknown)}, "
          f"retried after unknown outcome {load.unknown_outcomes_retried()}")  # fmt: skip


# -------------------------------------------------------------------------------------------
NAMES = ("a", "b", "c")
PHASE_OPS = 25  # operations completed in each phase of the fault schedule (so > 100 in all)


def _namespace_op(fs: Client, directory: str, rng: random.Random) -> tuple[Any, Callable[[], Any]]:
    kind = rng.choice(["create", "create", "delete", "rename", "stat", "list"])
    a, b = rng.choice(NAMES), rng.choice(NAMES)
    pa, pb_ = f"{directory}/{a}", f"{directory}/{b}"
    if kind == "create":

        def create() -> str:
            try:
                fs.create(pa)
            except (AlreadyExists, LeaseConflict):
                return "exists"
            return "ok"

        return ("create", a), create
    if kind == "delete":

        def delete() -> str:
            try:
                fs.delete(pa)
            except NotFound:
                return "not_found"
            return "ok"

        return ("delete", a), delete
    if kind == "rename":

        def rename() -> str:
            try:
                fs.rename(pa, pb_)
            except NotFound:
                return "not_found"
            except AlreadyExists:
                return "exists"
            return "ok"

        return ("rename", a, b), rename
    if kind == "stat":
        return ("stat", a), lambda: fs.exists(pa)
    return ("list",), lambda: tuple(e.name for e in fs.ls(directory))


@pytest.mark.timeout(180)
def test_namespace_history_is_linearizable_across_failovers(make_cluster: MakeCluster) -> None:
    cluster = make_cluster()
    fs = cluster.client()
    fs.mkdir("/lin")
    shard = fs.shard_map().shard_for_path("/lin/a")
    rec = HistoryRecorder()
    stop = threading.Event()
    failures: list[str] = []

    def client_loop(c: int) -> None:
        rng = random.Random(c)
        cfs = cluster.client(deadline=15.0, attempt_timeout=1.0)
        while not stop.is_set():
            op, run = _namespace_op(cfs, "/lin", rng)
            h = rec.invoke(c, op)
            try:
                out = run()
            except OutcomeUnknown:
                rec.fail_unknown(h)
            except Unavailable:
                rec.fail_definite(h)  # certainly not applied (deadline, never reached Raft)
            except KeelError as exc:
                rec.fail_unknown(h)
                failures.append(f"{op}: {exc!r}")
            else:
                rec.complete(h, out)
            time.sleep(rng.uniform(0.01, 0.05))

    def known() -> int:
        return sum(1 for op in rec.history() if op.outcome_known)

    def progress(n: int, phase: str) -> None:
        """Wait until the clients complete ``n`` more operations (with a known outcome)."""
        target = known() + n
        cluster.wait_for(lambda: known() >= target, 60, f"fewer than {n} operations {phase}")

    threads = [threading.Thread(target=client_loop, args=(c,), daemon=True) for c in range(4)]
    for th in threads:
        th.start()
    try:
        progress(PHASE_OPS, "before any fault")
        victim = cluster.leader(shard)
        cluster.kill9(victim)
        progress(PHASE_OPS, "after the leader was killed")
        cluster.restart(victim)
        progress(PHASE_OPS, "after the killed node restarted")
        frozen = cluster.leader(shard)
        cluster.sigstop(frozen)
        try:
            progress(PHASE_OPS, "while the leader was frozen")
        finally:
            cluster.sigcont(frozen)
        progress(PHASE_OPS, "after the frozen leader woke")
    finally:
        stop.set()
        for th in threads:
            th.join(timeout=60)
    history = rec.history()
    assert not failures, failures[:5]
    known_ops = sum(1 for op in history if op.outcome_known)
    assert known_ops >= 5 * PHASE_OPS, f"only {known_ops} operations completed"
    result = check(FileNamespaceModel(), history, timeout_s=90)
    assert result.ok, result.explanation
    print(f"{len(history)} operations ({known_ops} with known outcome): linearizable")
