"""``keelfs admin backup`` and ``keelfs admin restore`` with real processes: a cluster of two
shards is backed up, written to some more, destroyed; a new cluster is built from the backup
with the old chunk servers' data, and every file of the backup reads back with its MD5, while
what was written after the backup is gone. Plus the offline checks (a damaged backup, a
non-empty data directory) and the config state's id counter moved past the old cluster's."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from keelfs.cli.main import cli
from keelfs.errors import NotFound
from keelfs.meta.shardmap import ConfigStateMachine, advance_tx_ids
from keelfs.server.backup import ID_GAP, MANIFEST, TERM_GAP, BackupError, read_manifest
from keelfs.server.layout import ADMIN_USER
from keelfs.server.metacluster import MetaCluster

pytestmark = [pytest.mark.timeout(300)]


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def admin(cluster: MetaCluster | None, *args: str) -> Result:
    extra: list[str] = []
    if cluster is not None:
        extra = ["--address", cluster.nodes[1].client_address]
        if cluster.tls_dir is not None:
            extra += ["--tls-dir", str(cluster.tls_dir), "--user", ADMIN_USER]
    return CliRunner().invoke(cli, ["admin", *args, *extra, "--json"])


def write_files(cluster: MetaCluster, prefix: str, count: int, seed: int) -> dict[str, str]:
    """``count`` files under several top directories (so on both shards), inline and with
    blocks; path -> MD5."""
    rng = random.Random(seed)
    fs = cluster.client()
    out = {}
    for i in range(count):
        directory = f"/{prefix}{i % 6}"
        fs.mkdir(directory, parents=True)
        size = rng.choice([0, 1000, 70_000, 300_000])
        data = rng.randbytes(size)
        path = f"{directory}/f{i}"
        fs.write_bytes(path, data, replication=2, block_size=128 * 1024)
        out[path] = md5(data)
    return out


@pytest.mark.process
def test_backup_then_restore_into_a_new_cluster(tmp_path: Path) -> None:
    old = MetaCluster(tmp_path / "old")
    new = MetaCluster(tmp_path / "new", tls=old.tls_dir is not None)
    try:
        old.start()
        chunk = old.start_chunk_servers(3, "--no-fsync-on-close")
        backed_up = write_files(old, "d", 24, seed=1)
        shards = {s: old.entry_paths(1, s) for s in ("shard-1", "shard-2")}
        assert all(any(p in paths for p in backed_up) for paths in shards.values()), (
            "the files must span both shards"
        )
        dest = tmp_path / "backup"
        r = admin(old, "backup", str(dest))
        assert r.exit_code == 0, r.output
        taken = json.loads(r.output)
        assert set(taken["groups"]) == {"config", "shard-1", "shard-2"}
        manifest = read_manifest(dest)
        assert all(g.index > 0 and g.size > 0 for g in manifest.groups.values())
        assert oct((dest / MANIFEST).stat().st_mode & 0o777) == "0o600"

        later = write_files(old, "after", 6, seed=2)
        data_dirs = tuple(chunk.data_dir(i) for i in range(3))
        old.stop_all()  # the old cluster is gone; its chunk servers' data is kept

        for node_id in sorted(new.nodes):
            r = admin(
                None,
                "restore",
                str(dest),
                "--data",
                str(new.nodes[node_id].data_dir),
                "--id",
                str(node_id),
                "--peers",
                new._peers(node_id),
            )
            assert r.exit_code == 0, r.output
            assert json.loads(r.output)["groups"] == ["config", "shard-1", "shard-2"]
        new.start(setup=False)
        for group in ("config", "shard-1", "shard-2"):
            new.leader(group, timeout=30)
        new.start_chunk_servers(3, "--no-fsync-on-close", data_from=data_dirs)

        fs = new.client()
        for path, digest in sorted(backed_up.items()):
            assert md5(fs.read_bytes(path)) == digest, path
        for path in later:
            with pytest.raises(NotFound):
                fs.stat(path)
        status = new.status(new.leader("shard-1")).groups["shard-1"]
        assert status.term > manifest.groups["shard-1"].term + TERM_GAP - 1
        # the restored cluster writes and reads on the old chunk servers too
        more = write_files(new, "new", 6, seed=3)
        for path, digest in more.items():
            assert md5(fs.read_bytes(path)) == digest
    except BaseException:
        for c in (old, new):
            for node_id in sorted(c.nodes):
                print(f"----- {c.root.name} node {node_id} -----\n{c.log_tail(node_id, 30)}")
        raise
    finally:
        new.stop_all()
        old.stop_all()


def test_restore_refuses_a_damaged_backup_and_a_used_directory(tmp_path: Path) -> None:
    src = tmp_path / "b"
    src.mkdir()
    image = src / "g-config.image"
    image.write_bytes(b"x" * 10)
    manifest: dict[str, Any] = {
        "format": 1,
        "created": "2026-01-01T00:00:00+00:00",
        "map_version": 1,
        "shards": [],
        "groups": {
            "config": {
                "group": "config",
                "file": image.name,
                "index": 5,
                "term": 2,
                "voters": [1],
                "learners": [],
                "size": 10,
                "sha256": hashlib.sha256(b"y" * 10).hexdigest(),
            }
        },
    }
    (src / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BackupError, match="damaged"):
        read_manifest(src)
    r = admin(
        None, "restore", str(src), "--data", str(tmp_path / "d"), "--id", "1", "--peers", "1=a:1"
    )
    assert r.exit_code == 2 and "damaged" in r.output
    (src / MANIFEST).unlink()
    with pytest.raises(BackupError, match="not a"):
        read_manifest(src)
    used = tmp_path / "used"
    used.mkdir()
    (used / "x").write_text("")
    (src / MANIFEST).write_text(json.dumps(manifest))
    image.write_bytes(b"y" * 10)
    r = admin(None, "restore", str(src), "--data", str(used), "--id", "1", "--peers", "1=a:1")
    assert r.exit_code == 2 and "not empty" in r.output
    r = admin(
        None, "restore", str(src), "--data", str(tmp_path / "e"), "--id", "2", "--peers", "1=a:1"
    )
    assert r.exit_code == 2 and "not among the peers" in r.output


def test_the_restored_id_counter_is_past_the_old_clusters() -> None:
    """Both with no id issued yet (the key absent) and with some issued (the key present)."""

    def records(csm: ConfigStateMachine) -> list[tuple[bytes, bytes]]:
        return list(csm._store.frozen_scan(b"\x01", b"\xff"))

    fresh = ConfigStateMachine(None)
    assert fresh.next_tx_id() == 1
    restored = ConfigStateMachine(None)
    restored._store.write(dict(advance_tx_ids(iter(records(fresh)), ID_GAP)))
    assert restored.next_tx_id() == 1 + ID_GAP
    twice = ConfigStateMachine(None)
    again = list(advance_tx_ids(iter(records(restored)), 7))
    assert [k for k, _ in again] == sorted(k for k, _ in again)
    twice._store.write(dict(again))
    assert twice.next_tx_id() == 1 + ID_GAP + 7
