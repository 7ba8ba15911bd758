"""Determinism, restarts and snapshots of the shard state machine (RocksDB-backed)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from meta_helpers import T0, Driver, formatted, state, workload

from keelfs.meta.commands import Create, Mkdir
from keelfs.meta.kvstore import encode_snapshot
from keelfs.meta.namespace import ShardStateMachine
from keelfs.runtime.statemachine import StateMachine
from keelfs.storage.errors import SnapshotCorruptedError


def test_is_a_runtime_state_machine() -> None:
    sm: StateMachine = ShardStateMachine(None)
    assert sm.applied_index() == 0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_replay_is_deterministic(tmp_path: Path, seed: int) -> None:
    """The same log applied to fresh state machines (RocksDB and memory) gives identical
    snapshots, byte for byte, and identical replies."""
    a = formatted(ShardStateMachine(tmp_path / "a"))
    workload(a, seed, 400)
    b_sm = ShardStateMachine(tmp_path / "b")
    c_sm = ShardStateMachine(None)
    for index, data in a.log:
        rb = b_sm.apply(index, data)
        rc = c_sm.apply(index, data)
        assert rb == rc
    assert a.sm.snapshot() == b_sm.snapshot() == c_sm.snapshot()
    assert a.sm.applied_index() == b_sm.applied_index() == a.index
    assert len(state(a.sm)) > 20  # the workload left something behind
    a.sm.close()
    b_sm.close()


def test_replies_replay_identically(tmp_path: Path) -> None:
    a = formatted(ShardStateMachine(None))
    workload(a, 7, 300)
    replies_a = []
    b = ShardStateMachine(None)
    c = ShardStateMachine(None)
    for index, data in a.log:
        replies_a.append(b.apply(index, data))
        assert c.apply(index, data) == replies_a[-1]


def test_restart_keeps_applied_index_and_namespace(tmp_path: Path) -> None:
    d = formatted(ShardStateMachine(tmp_path / "db"))
    s = d.session()
    d.ok(Mkdir("/a/b", parents=True))
    first = d.apply(Create("/a/b/f"), s, 1)
    before = state(d.sm)
    index = d.index
    d.sm.close()

    sm = ShardStateMachine(tmp_path / "db")
    assert sm.applied_index() == index
    assert state(sm) == before
    assert sm.stat("/a/b/f").lease_holder == s
    # exactly-once survives the restart: the retry gets the original reply
    d2 = Driver(sm)
    assert d2.apply(Create("/a/b/f"), s, 1) == first
    d2.ok(Mkdir("/a/c"))
    sm.close()


@pytest.mark.process
def test_crash_without_close_replays_only_the_tail(tmp_path: Path) -> None:
    """A process that dies without closing RocksDB (unsynced writes, WAL in the page cache)
    leaves a state that is exactly 'after entry applied_index()'."""
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from meta_helpers import formatted, workload
        from keelfs.meta.namespace import ShardStateMachine
        d = formatted(ShardStateMachine({str(tmp_path / "db")!r}))
        workload(d, 11, 200)
        os._exit(0)
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    # the same log, in memory, as the reference
    ref = formatted(ShardStateMachine(None))
    workload(ref, 11, 200)
    sm = ShardStateMachine(tmp_path / "db")
    applied = sm.applied_index()
    assert 0 < applied <= ref.index
    replica = ShardStateMachine(None)
    for index, data in ref.log:
        if index <= applied:
            replica.apply(index, data)
    assert state(sm) == state(replica)
    for index, data in ref.log:  # replay the tail after the applied index
        if index > applied:
            sm.apply(index, data)
    assert sm.snapshot() == ref.sm.snapshot()
    sm.close()


def test_snapshot_restore_round_trip(tmp_path: Path) -> None:
    a = formatted(ShardStateMachine(tmp_path / "a"))
    workload(a, 5, 300)
    half = len(a.log) // 2
    # b applies the first half, then gets a snapshot of a at the end (over its own state)
    b = ShardStateMachine(tmp_path / "b")
    for index, data in a.log[:half]:
        b.apply(index, data)
    b.restore(a.sm.snapshot(), a.index)
    assert b.applied_index() == a.index
    assert state(b) == state(a.sm)
    assert b.snapshot() == a.sm.snapshot()
    # both go on identically
    more = Driver(a.sm)
    workload(more, 6, 100)
    for index, data in more.log:
        b.apply(index, data)
    assert b.snapshot() == a.sm.snapshot()
    # and the restored state survives a restart
    b.close()
    b = ShardStateMachine(tmp_path / "b")
    assert b.snapshot() == a.sm.snapshot()
    b.close()
    a.sm.close()


def test_streamed_snapshot_in_many_chunks(tmp_path: Path) -> None:
    a = formatted(ShardStateMachine(tmp_path / "a"))
    workload(a, 8, 300)
    chunks = list(a.sm.snapshot_chunks(chunk_bytes=256))
    assert len(chunks) > 5
    assert b"".join(chunks) == a.sm.snapshot()
    b = ShardStateMachine(None)
    b.restore_chunks(iter(chunks), a.index)
    assert state(b) == state(a.sm)
    a.sm.close()


def test_snapshot_is_of_the_moment_it_was_taken(shard: Driver) -> None:
    shard.ok(Mkdir("/before"))
    chunks: Iterator[bytes] = shard.sm.snapshot_chunks(chunk_bytes=64)
    expected = state(shard.sm)
    index = shard.sm.applied_index()
    for i in range(50):
        shard.ok(Mkdir(f"/after-{i}"))
    other = ShardStateMachine(None)
    other.restore_chunks(chunks, index)
    assert state(other) == expected
    assert not other.exists("/after-0") and other.exists("/before")


def test_restore_empty(shard: Driver) -> None:
    shard.ok(Mkdir("/a"))
    shard.sm.restore(b"", 99)
    assert shard.sm.applied_index() == 99
    assert state(shard.sm) == []
    assert not shard.sm.exists("/")


def test_damaged_snapshot_leaves_a_state_the_runtime_restores_again(tmp_path: Path) -> None:
    a = formatted(ShardStateMachine(None))
    workload(a, 9, 200)
    blob = a.sm.snapshot()
    b = ShardStateMachine(tmp_path / "b")
    with pytest.raises(SnapshotCorruptedError):
        b.restore(blob[:-10], a.index)
    assert b.applied_index() == 0
    b.close()
    b = ShardStateMachine(tmp_path / "b")  # the marker makes a restart start from nothing
    assert b.applied_index() == 0 and state(b) == []
    b.restore(blob, a.index)
    assert state(b) == state(a.sm)
    b.close()


def test_restore_cut_short_by_a_crash(tmp_path: Path) -> None:
    a = formatted(ShardStateMachine(None))
    workload(a, 10, 200)
    chunks = list(a.sm.snapshot_chunks(chunk_bytes=128))

    def dying() -> Iterator[bytes]:
        yield from chunks[: len(chunks) // 2]
        raise KeyboardInterrupt  # the process is going down mid-restore

    b = formatted(ShardStateMachine(tmp_path / "b"))
    workload(b, 3, 50)
    with pytest.raises(KeyboardInterrupt):
        b.sm.restore_chunks(dying(), a.index)
    b.sm.close()
    sm = ShardStateMachine(tmp_path / "b")
    assert sm.applied_index() == 0 and state(sm) == []
    sm.close()


def test_snapshot_rejects_local_keys(tmp_path: Path) -> None:
    bad = b"".join(encode_snapshot([(b"\x00applied", b"x")], 5))
    sm = ShardStateMachine(None)
    with pytest.raises(SnapshotCorruptedError, match="local key"):
        sm.restore(bad, 5)


def test_now_is_recorded_not_read(tmp_path: Path) -> None:
    d = formatted(
        ShardStateMachine(None),
    )
    d.ok(Mkdir("/a"), now=T0 + 123)
    assert d.sm.stat("/a").mtime == T0 + 123
