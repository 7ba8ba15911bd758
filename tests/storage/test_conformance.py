"""One behaviour, two stores: ``MemoryStorage`` (the reference) and ``RocksLogStorage``.

The first part runs every test against both through the ``store`` fixture; the differential
property test drives both with the same random operations and compares everything observable.
The second part covers what only the durable store has: reopening, many groups in one
database, group commit, and snapshot files that are half-written or corrupted.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import google_crc32c
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keelfs.raft.errors import CompactedError, SnapshotOutOfDateError, UnavailableError
from keelfs.raft.messages import ConfState, Entry, EntryType, HardState, SnapshotMeta
from keelfs.raft.storage import MemoryStorage, limit_size
from keelfs.storage import rocks
from keelfs.storage.errors import SnapshotCorruptedError, StorageCorruptedError
from keelfs.storage.rocks import RocksEngine
from keelfs.storage.snapshots import SnapshotStore

CONF = ConfState(frozenset({1, 2, 3}))
CONF2 = ConfState(frozenset({1, 2}), frozenset({4}))

Store = Any  # MemoryStorage | RocksLogStorage: same methods, no shared nominal type


def ents(lo: int, hi: int, term: int, size: int = 3) -> list[Entry]:
    """Entries ``lo..hi`` inclusive; the payload names index and term, so mix-ups show."""
    return [Entry(term, i, f"{i}@{term}".encode().ljust(size, b".")) for i in range(lo, hi + 1)]


def log_of(s: Store) -> list[tuple[int, int, bytes]]:
    if s.last_index() < s.first_index():
        return []
    return [
        (e.index, e.term, e.data) for e in s.entries(s.first_index(), s.last_index() + 1, 1 << 40)
    ]


def stream(s: Store, meta: SnapshotMeta, step: int) -> bytes:
    out, offset, done = bytearray(), 0, False
    while not done:
        chunk, done = s.snapshot_chunk(meta, offset, step)
        assert len(chunk) <= step
        out += chunk
        offset += len(chunk)
    return bytes(out)


def receive(s: Store, meta: SnapshotMeta, data: bytes, step: int = 5) -> None:
    for offset in range(0, max(len(data), 1), step):
        s.write_snapshot_chunk(meta, offset, data[offset : offset + step])


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[RocksEngine]:
    e = RocksEngine(tmp_path / "node")
    yield e
    e.close()


@pytest.fixture(params=["memory", "rocks"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Store]]:
    """A factory of fresh stores: empty, or bootstrapped from a membership."""
    if request.param == "memory":
        yield lambda conf=None: MemoryStorage(conf)
        return
    e = RocksEngine(tmp_path / "node")
    counter = itertools.count()
    yield lambda conf=None: e.group(f"g{next(counter)}", conf)
    e.close()


@pytest.fixture
def store(make: Callable[..., Store]) -> Store:
    return make()


# -- conformance -------------------------------------------------------------------------------
def test_empty_log_conventions(store: Store) -> None:
    assert store.first_index() == 1
    assert store.last_index() == 0
    assert store.term(0) == 0
    assert store.initial_state() == (HardState(), ConfState())
    assert store.snapshot_meta() == SnapshotMeta()
    assert store.snapshot_chunk(store.snapshot_meta(), 0, 10) == (b"", True)
    assert store.snapshot_data() == b""
    assert store.entries(1, 1, 100) == []
    with pytest.raises(UnavailableError):
        store.term(1)
    with pytest.raises(CompactedError):
        store.term(-1)
    with pytest.raises(CompactedError):
        store.entries(0, 1, 100)
    with pytest.raises(UnavailableError):
        store.entries(1, 2, 100)
    store.append([])
    assert store.last_index() == 0


def test_bootstrap_conventions(make: Callable[..., Store]) -> None:
    store = make(CONF)
    meta = SnapshotMeta(1, 1, CONF)
    assert (store.first_index(), store.last_index(), store.term(1)) == (2, 1, 1)
    assert store.initial_state() == (HardState(1, 0, 1), CONF)
    assert store.snapshot_meta() == meta
    assert store.snapshot_chunk(meta, 0, 10) == (b"", True)
    assert store.snapshot_data() == b""
    with pytest.raises(CompactedError):
        store.term(0)
    with pytest.raises(CompactedError):
        store.entries(1, 2, 100)
    store.append(ents(1, 3, 1))  # index 1 is covered by the snapshot: clipped
    assert store.entries(2, 4, 100) == ents(2, 3, 1)
    store.compact(1)  # nothing beyond the bootstrap snapshot to drop
    assert store.first_index() == 2


def test_append_and_read(store: Store) -> None:
    store.append(ents(1, 5, 1))
    store.append(ents(6, 8, 2))
    assert (store.first_index(), store.last_index()) == (1, 8)
    assert [store.term(i) for i in range(0, 9)] == [0, 1, 1, 1, 1, 1, 2, 2, 2]
    assert store.entries(2, 7, 1 << 20) == ents(2, 5, 1) + ents(6, 6, 2)
    assert store.entries(4, 4, 1 << 20) == []
    with pytest.raises(UnavailableError):
        store.term(9)
    with pytest.raises(UnavailableError):
        store.entries(8, 10, 1 << 20)


def test_append_with_gap_is_refused(store: Store) -> None:
    store.append(ents(1, 3, 1))
    with pytest.raises(ValueError, match="gap"):
        store.append(ents(5, 6, 1))
    assert store.last_index() == 3


def test_overwrite_truncates_conflicting_suffix(store: Store) -> None:
    store.append(ents(1, 10, 1))
    store.append(ents(4, 5, 2))  # a new leader's entries replace 4..10
    assert store.last_index() == 5
    assert log_of(store) == [(e.index, e.term, e.data) for e in ents(1, 3, 1) + ents(4, 5, 2)]
    with pytest.raises(UnavailableError):
        store.term(6)
    store.append(ents(6, 7, 3))
    store.append(ents(2, 2, 4))  # cut almost everything
    assert log_of(store) == [(e.index, e.term, e.data) for e in ents(1, 1, 1) + ents(2, 2, 4)]
    store.append(ents(1, 1, 5))  # and everything
    assert log_of(store) == [(1, 5, b"1@5")]


def test_append_same_entries_again_is_idempotent(store: Store) -> None:
    store.append(ents(1, 5, 1))
    store.append(ents(2, 3, 1))  # MemoryStorage semantics: the suffix after 3 is cut
    assert store.last_index() == 3
    assert log_of(store) == [(e.index, e.term, e.data) for e in ents(1, 3, 1)]


@pytest.mark.parametrize("max_bytes", [0, 1, 27, 28, 55, 56, 100, 1 << 20])
def test_entries_respects_max_bytes(store: Store, max_bytes: int) -> None:
    log = [Entry(1, i, b"x" * (i % 7)) for i in range(1, 21)]
    store.append(log)
    for lo, hi in [(1, 21), (5, 9), (20, 21), (3, 4)]:
        got = store.entries(lo, hi, max_bytes)
        assert got == limit_size(log[lo - 1 : hi - 1], max_bytes)
        assert len(got) >= 1


def test_create_snapshot_and_compact(store: Store) -> None:
    store.append(ents(1, 10, 1) + ents(11, 12, 2))
    with pytest.raises(UnavailableError):
        store.create_snapshot(13, CONF2, b"x")
    meta = store.create_snapshot(11, CONF2, b"image-at-11")
    assert meta == SnapshotMeta(11, 2, CONF2)
    assert store.snapshot_meta() == meta
    assert store.initial_state()[1] == CONF2
    assert store.snapshot_data() == b"image-at-11"
    with pytest.raises(SnapshotOutOfDateError):
        store.create_snapshot(11, CONF2, b"again")
    with pytest.raises(SnapshotOutOfDateError):
        store.create_snapshot(5, CONF2, b"older")
    # the log is untouched until compacted
    assert (store.first_index(), store.last_index()) == (1, 12)
    with pytest.raises(ValueError, match="beyond snapshot"):
        store.compact(12)
    store.compact(8)
    assert (store.first_index(), store.last_index()) == (9, 12)
    assert store.term(8) == 1
    with pytest.raises(CompactedError):
        store.term(7)
    with pytest.raises(CompactedError):
        store.entries(8, 10, 1 << 20)
    assert store.entries(9, 13, 1 << 20) == ents(9, 10, 1) + ents(11, 12, 2)
    store.compact(5)  # already compacted: nothing to do
    assert store.first_index() == 9
    store.compact(11)
    assert (store.first_index(), store.last_index(), store.term(11)) == (12, 12, 2)
    # appending below the first index is clipped, entirely below is ignored
    store.append(ents(5, 9, 1))
    assert store.last_index() == 12
    store.append(ents(10, 13, 2))
    assert (store.first_index(), store.last_index()) == (12, 13)
    assert store.entries(12, 14, 1 << 20) == ents(12, 13, 2)


def test_snapshot_chunks_stream(store: Store) -> None:
    data = bytes(range(256)) * 3
    store.append(ents(1, 4, 1))
    meta = store.create_snapshot(3, CONF, data)
    for step in (1, 7, 256, 768, 10_000):
        assert stream(store, meta, step) == data
    assert store.snapshot_chunk(meta, len(data) - 2, 10) == (data[-2:], True)
    assert store.snapshot_chunk(meta, 0, len(data)) == (data, True)
    assert store.snapshot_chunk(meta, 0, len(data) - 1)[1] is False
    newer = store.create_snapshot(4, CONF, b"newer")
    with pytest.raises(SnapshotOutOfDateError):
        store.snapshot_chunk(meta, 0, 10)
    assert stream(store, newer, 2) == b"newer"


def test_empty_snapshot_image(store: Store) -> None:
    store.append(ents(1, 2, 1))
    meta = store.create_snapshot(2, CONF, b"")
    assert store.snapshot_chunk(meta, 0, 10) == (b"", True)
    assert store.snapshot_data() == b""


def test_install_snapshot_keeps_matching_suffix(store: Store) -> None:
    store.append(ents(1, 10, 1))
    store.set_hard_state(HardState(1, 2, 4))
    meta = SnapshotMeta(6, 1, CONF2)
    data = b"state machine at 6" * 5
    receive(store, meta, data)
    assert store.install_snapshot(meta) == data
    assert store.snapshot_meta() == meta
    assert store.snapshot_data() == data
    assert (store.first_index(), store.last_index()) == (7, 10)
    assert store.term(6) == 1
    assert store.entries(7, 11, 1 << 20) == ents(7, 10, 1)
    assert store.initial_state() == (HardState(1, 2, 4), CONF2)
    assert stream(store, meta, 11) == data
    with pytest.raises(SnapshotOutOfDateError):
        store.install_snapshot(meta)  # nothing staged any more


@pytest.mark.parametrize(("index", "term"), [(6, 2), (15, 2), (2, 1)])
def test_install_snapshot_drops_conflicting_log(store: Store, index: int, term: int) -> None:
    """A term mismatch at the snapshot index, an index beyond the log, or an index below an
    earlier snapshot all discard the whole log, as MemoryStorage does."""
    store.append(ents(1, 10, 1))
    store.create_snapshot(4, CONF, b"old")
    store.compact(4)
    meta = SnapshotMeta(index, term, CONF2)
    receive(store, meta, b"new image")
    assert store.install_snapshot(meta) == b"new image"
    assert (store.first_index(), store.last_index()) == (index + 1, index)
    assert store.term(index) == term
    with pytest.raises(UnavailableError):
        store.term(index + 1)
    store.append(ents(index + 1, index + 2, term + 1))
    assert store.entries(index + 1, index + 3, 1 << 20) == ents(index + 1, index + 2, term + 1)


def test_install_same_snapshot_twice_replaces_image(store: Store) -> None:
    store.append(ents(1, 5, 1))
    meta = SnapshotMeta(3, 1, CONF)
    receive(store, meta, b"first")
    store.install_snapshot(meta)
    receive(store, meta, b"second!")
    assert store.install_snapshot(meta) == b"second!"
    assert store.snapshot_data() == b"second!"
    assert (store.first_index(), store.last_index()) == (4, 5)


def test_receive_chunk_protocol(store: Store) -> None:
    meta = SnapshotMeta(5, 2, CONF)
    other = SnapshotMeta(6, 2, CONF)
    store.write_snapshot_chunk(meta, 0, b"abc")
    with pytest.raises(ValueError, match="staged 3"):
        store.write_snapshot_chunk(meta, 5, b"zzz")
    store.write_snapshot_chunk(meta, 3, b"def")
    with pytest.raises(SnapshotOutOfDateError):
        store.install_snapshot(other)
    # a chunk of another snapshot not at offset 0 cannot start a staging area
    with pytest.raises(ValueError):
        store.write_snapshot_chunk(other, 3, b"x")
    # ...and it replaced the old staging area, as in MemoryStorage
    with pytest.raises(SnapshotOutOfDateError):
        store.install_snapshot(meta)
    # offset 0 restarts from scratch
    store.write_snapshot_chunk(meta, 0, b"abc")
    store.write_snapshot_chunk(meta, 3, b"def")
    store.write_snapshot_chunk(meta, 0, b"XY")
    store.write_snapshot_chunk(meta, 2, b"Z")
    assert store.install_snapshot(meta) == b"XYZ"
    assert store.snapshot_meta() == meta


def test_hard_state_round_trip(store: Store) -> None:
    for hs in [HardState(1, 0, 0), HardState(5, 3, 17), HardState(2**63, 2**40, 2**62)]:
        store.set_hard_state(hs)
        assert store.initial_state()[0] == hs
        assert store.hard_state == hs


def test_entry_types_and_binary_payloads(store: Store) -> None:
    log = [
        Entry(3, 1, b""),
        Entry(3, 2, bytes(range(256)), EntryType.CONF_CHANGE),
        Entry(2**62, 3, b"\x00" * 10_000),
    ]
    store.append(log)
    assert store.entries(1, 4, 1 << 20) == log


# -- differential property test ----------------------------------------------------------------
_OPS = [  # (weight, strategy)
    (
        40,
        st.tuples(
            st.just("append"),
            st.integers(-4, 1),
            st.integers(0, 6),
            st.integers(0, 2),
            st.binary(max_size=40),
        ),
    ),
    (15, st.tuples(st.just("read"), st.integers(-1, 10), st.integers(0, 12), st.integers(0, 120))),
    (10, st.tuples(st.just("hs"), st.integers(0, 9), st.integers(0, 3), st.integers(0, 30))),
    (10, st.tuples(st.just("snap"), st.integers(-1, 6), st.binary(max_size=30))),
    (10, st.tuples(st.just("compact"), st.integers(-6, 1))),
    (
        7,
        st.tuples(
            st.just("install"),
            st.integers(-5, 5),
            st.integers(0, 2),
            st.binary(max_size=30),
            st.integers(1, 9),
        ),
    ),
    (8, st.just(("reopen",))),
]
_op = st.sampled_from([strategy for weight, strategy in _OPS for _ in range(weight)]).flatmap(
    lambda strategy: strategy
)
"""Ops with arguments relative to the store's state, so that most of them are valid."""


