"""``keelfs bench idle``: CPU use of processes hosting many idle Raft groups.

Three ``keelfs.runtime.server`` processes, each hosting a member of the default group and of
``groups`` more (``--groups N``: ``g0`` .. ``g{N-1}``), so every process leads about a third of
them. After a warm-up in which every group elected a leader that all three members follow, the
groups are left alone for ``settle`` seconds (an idle group quiesces after
``quiesce_after_ticks`` ticks: 20 x 15 ms by default) and then each process's CPU time is read
from ``/proc/<pid>/stat`` (utime + stime) over ``seconds``, with nothing else talking to them.
Run once with quiescence on (the default, 20 ticks) and once with it off (0: every leader
heartbeats every 2 ticks and every member runs its election timer).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from keelfs.bench.common import cluster, cpu_seconds, machine
from keelfs.runtime.host import HostConfig
from keelfs.server.kvcluster import ProcessCluster


@dataclass
class IdleRun:
    quiesce_after_ticks: int
    groups: int
    """Raft groups per process, the default ``kv`` group included."""
    seconds: float
    cpu_percent: dict[int, float] = field(default_factory=dict)
    """Node id -> CPU use over the window, % of one core."""
    leaders: dict[int, int] = field(default_factory=dict)
    """Node id -> how many groups it led when the warm-up ended."""

    @property
    def max_percent(self) -> float:
        return max(self.cpu_percent.values(), default=0.0)

    @property
    def mean_percent(self) -> float:
        v = list(self.cpu_percent.values())
        return sum(v) / len(v) if v else 0.0


@dataclass
class IdleResult:
    runs: list[IdleRun]
    machine: dict[str, object]

    def as_json(self) -> dict[str, Any]:
        return {
            "bench": "idle",
            "machine": self.machine,
            "runs": [
                {
                    "quiesce": r.quiesce_after_ticks > 0,
                    "quiesce_after_ticks": r.quiesce_after_ticks,
                    "groups_per_process": r.groups,
                    "seconds": round(r.seconds, 3),
                    "cpu_percent": {str(k): v for k, v in sorted(r.cpu_percent.items())},
                    "cpu_percent_max": round(r.max_percent, 2),
                    "cpu_percent_mean": round(r.mean_percent, 2),
                    "leaders": {str(k): v for k, v in sorted(r.leaders.items())},
                }
                for r in self.runs
            ],
        }


def _all_led(pc: ProcessCluster, expected: int) -> dict[int, int] | None:
    """Leaders per node once every group has one that all members follow, else None."""
    sts = {}
    for i in sorted(pc.nodes):
        try:
            sts[i] = pc.status(i, timeout=5.0)["groups"]
        except Exception:
            return None
    led = dict.fromkeys(pc.nodes, 0)
    names = set(sts[min(sts)])
    if len(names) != expected:
        return None
    for name in names:
        views = {(s[name]["leader"], s[name]["term"]) for s in sts.values() if name in s}
        if len(views) != 1 or any(name not in s for s in sts.values()):
            return None
        lead, _ = views.pop()
        if lead == 0 or sts[lead][name]["state"] != "leader":
            return None
        led[lead] += 1
    return led


def measure(groups: int, seconds: float, quiesce_after_ticks: int, settle: float) -> IdleRun:
    args = ("--groups", str(groups), "--quiesce-after-ticks", str(quiesce_after_ticks))
    with cluster(server_args=args, start_timeout=120.0) as pc:
        leaders = pc.wait_for(
            lambda: _all_led(pc, groups + 1), 120.0, "not every group elected a leader"
        )
        time.sleep(settle)  # idle: nobody talks to the servers from here on
        pids = {i: pc.pid(i) for i in sorted(pc.nodes)}
        c0 = {i: cpu_seconds(p) for i, p in pids.items()}
        t0 = time.monotonic()
        time.sleep(seconds)
        wall = time.monotonic() - t0
        c1 = {i: cpu_seconds(p) for i, p in pids.items()}
        cpu = {i: round(100 * (c1[i] - c0[i]) / wall, 2) for i in pids}
        if _all_led(pc, groups + 1) is None:
            raise RuntimeError("a group lost its leader while idle")
    return IdleRun(quiesce_after_ticks, groups + 1, wall, cpu, leaders)


def run(
    groups: int = 100,
    seconds: float = 10.0,
    quiesce: str = "both",
    settle: float = 3.0,
) -> IdleResult:
    """``quiesce``: ``on`` (``HostConfig.quiesce_after_ticks``), ``off`` (0) or ``both``."""
    on = HostConfig.quiesce_after_ticks
    settings = {"on": [on], "off": [0], "both": [on, 0]}[quiesce]
    info = machine()
    return IdleResult([measure(groups, seconds, q, settle) for q in settings], info)
