"""``keelfs bench raft``: the Raft runtime with real processes, fsync on.

Three ``keelfs.runtime.server`` processes on 127.0.0.1 (one KV group, every durable write
synced), measured three ways:

- **in-process**: the ``LoadTest`` RPC has the leader propose ``ops`` puts through
  ``RaftGroup.propose`` with ``inflight`` outstanding, inside its own process: commits per second
  of the runtime (leader + followers + network + fsync), with no client RPC per write;
- **over gRPC**: ``AsyncKVClient.put`` from separate client processes (by default one: this
  one), ``inflight`` concurrent puts spread over them; the CPU use of every process during the
  run shows which one limits;
- **latency**: puts at a fixed open-loop rate (``rate_ops`` per second, for ``duration`` seconds:
  each put is issued on time whatever the others do), measured twice: from this process over
  gRPC (``AsyncKVClient.put``, issue to acknowledgement), and inside the leader (``LoadTest``
  with ``rate_ops``: ``RaftGroup.propose`` to applied), which leaves the client RPC out. How
  late the client issued its puts (event-loop timer slack) is reported too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc

from keelfs.bench.common import Summary, cluster, cpu_seconds, machine, percentile
from keelfs.runtime.client import AsyncKVClient, KVError
from keelfs.runtime.pb import kv_pb2 as pb
from keelfs.runtime.pb import kv_pb2_grpc as _pb_grpc
from keelfs.server.kvcluster import ProcessCluster

pb_grpc: Any = _pb_grpc  # generated, untyped

_WARMUP_OPS = 3_000


@dataclass
class ThroughputResult:
    ops: int
    """Writes acknowledged."""
    failed: int
    inflight: int
    seconds: float
    cpu_percent: dict[str, float] = field(default_factory=dict)
    """CPU use during the run, % of one core, per process (leader, follower-N, client-N)."""
    synced_writes: int = 0
    clients: int = 0

    @property
    def ops_per_second(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0


@dataclass
class LatencyResult:
    rate_ops: float
    seconds: float
    ops: int
    failed: int
    latency_ms: Summary
    p999_ms: float
    late_ms: Summary = field(default_factory=lambda: Summary.of([]))
    """How late each put was issued after its due time (client only)."""


@dataclass
class RaftBenchResult:
    value_bytes: int
    in_process: ThroughputResult
    grpc: ThroughputResult
    latency: LatencyResult
    in_process_latency: LatencyResult
    leader: int
    machine: dict[str, object]

    def as_json(self) -> dict[str, Any]:
        def tp(r: ThroughputResult) -> dict[str, Any]:
            d = asdict(r)
            d["seconds"] = round(r.seconds, 3)
            d["ops_per_second"] = round(r.ops_per_second)
            return d

        def lt(lat: LatencyResult) -> dict[str, Any]:
            d = lat.latency_ms.as_dict()
            return {
                "rate_ops": lat.rate_ops,
                "seconds": round(lat.seconds, 3),
                "ops": lat.ops,
                "failed": lat.failed,
                "p50_ms": d["p50"],
                "p99_ms": d["p99"],
                "p999_ms": None if lat.p999_ms != lat.p999_ms else round(lat.p999_ms, 4),
                "max_ms": d["max"],
                "mean_ms": d["mean"],
                "issued_late_p99_ms": lat.late_ms.as_dict()["p99"],
            }

        return {
            "bench": "raft",
            "value_bytes": self.value_bytes,
            "fsync": True,
            "in_process": tp(self.in_process),
            "grpc": tp(self.grpc),
            "latency": lt(self.latency),
            "in_process_latency": lt(self.in_process_latency),
            "leader": self.leader,
            "machine": self.machine,
        }


class _CpuMeter:
    """CPU seconds of a set of processes between ``start()`` and ``stop()``, as % of a core."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._t0 = 0.0
        self._c0: dict[str, float] = {}

    def start(self) -> None:
        self._c0 = {k: cpu_seconds(p) for k, p in self.pids.items()}
        self._t0 = time.monotonic()

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self._t0
        out: dict[str, float] = {}
        for k, p in self.pids.items():
            with contextlib.suppress(OSError, ValueError):
                out[k] = round(100 * (cpu_seconds(p) - self._c0[k]) / wall, 1)
        return out


def _roles(pc: ProcessCluster, leader: int) -> dict[str, int]:
    roles = {"leader": pc.pid(leader)}
    for i in sorted(pc.nodes):
        if i != leader:
            roles[f"follower-{i}"] = pc.pid(i)
    return roles


