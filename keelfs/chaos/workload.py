"""The workers of ``keelfs chaos``: writers, renamers and contenders, each a thread sharing one
client, each recording what the cluster acknowledged (``keelfs.chaos.model``).

- a **writer** owns ``ROOT/w<i>/d0..d3``: it creates files of random sizes (0 B to 4 MiB,
  some with a 64-256 KiB block size so that they span many blocks), overwrites, appends to
  (``open(path, "ab")``) and truncates (the files whose bytes it remembers, at most 1 MiB)
  and deletes its own files and reads acknowledged ones back;
- a **renamer** owns ``ROOT/r<i>/d0..d3``: it keeps a few files and moves them between its
  directories, preferring a target directory on another shard, some of the moves overwriting
  another of its files;
- **contenders** share six names, ``ROOT/x/a/c0..c2`` and ``ROOT/x/b/c0..c2`` (the two
  directories usually on different shards): they create (exclusively or overwriting), rename
  (overwriting) and delete them at the same time.

A payload starts with a tag naming its writer and sequence number, so two writes never carry
the same bytes (except empty files).
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from keelfs.chaos.model import (
    ABSENT,
    FAILED,
    OK,
    UNKNOWN,
    ContendedLog,
    ContendedOp,
    Expected,
    Outcome,
    md5,
)
from keelfs.errors import AlreadyExists, OperationError, SessionExpired

__all__ = ["Stats", "Worker", "append_file", "classify", "make_workers", "put_file"]

DIRS_PER_WORKER = 4
CONTENDED_DIRS = ("a", "b")
CONTENDED_NAMES = 3
_MULTI_BLOCK_SIZES = (64 << 10, 128 << 10, 256 << 10)


def classify(exc: BaseException | None) -> tuple[Outcome, str]:
    """A metadata operation's outcome: refused (an ``OperationError``: nothing applied) or
    unknown (anything else: a timeout, ``OutcomeUnknown``, an expired session)."""
    if exc is None:
        return OK, ""
    name = type(exc).__name__
    if isinstance(exc, OperationError) and not isinstance(exc, SessionExpired):
        return FAILED, name
    return UNKNOWN, name


def put_file(
    fs: Any, path: str, data: bytes, *, overwrite: bool, block_size: int | None = None
) -> tuple[Outcome, str, BaseException | None]:
    """Create file ``path`` holding ``data``, and the outcome: a refusal of its ``Create``
    (an ``OperationError``: the name exists, another writer holds it) means nothing happened;
    any failure after the create (even a refusal, e.g. of a block allocation after the file
    moved to another shard) may have left part of the file."""
    try:
        f = fs.open(path, "wb", overwrite=overwrite, block_size=block_size)
    except Exception as exc:
        return (*classify(exc), exc)
    return _write_and_close(f, data)


def append_file(fs: Any, path: str, data: bytes) -> tuple[Outcome, str, BaseException | None]:
    """Append ``data`` to file ``path``, and the outcome: a refusal of the ``Append`` (no such
    file, another writer holds it) means nothing happened; any failure after it may have left
    part of the bytes appended (or the file under construction until its lease recovery)."""
    try:
        f = fs.open(path, "ab")
    except Exception as exc:
        return (*classify(exc), exc)
    return _write_and_close(f, data)


def _write_and_close(f: Any, data: bytes) -> tuple[Outcome, str, BaseException | None]:
    """Write ``data`` to the open file ``f`` and close it, and the outcome: any failure here
    may have left part of the bytes (an abort is tried; the lease recovers the rest)."""
    try:
        try:
            f.write(data)
        except BaseException:
            with contextlib.suppress(Exception):
                f.abort()
            raise
        f.close()
    except Exception as exc:
        return UNKNOWN, type(exc).__name__, exc
    return OK, "", None


@dataclass
class Stats:
    """Operations by kind and outcome, and the errors behind the failed and unknown ones."""

    operations: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    errors: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    samples: dict[str, str] = field(default_factory=dict)
    """The first message of each kind of error ("kind/Error")."""
    bytes_written: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def count(
        self,
        kind: str,
        outcome: str,
        error: str = "",
        written: int = 0,
        exc: BaseException | None = None,
    ) -> None:
        with self._lock:
            self.operations[kind][outcome] += 1
            if error:
                self.errors[kind][error] += 1
                if exc is not None:
                    self.samples.setdefault(f"{kind}/{error}", str(exc)[:300])
            self.bytes_written += written

    def total(self) -> int:
        with self._lock:
            return sum(sum(c.values()) for c in self.operations.values())

    def as_json(self) -> dict[str, Any]:
        with self._lock:
            return {
                "by_kind": {k: dict(sorted(v.items())) for k, v in sorted(self.operations.items())},
                "errors": {k: dict(v.most_common()) for k, v in sorted(self.errors.items())},
                "error_samples": dict(sorted(self.samples.items())),
                "total": sum(sum(c.values()) for c in self.operations.values()),
                "bytes_written": self.bytes_written,
            }


class ShardView:
    """Which shard holds a directory, from a ShardMap refreshed every few seconds (a
    resharding changes it under the workers' feet; a stale answer only makes a move less
    interesting)."""

    def __init__(self, fs: Any, every_s: float = 3.0) -> None:
        self._fs = fs
        self._every = every_s
        self._map: Any = None
        self._at = 0.0
        self._lock = threading.Lock()

    def shard_of(self, directory: str) -> str:
        with self._lock:
            if self._map is None or time.monotonic() - self._at > self._every:
                try:
                    self._map = self._fs.shard_map()
                    self._at = time.monotonic()
                except Exception:
                    if self._map is None:
                        return ""
            return str(self._map.shard_for_directory(directory))


class Worker(ABC):
    """One thread of the workload; ``step`` (each kind of worker's own) does one operation."""

    def __init__(
        self,
        name: str,
        fs: Any,
        rng: random.Random,
        stats: Stats,
        root: str,
        *,
        max_size: int = 4 << 20,
        epoch: float | None = None,
    ) -> None:
        self.name = name
        self.fs = fs
        self.rng = rng
        self.stats = stats
        self.root = root
        self.max_size = max_size
        self.expected = Expected(epoch)
        self._seq = 0
        self.read_violations: list[str] = []
        self.in_flight: tuple[str, ...] = ()
        """The names an operation under way may change (uncertain if the run ends first)."""

    # -- helpers --------------------------------------------------------------------------------
    def payload(self, size: int) -> bytes:
        self._seq += 1
        if size == 0:
            return b""
        tag = f"{self.name}:{self._seq}:".encode()
        return (tag + self.rng.randbytes(max(0, size - len(tag))))[: max(size, len(tag))]

    def size(self) -> int:
        r = self.rng.random()
        top = self.max_size
        if r < 0.08:
            return 0
        if r < 0.40:
            return self.rng.randint(1, min(top, 16 << 10))
        if r < 0.75:
            return self.rng.randint(1, min(top, 512 << 10))
        if r < 0.95:
            return self.rng.randint(1, min(top, 2 << 20))
        return self.rng.randint(1, top)

    def block_size(self, size: int) -> int | None:
        if size > 64 << 10 and self.rng.random() < 0.35:
            return self.rng.choice(_MULTI_BLOCK_SIZES)
        return None

    def write(self, path: str, *, overwrite: bool, size: int | None = None) -> Outcome:
        n = self.size() if size is None else size
        data = self.payload(n)
        self.in_flight = (path,)
        outcome, error, exc = put_file(
            self.fs, path, data, overwrite=overwrite, block_size=self.block_size(n)
        )
        kind = "overwrite" if overwrite else "create"
        self.stats.count(kind, outcome, error, len(data) if outcome == OK else 0, exc)
        self.expected.write(path, md5(data), outcome, error)
        return outcome

    def delete(self, path: str) -> None:
        self.in_flight = (path,)
        outcome, error, exc = self._call(lambda: self.fs.delete(path))
        self.stats.count("delete", outcome, error, exc=exc)
        self.expected.delete(path, outcome, error)

    def rename(self, src: str, dst: str, kind: str) -> None:
        self.in_flight = (src, dst)
        outcome, error, exc = self._call(lambda: self.fs.rename(src, dst, overwrite=True))
        self.stats.count(kind, outcome, error, exc=exc)
        self.expected.rename(src, dst, outcome, error)

    def read_back(self, path: str) -> None:
        """Read an acknowledged file while faults go on: wrong bytes are a violation at once;
        a read that fails is only counted (the final check reads it again after healing)."""
        want = self.expected.certain(path)
        if want is None or want == ABSENT:
            return
        try:
            got = md5(self.fs.read_bytes(path))
        except Exception as exc:
            self.stats.count("read", UNKNOWN, type(exc).__name__)
            return
        self.stats.count("read", OK)
        if got != want:
            self.read_violations.append(f"{path}: read {got}, acknowledged {want}")

    @staticmethod
    def _call(fn: Callable[[], Any]) -> tuple[Outcome, str, BaseException | None]:
        try:
            fn()
        except Exception as exc:
            return (*classify(exc), exc)
        return OK, "", None

    def setup(self) -> None:  # noqa: B027 (a hook: most workers have nothing to set up)
        """Create the worker's directories (retried: faults may already be running)."""

    @abstractmethod
    def step(self) -> None:
        """Do one operation and record its outcome."""


class _OwnDirs(Worker):
    """A worker with directories of its own: ``ROOT/<name>/d0..d3``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dirs = [f"{self.root}/{self.name}/d{j}" for j in range(DIRS_PER_WORKER)]
        self._names = 0

    def setup(self) -> None:
        for d in self.dirs:
            _mkdir(self.fs, d)

    def new_name(self, directory: str | None = None) -> str:
        self._names += 1
        return f"{directory or self.rng.choice(self.dirs)}/f{self._names}"

    def present(self) -> list[str]:
        return self.expected.present()


class Writer(_OwnDirs):
    KEEP_AT_MOST = 100
    """Files a writer keeps (it deletes instead of creating beyond): a long run's disk use
    and final check stay bounded."""
    REMEMBER_AT_MOST = 1 << 20
    """The largest file whose bytes a writer keeps, to append to it and know the result."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.known: dict[str, bytes] = {}
        """The content of acknowledged files it may append to."""

    def write(self, path: str, *, overwrite: bool, size: int | None = None) -> Outcome:
        self.known.pop(path, None)
        n = self.size() if size is None else size
        data = self.payload(n)
        self.in_flight = (path,)
        outcome, error, exc = put_file(
            self.fs, path, data, overwrite=overwrite, block_size=self.block_size(n)
        )
        kind = "overwrite" if overwrite else "create"
        self.stats.count(kind, outcome, error, len(data) if outcome == OK else 0, exc)
        self.expected.write(path, md5(data), outcome, error)
        if outcome == OK and len(data) <= self.REMEMBER_AT_MOST:
            self.known[path] = data
        return outcome

    def append(self, path: str) -> None:
        old = self.known.pop(path)
        data = self.payload(self.rng.choice((1, 100, self.rng.randint(1, 300 << 10))))
        self.in_flight = (path,)
        outcome, error, exc = append_file(self.fs, path, data)
        self.stats.count("append", outcome, error, len(data) if outcome == OK else 0, exc)
        self.expected.append(path, md5(old + data), outcome, error)
        if outcome == FAILED:
            self.known[path] = old
        elif outcome == OK and len(old) + len(data) <= self.REMEMBER_AT_MOST:
            self.known[path] = old + data

    def truncate(self, path: str) -> None:
        old = self.known.pop(path)
        cut = old[: self.rng.randint(0, len(old))]
        self.in_flight = (path,)
        outcome, error, exc = self._call(lambda: self.fs.truncate(path, len(cut)))
        self.stats.count("truncate", outcome, error, exc=exc)
        self.expected.truncate(path, md5(cut), outcome, error)
        if outcome != UNKNOWN:
            self.known[path] = cut if outcome == OK else old

    def delete(self, path: str) -> None:
        self.known.pop(path, None)
        super().delete(path)

    def step(self) -> None:
        present = self.present()
        appendable = [p for p in present if p in self.known]
        r = self.rng.random()
        if r < 0.55 and len(present) >= self.KEEP_AT_MOST:
            self.delete(self.rng.choice(present))
        elif r < 0.55 or not present:
            self.write(self.new_name(), overwrite=False)
        elif r < 0.65:
            self.write(self.rng.choice(present), overwrite=True)
        elif r < 0.75:
            self.delete(self.rng.choice(present))
        elif r < 0.82 and appendable:
            self.append(self.rng.choice(appendable))
        elif r < 0.86 and appendable:
            self.truncate(self.rng.choice(appendable))
        else:
            self.read_back(self.rng.choice(present))


class Renamer(_OwnDirs):
    KEEP = 5

    def __init__(self, *args: Any, shards: ShardView, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shards = shards

    def step(self) -> None:
        present = self.present()
        if len(present) < self.KEEP:
            self.write(self.new_name(), overwrite=False, size=self.rng.randint(0, 256 << 10))
            return
        src = self.rng.choice(present)
        src_dir = src.rsplit("/", 1)[0]
        r = self.rng.random()
        if r < 0.10:
            self.delete(src)
        elif r < 0.20:
            self.read_back(src)
        elif r < 0.45:
            others = [p for p in present if p != src]
            self.rename(src, self.rng.choice(others), "rename_overwrite")
        else:
            self.rename(src, self.new_name(self._other_shard_dir(src_dir)), "rename")

    def _other_shard_dir(self, src_dir: str) -> str:
        here = self.shards.shard_of(src_dir)
        away = [d for d in self.dirs if d != src_dir and self.shards.shard_of(d) != here]
        return self.rng.choice(away or [d for d in self.dirs if d != src_dir])


class Contender(Worker):
    """Races the other contenders on a handful of shared names; its history goes to the
    shared :class:`ContendedLog` with each operation's start and end."""

    def __init__(self, *args: Any, log: ContendedLog, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log = log
        self.names = [
            f"{self.root}/x/{d}/c{k}" for d in CONTENDED_DIRS for k in range(CONTENDED_NAMES)
        ]

    def setup(self) -> None:
        for d in CONTENDED_DIRS:
            _mkdir(self.fs, f"{self.root}/x/{d}")

    def step(self) -> None:
        name = self.rng.choice(self.names)
        r = self.rng.random()
        start = time.monotonic()
        self.in_flight = tuple(self.names)
        if r < 0.45:
            overwrite = r >= 0.20
            data = self.payload(self.rng.choice((16, 4096, self.rng.randint(16, 200 << 10))))
            outcome, error, exc = put_file(self.fs, name, data, overwrite=overwrite)
            op = ContendedOp("write", name, start, time.monotonic(), outcome, md5(data))
            kind = "contended_overwrite" if overwrite else "contended_create"
        elif r < 0.75:
            dst = self.rng.choice([n for n in self.names if n != name])
            outcome, error, exc = self._call(lambda: self.fs.rename(name, dst, overwrite=True))
            op = ContendedOp("rename", name, start, time.monotonic(), outcome, dst=dst)
            kind = "contended_rename"
        else:
            outcome, error, exc = self._call(lambda: self.fs.delete(name))
            op = ContendedOp("delete", name, start, time.monotonic(), outcome)
            kind = "contended_delete"
        self.stats.count(kind, outcome, error, exc=exc)
        self.log.add(op)


def _mkdir(fs: Any, directory: str, attempts: int = 10) -> None:
    """``mkdir -p`` retried (a fault may be under way; an earlier attempt may have applied)."""
    for i in range(attempts):
        try:
            fs.mkdir(directory, parents=True)
            return
        except AlreadyExists:
            return
        except Exception:
            if i == attempts - 1:
                raise
            time.sleep(0.5)


def make_workers(
    fs: Any,
    seed: int,
    root: str,
    stats: Stats,
    log: ContendedLog,
    *,
    writers: int,
    renamers: int,
    contenders: int,
    max_size: int,
    epoch: float,
) -> list[Worker]:
    """The workers, each with its own random stream drawn from ``seed``."""
    shards = ShardView(fs)
    out: list[Worker] = []

    def rng(name: str) -> random.Random:
        return random.Random(f"{seed}:{name}")

    for i in range(writers):
        name = f"w{i}"
        out.append(Writer(name, fs, rng(name), stats, root, max_size=max_size, epoch=epoch))
    for i in range(renamers):
        name = f"r{i}"
        out.append(
            Renamer(name, fs, rng(name), stats, root, max_size=max_size, epoch=epoch, shards=shards)
        )
    for i in range(contenders):
        name = f"x{i}"
        out.append(
            Contender(name, fs, rng(name), stats, root, max_size=max_size, epoch=epoch, log=log)
        )
    return out
