"""Lease recovery's decision for a file whose writer is gone (``ReplicationMonitor``), on a
registry fed by hand: the last block is settled from its finalized replicas, and dropped only
when this master has every live chunk server's full report (no processes)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from keelfs.master.blocks import ChunkRegistry, Replica
from keelfs.master.replication import ReplicationMonitor
from keelfs.meta.commands import Command, RecoverLease
from keelfs.meta.records import BlockInfo

DEAD_AFTER_S = 10.0
PATH = "/d/f"
LAST = BlockInfo(7, 2, 0)
INODE = SimpleNamespace(blocks=(BlockInfo(6, 1, 100), LAST))


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Master:
    """What the monitor uses of a ``MetaNode`` here: the registry and ``propose``."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.chunks = ChunkRegistry(dead_after_s=DEAD_AFTER_S, clock=self.clock)
        self.proposed: list[Command] = []

    async def propose(self, member: Any, command: Command, header: Any, timeout: float) -> Any:
        self.proposed.append(command)
        return SimpleNamespace(ok=True), 1, 1

    def heartbeats(self, *server_ids: str) -> None:
        for sid in server_ids:
            self.chunks.heartbeat(sid, f"{sid}:7000", "/r1", 100 << 30, 0, 0)

    def recover(self) -> Command | None:
        """The command lease recovery proposes for ``PATH`` now (None: it waits)."""
        self.proposed.clear()
        monitor = ReplicationMonitor(self)  # type: ignore[arg-type]
        member = SimpleNamespace(group_id="shard-1")
        asyncio.run(monitor._recover_lease(member, PATH, INODE))  # type: ignore[arg-type]
        assert len(self.proposed) <= 1
        return self.proposed[0] if self.proposed else None


def settled(master: Master, *reported: str, unreported: tuple[str, ...] = ()) -> None:
    """``reported`` and ``unreported`` have been heartbeating long enough that every live
    server has been heard from; only ``reported`` sent their (empty) full reports."""
    master.heartbeats(*reported, *unreported)
    for sid in reported:
        master.chunks.full_report(sid, [])
    for _ in range(2):
        master.clock.t += DEAD_AFTER_S / 2
        master.heartbeats(*reported, *unreported)


def test_the_last_block_is_not_dropped_while_a_live_server_has_not_fully_reported() -> None:
    """Right after a failover (or a restart) a live server may not have sent this master its
    full report yet: that the last block is reported by nobody proves nothing, so wait."""
    master = Master()
    settled(master, "cs0", "cs1", "cs2", unreported=("cs3",))  # cs3's report is to come
    assert master.recover() is None
    master.chunks.full_report("cs3", [(LAST.block_id, Replica(2, 4096, "shard-1"))])
    assert master.recover() == RecoverLease(PATH, 4096)


def test_the_last_block_is_dropped_once_every_live_server_reported_without_it() -> None:
    master = Master()
    settled(master, "cs0", "cs1", "cs2", unreported=("cs3",))
    master.chunks.full_report("cs3", [])
    assert master.recover() == RecoverLease(PATH, 0, drop_last=True)


def test_a_master_that_just_started_hearing_servers_waits_for_the_others() -> None:
    """A server that has not reached a restarted master yet is not in its registry at all:
    until every server alive could have heartbeated here, the block is not dropped."""
    master = Master()
    master.heartbeats("cs0")
    master.chunks.full_report("cs0", [])
    assert master.recover() is None
    master.clock.t += DEAD_AFTER_S / 2
    master.heartbeats("cs0")
    assert master.recover() is None
    master.clock.t += DEAD_AFTER_S / 2
    master.heartbeats("cs0")
    assert master.recover() == RecoverLease(PATH, 0, drop_last=True)


def test_servers_coming_back_after_an_outage_are_all_waited_for() -> None:
    """The master was cut off from the chunk servers (or paused) long enough that they all
    count as dead; they come back one after another: the first one's report does not tell
    what the others hold."""
    master = Master()
    settled(master, "cs0", "cs1", "cs2")
    master.clock.t += 2 * DEAD_AFTER_S
    master.heartbeats("cs0")
    master.chunks.full_report("cs0", [])
    assert master.recover() is None  # cs1 and cs2 may be on their way back
    for _ in range(2):
        master.clock.t += DEAD_AFTER_S / 2
        master.heartbeats("cs0")
    assert master.recover() == RecoverLease(PATH, 0, drop_last=True)  # they were not


def test_with_no_live_server_nothing_is_dropped() -> None:
    master = Master()
    settled(master, "cs0", "cs1")
    master.clock.t += DEAD_AFTER_S  # every server went silent: dead, perhaps holding it
    assert master.recover() is None


def test_the_last_block_is_settled_from_its_finalized_replicas_as_before() -> None:
    """Reported replicas at the block's stamp settle its length (the shortest) at once, even
    while another live server's full report is still to come."""
    master = Master()
    master.heartbeats("cs0", "cs1", "cs2")
    master.chunks.full_report("cs0", [(LAST.block_id, Replica(2, 5000, "shard-1"))])
    master.chunks.full_report("cs1", [(LAST.block_id, Replica(2, 3000, "shard-1"))])
    assert master.recover() == RecoverLease(PATH, 3000)


def test_only_stale_replicas_wait() -> None:
    master = Master()
    settled(master, "cs0", "cs1")
    master.chunks.added("cs0", LAST.block_id, Replica(1, 100, "shard-1"))  # an older stamp
    assert master.recover() is None
