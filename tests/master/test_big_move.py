"""Renames of directory trees too large for one transaction across shards (more than
``subtree.MAX_ENTRIES`` records), with real processes (3 masters per shard, one role per
process): moved in steps (``keelfs.master.tree_move``) and seen whole under one name; a kill -9
of the coordinating leader before or after the switch ends in one whole tree; a create inside
the moving tree waits, and gets UNAVAILABLE ("locked", "being moved") if its deadline ends
first, else NOT_FOUND once the tree has gone to its new name; ``rm`` into the trash of a large
tree."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import child

from keelfs.client import AsyncClient, Client
from keelfs.errors import KeelError, NotFound, Unavailable
from keelfs.master.subtree import MAX_ENTRIES
from keelfs.server.metacluster import MetaCluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SUBDIRS = 10
FILES_PER_SUBDIR = 450
TOP_FILES = 500
FILES = SUBDIRS * FILES_PER_SUBDIR + TOP_FILES  # 5,000


@pytest.fixture(scope="module")
def cluster(failpoint_cluster: MetaCluster) -> MetaCluster:
    return failpoint_cluster


@pytest.fixture(autouse=True)
def _logs_on_failure(cluster: MetaCluster, request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is None or rep.failed:
        for node_id in sorted(cluster.nodes):
            print(f"----- node {node_id} log (tail) -----")
            print(cluster.log_tail(node_id, 40))


_counter = iter(range(10_000))


def _content(relative: str) -> bytes:
    """Each file's own bytes (small: kept in its record, which the move carries)."""
    return f"{relative} {hashlib.sha1(relative.encode()).hexdigest()}".encode()


def _relatives() -> list[str]:
    names = [f"d{i}/f{j}" for i in range(SUBDIRS) for j in range(FILES_PER_SUBDIR)]
    return names + [f"t{j}" for j in range(TOP_FILES)]


def _make_big_tree(cluster: MetaCluster, fs: Client, base: str) -> str:
    """``base/big<n>``: its own records on another shard than its entry, SUBDIRS directories
    spread over both shards, FILES small files."""
    m = fs.shard_map()
    top = child(m, base, "big", same_shard=False)
    fs.mkdir(top)
    for i in range(SUBDIRS):
        fs.mkdir(f"{top}/d{i}")
    shards = {m.shard_for_directory(d) for d in [top, *(f"{top}/d{i}" for i in range(SUBDIRS))]}
    assert len(shards) == 2, "the tree must span both shards"

    async def create_all() -> None:
        async with AsyncClient(cluster.config_addresses, tls=cluster.client_tls) as afs:
            slots = asyncio.Semaphore(64)

            async def one(relative: str) -> None:
                async with slots:
                    await afs.write_bytes(f"{top}/{relative}", _content(relative))

            await asyncio.gather(*(one(r) for r in _relatives()))

    asyncio.run(create_all())
    assert FILES + SUBDIRS + 1 > MAX_ENTRIES
    return top


def _check_whole(cluster: MetaCluster, fs: Client, top: str) -> None:
    """Every name of the tree is at ``top`` (no more, no less) with its bytes (MD5)."""
    expected = {f"d{i}" for i in range(SUBDIRS)} | {f"t{j}" for j in range(TOP_FILES)}
    assert {e.name for e in fs.ls(top)} == expected
    for i in range(SUBDIRS):
        assert {e.name for e in fs.ls(f"{top}/d{i}")} == {f"f{j}" for j in range(FILES_PER_SUBDIR)}

    async def read_all() -> list[str]:
        async with AsyncClient(cluster.config_addresses, tls=cluster.client_tls) as afs:
            slots = asyncio.Semaphore(64)

            async def one(relative: str) -> str | None:
                async with slots:
                    data = await afs.read_bytes(f"{top}/{relative}")
                good = hashlib.md5(data).digest() == hashlib.md5(_content(relative)).digest()
                return None if good else relative

            return [r for r in await asyncio.gather(*(one(r) for r in _relatives())) if r]

    assert asyncio.run(read_all()) == []
    assert fs.du(top).file_count == FILES


def _check_gone(fs: Client, top: str) -> None:
    """Nothing of the old tree is left: the name and its subdirectories are free again."""
    with pytest.raises(NotFound):
        fs.stat(top)
    fs.mkdir(f"{top}/d3", parents=True)  # no stale record of the old tree in the way
    assert list(fs.ls(f"{top}/d3")) == [] and [e.name for e in fs.ls(top)] == ["d3"]
    fs.delete(top, recursive=True)


def _setup(cluster: MetaCluster) -> tuple[Client, str, str, str]:
    fs = cluster.client(deadline=180.0)
    base = f"/mv{next(_counter)}"
    fs.mkdir(base)
    top = _make_big_tree(cluster, fs, base)
    target = child(fs.shard_map(), base, "moved", same_shard=True)
    return fs, base, top, target


def _wait_exit(cluster: MetaCluster, node_id: int, timeout: float = 120.0) -> int:
    return cluster._procs[node_id].wait(timeout=timeout)


