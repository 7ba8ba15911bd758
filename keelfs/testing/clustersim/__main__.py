"""``python -m keelfs.testing.clustersim --seeds N``: run seeds of the whole-cluster simulator.

Each seed runs in a worker process (spawned with ``PYTHONHASHSEED=0``: the iteration order
of sets of strings must be the same in every run for a seed to replay); a failing seed is
printed with the command that replays it with its trace.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import sys
import time
from collections import Counter
from collections.abc import Callable

from keelfs.testing.clustersim.world import Params, SeedResult, run_seed, run_seed_args

__all__ = ["main", "sweep"]


def sweep(
    seeds: list[int],
    seconds: float,
    jobs: int,
    faults: bool = True,
    out: Callable[[str], None] = print,
) -> list[SeedResult]:
    started = time.monotonic()
    results: list[SeedResult] = []
    totals: Counter[str] = Counter()
    work = [(s, seconds, faults) for s in seeds]
    if jobs > 1:
        with multiprocessing.get_context("spawn").Pool(jobs, maxtasksperchild=20) as pool:
            for r in pool.imap_unordered(run_seed_args, work):
                _report(r, seconds, out)
                results.append(r)
    else:
        for args in work:
            r = run_seed_args(args)
            _report(r, seconds, out)
            results.append(r)
    for r in results:
        totals.update(r.faults)
    failed = [r for r in results if r.error]
    virtual = sum(r.virtual_s for r in results)
    ops = sum(r.ops for r in results)
    out(
        f"{len(results)} seeds, {virtual:.0f} s virtual, {ops} namespace operations, "
        f"{time.monotonic() - started:.0f} s wall: {len(failed)} failed; faults: "
        + ", ".join(f"{k}={v}" for k, v in sorted(totals.items()))
    )
    return results


def _report(r: SeedResult, seconds: float, out: Callable[[str], None]) -> None:
    if r.error:
        out(f"FAIL seed {r.seed}: {r.error}")
        replay = f"python -m keelfs.testing.clustersim --seed {r.seed} --seconds {seconds}"
        out(f"  replay: {replay} --trace")
    else:
        faults = ",".join(f"{k}={v}" for k, v in sorted(r.faults.items()))
        out(
            f"ok   seed {r.seed}: {r.virtual_s:.1f} s virtual, {r.ops} ops, "
            f"{r.wall_s:.1f} s wall, digest {r.digest}, faults {faults or '-'}"
        )


def _ensure_hash_seed() -> None:
    """Re-run this command with ``PYTHONHASHSEED=0`` unless it already has it."""
    if os.environ.get("PYTHONHASHSEED") != "0":
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        os.execve(
            sys.executable, [sys.executable, "-m", "keelfs.testing.clustersim", *sys.argv[1:]], env
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m keelfs.testing.clustersim", description=__doc__.split("\n")[0]
    )
    p.add_argument("--seeds", type=int, default=20, help="number of seeds to run")
    p.add_argument("--start", type=int, default=0, help="first seed")
    p.add_argument("--seed", type=int, help="run just this seed")
    p.add_argument(
        "--seconds", type=float, default=Params.seconds, help="virtual seconds of faults per seed"
    )
    p.add_argument("--no-faults", action="store_true", help="workload only")
    p.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 1) // 2))
    p.add_argument("--trace", action="store_true", help="print the run's trace (with --seed)")
    p.add_argument(
        "--log",
        choices=["DEBUG", "INFO", "WARNING"],
        help="with --trace: keelfs's log records of this level and above in the trace",
    )
    a = p.parse_args(argv)
    if argv is None:
        _ensure_hash_seed()
    if a.seed is not None:
        r = run_seed(
            a.seed,
            Params(seconds=a.seconds, faults=not a.no_faults),
            keep_trace=a.trace,
            log_level=getattr(logging, a.log) if a.log else None,
        )
        if a.trace:
            print("\n".join(r.trace))
        _report(r, a.seconds, print)
        print(f"faults: {dict(sorted(r.faults.items()))}")
        return 1 if r.error else 0
    results = sweep(list(range(a.start, a.start + a.seeds)), a.seconds, a.jobs, not a.no_faults)
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
