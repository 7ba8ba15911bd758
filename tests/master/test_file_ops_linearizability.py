"""The file operations under concurrency and a killed shard leader: a recorded history of
appends, truncates, concats, trash moves and restores, creates and stats is linearizable with
respect to :class:`keelfs.testing.linearizability.FileSizeModel` (files and their sizes, and
the trash's copy of each name).

Client threads (each with its own ``Client``) work on three names in one directory; the
directory's trash counterpart (``/.Trash/<user>/Current/<dir>``) is on the other shard, so a
trash move and a restore are cross-shard transactions, and a concat's files all on one shard.
Files are small (their bytes in their records: no chunk servers needed) and sizes are what the
model checks: an append lost or applied twice, a truncate or concat seen half done, a file
both in the trash and in place, would each show as a size no order of the operations explains.
Midway the leader of the directory's shard is killed (-9) and restarted.

How answers are recorded: a refusal is the model's output (``ALREADY_EXISTS`` -> "exists",
``NOT_FOUND`` -> "not_found", a truncate past the end -> "too_long", ``LEASE_CONFLICT`` ->
``BUSY``: a file involved is being written); a write that raised a retryable error has an
unknown outcome; a read that failed is dropped. After the threads stop, every name is read
once more (recorded).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from typing import Any

import pytest

from keelfs.client import Client
from keelfs.errors import (
    AlreadyExists,
    InvalidArgument,
    KeelError,
    LeaseConflict,
    NotFound,
    RetryableError,
)
from keelfs.server.metacluster import MetaCluster
from keelfs.testing.linearizability import (
    BUSY,
    TRASHED_ELSEWHERE,
    FileSizeModel,
    HistoryRecorder,
    check,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

THREADS = 4
OPS_PER_THREAD = 60
NAMES = ("x", "y", "z")
CLIENT_DEADLINE_S = 10.0


@pytest.fixture(scope="module")
def cluster(failpoint_cluster: MetaCluster) -> MetaCluster:
    return failpoint_cluster


def _places(fs: Client) -> tuple[str, str]:
    """A fresh directory and its trash counterpart, on different shards."""
    m = fs.shard_map()
    user = fs.server_defaults().user or "root"
    for i in range(1000):
        base = f"/flin/d{i}"
        trash_dir = f"/.Trash/{user}/Current{base}"
        if m.shard_for_directory(base) != m.shard_for_directory(trash_dir) and not fs.exists(base):
            fs.mkdir(base, parents=True)
            return base, trash_dir
    raise AssertionError("no such directory")


def _random_op(rng: random.Random) -> tuple[Any, ...]:
    name = rng.choice(NAMES)
    kind = rng.choices(
        ["create", "append", "truncate", "concat", "trash", "restore", "stat", "stat_trash"],
        weights=[3, 4, 2, 2, 2, 2, 4, 1],
    )[0]
    if kind == "create":
        return (kind, name, rng.randint(1, 3))
    if kind == "append":
        return (kind, name, rng.randint(1, 3))
    if kind == "truncate":
        return (kind, name, rng.randint(0, 4))
    if kind == "concat":
        return (kind, name, (rng.choice([n for n in NAMES if n != name]),))
    return (kind, name)


def _perform(fs: Client, base: str, trash_dir: str, op: tuple[Any, ...]) -> Any:
    kind, name = op[0], op[1]
    path, kept = f"{base}/{name}", f"{trash_dir}/{name}"
    try:
        if kind == "create":
            fs.write_bytes(path, b"c" * op[2])
        elif kind == "append":
            with fs.open(path, "ab") as f:
                f.write(b"a" * op[2])
        elif kind == "truncate":
            fs.truncate(path, op[2])
        elif kind == "concat":
            fs.concat(path, [f"{base}/{n}" for n in op[2]])
        elif kind == "trash":
            return "ok" if fs.move_to_trash(path) == kept else TRASHED_ELSEWHERE
        elif kind == "restore":
            fs.rename(kept, path)
        else:
            return fs.stat(path if kind == "stat" else kept).length
    except NotFound:
        return None if kind.startswith("stat") else "not_found"
    except AlreadyExists:
        return "exists"
    except LeaseConflict:
        return "exists" if kind == "create" else BUSY
    except InvalidArgument as exc:
        if kind == "truncate" and exc.details.get("argument") == "length":
            return "too_long"
        raise
    return "ok"


class Workload:
    def __init__(self, cluster: MetaCluster, base: str, trash_dir: str) -> None:
        self.cluster, self.base, self.trash_dir = cluster, base, trash_dir
        self.rec = HistoryRecorder()
        self.failures: list[str] = []
        self.done = 0
        self._lock = threading.Lock()
        # half the clients spread their fresh reads (followers answer them after a ReadIndex
        # barrier), half send them to the leader (answered from its lease): both are checked
        self.clients = [
            cluster.client(deadline=CLIENT_DEADLINE_S, attempt_timeout=1.0, spread_reads=c % 2 == 0)
            for c in range(THREADS)
        ]

    def run_thread(self, c: int) -> None:
        rng = random.Random(c)
        fs = self.clients[c]
        for _ in range(OPS_PER_THREAD):
            self.one(c, fs, _random_op(rng))
            with self._lock:
                self.done += 1

    def one(self, c: int, fs: Client, op: tuple[Any, ...]) -> None:
        h = self.rec.invoke(c, op)
        try:
            out = _perform(fs, self.base, self.trash_dir, op)
        except RetryableError:
            if op[0].startswith("stat"):
                self.rec.fail_definite(h)
            else:
                self.rec.fail_unknown(h)
        except KeelError as exc:
            self.rec.fail_unknown(h)
            self.failures.append(f"{op}: {exc!r}")
        else:
            self.rec.complete(h, out)


def test_file_operations_are_linearizable_across_a_killed_leader(cluster: MetaCluster) -> None:
    setup = cluster.client(deadline=60.0)
    base, trash_dir = _places(setup)
    for name in NAMES:
        setup.write_bytes(f"{base}/{name}", b"i")
    w = Workload(cluster, base, trash_dir)
    threads = [threading.Thread(target=w.run_thread, args=(c,)) for c in range(THREADS)]
    for t in threads:
        t.start()
    total = THREADS * OPS_PER_THREAD
    cluster.wait_for(lambda: w.done >= total // 3 or None, 120, "a third of the operations")
    victim = cluster.leader(setup.shard_map().shard_for_directory(base))
    cluster.kill9(victim)
    time.sleep(1.0)  # the others elect a leader and go on without it
    cluster.restart(victim)
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads)
    final = cluster.client(deadline=60.0)
    for name in NAMES:
        for kind in ("stat", "stat_trash"):
            w.one(0, final, (kind, name))
    assert not w.failures, w.failures
    history = w.rec.history()
    kinds = {op.input[0] for op in history if op.outcome_known}
    assert {"append", "truncate", "concat", "trash", "restore"} <= kinds, kinds
    outcomes = Counter(
        f"{op.input[0]}:{op.output if op.outcome_known else '?'}"
        for op in history
        if not op.input[0].startswith("stat")
    )
    print(f"{len(history)} operations: {dict(sorted(outcomes.items()))}")
    result = check(FileSizeModel([(n, 1) for n in NAMES]), history, timeout_s=300)
    assert result.ok, result.explanation
