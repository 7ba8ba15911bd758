"""A move to the trash is one rename: a shard leader killed (kill -9, a failpoint) in the middle
of one that crosses shards leaves the file either in place or in the trash, never both or
neither, and the client's retry through the failover tells the truth about which."""

from __future__ import annotations

import time
from itertools import count

import pytest

from keelfs.client import Client
from keelfs.errors import KeelError
from keelfs.meta import paths
from keelfs.server.metacluster import MetaCluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

_fresh = count()


@pytest.fixture(scope="module")
def cluster(failpoint_cluster: MetaCluster) -> MetaCluster:
    return failpoint_cluster


def _crossing_dir(fs: Client) -> tuple[str, str, str]:
    """A fresh directory whose children live on another shard than its twin in the trash:
    (the directory, its shard, the trash twin's shard)."""
    m = fs.shard_map()
    for _ in range(1000):
        d = f"/k{next(_fresh)}"
        twin = f"/.Trash/{fs.server_defaults().user}/Current{d}"
        mine, theirs = m.shard_for_directory(d), m.shard_for_directory(twin)
        if mine != theirs:
            fs.mkdir(d)
            return d, mine, theirs
    raise AssertionError("no directory crosses shards")


def _settled(fs: Client, probe: list[str]) -> list[str]:
    """Which of ``probe`` exist, once linearizable stats answer (no lock left)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return [p for p in probe if fs.exists(p)]
        except KeelError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.parametrize(
    ("role", "step"),
    [("coordinator", "txn.decision_recorded"), ("participant", "txn.prepared_recorded")],
)
def test_a_leader_killed_mid_move_to_trash_leaves_the_file_in_exactly_one_place(
    cluster: MetaCluster, role: str, step: str
) -> None:
    fs = cluster.client(deadline=60.0)
    d, source_shard, trash_shard = _crossing_dir(fs)
    fs.write_bytes(f"{d}/first", b"1")
    fs.move_to_trash(f"{d}/first")  # the trash directories exist now: only the rename is left
    fs.write_bytes(f"{d}/f", b"payload")
    victim = cluster.leader(source_shard if role == "coordinator" else trash_shard)
    cluster.set_failpoint(victim, step, "crash")
    try:
        where = fs.move_to_trash(f"{d}/f")
    except KeelError as exc:  # an abort is a correct outcome too: the file is then in place
        print("move to trash failed:", repr(exc))
        where = None
    assert cluster._procs[victim].wait(timeout=30) == 137, cluster.log_tail(victim)
    cluster.restart(victim)
    in_trash = f"/.Trash/{fs.server_defaults().user}/Current{d}/f"
    found = _settled(fs, [f"{d}/f", in_trash])
    assert len(found) == 1, found
    assert found == ([in_trash] if where is not None else [f"{d}/f"])
    assert fs.read_bytes(found[0]) == b"payload"
    # nothing is left locked: the file moves on (back, or to the trash)
    if where is None:
        assert fs.move_to_trash(f"{d}/f") == in_trash
    else:
        fs.rename(in_trash, f"{d}/f")
    assert paths.name(found[0]) == "f"
