"""``keelfs chaos`` against a real ``keelfs local-cluster``: half a minute of writers, renamers
and contenders while it kills, freezes and restarts processes, moves leaders and removes and
re-adds a shard; the JSON report counts operations and each fault kind, has checked
acknowledged files, and finds no violation; every process is up again afterwards (restarts
are recorded in the state file). Every recorded process is killed at the end, whatever
happened. The checker's own ability to fail is tested in ``tests/chaos``."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from keelfs.server.local_cluster import load_state

pytestmark = [pytest.mark.slow, pytest.mark.process, pytest.mark.timeout(300)]

FAULTS = ("kill", "stop", "restart", "transfer", "reshard")


def kill_recorded(directory: Path) -> None:
    state = load_state(directory)
    for p in state.alive() if state is not None else []:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGKILL)


def keelfs(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keelfs.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_chaos_half_a_minute_every_fault_no_violation(tmp_path: Path) -> None:
    directory = (tmp_path / "cluster").resolve()
    try:
        out = keelfs("local-cluster", "up", "--dir", str(directory), "--http-port", "-1")
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
        assert "partition" in report["faults"]["not_available"]
        assert report["settled"]["ok"], report["settled"]
        assert report["checked"]["files"] > 0 and report["checked"]["absent"] > 0

        state = load_state(directory)
        assert state is not None and all(p.alive() for p in state.processes)
    finally:
        kill_recorded(directory)


def test_chaos_without_a_cluster_says_so(tmp_path: Path) -> None:
    out = keelfs("chaos", "--address", "127.0.0.1:1", "--minutes", "0.1")
    assert out.returncode == 2
    assert "no metadata node answers at 127.0.0.1:1" in out.stderr
    out = keelfs("chaos", "--cluster-dir", str(tmp_path), "--minutes", "0.1")
    assert out.returncode == 2 and "no local cluster" in out.stderr
    out = keelfs("chaos", "--faults", "kill,flood")
    assert out.returncode == 2 and "unknown fault 'flood'" in out.stderr
