"""Decoded namespace records are remembered by their bytes (``records.decode_cached``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from meta_helpers import formatted

from keelfs.meta import records
from keelfs.meta.commands import Create, Mkdir
from keelfs.meta.namespace import ShardStateMachine
from keelfs.meta.records import DECODED_ENTRIES, Inode, decode_cached


def test_creates_in_one_directory_decode_its_records_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every create reads its directory's records (and its ancestors' for the permission
    check): those are decoded once, not once per create, and what the memo answers is what
    decoding the bytes gives."""
    sm = ShardStateMachine(tmp_path / "db")
    d = formatted(sm)
    d.ok(Mkdir("/a/b/c", parents=True))
    s = d.session()
    decoded = 0
    decode = Inode.decode.__func__  # type: ignore[attr-defined]

    def counting(cls: type[Inode], raw: bytes) -> Inode:
        nonlocal decoded
        decoded += 1
        return decode(cls, raw)  # type: ignore[no-any-return]

    monkeypatch.setattr(Inode, "decode", classmethod(counting))
    for i in range(200):
        d.ok(Create(f"/a/b/c/f{i}"), s, i + 1)
    assert decoded < 100, f"{decoded} records decoded for 200 creates"
    for i in range(0, 200, 37):
        info = sm.stat(f"/a/b/c/f{i}")
        assert info.path == f"/a/b/c/f{i}" and not info.is_dir and info.under_construction


def test_the_memo_is_bounded_and_answers_what_decoding_gives() -> None:
    first = Inode("file", 0o644, "u", "g", 1, 1, replication=3, block_size=1 << 20)
    for i in range(DECODED_ENTRIES + 10):
        raw = first.evolve(mtime=i).encode()
        assert decode_cached(raw) == Inode.decode(raw) == first.evolve(mtime=i)
        assert decode_cached(raw) is decode_cached(raw)
    assert 0 < len(records._DECODED) <= DECODED_ENTRIES
    big = first.evolve(blocks=tuple(records.BlockInfo(i, 1, 1) for i in range(200))).encode()
    assert decode_cached(big) == Inode.decode(big) and big not in records._DECODED
