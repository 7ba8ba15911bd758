"""``keelfs append|truncate|concat`` against a real cluster (3 co-hosted masters serving 2
shards, 3 chunk servers): what a person types, what comes back, and exit codes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from keelfs.cli.main import cli
from keelfs.server.metacluster import MetaCluster
from keelfs.testing.tiers import starts_processes

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
@starts_processes
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Any:
    c = MetaCluster(tmp_path_factory.mktemp("editcli"))
    with c:
        c.start_chunk_servers(3, "--no-fsync-on-close")
        yield c


def run(cluster: MetaCluster, *args: str, stdin: bytes | None = None) -> Result:
    address = cluster.nodes[1].client_address
    return CliRunner().invoke(cli, [*args, "--address", address], input=stdin)


def ok(cluster: MetaCluster, *args: str, stdin: bytes | None = None) -> str:
    r = run(cluster, *args, stdin=stdin)
    assert r.exit_code == 0, r.output
    return r.output


def test_append_truncate_concat(cluster: MetaCluster, tmp_path: Path) -> None:
    big = os.urandom(200_000)
    src = tmp_path / "big.bin"
    src.write_bytes(big)
    ok(cluster, "mkdir", "-p", "/ed")
    ok(cluster, "put", str(src), "/ed/log")
    out = json.loads(ok(cluster, "append", str(src), "/ed/log", "--json"))
    assert out == {"path": "/ed/log", "appended": len(big), "length": 2 * len(big)}
    assert "5 bytes appended" in ok(cluster, "append", "-", "/ed/log", stdin=b"tail\n")
    fs = cluster.client()
    assert fs.read_bytes("/ed/log") == big + big + b"tail\n"
    assert ok(cluster, "truncate", "/ed/log", "250000").strip() == "/ed/log: 250000 bytes"
    assert fs.read_bytes("/ed/log") == (big + big)[:250_000]
    r = run(cluster, "truncate", "/ed/log", "250001")
    assert r.exit_code == 1 and "only shortens" in r.output
    assert run(cluster, "truncate", "/ed/log", "-1").exit_code == 2
    r = run(cluster, "append", str(src), "/ed/missing")
    assert r.exit_code == 1 and r.output.strip() == "keelfs: /ed/missing: no such file or directory"
    ok(cluster, "put", str(src), "/ed/more")
    out = json.loads(ok(cluster, "concat", "/ed/log", "/ed/more", "--json"))
    assert out == {"path": "/ed/log", "length": 250_000 + len(big)}
    assert fs.read_bytes("/ed/log") == (big + big)[:250_000] + big
    r = run(cluster, "concat", "/ed/log", "/ed/more")
    assert r.exit_code == 1 and "/ed/more: no such file or directory" in r.output
    assert run(cluster, "concat", "/ed/log").exit_code == 2  # no source


def test_append_while_another_client_writes(cluster: MetaCluster, tmp_path: Path) -> None:
    src = tmp_path / "x"
    src.write_bytes(b"x")
    ok(cluster, "mkdir", "-p", "/ed2")
    fs = cluster.client()
    with fs.open("/ed2/busy", "wb") as f:
        f.write(b"0")
        r = run(cluster, "append", str(src), "/ed2/busy")
        assert r.exit_code == 1 and "being written by another client" in r.output


def test_concat_across_shards(cluster: MetaCluster, tmp_path: Path) -> None:
    """Files in blocks in directories of both shards: one transaction moves the sources'
    blocks to the target (the same blocks, read back intact) and removes the sources."""
    fs = cluster.client()
    m = fs.shard_map()
    home = "/xs0"
    away = next(
        f"/xs{i}"
        for i in range(1, 60)
        if m.shard_for_path(f"/xs{i}/s") != m.shard_for_path(f"{home}/t")
    )
    parts = [os.urandom(n) for n in (150_000, 70_000, 200_000)]
    paths = [f"{home}/t", f"{away}/s1", f"{away}/s2"]
    for path, part in zip(paths, parts, strict=True):
        fs.mkdir(path.rsplit("/", 1)[0], parents=True)
        with fs.open(path, "wb", block_size=64 * 1024) as f:
            f.write(part)
    ids = [b.block_id for p in paths for b in fs.stat(p).blocks]
    out = json.loads(ok(cluster, "concat", *paths, "--json"))
    assert out == {"path": paths[0], "length": sum(map(len, parts))}
    assert [b.block_id for b in fs.stat(paths[0]).blocks] == ids
    assert fs.read_bytes(paths[0]) == b"".join(parts)
    assert not fs.exists(paths[1]) and not fs.exists(paths[2])
