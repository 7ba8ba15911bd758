"""``keelfs checksum``, ``keelfs get --verify``, ``keelfs touch`` and ``keelfs ls -l``/``-lu``
against a real cluster (3 co-hosted masters serving 2 shards, 3 chunk servers)."""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import google_crc32c
import pytest
from click.testing import CliRunner, Result

from keelfs.cli.main import cli
from keelfs.client import Client
from keelfs.datapath.file_checksum import FileChecksum
from keelfs.server.metacluster import MetaCluster
from keelfs.testing.tiers import starts_processes

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

MiB = 1 << 20


@pytest.fixture(scope="module")
@starts_processes
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Any:
    c = MetaCluster(tmp_path_factory.mktemp("sumcli"))
    with c:
        c.start_chunk_servers(3, "--no-fsync-on-close")
        yield c


def run(cluster: MetaCluster, *args: str) -> Result:
    return CliRunner().invoke(cli, [*args, "--address", cluster.nodes[1].client_address])


def ok(cluster: MetaCluster, *args: str) -> str:
    r = run(cluster, *args)
    assert r.exit_code == 0, r.output
    return r.output


def test_checksum_and_get_verify(cluster: MetaCluster, tmp_path: Path) -> None:
    data = os.urandom(3 * MiB + 17)
    src = tmp_path / "in.bin"
    src.write_bytes(data)
    ok(cluster, "mkdir", "-p", "/sum")
    ok(cluster, "put", str(src), "/sum/a.bin")
    ok(cluster, "put", str(src), "/sum/b.bin")
    line = ok(cluster, "checksum", "/sum/a.bin").strip()
    path, algorithm, hex_ = line.split("\t")
    assert path == "/sum/a.bin" and algorithm == "MD5-of-0MD5-of-65536CRC32C"  # one block
    assert re.fullmatch(r"[0-9a-f]{56}", hex_)
    as_json = json.loads(ok(cluster, "checksum", "/sum/b.bin", "--json"))
    assert as_json == {"path": "/sum/b.bin", "algorithm": algorithm, "bytes": hex_, "length": 28}
    crc = ok(cluster, "checksum", "--composite", "/sum/a.bin").split()
    assert crc == ["/sum/a.bin", "COMPOSITE-CRC32C", f"{google_crc32c.value(data):08x}"]
    # verified copies: in a block and inline
    small = tmp_path / "small"
    small.write_bytes(b"tiny file\n")
    ok(cluster, "put", str(small), "/sum/small")
    for remote in ("/sum/a.bin", "/sum/small"):
        dst = tmp_path / ("copy-" + remote.rsplit("/", 1)[1])
        out = json.loads(ok(cluster, "get", "--verify", remote, str(dst), "--json"))
        expected = json.loads(ok(cluster, "checksum", remote, "--json"))
        assert out["checksum"] == {k: v for k, v in expected.items() if k != "path"}
        assert dst.read_bytes() == (data if remote.endswith("bin") else b"tiny file\n")
    assert "checksum verified" in ok(cluster, "get", "--verify", "/sum/b.bin", str(tmp_path / "b"))
    r = run(cluster, "checksum", "/sum/missing")
    assert (
        r.exit_code == 1 and r.output.strip() == "keelfs: /sum/missing: no such file or directory"
    )
    r = run(cluster, "checksum", "/sum")
    assert r.exit_code == 1 and "is a directory" in r.output


