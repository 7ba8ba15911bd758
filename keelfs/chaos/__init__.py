"""``keelfs chaos``: a soak test an operator runs against a running cluster.

For ``minutes`` it runs writers, renamers and contenders (``keelfs.chaos.workload``) while
injecting faults on a schedule drawn from ``seed`` (``keelfs.chaos.faults``), remembering
only what the cluster acknowledged (``keelfs.chaos.model``). Then it heals every fault, waits
for the cluster to settle, reads back every acknowledged file (MD5), checks that every deleted
or renamed-away name is absent and that no name appeared that nothing created, and returns a
JSON-ready report. Everything it writes lives under one directory, ``/chaos-<seed>-<time>``,
left in place for inspection.

It uses only the public client and the admin RPCs; killing, freezing and restarting processes
needs the state file of ``keelfs local-cluster`` (``cluster_dir``).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from keelfs.chaos.faults import (
    ALL_FAULTS,
    PROCESS_FAULTS,
    FaultInjector,
    FaultLog,
    partitions_unavailable,
)
from keelfs.chaos.model import ABSENT, ContendedLog, Expected, Violation, md5, verify
from keelfs.chaos.workload import Stats, Worker, make_workers
from keelfs.client import Client
from keelfs.client.connect import config_servers_of, parse_addresses
from keelfs.errors import KeelError, NotFound
from keelfs.server.local_cluster import State, cluster_status, load_state
from keelfs.tls.credentials import TlsSettings

__all__ = ["ALL_FAULTS", "ChaosError", "Options", "run"]


_READ_RETRY_S = 30.0
"""How long the check retries reading one name (all names together: the settle timeout)."""
_READ_DEADLINE_S = 10.0
_STRAGGLER_S = 60.0
"""How long the end of the run waits for operations under way."""


class ChaosError(RuntimeError):
    """The run could not start (no cluster at the address, a bad state file)."""


@dataclass
class Options:
    minutes: float
    seed: int
    address: str
    cluster_dir: Path | None = None
    writers: int = 4
    renamers: int = 2
    contenders: int = 3
    faults: tuple[str, ...] = ALL_FAULTS
    max_size: int = 4 << 20
    fault_every_s: tuple[float, float] = (1.5, 4.0)
    settle_timeout_s: float = 120.0
    """Healing and settling together; a cluster not settled by then is a violation."""


def _config_servers(address: str, tls: TlsSettings | None) -> list[str]:
    """The config servers, from any metadata node's registry (as ``keelfs.connect`` does)."""
    try:
        seeds = parse_addresses(address)
    except ValueError as exc:
        raise ChaosError(str(exc)) from None
    found = config_servers_of(seeds, tls)
    if found is None:
        raise ChaosError(f"no metadata node answers at {address} (is the cluster running?)")
    return found or seeds[:1]


def _state(options: Options) -> State | None:
    if options.cluster_dir is None:
        return None
    state = load_state(options.cluster_dir.resolve())
    if state is None:
        raise ChaosError(f"no local cluster in {options.cluster_dir} (no cluster.json)")
    return state


def _unavailable(options: Options, state: State | None) -> dict[str, str]:
    out: dict[str, str] = {}
    why_no_partitions = partitions_unavailable(state)
    if why_no_partitions:
        out["partition"] = why_no_partitions
    if state is None:
        for kind in PROCESS_FAULTS:
            if kind in options.faults:
                out[kind] = "needs --cluster-dir (the processes' pids and command lines)"
    return out


