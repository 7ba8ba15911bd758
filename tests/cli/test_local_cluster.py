"""``keelfs local-cluster``: ``up`` leaves 3 config servers, 2 shards of 3 masters and 3 chunk
servers running after the command exits; ``status`` names a leader of config, shard-1 and
shard-2; a file round-trips through them; ``down`` leaves none of the recorded processes alive;
a second ``up`` restarts the same nodes on the same data. Every recorded pid is killed in the
end whatever happened."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from keelfs.client import Client
from keelfs.client.connect import local_cluster_record
from keelfs.server.local_cluster import STATE_FILE, load_state

pytestmark = [pytest.mark.process, pytest.mark.timeout(300)]


def keelfs(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keelfs.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def last_json(out: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert out.stdout.strip(), out.stderr
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def kill_recorded(directory: Path) -> None:
    """SIGKILL every process the state file names that is still that process."""
    try:
        state = load_state(directory)
    except Exception:
        return
    for p in state.alive() if state is not None else []:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGKILL)


def test_up_status_round_trip_down_and_up_again(tmp_path: Path) -> None:
    directory = (tmp_path / "cluster").resolve()
    try:
        out = keelfs("local-cluster", "up", "--dir", str(directory), "--json")
        assert out.returncode == 0, out.stdout + out.stderr
        st = last_json(out)
        state = load_state(directory)
        assert state is not None
        pids = {p.name: p.pid for p in state.processes}
        assert sorted(pids) == sorted(
            ["n1", "n2", "n3", "n11", "n12", "n13", "n21", "n22", "n23", "cs0", "cs1", "cs2"]
        )
        # the command has exited; the daemons it started have not
        assert all(p.alive() for p in state.processes)
        assert all(v["alive"] for v in st["processes"].values())

        out = keelfs("local-cluster", "status", "--dir", str(directory), "--json")
        assert out.returncode == 0, out.stdout + out.stderr
        st = last_json(out)
        assert st["groups"]["config"]["leader"] in (1, 2, 3)
        assert st["groups"]["shard-1"]["leader"] in (11, 12, 13)
        assert st["groups"]["shard-2"]["leader"] in (21, 22, 23)
        assert st["processes"]["n1"]["http"]

        with Client(state.config_addresses, deadline=30.0) as fs:
            for d in ("/a", "/b", "/c", "/d"):  # directories on both shards
                fs.mkdir(d)
            fs.write_bytes("/a/f", b"x" * 200_000)
            assert fs.stat("/a/f").replication == 3
            assert fs.read_bytes("/a/f") == b"x" * 200_000
            shards = {fs.shard_map().shard_for_directory(d) for d in ("/a", "/b", "/c", "/d")}
            assert shards <= {"shard-1", "shard-2"}

        # no address given, none in the environment: the CLI finds the cluster `up` started
        assert "KEELFS_ADDRESS" not in os.environ
        out = keelfs("ls", "/")
        assert out.returncode == 0, out.stdout + out.stderr
        assert {"a/", "b/", "c/", "d/"} <= set(out.stdout.split())
        out = keelfs("admin", "status", "--json")
        assert out.returncode == 0, out.stdout + out.stderr

        out = keelfs("local-cluster", "up", "--dir", str(directory))
        assert out.returncode == 1 and "is running" in out.stderr  # one cluster per --dir

        out = keelfs("local-cluster", "down", "--dir", str(directory))
        assert out.returncode == 0, out.stdout + out.stderr
        assert "stopped 12 processes" in out.stdout
        assert not any(p.alive() for p in state.processes)  # a zombie counts as gone
        assert not local_cluster_record().exists()  # nothing points at the stopped cluster

        out = keelfs("local-cluster", "status", "--dir", str(directory), "--json")
        assert out.returncode == 1
        assert not any(v["alive"] for v in last_json(out)["processes"].values())

        out = keelfs("local-cluster", "up", "--dir", str(directory), "--json")  # restart
        assert out.returncode == 0, out.stdout + out.stderr
        state = load_state(directory)
        assert state is not None
        with Client(state.config_addresses, deadline=30.0) as fs:
            assert fs.read_bytes("/a/f") == b"x" * 200_000
            assert {e.path for e in fs.ls("/")} >= {"/a", "/b", "/c", "/d"}

        out = keelfs("local-cluster", "down", "--dir", str(directory), "--wipe")
        assert out.returncode == 0, out.stdout + out.stderr
        assert not any(p.alive() for p in state.processes)
        assert not directory.exists()
    finally:
        kill_recorded(directory)


def test_down_and_status_without_a_cluster(tmp_path: Path) -> None:
    for command in ("down", "status"):
        out = keelfs("local-cluster", command, "--dir", str(tmp_path))
        assert out.returncode == 1
        assert "no local cluster" in out.stderr
    assert not (tmp_path / STATE_FILE).exists()
