"""``keelfs bench raft-core``: how many entries the pure core commits per CPU-second.

Three RawNodes with MemoryStorage in one process, messages handed over directly (no network,
no disk). The leader proposes 64-byte entries in batches; every Ready is handled exactly as the
runtime does it (persist, send, apply, advance). The figure is committed entries on the leader
divided by the process CPU time, so it bounds what the runtime can reach on top of the core.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from keelfs.raft.core import Config, StateType
from keelfs.raft.messages import ConfState, Message
from keelfs.raft.rawnode import RawNode
from keelfs.raft.storage import MemoryStorage


@dataclass
class RaftCoreResult:
    entries: int
    entry_bytes: int
    batch: int
    cpu_seconds: float
    wall_seconds: float

    @property
    def commits_per_cpu_second(self) -> float:
        return self.entries / self.cpu_seconds if self.cpu_seconds else 0.0


def run(entries: int = 200_000, entry_bytes: int = 64, batch: int = 256) -> RaftCoreResult:
    conf = ConfState(frozenset({1, 2, 3}))
    storages = {i: MemoryStorage(conf) for i in (1, 2, 3)}
    nodes = {
        i: RawNode(
            Config(id=i, rng=random.Random(i), max_inflight_msgs=64, max_size_per_msg=1 << 20),
            storages[i],
        )
        for i in (1, 2, 3)
    }
    inbox: list[Message] = []

    def pump() -> None:
        busy = True
        while busy:
            busy = False
            while inbox:
                batch_msgs = inbox[:]
                inbox.clear()
                for m in batch_msgs:
                    nodes[m.to].step(m)
            for i, n in nodes.items():
                if n.has_ready():
                    busy = True
                    rd = n.ready()
                    st = storages[i]
                    if rd.hard_state is not None:
                        st.set_hard_state(rd.hard_state)
                    st.append(rd.entries)
                    inbox.extend(rd.messages)
                    n.advance(rd)

    nodes[1].campaign()
    pump()
    leader = nodes[1]
    if leader.status().state is not StateType.LEADER:
        raise RuntimeError("node 1 did not become leader")
    payload = b"x" * entry_bytes
    start_commit = leader.status().commit
    target = start_commit + entries
    cpu0, wall0 = time.process_time(), time.perf_counter()
    proposed = 0
    while leader.status().commit < target:
        if proposed < entries:
            n = min(batch, entries - proposed)
            leader.propose_batch([payload] * n)
            proposed += n
        pump()
        # keep the logs short, as the runtime's snapshots would
        for st in storages.values():
            applied = st.hard_state.commit
            if applied - st.first_index() > 50_000:
                st.create_snapshot(applied, conf, b"")
                st.compact(applied)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return RaftCoreResult(leader.status().commit - start_commit, entry_bytes, batch, cpu, wall)
