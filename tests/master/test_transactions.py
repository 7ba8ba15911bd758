"""Cross-shard renames as transactions, with real processes (3 config servers and 3 masters per
shard, one role per process, so the coordinator's and the participant's leaders are different
processes). A failpoint crashes (or freezes) a leader right after each protocol step; after
recovery the file exists exactly once, under exactly one name, with its attributes, and no
lock is left behind."""

from __future__ import annotations

import time
from typing import Any

import pytest
from helpers import child, dirs_on_two_shards

from keelfs.client import Client
from keelfs.errors import AlreadyExists, KeelError, NotFound
from keelfs.server.metacluster import MetaCluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def cluster(failpoint_cluster: MetaCluster) -> MetaCluster:
    return failpoint_cluster


_counter = iter(range(10_000))


def _file(fs: Client, path: str) -> Any:
    fs.create(path, replication=2, mode=0o600)
    fs.complete(path)
    fs.chown(path, owner="alice", group="staff")
    return fs.stat(path)


def _same_file(before: Any, after: Any) -> None:
    for attr in ("kind", "mode", "owner", "group", "replication", "block_size", "length"):
        assert getattr(after, attr) == getattr(before, attr), attr
    assert after.blocks == before.blocks


def _exactly_one(fs: Client, src: str, dst: str) -> str:
    found = [p for p in (src, dst) if fs.exists(p)]
    assert len(found) == 1, f"found {found}"
    return found[0]


def test_a_file_moves_to_another_shard_and_back(cluster: MetaCluster) -> None:
    fs = cluster.client()
    a, b, _, _ = dirs_on_two_shards(fs, "/t")
    before = _file(fs, a + "/f")
    fs.rename(a + "/f", b + "/g")
    _same_file(before, fs.stat(b + "/g"))
    with pytest.raises(NotFound):
        fs.stat(a + "/f")
    assert [e.name for e in fs.ls(b)] == ["g"] and list(fs.ls(a)) == []
    fs.rename(b + "/g", a + "/f")
    _same_file(before, fs.stat(a + "/f"))
    assert list(fs.ls(b)) == []


def test_refusals_change_nothing(cluster: MetaCluster) -> None:
    fs = cluster.client()
    a, b, _, _ = dirs_on_two_shards(fs, "/t")
    _file(fs, a + "/f")
    _file(fs, b + "/taken")
    with pytest.raises(AlreadyExists):
        fs.rename(a + "/f", b + "/taken")
    with pytest.raises(NotFound):
        fs.rename(a + "/f", b + "/missing-dir/g")
    fs.create(a + "/open")  # still being written: its lease does not move across shards
    with pytest.raises(KeelError, match="open for writing"):
        fs.rename(a + "/open", b + "/open")
    assert fs.exists(a + "/f") and fs.exists(b + "/taken") and not fs.exists(b + "/open")
    fs.rename(a + "/f", b + "/taken", overwrite=True)
    assert not fs.exists(a + "/f") and fs.stat(b + "/taken").mode == 0o600
    # no lock was left: both directories take new files at once
    fs.create(a + "/after")
    fs.create(b + "/after")


def _wait_exit(cluster: MetaCluster, node_id: int, timeout: float = 30.0) -> int:
    proc = cluster._procs[node_id]
    return proc.wait(timeout=timeout)


def _no_open_transactions(cluster: MetaCluster, fs: Client, paths: list[str]) -> None:
    """Wait until every path answers a linearizable stat without waiting on a lock."""
    deadline = time.monotonic() + 30
    for p in paths:
        while True:
            try:
                fs.exists(p)
                break
            except KeelError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


COORDINATOR_STEPS = ["txn.begin_recorded", "txn.prepare_sent", "txn.decision_recorded",
                     "txn.decision_sent"]  # fmt: skip
PARTICIPANT_STEPS = ["txn.prepared_recorded", "txn.decision_applied"]


@pytest.mark.parametrize(
    ("step", "action"),
    [(s, "crash") for s in COORDINATOR_STEPS + PARTICIPANT_STEPS]
    + [("txn.decision_recorded", "stall:2.5"), ("txn.prepared_recorded", "stall:2.5")],
)
def test_a_leader_failing_after_each_step_loses_and_doubles_nothing(
    cluster: MetaCluster, step: str, action: str
) -> None:
    fs = cluster.client(deadline=60.0)
    a, b, sa, sb = dirs_on_two_shards(fs, "/t")
    before = _file(fs, a + "/f")
    victim = cluster.leader(sa if step in COORDINATOR_STEPS else sb)
    cluster.set_failpoint(victim, step, action)
    try:
        fs.rename(a + "/f", b + "/f")
        renamed = True
    except KeelError as exc:
        print("rename failed:", repr(exc))
        renamed = False  # an abort is a correct outcome too; the file must then be at a/f
    if action == "crash":
        assert _wait_exit(cluster, victim) == 137, cluster.log_tail(victim)
        cluster.restart(victim)
    _no_open_transactions(cluster, fs, [a + "/f", b + "/f"])
    where = _exactly_one(fs, a + "/f", b + "/f")
    assert where == (b + "/f" if renamed else a + "/f")
    _same_file(before, fs.stat(where))
    # every lock is gone on both shards: new files in both directories, a second move
    fs.create(a + "/next")
    fs.create(b + "/next")
    other = a + "/f" if where == b + "/f" else b + "/f"
    fs.rename(where, other)
    assert _exactly_one(fs, a + "/f", b + "/f") == other


