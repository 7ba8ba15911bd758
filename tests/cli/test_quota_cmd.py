"""Directory quotas against a real cluster (3 co-hosted masters serving 2 shards, 3 chunk
servers): ``keelfs quota set|show|clear``, ``du`` showing them, a name quota whose subtree
spans both shards enforced through the shards' reports, a space quota refusing a block, a
rename into the directory refused, and setting quotas kept for superusers.

Simple mode (no TLS): this process runs as the masters' OS user (the superuser); "alice" is a
name the client sends."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from keelfs.cli.main import cli
from keelfs.client import Client, _ops
from keelfs.errors import InvalidArgument, PermissionDenied, QuotaExceeded
from keelfs.meta import paths
from keelfs.runtime.processes import wait_until
from keelfs.server.metacluster import MetaCluster
from keelfs.testing.tiers import starts_processes

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
@starts_processes
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MetaCluster]:
    c = MetaCluster(tmp_path_factory.mktemp("quota"), tls=False)
    with c:
        c.start_chunk_servers(3, "--no-fsync-on-close")
        yield c


def run(c: MetaCluster, *args: str) -> Result:
    return CliRunner().invoke(cli, [*args, "--address", c.nodes[1].client_address])


def ok(c: MetaCluster, *args: str) -> str:
    r = run(c, *args)
    assert r.exit_code == 0, r.output
    return r.output


def wait_for(what: str, condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Until ``condition()`` holds once (then done: looked at again, a condition read in
    several steps may no longer hold, and the wait would fail what it saw succeed)."""
    wait_until(condition, timeout, f"timed out waiting until {what}")


def two_shard_dirs(fs: Client, top: str) -> tuple[str, str]:
    """Two new directories under ``top`` whose children live on different shards."""
    m = fs.shard_map()
    found: dict[str, str] = {}
    for i in range(1000):
        d = paths.join(top, f"d{i}")
        found.setdefault(m.shard_for_directory(d), d)
        if len(found) == 2:
            break
    a, b = found.values()
    fs.mkdir(a)
    fs.mkdir(b)
    return a, b


def shard_view(fs: Client, path: str, shard: str) -> Any:
    return json.loads(fs._run(_ops.get_quota(path, shard), None).json)


def names_seen(view: Any) -> int:
    """The names a shard counts against a quota: its own and the others' last reports."""
    return int(view["here"][0] + sum(u[0] for u in view["reports"].values()))


def test_set_show_clear_and_du(cluster: MetaCluster) -> None:
    fs = cluster.admin()
    fs.mkdir("/qa/sub", parents=True)
    fs.write_bytes("/qa/sub/f", b"x" * 100)
    out = json.loads(
        ok(cluster, "quota", "set", "/qa", "--names", "10", "--space", "5000", "--json")
    )
    assert out["names_used"] == 3 and out["names_remaining"] == 7
    assert out["space_used"] == 300 and out["space_remaining"] == 4700  # 100 bytes x 3
    line = ok(cluster, "quota", "show", "/qa")
    assert "names: 3 of 10 used, 7 remaining" in line and "space: 300 of 5000 used" in line
    du = json.loads(ok(cluster, "du", "/qa", "--json"))
    assert du["quota"]["names_limit"] == 10 and du["file_count"] == 1
    assert "quota of /qa" in ok(cluster, "du", "/qa")
    r = run(cluster, "mv", "/qa", "/qb")  # the quota is kept by path: clear it first
    assert r.exit_code == 1 and "has a quota" in r.output
    ok(cluster, "quota", "clear", "/qa")
    assert "no quota" in ok(cluster, "quota", "show", "/qa")
    assert "quota" not in json.loads(ok(cluster, "du", "/qa", "--json"))
    ok(cluster, "mv", "/qa", "/qb")
    r = run(cluster, "quota", "set", "/qb")
    assert r.exit_code == 2  # neither --names nor --space
    r = run(cluster, "quota", "set", "/no/such/dir", "--names", "3")
    assert r.exit_code == 1 and "no such file" in r.output


def test_setting_quotas_is_for_superusers(cluster: MetaCluster) -> None:
    fs, alice = cluster.admin(), cluster.client(user="alice")
    fs.mkdir("/qs", parents=True)
    with pytest.raises(PermissionDenied, match="superusers"):
        alice.set_quota("/qs", names=5)
    with pytest.raises(InvalidArgument):
        fs.set_quota("/", names=5)
    fs.write_bytes("/qs/file", b"")
    with pytest.raises(Exception, match="not a directory"):
        fs.set_quota("/qs/file", names=5)
    assert alice.quota("/qs").names_limit is None  # anyone may look


def test_a_name_quota_over_two_shards_holds_once_reports_arrive(cluster: MetaCluster) -> None:
    fs = cluster.admin()
    fs.mkdir("/qn")
    a, b = two_shard_dirs(fs, "/qn")
    m = fs.shard_map()
    sa, sb = m.shard_for_directory(a), m.shard_for_directory(b)
    fs.set_quota("/qn", names=8)  # /qn, a, b and 5 more
    made = 0
    with pytest.raises(QuotaExceeded) as info:
        for i in range(20):
            fs.write_bytes(f"{a}/f{i}", b"")
            made += 1
    # the shard of a's entries counts them exactly (with b's side as last reported: none)
    assert made == 5 and info.value.details["path"] == "/qn"
    assert info.value.details["limit"] == 8 and info.value.details["quota"] == "names"
    assert fs.quota("/qn").names_used == 8
    wait_for(  # the whole of the other's count (6: a report may come before its last name)
        "the shard of b's entries has the other's report",
        lambda: names_seen(shard_view(fs, "/qn", sb)) >= 8,
    )
    with pytest.raises(QuotaExceeded):
        fs.write_bytes(f"{b}/g", b"")
    with pytest.raises(QuotaExceeded):
        fs.mkdir(f"{b}/dir")
    fs.delete(f"{a}/f0")
    fs.write_bytes(f"{a}/again", b"")  # room again on a's shard at once
    assert fs.quota("/qn").names_used == 8
    assert shard_view(fs, "/qn", sa)["names"] == 8 == shard_view(fs, "/qn", sb)["names"]


def test_a_rename_into_a_quota_directory_is_refused_past_the_quota(cluster: MetaCluster) -> None:
    fs = cluster.admin()
    fs.mkdir("/qr/in", parents=True)
    fs.mkdir("/outside/tree/x", parents=True)
    fs.set_quota("/qr", names=3)  # /qr, /qr/in and 1 more
    with pytest.raises(QuotaExceeded):
        fs.rename("/outside/tree", "/qr/in/tree")  # 2 names: nothing moves
    assert fs.exists("/outside/tree/x") and not fs.exists("/qr/in/tree")
    fs.delete("/outside/tree/x")
    fs.rename("/outside/tree", "/qr/in/tree")
    assert fs.quota("/qr").names_used == 3


def test_a_space_quota_refuses_a_whole_block(cluster: MetaCluster, tmp_path: Path) -> None:
    fs = cluster.admin()
    fs.mkdir("/qd")
    fs.set_quota("/qd", space=1_000_000)
    fs.write_bytes("/qd/small", b"s" * 1000)  # inline: 1000 x 3
    big = tmp_path / "big"
    big.write_bytes(b"b" * 200_000)  # a block: 64 MiB x 3 reserved, past the quota
    r = run(cluster, "put", str(big), "/qd/big")
    assert r.exit_code == 1 and "space quota of /qd is exceeded" in r.output, r.output
    q = fs.quota("/qd")
    assert q.space_used <= 1_000_000 and q.space_used >= 3000
