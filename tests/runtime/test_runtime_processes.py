"""The runtime with real processes: ``python -m keelfs.runtime.server`` x 3 on 127.0.0.1.

Faults are real: kill -9, SIGSTOP/SIGCONT, a wiped data directory, live membership changes,
and (as root) a network partition between network namespaces. The fault tests read their
acknowledged writes back linearizably at the end: an acknowledged write is never lost.
Marked ``slow`` (about 30 s in all on two cores).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from keelfs.runtime.client import (
    AsyncKVClient,
    KVClient,
    KVError,
    KVUnavailableError,
    OutcomeUnknownError,
    WriteResult,
)
from keelfs.runtime.kvwire import LEADER_ADDR_KEY, LEADER_ID_KEY, LEADER_RAFT_ADDR_KEY
from keelfs.runtime.netns import NetnsNetwork
from keelfs.runtime.pb import kv_pb2, kv_pb2_grpc
from keelfs.server.kvcluster import ProcessCluster, netns_cluster
from keelfs.testing.environment import cannot_run
from keelfs.testing.linearizability import HistoryRecorder, KVModel, check

pytestmark = [pytest.mark.slow, pytest.mark.process]

MakeCluster = Callable[..., ProcessCluster]


class Writers:
    """Background threads putting unique keys; remembers what was acknowledged."""

    def __init__(self, cluster: ProcessCluster, threads: int = 2, prefix: str = "w") -> None:
        self.cluster = cluster
        self.acked: dict[str, str] = {}
        self.unknown: set[str] = set()
        self.results: list[WriteResult] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(f"{prefix}{t}",), daemon=True)
            for t in range(threads)
        ]

    def _run(self, name: str) -> None:
        client = self.cluster.client(deadline=5.0, attempt_timeout=1.0)
        for i in itertools.count():
            if self._stop.is_set():
                return
            key, value = f"{name}-{i}", f"v{i}"
            try:
                res = client.put(key, value)
            except KVError:
                with self._lock:
                    self.unknown.add(key)
                continue
            with self._lock:
                self.acked[key] = value
                self.results.append(res)

    def __enter__(self) -> Writers:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def count(self) -> int:
        with self._lock:
            return len(self.acked)

    def wait_for_more(self, n: int, timeout: float = 15.0) -> None:
        target = self.count() + n
        deadline = time.monotonic() + timeout
        while self.count() < target:
            assert time.monotonic() < deadline, f"writes stalled at {self.count()} (< {target})"
            time.sleep(0.02)


def assert_one_leader_per_term(results: list[WriteResult]) -> None:
    by_term: dict[int, set[int]] = {}
    for r in results:
        by_term.setdefault(r.term, set()).add(r.node_id)
    bad = {t: ids for t, ids in by_term.items() if len(ids) > 1}
    assert not bad, f"writes acknowledged by several nodes in one term: {bad}"


def assert_all_present(client: KVClient, acked: dict[str, str]) -> None:
    lost = {k: (v, got) for k, v in acked.items() if (got := client.get(k)) != v}
    assert not lost, (
        f"{len(lost)} acknowledged writes lost or changed, e.g. {list(lost.items())[:5]}"
    )


def wait_caught_up(cluster: ProcessCluster, node_id: int, timeout: float = 20.0) -> None:
    def probe() -> bool:
        leader = cluster.leader(timeout=5)
        return cluster.group_status(node_id)["applied"] >= cluster.group_status(leader)["commit"]

    cluster.wait_for(probe, timeout, f"node {node_id} did not catch up")


# -------------------------------------------------------------------------------------------
@pytest.mark.timeout(90)
def test_kill9_leader_during_writes_loses_nothing(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(3)
    old = cluster.leader()
    with Writers(cluster) as w:
        w.wait_for_more(50)
        cluster.kill9(old)
        killed_at = time.monotonic()
        new = cluster.leader(exclude=(old,))
        assert new != old
        w.wait_for_more(50)  # the new leader serves
        failover = time.monotonic() - killed_at
        cluster.restart(old)  # same data dir, no --peers: sticky membership
        w.wait_for_more(50)
    assert_one_leader_per_term(w.results)
    assert {r.node_id for r in w.results} >= {old, new}
    client = cluster.client()
    assert_all_present(client, w.acked)
    wait_caught_up(cluster, old)
    # the restarted node itself holds every acknowledged write
    local = cluster.client([old])
    sample = random.Random(1).sample(sorted(w.acked), 50)
    assert {k: local.get(k, linearizable=False) for k in sample} == {k: w.acked[k] for k in sample}
    assert failover < 10, f"writes resumed {failover:.1f} s after the kill"


@pytest.mark.timeout(90)
def test_sigstopped_leader_steps_down_and_never_acks_in_its_old_term(
    make_cluster: MakeCluster,
) -> None:
    cluster = make_cluster(3)
    old = cluster.leader()
    old_term = cluster.group_status(old)["term"]
    direct: dict[str, WriteResult] = {}
    refused: list[str] = []
    with Writers(cluster) as w:
        w.wait_for_more(30)
        cluster.sigstop(old)
        new = cluster.leader(exclude=(old,))
        w.wait_for_more(30)
        new_term = cluster.group_status(new)["term"]
        assert new_term > old_term  # the leader of a later term

        # Writes aimed at the old leader the moment it wakes up: it may still believe it
        # leads, but it must not acknowledge anything in its old term.
        old_only = cluster.client([old], deadline=5.0, attempt_timeout=2.0)

        def poke(i: int) -> None:
            try:
                direct[f"direct-{i}"] = old_only.put(f"direct-{i}", "x")
            except KVError as exc:
                refused.append(str(exc))

        pokers = [threading.Thread(target=poke, args=(i,)) for i in range(8)]
        for t in pokers:
            t.start()  # their requests wait in the frozen process's socket buffers
        time.sleep(0.3)
        cluster.sigcont(old)
        for t in pokers:
            t.join(timeout=30)

        def stepped_down() -> bool:
            st = cluster.group_status(old)
            return st["state"] == "follower" and st["term"] >= new_term and st["leader"] != old

        cluster.wait_for(stepped_down, 10, "old leader did not step down")
        w.wait_for_more(30)
    lost = cluster.group_status(old)["proposals_lost"]
    print(f"old leader {old} (term {old_term}): {lost} proposals lost; acked {direct}")
    for r in direct.values():
        assert not (r.node_id == old and r.term == old_term), f"old leader acked {r}"
    assert_one_leader_per_term(w.results + list(direct.values()))
    statuses = cluster.statuses()
    assert max(s["term"] for i, s in statuses.items() if i != old) > old_term
    client = cluster.client()
    assert_all_present(client, {**w.acked, **dict.fromkeys(direct, "x")})


@pytest.mark.timeout(90)
def test_wiped_follower_rejoins_by_snapshot(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(3, server_args=("--snapshot-every", "40", "--keep-log", "10"))
    leader = cluster.leader()
    client = cluster.client()
    expected = {}
    for i in range(150):
        client.put(f"k{i}", f"v{i}")
        expected[f"k{i}"] = f"v{i}"
    assert cluster.group_status(leader)["snapshot_index"] > 100  # compacted past the start
    follower = next(i for i in sorted(cluster.nodes) if i != leader)
    cluster.restart(follower, wipe=True)  # remove, start empty with --join, add back
    for i in range(150, 200):
        client.put(f"k{i}", f"v{i}")
        expected[f"k{i}"] = f"v{i}"
    wait_caught_up(cluster, follower)
    st = cluster.group_status(follower)
    assert st["snapshots_installed"] >= 1, st
    assert st["snapshot_index"] > 100, st
    assert follower in st["voters"], st
    lead_st = cluster.group_status(cluster.leader())
    assert lead_st["commit"] - st["applied"] <= 5, (lead_st, st)
    local = cluster.client([follower])
    got = {k: local.get(k, linearizable=False) for k in expected}
    assert got == expected
    assert local.get("k199") == "v199"  # linearizable read through the follower (ReadIndex)


@pytest.mark.timeout(120)
def test_new_node_joins_by_naming_one_member(make_cluster: MakeCluster) -> None:
    """Seed 003: a new master needs no list of peers, only one member to ask."""
    cluster = make_cluster(3)
    client = cluster.client(deadline=15.0)
    for i in range(20):
        client.put(f"j{i}", "1")
    follower = next(i for i in (1, 2, 3) if i != cluster.leader())
    cluster.add_node_via(follower, 4)  # the follower points it at the leader
    cluster.wait_for(lambda: 4 in cluster.group_status(4)["voters"], 30, "node 4 not a voter")
    assert cluster.group_status(4)["voters"] == [1, 2, 3, 4]
    wait_caught_up(cluster, 4)
    cluster.kill9(cluster.leader())  # the new member now counts for the quorum and elections
    assert client.put("after-join", "1").node_id != 0
    assert client.get("j19") == "1"


@pytest.mark.timeout(120)
def test_membership_add_transfer_remove(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(3)
    client = cluster.client(deadline=15.0)
    for i in range(20):
        client.put(f"a{i}", "1")
    spec = cluster.add_node(4)  # --join: empty, waits to be added
    members = client.add_member(4, spec.raft_address)
    assert members.voters == (1, 2, 3, 4), members
    wait_caught_up(cluster, 4)
    assert cluster.group_status(4)["voters"] == [1, 2, 3, 4]

    # leadership transfer on request
    assert client.transfer_leader(4) == 4
    assert cluster.leader() == 4
    res = client.put("after-transfer", "1")
    assert res.node_id == 4

    # remove a follower; the group keeps committing without it
    gone = 1
    members = client.remove_member(gone)
    assert gone not in members.voters and gone not in members.learners
    assert client.put("after-remove", "1").node_id == 4
    cluster.kill9(gone)
    # three voters left (2, 3, 4): one more may fail
    cluster.kill9(2)
    assert client.put("two-of-three", "1").node_id in (3, 4)

    # removing the leader itself hands leadership over to a remaining voter (with the new
    # configuration {2, 3} both must be up to commit)
    cluster.restart(2)
    wait_caught_up(cluster, 2)
    members = client.remove_member(4)
    assert members.voters == (2, 3), members
    new = cluster.leader(exclude=(4,))
    assert new in (2, 3)
    assert client.put("after-leader-removed", "1").node_id in (2, 3)
    assert client.get("a19") == "1"
    assert client.get("two-of-three") == "1"


@pytest.mark.timeout(120)
def test_partition_with_network_namespaces(tmp_path: Any) -> None:
    ok, why = NetnsNetwork.available()
    if not ok:
        cannot_run(why)
    with netns_cluster(tmp_path, 3) as (cluster, net):
        try:
            client = cluster.client(deadline=10.0)
            client.put("p", "before")
            old = cluster.leader()
            majority = [i for i in sorted(cluster.nodes) if i != old]
            net.isolate(old)

            # the minority side (the old leader alone) cannot commit
            minority = cluster.client([old], deadline=1.5, attempt_timeout=1.0, retry_unknown=False)
            with pytest.raises(KVError) as refused:
                minority.put("p", "minority")
            # the majority elects a leader and commits
            new = cluster.leader(exclude=(old,))
            assert new in majority
            side = cluster.client(majority, deadline=10.0)
            side.put("p", "majority")
            assert side.get("p") == "majority"
            st = cluster.group_status(old)
            assert st["state"] != "leader" or st["term"] < cluster.group_status(new)["term"]

            net.heal(old)
            wait_caught_up(cluster, old)
            converged = cluster.wait_for(
                lambda: (
                    cluster.group_status(old)["term"] == cluster.group_status(new)["term"]
                    and cluster.group_status(old)["leader"] == cluster.leader()
                ),
                15,
                "old leader did not converge",
            )
            assert converged
            local = cluster.client([old])
            assert local.get("p", linearizable=False) == "majority"
            assert client.get("p") == "majority"  # the minority write never took effect
            lost = cluster.group_status(old)["proposals_lost"]
            print(f"minority put: {refused.value!r}; proposals lost on node {old}: {lost}")
            if isinstance(refused.value, OutcomeUnknownError):
                assert lost >= 1  # it was proposed in the old term, then overwritten
        except BaseException:
            for node_id in sorted(cluster.nodes):
                print(f"----- node {node_id} log (tail) -----")
                print(cluster.log_tail(node_id, 30))
            raise


PHASE_OPS = 20  # operations completed in each phase of the fault schedule


@pytest.mark.timeout(150)
def test_linearizable_under_kill9_and_sigstop(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(3)
    cluster.leader()
    keys = ["x", "y", "z"]
    rec = HistoryRecorder()
    stop = threading.Event()
    counts = {"ok": 0, "unknown": 0, "failed": 0}
    lock = threading.Lock()

    def worker(cid: int) -> None:
        rnd = random.Random(cid)
        client = cluster.client(deadline=3.0, attempt_timeout=1.0, retry_unknown=False)
        # reads go to a node of their own (followers serve them through ReadIndex)
        reader = cluster.client([1 + cid % 3], deadline=3.0, attempt_timeout=1.0)
        seen: dict[str, str | None] = dict.fromkeys(keys)
        for n in itertools.count():
            if stop.is_set():
                return
            key = rnd.choice(keys)
            kind = rnd.choices(["get", "put", "cas"], [4, 3, 3])[0]
            value = f"c{cid}-{n}"
            op: tuple[Any, ...]
            if kind == "get":
                op = ("get", key)
            elif kind == "put":
                op = ("put", key, value)
            else:
                op = ("cas", key, seen[key], value)
            h = rec.invoke(cid, op)
            try:
                out: Any
                if kind == "get":
                    out = seen[key] = reader.get(key)
                elif kind == "put":
                    client.put(key, value)
                    out = None
                else:
                    out = client.cas(key, seen[key], value).swapped
            except OutcomeUnknownError:
                rec.fail_unknown(h)
                outcome = "unknown"
            except KVUnavailableError:
                rec.fail_definite(h)  # certainly not applied (reads: no effect either)
                outcome = "failed"
            else:
                rec.complete(h, out)
                outcome = "ok"
            with lock:
                counts[outcome] += 1

    def ok_count() -> int:
        with lock:
            return counts["ok"]

    def progress(phase: str) -> None:
        """Wait until the workers complete ``PHASE_OPS`` more operations."""
        target = ok_count() + PHASE_OPS
        cluster.wait_for(lambda: ok_count() >= target, 60, f"operations stalled {phase}")

    threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in range(4)]
    for t in threads:
        t.start()
    try:
        progress("before any fault")
        victim = cluster.leader()
        cluster.kill9(victim)
        progress("after the leader was killed")
        cluster.restart(victim)
        progress("after the killed node restarted")
        frozen = cluster.leader()
        cluster.sigstop(frozen)
        try:
            progress("while the leader was frozen")
        finally:
            cluster.sigcont(frozen)
        progress("after the frozen leader woke")
        follower = next(i for i in sorted(cluster.nodes) if i != cluster.leader())
        cluster.kill9(follower)
        progress("after a follower was killed")
        cluster.restart(follower)
        progress("after the follower restarted")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    history = rec.history()
    result = check(KVModel(), history, timeout_s=60)
    assert result.ok, result.explanation
    assert counts["ok"] >= 7 * PHASE_OPS, counts
    print(f"history: {len(history)} operations, {counts}")


@pytest.mark.timeout(60)
def test_not_leader_hint_async_client_and_sigterm(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(3)
    leader = cluster.leader()
    follower = next(i for i in sorted(cluster.nodes) if i != leader)
    leader_client_addr = cluster.nodes[leader].client_address

    # a follower refuses a write with FAILED_PRECONDITION naming the leader
    channel = grpc.insecure_channel(cluster.nodes[follower].client_address)
    stub: Any = kv_pb2_grpc.KVStub(channel)
    cluster.wait_for(
        lambda: cluster.status(follower)["directory"].get(str(leader)),
        10,
        "the leader did not record its client address",
    )
    with pytest.raises(grpc.RpcError) as err:
        stub.Put(kv_pb2.PutRequest(key="k", value="v"), timeout=5)
    e: Any = err.value
    assert e.code() is grpc.StatusCode.FAILED_PRECONDITION
    md = dict(e.trailing_metadata())
    assert md[LEADER_ID_KEY] == str(leader)
    assert md[LEADER_ADDR_KEY] == leader_client_addr
    assert md[LEADER_RAFT_ADDR_KEY] == cluster.nodes[leader].raft_address
    reply = stub.Get(kv_pb2.GetRequest(key="k"), timeout=5)  # followers serve reads
    assert not reply.HasField("value")
    channel.close()

    # the async client, given only the follower, follows the hint
    async def main() -> None:
        async with AsyncKVClient([cluster.nodes[follower].client_address]) as client:
            put = await client.put("k", "v1")
            assert put.node_id == leader and put.previous is None
            assert (await client.put("k", "v2")).previous == "v1"
            assert not (await client.cas("k", "v1", "v3")).swapped
            assert (await client.cas("k", "v2", "v3")).swapped
            assert (await client.cas("new", None, "n")).swapped
            assert await client.get("k") == "v3"
            assert await client.get("new") == "n"
            assert await client.get("missing") is None

    asyncio.run(main())

    # SIGTERM stops a node cleanly; it restarts from its data alone (no --peers)
    assert cluster.terminate(leader) == 0
    client = cluster.client()
    assert client.put("k", "v4").node_id != leader
    cluster.restart(leader)
    wait_caught_up(cluster, leader)
    assert cluster.client([leader]).get("k", linearizable=False) == "v4"


def test_test_workers_draw_ports_from_disjoint_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two pytest-xdist workers never hand out the same port (a port one worker's killed node
    will bind again on restart is free meanwhile: the other must not take it)."""
    from keelfs.runtime import processes

    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    seen = []
    for worker in ("gw0", "gw1"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        floor, low = processes._worker_slice(10_000, processes._ephemeral_range()[0])
        ports = processes.free_ports(50)
        assert all(floor <= p < low for p in ports), (worker, floor, low)
        seen.append((floor, low))
    assert seen[0][1] == seen[1][0] and seen[0][0] == 10_000  # disjoint, side by side
    assert processes._worker_slice(10_000, 32_000) == (21_000, 32_000)  # gw1's half
    monkeypatch.delenv("PYTEST_XDIST_WORKER")
    assert processes._worker_slice(10_000, 32_000) == (10_000, 32_000)
