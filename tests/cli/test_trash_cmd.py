"""The trash against a real cluster (3 co-hosted masters serving 2 shards, 3 chunk servers) with
a short trash interval: ``keelfs rm`` moves to ``/.Trash/<user>/Current``, ``rm --skip-trash``
deletes, ``keelfs expunge`` empties (the blocks go too), the masters empty it every interval,
and one user's trash is closed to others.

Simple mode (no TLS): users "alice" and "bob" are names the client sends; this process runs
as the OS user of the masters, so a client naming no other user is the superuser.
"""

from __future__ import annotations

import asyncio
import getpass
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from keelfs.cli.main import cli
from keelfs.client import AsyncClient, Client
from keelfs.client.identity import USER_ENV
from keelfs.errors import NotFound, PermissionDenied, QuotaExceeded
from keelfs.meta import paths
from keelfs.runtime.processes import wait_until
from keelfs.server.chunkservers import LocalChunkServers
from keelfs.server.metacluster import MetaCluster
from keelfs.testing.tiers import starts_processes

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

INTERVAL_S = 10.0
"""Short, but long enough that what a test just put in the trash is still there when it looks
(the masters delete it one to two intervals later)."""


@pytest.fixture(scope="module")
@starts_processes
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[MetaCluster, LocalChunkServers]]:
    c = MetaCluster(
        tmp_path_factory.mktemp("trash"),
        node_args=("--trash-interval", str(INTERVAL_S / 60)),
        tls=False,
    )
    # Each master's first round of the emptier fails as a bug would: the loop must be started
    # again (keelfs.runtime.lifecycle.keep_running), or that master never empties the trash.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KEELFS_FAILPOINTS", "trash.round=raise")
        with c:
            servers = c.start_chunk_servers(3, "--no-fsync-on-close")
            yield c, servers


@pytest.fixture
def me(monkeypatch: pytest.MonkeyPatch) -> str:
    """The user the CLI acts as (the superuser: the masters' OS user)."""
    user = getpass.getuser()
    monkeypatch.setenv(USER_ENV, user)
    return user


def run(c: MetaCluster, *args: str) -> Result:
    return CliRunner().invoke(cli, [*args, "--address", c.nodes[2].client_address])


def ok(c: MetaCluster, *args: str) -> str:
    r = run(c, *args)
    assert r.exit_code == 0, r.output
    return r.output