def _observe(s: Store) -> tuple[object, ...]:
    terms = []
    for i in range(s.first_index() - 2, s.last_index() + 2):
        try:
            terms.append(s.term(i))
        except (CompactedError, UnavailableError) as e:
            terms.append(type(e).__name__)
    meta = s.snapshot_meta()
    return (
        s.first_index(),
        s.last_index(),
        log_of(s),
        terms,
        s.initial_state(),
        meta,
        s.snapshot_data(),
        stream(s, meta, 4),
    )


def _apply(s: Store, op: tuple[Any, ...]) -> object:
    """Run one op; return its result or the exception type it raised."""
    try:
        kind = op[0]
        last, term_now = s.last_index(), s.term(s.last_index())
        if kind == "append":
            _, at, n, bump, payload = op
            lo = max(1, last + at)
            return s.append([Entry(term_now + bump, i, payload) for i in range(lo, lo + n)])
        if kind == "hs":
            return s.set_hard_state(HardState(*op[1:]))
        if kind == "snap":
            return s.create_snapshot(s.snapshot_meta().index + op[1], CONF2, op[2])
        if kind == "compact":
            return s.compact(s.snapshot_meta().index + op[1])
        if kind == "install":
            _, at, bump, data, step = op
            meta = SnapshotMeta(max(1, last + at), term_now + bump, CONF)
            receive(s, meta, data, step)
            return s.install_snapshot(meta)
        _, at, n, max_bytes = op
        lo = s.first_index() + at
        return s.entries(lo, last + 2 if n == 12 else min(lo + n, last + 1), max_bytes)
    except (CompactedError, UnavailableError, SnapshotOutOfDateError, ValueError) as e:
        return type(e)


@settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(bootstrap=st.booleans(), ops=st.lists(_op, min_size=5, max_size=40))
def test_differential_against_memory_storage(
    tmp_path_factory: pytest.TempPathFactory, bootstrap: bool, ops: list[tuple[Any, ...]]
) -> None:
    """Same ops, same results, same observable state; and the same again after any reopen."""
    conf = CONF if bootstrap else None
    path = tmp_path_factory.mktemp("diff")
    mem, e = MemoryStorage(conf), RocksEngine(path)
    try:
        durable = e.group("g", conf)
        for op in [*ops, ("reopen",)]:
            if op[0] == "reopen":
                e.close()
                e = RocksEngine(path)
                durable = e.group("g")
            else:
                assert _apply(durable, op) == _apply(mem, op), op
            assert _observe(durable) == _observe(mem), op
    finally:
        e.close()


# -- RocksDB specific: durability and isolation ------------------------------------------------
def test_reopen_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "node"
    with RocksEngine(path) as e:
        g = e.group("meta-0", CONF)
        g.append(ents(1, 30, 1) + ents(31, 40, 2))
        g.set_hard_state(HardState(2, 1, 35))
        g.set_membership({1: "10.0.0.1:7000", 2: "10.0.0.2:7000", 3: "[::1]:7000"})
        meta = g.create_snapshot(20, CONF2, b"image" * 1000)
        g.compact(15)
        g.append(ents(38, 45, 3))  # truncates 38..40 of term 2
    with RocksEngine(path) as e:
        assert e.group_ids() == ["meta-0"]
        g = e.group("meta-0", ConfState(frozenset({9})))  # conf ignored: the group exists
        assert g.initial_state() == (HardState(2, 1, 35), CONF2)
        assert g.membership() == {1: "10.0.0.1:7000", 2: "10.0.0.2:7000", 3: "[::1]:7000"}
        assert g.snapshot_meta() == meta
        assert g.snapshot_data() == b"image" * 1000
        assert (g.first_index(), g.last_index()) == (16, 45)
        assert g.term(15) == 1
        assert g.entries(16, 46, 1 << 20) == ents(16, 30, 1) + ents(31, 37, 2) + ents(38, 45, 3)
        path_ = g.snapshot_path()
        assert path_ is not None and path_.read_bytes() == b"image" * 1000


