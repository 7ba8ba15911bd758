"""Entry point of the ``keelfs`` command."""

from __future__ import annotations

import json
import sys

import click
from rich.console import Console
from rich.table import Table


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="keelfs")
def cli() -> None:
    """keelfs: a distributed file system whose masters never stop being available."""


@cli.command()
@click.option("--seconds", default=10.0, show_default=True, help="How long to run.")
@click.option("--seed", default=1, show_default=True, help="Simulation seed (replays exactly).")
@click.option("--kill-every", default=3.0, show_default=True, help="Seconds between leader kills.")
@click.option("--fast", is_flag=True, help="Do not pace the simulation in real time.")
def demo(seconds: float, seed: int, kill_every: float, fast: bool) -> None:
    """Run a live simulated 3-master Raft group and narrate elections and failovers."""
    from keelfs.cli.demo import run_demo

    sys.exit(run_demo(seconds, seed, kill_every, realtime=not fast))


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def sim(args: tuple[str, ...]) -> None:
    """Run the deterministic Raft simulator (same flags as python -m keelfs.testing.sim)."""
    from keelfs.testing.sim import main as sim_main

    sys.exit(sim_main(list(args)))


@cli.group()
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


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