def _survive(cluster: MetaCluster, victim: int, step: str, action: Any) -> None:
    """Arm ``step`` on ``victim``, run ``action`` (it must succeed, retrying through the
    failure), and bring the victim back if it crashed."""
    cluster.set_failpoint(victim, step, "crash")
    action()
    assert _wait_exit(cluster, victim) == 137, cluster.log_tail(victim)
    cluster.restart(victim)


@pytest.mark.parametrize("role", ["coordinator", "participant"])
def test_cross_shard_mkdir_and_rmdir_survive_a_crashed_leader(
    cluster: MetaCluster, role: str
) -> None:
    fs = cluster.client(deadline=60.0)
    m = fs.shard_map()
    base = f"/m{next(_counter)}"
    fs.mkdir(base)
    d = child(m, base, "d", same_shard=False)  # entry on base's shard, children elsewhere
    entry_shard, own_shard = m.shard_for_directory(base), m.shard_for_directory(d)
    step = "txn.decision_recorded" if role == "coordinator" else "txn.prepared_recorded"
    shard = entry_shard if role == "coordinator" else own_shard

    _survive(cluster, cluster.leader(shard), step, lambda: fs.mkdir(d))
    assert fs.stat(d).is_dir and list(fs.ls(d)) == []
    fs.create(d + "/f")
    assert [e.name for e in fs.ls(d)] == ["f"]
    with pytest.raises(AlreadyExists):
        fs.mkdir(d)

    fs.delete(d + "/f")
    _survive(cluster, cluster.leader(shard), step, lambda: fs.delete(d))
    with pytest.raises(NotFound):
        fs.stat(d)
    assert [e.name for e in fs.ls(base)] == []
    fs.mkdir(d)  # nothing of the old directory is left on either shard
    assert list(fs.ls(d)) == []


def _make_tree(fs: Client, top: str) -> list[str]:
    """A small tree whose directories spread over both shards (with 2 shards and a handful
    of directories, some hash to each); its file paths."""
    made = []
    fs.mkdir(top)
    for i in range(3):
        sub = f"{top}/s{i}"
        fs.mkdir(sub)
        for j in range(2):
            made.append(f"{sub}/f{j}")
            _file(fs, made[-1])
        deeper = f"{sub}/deep"
        fs.mkdir(deeper)
        made.append(f"{deeper}/g")
        _file(fs, made[-1])
    made.append(f"{top}/top-file")
    _file(fs, made[-1])
    return made


def _listing(fs: Client, top: str) -> list[tuple[str, str, int]]:
    out = []
    stack = [top]
    while stack:
        d = stack.pop()
        for e in fs.ls(d):
            out.append((e.path[len(top) :], e.kind, e.mode))
            if e.is_dir:
                stack.append(e.path)
    return sorted(out)


def test_a_directory_tree_spanning_shards_moves_and_is_deleted_whole(
    cluster: MetaCluster,
) -> None:
    fs = cluster.client()
    m = fs.shard_map()
    base = f"/tree{next(_counter)}"
    fs.mkdir(base)
    src = child(m, base, "src", same_shard=False)
    files = _make_tree(fs, src)
    shards = {m.shard_for_directory(p.rsplit("/", 1)[0]) for p in files}
    assert len(shards) == 2, "the tree should span both shards"
    before = _listing(fs, src)
    dst = base + "/moved/dst"
    fs.mkdir(base + "/moved")
    fs.rename(src, dst)
    assert _listing(fs, dst) == before
    with pytest.raises(NotFound):
        fs.stat(src)
    for p in files:
        with pytest.raises(NotFound):
            fs.stat(p)
        _same_file(fs.stat(files[0].replace(src, dst)), fs.stat(p.replace(src, dst)))
    with pytest.raises(KeelError, match="into itself"):
        fs.rename(dst, dst + "/s0/inside")
    with pytest.raises(AlreadyExists):
        fs.rename(dst, base + "/moved")
    # nothing was left behind: the old name takes a new, empty directory
    fs.mkdir(src)
    assert list(fs.ls(src)) == []
    result = fs.delete(dst, recursive=True)
    assert (result.files, result.directories) == (len(files), 7)
    with pytest.raises(NotFound):
        fs.stat(dst)
    assert [e.name for e in fs.ls(base + "/moved")] == []
    fs.mkdir(dst + "/s0", parents=True)  # and no record of the old tree is in the way
    assert list(fs.ls(dst + "/s0")) == []


@pytest.mark.parametrize("role", ["coordinator", "participant"])
def test_a_tree_move_survives_a_crashed_leader(cluster: MetaCluster, role: str) -> None:
    fs = cluster.client(deadline=60.0)
    m = fs.shard_map()
    base = f"/tcrash{next(_counter)}"
    fs.mkdir(base)
    src = child(m, base, "src", same_shard=False)
    _make_tree(fs, src)
    before = _listing(fs, src)
    dst = child(m, base, "dst", same_shard=True)
    coordinator = m.shard_for_directory(base)
    other = next(s for s in m.shards if s != coordinator)
    step = "txn.decision_recorded" if role == "coordinator" else "txn.prepared_recorded"
    victim = cluster.leader(coordinator if role == "coordinator" else other)
    _survive(cluster, victim, step, lambda: fs.rename(src, dst))
    _no_open_transactions(cluster, fs, [src, dst])
    assert _listing(fs, dst) == before
    assert not fs.exists(src)