def test_get_verify_mismatch_fails_and_removes_the_copy(
    cluster: MetaCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "in.bin"
    src.write_bytes(os.urandom(MiB))
    ok(cluster, "mkdir", "-p", "/sum")
    ok(cluster, "put", str(src), "/sum/mismatch.bin")
    real = Client.checksum

    def wrong(self: Client, path: str) -> FileChecksum:  # as if the copy went bad
        c = real(self, path)
        return FileChecksum(c.algorithm, c.bytes[:-1] + bytes([c.bytes[-1] ^ 1]))

    monkeypatch.setattr(Client, "checksum", wrong)
    dst = tmp_path / "out.bin"
    r = run(cluster, "get", "--verify", "/sum/mismatch.bin", str(dst))
    assert r.exit_code == 1
    assert r.output.startswith("keelfs: /sum/mismatch.bin: checksum mismatch (MD5-of-0MD5")
    assert f"{dst} removed" in r.output
    assert not dst.exists()


def _row(listing: str, name: str) -> list[str]:
    (line,) = [ln for ln in listing.splitlines() if ln.split() and ln.split()[-1] == name]
    return line.split()


def test_touch_creates_and_sets_times_and_ls_shows_them(cluster: MetaCluster) -> None:
    ok(cluster, "mkdir", "-p", "/t")
    out = json.loads(ok(cluster, "touch", "/t/new", "--json"))
    assert out["kind"] == "file" and out["length"] == 0
    now_ms = datetime.now(UTC).timestamp() * 1000
    assert abs(out["mtime"] - now_ms) < 60_000 and abs(out["atime"] - now_ms) < 60_000
    # an existing file keeps its content; -m / -a set one time each
    ok(cluster, "mkdir", "-p", "/t/dir")
    set_m = json.loads(ok(cluster, "touch", "-m", "2001-02-03T04:05:06Z", "/t/new", "--json"))
    assert set_m["mtime"] == int(datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC).timestamp() * 1000)
    assert set_m["atime"] == out["atime"]
    set_a = json.loads(ok(cluster, "touch", "--atime", "@1000000000", "/t/new", "--json"))
    assert (set_a["mtime"], set_a["atime"]) == (set_m["mtime"], 1_000_000_000_000)
    both = json.loads(ok(cluster, "touch", "-m", "2010-01-01", "-a", "0", "/t/dir", "--json"))
    assert both["kind"] == "dir" and both["atime"] == 0
    assert both["mtime"] == int(datetime(2010, 1, 1, tzinfo=UTC).timestamp() * 1000)
    # ls -l: mode, replication, owner, group, size, modification time, name (hdfs dfs -ls)
    long = ok(cluster, "ls", "-l", "/t")
    mode, rep, owner, group, size, day, minute, name = _row(long, "new")
    assert (mode, rep, size, day, minute, name) == (
        "-rw-r--r--", "3", "0", "2001-02-03", "04:05", "new",
    )  # fmt: skip
    assert owner and group
    d = _row(long, "dir/")
    assert (d[0], d[1], d[5], d[6]) == ("drwxr-xr-x", "-", "2010-01-01", "00:00")
    accessed = ok(cluster, "ls", "-l", "-u", "/t")
    assert _row(accessed, "new")[5:7] == ["2001-09-09", "01:46"]  # @1000000000
    assert _row(accessed, "dir/")[5:7] == ["1970-01-01", "00:00"]
    # --json stays machine-readable: one object per entry, times in ms
    entries = [json.loads(x) for x in ok(cluster, "ls", "-l", "/t", "--json").splitlines()]
    assert {e["path"]: e["mtime"] for e in entries} == {
        "/t/dir": both["mtime"],
        "/t/new": set_m["mtime"],
    }
    long_name = "n" * 150  # never cut, whatever the terminal's width
    ok(cluster, "touch", f"/t/{long_name}")
    assert _row(ok(cluster, "ls", "-l", "/t"), long_name)[4] == "0"
    ok(cluster, "touch", "/t/new")  # plain touch: both times now again
    again = json.loads(ok(cluster, "stat", "/t/new", "--json"))
    assert again["mtime"] > set_m["mtime"] and again["atime"] > set_a["atime"]


def test_touch_bad_input(cluster: MetaCluster) -> None:
    ok(cluster, "mkdir", "-p", "/t")  # its own: a test worker may run it without the test above
    for bad in ("yesterday", "-5", "2024-13-01"):
        r = run(cluster, "touch", "-m", bad, "/t/bad")
        assert r.exit_code == 2, r.output
        assert "Invalid value" in r.output
    r = run(cluster, "touch", "/no/such/dir/f")
    assert r.exit_code == 1 and "no such file or directory" in r.output
    r = run(cluster, "touch", "/t/denied", "--user", "bob")  # /t is root's, 755
    assert r.exit_code == 1 and "permission denied" in r.output
