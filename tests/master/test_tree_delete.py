"""Recursive deletes of trees too large for one transaction across shards (more than
``subtree.MAX_ENTRIES`` records), with real processes (3 masters per shard, one role per
process): deleted in steps, leaves first, the top entry last; a kill -9 of the driving leader
in the middle loses and doubles nothing, and the client's retry finishes it."""

from __future__ import annotations

import asyncio
import time

import pytest
from helpers import child

from keelfs.client import AsyncClient, Client
from keelfs.errors import KeelError, NotFound, PermissionDenied
from keelfs.master.subtree import MAX_ENTRIES
from keelfs.server.metacluster import MetaCluster
from keelfs.tls.certs import issue_client
from keelfs.tls.credentials import TlsSettings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SUBDIRS = 10
FILES_PER_SUBDIR = 450
TOP_FILES = 500
FILES = SUBDIRS * FILES_PER_SUBDIR + TOP_FILES  # 5,000


@pytest.fixture(scope="module")
def cluster(failpoint_cluster: MetaCluster) -> MetaCluster:
    return failpoint_cluster


_counter = iter(range(10_000))


def _make_big_tree(cluster: MetaCluster, fs: Client, base: str) -> tuple[str, list[str]]:
    """``base/big<n>``: its entry on ``base``'s shard, its own records on the other one, with
    SUBDIRS directories spread over both shards; FILES empty files in all. (top, subdirs)"""
    m = fs.shard_map()
    top = child(m, base, "big", same_shard=False)
    fs.mkdir(top)
    subdirs = [f"{top}/d{i}" for i in range(SUBDIRS)]
    for d in subdirs:
        fs.mkdir(d)
    shards = {m.shard_for_directory(d) for d in [top, *subdirs]}
    assert len(shards) == 2, "the tree must span both shards"
    names = [f"{d}/f{j}" for d in subdirs for j in range(FILES_PER_SUBDIR)]
    names += [f"{top}/t{j}" for j in range(TOP_FILES)]

    async def create_all() -> None:
        async with AsyncClient(cluster.config_addresses, tls=cluster.client_tls) as afs:
            slots = asyncio.Semaphore(64)

            async def one(path: str) -> None:
                async with slots:
                    await afs.write_bytes(path, b"")

            await asyncio.gather(*(one(p) for p in names))

    asyncio.run(create_all())
    assert fs.du(top).file_count == FILES
    assert FILES + SUBDIRS + 1 > MAX_ENTRIES
    return top, subdirs


def _wait_exit(cluster: MetaCluster, node_id: int, timeout: float = 60.0) -> int:
    return cluster._procs[node_id].wait(timeout=timeout)


def _gone(fs: Client, base: str, top: str, subdirs: list[str]) -> None:
    """Nothing of the tree is left on either shard: the names are free again."""
    with pytest.raises(NotFound):
        fs.stat(top)
    assert [e.path for e in fs.ls(base)] == []
    fs.mkdir(subdirs[3], parents=True)  # no stale record of the old tree in the way
    assert list(fs.ls(subdirs[3])) == [] and [e.name for e in fs.ls(top)] == ["d3"]


def test_a_large_tree_across_shards_is_deleted_in_steps(cluster: MetaCluster) -> None:
    fs = cluster.client(deadline=120.0)
    base = f"/del{next(_counter)}"
    fs.mkdir(base)
    top, subdirs = _make_big_tree(cluster, fs, base)
    result = fs.delete(top, recursive=True)
    # the steps' counts are in the reply, those of the drivers this request had: all of them
    # unless the shard's leadership moved during the delete (a loaded machine: elections)
    assert 0 <= result.files <= FILES and 1 <= result.directories <= SUBDIRS + 1
    _gone(fs, base, top, subdirs)


def test_a_large_tree_delete_survives_a_killed_leader(cluster: MetaCluster) -> None:
    fs = cluster.client(deadline=180.0)
    base = f"/del{next(_counter)}"
    fs.mkdir(base)
    top, subdirs = _make_big_tree(cluster, fs, base)
    victim = cluster.leader(fs.shard_map().shard_for_directory(base))  # drives the delete
    cluster.set_failpoint(victim, "tree_delete.unit_deleted", "crash")
    fs.delete(top, recursive=True)  # retried on the new leader, which goes on
    assert _wait_exit(cluster, victim) == 137, cluster.log_tail(victim)
    cluster.restart(victim)
    _gone(fs, base, top, subdirs)
    assert fs.du(base).file_count == 0


def test_a_caller_who_may_not_empty_a_directory_deletes_nothing(cluster: MetaCluster) -> None:
    fs = cluster.client(deadline=120.0)
    base = f"/del{next(_counter)}"
    fs.mkdir(base)
    top, subdirs = _make_big_tree(cluster, fs, base)
    for path in (base, top, *subdirs):
        fs.chown(path, owner="ann")
    fs.chown(subdirs[-1], owner="root")  # ann may not empty this one
    fs.chmod(subdirs[-1], 0o755)
    if cluster.tls_dir is None:
        ann = cluster.client(user="ann", deadline=120.0)
    else:
        issue_client(cluster.tls_dir, "ann", overwrite=True)
        ann = cluster.client(
            user="ann", deadline=120.0, tls=TlsSettings.for_user(cluster.tls_dir, "ann")
        )
    with pytest.raises(PermissionDenied):
        ann.delete(top, recursive=True)
    assert fs.du(top).file_count == FILES  # refused before anything was deleted
    fs.chown(subdirs[-1], owner="ann")
    deadline = time.monotonic() + 120
    while True:  # the refused attempt left nothing behind: ann's delete now goes through
        try:
            ann.delete(top, recursive=True)
            break
        except KeelError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    with pytest.raises(NotFound):
        fs.stat(top)
