"""The rolling restart of docs/operations.md, with real processes, under a steady write load:
every metadata node in turn hands the leadership of the groups it leads away
(``keelfs admin step-down``), stops gracefully (SIGTERM), starts again from its data directory
and catches up before the next one goes. No write may fail within the client's retry window
(its deadline, :data:`WINDOW_S`), and every acknowledged file reads back with its MD5.

The same procedure is the upgrade across an on-disk format change: the mixed-version test
starts every master on :data:`OLD_RELEASE` (the last commit whose data directories carry no
``FORMAT``: format 0), then replaces them one by one with this tree, which upgrades each
directory to format 1 at its start, while old and new masters serve together."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from keelfs.cli.main import cli
from keelfs.server.layout import ADMIN_USER
from keelfs.server.metacluster import MetaCluster
from keelfs.storage.format import DATA_FORMAT, FORMAT_FILE, read_data_format

pytestmark = [pytest.mark.timeout(420), pytest.mark.process]

WINDOW_S = 10.0
"""The writers' client deadline: a verb's whole time, retries included."""
GROUPS = ("config", "shard-1")
OLD_RELEASE = "ebc6f60"
"""A commit from before data directories carried their format version (format 0)."""
REPO = Path(__file__).resolve().parents[2]


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


def roll(cluster: MetaCluster, writers: Writers, on_restart: Any = None) -> None:
    """The procedure: each node in turn steps down, stops gracefully, starts again (after
    ``on_restart(node)``) and catches up, while the writers go on."""
    cluster.wait_for(lambda: writers.count() >= 20, 60, "writers did not start")
    for node in sorted(cluster.nodes):
        via = next(i for i in sorted(cluster.nodes) if i != node)
        for group in GROUPS:
            if cluster.leader(group) == node:
                moved = admin(cluster, via, "step-down", group)
                assert moved["leader"] != node
        before = writers.count()
        assert cluster.terminate(node) == 0  # a graceful stop
        if on_restart is not None:
            on_restart(node)
        cluster.restart(node)
        cluster.wait_for(lambda n=node: caught_up(cluster, n), 60, f"{node} catching up")
        cluster.wait_for(lambda b=before: writers.count() >= b + 10, 60, "writes did not go on")


def test_rolling_restart_under_writes(tmp_path: Path) -> None:
    cluster = MetaCluster(tmp_path, shards=("shard-1",))
    try:
        cluster.start()
        cluster.start_chunk_servers(3, "--no-fsync-on-close")
        with Writers(cluster) as writers:
            roll(cluster, writers)
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


class MixedCluster(MetaCluster):
    """Masters in ``old`` run the tree at ``old_tree`` (its keelfs first on ``sys.path``)."""

    def __init__(self, root: Path, old_tree: Path, **kwargs: Any) -> None:
        super().__init__(root, **kwargs)
        self.old_tree = old_tree
        self.old: set[int] = set(self.nodes)

    def _command(self, node_id: int, extra: list[str]) -> list[str]:
        cmd = super()._command(node_id, extra)
        if node_id not in self.old:
            return cmd
        assert cmd[1:3] == ["-m", "keelfs.cli.main"], cmd
        boot = (
            f"import sys; sys.path.insert(0, {str(self.old_tree)!r}); "
            "from keelfs.cli.main import main; main()"
        )
        return [cmd[0], "-c", boot, *cmd[3:]]


def old_release(into: Path) -> Path:
    """:data:`OLD_RELEASE`'s tree, extracted from this repository (skip the test without it)."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs git and this repository's history")
    known = subprocess.run(
        ["git", "-C", str(REPO), "cat-file", "-t", OLD_RELEASE], capture_output=True, text=True
    )
    if known.stdout.strip() != "commit":
        pytest.skip(f"commit {OLD_RELEASE} is not in this clone (shallow?)")
    into.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", OLD_RELEASE, "keelfs"],
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def test_upgrade_across_a_format_change_under_writes(tmp_path: Path) -> None:
    old_tree = old_release(tmp_path / "old-release")
    cluster = MixedCluster(tmp_path / "c", old_tree, shards=("shard-1",))
    try:
        cluster.start()
        for node in cluster.nodes:
            # the old release writes no FORMAT (so these are old processes): format 0
            assert read_data_format(cluster.nodes[node].data_dir) is None
        cluster.start_chunk_servers(3, "--no-fsync-on-close")
        upgraded: list[int] = []

        def upgrade(node: int) -> None:
            cluster.old.discard(node)
            upgraded.append(node)

        with Writers(cluster) as writers:
            roll(cluster, writers, on_restart=upgrade)
        assert upgraded == sorted(cluster.nodes)
        for node in cluster.nodes:
            assert read_data_format(cluster.nodes[node].data_dir) == DATA_FORMAT
            assert (cluster.nodes[node].data_dir / FORMAT_FILE).exists()
        assert not writers.failed, writers.failed[:5]
        fs = cluster.client()
        for path, digest in sorted(writers.acked.items()):
            assert hashlib.md5(fs.read_bytes(path)).hexdigest() == digest, path
        print(f"upgrade: {len(writers.acked)} writes acknowledged, 0 failed")
    except BaseException:
        for node_id in sorted(cluster.nodes):
            print(f"----- node {node_id} -----\n{cluster.log_tail(node_id, 30)}")
        raise
    finally:
        cluster.stop_all()
