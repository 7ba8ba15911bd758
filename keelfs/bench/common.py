"""Helpers shared by the real-process benchmarks (``keelfs bench raft|failover|idle``).

Every benchmark runs its servers through :func:`cluster`, a :class:`ProcessCluster` in a
temporary directory: whatever happens, every process it started is killed (SIGKILL by pid) and
the directory removed when the ``with`` block is left.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from keelfs.server.kvcluster import ProcessCluster

_CLK_TCK = os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def cluster(
    n: int = 3,
    *,
    server_args: tuple[str, ...] = (),
    tmpdir: str | os.PathLike[str] | None = None,
    start_timeout: float = 60.0,
) -> Iterator[ProcessCluster]:
    """A started :class:`ProcessCluster` of ``n`` server processes on 127.0.0.1 (fsync on,
    15 ms ticks, election timeout 150-300 ms), killed and deleted on exit."""
    with tempfile.TemporaryDirectory(prefix="keelfs-bench-", dir=tmpdir) as tmp:
        pc = ProcessCluster(Path(tmp), n, server_args=server_args, start_timeout=start_timeout)
        with pc:
            yield pc


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (``/proc/<pid>/stat``: utime, stime)."""
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    # the command name (field 2) may hold spaces: split after its closing parenthesis
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


class CpuByGroup:
    """CPU time (user + system) that named groups of processes spend between two readings.

    Why: on a shared machine a rate (files/s) falls whenever something else runs, while the
    CPU each operation costs moves much less; per group (client, shard leader, other masters,
    chunk servers) it also says where the time goes. A process that exits between the two
    readings is left out of both."""

    def __init__(self, groups: Mapping[str, Sequence[int]]) -> None:
        self.groups = {name: list(pids) for name, pids in groups.items()}

    def reading(self) -> dict[int, float]:
        out: dict[int, float] = {}
        for pids in self.groups.values():
            for pid in pids:
                with contextlib.suppress(OSError, ValueError, IndexError):
                    out[pid] = cpu_seconds(pid)
        return out

    def spent(self, before: dict[int, float], after: dict[int, float]) -> dict[str, float]:
        """Seconds of CPU per group between two readings."""
        return {
            name: sum(after[p] - before[p] for p in pids if p in before and p in after)
            for name, pids in self.groups.items()
        }

    def per_op_us(
        self, before: dict[int, float], after: dict[int, float], ops: int
    ) -> dict[str, float]:
        """Microseconds of CPU per operation, per group, over ``ops`` operations."""
        return {
            name: round(seconds / max(ops, 1) * 1e6, 1)
            for name, seconds in self.spent(before, after).items()
        }


@dataclass
class SmallFiles:
    """What the small-file phase measured: files/s each way, failures, and with a
    :class:`CpuByGroup` the CPU each write and each read cost, in µs per group of processes."""

    writes_s: float
    reads_s: float
    failed: int
    write_cpu_us: dict[str, float] = field(default_factory=dict)
    read_cpu_us: dict[str, float] = field(default_factory=dict)


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) by the nearest-rank method; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True)
class Summary:
    n: int
    p50: float
    p99: float
    min: float
    max: float
    mean: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        if not values:
            return cls(0, math.nan, math.nan, math.nan, math.nan, math.nan)
        return cls(
            len(values),
            percentile(values, 50),
            percentile(values, 99),
            min(values),
            max(values),
            sum(values) / len(values),
        )

    def as_dict(self, scale: float = 1.0, digits: int = 4) -> dict[str, float | int | None]:
        def r(x: float) -> float | None:
            return None if math.isnan(x) else round(x * scale, digits)

        return {
            "n": self.n,
            "p50": r(self.p50),
            "p99": r(self.p99),
            "min": r(self.min),
            "max": r(self.max),
            "mean": r(self.mean),
        }


def machine() -> dict[str, object]:
    """What the figures were measured on."""
    load = os.getloadavg()
    return {"cpus": os.cpu_count(), "loadavg_1m_at_start": round(load[0], 2)}
