"""A state machine with streamed snapshots (the metadata namespace) through the runtime:
snapshots are taken from ``snapshot_chunks()`` and a wiped member is rebuilt by
``restore_chunks()`` from an InstallSnapshot, never as one bytes object."""

from __future__ import annotations

import asyncio
from pathlib import Path

from keelfs.meta.commands import Envelope, Mkdir, MkdirSelf
from keelfs.meta.namespace import ShardStateMachine
from keelfs.runtime import HostConfig, RaftHost
from keelfs.runtime.statemachine import StreamingStateMachine
from keelfs.transport.local import LocalNetwork

PEERS = {1: "local:1", 2: "local:2", 3: "local:3"}


def test_namespace_snapshots_stream_and_rebuild_a_wiped_member(tmp_path: Path) -> None:
    async def main() -> None:
        net = LocalNetwork()
        cfg = HostConfig(snapshot_every=50, keep_after_snapshot=5, quiesce_after_ticks=0)
        hosts: dict[int, RaftHost] = {}
        try:
            for i in PEERS:
                hosts[i] = RaftHost(i, tmp_path / f"n{i}", lambda cb, i=i: net.add(i, cb), cfg)
                await hosts[i].start()
                sm = ShardStateMachine(tmp_path / f"n{i}" / "ns")
                assert isinstance(sm, StreamingStateMachine)
                hosts[i].open_group("shard-1", sm, PEERS)
            leader = None
            for _ in range(500):
                leader = next(
                    (h.groups["shard-1"] for h in hosts.values() if h.groups["shard-1"].is_leader),
                    None,
                )
                if leader:
                    break
                await asyncio.sleep(0.01)
            assert leader is not None
            now = 1_000

            def cmd(c: object) -> bytes:
                return Envelope(command=c, now_ms=now).encode()  # type: ignore[arg-type]

            await leader.propose(cmd(MkdirSelf("/")))
            for n in range(120):
                await leader.propose(cmd(Mkdir(f"/f{n}")))
            assert leader.storage.snapshot_meta().index > 50
            # Wipe member 3 (not the leader): stop it, delete its data, rejoin empty.
            victim = next(i for i, h in hosts.items() if h.groups["shard-1"] is not leader)
            await hosts[victim].stop()
            del hosts[victim]
            await leader.remove_member(victim)
            import shutil

            shutil.rmtree(tmp_path / f"n{victim}")
            new_id = 7
            h = RaftHost(new_id, tmp_path / "n7", lambda cb: net.add(new_id, cb), cfg)
            await h.start()
            hosts[new_id] = h
            sm7 = ShardStateMachine(tmp_path / "n7" / "ns")
            g7 = h.open_group("shard-1", sm7)
            await leader.add_learner(new_id, f"local:{new_id}")
            for _ in range(500):
                if g7.applied_index() >= leader.applied_index():
                    break
                await asyncio.sleep(0.01)
            assert g7.status().snapshots_installed >= 1, (g7.status(), leader.status())
            assert sm7.stat("/f119").path == "/f119"
        finally:
            for h in hosts.values():
                await h.stop()

    asyncio.run(main())
