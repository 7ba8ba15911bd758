"""The rolling restart of docs/operations.md, with real processes, under a steady write load:
every metadata node in turn hands the leadership of the groups it leads away
(``keelfs admin step-down``), stops gracefully (SIGTERM), starts again from its data directory
and catches up before the next one goes. No write may fail within the client's retry window
(its deadline, :data:`WINDOW_S`), and every acknowledged file reads back with its MD5."""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from keelfs.cli.main import cli
from keelfs.server.layout import ADMIN_USER
from keelfs.server.metacluster import MetaCluster

pytestmark = [pytest.mark.timeout(420), pytest.mark.process]

WINDOW_S = 10.0
"""The writers' client deadline: a verb's whole time, retries included."""
GROUPS = ("config", "shard-1")


class Writers:
    """``n`` threads writing files (inline and with blocks) until stopped; what each write
    ended with."""

    def __init__(self, cluster: MetaCluster, n: int = 2) -> None:
        self.cluster = cluster
        self.acked: dict[str, str] = {}
        self.failed: list[tuple[str, str]] = []
        self.slowest = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(n)
        ]

    def __enter__(self) -> Writers:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=WINDOW_S * 3)

    def _run(self, w: int) -> None:
        fs = self.cluster.client(deadline=WINDOW_S)
        rng = random.Random(w)
        fs.mkdir(f"/load{w}", parents=True)
        i = 0
        while not self._stop.is_set():
            path = f"/load{w}/f{i}"
            data = rng.randbytes(rng.choice([100, 5_000, 90_000]))
            t0 = time.monotonic()
            try:
                fs.write_bytes(path, data, replication=2)
            except Exception as exc:  # noqa: BLE001  # every failure is the test's finding
                with self._lock:
                    self.failed.append((path, f"{type(exc).__name__}: {exc}"))
            else:
                with self._lock:
                    self.acked[path] = hashlib.md5(data).hexdigest()
            with self._lock:
                self.slowest = max(self.slowest, time.monotonic() - t0)
            i += 1

    def count(self) -> int:
        with self._lock:
            return len(self.acked) + len(self.failed)


def admin(cluster: MetaCluster, via: int, *args: str) -> dict[str, object]:
    extra = ["--address", cluster.nodes[via].client_address, "--json"]
    if cluster.tls_dir is not None:
        extra += ["--tls-dir", str(cluster.tls_dir), "--user", ADMIN_USER]
    r = CliRunner().invoke(cli, ["admin", *args, *extra])
    assert r.exit_code == 0, r.output
    out: dict[str, object] = json.loads(r.output)
    return out


def caught_up(cluster: MetaCluster, node: int) -> bool:
    """Whether ``node`` has applied, in every group, what the group's leader had committed."""
    for group in GROUPS:
        statuses = cluster.group_statuses(group)
        lead = cluster.leader(group)
        if node not in statuses or lead not in statuses:
            return False
        if statuses[node].applied < statuses[lead].commit or statuses[node].leader != lead:
            return False
    return True


def test_rolling_restart_under_writes(tmp_path: Path) -> None:
    cluster = MetaCluster(tmp_path, shards=("shard-1",))
    try:
        cluster.start()
        cluster.start_chunk_servers(3, "--no-fsync-on-close")
        with Writers(cluster) as writers:
            cluster.wait_for(lambda: writers.count() >= 20, 60, "writers did not start")
            for node in sorted(cluster.nodes):
                via = next(i for i in sorted(cluster.nodes) if i != node)
                for group in GROUPS:
                    if cluster.leader(group) == node:
                        moved = admin(cluster, via, "step-down", group)
                        assert moved["leader"] != node
                before = writers.count()
                assert cluster.terminate(node) == 0  # a graceful stop
                cluster.restart(node)
                cluster.wait_for(lambda n=node: caught_up(cluster, n), 60, f"{node} catching up")
                cluster.wait_for(
                    lambda b=before: writers.count() >= b + 10, 60, "writes did not go on"
                )
        assert not writers.failed, writers.failed[:5]
        assert len(writers.acked) >= 60
        fs = cluster.client()
        for path, digest in sorted(writers.acked.items()):
            assert hashlib.md5(fs.read_bytes(path)).hexdigest() == digest, path
        print(
            f"rolling restart: {len(writers.acked)} writes acknowledged, 0 failed, "
            f"slowest {writers.slowest:.2f} s"
        )
    except BaseException:
        for node_id in sorted(cluster.nodes):
            print(f"----- node {node_id} -----\n{cluster.log_tail(node_id, 30)}")
        raise
    finally:
        cluster.stop_all()
