"""The trash's steps (``keelfs.client.trash``) against an in-memory namespace: where ``rm``
puts things, the names it picks when one is taken, and what emptying deletes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from keelfs.client import trash
from keelfs.errors import AlreadyExists, InvalidArgument, NotADirectory, NotFound
from keelfs.meta import paths

DAY = 24 * 3600 * 1000
T0 = 1_700_000_000_000  # 2023-11-14 22:13:20 UTC


@dataclass
class Entry:
    path: str
    is_dir: bool

    @property
    def name(self) -> str:
        return paths.name(self.path)


class FakeFs:
    """A namespace of paths (directory or file) with the client's errors."""

    def __init__(self) -> None:
        self.kinds: dict[str, bool] = {"/": True}  # path -> is a directory
        self.calls: list[str] = []

    def add(self, path: str, is_dir: bool = False) -> None:
        self.mkdir(paths.parent(path), parents=True)
        self.kinds[path] = is_dir

    def stat(self, path: str) -> Entry:
        if path not in self.kinds:
            raise NotFound(path)
        return Entry(path, self.kinds[path])

    def mkdir(self, path: str, *, parents: bool = False, mode: int = 0o755) -> list[str]:
        self.calls.append(f"mkdir {path}")
        made = []
        for p in [*paths.ancestors(path)[1:], path]:
            kind = self.kinds.get(p)
            if kind is None:
                self.kinds[p] = True
                made.append(p)
            elif not kind:
                raise AlreadyExists(p) if p == path else NotADirectory(p)
        return made

    def rename(self, src: str, dst: str) -> None:
        self.calls.append(f"rename {src} {dst}")
        if src not in self.kinds:
            raise NotFound(src)
        if dst in self.kinds:
            raise AlreadyExists(dst)
        if not self.kinds.get(paths.parent(dst)):
            raise NotFound(paths.parent(dst))
        for p in [p for p in self.kinds if p == src or paths.is_ancestor(src, p)]:
            self.kinds[dst + p[len(src) :]] = self.kinds.pop(p)

    def ls(self, path: str) -> list[Entry]:
        if not self.kinds.get(path):
            raise NotFound(path)
        below = [p for p in sorted(self.kinds) if p != "/" and paths.parent(p) == path]
        return [Entry(p, self.kinds[p]) for p in below]

    def delete(self, path: str, *, recursive: bool = False) -> None:
        self.calls.append(f"delete {path}")
        if path not in self.kinds:
            raise NotFound(path)
        for p in [p for p in self.kinds if p == path or paths.is_ancestor(path, p)]:
            del self.kinds[p]


class AsyncFakeFs:
    def __init__(self, fs: FakeFs) -> None:
        self.fs = fs

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.fs, name)
        if name == "ls":

            async def listing(*args: Any, **kwargs: Any) -> Any:
                for e in method(*args, **kwargs):
                    yield e

            return listing

        async def call(*args: Any, **kwargs: Any) -> Any:
            return method(*args, **kwargs)

        return call


def clock(start: int = T0) -> Any:
    times = iter(range(start, start + 10_000))
    return lambda: next(times)


def move(fs: FakeFs, path: str, user: str = "alice", now: Any = None) -> Any:
    return trash.run_sync(fs, trash.move_steps(user, path, now or clock()))


def test_rm_moves_to_current_under_the_original_path() -> None:
    fs = FakeFs()
    fs.add("/data/logs/a.log")
    assert move(fs, "/data/logs/a.log") == "/.Trash/alice/Current/data/logs/a.log"
    assert "/data/logs/a.log" not in fs.kinds and fs.kinds["/data/logs"]
    assert [c for c in fs.calls if c.startswith("rename")] == [
        "rename /data/logs/a.log /.Trash/alice/Current/data/logs/a.log"
    ]  # one rename: atomic
    fs.add("/top")
    assert move(fs, "/top") == "/.Trash/alice/Current/top"


