"""``keelfs chaos`` against a real ``keelfs local-cluster``: half a minute of writers, renamers
and contenders while it kills, freezes and restarts processes, moves leaders and removes and
re-adds a shard; the JSON report counts operations and each fault kind, has checked
acknowledged files, and finds no violation; every process is up again afterwards (restarts
are recorded in the state file). Against a ``--netns`` cluster (root) it also partitions the
processes and leaves no partition behind. Every recorded process is killed (and every
namespace deleted) at the end, whatever happened. The checker's own ability to fail is tested
in ``tests/chaos``, the partition schedule in process in ``tests/chaos/test_chaos_partitions``."""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path

import pytest

from keelfs.runtime.netns import NetnsNetwork
from keelfs.server.local_cluster import load_state, network_of
from keelfs.server.metacluster import tls_by_default
from keelfs.testing.commands import keelfs_command as keelfs
from keelfs.testing.commands import kill_recorded
from keelfs.testing.environment import cannot_run

pytestmark = [pytest.mark.slow, pytest.mark.process, pytest.mark.timeout(300)]

FAULTS = ("kill", "stop", "restart", "transfer", "reshard")


def test_chaos_half_a_minute_every_fault_no_violation(tmp_path: Path) -> None:
    directory = (tmp_path / "cluster").resolve()
    tls = ["--tls"] if tls_by_default() else []  # the suite's TLS tier: chaos reads the record
    try:
        out = keelfs("local-cluster", "up", *tls, "--dir", str(directory), "--http-port", "-1")
        assert out.returncode == 0, out.stdout + out.stderr
        out = keelfs(
            "chaos",
            "--minutes", "0.5",
            "--seed", "1",
            "--cluster-dir", str(directory),
            "--writers", "3",
            "--max-file-mib", "2",
            "--settle-timeout", "45",
            timeout=240,
        )  # fmt: skip
        assert out.stdout.strip(), out.stderr
        report = json.loads(out.stdout)
        assert report["violations"] == [], json.dumps(report["violations"], indent=1)
        assert out.returncode == 0, out.stderr[-3000:]

        ops = report["operations"]["by_kind"]
        for kind in ("create", "rename", "delete", "contended_rename", "contended_create"):
            assert ops.get(kind, {}).get("ok", 0) > 0, ops
        injected = report["faults"]["injected"]
        assert all(injected.get(k, 0) >= 1 for k in FAULTS), report["faults"]
        assert "--netns" in report["faults"]["not_available"]["partition"]
        assert report["settled"]["ok"], report["settled"]
        assert report["checked"]["files"] > 0 and report["checked"]["absent"] > 0

        state = load_state(directory)
        assert state is not None and all(p.alive() for p in state.processes)
    finally:
        kill_recorded(directory)


def remove_cluster(directory: Path) -> None:
    """Kill every recorded process and delete the cluster's namespaces, whatever happened."""
    kill_recorded(directory)
    with contextlib.suppress(Exception):
        state = load_state(directory)
        net = network_of(state) if state is not None else None
        if net is not None:
            net.remove_all()


def test_chaos_partitions_a_netns_cluster_and_heals_it(tmp_path: Path) -> None:
    """Half a minute against ``local-cluster up --netns``: partitions (an isolated process, or
    the processes split in two) among the other faults, 0 violations, and afterwards no
    partition is left: every port on the bridge up, no route to nowhere in any namespace."""
    ok, why = NetnsNetwork.available(gateway=True)
    if not ok:
        cannot_run(f"needs network namespaces: {why}")
    directory = (tmp_path / "cluster").resolve()
    try:
        out = keelfs("local-cluster", "up", "--netns", "--dir", str(directory), "--http-port", "-1")
        assert out.returncode == 0, out.stdout + out.stderr
        out = keelfs(
            "chaos",
            "--minutes", "0.5",
            "--seed", "3",
            "--cluster-dir", str(directory),
            "--writers", "3",
            "--max-file-mib", "2",
            "--faults", "partition,kill,transfer",
            "--settle-timeout", "60",
            timeout=240,
        )  # fmt: skip
        assert out.stdout.strip(), out.stderr
        report = json.loads(out.stdout)
        assert report["violations"] == [], json.dumps(report["violations"], indent=1)
        assert out.returncode == 0, out.stderr[-3000:]
        assert "partition" not in report["faults"]["not_available"], report["faults"]
        assert report["faults"]["injected"].get("partition", 0) >= 1, report["faults"]
        kinds = {e["kind"] for e in report["faults"]["events"]}
        assert "partition" in kinds
        assert report["settled"]["ok"], report["settled"]
        assert report["checked"]["files"] > 0

        state = load_state(directory)
        net = network_of(state) if state is not None else None
        assert net is not None
        hub_links = subprocess.run(
            ["ip", "-n", net.hub, "-o", "link"], capture_output=True, text=True
        ).stdout
        assert "state DOWN" not in hub_links, hub_links
        for name in net.namespaces()[1:]:
            routes = subprocess.run(
                ["ip", "-n", name, "route"], capture_output=True, text=True
            ).stdout
            assert "via" not in routes, (name, routes)
    finally:
        remove_cluster(directory)


def test_chaos_without_a_cluster_says_so(tmp_path: Path) -> None:
    out = keelfs("chaos", "--address", "127.0.0.1:1", "--minutes", "0.1")
    assert out.returncode == 2
    assert "no metadata node answers at 127.0.0.1:1" in out.stderr
    out = keelfs("chaos", "--cluster-dir", str(tmp_path), "--minutes", "0.1")
    assert out.returncode == 2 and "no local cluster" in out.stderr
    out = keelfs("chaos", "--faults", "kill,flood")
    assert out.returncode == 2 and "unknown fault 'flood'" in out.stderr
