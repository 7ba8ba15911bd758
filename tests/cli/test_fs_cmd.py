"""The file commands of the CLI against a real cluster (3 co-hosted masters serving 2 shards,
3 chunk servers): what a person types, what comes back, and exit codes."""

from __future__ import annotations

import base64
import hashlib
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
    c = MetaCluster(tmp_path_factory.mktemp("fscli"))
    with c:
        c.start_chunk_servers(3, "--no-fsync-on-close")
        yield c


def run(cluster: MetaCluster, *args: str, node: int = 2) -> Result:
    # any master's address will do: the CLI finds the config servers from it
    return CliRunner().invoke(cli, [*args, "--address", cluster.nodes[node].client_address])


def ok(cluster: MetaCluster, *args: str) -> str:
    r = run(cluster, *args)
    assert r.exit_code == 0, r.output
    return r.output


def test_put_get_cat_stat_round_trip(cluster: MetaCluster, tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 17)
    src = tmp_path / "in.bin"
    src.write_bytes(data)
    ok(cluster, "mkdir", "-p", "/cli/a/b")
    out = ok(cluster, "put", str(src), "/cli/a/b/f.bin")
    assert str(len(data)) in out
    dst = tmp_path / "out.bin"
    ok(cluster, "get", "/cli/a/b/f.bin", str(dst))
    assert hashlib.md5(dst.read_bytes()).digest() == hashlib.md5(data).digest()
    st = json.loads(ok(cluster, "stat", "/cli/a/b/f.bin", "--json"))
    assert st["length"] == len(data) and st["kind"] == "file" and st["replication"] == 3
    small = tmp_path / "hello.txt"
    small.write_bytes(b"hello keelfs\n")
    ok(cluster, "put", str(small), "/cli/hello.txt")
    assert ok(cluster, "cat", "/cli/hello.txt") == "hello keelfs\n"
    cat = json.loads(ok(cluster, "cat", "/cli/hello.txt", "--json"))
    assert cat["length"] == 13 and base64.b64decode(cat["base64"]) == b"hello keelfs\n"
    r = run(cluster, "put", str(small), "/cli/hello.txt")  # exists: refused, one line
    assert r.exit_code == 1 and r.output.strip() == "keelfs: /cli/hello.txt: already exists"
    ok(cluster, "put", "-f", str(small), "/cli/hello.txt")


def test_ls_mv_du_setrep_rm(cluster: MetaCluster, tmp_path: Path) -> None:
    ok(cluster, "mkdir", "-p", "/tree/x/y")
    f = tmp_path / "f"
    f.write_bytes(b"z" * 1000)
    for name in ("/tree/one", "/tree/x/two", "/tree/x/y/three"):
        ok(cluster, "put", str(f), name)
    assert ok(cluster, "ls", "/tree").split() == ["one", "x/"]
    long = ok(cluster, "ls", "-l", "/tree")
    assert "-rw-r--r--" in long and "1000" in long and "drwxr-xr-x" in long
    rec = ok(cluster, "ls", "-R", "/tree")
    assert "/tree/x/y:" in rec and "three" in rec
    listed = [
        json.loads(line)["path"]
        for line in ok(cluster, "ls", "-R", "/tree", "--json").split("\n")
        if line
    ]
    assert sorted(listed) == ["/tree/one", "/tree/x", "/tree/x/two", "/tree/x/y", "/tree/x/y/three"]
    ok(cluster, "mv", "/tree/x", "/tree/moved")  # a directory tree, possibly across shards
    assert ok(cluster, "ls", "/tree").split() == ["moved/", "one"]
    du = json.loads(ok(cluster, "du", "/tree", "--json"))
    assert du["length"] == 3000 and du["file_count"] == 3
    rep = json.loads(ok(cluster, "setrep", "2", "/tree/one", "--json"))
    assert rep["replication"] == 2
    r = run(cluster, "rm", "/tree/moved")
    assert r.exit_code == 1 and "/tree/moved" in r.output and "not empty" in r.output
    ok(cluster, "rm", "-r", "/tree/moved")
    assert ok(cluster, "ls", "/tree").split() == ["one"]
    ok(cluster, "mkdir", "/tree/into")
    ok(cluster, "mv", "/tree/one", "/tree/into")  # into an existing directory, as mv does
    assert ok(cluster, "ls", "-R", "/tree").split("\n\n") == ["/tree:\ninto/", "/tree/into:\none\n"]


def test_errors_are_one_line_with_the_path(cluster: MetaCluster) -> None:
    r = run(cluster, "stat", "/no/such/file")
    assert r.exit_code == 1
    assert r.output.strip().splitlines() == ["keelfs: /no/such/file: no such file or directory"]
    r = run(cluster, "cat", "/no/such/file")
    assert r.exit_code == 1 and "no such file" in r.output
    r = run(cluster, "stat", "relative/name")
    assert r.exit_code == 1 and r.output.startswith("keelfs: relative/name: invalid path")
    r = run(cluster, "get", "/cli/hello.txt", "/no/such/local/dir/x")  # the local side
    assert r.exit_code == 1
    assert r.output.strip().splitlines() == [
        "keelfs: /no/such/local/dir: no such file or directory"
    ]
    usage = CliRunner().invoke(cli, ["setrep", "zero", "/x"])
    assert usage.exit_code == 2
    assert CliRunner().invoke(cli, ["mv", "/only-one"]).exit_code == 2
    assert CliRunner().invoke(cli, ["ls", "--no-such-flag"]).exit_code == 2
    unreachable = CliRunner().invoke(cli, ["ls", "/", "--address", "127.0.0.1:1"])
    assert unreachable.exit_code == 1
    assert unreachable.output.startswith("keelfs: cannot reach keelfs at 127.0.0.1:1 (")
    assert len(unreachable.output.strip().splitlines()) == 1
    # several addresses: the first that answers is used
    seeds = f"127.0.0.1:1,{cluster.nodes[1].client_address}"
    listed = CliRunner().invoke(cli, ["ls", "/cli", "--address", seeds])
    assert listed.exit_code == 0 and "hello.txt" in listed.output


