"""``keelfs demo-raft``: a live, simulated 3-node Raft group that narrates what happens.

It drives the real Raft core through the deterministic simulator: clients write, the leader is
killed every few seconds, a new one is elected, the old one restarts and catches up. Every
write acknowledged is checked against every node's state machine at the end.
"""

from __future__ import annotations

import time

import click

from keelfs.raft.core import StateType
from keelfs.raft.sim import SUBSTEPS_PER_TICK, FaultRates, Simulator, Violation

TICK_MS = 15  # one Raft tick; the election timeout of 10-20 ticks is the seed's 150-300 ms


def run_demo(seconds: float, seed: int, kill_every: float, realtime: bool) -> int:
    rates = FaultRates(drop=0.01, max_latency=2, propose=0.5, read=0.1, snapshot=0.01)
    events: list[str] = []
    sim = Simulator(seed, trace=events.append, rates=rates, nodes=3)
    ticks = int(seconds * 1000 / TICK_MS)
    kill_ticks = max(1, int(kill_every * 1000 / TICK_MS))
    leader_seen: tuple[int, int] | None = None
    killed_at: int | None = None
    crashed: list[int] = []
    last_report = 0
    click.echo(f"keelfs demo-raft: 3 simulated masters, one Raft tick = {TICK_MS} ms, seed {seed}")
    for tick in range(ticks):
        for _ in range(SUBSTEPS_PER_TICK):
            sim.step(faults=False)
        ld = sim.leader()
        if ld is not None and ld.node is not None:
            now = (ld.id, ld.node.raft.term)
            if now != leader_seen:
                took = ""
                if killed_at is not None:
                    took = f" ({(tick - killed_at) * TICK_MS} ms after the old leader died)"
                    killed_at = None
                click.secho(
                    f"[{tick * TICK_MS / 1000:6.2f}s] node {ld.id} is leader of term "
                    f"{ld.node.raft.term}{took}",
                    fg="green",
                )
                leader_seen = now
        if tick and tick % kill_ticks == 0 and ld is not None:
            sim.crash(ld, "(demo: kill -9 the leader)")
            crashed.append(ld.id)
            killed_at = tick
            click.secho(
                f"[{tick * TICK_MS / 1000:6.2f}s] kill -9 node {ld.id} (the leader)", fg="red"
            )
        if crashed and tick % kill_ticks == kill_ticks // 2:
            node_id = crashed.pop(0)
            sim.restart(sim.nodes[node_id])
            click.secho(f"[{tick * TICK_MS / 1000:6.2f}s] restart node {node_id}", fg="yellow")
        if tick - last_report >= 1000 // TICK_MS:
            last_report = tick
            commits = [
                f"{sn.id}:{sn.sm.applied}" if sn.node is not None else f"{sn.id}:down"
                for sn in sim.nodes.values()
            ]
            click.echo(
                f"[{tick * TICK_MS / 1000:6.2f}s] writes acknowledged: "
                f"{sim.stats['writes_acked']:6d}   applied index per node: {' '.join(commits)}"
            )
        if realtime:
            time.sleep(TICK_MS / 1000)
    sim.calm()
    try:
        sim._check_liveness(300)
    except Violation as e:
        click.secho(f"FAILED: {e}", fg="red")
        return 1
    leader = sim.leader()
    assert leader is not None and leader.node is not None
    assert leader.node.raft.state is StateType.LEADER
    click.secho(
        f"done: {sim.stats['writes_acked']} writes acknowledged, {sim.stats['reads_served']} "
        f"linearizable reads, {sim.stats['elections']} elections; every node applied the same "
        f"log up to index {leader.sm.applied}",
        fg="green",
    )
    return 0
