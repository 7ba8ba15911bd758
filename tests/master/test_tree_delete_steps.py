"""The steps of a recursive delete too large for one transaction (``keelfs.master.tree_delete``),
in process, against a fake of the master's internal client holding a tree in memory: leaves
first, every step within one transaction's size, the top left for the last step, steps that
find their target gone skipped, a caller who may not empty a directory refused before any
step, and a retry of the request waiting on the same task."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from keelfs.client._ops import DeleteResult
from keelfs.errors import NotFound, OutcomeUnknown, PermissionDenied
from keelfs.master import subtree, tree_delete
from keelfs.meta.principals import Caller
from keelfs.meta.records import DIRECTORY, FILE, FileInfo, Inode


def _info(path: str, is_dir: bool) -> FileInfo:
    return FileInfo(path, DIRECTORY if is_dir else FILE, 0, 0o755, "ann", "staff", 0, 0, 0, 0)


class FakeTree:
    """What ``PeerClient.list_records`` and ``delete`` see of a tree; records each step."""

    def __init__(self, dirs: dict[str, list[str]], files: dict[str, list[str]]) -> None:
        self.dirs = {d: list(c) for d, c in dirs.items()}  # directory -> subdirectories
        self.files = {d: list(f) for d, f in files.items()}  # directory -> files
        self.modes: dict[str, tuple[str, int]] = {}
        self.steps: list[tuple[str, int]] = []  # (path, records deleted)
        self.gone_before: set[str] = set()  # vanish before their step (another driver)

    def exists(self, path: str) -> bool:
        parent = path.rsplit("/", 1)[0] or "/"
        return path in self.dirs or path in self.files.get(parent, [])

    def size(self, d: str) -> int:
        return 1 + len(self.files.get(d, [])) + sum(self.size(s) for s in self.dirs[d])

    async def list_records(self, path: str) -> tuple[str, list[tuple[FileInfo, str]]]:
        if path not in self.dirs:
            raise NotFound(path, "path")
        owner, mode = self.modes.get(path, ("ann", 0o755))
        record = Inode(DIRECTORY, mode, owner, "staff", 0, 0).encode().decode()
        entries = [(_info(s, True), "") for s in self.dirs[path]]
        file_record = Inode(FILE, 0o644, "ann", "staff", 0, 0).encode().decode()
        entries += [(_info(f, False), file_record) for f in self.files.get(path, [])]
        return record, entries

    async def delete(self, path: str, *, recursive: bool = False) -> DeleteResult:
        await asyncio.sleep(0)
        parent = path.rsplit("/", 1)[0]
        assert parent in self.dirs, f"{path} deleted after its parent"
        if path in self.gone_before:
            self.gone_before.discard(path)
            self._remove(path, parent)
            raise NotFound(path, "path")
        if not self.exists(path):
            raise NotFound(path, "path")
        if path in self.dirs:
            assert recursive
            n = self.size(path)
            assert n <= subtree.MAX_ENTRIES, f"a step of {n} records"
            files, dirs = self._count(path)
        else:
            n, files, dirs = 1, 1, 0
        self._remove(path, parent)
        self.steps.append((path, n))
        return DeleteResult(files, dirs, 0)

    def _count(self, d: str) -> tuple[int, int]:
        files, dirs = len(self.files.get(d, [])), 1
        for s in self.dirs[d]:
            f, n = self._count(s)
            files, dirs = files + f, dirs + n
        return files, dirs

    def _remove(self, path: str, parent: str) -> None:
        if path in self.dirs:
            for s in list(self.dirs[path]):
                self._remove(s, path)
            del self.dirs[path]
            self.files.pop(path, None)
            self.dirs[parent].remove(path)
        else:
            self.files[parent].remove(path)


def _tree() -> FakeTree:
    """/t: 3 subdirectories of 40 files (one with a subdirectory of 30), 25 files of its own."""
    dirs = {
        "/t": ["/t/a", "/t/b", "/t/c"],
        "/t/a": [],
        "/t/b": ["/t/b/x"],
        "/t/b/x": [],
        "/t/c": [],
    }
    files = {d: [f"{d}/f{i}" for i in range(40)] for d in ("/t/a", "/t/b", "/t/c")}
    files["/t/b/x"] = [f"/t/b/x/g{i}" for i in range(30)]
    files["/t"] = [f"/t/top{i}" for i in range(25)]
    return FakeTree(dirs, files)


@pytest.fixture(autouse=True)
def small_transactions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subtree, "MAX_ENTRIES", 50)


def test_leaves_first_each_step_fits_and_the_top_stays() -> None:
    fake = _tree()
    counts = asyncio.run(tree_delete.clear_below(fake, "/t", None))  # type: ignore[arg-type]
    assert fake.exists("/t") and fake.size("/t") <= subtree.MAX_ENTRIES
    # /t/b (71 records) was too large: its children went first, then /t's
    assert fake.steps.index(("/t/b/x", 31)) < fake.steps.index(("/t/b", 1))
    assert all(n <= subtree.MAX_ENTRIES for _, n in fake.steps)
    assert fake.size("/t") == 1  # 3 + 25 entries left would still be 1 + 28 + ... > 50
    assert counts == {"files": 3 * 40 + 30 + 25, "directories": 4, "blocks": 0}


def test_a_tree_that_fits_is_left_to_the_last_step() -> None:
    fake = FakeTree({"/t": ["/t/a"], "/t/a": []}, {"/t/a": [f"/t/a/f{i}" for i in range(10)]})
    assert asyncio.run(tree_delete.clear_below(fake, "/t", None)) == tree_delete._counts()  # type: ignore[arg-type]
    assert fake.steps == [] and fake.size("/t") == 12


def test_steps_already_taken_by_another_driver_are_skipped() -> None:
    fake = _tree()
    fake.gone_before = {"/t/a", "/t/top3"}
    counts = asyncio.run(tree_delete.clear_below(fake, "/t", None))  # type: ignore[arg-type]
    assert fake.size("/t") == 1
    assert counts["files"] == 2 * 40 + 30 + 24  # what this driver deleted


def test_a_directory_the_caller_may_not_empty_refuses_before_any_step() -> None:
    fake = _tree()
    fake.modes["/t/b/x"] = ("root", 0o755)
    ann = Caller("ann", ("staff",))
    with pytest.raises(PermissionDenied, match="/t/b/x"):
        asyncio.run(tree_delete.clear_below(fake, "/t", ann))  # type: ignore[arg-type]
    assert fake.steps == []
    fake.modes["/t/b/x"] = ("ann", 0o700)
    asyncio.run(tree_delete.clear_below(fake, "/t", ann))  # type: ignore[arg-type]
    assert fake.size("/t") == 1


def test_a_retry_waits_on_the_same_task_and_gets_its_counts() -> None:
    fake = _tree()
    gate = asyncio.Event()
    listed = fake.list_records

    async def slow_listing(path: str) -> Any:
        await gate.wait()
        return await listed(path)

    fake.list_records = slow_listing  # type: ignore[method-assign]

    async def scenario() -> None:
        deletes = tree_delete.TreeDeletes()
        request = (b"s" * 16, 7)
        with pytest.raises(OutcomeUnknown, match="retry"):
            await deletes.clear(fake, "g", "/t", None, request, 0.05, again=True)  # type: ignore[arg-type]
        assert deletes.started("g", "/t", request)
        gate.set()
        first = await deletes.clear(fake, "g", "/t", None, request, 5, again=False)  # type: ignore[arg-type]
        again = await deletes.clear(fake, "g", "/t", None, request, 5, again=False)  # type: ignore[arg-type]
        assert first == again and first["files"] == 175
        assert len(fake.steps) == len(set(fake.steps))  # one driver: no step twice
        other = await deletes.clear(fake, "g", "/t", None, (b"s" * 16, 8), 5, again=True)  # type: ignore[arg-type]
        assert other == tree_delete._counts()  # another request: its own (nothing left)

    asyncio.run(scenario())


def test_a_tree_found_all_on_this_shard_after_all_is_retried_not_begun(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The delete was judged to span shards (a subdirectory elsewhere, in this shard's
    records), but by the walk that subdirectory was gone (another driver's steps): what is
    left is all on this shard. A transaction with no other shard must not be begun (its begin
    is refused "needs at least one participant": a CI run failed so); the request is retried."""
    from types import SimpleNamespace

    from keelfs.errors import Unavailable
    from keelfs.master import cross_shard
    from keelfs.meta.commands import Delete
    from keelfs.meta.shardmap import ShardMap

    m = ShardMap(version=1, shards={"s1": {1: "a"}, "s2": {2: "b"}})
    top = next(f"/t{i}" for i in range(1000) if m.shard_for_directory(f"/t{i}") == "s1")

    async def walk(*_: Any, **__: Any) -> list[subtree.DirRecords]:
        return [
            subtree.DirRecords(
                top, Inode(DIRECTORY, 0o755, "ann", "staff", 0, 0).encode().decode(), ()
            )
        ]

    async def run(*_: Any, **__: Any) -> Any:
        raise AssertionError("a transaction was begun")

    monkeypatch.setattr(subtree, "walk", walk)
    node: Any = SimpleNamespace(internal=None, shard_map=m, txns=SimpleNamespace(run=run))
    member: Any = SimpleNamespace(group_id="s1")
    with pytest.raises(Unavailable):
        asyncio.run(
            cross_shard._delete_tree(
                node,
                member,
                Delete(top, recursive=True),
                "rec",
                None,
                5.0,  # type: ignore[arg-type]
            )
        )