def test_group_created_with_addresses_atomically(tmp_path: Path) -> None:
    path = tmp_path / "node"
    with RocksEngine(path) as e:
        g = e.group("m", CONF, {1: "a:1", 2: "b:2", 3: "c:3"})
        assert g.membership() == {1: "a:1", 2: "b:2", 3: "c:3"}
    with RocksEngine(path) as e:
        g = e.group("m", ConfState(frozenset({7})), {7: "ignored:7"})  # exists: args ignored
        assert g.membership() == {1: "a:1", 2: "b:2", 3: "c:3"}
        assert g.initial_state() == (HardState(1, 0, 1), CONF)


def test_reopen_after_install_and_empty_log(tmp_path: Path) -> None:
    path = tmp_path / "node"
    with RocksEngine(path) as e:
        g = e.group("x", CONF)
        g.append(ents(1, 5, 1))
        meta = SnapshotMeta(9, 3, CONF2)
        receive(g, meta, b"remote image")
        g.install_snapshot(meta)
    with RocksEngine(path) as e:
        g = e.group("x")
        assert (g.first_index(), g.last_index(), g.term(9)) == (10, 9, 3)
        assert g.snapshot_meta() == meta and g.snapshot_data() == b"remote image"
        g.append(ents(10, 11, 3))
        assert g.entries(10, 12, 100) == ents(10, 11, 3)