def _load_test(
    address: str, count: int, inflight: int, value_bytes: int, rate_ops: float = 0.0
) -> pb.LoadTestReply:
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.KVStub(channel)
        req = pb.LoadTestRequest(
            count=count, inflight=inflight, value_bytes=value_bytes, rate_ops=rate_ops
        )
        return stub.LoadTest(req, timeout=600, wait_for_ready=True)


def run_in_process(
    pc: ProcessCluster, leader: int, ops: int, inflight: int, value_bytes: int
) -> ThroughputResult:
    address = pc.nodes[leader].client_address
    _load_test(address, _WARMUP_OPS, inflight, value_bytes)
    meter = _CpuMeter(_roles(pc, leader))
    meter.start()
    r = _load_test(address, ops, inflight, value_bytes)
    cpu = meter.stop()
    return ThroughputResult(
        ops=int(r.committed),
        failed=int(r.failed),
        inflight=inflight,
        seconds=float(r.elapsed_seconds),
        cpu_percent=cpu,
        synced_writes=int(r.synced_writes),
        clients=0,
    )


def run_in_process_latency(
    pc: ProcessCluster, leader: int, rate: float, duration: float, value_bytes: int
) -> LatencyResult:
    address = pc.nodes[leader].client_address
    n = max(1, int(rate * duration))
    r = _load_test(address, n, 1, value_bytes, rate_ops=rate)
    ms = list(r.latencies_ms)
    return LatencyResult(
        rate,
        float(r.elapsed_seconds),
        int(r.committed),
        int(r.failed),
        Summary.of(ms),
        percentile(ms, 99.9),
    )


# ---------------------------------------------------------------------------------------------
# puts over gRPC


StartAt = Callable[[], Awaitable[float]]


async def _grpc_load(
    addresses: list[str],
    ops: int,
    inflight: int,
    value_bytes: int,
    start: StartAt,
    seconds: float,
    tag: str,
) -> dict[str, Any]:
    """``ops`` puts, ``inflight`` at a time, from this process, for at most ``seconds``.

    After a short warm-up (connect, find the leader) ``start()`` says when to begin, in
    ``time.monotonic()`` (one clock for every process on the machine)."""
    value = "x" * value_bytes
    async with AsyncKVClient(addresses, deadline=30.0, attempt_timeout=10.0) as client:
        for i in range(8):
            await client.put(f"{tag}/warm/{i}", value)
        start_at = await start()
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        left = ops
        done = failed = 0
        stop_at = start_at + seconds

        async def worker(w: int) -> None:
            nonlocal left, done, failed
            key = f"{tag}/{w}"
            while left > 0 and time.monotonic() < stop_at:
                left -= 1
                try:
                    await client.put(key, value)
                except KVError:
                    failed += 1
                else:
                    done += 1

        t0, c0 = time.monotonic(), time.process_time()
        await asyncio.gather(*(worker(w) for w in range(max(1, min(inflight, ops)))))
        t1, c1 = time.monotonic(), time.process_time()
    return {"ops": done, "failed": failed, "start": t0, "end": t1, "cpu": c1 - c0}


