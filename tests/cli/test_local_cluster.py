"""``keelfs local-cluster``: ``up`` leaves 3 config servers, 2 shards of 3 masters and 3 chunk
servers running after the command exits; ``status`` names a leader of config, shard-1 and
shard-2; a file round-trips through them; ``stop NODE``, ``restart NODE`` and ``up`` after a
kill -9 start exactly the stopped processes again; ``down`` leaves none of the recorded processes
alive; a second ``up`` restarts the same nodes on the same data. With ``--netns`` (root) each
process runs in its own network namespace and ``down`` leaves none of them, nor a link, behind.
Every recorded pid is killed in the end whatever happened (and every namespace deleted)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from keelfs.client import Client
from keelfs.client.connect import local_cluster_record
from keelfs.runtime.netns import NetnsNetwork
from keelfs.runtime.processes import wait_until
from keelfs.server.local_cluster import (
    STATE_FILE,
    LocalClusterError,
    State,
    load_state,
    network_of,
    up,
)
from keelfs.testing.commands import keelfs_command as keelfs
from keelfs.testing.commands import kill_recorded
from keelfs.testing.environment import cannot_run

pytestmark = [pytest.mark.process, pytest.mark.timeout(300)]


def last_json(out: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert out.stdout.strip(), out.stderr
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.timeout(600)  # three starts of 12 processes, on a loaded machine
def test_up_status_round_trip_stop_restart_down_and_up_again(tmp_path: Path) -> None:
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
        assert out.returncode == 0 and "nothing to start" in out.stderr, out.stderr
        assert load_state(directory) == state  # one cluster per --dir: the same processes

        stop_restart_and_up_again(directory, state)
        state = load_state(directory)
        assert state is not None

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


def stop_restart_and_up_again(directory: Path, state: State) -> None:
    """``stop NODE``, ``restart NODE``, and ``up`` after a crash start exactly the named or
    stopped processes again, on the same data: the cluster serves the file written before."""
    d = ["--dir", str(directory)]
    pids = {p.name: p.pid for p in state.processes}
    out = keelfs("local-cluster", "stop", "n12", *d)
    assert out.returncode == 0 and "stopped n12" in out.stdout, out.stdout + out.stderr
    out = keelfs("local-cluster", "status", *d, "--json")
    assert out.returncode == 1  # a process is down
    assert not last_json(out)["processes"]["n12"]["alive"]
    out = keelfs("local-cluster", "stop", "n12", *d)
    assert out.returncode == 0 and "n12 was not running" in out.stdout, out.stderr
    out = keelfs("local-cluster", "stop", "n99", *d)
    assert out.returncode == 1 and "no process 'n99'" in out.stderr and "cs0" in out.stderr

    out = keelfs("local-cluster", "restart", "n12", *d)
    assert out.returncode == 0 and "restarted n12" in out.stdout, out.stdout + out.stderr
    out = keelfs("local-cluster", "restart", "n1", "--kill", *d)  # a config server, SIGKILLed
    assert out.returncode == 0 and "restarted n1" in out.stdout, out.stdout + out.stderr
    after = load_state(directory)
    assert after is not None and all(p.alive() for p in after.processes)
    moved = {p.name for p in after.processes if p.pid != pids[p.name]}
    assert moved == {"n1", "n12"}

    # kill -9 a shard master and a chunk server, as a crash would: `up` starts those two only
    by_name = {p.name: p for p in after.processes}
    for name in ("n21", "cs1"):
        os.kill(by_name[name].pid, signal.SIGKILL)
    wait_until(lambda: not any(by_name[n].alive() for n in ("n21", "cs1")) or None, 10, "dead")
    out = keelfs("local-cluster", "up", *d, "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "restarting 2 stopped processes: n21 cs1" in out.stderr
    again = load_state(directory)
    assert again is not None and all(p.alive() for p in again.processes)
    assert {p.name for p in again.processes if p.pid != by_name[p.name].pid} == {"n21", "cs1"}
    with Client(again.config_addresses, deadline=30.0) as fs:
        assert fs.read_bytes("/a/f") == b"x" * 200_000
    out = keelfs("ls", "/")  # the record the CLI finds the cluster by follows n1's new pid
    assert out.returncode == 0, out.stdout + out.stderr


def test_down_and_status_without_a_cluster(tmp_path: Path) -> None:
    for command in ("down", "status"):
        out = keelfs("local-cluster", command, "--dir", str(tmp_path))
        assert out.returncode == 1
        assert "no local cluster" in out.stderr
    assert not (tmp_path / STATE_FILE).exists()


def namespaces_with(tag: str) -> list[str]:
    """Every network namespace whose name carries ``tag``."""
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return sorted(line.split()[0] for line in names.splitlines() if tag in line)


def links_with(tag: str) -> list[str]:
    """Every link of this (the host's) namespace whose name carries ``tag``."""
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    names = (line.split(":")[1].strip().split("@")[0] for line in links.splitlines())
    return sorted(name for name in names if tag in name)


def remove_network(directory: Path) -> None:
    """Kill what the state file names, then delete its namespaces (the test's own cleanup)."""
    kill_recorded(directory)
    with contextlib.suppress(Exception):
        state = load_state(directory)
        net = network_of(state) if state is not None else None
        if net is not None:
            net.remove_all()


def test_netns_up_put_get_partitionable_and_down_removes_every_namespace(tmp_path: Path) -> None:
    """``up --netns``: each process in its own namespace on a bridge, reached from here through
    the gateway link; ``put``/``get`` through the CLI; after a crash (every process killed, as
    if ``up`` died) ``down`` removes every namespace and link, and again finds nothing to do."""
    ok, why = NetnsNetwork.available(gateway=True)
    if not ok:
        cannot_run(f"needs network namespaces: {why}")
    directory = (tmp_path / "cluster").resolve()
    try:
        out = keelfs("local-cluster", "up", "--netns", "--dir", str(directory), "--json")
        assert out.returncode == 0, out.stdout + out.stderr
        state = load_state(directory)
        assert state is not None and state.network is not None
        tag = state.network.tag
        assert namespaces_with(tag) == sorted(state.network.namespaces)
        assert len(state.network.namespaces) == 1 + 12  # the hub and one per process
        assert links_with(tag) == [state.network.gateway_link]
        subnet = state.network.subnet
        assert all(p.address.startswith(f"{subnet}.") for p in state.processes)
        assert all(p.command[:3] == ["ip", "netns", "exec"] for p in state.processes)

        source = tmp_path / "in.bin"
        source.write_bytes(os.urandom(300_000))
        address = state.config_addresses[0]
        out = keelfs("put", str(source), "/f.bin", "--address", address)
        assert out.returncode == 0, out.stdout + out.stderr
        out = keelfs("get", "/f.bin", str(tmp_path / "out.bin"), "--address", address)
        assert out.returncode == 0, out.stdout + out.stderr
        assert (tmp_path / "out.bin").read_bytes() == source.read_bytes()

        # one process killed: `up` starts it again in its namespace, the network untouched
        cs1 = next(p for p in state.processes if p.name == "cs1")
        others = {p.name: p.pid for p in state.processes if p.name != "cs1"}
        os.kill(cs1.pid, signal.SIGKILL)
        wait_until(lambda: not cs1.alive() or None, 10, "cs1 did not die")
        out = keelfs("local-cluster", "up", "--dir", str(directory), "--json")
        assert out.returncode == 0, out.stdout + out.stderr
        again = load_state(directory)
        assert again is not None and all(p.alive() for p in again.processes)
        assert {p.name: p.pid for p in again.processes if p.name != "cs1"} == others
        assert namespaces_with(tag) == sorted(state.network.namespaces)

        kill_recorded(directory)  # as if `up` and everything it started had crashed
        assert namespaces_with(tag) and links_with(tag)
        out = keelfs("local-cluster", "down", "--dir", str(directory))
        assert out.returncode == 0, out.stdout + out.stderr
        assert namespaces_with(tag) == [] and links_with(tag) == []
        out = keelfs("local-cluster", "down", "--dir", str(directory))
        assert out.returncode == 0 and "stopped 0 processes" in out.stdout, out.stderr
    finally:
        remove_network(directory)


def test_netns_needs_root_and_a_cluster_made_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(LocalClusterError, match="--netns needs root"):
        up(tmp_path / "c", netns=True)
    assert not (tmp_path / "c" / STATE_FILE).exists()  # nothing recorded, nothing started
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with pytest.raises(LocalClusterError, match="no dashboard with --netns"):
        up(tmp_path / "c", netns=True, http_port=8080)
    assert not (tmp_path / "c").exists()
    State(str(tmp_path)).save()  # a cluster laid out on 127.0.0.1
    with pytest.raises(LocalClusterError, match="was created without --netns"):
        up(tmp_path, netns=True)
