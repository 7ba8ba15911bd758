"""``keelfs bench failover``: how long writes stop when the leader's process dies or freezes.

Three ``keelfs.runtime.server`` processes on 127.0.0.1 (15 ms ticks, election timeout
150-300 ms, pre-vote and check-quorum on, fsync on). Each trial:

1. a writer submits a put every ``interval`` seconds, open loop (each put is its own task, with
   ``AsyncKVClient``'s retries: a short attempt timeout, back-off from 20 ms, NOT_LEADER hints
   followed at once), until the group is busy and every member active;
2. the leader is killed with SIGKILL (``kill``) or frozen with SIGSTOP (``stop``);
3. the **failover time** is from the signal to the first acknowledgement of a put *submitted
   after* the signal (puts already in flight do not count: their retries are paced by back-off);
4. meanwhile the survivors' ``Status`` is polled every ``poll`` seconds, which splits the time
   into *election* (signal to a survivor reporting itself leader in a higher term) and *client*
   (that moment to the first acknowledgement: the new leader's no-op commit, the client finding
   the new leader, the put's own commit);
5. the old leader is restarted from its data directory (or sent SIGCONT), and the next trial
   waits until all three members agree on a leader and have applied the latest commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

import grpc

from keelfs.bench.common import Summary, cluster, machine
from keelfs.runtime.client import AsyncKVClient, KVError
from keelfs.runtime.pb import kv_pb2 as pb
from keelfs.runtime.pb import kv_pb2_grpc as _pb_grpc
from keelfs.runtime.processes import ClusterError
from keelfs.server.kvcluster import ProcessCluster

pb_grpc: Any = _pb_grpc  # generated, untyped

MODES = ("kill", "stop")


@dataclass
class Trial:
    mode: str
    old_leader: int
    new_leader: int
    failover: float
    """Signal to the first acknowledged put submitted after it (s)."""
    elected: float
    """Signal to the first poll that saw a survivor lead in a higher term (s); NaN if unseen."""
    submitted_after: int
    """Puts submitted after the signal until the first of them was acknowledged."""


@dataclass
class ModeResult:
    mode: str
    trials: list[Trial] = field(default_factory=list)

    @property
    def failover(self) -> Summary:
        return Summary.of([t.failover for t in self.trials])

    @property
    def elected(self) -> Summary:
        return Summary.of([t.elected for t in self.trials if not math.isnan(t.elected)])

    @property
    def client(self) -> Summary:
        return Summary.of(
            [t.failover - t.elected for t in self.trials if not math.isnan(t.elected)]
        )


@dataclass
class FailoverResult:
    modes: list[ModeResult]
    interval: float
    attempt_timeout: float
    poll: float
    machine: dict[str, object]

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "bench": "failover",
            "write_interval_s": self.interval,
            "attempt_timeout_s": self.attempt_timeout,
            "status_poll_s": self.poll,
            "machine": self.machine,
        }
        for m in self.modes:
            out[m.mode] = {
                "trials": len(m.trials),
                "failover_s": m.failover.as_dict(),
                "election_s": m.elected.as_dict(),
                "client_s": m.client.as_dict(),
                "samples_s": [round(t.failover, 4) for t in m.trials],
            }
        return out


class _Writer:
    """Open-loop puts: one new put every ``interval`` seconds, whatever the others are doing."""

    def __init__(self, client: AsyncKVClient, interval: float) -> None:
        self.client = client
        self.interval = interval
        self.acks: list[tuple[float, float]] = []
        """(submitted, acknowledged) in ``time.monotonic()``."""
        self.submitted: list[float] = []
        self.failed = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._n = 0

    def start(self) -> None:
        self._runner = asyncio.create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            t = asyncio.create_task(self._one(self._n, time.monotonic()))
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)
            self._n += 1
            next_at += self.interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    async def _one(self, i: int, submitted: float) -> None:
        self.submitted.append(submitted)
        try:
            await self.client.put(f"failover/{i % 64}", str(i))
        except KVError:
            self.failed += 1
            return
        self.acks.append((submitted, time.monotonic()))

    def first_ack_after(self, t: float) -> float | None:
        acked = [a for s, a in self.acks if s > t]
        return min(acked) if acked else None

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _poll_elected(
    addresses: dict[int, str], old_term: int, poll: float, limit: float
) -> tuple[float, int] | None:
    """Poll the survivors' Status until one leads in a term above ``old_term`` (at most
    ``limit`` seconds); returns when its answer arrived (the election ended before) and who."""
    channels = {i: grpc.aio.insecure_channel(a) for i, a in addresses.items()}
    try:
        stubs = {i: pb_grpc.KVStub(c) for i, c in channels.items()}

        async def ask(i: int, stub: Any) -> tuple[int, dict[str, Any]] | None:
            try:
                reply = await stub.Status(pb.StatusRequest(), timeout=max(poll, 0.05))
            except grpc.RpcError:
                return None
            return i, json.loads(reply.json)["groups"]["kv"]

        end = time.monotonic() + limit
        while time.monotonic() < end:
            t = time.monotonic()
            for r in await asyncio.gather(*(ask(i, s) for i, s in stubs.items())):
                if r is not None and r[1]["state"] == "leader" and r[1]["term"] > old_term:
                    return time.monotonic(), r[0]
            await asyncio.sleep(max(0.0, t + poll - time.monotonic()))
        return None
    finally:
        for c in channels.values():
            await c.close()


def _healthy(pc: ProcessCluster, timeout: float = 30.0) -> tuple[int, int]:
    """Wait until every node agrees on one leader and term and has applied the leader's commit
    index as it was when we looked; returns (leader, term)."""

    def probe() -> tuple[int, int] | None:
        sts = pc.statuses(timeout=1.0)
        if len(sts) < len(pc.nodes):
            return None
        leaders = {(s["leader"], s["term"]) for s in sts.values()}
        if len(leaders) != 1:
            return None
        lead, term = leaders.pop()
        if lead == 0 or sts.get(lead, {}).get("state") != "leader":
            return None
        commit = sts[lead]["commit"]
        if any(s["applied"] < commit for s in sts.values()):
            return None
        return lead, term

    return pc.wait_for(probe, timeout, "cluster did not become healthy")


async def _trial(
    pc: ProcessCluster,
    client: AsyncKVClient,
    mode: str,
    interval: float,
    poll: float,
    warmup: float,
) -> Trial:
    leader, term = await asyncio.to_thread(_healthy, pc)
    writer = _Writer(client, interval)
    writer.start()
    poller: asyncio.Task[tuple[float, int] | None] | None = None
    try:
        await asyncio.sleep(warmup)  # busy: every member has its election timer running
        if not writer.acks:
            raise ClusterError("no write was acknowledged before the fault")
        survivors = {i: pc.nodes[i].client_address for i in pc.nodes if i != leader}
        pid = pc.pid(leader)

        def fault() -> float:
            t = time.monotonic()
            if mode == "kill":
                pc.kill9(leader)
            else:
                pc.sigstop(leader)
            return t

        if mode == "stop":
            t_fault = fault()  # SIGSTOP is one syscall: no thread needed
        else:
            t_fault = await asyncio.to_thread(fault)  # kill9 waits for the process to go
        poller = asyncio.create_task(_poll_elected(survivors, term, poll, 30.0))
        deadline = t_fault + 30.0
        while (t_ack := writer.first_ack_after(t_fault)) is None:
            if time.monotonic() > deadline:
                raise ClusterError(f"no write committed within 30 s of the {mode} of {pid}")
            await asyncio.sleep(0.002)
        elected = await poller
    finally:
        if poller is not None and not poller.done():
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        await writer.stop()
    # a commit by the new leader means it was elected: the poll's answer may come later
    t_elected = min(elected[0], t_ack) - t_fault if elected is not None else math.nan
    new_leader = elected[1] if elected is not None else 0
    after = sum(1 for s in writer.submitted if t_fault < s <= t_ack)
    if mode == "kill":
        await asyncio.to_thread(pc.restart, leader)
    else:
        pc.sigcont(leader)
    return Trial(mode, leader, new_leader, t_ack - t_fault, t_elected, after)


async def _run_modes(
    pc: ProcessCluster,
    modes: list[str],
    trials: int,
    interval: float,
    attempt_timeout: float,
    poll: float,
    warmup: float,
    progress: Any,
) -> list[ModeResult]:
    results: list[ModeResult] = []
    async with AsyncKVClient(
        pc.client_addresses, deadline=30.0, attempt_timeout=attempt_timeout
    ) as client:
        for mode in modes:
            res = ModeResult(mode)
            results.append(res)
            for n in range(trials):
                t = await _trial(pc, client, mode, interval, poll, warmup)
                res.trials.append(t)
                if progress is not None:
                    progress(n + 1, t)
    return results


def run(
    trials: int = 20,
    mode: str = "both",
    interval: float = 0.01,
    attempt_timeout: float = 0.2,
    poll: float = 0.02,
    warmup: float = 0.5,
    progress: Any = None,
) -> FailoverResult:
    modes = list(MODES) if mode == "both" else [mode]
    if any(m not in MODES for m in modes):
        raise ValueError(f"mode must be kill, stop or both, not {mode!r}")
    info = machine()
    with cluster() as pc:
        try:
            results = asyncio.run(
                _run_modes(pc, modes, trials, interval, attempt_timeout, poll, warmup, progress)
            )
        finally:
            for i in pc.running():  # never leave a frozen process behind
                if pc.is_stopped(i):
                    with contextlib.suppress(ProcessLookupError):
                        pc.sigcont(i)
    return FailoverResult(results, interval, attempt_timeout, poll, info)