def run_grpc(
    pc: ProcessCluster,
    leader: int,
    ops: int,
    inflight: int,
    value_bytes: int,
    clients: int,
    seconds: float,
) -> ThroughputResult:
    """Puts over gRPC from ``clients`` processes: this one and ``clients - 1`` children, which
    share the ops and in-flight writes evenly and start together once all have warmed up."""
    clients = max(1, clients)
    addresses = pc.client_addresses
    procs: list[subprocess.Popen[bytes]] = []
    env = dict(os.environ)
    env["PYTHONPATH"] = (
        str(Path(__file__).resolve().parents[2]) + os.pathsep + env.get("PYTHONPATH", "")
    )
    meter = _CpuMeter(_roles(pc, leader))
    try:
        for c in range(1, clients):
            spec = {
                "addresses": addresses,
                "ops": ops // clients,
                "inflight": max(1, inflight // clients),
                "value_bytes": value_bytes,
                "seconds": seconds,
                "tag": f"c{c}",
            }
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "keelfs.bench.raft", "--worker", json.dumps(spec)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    env=env,
                    start_new_session=True,
                )
            )
        mine_ops = ops - (ops // clients) * (clients - 1)
        mine_inflight = max(1, inflight - (inflight // clients) * (clients - 1))

        async def start() -> float:
            for p in procs:  # every child has warmed up ...
                assert p.stdout is not None
                line = await asyncio.to_thread(p.stdout.readline)
                if line.strip() != b"READY":
                    raise RuntimeError(f"client process {p.pid} did not start: {line!r}")
            start_at = time.monotonic() + 0.1  # ... then all go at once
            for p in procs:
                assert p.stdin is not None
                p.stdin.write(f"{start_at}\n".encode())
                p.stdin.flush()
            meter.start()
            return start_at

        rounds0 = pc.status(leader)["rounds"]
        results = [
            asyncio.run(
                _grpc_load(addresses, mine_ops, mine_inflight, value_bytes, start, seconds, "c0")
            )
        ]
        for p in procs:
            out, _ = p.communicate(timeout=seconds + 120)
            if p.returncode != 0:
                raise RuntimeError(f"client process {p.pid} failed with {p.returncode}")
            results.append(json.loads(out.decode().strip().splitlines()[-1]))
        cpu = meter.stop()
        synced = pc.status(leader)["rounds"] - rounds0
    finally:
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                p.wait()
    for c, r in enumerate(results):  # clients measure themselves (the children are gone)
        cpu[f"client-{c}"] = round(100 * r["cpu"] / max(1e-9, r["end"] - r["start"]), 1)
    begin = min(r["start"] for r in results)
    end = max(r["end"] for r in results)
    return ThroughputResult(
        ops=sum(r["ops"] for r in results),
        failed=sum(r["failed"] for r in results),
        inflight=inflight,
        seconds=end - begin,
        cpu_percent=cpu,
        synced_writes=synced,
        clients=clients,
    )


# ---------------------------------------------------------------------------------------------
# latency at a fixed rate


async def _latency(
    addresses: list[str], rate: float, duration: float, value_bytes: int
) -> LatencyResult:
    value = "x" * value_bytes
    lat: list[float] = []
    late: list[float] = []
    failed = 0
    async with AsyncKVClient(addresses, deadline=10.0, attempt_timeout=5.0) as client:
        for i in range(200):  # connect, find the leader, warm the path
            await client.put(f"lat/warm/{i % 8}", value)
        loop = asyncio.get_running_loop()
        n = max(1, int(rate * duration))
        t0 = loop.time() + 0.05
        tasks: list[asyncio.Task[None]] = []

        async def one(i: int, due: float) -> None:
            nonlocal failed
            t = loop.time()
            late.append(t - due)
            try:
                await client.put(f"lat/{i % 1024}", value)
            except KVError:
                failed += 1
                return
            lat.append(loop.time() - t)

        for i in range(n):
            due = t0 + i / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, due)))
        await asyncio.gather(*tasks)
        seconds = loop.time() - t0
    ms = [x * 1000 for x in lat]
    late_ms = Summary.of([x * 1000 for x in late])
    return LatencyResult(
        rate, seconds, len(lat), failed, Summary.of(ms), percentile(ms, 99.9), late_ms
    )


def run(
    ops: int = 50_000,
    inflight: int = 1024,
    value_bytes: int = 64,
    rate_ops: float = 200.0,
    duration: float = 10.0,
    clients: int = 1,
    grpc_seconds: float = 10.0,
) -> RaftBenchResult:
    """See the module docstring; the gRPC phase stops after ``ops`` puts or ``grpc_seconds``."""
    info = machine()
    with cluster() as pc:
        leader = pc.leader()
        in_process = run_in_process(pc, leader, ops, inflight, value_bytes)
        in_process_latency = run_in_process_latency(pc, leader, rate_ops, duration, value_bytes)
        if pc.leader() != leader:
            raise RuntimeError("the leader changed during the in-process runs")
        over_grpc = run_grpc(pc, leader, ops, inflight, value_bytes, clients, grpc_seconds)
        latency = asyncio.run(_latency(pc.client_addresses, rate_ops, duration, value_bytes))
    return RaftBenchResult(
        value_bytes, in_process, over_grpc, latency, in_process_latency, leader, info
    )


def _worker_main(spec_json: str) -> int:
    """A child client process of ``run_grpc``: READY on stdout once warmed up, then the start
    time on stdin, then one JSON line with the result."""
    spec = json.loads(spec_json)

    async def start() -> float:
        print("READY", flush=True)
        return float(await asyncio.to_thread(sys.stdin.readline))

    out = asyncio.run(
        _grpc_load(
            spec["addresses"],
            spec["ops"],
            spec["inflight"],
            spec["value_bytes"],
            start,
            spec["seconds"],
            spec["tag"],
        )
    )
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="client process of keelfs bench raft (internal)")
    ap.add_argument("--worker", required=True, help="JSON spec")
    sys.exit(_worker_main(ap.parse_args().worker))
