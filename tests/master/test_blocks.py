"""The masters' soft state of chunk servers and replicas, and placement (no processes)."""

from __future__ import annotations

from keelfs.master.blocks import ChunkRegistry, Replica


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def registry(n: int = 4, racks: tuple[str, ...] = ("/r1",)) -> tuple[ChunkRegistry, Clock]:
    clock = Clock()
    reg = ChunkRegistry(dead_after_s=10.0, clock=clock)
    for i in range(n):
        sid = f"cs{i}"
        reg.heartbeat(sid, f"127.0.0.1:{7000 + i}", racks[i % len(racks)], 100 << 30, i << 30, 0)
        reg.full_report(sid, [])
    return reg, clock


def test_only_live_reported_servers_are_chosen_distinct_and_emptiest_first() -> None:
    reg, clock = registry(4)
    reg.heartbeat("new", "127.0.0.1:9999", "/r1", 500 << 30, 0, 0)  # no block report yet
    picked = [s.server_id for s in reg.choose(3)]
    assert len(set(picked)) == 3 and "new" not in picked
    assert picked == ["cs0", "cs1", "cs2"]  # most free space first
    assert [s.server_id for s in reg.choose(3, exclude=["cs0"])] == ["cs1", "cs2", "cs3"]
    clock.t += 11  # cs* stop heartbeating: dead
    reg.heartbeat("cs3", "127.0.0.1:7003", "/r1", 100 << 30, 0, 0)
    assert reg.choose(3) == []  # back, but not chosen before its full block report
    reg.full_report("cs3", [])
    assert [s.server_id for s in reg.choose(3)] == ["cs3"]  # fewer than asked, never a dead one


def test_pipeline_recovery_keeps_survivors_first() -> None:
    reg, _ = registry(4)
    got = [s.server_id for s in reg.choose(3, exclude=["cs1"], keep=["cs2", "cs1"])]
    assert got[0] == "cs2" and "cs1" not in got and len(got) == 3


def test_rack_aware_placement() -> None:
    reg, _ = registry(6, racks=("/a", "/b"))
    for _ in range(20):
        first, second, third = reg.choose(3)
        assert first.rack != second.rack and third.rack == second.rack


def test_locations_are_good_live_replicas_at_the_generation_stamp() -> None:
    reg, clock = registry(3)
    reg.full_report("cs0", [(7, Replica(2, 100, "s1"))])
    reg.added("cs1", 7, Replica(2, 100, "s1"))
    reg.added("cs2", 7, Replica(1, 60, "s1"))  # stale generation
    assert {s.server_id for s in reg.locations(7, 2)} == {"cs0", "cs1"}
    reg.mark_corrupt("cs1", 7)
    assert [s.server_id for s in reg.locations(7, 2)] == ["cs0"]
    reg.removed("cs0", 7)
    assert reg.locations(7, 2) == []
    reg.added("cs0", 7, Replica(2, 100, "s1"))
    clock.t += 11
    assert reg.locations(7, 2) == []  # its holder is dead
    # a full report replaces what a server holds
    reg.heartbeat("cs0", "127.0.0.1:7000", "/r1", 1, 0, 0)
    reg.full_report("cs0", [])
    assert 7 not in reg.replicas or "cs0" not in reg.replicas[7]


def test_a_continued_replica_survives_the_report_of_its_old_stamp_gone() -> None:
    reg, _ = registry(2)
    reg.added("cs0", 5, Replica(2, 100, "s1"))  # continued under stamp 2 ...
    reg.removed("cs0", 5, 1)  # ... reported with stamp 1 gone in the same heartbeat
    assert [s.server_id for s in reg.locations(5, 2)] == ["cs0"]
    reg.removed("cs0", 5, 2)
    assert reg.locations(5, 2) == []


def test_a_server_heard_again_after_counting_as_dead_must_report_in_full() -> None:
    """Silent for ``dead_after_s``, a server's replicas may have changed in every way (its
    increments went nowhere meanwhile): increments are not trusted until a full report."""
    reg, clock = registry(2)
    assert reg.servers["cs0"].reported
    clock.t += 11
    st = reg.heartbeat("cs0", "127.0.0.1:7000", "/r1", 100, 0, 0)
    assert not st.reported  # the heartbeat reply asks for a full report
    reg.full_report("cs0", [(5, Replica(1, 10, "s"))])
    assert st.reported and [s.server_id for s in reg.locations(5, 1)] == ["cs0"]
    reg.heartbeat("cs1", "127.0.0.1:7001", "/r1", 100, 0, 0)
    reg.full_report("cs1", [])
    clock.t += 5  # a heartbeat within dead_after_s changes nothing
    assert reg.heartbeat("cs1", "127.0.0.1:7001", "/r1", 100, 0, 0).reported