def wait_for(what: str, condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """Until ``condition()`` holds once (then done: looked at again, a condition read in
    several steps may no longer hold, and the wait would fail what it saw succeed)."""
    wait_until(condition, timeout, f"timed out waiting until {what}")


def trashed(fs: Client, user: str, original: str) -> list[str]:
    """Where ``original`` (or a suffixed name of it) is in ``user``'s trash: Current or any
    checkpoint. The emptier may turn Current into a checkpoint between the listing of the
    trash and the listing of what is in Current (then Current is "not found" and the file,
    moved into the checkpoint, would be missed): the trash is listed again after, and the
    look repeated until the two listings agree."""
    home = f"/.Trash/{user}"

    def tops() -> list[str]:
        try:
            return sorted(e.path for e in fs.ls(home))
        except NotFound:
            return []

    before = tops()
    while True:
        found = []
        for top in before:
            directory = top + paths.parent(original)
            try:
                entries = list(fs.ls(directory))
            except NotFound:
                continue
            found += [e.path for e in entries if e.name.startswith(paths.name(original))]
        after = tops()
        if after == before:
            return found
        before = after


def read_in_trash(fs: Client, original: str) -> bytes:
    """What ``original`` held, read from ``fs``'s user's trash wherever it is now (an emptier's
    round may turn Current into a checkpoint between the look and the read: looked again)."""
    for _ in range(5):
        found = trashed(fs, fs.user, original)
        assert len(found) == 1, found
        try:
            return fs.read_bytes(found[0])
        except NotFound:
            continue
    raise AssertionError(f"{original} kept moving in the trash")


def replicas(servers: LocalChunkServers, block_ids: list[int]) -> list[Path]:
    return [
        f
        for i in range(len(servers.specs))
        for b in block_ids
        for f in servers.data_dir(i).rglob(f"blk_{b}_*.data")
    ]


def put(c: MetaCluster, tmp_path: Path, remote: str, size: int = 200_000) -> list[int]:
    local = tmp_path / "data"
    local.write_bytes(b"k" * size)
    ok(c, "put", str(local), remote)
    return [b.block_id for b in c.admin().stat(remote).blocks]


def test_rm_moves_to_the_trash_and_expunge_deletes_it_and_its_blocks(
    cluster: tuple[MetaCluster, LocalChunkServers], tmp_path: Path, me: str
) -> None:
    c, servers = cluster
    fs = c.admin()
    ok(c, "mkdir", "-p", "/r1/d")
    blocks = put(c, tmp_path, "/r1/d/f")
    assert blocks and replicas(servers, blocks)
    out = json.loads(ok(c, "rm", "/r1/d/f", "--json"))
    assert out == {"path": "/r1/d/f", "trash": f"/.Trash/{me}/Current/r1/d/f"}
    assert not fs.exists("/r1/d/f") and fs.exists("/r1/d")
    assert len(trashed(fs, me, "/r1/d/f")) == 1
    assert replicas(servers, blocks)  # kept while in the trash
    home = fs.stat(f"/.Trash/{me}")
    assert (home.owner, home.mode) == (me, 0o700)
    assert fs.stat("/.Trash").mode == 0o711

    ok(c, "expunge", "--immediate")
    assert trashed(fs, me, "/r1/d/f") == []
    assert list(fs.ls(f"/.Trash/{me}")) == []
    wait_for("the replicas are deleted", lambda: replicas(servers, blocks) == [])


def test_same_name_twice_skip_trash_and_paths_in_the_trash(
    cluster: tuple[MetaCluster, LocalChunkServers], tmp_path: Path, me: str
) -> None:
    c, _ = cluster
    fs = c.admin()
    ok(c, "mkdir", "-p", "/r2")
    for _ in range(2):
        put(c, tmp_path, "/r2/f", size=10)
        assert "moved to trash at" in ok(c, "rm", "/r2/f")
    assert len(trashed(fs, me, "/r2/f")) == 2  # the second under another name

    put(c, tmp_path, "/r2/g", size=10)
    assert ok(c, "rm", "--skip-trash", "/r2/g") == ""
    assert not fs.exists("/r2/g") and trashed(fs, me, "/r2/g") == []

    # in the trash already: deleted at once (a place the emptier leaves alone, neither Current
    # nor a checkpoint: what is in Current could become a checkpoint under the rm)
    kept = f"/.Trash/{me}/kept/f"
    fs.mkdir(paths.parent(kept), parents=True)
    fs.write_bytes(kept, b"x")
    ok(c, "rm", kept)
    assert not fs.exists(kept) and fs.exists(paths.parent(kept))
    fs.delete(paths.parent(kept))

    ok(c, "mkdir", "-p", "/r2/full/x")
    r = run(c, "rm", "/r2/full")
    assert r.exit_code == 1 and "not empty" in r.output and fs.exists("/r2/full/x")
    ok(c, "rm", "-r", "/r2/full")
    assert not fs.exists("/r2/full") and len(trashed(fs, me, "/r2/full")) == 1
    r = run(c, "rm", "/r2/missing")
    assert r.exit_code == 1 and "no such file" in r.output


def test_the_masters_empty_the_trash_every_interval(
    cluster: tuple[MetaCluster, LocalChunkServers], tmp_path: Path, me: str
) -> None:
    c, servers = cluster
    fs = c.admin()
    ok(c, "mkdir", "-p", "/r3")
    blocks = put(c, tmp_path, "/r3/f")
    ok(c, "rm", "/r3/f")
    assert len(trashed(fs, me, "/r3/f")) == 1
    # deleted between one and two intervals after the rm (a round every interval)
    wait_for("the trash is emptied", lambda: trashed(fs, me, "/r3/f") == [], 4 * INTERVAL_S + 20)
    wait_for("the replicas are deleted", lambda: replicas(servers, blocks) == [])


def test_the_library_delete_never_trashes_and_defaults_are_served(
    cluster: tuple[MetaCluster, LocalChunkServers], me: str
) -> None:
    c, _ = cluster
    fs = c.admin()
    defaults = fs.server_defaults()
    assert defaults.trash_interval_ms == INTERVAL_S * 1000 and defaults.user == me
    assert c.client(user="alice").server_defaults().user == "alice"
    fs.mkdir("/r4", parents=True)
    fs.write_bytes("/r4/f", b"x")
    fs.delete("/r4/f")
    assert trashed(fs, fs.user, "/r4/f") == []


def test_one_users_trash_is_closed_to_others(cluster: tuple[MetaCluster, Any]) -> None:
    c, _ = cluster
    root, alice, bob = c.admin(), c.client(user="alice"), c.client(user="bob")
    root.mkdir("/shared", parents=True)
    root.chmod("/shared", 0o777)
    alice.write_bytes("/shared/a", b"alice's")
    where = alice.move_to_trash("/shared/a")
    assert where == "/.Trash/alice/Current/shared/a"
    assert read_in_trash(alice, "/shared/a") == b"alice's"
    home = root.stat("/.Trash/alice")
    assert (home.owner, home.mode) == ("alice", 0o700)
    with pytest.raises(PermissionDenied):
        list(bob.ls("/.Trash/alice"))
    with pytest.raises(PermissionDenied):
        bob.read_bytes(where)
    with pytest.raises(PermissionDenied):
        bob.delete(where)
    with pytest.raises(PermissionDenied):
        bob.mkdir("/.Trash/alice/x")
    with pytest.raises(PermissionDenied):
        bob.mkdir("/.Trash/carol")  # nobody makes another's trash
    with pytest.raises(PermissionDenied):
        list(bob.ls("/.Trash"))  # 0711: passable, not listable
    bob.write_bytes("/shared/b", b"bob's")
    assert bob.move_to_trash("/shared/b") == "/.Trash/bob/Current/shared/b"
    assert root.stat("/.Trash/bob").owner == "bob"
    alice.expunge(immediate=True)  # (the emptier may have been first)
    assert trashed(root, "alice", "/shared/a") == []


def test_the_async_client_has_the_trash_and_quota_verbs(
    cluster: tuple[MetaCluster, Any], me: str
) -> None:
    c, _ = cluster

    async def main() -> None:
        async with AsyncClient(c.config_addresses, tls=c.client_tls) as fs:
            assert (await fs.server_defaults()).trash_interval_ms == INTERVAL_S * 1000
            await fs.mkdir("/r6", parents=True)
            await fs.write_bytes("/r6/f", b"async")
            where = await fs.move_to_trash("/r6/f")
            assert where == f"/.Trash/{fs.user}/Current/r6/f"
            assert await fs.move_to_trash(where) is None  # in the trash already
            await fs.expunge(immediate=True)
            assert not await fs.exists(where)
            await fs.set_quota("/r6", names=2)
            await fs.write_bytes("/r6/one", b"")
            with pytest.raises(QuotaExceeded):
                await fs.write_bytes("/r6/two", b"")
            q = await fs.quota("/r6")
            assert (q.names_limit, q.names_used, q.names_remaining) == (2, 2, 0)
            await fs.clear_quota("/r6")
            await fs.write_bytes("/r6/two", b"")

    asyncio.run(main())