def run(options: Options, progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Run the soak test; the report (see ``docs/operations.md``)."""
    state = _state(options)
    address = options.address
    if state is not None and not address:
        address = ",".join(state.config_addresses)
    tls = state.client_tls() if state is not None else None  # a --tls cluster: its admin's
    config = _config_servers(address, tls)
    unavailable = _unavailable(options, state)
    kinds = tuple(k for k in options.faults if k not in unavailable)
    root = f"/chaos-{options.seed}-{int(time.time())}"
    stats, contended = Stats(), ContendedLog()
    started = time.monotonic()
    log = FaultLog(started)
    fs = Client(config, deadline=20.0, attempt_timeout=2.0, max_sessions=32, tls=tls)
    admin = Client(config, deadline=30.0, attempt_timeout=2.0, tls=tls)
    reader = Client(config, deadline=_READ_DEADLINE_S, attempt_timeout=2.0, tls=tls)
    injector: FaultInjector | None = None
    healed = False
    try:
        workers = make_workers(
            fs,
            options.seed,
            root,
            stats,
            contended,
            writers=options.writers,
            renamers=options.renamers,
            contenders=options.contenders,
            max_size=options.max_size,
            epoch=started,
        )
        progress(
            f"chaos: {len(workers)} workers under {root}; faults: {', '.join(kinds) or 'none'}"
        )
        for w in workers:
            w.setup()
        injector = FaultInjector(
            kinds,
            random.Random(f"{options.seed}:faults"),
            admin,
            config,
            state,
            log,
            every_s=options.fault_every_s,
            progress=progress,
            tls=tls,
        )
        stragglers = _soak(
            workers, injector if kinds else None, options.minutes * 60, stats, log, progress
        )
        progress("chaos: healing every fault")
        settle_by = time.monotonic() + options.settle_timeout_s
        injector.heal(options.settle_timeout_s)
        healed = True
        progress("chaos: waiting for the cluster to settle")
        settled = _settle(admin, state, settle_by)
        progress("chaos: reading back every acknowledged file")
        check_by = time.monotonic() + options.settle_timeout_s
        report = _check(reader, root, workers, contended, stragglers, started, check_by)
    finally:
        if injector is not None and not healed:  # interrupted: leave nothing frozen or down
            injector.heal(30.0)
        fs.close()
        admin.close()
        reader.close()
    violations: list[Violation] = report.pop("violations")
    if not settled["ok"]:
        detail = f"not settled {options.settle_timeout_s:g} s after healing: {settled['last']}"
        violations.insert(0, Violation("unsettled", "", detail))
    return {
        "seed": options.seed,
        "minutes": options.minutes,
        "duration_s": round(time.monotonic() - started, 1),
        "address": ",".join(config),
        "cluster_dir": str(options.cluster_dir) if options.cluster_dir else None,
        "root": root,
        "workers": {
            "writers": options.writers,
            "renamers": options.renamers,
            "contenders": options.contenders,
        },
        "operations": stats.as_json(),
        "faults": {
            "enabled": list(kinds),
            "injected": dict(sorted(log.counts.items())),
            "not_available": unavailable,
            "events": log.events,
            "errors": log.errors,
            "crashed_processes": injector.crashed if injector else [],
        },
        "stragglers": [w.name for w in stragglers],
        "settled": settled,
        "checked": report["checked"],
        "violations": [v.as_json() for v in violations],
        "ok": not violations,
    }


def _soak(
    workers: list[Worker],
    injector: FaultInjector | None,
    seconds: float,
    stats: Stats,
    log: FaultLog,
    progress: Callable[[str], None],
) -> list[Worker]:
    """Run the workers (and faults) for ``seconds``; the workers whose last operation had not
    returned ``_STRAGGLER_S`` later."""
    stop = threading.Event()
    threads = [
        threading.Thread(target=_loop, args=(w, stop), name=f"chaos-{w.name}", daemon=True)
        for w in workers
    ]
    if injector is not None:
        threads.append(
            threading.Thread(target=injector.run, args=(stop,), name="chaos-faults", daemon=True)
        )
    for t in threads:
        t.start()
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            stop.wait(min(10.0, max(0.0, end - time.monotonic())))
            progress(
                f"chaos: {seconds - max(0.0, end - time.monotonic()):.0f}/{seconds:.0f} s, "
                f"{stats.total()} operations, {sum(log.counts.values())} faults"
            )
    finally:
        stop.set()
        give_up = time.monotonic() + _STRAGGLER_S
        for t in threads:
            t.join(max(0.0, give_up - time.monotonic()))
    return [w for w, t in zip(workers, threads, strict=False) if t.is_alive()]


def _loop(worker: Worker, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            worker.step()
        except Exception as exc:  # a bug of the worker itself: counted, the run goes on
            worker.stats.count("worker_error", "unknown", type(exc).__name__)
            stop.wait(0.5)


def _settle(fs: Client, state: State | None, deadline: float) -> dict[str, Any]:
    """Wait until every group has a leader, no resharding runs and (for a local cluster)
    every process is up and every chunk server has reported to every shard leader."""
    t0 = time.monotonic()
    last = ""
    while time.monotonic() < deadline:
        try:
            why = _unsettled(fs, state)
        except Exception as exc:
            why = f"{type(exc).__name__}: {exc}"
        if not why:
            return {"ok": True, "seconds": round(time.monotonic() - t0, 1)}
        last = why
        time.sleep(0.5)
    return {"ok": False, "seconds": round(time.monotonic() - t0, 1), "last": last or "timeout"}


def _unsettled(fs: Client, state: State | None) -> str:
    m = fs.shard_map()
    if m.resharding:
        return "resharding under way"
    if state is None:
        fs.stat("/")
        return ""
    st = cluster_status(state)
    down = [n for n, p in st["processes"].items() if not p["alive"]]
    if down:
        return f"down: {', '.join(down)}"
    chunks = {p.name for p in state.processes if p.role == "chunk"}
    for gid, g in st["groups"].items():
        if gid != "config" and gid not in m.shards:
            continue
        if not g["leader"]:
            return f"{gid} has no leader"
        if gid == "config":
            continue
        leader = st["nodes"].get(f"n{g['leader']}")
        servers = leader.chunk_servers if leader is not None else {}
        missing = [
            c for c in chunks if not (c in servers and servers[c].live and servers[c].reported)
        ]
        if missing:
            return f"{gid} leader has no report from {', '.join(sorted(missing))}"
    return ""


def _reported(server: dict[str, Any]) -> bool:
    return bool(server.get("live") and server.get("reported"))


def _check(
    fs: Client,
    root: str,
    workers: list[Worker],
    contended: ContendedLog,
    stragglers: list[Worker],
    epoch: float,
    give_up: float,
) -> dict[str, Any]:
    """Read back every name the run may have touched: reads failing with a transient error
    are retried until ``give_up`` (then the name is unreadable: a violation)."""
    expected = Expected(epoch)
    extra: list[Violation] = []
    for w in workers:
        expected.merge(w.expected)
        extra += [Violation("content", "", v) for v in w.read_violations]

    def observe(path: str) -> tuple[str, int]:
        deadline = min(time.monotonic() + _READ_RETRY_S, give_up)
        while True:
            # the stat's short deadline bounds a name that stays unavailable (a lock held
            # for ever): once the budget is spent each such name costs a second
            left = max(1.0, min(_READ_DEADLINE_S, deadline - time.monotonic()))
            try:
                fs.stat(path, deadline=left)
                data = fs.read_bytes(path)
            except NotFound:
                return ABSENT, 0
            except (KeelError, grpc.RpcError, OSError):
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)
                continue
            return md5(data), len(data)

    try:
        listed = _walk(fs, root, give_up)
    except Exception as exc:
        listed = []
        extra.append(Violation("unreadable", root, f"cannot list: {type(exc).__name__}: {exc}"))
    uncertain = [name for w in stragglers for name in w.in_flight]
    checked, violations = verify(expected, contended, observe, listed, uncertain)
    return {"checked": checked.as_json(), "violations": extra + violations}


def _walk(fs: Client, root: str, give_up: float) -> list[str]:
    """Every file under ``root`` (listed again on a transient failure)."""
    deadline = min(time.monotonic() + _READ_RETRY_S, give_up)
    while True:
        left = max(1.0, min(_READ_DEADLINE_S, deadline - time.monotonic()))
        try:
            out: list[str] = []
            todo = [root]
            while todo:
                d = todo.pop()
                for e in fs.ls(d, deadline=left):
                    path = e.path if e.path.startswith("/") else f"{d}/{e.path}"
                    (todo if e.is_dir else out).append(path)
            return out
        except (KeelError, grpc.RpcError) as exc:
            if isinstance(exc, NotFound) or time.monotonic() >= deadline:
                raise
            time.sleep(0.5)
