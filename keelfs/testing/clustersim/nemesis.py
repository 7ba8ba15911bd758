"""The seeded fault schedule: one fault at a time, each lifted before the next.

Kinds: ``crash`` (a metadata node is killed and restarted a little later: what its Raft log
synced survives, its memory does not), ``pause`` (a node frozen, as by SIGSTOP, then let go
on), ``partition`` (one node cut off from the rest, or a
one-way cut), ``loss`` (every message and RPC lost with some probability), ``delay`` (every
message and RPC delayed and reordered by jitter), ``transfer`` (a group's leadership moved to
another member). Data faults (replica corruption) and resharding faults are scheduled by the
chunk and workload modules on the same rng.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable

from keelfs.testing.clustersim.cluster import SimCluster
from keelfs.testing.clustersim.loop import SimLoop

__all__ = ["Nemesis"]


class Nemesis:
    def __init__(
        self,
        cluster: SimCluster,
        rng: random.Random,
        faults: Counter[str],
        trace: Callable[[str], None],
        extra: dict[str, Callable[[], Awaitable[None]]] | None = None,
    ) -> None:
        self.cluster = cluster
        self.rng = rng
        self.faults = faults
        self.trace = trace
        self.kinds: dict[str, Callable[[], Awaitable[None]]] = {
            "crash": self.crash,
            "partition": self.partition,
            "loss": self.loss,
            "delay": self.delay,
            "transfer": self.transfer,
            "pause": self.pause,
            **(extra or {}),
        }

    async def run(self, until: float) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(self.rng.uniform(0.2, 1.0))
        while loop.time() < until:
            kind = self.rng.choice(sorted(self.kinds))
            self.faults[kind] += 1
            self.trace(f"nemesis {kind} at {loop.time():.3f}")
            await self.kinds[kind]()
            await asyncio.sleep(self.rng.uniform(0.1, 1.0))

    def _hold(self) -> float:
        return self.rng.uniform(0.3, 2.5)

    def _victim(self) -> int:
        """A node to hurt: a group's leader half of the time."""
        c = self.cluster
        if self.rng.random() < 0.5:
            group = self.rng.choice(["config", *sorted(c.shards)])
            leader = c.leader_of(group)
            if leader is not None:
                return leader
        return self.rng.choice(sorted(c.nodes))

    async def crash(self) -> None:
        victim = self._victim()
        self.trace(f"  crash n{victim}")
        await self.cluster.crash(victim)
        await asyncio.sleep(self._hold())
        self.trace(f"  restart n{victim}")
        await self.cluster.start(victim)

    async def pause(self) -> None:
        """Freeze a node (SIGSTOP: nothing of it runs, what arrives for it waits), then let
        it go on as if no time had passed for it."""
        loop = asyncio.get_running_loop()
        assert isinstance(loop, SimLoop)
        victim = self._victim()
        self.trace(f"  pause n{victim}")
        loop.pause(victim)
        await asyncio.sleep(self._hold())
        self.trace(f"  resume n{victim}")
        loop.resume(victim)

    async def partition(self) -> None:
        net = self.cluster.network
        victim = self._victim()
        others = sorted(set(self.cluster.configs) - {victim})
        if self.rng.random() < 0.7:
            self.trace(f"  isolate n{victim}")
            net.partition({victim}, {0, *others})
        else:
            other = self.rng.choice(others)
            self.trace(f"  cut n{victim} -> n{other}")
            net.block(victim, other)
        await asyncio.sleep(self._hold())
        net.heal()

    async def loss(self) -> None:
        rate = self.rng.choice([0.02, 0.1, 0.3])
        self.trace(f"  drop rate {rate}")
        self.cluster.network.set_faults(drop_rate=rate)
        await asyncio.sleep(self._hold())
        self.cluster.network.set_faults(drop_rate=0.0)

    async def delay(self) -> None:
        net = self.cluster.network
        base, jitter = net.delay, net.jitter
        extra = self.rng.choice([0.01, 0.05, 0.2])
        self.trace(f"  jitter {extra}")
        net.set_faults(jitter=jitter + extra)
        await asyncio.sleep(self._hold())
        net.set_faults(delay=base, jitter=jitter)

    async def transfer(self) -> None:
        c = self.cluster
        group = self.rng.choice(["config", *sorted(c.shards)])
        leader = c.leader_of(group)
        if leader is None:
            return
        members = [m for m in c.shards.get(group, c.CONFIG_NODES) if m != leader and m in c.nodes]
        if not members:
            return
        target = self.rng.choice(members)
        self.trace(f"  transfer {group} n{leader} -> n{target}")
        member = c.member(leader, group)
        if member is not None:
            try:
                member.group.transfer_leader(target)
            except Exception as exc:  # noqa: BLE001  # (it stopped leading meanwhile)
                self.trace(f"  transfer refused: {exc!r}")
