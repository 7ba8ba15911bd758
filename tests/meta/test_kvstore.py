"""The store layer: both stores behave alike, Txn overlays merge correctly, and the snapshot
stream survives any re-chunking and detects damage."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keelfs.meta.kvstore import (
    KEY_END,
    READ_CACHE_ENTRIES,
    READ_CACHE_VALUE_BYTES,
    REPLICATED_START,
    KVStore,
    MemoryStore,
    RocksStore,
    SnapshotReader,
    Txn,
    encode_snapshot,
)
from keelfs.storage.errors import SnapshotCorruptedError


@pytest.fixture(params=["memory", "rocks"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KVStore]:
    s: KVStore = MemoryStore() if request.param == "memory" else RocksStore(tmp_path / "db")
    yield s
    s.close()


def test_store_basics(store: KVStore) -> None:
    store.write({b"\x01b": b"2", b"\x01a": b"1", b"\x00local": b"x", b"\x01c": b"3"})
    assert store.get(b"\x01a") == b"1"
    assert store.get(b"\x01zz") is None
    assert list(store.scan(b"\x01a", b"\x01c")) == [(b"\x01a", b"1"), (b"\x01b", b"2")]
    store.write({b"\x01a": None, b"\x01d": b"4"})
    assert [k for k, _ in store.scan(b"", KEY_END)] == [b"\x00local", b"\x01b", b"\x01c", b"\x01d"]
    store.write({b"\x01e": b"5"}, clear_replicated=True)
    assert list(store.scan(b"", KEY_END)) == [(b"\x00local", b"x"), (b"\x01e", b"5")]


def test_frozen_scan_ignores_later_writes(store: KVStore) -> None:
    store.write({b"\x01%03d" % i: b"v" for i in range(100)})
    frozen = store.frozen_scan(REPLICATED_START, KEY_END)
    store.write({b"\x01%03d" % i: None for i in range(50)} | {b"\x01zzz": b"new"})
    store.write({}, clear_replicated=True)
    assert [k for k, _ in frozen] == [b"\x01%03d" % i for i in range(100)]
    assert list(store.scan(REPLICATED_START, KEY_END)) == []


class _CountingDb:
    """A RocksDB handle that counts point reads (everything else passes through)."""

    def __init__(self, db: object) -> None:
        self._db = db
        self.gets = 0

    def get(self, key: bytes) -> object:
        self.gets += 1
        return self._db.get(key)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self._db, name)


def test_rocks_store_reads_what_it_read_or_wrote_from_its_cache(tmp_path: Path) -> None:
    """An apply reads the same few keys again and again: after the first read (or a write) of
    a key, RocksDB is not asked again, and what the cache answers is what the store holds
    (values, deletions, absent keys, a cleared replicated range, a reopened store)."""
    store = RocksStore(tmp_path / "db")
    db = _CountingDb(store._db)
    store._db = db  # type: ignore[assignment]
    store.write({b"\x01a": b"1", b"\x00local": b"x"})
    assert store.get(b"\x01a") == b"1" and store.get(b"\x00local") == b"x"
    assert store.get(b"\x01absent") is None
    assert store.get(b"\x01absent") is None
    store.write({b"\x01a": None, b"\x01b": b"2"})
    for _ in range(10):
        assert store.get(b"\x01a") is None and store.get(b"\x01b") == b"2"
    assert db.gets == 1  # only the first read of the absent key reached RocksDB
    store.write({b"\x01c": b"3"}, clear_replicated=True)
    assert store.get(b"\x01b") is None and store.get(b"\x00local") == b"x"
    assert store.get(b"\x01c") == b"3"
    for i in range(3 * READ_CACHE_ENTRIES):  # bounded: the cache empties itself, stays right
        store.write({b"\x01k%06d" % i: b"%d" % i})
    assert store.get(b"\x01k000000") == b"0" and store.get(b"\x01c") == b"3"
    assert len(store._cache) <= READ_CACHE_ENTRIES
    store._db = db._db  # type: ignore[assignment]
    store.close()
    reopened = RocksStore(tmp_path / "db")
    try:
        assert reopened.get(b"\x01c") == b"3" and reopened.get(b"\x01b") is None
    finally:
        reopened.close()


_keys = st.binary(min_size=1, max_size=3).map(lambda b: b"\x01" + b.replace(b"\xff", b"\xfe"))
_ops = st.lists(st.tuples(_keys, st.one_of(st.none(), st.binary(max_size=3))), max_size=30)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(base=_ops, outer=_ops, inner=_ops, lo=_keys, hi=_keys)
def test_txn_overlays_match_a_dict(
    base: list[tuple[bytes, bytes | None]],
    outer: list[tuple[bytes, bytes | None]],
    inner: list[tuple[bytes, bytes | None]],
    lo: bytes,
    hi: bytes,
) -> None:
    store = MemoryStore()
    model: dict[bytes, bytes] = {}

    def apply(ops: list[tuple[bytes, bytes | None]], txn: Txn | None) -> None:
        for k, v in ops:
            if v is None:
                model.pop(k, None)
                if txn is not None:
                    txn.delete(k)
            else:
                model[k] = v
                if txn is not None:
                    txn.put(k, v)

    store.write(dict(base))
    apply(base, None)
    t = Txn(store)
    apply(outer, t)
    child = t.child()
    apply(inner, child)
    lo, hi = min(lo, hi), max(lo, hi)
    want = sorted((k, v) for k, v in model.items() if lo <= k < hi)
    assert list(child.scan(lo, hi)) == want
    for k in {k for k, _ in base + outer + inner}:
        assert child.get(k) == model.get(k)
    child.commit()
    assert list(t.scan(lo, hi)) == want
    store.write(t.writes)
    assert list(store.scan(lo, hi)) == want


_steps = st.lists(
    st.one_of(
        st.tuples(st.just("put"), _keys, st.binary(max_size=3)),
        st.tuples(st.just("delete"), _keys, st.none()),
        st.tuples(st.just("direct"), _keys, st.binary(max_size=3)),
        st.tuples(st.just("update"), _keys, st.none()),
        st.tuples(st.just("child"), _keys, st.binary(max_size=3)),
        st.tuples(st.just("scan"), _keys, _keys),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(base=_ops, steps=_steps)
def test_txn_scans_see_every_staged_write_however_it_was_staged(
    base: list[tuple[bytes, bytes | None]], steps: list[tuple[str, bytes, bytes | None]]
) -> None:
    """Scans interleaved with puts, deletes, ``update``, committed children and changes made
    to ``writes`` directly (the sorted key index must never miss a staged key)."""
    store = MemoryStore()
    store.write(dict(base))
    model = {k: v for k, v in dict(base).items() if v is not None}
    t = Txn(store)
    for op, key, arg in steps:
        if op == "put" and arg is not None:
            t.put(key, arg)
            model[key] = arg
        elif op == "delete":
            t.delete(key)
            model.pop(key, None)
        elif op == "direct" and arg is not None:
            t.writes[key] = arg
            model[key] = arg
        elif op == "update":
            t.update({key: b"u", key + b"\x00": None})
            model[key] = b"u"
            model.pop(key + b"\x00", None)
        elif op == "child" and arg is not None:
            child = t.child()
            child.put(key, arg)
            child.delete(key + b"\x01")
            child.commit()
            model[key] = arg
            model.pop(key + b"\x01", None)
        else:
            lo, hi = min(key, arg or key), max(key, arg or key)
            want = sorted((k, v) for k, v in model.items() if lo <= k < hi)
            assert list(t.scan(lo, hi)) == want
    assert list(t.scan(b"", b"\xff")) == sorted(model.items())


def test_top_level_txn_cannot_commit() -> None:
    with pytest.raises(TypeError):
        Txn(MemoryStore()).commit()


ITEMS = [(b"\x01k%05d" % i, b"value-%d" % i * (i % 7)) for i in range(2000)]


def read(chunks: list[bytes]) -> tuple[list[tuple[bytes, bytes]], int | None]:
    reader = SnapshotReader(chunks)
    return list(reader), reader.index


@pytest.mark.parametrize("chunk_bytes", [1, 100, 4096, 1 << 20])
def test_snapshot_stream_round_trip(chunk_bytes: int) -> None:
    chunks = list(encode_snapshot(ITEMS, 77, chunk_bytes))
    assert (len(chunks) > 1) == (chunk_bytes < 1 << 20)
    assert read(chunks) == (ITEMS, 77)
    # any re-chunking of the same bytes reads the same
    blob = b"".join(chunks)
    assert read([blob]) == (ITEMS, 77)
    assert read([blob[i : i + 333] for i in range(0, len(blob), 333)]) == (ITEMS, 77)
    assert read([bytes([b]) for b in blob[:5000]] + [blob[5000:]]) == (ITEMS, 77)


def test_empty_snapshot_stream() -> None:
    assert read(list(encode_snapshot([], 5))) == ([], 5)


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[:-1],  # truncated trailer
        lambda b: b[: len(b) // 2],  # truncated in the middle
        lambda b: b[:3],  # truncated header
        lambda b: b"XXXX" + b[4:],  # bad magic
        lambda b: b + b"\x00",  # trailing garbage
        lambda b: b[:100] + bytes([b[100] ^ 1]) + b[101:],  # a flipped bit
        lambda b: b"",
    ],
)
def test_damaged_snapshot_stream_is_detected(damage: object) -> None:
    blob = b"".join(encode_snapshot(ITEMS[:50], 3))
    with pytest.raises(SnapshotCorruptedError):
        read([damage(blob)])  # type: ignore[operator]


def test_rocks_store_keeps_no_large_value_in_its_cache(tmp_path: Path) -> None:
    """An inline file's record is up to ~88 KB: the cache keeps small values only (4,096 of
    the large ones would be ~360 MB), and a small value replaced by a large one is not
    answered stale from the cache."""
    store = RocksStore(tmp_path / "db")
    try:
        big = b"x" * (READ_CACHE_VALUE_BYTES + 1)
        store.write({b"\x01small": b"s"})
        assert store.get(b"\x01small") == b"s"
        store.write({b"\x01small": big, b"\x01big": big})
        assert store.get(b"\x01small") == big and store.get(b"\x01big") == big
        assert b"\x01small" not in store._cache and b"\x01big" not in store._cache
    finally:
        store.close()


def test_holds_any_sees_every_write_under_a_prefix_it_found_empty(store: KVStore) -> None:
    """``RocksStore`` remembers a one-byte prefix it found empty (a create asks about locks
    and fences each time); every way a key arrives under it must end that memory."""
    assert not store.holds_any(b"K") and not store.holds_any(b"K")
    store.write({b"J": b"1", b"L": b"2", b"\x01K": b"3"})  # neighbours, not under it
    assert not store.holds_any(b"K")
    store.write({b"K/a": b"x"})
    assert store.holds_any(b"K")
    store.write({b"K/a": None})
    assert not store.holds_any(b"K")
    store.write({b"K": b""}, clear_replicated=True)  # as a restore's batches write
    assert store.holds_any(b"K")
    store.write({}, clear_replicated=True)
    assert not store.holds_any(b"K") and store.holds_any(b"L") is False


def test_a_remembered_empty_prefix_costs_no_store_read(tmp_path: Path) -> None:
    store = RocksStore(tmp_path / "db")
    try:
        assert not store.holds_any(b"F")
        scans = []
        iterate = store._iterate

        def counted(start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
            scans.append(start)
            return iterate(start, end)

        store._iterate = counted  # type: ignore[method-assign]
        for _ in range(10):
            assert not store.holds_any(b"F")
        assert scans == []
        store.write({b"F\x00": b"fence"})
        assert store.holds_any(b"F") and scans == [b"F"]
    finally:
        store.close()


def test_a_failed_write_forgets_the_empty_prefixes(tmp_path: Path) -> None:
    store = RocksStore(tmp_path / "db")
    try:
        assert not store.holds_any(b"K")

        class _Failing:
            def __init__(self, db: Any) -> None:
                self._db = db

            def write(self, *args: Any) -> None:
                self._db.write(*args)  # it reached the store, then the call failed
                raise OSError("injected")

            def __getattr__(self, name: str) -> Any:
                return getattr(self._db, name)

        db = store._db
        store._db = _Failing(db)  # type: ignore[assignment]
        with pytest.raises(OSError):
            store.write({b"K/x": b"lock"})
        store._db = db
        assert store.holds_any(b"K")
    finally:
        store.close()


def test_txn_holds_any_sees_staged_puts_over_its_base(store: KVStore) -> None:
    store.write({b"Kbase": b"1"})
    txn = Txn(store)
    stage = txn.child()
    assert stage.holds_any(b"K") and not stage.holds_any(b"F")
    txn.put(b"F1", b"fence")
    assert stage.holds_any(b"F") and txn.holds_any(b"F")
    txn.delete(b"F1")
    assert not stage.holds_any(b"F")  # a staged delete is no key
    stage.delete(b"Kbase")
    assert stage.holds_any(b"K")  # conservative: the base still has it
