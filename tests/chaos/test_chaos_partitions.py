"""The partitions of ``keelfs chaos`` (``keelfs.chaos.faults``), in process, over a network that
only records what it is told: an isolation takes one process's link down and counts as its
group's process down; a split cuts exactly every pair of processes on different sides; each
is healed when due, only one is in place at a time, and ``heal`` (the end of a run, or an
interrupted one) heals the whole network. When partitions cannot be injected the report's
reason says why. The real namespaces are exercised by ``tests/cli/test_chaos.py``."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from keelfs.chaos import faults
from keelfs.chaos.faults import FaultInjector, FaultLog, partitions_unavailable
from keelfs.server.local_cluster import NetworkRecord, ProcessRecord, State


class RecordingNetwork:
    """Stands for ``NetnsNetwork``: the links down and the pairs cut, nothing else."""

    def __init__(self) -> None:
        self.down: set[int] = set()
        self.cut_pairs: set[frozenset[int]] = set()
        self.healed_all = 0

    def isolate(self, host: int) -> None:
        self.down.add(host)

    def heal(self, host: int) -> None:
        self.down.discard(host)

    def cut(self, a: int, b: int) -> None:
        self.cut_pairs.add(frozenset((a, b)))

    def uncut(self, a: int, b: int) -> None:
        self.cut_pairs.discard(frozenset((a, b)))

    def heal_all(self) -> None:
        self.healed_all += 1
        self.down.clear()
        self.cut_pairs.clear()


def _own_start_time() -> str:
    stat = Path(f"/proc/{os.getpid()}/stat").read_text()
    return stat[stat.rfind(")") + 2 :].split()[19]


def _state() -> State:
    """Three config servers, three masters of one shard, two chunk servers: all "alive" (this
    process's pid), none reachable (the leader is never known)."""
    me, started = os.getpid(), _own_start_time()
    procs = [
        ProcessRecord(f"n{i}", "config", [], "", "", i, "", ["config"], pid=me, start_time=started)
        for i in (1, 2, 3)
    ]
    procs += [
        ProcessRecord(f"n{i}", "master", [], "", "", i, "", ["shard-1"], pid=me, start_time=started)
        for i in (11, 12, 13)
    ]
    procs += [
        ProcessRecord(f"cs{i}", "chunk", [], "", "", pid=me, start_time=started) for i in (0, 1)
    ]
    hosts = {p.name: p.node_id or 100 + int(p.name[2:]) for p in procs}
    return State("", procs, NetworkRecord("t", "10.250.0", hosts))


class NoAdmin:
    def status(self, address: str, timeout: float) -> object:
        raise ConnectionError("unreachable")


@pytest.fixture
def injector(monkeypatch: pytest.MonkeyPatch) -> tuple[FaultInjector, RecordingNetwork]:
    net = RecordingNetwork()
    monkeypatch.setattr(faults, "network_of", lambda state: net)
    log = FaultLog(time.monotonic())
    inj = FaultInjector(("partition",), random.Random(4), NoAdmin(), [], _state(), log)
    assert net.healed_all == 1  # a run starts by healing what a killed run may have left
    return inj, net


def test_isolations_and_splits_are_exact_one_at_a_time_and_healed_when_due(
    injector: tuple[FaultInjector, RecordingNetwork],
) -> None:
    inj, net = injector
    state = inj.state
    assert state is not None and state.network is not None
    hosts = state.network.hosts
    seen = {"isolate": 0, "split": 0}
    for _ in range(40):
        inj._partition()
        if net.down:
            (host,) = net.down
            assert not net.cut_pairs
            name = next(n for n, h in hosts.items() if h == host)
            assert inj.down[name].how == "isolated"  # its group counts one process down
            seen["isolate"] += 1
        else:
            event = inj.log.events[-1]
            side_a, side_b = event["detail"].split(" for ")[0][len("split ") :].split(" | ")
            a, b = side_a.split(), side_b.split()
            assert a and b and sorted(a + b) == sorted(hosts)
            assert net.cut_pairs == {frozenset((hosts[x], hosts[y])) for x in a for y in b}
            seen["split"] += 1
        inj._partition()  # a second one while the first is in place is skipped
        assert inj.log.errors[-1]["error"] == "skipped: a partition is in place"
        inj._end_due(time.monotonic() + 10.0)
        assert not net.down and not net.cut_pairs and not inj.down
    assert seen["isolate"] > 5 and seen["split"] > 5
    assert inj.log.counts["partition"] == 40


def test_heal_undoes_a_partition_in_place(
    injector: tuple[FaultInjector, RecordingNetwork],
) -> None:
    inj, net = injector
    while not net.cut_pairs:  # a split, still due to last seconds
        inj._partition()
        inj._end_due(time.monotonic() + 10.0)
        inj._partition()
    inj.heal(5.0)
    assert net.healed_all == 2 and not net.cut_pairs and not net.down
    assert inj._split is None and not inj.down


def test_why_partitions_are_not_injected(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "--cluster-dir" in partitions_unavailable(None)
    on_loopback = State("", [])
    assert "host's network namespace" in partitions_unavailable(on_loopback)
    assert "local-cluster up --netns" in partitions_unavailable(on_loopback)
    netns = _state()
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert "needs root" in partitions_unavailable(netns)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert partitions_unavailable(netns) == ""