def test_a_large_tree_moves_across_shards_whole(cluster: MetaCluster) -> None:
    fs, base, top, target = _setup(cluster)
    started = time.monotonic()
    fs.rename(top, target)
    print(f"moved {FILES} files in {time.monotonic() - started:.1f} s")
    _check_whole(cluster, fs, target)
    _check_gone(fs, top)
    # and back, through the trash-like path of a rename into a deeper directory
    fs.mkdir(f"{base}/keep")
    fs.rename(target, f"{base}/keep/again")
    _check_whole(cluster, fs, f"{base}/keep/again")


def test_rm_of_a_large_tree_moves_it_to_the_trash_whole(cluster: MetaCluster) -> None:
    fs, base, top, _ = _setup(cluster)
    where = fs.move_to_trash(top)  # keelfs rm -r: a rename into /.Trash/<user>/Current
    assert where is not None and where.endswith(top), where
    _check_whole(cluster, fs, where)
    _check_gone(fs, top)
    fs.delete(where, recursive=True)


@pytest.mark.parametrize("step", ["tree_move.copied", "tree_move.switched"])
def test_a_killed_coordinator_leaves_one_whole_tree(cluster: MetaCluster, step: str) -> None:
    fs, base, top, target = _setup(cluster)
    shard = fs.shard_map().shard_for_path(top)  # its leader coordinates the move
    members = cluster.members(shard)
    for node_id in members:  # whichever leads when the step comes (leaders change under load)
        cluster.set_failpoint(node_id, step, "crash")
    errors: list[BaseException] = []
    mover = threading.Thread(target=_rename_into(fs, top, target, errors))
    mover.start()
    # the client's retries go to the new leader: it takes the move over (copied) or finds
    # it done (switched)
    crashed = cluster.wait_for(
        lambda: next((n for n in members if cluster._procs[n].poll() is not None), None),
        180,
        f"a master of {shard} to crash at {step}",
    )
    for node_id in members:
        if node_id != crashed:
            cluster.set_failpoint(node_id, step, "off")
    assert _wait_exit(cluster, crashed) == 137, cluster.log_tail(crashed)
    cluster.restart(crashed)
    mover.join(timeout=300)
    assert not mover.is_alive() and not errors, errors
    _check_whole(cluster, fs, target)
    _check_gone(fs, top)


def _rename_into(fs: Client, src: str, dst: str, errors: list[BaseException]) -> Any:
    def run() -> None:
        try:
            fs.rename(src, dst)
        except BaseException as exc:  # noqa: BLE001  # reported by the test
            errors.append(exc)

    return run


def test_a_create_inside_the_moving_tree_waits_or_is_refused(cluster: MetaCluster) -> None:
    fs, base, top, target = _setup(cluster)
    m = fs.shard_map()
    coordinator = m.shard_for_path(top)
    # a directory of the tree whose records another shard keeps: its masters go on serving
    # while the coordinator's driver is held up, fence set, by the failpoint
    sub = next(
        f"d{i}" for i in range(SUBDIRS) if m.shard_for_directory(f"{top}/d{i}") != coordinator
    )
    members = [cluster.leader(coordinator)]  # holds the fence up (unless leadership moved)
    cluster.set_failpoint(members[0], "tree_move.fenced", "stall:2")
    errors: list[BaseException] = []
    mover = threading.Thread(target=_rename_into(fs, top, target, errors))
    mover.start()
    short = cluster.client(deadline=3.0, attempt_timeout=1.0)
    deadline = time.monotonic() + 60
    refused: KeelError | None = None
    tried: list[str] = []  # created before the fence went up (or maybe): they move along
    seen: list[str] = []
    while refused is None and time.monotonic() < deadline and mover.is_alive():
        tried.append(f"new{len(tried)}")
        try:
            short.write_bytes(f"{top}/{sub}/{tried[-1]}", b"x")
        except Unavailable as exc:
            seen.append(repr(exc))
            if "being moved" in str(exc):
                refused = exc  # its deadline passed while it waited: certainly not applied
                tried.pop()
        except NotFound as exc:
            refused = exc  # it waited for the move; then the directory was elsewhere
            tried.pop()
    assert refused is not None, ("no create met the fence", len(tried), seen)
    print(f"a create inside the moving tree: {refused!r}")
    patient = cluster.client(deadline=120.0)
    try:  # waits for the move; then the directory is elsewhere
        patient.write_bytes(f"{top}/{sub}/late", b"x")
        tried.append("late")  # a leader change aborted that attempt first: it moves along
    except NotFound:
        pass
    mover.join(timeout=180)
    for node_id in members:
        cluster.set_failpoint(node_id, "tree_move.fenced", "off")
    assert not mover.is_alive() and not errors, errors
    if "late" in tried:
        assert fs.read_bytes(f"{target}/{sub}/late") == b"x"
    else:
        assert not fs.exists(f"{target}/{sub}/late")
    for name in tried:
        if fs.exists(f"{target}/{sub}/{name}"):
            assert fs.read_bytes(f"{target}/{sub}/{name}") == b"x"
            fs.delete(f"{target}/{sub}/{name}")
    _check_whole(cluster, fs, target)
    _check_gone(fs, top)
