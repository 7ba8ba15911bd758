"""What a master knows of chunk servers and block replicas: soft state, never in the log.

Chunk servers report to every member of every shard (DESIGN §2.8): a heartbeat every second
with capacity, use and load, and a block report (every finalized replica on the first
heartbeat to a master and whenever it asks; after that, what was added, removed or found
corrupt). From that each master node keeps, for all the shards it hosts:

- ``servers``: server id -> address, rack, capacity, used, load, last heartbeat (monotonic);
- ``replicas``: block id -> {server id: (gen stamp, length)};
- ``corrupt``: (block id, server id) pairs reported bad (by the server's scanner or a client).

A newly elected leader therefore knows where every block is at once. A server is *live* while
its last heartbeat is younger than ``dead_after_s``, and *ready* (may be chosen for new
blocks) once it also sent a full report here: seed 003's warning, a server nobody has heard
from is not a target, without SeaweedFS's fixed 15 s wait.

That no server reports a block proves something only once the registry is *complete*
(``complete()``): every live server's full report is in, and ``dead_after_s`` has passed
since a server last became live here (was first heard of, or heard again after it counted
as dead). A master that just started, or was paused or cut off from the chunk servers, is
heard from again by one server after another; until every server alive has had the time to
come back, one not heard from yet may hold the block. Lease recovery drops a last block
nobody reports only then.

Placement (``choose``): distinct live, ready servers in service and not excluded, preferring
more free space and fewer transfers; with racks configured, the second replica goes to another
rack than the first and the third to the second's rack (HDFS's rule), as far as the racks
allow. A repair (``survivors``: the racks of the replicas left) puts its first new replica on
another rack when the survivors are all on one.

Administrative states (``admin``, from the config group with the ShardMap: ``keelfs admin
decommission|maintenance``, ``keelfs.meta.shardmap``): a server *decommissioning* or *in
maintenance* (until its deadline, by this master's wall clock) is never a target for new
replicas; what that means for repairs is ``keelfs.master.replication``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from keelfs.meta.shardmap import ServerAdminState

__all__ = [
    "DECOMMISSIONING",
    "DEFAULT_DEAD_AFTER_S",
    "IN_SERVICE",
    "MAINTENANCE",
    "ChunkRegistry",
    "Replica",
    "ServerState",
]

IN_SERVICE = "in_service"
DECOMMISSIONING = "decommissioning"
MAINTENANCE = "maintenance"

DEFAULT_DEAD_AFTER_S = 10.0


@dataclass
class ServerState:
    server_id: str
    address: str
    rack: str
    capacity: int = 0
    used: int = 0
    load: int = 0
    last_seen: float = 0.0
    reported: bool = False
    """A full block report arrived at this master since the server (re)started talking."""

    @property
    def free(self) -> int:
        return max(0, self.capacity - self.used)


@dataclass(frozen=True, slots=True)
class Replica:
    gen_stamp: int
    length: int
    shard: str


@dataclass
class ChunkRegistry:
    dead_after_s: float = DEFAULT_DEAD_AFTER_S
    servers: dict[str, ServerState] = field(default_factory=dict)
    replicas: dict[int, dict[str, Replica]] = field(default_factory=dict)
    corrupt: set[tuple[int, str]] = field(default_factory=set)
    clock: Callable[[], float] = lambda: time.monotonic()  # (looked up at each call)
    _rng: random.Random = field(default_factory=random.Random)
    _waiters: list[asyncio.Future[None]] = field(default_factory=list)
    joined_at: float | None = None
    """When a server last became live here (None: none ever did)."""
    admin: dict[str, ServerAdminState] = field(default_factory=dict)
    """Servers not simply in service, as the config group last said (``set_admin_states``)."""
    wall_ms: Callable[[], int] = lambda: int(time.time() * 1000)

    def now(self) -> float:
        return self.clock()

    # -- reports ----------------------------------------------------------------------------
    def heartbeat(
        self, server_id: str, address: str, rack: str, capacity: int, used: int, load: int
    ) -> ServerState:
        back = not self.live(server_id)
        if back:
            self.joined_at = self.now()
        st = self.servers.get(server_id)
        if st is None or st.address != address:
            st = self.servers[server_id] = ServerState(server_id, address, rack or "/default-rack")
        elif back:
            # silent for ``dead_after_s``: what it holds may have changed in every way since
            # its last report (increments sent meanwhile went elsewhere or nowhere), so its
            # next heartbeat must be a full report, and increments wait for it
            st.reported = False
        st.rack = rack or "/default-rack"
        st.capacity, st.used, st.load = capacity, used, load
        st.last_seen = self.now()
        return st

    def full_report(self, server_id: str, replicas: Iterable[tuple[int, Replica]]) -> None:
        """Replace what ``server_id`` holds with ``replicas``."""
        for holders in self.replicas.values():
            holders.pop(server_id, None)
        self.corrupt = {(b, s) for b, s in self.corrupt if s != server_id}
        for block_id, replica in replicas:
            self.replicas.setdefault(block_id, {})[server_id] = replica
        self._prune()
        self.servers[server_id].reported = True
        self._notify()

    def added(self, server_id: str, block_id: int, replica: Replica) -> None:
        self.replicas.setdefault(block_id, {})[server_id] = replica
        self.corrupt.discard((block_id, server_id))
        self._notify()

    def _notify(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    async def wait_reports(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) until some replica is reported added."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiter, timeout)

    def removed(self, server_id: str, block_id: int, gen_stamp: int = 0) -> None:
        """``server_id`` deleted its replica of ``block_id`` stamped ``gen_stamp`` (0: any).
        A replica it holds with a newer stamp stays: a pipeline recovery continues a replica
        under a new stamp and reports the new one finalized and the old one gone together."""
        holders = self.replicas.get(block_id)
        if holders is None:
            return
        current = holders.get(server_id)
        if current is None or (gen_stamp and current.gen_stamp > gen_stamp):
            return
        del holders[server_id]
        if not holders:
            del self.replicas[block_id]
        self.corrupt.discard((block_id, server_id))

    def mark_corrupt(self, server_id: str, block_id: int) -> None:
        self.corrupt.add((block_id, server_id))

    def _prune(self) -> None:
        for block_id in [b for b, h in self.replicas.items() if not h]:
            del self.replicas[block_id]

    # -- administrative states ------------------------------------------------------------------
    def set_admin_states(self, states: Iterable[ServerAdminState]) -> None:
        """The states the config group holds now (every server not named is in service)."""
        self.admin = {a.server_id: a for a in states}

    def admin_state(self, server_id: str) -> str:
        """``decommissioning``, ``maintenance`` (until its deadline) or ``in_service``."""
        a = self.admin.get(server_id)
        if a is None:
            return IN_SERVICE
        if a.state == MAINTENANCE and a.until_ms <= self.wall_ms():
            return IN_SERVICE  # the maintenance is over: a server down now is down
        return a.state

    def placeable(self, server_id: str) -> bool:
        """Whether new replicas may go to ``server_id`` (its administrative state allows)."""
        return self.admin_state(server_id) == IN_SERVICE

    # -- liveness ---------------------------------------------------------------------------
    def live(self, server_id: str) -> bool:
        st = self.servers.get(server_id)
        return st is not None and self.now() - st.last_seen < self.dead_after_s

    def live_servers(self) -> list[ServerState]:
        return [s for s in self.servers.values() if self.live(s.server_id)]

    def complete(self) -> bool:
        """Whether the replicas known here are every finalized replica on the live servers:
        some server is live, each live server's full report is in (its increments follow it),
        and no server became live here for ``dead_after_s``, so that no server alive is still
        on its way back (it would have heartbeated within that time)."""
        if self.joined_at is None or self.now() - self.joined_at < self.dead_after_s:
            return False
        live = self.live_servers()
        return bool(live) and all(s.reported for s in live)

    def locations(self, block_id: int, gen_stamp: int) -> list[ServerState]:
        """Live servers holding a good replica of ``block_id`` at ``gen_stamp``, most free
        first (a stand-in for "nearest": every server is as near on one machine)."""
        holders = self.replicas.get(block_id, {})
        out = [
            self.servers[s]
            for s, r in holders.items()
            if r.gen_stamp == gen_stamp and self.live(s) and (block_id, s) not in self.corrupt
        ]
        return sorted(out, key=lambda st: (-st.free, st.load, st.server_id))

    # -- placement --------------------------------------------------------------------------
    def choose(
        self,
        count: int,
        exclude: Iterable[str] = (),
        keep: Iterable[str] = (),
        survivors: Iterable[str] = (),
    ) -> list[ServerState]:
        """Up to ``count`` distinct targets (fewer if not enough servers qualify), ``keep``
        first (in order, if live), then fresh ones in service. ``survivors``: the servers
        holding the block already (a repair): their racks count as the racks it is on."""
        excluded = set(exclude)
        on_racks = {self.servers[s].rack for s in survivors if s in self.servers}
        chosen = [
            self.servers[s]
            for s in keep
            if s in self.servers and self.live(s) and s not in excluded
        ]
        taken = {s.server_id for s in chosen} | excluded
        pool = [
            s
            for s in self.live_servers()
            if s.reported and s.server_id not in taken and self.placeable(s.server_id)
        ]
        # more free space and fewer transfers first; ties broken at random so that equal
        # servers share the load
        self._rng.shuffle(pool)
        pool.sort(key=lambda s: (-(s.free >> 26), s.load))
        racks = {s.rack for s in self.live_servers()}
        while len(chosen) < count and pool:
            if len(racks) <= 1:
                pick = pool[0]
            elif on_racks:
                pick = self._pick_for_repair(on_racks | {s.rack for s in chosen}, pool)
            else:
                pick = self._pick_rack_aware(chosen, pool)
            chosen.append(pick)
            pool.remove(pick)
        return chosen[:count] if len(chosen) > count else chosen

    @staticmethod
    def _pick_for_repair(on_racks: set[str], pool: list[ServerState]) -> ServerState:
        """A repair's next target: while the block is on one rack only, another rack's."""
        if len(on_racks) == 1:
            other = [s for s in pool if s.rack not in on_racks]
            return other[0] if other else pool[0]
        return pool[0]

    @staticmethod
    def _pick_rack_aware(chosen: list[ServerState], pool: list[ServerState]) -> ServerState:
        if len(chosen) == 1:  # second replica: another rack than the first
            other = [s for s in pool if s.rack != chosen[0].rack]
            return other[0] if other else pool[0]
        if len(chosen) == 2:  # third: the second's rack, another server
            same = [s for s in pool if s.rack == chosen[1].rack]
            return same[0] if same else pool[0]
        return pool[0]