def test_connect_from_any_master_address(cluster: MetaCluster) -> None:
    import keelfs

    with keelfs.connect(cluster.nodes[3].client_address) as fs:
        fs.write_bytes("/cli/connected", b"via a master")
        assert fs.read_bytes("/cli/connected") == b"via a master"
        assert set(fs._core.config_addresses) == set(cluster.config_addresses)


def test_chmod_chown_chgrp_and_acting_as_another_user(cluster: MetaCluster) -> None:
    # this process runs as the masters' OS user: a superuser; "ann" and "bob" are not
    ok(cluster, "mkdir", "-p", "/perm/ann/sub")
    ok(cluster, "chown", "-R", "ann:staff", "/perm/ann")
    ok(cluster, "chmod", "700", "/perm/ann", "--user", "ann")
    long = ok(cluster, "ls", "-l", "/perm")
    assert "drwx------" in long and "ann" in long and "staff" in long
    sub = json.loads(ok(cluster, "stat", "/perm/ann/sub", "--json"))
    assert (sub["owner"], sub["group"]) == ("ann", "staff")  # -R reached it
    denied = run(cluster, "ls", "/perm/ann", "--user", "bob")
    assert denied.exit_code == 1
    assert denied.output.strip() == "keelfs: /perm/ann: permission denied"
    r = run(cluster, "chown", "bob", "/perm/ann", "--user", "ann")  # only a superuser
    assert r.exit_code == 1 and "permission denied" in r.output
    r = run(cluster, "chgrp", "other", "/perm/ann", "--user", "ann")  # not in "other"
    assert r.exit_code == 1 and "permission denied" in r.output
    ok(cluster, "chgrp", "other", "/perm/ann")
    assert json.loads(ok(cluster, "stat", "/perm/ann", "--json"))["group"] == "other"
    assert run(cluster, "chmod", "9z", "/perm/ann").exit_code == 2
    assert "KEELFS_USER" not in os.environ  # --user changed nothing for what runs next


def test_setfacl_and_getfacl(cluster: MetaCluster) -> None:
    """HDFS's ``-setfacl`` / ``-getfacl``: the text ``getfacl`` prints (the base entries from
    the mode, ``#effective`` where the mask cuts), each action, ``ls -l``'s ``+``, and the
    refusals: a bad spec (usage, 2), a user who does not own it (1)."""
    ok(cluster, "mkdir", "-p", "/facl/d")
    ok(cluster, "chown", "ann:staff", "/facl/d")
    ok(cluster, "chmod", "750", "/facl/d")
    ok(cluster, "setfacl", "-m", "user:bob:rwx,default:user:bob:r-x", "/facl/d", "--user", "ann")
    ok(cluster, "chmod", "750", "/facl/d", "--user", "ann")  # the mask: r-x
    text = ok(cluster, "getfacl", "/facl/d")
    assert text.splitlines() == [
        "# file: /facl/d",
        "# owner: ann",
        "# group: staff",
        "user::rwx",
        "user:bob:rwx\t#effective:r-x",
        "group::r-x",
        "mask::r-x",
        "other::---",
        "default:user::rwx",
        "default:user:bob:r-x",
        "default:group::r-x",
        "default:mask::r-x",
        "default:other::---",
        "",  # a blank line after each path, as HDFS's
    ]
    assert "drwxr-x---+" in ok(cluster, "ls", "-l", "/facl")
    status = json.loads(ok(cluster, "getfacl", "/facl/d", "--json"))
    assert status["permission"] == "750" and status["entries"][0] == "user:bob:rwx"
    ok(cluster, "setfacl", "-x", "user:bob", "/facl/d", "--user", "ann")
    ok(cluster, "setfacl", "-k", "/facl/d", "--user", "ann")
    assert json.loads(ok(cluster, "getfacl", "/facl/d", "--json"))["entries"] == ["group::r-x"]
    ok(cluster, "setfacl", "--set", "user::rwx,group::r-x,other::--x", "/facl/d", "--user", "ann")
    ok(cluster, "setfacl", "-b", "/facl/d", "--user", "ann")
    assert json.loads(ok(cluster, "stat", "/facl/d", "--json"))["acl"] == []
    bad = run(cluster, "setfacl", "-m", "user:bob:rwz", "/facl/d")
    assert bad.exit_code == 2 and "Invalid permission" in bad.output
    assert run(cluster, "setfacl", "-b", "-k", "/facl/d").exit_code == 2
    denied = run(cluster, "setfacl", "-m", "user:bob:rwx", "/facl/d", "--user", "bob")
    assert denied.exit_code == 1 and "permission denied" in denied.output
