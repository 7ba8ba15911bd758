"""Cross-shard renames under concurrency: a recorded history is linearizable.

Several client threads (each with its own ``Client``) create, delete, rename and stat a few
names in two directories whose children live on different shards, so every rename between
them is a cross-shard transaction (the source's shard coordinates, the target's participates).
The recorded history, plus a final stat of every name once the clients stopped, is checked
with :class:`keelfs.testing.linearizability.FileNamespaceModel`: the namespace must behave
like one atomic map of names, i.e. a rename is never seen half done (both names absent or both
present) and never answered before it took effect.

Run twice on one cluster (``layout="separate"``: one role per process): without faults, and
while the leader of the source directory's shard is killed (-9) and restarted and, later, the
other shard's leader is frozen (SIGSTOP) for 1.5 s.

How each answer is recorded:

- ``create`` (exclusive) is recorded up to the create's reply (``"ok"``, or ``"exists"`` for
  ``ALREADY_EXISTS`` / ``LEASE_CONFLICT``); the thread then completes the file, unrecorded:
  completing changes no name (it may fail when someone else deleted or recreated the name).
- ``rename`` refused with ``LEASE_CONFLICT`` (the source is still being written: its lease
  does not move across shards) is recorded as what it observed, ``stat(src) -> True``.
- a write that raised a retryable error (``OutcomeUnknown``, ``Unavailable``: the transaction
  may still be decided later) is recorded with an unknown outcome; a failed read is dropped.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from helpers import child

from keelfs.client import Client
from keelfs.errors import AlreadyExists, KeelError, LeaseConflict, NotFound, RetryableError
from keelfs.master.cluster import MetaCluster
from keelfs.testing.linearizability import (
    FileNamespaceModel,
    HistoryRecorder,
    Operation,
    check,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

THREADS = 4
OPS_PER_THREAD = 40  # the run without faults
NAMES = ("x", "y")  # in each of the two directories: 4 paths in all
CLIENT_DEADLINE_S = 10.0
BUSY = "busy"  # a rename refused with LEASE_CONFLICT (recorded as stat(src) -> True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MetaCluster]:
    c = MetaCluster(
        tmp_path_factory.mktemp("txnlin"),
        layout="separate",
        node_args=("--txn-prepare-timeout-ms", "3000"),
    )
    try:
        c.start()
        yield c
    except BaseException:
        for node_id in sorted(c.nodes):
            print(f"----- node {node_id} log (tail) -----\n{c.log_tail(node_id, 30)}")
        raise
    finally:
        c.stop_all()


_counter = iter(range(10_000))


def _dirs(fs: Client) -> tuple[str, str, str, str]:
    """Two fresh directories whose children live on different shards, and those shards."""
    m = fs.shard_map()
    base = f"/lin{next(_counter)}"
    fs.mkdir(base)
    a = child(m, base, "a", same_shard=True)
    b = child(m, base, "b", same_shard=False)
    fs.mkdir(a)
    fs.mkdir(b)
    sa, sb = m.shard_for_directory(a), m.shard_for_directory(b)
    assert sa != sb
    return a, b, sa, sb


@dataclass
class Workload:
    """``THREADS`` client threads on the paths ``<a>/x, <a>/y, <b>/x, <b>/y``."""

    cluster: MetaCluster
    a: str
    b: str
    max_ops: int
    seed: int = 0
    rec: HistoryRecorder = field(default_factory=HistoryRecorder)
    stop: threading.Event = field(default_factory=threading.Event)
    failures: list[str] = field(default_factory=list)
    retryable: list[str] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    latency: dict[str, float] = field(default_factory=dict)
    done: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.clients = [
            self.cluster.client(deadline=CLIENT_DEADLINE_S, attempt_timeout=1.0) for _ in range(THREADS)
        ]
        self.threads = [
            threading.Thread(target=self._loop, args=(c,), daemon=True) for c in range(THREADS)
        ]

    # -- one thread ---------------------------------------------------------------------------
    def _loop(self, c: int) -> None:
        rng = random.Random(self.seed * 1000 + c)
        fs = self.clients[c]
        follow: str | None = None  # after a rename, look at one of its names at once
        for _ in range(self.max_ops):
            if self.stop.is_set():
                return
            if follow is not None:
                op: tuple[Any, ...] = ("stat", follow)
                follow = None
            else:
                op = self._pick(rng)
            t0 = time.monotonic()
            out = self._run(c, fs, op)
            with self._lock:
                self.done += 1
                self.outcomes[f"{op[0]} -> {out}"] += 1
                self.latency[op[0]] = max(self.latency.get(op[0], 0.0), time.monotonic() - t0)
            if op[0] == "rename" and rng.random() < 0.6:
                follow = rng.choice(op[1:])
            time.sleep(rng.uniform(0.0, 0.02))

    def _pick(self, rng: random.Random) -> tuple[Any, ...]:
        src_dir, dst_dir = (self.a, self.b) if rng.random() < 0.5 else (self.b, self.a)
        p = f"{src_dir}/{rng.choice(NAMES)}"
        r = rng.random()
        if r < 0.3:
            return ("create", p)
        if r < 0.5:
            return ("delete", p)
        if r < 0.85:
            return ("rename", p, f"{dst_dir}/{rng.choice(NAMES)}")
        return ("stat", p)

    def _run(self, c: int, fs: Client, op: tuple[Any, ...]) -> str:
        """Run ``op``, record it, and say how it ended (for the summary)."""
        kind = op[0]
        h = self.rec.invoke(c, op)
        try:
            if kind == "create":
                try:
                    fs.create(op[1])
                except (AlreadyExists, LeaseConflict):
                    out: Any = "exists"
                else:
                    out = "ok"
            elif kind == "delete":
                try:
                    fs.delete(op[1])
                except NotFound:
                    out = "not_found"
                else:
                    out = "ok"
            elif kind == "rename":
                try:
                    fs.rename(op[1], op[2])
                except NotFound:
                    out = "not_found"
                except AlreadyExists:
                    out = "exists"
                except LeaseConflict:
                    out = BUSY
                else:
                    out = "ok"
            else:
                out = fs.exists(op[1])
        except RetryableError as exc:  # OutcomeUnknown is an Unavailable
            if kind == "stat":
                self.rec.fail_definite(h)  # a read changes nothing
            else:
                self.rec.fail_unknown(h)
            with self._lock:
                self.retryable.append(f"{op}: {exc!r}")
            return f"? ({type(exc).__name__})"
        except KeelError as exc:
            self.rec.fail_unknown(h)
            with self._lock:
                self.failures.append(f"{op}: {exc!r}")
            return f"! ({type(exc).__name__})"
        self.rec.complete(h, out)
        if kind == "create" and out == "ok":
            self._close(fs, op[1])
        return str(out)

    @staticmethod
    def _close(fs: Client, path: str) -> None:
        try:
            fs.complete(path)
        except (NotFound, LeaseConflict):
            pass  # deleted (and maybe recreated) by someone else meanwhile: no name changes
        except RetryableError:
            pass  # left open: renames of it answer LEASE_CONFLICT, which the model accepts

    # -- driving ------------------------------------------------------------------------------
    def __enter__(self) -> Workload:
        for th in self.threads:
            th.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for th in self.threads:
            th.join(timeout=60)
        assert not any(th.is_alive() for th in self.threads), "a client thread hangs"

    def count(self) -> int:
        with self._lock:
            return self.done

    def wait_for_more(self, n: int, timeout: float = 30.0) -> None:
        target = self.count() + n
        deadline = time.monotonic() + timeout
        while self.count() < target:
            assert time.monotonic() < deadline, f"operations stalled at {self.count()} (< {target})"
            time.sleep(0.02)

    def join(self, timeout: float = 120.0) -> None:
        for th in self.threads:
            th.join(timeout=timeout)
        assert not any(th.is_alive() for th in self.threads), "a client thread hangs"

    # -- checking -----------------------------------------------------------------------------
    def final_stats(self, fs: Client) -> None:
        """Once every client stopped: stat every path (recorded), waiting out any transaction
        still being decided or delivered (a locked path answers UNAVAILABLE after a while)."""
        for d in (self.a, self.b):
            for name in NAMES:
                path = f"{d}/{name}"
                deadline = time.monotonic() + 30
                while True:
                    h = self.rec.invoke("final", ("stat", path))
                    try:
                        exists = fs.exists(path)
                    except RetryableError:
                        self.rec.fail_definite(h)
                        assert time.monotonic() < deadline, f"{path} stays unavailable"
                        time.sleep(0.2)
                        continue
                    self.rec.complete(h, exists)
                    break

    def history(self) -> list[Operation]:
        """The recorded history; a ``busy`` rename becomes the read it made: ``stat(src)``."""
        out = []
        for op in self.rec.history():
            if op.outcome_known and op.input[0] == "rename" and op.output == BUSY:
                op = Operation(op.client_id, op.call, op.ret, ("stat", op.input[1]), True)
            out.append(op)
        return out

    def check(self, min_known: int) -> None:
        history = self.history()
        assert not self.failures, self.failures[:5]
        known = sum(1 for op in history if op.outcome_known)
        unknown = len(history) - known
        t0 = time.monotonic()
        result = check(FileNamespaceModel(), history, timeout_s=60)
        took = time.monotonic() - t0
        print(f"{len(history)} operations ({known} known, {unknown} unknown outcome); "
              f"checked in {took:.2f} s")  # fmt: skip
        print("outcomes:", dict(sorted(self.outcomes.items())))
        for line in self.retryable:
            print("retryable error:", line)
        print("max latency (s):", {k: round(v, 2) for k, v in sorted(self.latency.items())})
        assert not result.timed_out, result.explanation
        assert result.ok, result.explanation
        assert self.outcomes["rename -> ok"] >= 5, "too few cross-shard renames succeeded"
        assert known >= min_known, f"only {known} operations completed"


def test_cross_shard_renames_are_linearizable(cluster: MetaCluster) -> None:
    fs = cluster.client(deadline=30.0)
    a, b, _, _ = _dirs(fs)
    t0 = time.monotonic()
    with Workload(cluster, a, b, max_ops=OPS_PER_THREAD, seed=1) as load:
        load.join()
    load.final_stats(fs)
    print(f"workload: {time.monotonic() - t0:.1f} s")
    load.check(min_known=THREADS * OPS_PER_THREAD // 2)


def test_cross_shard_renames_are_linearizable_across_failovers(cluster: MetaCluster) -> None:
    fs = cluster.client(deadline=30.0)
    a, b, sa, sb = _dirs(fs)
    t0 = time.monotonic()
    events: list[str] = []

    def note(what: str) -> None:
        events.append(f"{time.monotonic() - t0:6.2f} s  {what}")

    with Workload(cluster, a, b, max_ops=400, seed=2) as load:
        load.wait_for_more(30)
        victim = cluster.leader(sa)  # the source directory's shard: coordinator of a -> b
        note(f"kill -9 node {victim} (leader of {sa})")
        cluster.kill9(victim)
        load.wait_for_more(15)
        time.sleep(0.5)
        cluster.restart(victim)
        note(f"node {victim} restarted")
        load.wait_for_more(30)
        frozen = cluster.leader(sb)
        note(f"SIGSTOP node {frozen} (leader of {sb})")
        cluster.sigstop(frozen)
        try:
            time.sleep(1.5)
        finally:
            cluster.sigcont(frozen)
        note(f"SIGCONT node {frozen}")
        load.wait_for_more(30)
        note(f"stopping after {load.count()} operations")
    load.final_stats(fs)
    print("\n".join(events))
    print(f"workload: {time.monotonic() - t0:.1f} s")
    load.check(min_known=80)