def test_terms_beyond_the_cached_tail_come_from_rocksdb(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rocks, "TERM_TAIL_ON_OPEN", 4)
    path = tmp_path / "node"
    with RocksEngine(path) as e:
        g = e.group("g")
        for t in range(1, 11):
            g.append(ents(10 * t - 9, 10 * t, t))
    with RocksEngine(path) as e:
        g = e.group("g")
        assert [g.term(i) for i in range(1, 101)] == [(i + 9) // 10 for i in range(1, 101)]
        g.append(ents(50, 51, 11))  # truncate below the cached tail
        assert [g.term(i) for i in range(48, 52)] == [5, 5, 11, 11]
        assert g.last_index() == 51


def test_many_groups_are_isolated(engine: RocksEngine) -> None:
    names = ["a", "ab", "a\x00b", "b", "шард/7", "x" * 300, "..", "a/b"]
    for n, name in enumerate(names, start=1):
        g = engine.group(name)
        g.append(ents(1, 3 * n, n))
        g.set_hard_state(HardState(n, n, n))
        g.set_membership({n: f"host{n}:1"})
        g.create_snapshot(n, CONF, f"snap of {name}".encode())
    engine.group("ab").append(ents(2, 2, 99))
    engine.group("a").compact(1)
    engine.destroy_group("b")
    path = engine.path
    engine.close()
    with RocksEngine(path) as e:
        assert sorted(e.group_ids()) == sorted(set(names) - {"b"})
        for n, name in enumerate(names, start=1):
            if name == "b":
                continue
            g = e.group(name)
            assert g.initial_state() == (HardState(n, n, n), CONF)  # the snapshot's conf
            assert g.membership() == {n: f"host{n}:1"}
            assert g.snapshot_data() == f"snap of {name}".encode()
            expect = ents(1, 1, 2) + ents(2, 2, 99) if name == "ab" else ents(1, 3 * n, n)
            expect = expect[1:] if name == "a" else expect
            assert g.entries(g.first_index(), g.last_index() + 1, 1 << 20) == expect
        fresh = e.group("b")  # destroyed: starts over
        assert (fresh.last_index(), fresh.snapshot_meta()) == (0, SnapshotMeta())
        with pytest.raises(ValueError):
            e.group("")


def test_group_commit_across_groups(tmp_path: Path) -> None:
    path = tmp_path / "node"
    with RocksEngine(path) as e:
        groups = [e.group(f"shard-{i}") for i in range(10)]
        groups[0].append(ents(1, 5, 1))
        writes: list[int] = []
        real_write = e._write
        e._write = lambda wb, sync=True: (writes.append(len(wb)), real_write(wb, sync))[1]  # type: ignore
        with e.write_batch() as b:
            for i, g in enumerate(groups):
                b.append(g, ents(g.last_index() + 1, g.last_index() + 3, 2))
                b.set_hard_state(g, HardState(2, i, 1))
            b.set_membership("shard-3", {7: "h:7"})
            b.append(groups[0], ents(3, 4, 3))  # later stage for the same group composes
            b.append(groups[0], ents(5, 5, 3))
            assert len(b) == 10 and groups[0].last_index() == 5  # nothing visible yet
        assert len(writes) == 1  # everything went in ONE synced write
        assert groups[0].entries(1, 6, 1 << 20) == ents(1, 2, 1) + ents(3, 5, 3)
        assert groups[5].entries(1, 4, 1 << 20) == ents(1, 3, 2)
    with RocksEngine(path) as e:
        for i in range(10):
            g = e.group(f"shard-{i}")
            assert g.initial_state()[0] == HardState(2, i, 1)
            assert g.last_index() == (5 if i == 0 else 3)
        assert e.group("shard-3").membership() == {7: "h:7"}
        assert e.group("shard-0").entries(3, 6, 100) == ents(3, 5, 3)


def test_group_commit_is_all_or_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "node"
    with RocksEngine(path) as e:
        a, b = e.group("a"), e.group("b")
        a.append(ents(1, 2, 1))
        # an invalid stage is refused before anything is written
        with pytest.raises(ValueError, match="gap"), e.write_batch() as batch:
            batch.append(a, ents(3, 4, 1))
            batch.append(b, ents(2, 3, 1))
        # an exception in the block discards the batch
        with pytest.raises(KeyError), e.write_batch() as batch:
            batch.append(b, ents(1, 1, 1))
            raise KeyError("boom")
        assert (a.last_index(), b.last_index()) == (2, 0)

        # a failing write leaves the caches untouched
        def fail(_: object, sync: bool = True) -> None:
            raise OSError("disk on fire")

        monkeypatch.setattr(e, "_write", fail)
        batch = e.write_batch()
        batch.append(a, ents(3, 3, 1))
        batch.set_hard_state(b, HardState(1, 1, 0))
        with pytest.raises(OSError):
            batch.commit()
        monkeypatch.undo()
        assert (a.last_index(), b.hard_state) == (2, HardState())
        with pytest.raises(RuntimeError):
            batch.commit()
        # a group written behind a batch's back makes the batch refuse to commit
        batch = e.write_batch()
        batch.append(a, ents(3, 3, 1))
        a.append(ents(3, 5, 2))
        with pytest.raises(RuntimeError, match="written after being staged"):
            batch.commit()
        assert a.entries(3, 6, 100) == ents(3, 5, 2)
    with RocksEngine(path) as e:
        assert e.group("a").last_index() == 5
        assert e.group("b").initial_state()[0] == HardState()


# -- snapshot files ----------------------------------------------------------------------------
def test_half_written_snapshots_are_ignored_and_cleaned(tmp_path: Path) -> None:
    path = tmp_path / "node"
    with RocksEngine(path) as e:
        g = e.group("g", CONF)
        g.append(ents(1, 10, 1))
        meta = g.create_snapshot(5, CONF, b"good")
        d = g.snapshots.directory
    (d / "snap-1-9.tmp").write_bytes(b"partial image")  # crashed while writing the image
    (d / "snap-1-8").write_bytes(b"image, no meta")  # crashed before the meta was written
    (d / "snap-1-7").write_bytes(b"image")  # crashed while writing the meta
    (d / "snap-1-7.meta.tmp").write_bytes(b"{")
    (d / "snap-1-6").write_bytes(b"image")  # a meta that is not ours / torn
    (d / "snap-1-6.meta").write_bytes(b"00000000\n{}")
    (d / "recv-2-12.tmp").write_bytes(b"half received")
    with RocksEngine(path) as e:
        g = e.group("g")
        assert g.snapshot_meta() == meta and g.snapshot_data() == b"good"
        assert [i.meta for i in g.snapshots.list()] == [meta]
        assert sorted(os.listdir(d)) == ["snap-1-5", "snap-1-5.meta"]
        reasons = dict(g.snapshots.discarded)
        assert "half-written" in reasons["snap-1-8"]
        assert "bad meta" in reasons["snap-1-6"]


def test_orphan_snapshot_newer_than_rocksdb_is_removed(tmp_path: Path) -> None:
    """A crash between writing a snapshot file and recording it leaves an orphan file."""
    path = tmp_path / "node"
    with RocksEngine(path) as e:
        g = e.group("g", CONF)
        g.append(ents(1, 10, 1))
        meta = g.create_snapshot(3, CONF, b"recorded")
        g.snapshots.create(SnapshotMeta(8, 1, CONF), [b"orphan"])
    with RocksEngine(path) as e:
        g = e.group("g")
        assert g.snapshot_meta() == meta
        assert [i.meta for i in g.snapshots.list()] == [meta]


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "delete-meta"])
def test_damaged_current_snapshot_is_corruption(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "node"
    with RocksEngine(path) as e:
        g = e.group("g", CONF)
        g.append(ents(1, 10, 1))
        g.create_snapshot(5, CONF, b"precious state " * 100)
        g.compact(5)
        image = g.snapshot_path()
        assert image is not None
    raw = bytearray(image.read_bytes())
    if damage == "flip":
        raw[100] ^= 0x01
        image.write_bytes(raw)
    elif damage == "truncate":
        image.write_bytes(raw[:-1])
    elif damage == "delete":
        image.unlink()
    else:
        image.with_name(image.name + ".meta").unlink()
    expected = {
        "flip": "crc32c",
        "truncate": "size",
        "delete": "without its image",
        "delete-meta": "half-written",
    }[damage]
    with RocksEngine(path) as e, pytest.raises(SnapshotCorruptedError, match=expected):
        e.group("g")
    if damage in ("flip", "truncate"):  # kept aside for inspection, never used again
        assert (image.parent / "snap-1-5.corrupt").exists()


def test_missing_log_entry_is_corruption(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "node"
    with RocksEngine(path) as e:
        g = e.group("g")
        g.append(ents(1, 10, 1))
        e._db.delete(g._ekey(1))  # lose the first entry behind the store's back
    with RocksEngine(path) as e, pytest.raises(StorageCorruptedError, match="first stored"):
        e.group("g")
    with RocksEngine(path) as e:
        e._db.put(
            rocks._group_prefix("g") + b"e" + (1).to_bytes(8, "big"),
            rocks.encode_entry(Entry(1, 1, b"1@1")),
        )
        e._db.delete(rocks._group_prefix("g") + b"e" + (5).to_bytes(8, "big"))
    with RocksEngine(path) as e, pytest.raises(StorageCorruptedError, match="entry 5 missing"):
        e.group("g")  # found while loading the tail of terms
    monkeypatch.setattr(rocks, "TERM_TAIL_ON_OPEN", 2)
    with RocksEngine(path) as e:
        g = e.group("g")  # the damage is outside the tail: found when read
        assert g.entries(1, 5, 1 << 20) == ents(1, 4, 1)
        with pytest.raises(StorageCorruptedError, match="entry 5 missing"):
            g.entries(1, 11, 1 << 20)
        with pytest.raises(StorageCorruptedError, match="entry 5 missing"):
            g.term(5)


def test_streaming_snapshot_create_and_install(engine: RocksEngine) -> None:
    g = engine.group("big", CONF)
    g.append(ents(1, 3, 1))
    block = os.urandom(1 << 16)
    meta = g.create_snapshot_from_chunks(2, CONF, (block for _ in range(16)))
    chunks = list(g.open_snapshot_chunks(meta, 0, 100_000))
    assert all(len(c) <= 100_000 for c in chunks) and b"".join(chunks) == block * 16
    assert b"".join(g.open_snapshot_chunks(meta, 65_536 * 15 + 10, 7)) == block[10:]

    def writer(sink: Any) -> None:
        for i in range(4):
            sink.write(bytes([i]) * 1000)

    meta3 = g.create_snapshot_from_chunks(3, CONF2, writer)
    assert g.snapshot_data() == b"".join(bytes([i]) * 1000 for i in range(4))
    with pytest.raises(SnapshotOutOfDateError):
        g.open_snapshot_chunks(meta, 0, 10)
    other = engine.group("follower")
    remote = SnapshotMeta(3, 1, CONF2)
    for offset, chunk in enumerate(g.open_snapshot_chunks(meta3, 0, 1000)):
        other.write_snapshot_chunk(remote, offset * 1000, chunk)
    p = other.install_snapshot_path(remote)
    assert p.read_bytes() == g.snapshot_data() and p == other.snapshot_path()


# -- SnapshotStore on its own ------------------------------------------------------------------
def test_snapshot_store_api(tmp_path: Path) -> None:
    s = SnapshotStore(tmp_path / "snaps")
    assert s.latest() is None and s.list() == []
    m1, m2, m3 = (SnapshotMeta(i, 1, CONF) for i in (10, 20, 30))
    s.create(m1, [b"one"])
    s.create(m2, lambda sink: sink.write(b"two"))
    s.create(m3, b"three")
    latest = s.latest()
    assert latest is not None and latest[0] == m3 and latest[1].read_bytes() == b"three"
    assert [i.meta.index for i in s.list()] == [10, 20, 30]
    assert s.read_chunk(m2, 1, 10) == (b"wo", True)
    assert list(s.open_chunks(m3, 1, 2)) == [b"hr", b"ee"]
    assert s.delete_older_than(30) == 2
    assert [i.meta for i in s.list()] == [m3]
    with pytest.raises(SnapshotOutOfDateError):
        s.read_chunk(m1, 0, 1)
    # receive side
    m4 = SnapshotMeta(40, 2, CONF2)
    s.begin_receive(m4)
    s.write_chunk(m4, 0, b"fo")
    with pytest.raises(ValueError):
        s.write_chunk(m4, 1, b"x")
    s.write_chunk(m4, 2, b"ur")
    assert s.receiving() == (m4, 4)
    assert s.finish_receive(m4).read_bytes() == b"four"
    with pytest.raises(SnapshotOutOfDateError):
        s.finish_receive(m4)
    s2 = SnapshotStore(tmp_path / "snaps")  # reopen: verified, same content
    assert [i.meta for i in s2.list()] == [m3, m4] and s2.discarded == []
    # a writer that fails leaves nothing behind
    with pytest.raises(RuntimeError):
        s2.create(SnapshotMeta(50, 2, CONF), _failing_chunks())
    assert sorted(os.listdir(tmp_path / "snaps")) == sorted(
        ["snap-1-30", "snap-1-30.meta", "snap-2-40", "snap-2-40.meta"]
    )


def _failing_chunks() -> Iterator[bytes]:
    yield b"partial"
    raise RuntimeError("state machine failed mid-snapshot")


def test_interrupted_replacement_is_recovered(tmp_path: Path) -> None:
    """Replacing a snapshot of the same name first widens its meta to accept both images; a
    crash at any step leaves a name whose image its meta accepts."""
    from keelfs.storage.snapshots import _encode_meta, _write_durably

    s = SnapshotStore(tmp_path)
    meta = SnapshotMeta(5, 1, CONF)
    s.create(meta, b"old image")
    old = s.list()[0]
    new_crc = google_crc32c.value(b"new image!")
    # crash after widening the meta, before the rename: old image, widened meta
    _write_durably(tmp_path / "snap-1-5.meta", [_encode_meta(meta, 10, new_crc, (9, old.crc32c))])
    assert SnapshotStore(tmp_path).read_all(meta) == b"old image"
    # crash after the rename, before narrowing: new image, widened meta
    _write_durably(tmp_path / "snap-1-5.meta", [_encode_meta(meta, 10, new_crc, (9, old.crc32c))])
    (tmp_path / "snap-1-5").write_bytes(b"new image!")
    s3 = SnapshotStore(tmp_path)
    assert s3.read_all(meta) == b"new image!" and s3.discarded == []
    assert SnapshotStore(tmp_path).list()[0].size == 10