def test_a_taken_name_gets_the_time_appended_as_hdfs_does() -> None:
    fs = FakeFs()
    fs.add("/d/f")
    move(fs, "/d/f")
    fs.add("/d/f")
    second = move(fs, "/d/f", now=clock(T0 + 5))
    assert second == f"/.Trash/alice/Current/d/f{T0 + 5}"
    assert fs.kinds["/.Trash/alice/Current/d/f"] is False and fs.kinds[second] is False


class EmptierBetweenMkdirAndRename(FakeFs):
    """The emptier's round lands between ``rm``'s mkdir and its rename: Current becomes a
    checkpoint just before the first ``times`` renames into it."""

    def __init__(self, times: int = 1) -> None:
        super().__init__()
        self.times = times

    def rename(self, src: str, dst: str) -> None:
        current = "/.Trash/alice/Current"
        if self.times and paths.is_ancestor(current, dst):
            self.times -= 1
            super().rename(current, f"/.Trash/alice/23111422132{self.times}")
        super().rename(src, dst)


def test_rm_racing_the_emptier_makes_the_directory_again_and_moves() -> None:
    fs = EmptierBetweenMkdirAndRename(times=2)
    fs.add("/data/logs/a.log")
    assert move(fs, "/data/logs/a.log") == "/.Trash/alice/Current/data/logs/a.log"
    assert fs.kinds["/.Trash/alice/Current/data/logs/a.log"] is False
    assert "/data/logs/a.log" not in fs.kinds
    made = [c for c in fs.calls if c == "mkdir /.Trash/alice/Current/data/logs"]
    assert len(made) == 3  # made again after each of the two rounds


def test_rm_of_a_file_deleted_meanwhile_says_not_found() -> None:
    class DeletedBeforeTheRename(FakeFs):
        def rename(self, src: str, dst: str) -> None:
            self.kinds.pop(src, None)
            super().rename(src, dst)

    fs = DeletedBeforeTheRename()
    fs.add("/d/f")
    with pytest.raises(NotFound) as err:
        move(fs, "/d/f")
    assert err.value.details["name"] == "/d/f"  # the file, not a directory of the trash
    assert len([c for c in fs.calls if c.startswith("rename")]) == 1


def test_a_file_in_the_way_of_the_original_directories_is_sidestepped() -> None:
    fs = FakeFs()
    fs.add("/d")  # a file /d, trashed
    move(fs, "/d")
    fs.add("/d/f")  # now a directory /d with a file
    where = move(fs, "/d/f", now=clock(T0 + 7))
    assert where == f"/.Trash/alice/Current/d{T0 + 7}/f"
    assert fs.kinds["/.Trash/alice/Current/d"] is False  # the first one kept


def test_paths_in_the_trash_and_the_root_are_not_moved() -> None:
    fs = FakeFs()
    fs.add("/.Trash/alice/Current/x")
    fs.calls.clear()
    assert move(fs, "/.Trash/alice/Current/x") is None  # rm deletes it at once
    assert move(fs, "/.Trash") is None
    with pytest.raises(InvalidArgument, match="holds the trash"):
        move(fs, "/")
    with pytest.raises(NotFound):
        move(fs, "/missing")
    assert not any(c.startswith("mkdir") for c in fs.calls)  # nothing made for a missing path


def test_expunge_deletes_old_checkpoints_then_checkpoints_current() -> None:
    fs = FakeFs()
    home = "/.Trash/alice"
    old = f"{home}/{trash.checkpoint_name(T0 - 2 * DAY)}"
    young = f"{home}/{trash.checkpoint_name(T0 - DAY // 2)}"
    for p in (f"{old}/a", f"{young}/b", f"{home}/Current/c", f"{home}/not-a-checkpoint/d"):
        fs.add(p)
    deleted = trash.run_sync(fs, trash.expunge_steps(home, DAY, T0, immediate=False))
    assert deleted == [old]
    checkpoint = f"{home}/{trash.checkpoint_name(T0)}"
    assert fs.kinds[f"{checkpoint}/c"] is False and f"{home}/Current" not in fs.kinds
    assert f"{young}/b" in fs.kinds and f"{home}/not-a-checkpoint/d" in fs.kinds
    # a second expunge in the same second: a -1 checkpoint, nothing else
    fs.add(f"{home}/Current/e")
    assert trash.run_sync(fs, trash.expunge_steps(home, DAY, T0, immediate=False)) == []
    assert fs.kinds[f"{checkpoint}-1/e"] is False


