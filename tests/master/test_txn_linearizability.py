"""Cross-shard renames under concurrency: a recorded history is linearizable.

Several client threads (each with its own ``Client``) create, delete, rename and stat a few
names in two directories whose children live on different shards, so every rename between
them is a cross-shard transaction (the source's shard coordinates, the target's participates).
The recorded history, plus a final stat of every name once the clients stopped, is checked
with :class:`keelfs.testing.linearizability.FileNamespaceModel`: the namespace must behave
like one atomic map of names, i.e. a rename is never seen half done (both names absent or both
present) and never answered before it took effect.

Run twice on one cluster (``layout="separate"``: one role per process): without faults, and
while the leader of one directory's shard is killed (-9) and restarted, later the other
shard's leader is frozen (SIGSTOP) for 1.5 s, and finally a coordinator freezes right after
recording a commit (failpoint ``txn.decision_recorded``) while two readers watch the file's
two names (see :meth:`Workload.probe_frozen_coordinator`).

A third test (``test_a_file_arriving_by_rename_is_there_for_writers``) targets one moment: a
file's arrival by a cross-shard rename is committed but not yet applied on its new shard; a
delete or rename of it must wait and find it. (It found a bug: such writers checked
existence before the transaction's lock and answered NOT_FOUND.)

Besides single operations, a thread sometimes stats every path back to back, one directory
then the other, and stats both names right after a rename: that is what catches a rename seen
half done (its source gone, then its target not there yet).

How each answer is recorded:

- ``create`` (exclusive) is recorded up to the create's reply (``"ok"``, or ``"exists"`` for
  ``ALREADY_EXISTS`` / ``LEASE_CONFLICT``); the thread then completes the file, unrecorded:
  completing changes no name (it may fail when someone else deleted or recreated the name).
- ``rename`` refused with ``LEASE_CONFLICT`` (the source is still being written: its lease
  does not move across shards) is recorded as what it observed, ``stat(src) -> True``.
- a write that raised a retryable error is recorded with an unknown outcome, plain
  ``Unavailable`` included (stricter than ``test_faults``; an undecided transaction is
  reported as outcome-unknown, but a strict record costs nothing here); a failed read is
  dropped.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import pytest
from helpers import dirs_on_two_shards

from keelfs.client import Client
from keelfs.errors import AlreadyExists, KeelError, LeaseConflict, NotFound, RetryableError
from keelfs.server.metacluster import MetaCluster
from keelfs.testing.clustersim.workload import busy_as_stat, refusal_outcome
from keelfs.testing.linearizability import (
    FileNamespaceModel,
    HistoryRecorder,
    Operation,
    check,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

THREADS = 4
OPS_PER_THREAD = 50  # the run without faults
NAMES = ("x", "y")  # in each of the two directories: 4 paths in all
CLIENT_DEADLINE_S = 10.0
"""A rename aborted because another transaction held one of its paths answers UNAVAILABLE
"locked"; its retries (same session and seq) find the same aborted transaction, so such a
rename spins until this deadline. Kept short so that the run stays short."""


@pytest.fixture(scope="module")
def cluster(failpoint_cluster: MetaCluster) -> MetaCluster:
    return failpoint_cluster


def _fired(cluster: MetaCluster, node_id: int, name: str) -> bool:
    log = cluster.nodes[node_id].log_path
    return log.exists() and f"failpoint {name}:" in log.read_text(errors="replace")


_counter = iter(range(10_000))


def _perform(fs: Client, op: tuple[Any, ...]) -> Any:
    kind = op[0]
    try:
        if kind == "create":
            fs.create(op[1])
        elif kind == "delete":
            fs.delete(op[1])
        elif kind == "rename":
            fs.rename(op[1], op[2])
        else:
            return fs.exists(op[1])
    except (AlreadyExists, LeaseConflict, NotFound) as exc:
        outcome = refusal_outcome(kind, exc)
        if outcome is None:
            raise
        return outcome
    return "ok"


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
    running: threading.Event = field(default_factory=threading.Event)
    failures: list[str] = field(default_factory=list)
    retryable: list[str] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    latency: dict[str, float] = field(default_factory=dict)
    done: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.running.set()
        # half the clients spread their fresh reads (followers answer them after a ReadIndex
        # barrier), half send them to the leader (answered from its lease): both are checked
        self.clients = [
            self.cluster.client(
                deadline=CLIENT_DEADLINE_S, attempt_timeout=1.0, spread_reads=c % 2 == 0
            )
            for c in range(THREADS)
        ]
        self.threads = [
            threading.Thread(target=self._loop, args=(c,), daemon=True) for c in range(THREADS)
        ]

    # -- one thread ---------------------------------------------------------------------------
    def _loop(self, c: int) -> None:
        rng = random.Random(self.seed * 1000 + c)
        try:
            self._ops(c, self.clients[c], rng)
        except Exception as exc:  # noqa: BLE001  # reported by check(), not lost in a thread
            with self._lock:
                self.failures.append(f"client {c} died: {exc!r}")

    def _ops(self, c: int, fs: Client, rng: random.Random) -> None:
        plan: list[tuple[Any, ...]] = []  # operations to run back to back
        for _ in range(self.max_ops):
            self.running.wait(timeout=60)
            if self.stop.is_set():
                return
            if not plan:
                plan = self._pick(rng)
            op = plan.pop(0)
            t0 = time.monotonic()
            out = self._run(c, fs, op)
            with self._lock:
                self.done += 1
                self.outcomes[f"{op[0]} -> {out}"] += 1
                self.latency[op[0]] = max(self.latency.get(op[0], 0.0), time.monotonic() - t0)
            if op[0] == "rename" and (out == "ok" or rng.random() < 0.3):
                plan = [("stat", op[1]), ("stat", op[2])]  # both names, at once
            if not plan:
                time.sleep(rng.uniform(0.0, 0.02))

    def _pick(self, rng: random.Random) -> list[tuple[Any, ...]]:
        """The next operation, or a scan: a stat of every path back to back, one directory
        then the other (a rename between them must never be seen half done: its source
        gone, then its target not there yet)."""
        src_dir, dst_dir = (self.a, self.b) if rng.random() < 0.5 else (self.b, self.a)
        p, q = f"{src_dir}/{rng.choice(NAMES)}", f"{dst_dir}/{rng.choice(NAMES)}"
        r = rng.random()
        if r < 0.3:
            return [("create", p)]
        if r < 0.45:
            return [("delete", p)]
        if r < 0.85:
            return [("rename", p, q)]
        return [("stat", f"{d}/{n}") for d in (src_dir, dst_dir) for n in NAMES]

    def _run(self, c: Hashable, fs: Client, op: tuple[Any, ...]) -> str:
        """Run ``op``, record it, and say how it ended (for the summary)."""
        kind = op[0]
        h = self.rec.invoke(c, op)
        try:
            out = _perform(fs, op)
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
        self.running.set()
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

    def probe_frozen_coordinator(self, stalled: int, name: str = "w") -> None:
        """With the clients paused, move ``<a>/<name>`` to ``<b>/<name>`` while the source
        shard's leader ``stalled`` freezes right after recording the commit, and two readers
        stat the source and the target again and again. Until the new leader (or the
        participant's recovery) delivers the decision, the source is gone and the target not
        yet put: the target's shard must make readers wait (its lock), never answer "absent"
        (a stat of the source answering False, then one of the target, is a violation)."""
        self.running.clear()
        time.sleep(0.3)  # let what is in flight end: the next decision on it is the probe's
        try:
            fs = self.cluster.client(deadline=CLIENT_DEADLINE_S, attempt_timeout=1.0)
            src, dst = f"{self.a}/{name}", f"{self.b}/{name}"
            assert self._run("probe", fs, ("create", src)) == "ok"
            self.cluster.set_failpoint(stalled, "txn.decision_recorded", "stall:1.5")
            watching = threading.Event()
            watching.set()

            def watch(path: str) -> None:
                # short attempts: it must find the new leader quickly, while the window is open
                wfs = self.cluster.client(deadline=CLIENT_DEADLINE_S, attempt_timeout=0.15)
                try:
                    while watching.is_set():
                        self._run(f"watch {path}", wfs, ("stat", path))
                except Exception as exc:  # noqa: BLE001
                    self.failures.append(f"watcher of {path} died: {exc!r}")

            watchers = [threading.Thread(target=watch, args=(p,), daemon=True) for p in (src, dst)]
            for th in watchers:
                th.start()
            try:
                time.sleep(0.05)
                assert self._run("probe", fs, ("rename", src, dst)) == "ok"
                time.sleep(0.5)
            finally:
                watching.clear()
                for th in watchers:
                    th.join(timeout=60)
            assert _fired(self.cluster, stalled, "txn.decision_recorded")
        finally:
            self.running.set()

    # -- checking -----------------------------------------------------------------------------
    def final_stats(self, fs: Client) -> None:
        """Once every client stopped: stat every path (recorded), waiting out any transaction
        still being decided or delivered (a locked path answers UNAVAILABLE after a while)."""
        paths = {p for op in self.rec.history() for p in op.input[1:]}
        for path in sorted(paths):
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
        return busy_as_stat(self.rec.history())

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
        assert self.outcomes["rename -> ok"] >= 2, "hardly any cross-shard rename succeeded"
        assert known >= min_known, f"only {known} operations completed"


def test_cross_shard_renames_are_linearizable(cluster: MetaCluster) -> None:
    fs = cluster.client(deadline=30.0)
    a, b, _, _ = dirs_on_two_shards(fs, "/lin")
    t0 = time.monotonic()
    with Workload(cluster, a, b, max_ops=OPS_PER_THREAD, seed=1) as load:
        load.join()
    load.final_stats(fs)
    print(f"workload: {time.monotonic() - t0:.1f} s")
    load.check(min_known=THREADS * OPS_PER_THREAD // 2)


def test_cross_shard_renames_are_linearizable_across_failovers(cluster: MetaCluster) -> None:
    fs = cluster.client(deadline=30.0)
    a, b, sa, sb = dirs_on_two_shards(fs, "/lin")
    t0 = time.monotonic()
    events: list[str] = []

    def note(what: str) -> None:
        events.append(f"{time.monotonic() - t0:6.2f} s  {what}")

    with Workload(cluster, a, b, max_ops=1000, seed=2) as load:
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
        stalled = cluster.leader(sa)
        note(f"clients paused; node {stalled} (leader of {sa}) to freeze 1.5 s after a commit")
        load.probe_frozen_coordinator(stalled)
        note("clients resumed")
        load.wait_for_more(30)
        note(f"stopping after {load.count()} operations")
    load.final_stats(fs)
    print("\n".join(events))
    print(f"workload: {time.monotonic() - t0:.1f} s")
    load.check(min_known=80)


# -------------------------------------------------------------------------------------------
# A file arriving by a cross-shard rename: committed (gone at its source), not yet put at its
# target, whose shard holds the target path locked until the decision reaches it. Readers wait
# for the lock there; writers must too, and must then find the file.


def _record(rec: HistoryRecorder, who: str, fs: Client, op: tuple[Any, ...]) -> Any:
    h = rec.invoke(who, op)
    try:
        out = _perform(fs, op)
    except RetryableError:
        if op[0] == "stat":
            rec.fail_definite(h)
        else:
            rec.fail_unknown(h)
        return None
    rec.complete(h, out)
    return out


def _stat_until_known(rec: HistoryRecorder, fs: Client, path: str) -> None:
    deadline = time.monotonic() + 30
    while _record(rec, "final", fs, ("stat", path)) is None:
        assert time.monotonic() < deadline, f"{path} stays unavailable"
        time.sleep(0.2)


@pytest.mark.parametrize("writer", ["delete", "rename within its shard", "rename across shards"])
def test_a_file_arriving_by_rename_is_there_for_writers(cluster: MetaCluster, writer: str) -> None:
    """``X = rename(<b>/z, <a>/y)`` commits on ``<b>``'s shard, whose leader then freezes for
    1.5 s (failpoint ``txn.decision_recorded``) before telling ``<a>``'s shard. A reader sees
    ``<b>/z`` gone (X took effect); right after that, a writer deletes or renames ``<a>/y``:
    it must find the file there, not answer NOT_FOUND. Up to four tries: the reader must reach
    the new leader before the decision is delivered (recovery loops, every 0.5 s)."""
    fs = cluster.client(deadline=30.0)
    a, b, _, sb = dirs_on_two_shards(fs, "/lin")
    for trial in range(4):
        rec = HistoryRecorder()
        z, y = f"{b}/z{trial}", f"{a}/y{trial}"
        if writer == "delete":
            write: tuple[Any, ...] = ("delete", y)
        else:
            write = ("rename", y, f"{a if 'within' in writer else b}/q{trial}")
        assert _record(rec, "setup", fs, ("create", z)) == "ok"
        fs.complete(z)
        stalled = cluster.leader(sb)
        cluster.set_failpoint(stalled, "txn.decision_recorded", "stall:1.5")
        outcome: list[Any] = []

        def watch_then_write(
            rec: HistoryRecorder = rec,
            outcome: list[Any] = outcome,
            z: str = z,
            write: tuple[Any, ...] = write,
        ) -> None:
            reader = cluster.client(deadline=CLIENT_DEADLINE_S, attempt_timeout=0.15)
            writer_fs = cluster.client(deadline=CLIENT_DEADLINE_S, attempt_timeout=2.0)
            deadline = time.monotonic() + 20
            while _record(rec, "reader", reader, ("stat", z)) is not False:
                if time.monotonic() > deadline:
                    return
            outcome.append(_record(rec, "writer", writer_fs, write))

        th = threading.Thread(target=watch_then_write, daemon=True)
        th.start()
        time.sleep(0.05)
        mover = cluster.client(deadline=CLIENT_DEADLINE_S, attempt_timeout=1.0)
        assert _record(rec, "X", mover, ("rename", z, y)) == "ok"
        th.join(timeout=60)
        assert not th.is_alive()
        assert _fired(cluster, stalled, "txn.decision_recorded")
        for path in sorted({p for op in rec.history() for p in op.input[1:]}):
            _stat_until_known(rec, fs, path)
        result = check(FileNamespaceModel(), rec.history(), timeout_s=30)
        print(f"try {trial}: writer {write} -> {outcome}; linearizable: {result.ok}")
        assert result.ok, result.explanation
