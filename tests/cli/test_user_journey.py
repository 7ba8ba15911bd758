"""What a new user does after the README, end to end with the real commands: start a local
cluster, put a file and get it back, kill -9 the master leading the file's shard, and see both
``keelfs admin status`` and the dashboard's data name the new leader while the file still reads
back. Every process the cluster recorded is killed at the end, whatever happened."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import ssl
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import keelfs as keelfs_lib
from keelfs.server.layout import ADMIN_USER
from keelfs.server.local_cluster import load_state
from keelfs.server.metacluster import tls_by_default
from keelfs.testing.commands import keelfs_command as keelfs
from keelfs.testing.commands import kill_recorded

pytestmark = [pytest.mark.slow, pytest.mark.process, pytest.mark.timeout(300)]


def ok(*args: str) -> str:
    out = keelfs(*args)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_put_get_kill_the_leader_see_the_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = (tmp_path / "cluster").resolve()
    tls = ["--tls"] if tls_by_default() else []  # the suite's TLS tier
    try:
        ok("local-cluster", "up", *tls, "--dir", str(directory))
        state = load_state(directory)
        assert state is not None
        if state.tls_dir:  # every command (and the library) presents the admin's certificate
            monkeypatch.setenv("KEELFS_TLS_DIR", state.tls_dir)
            monkeypatch.setenv("KEELFS_USER", ADMIN_USER)
        address = state.config_addresses[0]
        http = next(p.http for p in state.processes if p.name == "n1")
        assert http
        data = os.urandom(3_000_000)
        src, dst = tmp_path / "in.bin", tmp_path / "out.bin"
        src.write_bytes(data)
        ok("mkdir", "-p", "/journey", "--address", address)
        ok("put", str(src), "/journey/in.bin", "--address", address)
        ok("get", "/journey/in.bin", str(dst), "--address", address)
        assert hashlib.md5(dst.read_bytes()).digest() == hashlib.md5(data).digest()

        info = json.loads(ok("stat", "/journey/in.bin", "--json", "--address", address))
        assert info["length"] == len(data)
        with keelfs_lib.connect(address) as fs:
            owner = fs.shard_map().shard_for_path("/journey/in.bin")
        status = json.loads(ok("admin", "status", "--json", "--address", address))
        old = status["groups"][owner]["leader"]
        victim = next(p for p in state.processes if p.node_id == old)
        os.kill(victim.pid, signal.SIGKILL)

        def new_leader() -> Any:
            st = json.loads(ok("admin", "status", "--json", "--address", address))
            leader = st["groups"][owner]["leader"]
            return leader if leader not in (None, old) else None

        deadline = time.monotonic() + 30
        leader = None
        while leader is None and time.monotonic() < deadline:
            leader = new_leader()
        assert leader is not None, f"{owner} got no new leader"
        # with TLS the HTTP side is HTTPS with the node's certificate (from loopback, no
        # credentials needed)
        scheme, context = "http", None
        if state.tls_dir:
            scheme = "https"
            context = ssl.create_default_context(cafile=str(Path(state.tls_dir) / "peer-ca.crt"))
        url = f"{scheme}://{http}/api/cluster"
        with urllib.request.urlopen(url, timeout=10, context=context) as r:
            seen = json.loads(r.read())
        (view,) = [g for g in seen["groups"] if g["id"] == owner]
        assert view["leader"] == leader
        (tmp_path / "again.bin").unlink(missing_ok=True)
        ok("get", "/journey/in.bin", str(tmp_path / "again.bin"), "--address", address)
        assert (tmp_path / "again.bin").read_bytes() == data
    finally:
        keelfs("local-cluster", "down", "--dir", str(directory))
        kill_recorded(directory)