def test_expunge_immediate_deletes_everything_and_a_missing_trash_is_empty() -> None:
    fs = FakeFs()
    home = "/.Trash/alice"
    fs.add(f"{home}/{trash.checkpoint_name(T0 - 1000)}/a")
    fs.add(f"{home}/Current/b")
    deleted = trash.run_sync(fs, trash.expunge_steps(home, DAY, T0, immediate=True))
    assert sorted(deleted) == sorted(
        [f"{home}/{trash.checkpoint_name(T0 - 1000)}", f"{home}/{trash.checkpoint_name(T0)}"]
    )
    assert fs.ls(home) == []
    assert trash.run_sync(FakeFs(), trash.expunge_steps("/.Trash/bob", DAY, T0, False)) == []


def test_the_async_driver_takes_the_same_steps() -> None:
    fs = FakeFs()
    fs.add("/d/f")
    steps = trash.move_steps("alice", "/d/f", clock())
    where = asyncio.run(trash.run_async(AsyncFakeFs(fs), steps))
    assert where == "/.Trash/alice/Current/d/f"
    expunged = trash.expunge_steps("/.Trash/alice", DAY, T0, immediate=True)
    assert len(asyncio.run(trash.run_async(AsyncFakeFs(fs), expunged))) == 1
    assert fs.ls("/.Trash/alice") == []


def test_checkpoint_names_and_owners() -> None:
    assert trash.checkpoint_name(T0) == "231114221320"
    assert trash.checkpoint_time_ms("231114221320") == T0
    assert trash.checkpoint_time_ms("231114221320-3") == T0
    for other in ("Current", "2311142213", "991399999999", "x31114221320"):
        assert trash.checkpoint_time_ms(other) is None
    assert trash.home_owner("/.Trash/alice/Current/x") == "alice"
    assert trash.home_owner("/.Trash/alice") == "alice"
    assert trash.home_owner("/.Trash") is None and trash.home_owner("/data") is None
    with pytest.raises(InvalidArgument):
        trash.home("a/b")


def test_the_emptier_runs_at_multiples_of_the_interval_whenever_it_starts() -> None:
    from keelfs.master.trash_emptier import until_next_round

    assert until_next_round(DAY * 5 + 1000, DAY) == DAY - 1000
    assert until_next_round(DAY * 5, DAY) == DAY  # just ran: the next one
    assert until_next_round(7_500, 4_000) == 500


def test_the_emptier_waits_for_the_shard_map_instead_of_dying() -> None:
    """A master's emptier may reach its first round before the master has its shard map (the
    map "has no shards" then). It must treat that as "not designated" and go on: it died of
    it once, and that master never emptied the trash (CI, with a 10 s interval)."""
    from types import SimpleNamespace

    from keelfs.master.trash_emptier import TrashEmptier
    from keelfs.meta.shardmap import ShardMap

    fs = FakeFs()
    fs.add("/.Trash/alice/Current/f")
    leader = SimpleNamespace(group=SimpleNamespace(is_leader=True))
    node: Any = SimpleNamespace(
        shard_map=ShardMap(version=0, shards={}),
        shards={"s1": leader},
        config=SimpleNamespace(trash_interval_ms=30),
        internal=AsyncFakeFs(fs),
    )
    emptier = TrashEmptier(node)
    assert not emptier.designated()

    async def main() -> None:
        task = asyncio.create_task(emptier.loop())
        try:
            await asyncio.sleep(0.1)  # rounds with no map
            assert not task.done() and emptier.rounds == 0
            node.shard_map = ShardMap(version=1, shards={"s1": {1: "a"}})
            for _ in range(100):
                if emptier.rounds:
                    break
                await asyncio.sleep(0.02)
            assert emptier.rounds >= 1 and "/.Trash/alice/Current" not in fs.kinds
        finally:
            task.cancel()

    asyncio.run(main())
